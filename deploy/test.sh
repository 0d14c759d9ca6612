#!/usr/bin/env bash
# Runs the whole test suite: the command the README gives and CI runs.
# Starts (and if needed installs) PostgreSQL and RabbitMQ first; settings
# already in the environment win over the defaults the services script prints.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing: install it with 'cargo install cargo-nextest --locked'" >&2
  exit 1
fi

defaults=$(./deploy/services.sh)
database_url=$(sed -n 's/^export DATABASE_URL=//p' <<<"$defaults")
amqp_url=$(sed -n 's/^export AMQP_URL=//p' <<<"$defaults")
export DATABASE_URL="${DATABASE_URL:-$database_url}"
export AMQP_URL="${AMQP_URL:-$amqp_url}"

# The OpenAPI test validates the document with the PyPI package
# openapi-spec-validator, kept in a virtual environment beside the build.
if [ -z "${Q2C_OPENAPI_VALIDATOR:-}" ]; then
  venv=target/openapi-venv
  if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'openapi-spec-validator==0.9.*'
  fi
  export Q2C_OPENAPI_VALIDATOR="$PWD/$venv/bin/openapi-spec-validator"
fi

cargo nextest run --workspace --locked --profile "${Q2C_TEST_PROFILE:-default}" "$@"
