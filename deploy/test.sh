#!/usr/bin/env bash
# Runs the whole test suite: the command the README gives and CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing: install it with 'cargo install cargo-nextest --locked'" >&2
  exit 1
fi

cargo nextest run --workspace --locked --profile "${Q2C_TEST_PROFILE:-default}" "$@"
