#!/usr/bin/env bash
# Runs the whole test suite: the command the README gives and CI runs.
# Sets itself up on a fresh machine: installs cargo-nextest when it is
# missing, starts (and if needed installs) PostgreSQL and RabbitMQ, and makes
# the virtual environment of the OpenAPI validator, installing Debian's venv
# support first where Python lacks it. Settings already in the environment win
# over the defaults the services script prints. Arguments go to nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

# The version CI runs; any later 0.9 works too.
NEXTEST_VERSION=0.9.143

say() { echo "test: $*" >&2; }

if ! cargo nextest --version >/dev/null 2>&1; then
  say "cargo-nextest is missing: installing $NEXTEST_VERSION with 'cargo install --locked'" \
    "(it compiles from source: about 10 minutes on 2 cores, once)"
  started=$SECONDS
  cargo install cargo-nextest --version "$NEXTEST_VERSION" --locked --quiet
  say "cargo-nextest $NEXTEST_VERSION installed in $((SECONDS - started)) s"
fi

defaults=$(./deploy/services.sh)
database_url=$(sed -n 's/^export DATABASE_URL=//p' <<<"$defaults")
amqp_url=$(sed -n 's/^export AMQP_URL=//p' <<<"$defaults")
export DATABASE_URL="${DATABASE_URL:-$database_url}"
export AMQP_URL="${AMQP_URL:-$amqp_url}"

# A virtual environment at $1 with the PyPI requirement $2, which provides the
# program $3. Debian's Python makes environments only with python3-venv.
python_tool() {
  local venv=$1 requirement=$2 program=$3
  if [ -x "$venv/bin/$program" ]; then
    return 0
  fi
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
    say "python3 cannot make a virtual environment: installing Debian's python3-venv"
    ./deploy/services.sh --packages python3 python3-venv
    python3 -m venv --clear "$venv"
  fi
  say "installing $requirement into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$requirement"
}

# The OpenAPI test validates the document with the PyPI package
# openapi-spec-validator, kept in a virtual environment beside the build.
if [ -z "${Q2C_OPENAPI_VALIDATOR:-}" ]; then
  target=${CARGO_TARGET_DIR:-target}
  mkdir -p "$target"
  venv="$(cd "$target" && pwd)/openapi-venv"
  python_tool "$venv" 'openapi-spec-validator==0.9.*' openapi-spec-validator
  export Q2C_OPENAPI_VALIDATOR="$venv/bin/openapi-spec-validator"
fi

cargo nextest run --workspace --locked --profile "${Q2C_TEST_PROFILE:-default}" "$@"
