#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ run on this machine, installing them from
# Debian's packages if they are absent, and gives q2c its own Postgres role and
# database. Prints the settings to use, as `export` lines:
#
#   eval "$(deploy/services.sh)"
#
# Safe to run again: every step checks before it acts. Messages go to stderr.
#
#   deploy/services.sh --packages NAME...
#
# only installs those Debian packages where they are missing (the test command
# uses it for what its virtual environments need), and prints nothing.
set -euo pipefail

PG_ROLE="${Q2C_PG_ROLE:-q2c}"
PG_PASSWORD="${Q2C_PG_PASSWORD:-q2c}"
PG_DATABASE="${Q2C_PG_DATABASE:-q2c}"
PG_PORT="${Q2C_PG_PORT:-5432}"
AMQP_PORT="${Q2C_AMQP_PORT:-5672}"
AMQP_USER="${Q2C_AMQP_USER:-q2c}"
AMQP_PASSWORD="${Q2C_AMQP_PASSWORD:-q2c}"

say() { echo "services: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=false
install_packages() {
  if [ "$apt_updated" = false ]; then
    say "updating the package lists"
    as_root apt-get update -qq >&2
    apt_updated=true
  fi
  say "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# Installs whichever of the named packages dpkg does not list as installed.
install_missing_packages() {
  local missing=()
  for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
      missing+=("$package")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    install_packages "${missing[@]}"
  fi
}

if [ "${1:-}" = --packages ]; then
  shift
  install_missing_packages "$@"
  exit 0
fi

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 120); do
    if port_open "$port"; then return 0; fi
    sleep 1
  done
  say "$what did not open port $port within two minutes"
  exit 1
}

# --- PostgreSQL --------------------------------------------------------------
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  install_packages postgresql
fi
if ! port_open "$PG_PORT"; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    say "no PostgreSQL cluster is configured in /etc/postgresql"
    exit 1
  fi
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 ||
    as_root pg_ctlcluster "$version" main start >&2
  wait_for_port "$PG_PORT" PostgreSQL
fi

# The superuser is reached over the local socket as the postgres OS user, which
# works whatever the TCP authentication is.
psql_admin() {
  as_root runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtAX -p "$PG_PORT" "$@"
}
if [ "$(psql_admin -c "select 1 from pg_roles where rolname = '$PG_ROLE'")" != 1 ]; then
  say "creating role $PG_ROLE"
  psql_admin -c "create role \"$PG_ROLE\" login createdb password '$PG_PASSWORD'" >&2
else
  # The role is q2c's own: make sure it can log in with the password printed
  # below, whatever authentication the server asks for over TCP.
  psql_admin -c "alter role \"$PG_ROLE\" login createdb password '$PG_PASSWORD'" >&2
fi
if [ "$(psql_admin -c "select 1 from pg_database where datname = '$PG_DATABASE'")" != 1 ]; then
  say "creating database $PG_DATABASE"
  psql_admin -c "create database \"$PG_DATABASE\" owner \"$PG_ROLE\"" >&2
fi

# --- RabbitMQ ----------------------------------------------------------------
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  install_packages rabbitmq-server
fi
if ! port_open "$AMQP_PORT"; then
  say "starting RabbitMQ"
  as_root rabbitmq-server -detached >&2
  wait_for_port "$AMQP_PORT" RabbitMQ
  as_root rabbitmqctl await_startup >/dev/null 2>&1 || true
fi

# q2c's own broker user, so nothing depends on the guest account (which a
# hardened broker disables).
if ! as_root rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}' | grep -qx "$AMQP_USER"; then
  say "creating RabbitMQ user $AMQP_USER"
  as_root rabbitmqctl -q add_user "$AMQP_USER" "$AMQP_PASSWORD" >/dev/null
else
  as_root rabbitmqctl -q change_password "$AMQP_USER" "$AMQP_PASSWORD" >/dev/null
fi
as_root rabbitmqctl -q set_permissions -p / "$AMQP_USER" ".*" ".*" ".*" >/dev/null

# Loopback: TLS would protect nothing and cost both ends CPU on every
# statement. Across a network, use sslmode=verify-full instead.
echo "export DATABASE_URL=postgres://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DATABASE?sslmode=disable"
echo "export AMQP_URL=amqp://$AMQP_USER:$AMQP_PASSWORD@127.0.0.1:$AMQP_PORT/%2f"
