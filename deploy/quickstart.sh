#!/usr/bin/env bash
# The quick start: q2c running on this machine, with sample quotes coming
# from Salesforce (a local one) and flowing through q2c, in one command.
#
#   ./deploy/quickstart.sh                   # runs until Ctrl-C
#   ./deploy/quickstart.sh --exit-when-done  # exits after the summary
#
# It starts (or installs) Postgres and RabbitMQ through deploy/services.sh,
# builds q2c, applies the schema, and starts three processes on free ports:
# a local Salesforce (`q2c local-salesforce serve`: the Pub/Sub API, the OAuth
# token endpoint and a console), `q2c serve` (the orchestrator and its HTTP
# API) subscribed to it over the Pub/Sub API, logging in with the JWT bearer
# flow, and `q2c sim` (simulated ERP, billing, payment and Salesforce
# connectors). It publishes a batch of sample quote-accepted platform events
# on the local Salesforce, finds the workflow q2c started for each
# (GET /api/v1/workflows?quote_id=...), and shows each quote moving through
# order, invoice, payment and status report. One sample account is on credit
# hold (its order is refused: the workflow fails) and one card is declined
# (the order and invoice are undone: the workflow is compensated); the others
# complete.
#
# The local Salesforce keeps its events in memory, so each run has a new one
# whose replay ids start again at 1. A position stored by an earlier run would
# mean nothing to it: q2c's positions in its topics are moved back to EARLIEST
# (`q2c salesforce position set`, recorded like any operator's move) before
# `q2c serve` starts.
#
# Run `./deploy/quickstart.sh --help` for the settings. Needs bash, python3
# (for JSON) and curl (or python3 alone); jq is not needed.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/quickstart.sh [--exit-when-done] [--release] [--help]

Starts Postgres, RabbitMQ, a local Salesforce (`q2c local-salesforce serve`),
`q2c serve` subscribed to it over the Pub/Sub API, and `q2c sim`; publishes
sample quote-accepted events on the local Salesforce and shows each quote
flowing through order, invoice, payment and status report. Then everything
keeps running until Ctrl-C.

Options:
  --exit-when-done  exit after the summary instead of running on: 0 when every
                    sample ended as expected, 1 otherwise or on timeout
                    (also: Q2C_QUICKSTART_EXIT=1)
  --release         build with `cargo build --release` (default: debug)
  -h, --help        show this help

Settings (environment):
  DATABASE_URL, AMQP_URL   use these instead of what deploy/services.sh prints
  Q2C_BIN                  a prebuilt q2c binary (skips the build)
  Q2C_API_TOKEN            the API token (default: a new random one)
  Q2C_HTTP_ADDR            where the API listens (default 127.0.0.1:8080, or a
                           free port if 8080 is taken)
  Q2C_AMQP_PREFIX          broker name prefix (default quickstart.)
  Q2C_RUN_DIR              where logs and state go (default: a new temp dir)
  Q2C_QUICKSTART_QUOTES    how many sample quotes (default 8, at least 3)
  Q2C_QUICKSTART_TIMEOUT   seconds from publishing the events until every
                           workflow has ended (default 120)
  Q2C_SIM_LATENCY          delay before each simulated reply (default 1s)
  Q2C_SIM_FAILURE_RATE     share of commands the simulator fails, retryably
                           (default 0; try 0.2 to watch retries)
  Q2C_LOCAL_SF_GRPC_ADDR   where the local Salesforce's Pub/Sub API listens
                           (default 127.0.0.1:0, a free port)
  Q2C_LOCAL_SF_HTTP_ADDR   where its token endpoint and console listen
                           (default 127.0.0.1:0)

`q2c serve` logs in to the local Salesforce with the JWT bearer flow
(deploy/local-salesforce/jwt-private.pem, throwaway keys): the script sets
Q2C_SALESFORCE_PUBSUB_URL, _LOGIN_URL, _CLIENT_ID, _JWT_KEY_FILE, _USERNAME,
_JWT_AUDIENCE and _FIRST_START=EARLIEST; other Q2C_SALESFORCE_* settings
(e.g. Q2C_SALESFORCE_OUTSTANDING) reach it as they are.
EOF
}

# Paths given relative to where the script was started from, made absolute
# before moving to the repository root.
absolute() {
  case $1 in
    /* | '') printf '%s' "$1" ;;
    *) printf '%s/%s' "$PWD" "$1" ;;
  esac
}
Q2C_BIN=$(absolute "${Q2C_BIN:-}")
Q2C_RUN_DIR=$(absolute "${Q2C_RUN_DIR:-}")
if [ -n "${Q2C_WORKFLOWS_DIR:-}" ]; then
  Q2C_WORKFLOWS_DIR=$(absolute "$Q2C_WORKFLOWS_DIR")
  export Q2C_WORKFLOWS_DIR
fi
cd "$(dirname "$0")/.."

exit_when_done=false
profile=debug
quotes="${Q2C_QUICKSTART_QUOTES:-8}"
timeout_s="${Q2C_QUICKSTART_TIMEOUT:-120}"
[ "${Q2C_QUICKSTART_EXIT:-0}" = 1 ] && exit_when_done=true

serve_pid=""
sim_pid=""
sf_pid=""
run_dir=""

# The event the samples are, and the local Salesforce's connected app and user
# (given to it as flags, so that both sides agree whatever the environment).
accepted_event=Q2C_Quote_Accepted__e
sf_topics=(/event/Q2C_Quote_Accepted__e /event/Q2C_Quote_Cancelled__e)
sf_client_id=q2c-local-client
sf_username=integration@q2c.local

# --- small helpers ------------------------------------------------------------

say() { printf '%s\n' "$*"; }
step() { printf '\n==> %s\n' "$*"; }
die() {
  printf 'quickstart: %s\n' "$*" >&2
  exit 1
}

port_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Milliseconds since the epoch (EPOCHREALTIME's separator follows the locale).
now_ms() {
  local now=${EPOCHREALTIME/[.,]/}
  echo $((now / 1000))
}

# Tenths of seconds as "12.3".
seconds() {
  printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100))
}

log_tail() {
  say "--- last lines of $1 ---" >&2
  tail -n 30 "$1" >&2 || true
  say "---" >&2
}

# The JSON helper (python3), defined at the end of this file.
helper() {
  python3 -c "$(helper_source)" "$@"
}

# `request METHOD URL OUT [BODY_FILE [HEADER_FILE]]`: writes the response
# body to OUT and prints the HTTP status (000 if unreachable).
request() {
  local method=$1 url=$2 out=$3 body=${4:-} header=${5:-}
  if command -v curl >/dev/null 2>&1; then
    local args=(-sS --max-time 10 -o "$out" -w '%{http_code}' -X "$method")
    if [ -n "$header" ]; then args+=(-H "@$header"); fi
    if [ -n "$body" ]; then
      args+=(-H 'Content-Type: application/json' --data-binary "@$body")
    fi
    local code
    code=$(curl "${args[@]}" "$url" 2>>"$run_dir/http-errors.log") || true
    echo "${code:-000}"
  else
    helper http "$method" "$url" "$out" "$body" "$header"
  fi
}

# `http METHOD PATH OUT [BODY_FILE]`: calls q2c's API, with the token.
http() {
  request "$1" "$api$2" "$3" "${4:-}" "$run_dir/auth-header"
}

# --- processes ------------------------------------------------------------------

# `start READY_FILE LOG COMMAND...`: starts COMMAND in the background, in a
# session of its own so that Ctrl-C reaches only this script, which then stops
# it gracefully. Its pid is in $!.
start() {
  local ready=$1 log=$2
  shift 2
  rm -f "$ready"
  if command -v setsid >/dev/null 2>&1; then
    NO_COLOR=1 Q2C_READY_FILE=$ready setsid "$@" </dev/null >"$log" 2>&1 &
  else
    NO_COLOR=1 Q2C_READY_FILE=$ready "$@" </dev/null >"$log" 2>&1 &
  fi
}

# `wait_ready NAME PID READY_FILE LOG`: waits until the process has written its
# ready file, failing with the end of its log if it exits or takes too long.
wait_ready() {
  local name=$1 pid=$2 ready=$3 log=$4
  local deadline=$(($(now_ms) + 60000))
  until [ -s "$ready" ] && [ "$(tail -c 2 "$ready")" = "}" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log_tail "$log"
      die "$name exited before it was ready (its log: $log)"
    fi
    if [ "$(now_ms)" -gt "$deadline" ]; then
      log_tail "$log"
      die "$name was not ready within 60 s (its log: $log)"
    fi
    sleep 0.1
  done
}

stop_processes() {
  local pids=() pid deadline
  for pid in $serve_pid $sim_pid $sf_pid; do
    if kill -0 "$pid" 2>/dev/null; then pids+=("$pid"); fi
  done
  [ "${#pids[@]}" -gt 0 ] || return 0
  say ""
  say "Stopping q2c serve, q2c sim and the local Salesforce..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$(($(now_ms) + 15000))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  say "Stopped. Logs are in $run_dir"
}

on_exit() {
  local status=$?
  trap - EXIT INT TERM HUP
  stop_processes
  exit "$status"
}

# --- the steps ------------------------------------------------------------------

# Postgres and RabbitMQ: settings already in the environment win.
services() {
  step "Postgres and RabbitMQ"
  if [ -n "${DATABASE_URL:-}" ] && [ -n "${AMQP_URL:-}" ]; then
    say "  using DATABASE_URL and AMQP_URL from the environment"
    return
  fi
  local given_database=${DATABASE_URL:-} given_amqp=${AMQP_URL:-} settings
  settings=$(./deploy/services.sh) || die "deploy/services.sh failed (see above)"
  eval "$settings"
  export DATABASE_URL=${given_database:-$DATABASE_URL}
  export AMQP_URL=${given_amqp:-$AMQP_URL}
  say "  Postgres and RabbitMQ are running"
}

build() {
  if [ -n "${Q2C_BIN:-}" ]; then
    [ -x "$Q2C_BIN" ] || die "Q2C_BIN=$Q2C_BIN is not an executable file"
    bin=$Q2C_BIN
    return
  fi
  command -v cargo >/dev/null 2>&1 ||
    die "cargo is missing: install Rust (https://rustup.rs) or set Q2C_BIN to a q2c binary"
  if [ "$profile" = release ]; then
    step "Building q2c (cargo build --release; the first build takes a few minutes)"
    cargo build --quiet --release --bin q2c
  else
    step "Building q2c (cargo build; the first build takes a few minutes)"
    cargo build --quiet --bin q2c
  fi
  bin=target/$profile/q2c
  say "  built $bin"
}

token() {
  if [ -n "${Q2C_API_TOKEN:-}" ]; then
    token_given=true
  else
    token_given=false
    Q2C_API_TOKEN=$(head -c 24 /dev/urandom | od -An -vtx1 | tr -d ' \n')
    export Q2C_API_TOKEN
  fi
  (umask 077 && printf 'Authorization: Bearer %s\n' "$Q2C_API_TOKEN" >"$run_dir/auth-header")
}

start_q2c() {
  step "Database schema (q2c migrate)"
  NO_COLOR=1 "$bin" migrate >"$run_dir/migrate.log" 2>&1 || {
    log_tail "$run_dir/migrate.log"
    die "q2c migrate failed: is DATABASE_URL right? ($DATABASE_URL)"
  }
  say "  the schema is up to date"

  export Q2C_AMQP_PREFIX=${Q2C_AMQP_PREFIX-quickstart.}
  if [ -z "${Q2C_HTTP_ADDR:-}" ]; then
    Q2C_HTTP_ADDR=127.0.0.1:8080
    if port_open 127.0.0.1 8080; then
      say "  port 8080 is taken: the API will listen on a free port instead"
      Q2C_HTTP_ADDR=127.0.0.1:0
    fi
  fi
  export Q2C_HTTP_ADDR
  local latency=${Q2C_SIM_LATENCY:-1s}

  step "Starting a local Salesforce, q2c serve and q2c sim (broker prefix '$Q2C_AMQP_PREFIX')"
  start "$run_dir/local-salesforce.ready" "$run_dir/local-salesforce.log" \
    "$bin" local-salesforce serve \
    --grpc-addr "${Q2C_LOCAL_SF_GRPC_ADDR:-127.0.0.1:0}" \
    --http-addr "${Q2C_LOCAL_SF_HTTP_ADDR:-127.0.0.1:0}" \
    --client-id "$sf_client_id" --username "$sf_username" \
    --jwt-public-key deploy/local-salesforce/jwt-public.pem
  sf_pid=$!
  wait_ready "the local Salesforce" "$sf_pid" "$run_dir/local-salesforce.ready" \
    "$run_dir/local-salesforce.log"
  sf_grpc=$(helper get "$run_dir/local-salesforce.ready" grpc)
  sf_http=$(helper get "$run_dir/local-salesforce.ready" http)

  # Its replay ids start at 1 again: whatever an earlier run stored is
  # meaningless here (see the top of this file).
  local topic who
  who="$(id -un 2>/dev/null || echo someone) via deploy/quickstart.sh"
  for topic in "${sf_topics[@]}"; do
    NO_COLOR=1 USER=$who "$bin" salesforce position set "$topic" EARLIEST \
      >>"$run_dir/positions.log" 2>&1 || {
      log_tail "$run_dir/positions.log"
      die "q2c salesforce position set $topic EARLIEST failed"
    }
  done

  export Q2C_SALESFORCE_PUBSUB_URL=$sf_grpc
  export Q2C_SALESFORCE_LOGIN_URL=$sf_http
  export Q2C_SALESFORCE_CLIENT_ID=$sf_client_id
  export Q2C_SALESFORCE_JWT_KEY_FILE=$PWD/deploy/local-salesforce/jwt-private.pem
  export Q2C_SALESFORCE_USERNAME=$sf_username
  export Q2C_SALESFORCE_JWT_AUDIENCE=$sf_http
  export Q2C_SALESFORCE_FIRST_START=EARLIEST
  # The local Salesforce has the standard topics only.
  unset Q2C_SALESFORCE_ACCEPTED_TOPIC Q2C_SALESFORCE_CANCELLED_TOPIC

  start "$run_dir/serve.ready" "$run_dir/serve.log" "$bin" serve --no-migrate
  serve_pid=$!
  start "$run_dir/sim.ready" "$run_dir/sim.log" \
    "$bin" sim --latency "$latency" --ledger "$run_dir/sim-ledger.jsonl"
  sim_pid=$!
  wait_ready "q2c serve" "$serve_pid" "$run_dir/serve.ready" "$run_dir/serve.log"
  wait_ready "q2c sim" "$sim_pid" "$run_dir/sim.ready" "$run_dir/sim.log"
  api="http://$(helper get "$run_dir/serve.ready" http)"
  say "  local Salesforce  pid $sf_pid, Pub/Sub API at $sf_grpc, login and console at $sf_http"
  say "                    log $run_dir/local-salesforce.log"
  say "  q2c serve         pid $serve_pid, API at $api, subscribed to the local Salesforce"
  say "                    (JWT bearer login as $sf_username), log $run_dir/serve.log"
  say "  q2c sim           pid $sim_pid, replies after $latency, log $run_dir/sim.log"
}

# A curl command line that calls the API at PATH with the token.
curl_api() {
  if [ "$token_given" = true ]; then
    # shellcheck disable=SC2016 # the variable is for the reader's shell
    printf 'curl -H "Authorization: Bearer $Q2C_API_TOKEN" %s' "'$api$1'"
  else
    printf "curl -H 'Authorization: Bearer %s' %s" "$Q2C_API_TOKEN" "'$api$1'"
  fi
}

# How to call the API, with the token.
show_token() {
  if [ "$token_given" = true ]; then
    say "  token: the one in Q2C_API_TOKEN (from your environment)"
  else
    say "  token: $Q2C_API_TOKEN"
  fi
  say "  try:   $(curl_api /api/v1/workflows)"
  say "         (/api/v1/workflows/<id> shows one workflow's steps and history;"
  say "         /healthz, /readyz and /metrics need no token)"
}

# Publishes every sample on the local Salesforce, through its console, as a
# CPQ flow would publish the platform event. q2c hears of them only over its
# Pub/Sub subscription.
publish_events() {
  state=$run_dir/state
  rm -rf "$state"
  mkdir -p "$state"
  helper samples "$quotes" "$state" "$run_dir/your-quote.json"
  step "Publishing $quotes quote-accepted events on the local Salesforce (Pub/Sub API → q2c serve)"
  local url=$sf_http/local/events/$accepted_event n code
  say "  POST $url, one per quote"
  started=$(now_ms)
  while IFS=$'\t' read -r n _; do
    code=$(request POST "$url" "$state/published-$n.json" "$state/quote-$n.json")
    case $code in
      201) ;;
      000) die "the local Salesforce at $sf_http did not answer (see $run_dir/http-errors.log)" ;;
      *) die "the local Salesforce answered $code: $(cat "$state/published-$n.json")" ;;
    esac
  done <"$state/samples.tsv"
  helper published "$state"
}

# Polls GET /api/v1/workflows?quote_id=... until q2c has started a workflow
# for every sample (or the timeout), then lists them and the subscription.
await_workflows() {
  local n quote_id code
  while :; do
    while IFS=$'\t' read -r n quote_id; do
      code=$(http GET "/api/v1/workflows?quote_id=$quote_id" "$state/lookup-$n.json")
      [ "$code" = 200 ] || die "GET /api/v1/workflows?quote_id=$quote_id answered $code"
    done <"$state/pending.tsv"
    helper found "$state"
    [ -s "$state/pending.tsv" ] || break
    if [ $(($(now_ms) - started)) -gt $((timeout_s * 1000)) ]; then
      http GET /api/v1/salesforce/subscriptions "$state/subscriptions.json" >/dev/null
      say "q2c started no workflow for $(wc -l <"$state/pending.tsv") of $quotes quotes within $timeout_s s. Its streams:" >&2
      helper streams "$state/subscriptions.json" >&2 || true
      die "the events did not reach q2c: look at $run_dir/serve.log and $run_dir/local-salesforce.log"
    fi
    sleep 0.25
  done
  say "  q2c serve started a workflow for each within $(seconds "$(($(now_ms) - started))") s:"
  helper taken_in "$state"
  http GET /api/v1/salesforce/subscriptions "$state/subscriptions.json" >/dev/null
  say "  its subscription (the position is stored in the transaction that starts each workflow):"
  helper streams "$state/subscriptions.json" "/event/$accepted_event"
}

# Polls the API until every workflow has ended (or the timeout, counted from
# publishing), showing a line per quote: redrawn in place on a terminal, as
# new lines otherwise.
watch_workflows() {
  step "Watching them move through order, invoice, payment and status report"
  say "  ✓ done   … in progress   ✗ failed for good   ↩ undone (order cancelled, invoice voided, payment refunded)"
  say ""
  local tty=false width=0
  # Redrawing in place needs the whole block on the screen.
  if [ -t 1 ] && [ $((quotes + 3)) -le "$(tput lines 2>/dev/null || echo 0)" ]; then
    tty=true
  fi
  local tick drawn=0 code id finished total elapsed line i view pause
  local previous=() lines=()
  timed_out=false
  while :; do
    tick=$(now_ms)
    code=$(http GET "/api/v1/workflows?limit=1000" "$state/list.json")
    [ "$code" = 200 ] || die "GET /api/v1/workflows answered $code"
    # The detail (steps) of every workflow that may have moved; `view` says
    # which those are.
    while read -r id; do
      code=$(http GET "/api/v1/workflows/$id" "$state/workflow-$id.json")
      [ "$code" = 200 ] || die "GET /api/v1/workflows/$id answered $code"
    done <"$state/refresh"
    if [ "$tty" = true ]; then width=$(($(tput cols 2>/dev/null || echo 120) - 2)); fi
    view=$(helper view "$state" "$width")
    mapfile -t lines <<<"$view"
    read -r finished total <"$state/progress"
    elapsed=$(($(now_ms) - started))

    if [ "$tty" = true ]; then
      [ "$drawn" -eq 0 ] || printf '\033[%dA' "$drawn"
      for line in "${lines[@]}"; do printf '\r\033[K  %s\n' "$line"; done
      printf '\r\033[K  %s s: %d of %d finished\n' "$(seconds "$elapsed")" "$finished" "$total"
      drawn=$((${#lines[@]} + 1))
    else
      [ "${#previous[@]}" -gt 0 ] || say "  elapsed  ${lines[0]}"
      for ((i = 1; i < ${#lines[@]}; i++)); do
        if [ "${lines[i]}" != "${previous[i]:-}" ]; then
          printf '  %5s s  %s\n' "$(seconds "$elapsed")" "${lines[i]}"
        fi
      done
      previous=("${lines[@]}")
    fi

    if [ "$finished" -eq "$total" ]; then
      say "All $total workflows finished in $(seconds "$elapsed") s."
      break
    fi
    if [ "$elapsed" -gt $((timeout_s * 1000)) ]; then
      timed_out=true
      say "Timed out: $finished of $total workflows finished within $timeout_s s."
      say "Look at $run_dir/serve.log and $run_dir/sim.log."
      break
    fi
    # One look every half second, however long the look took.
    pause=$((500 - ($(now_ms) - tick)))
    if [ "$pause" -gt 0 ]; then sleep "0.$(printf '%03d' "$pause")"; fi
  done
}

summary() {
  step "Summary"
  summary_ok=true
  helper summary "$state" "$timed_out" || summary_ok=false
}

# Leaves the API running until Ctrl-C (or until a process dies).
keep_running() {
  step "q2c is running"
  say "  API:   $api (it takes events over HTTP too: POST /api/v1/events)"
  show_token
  say "  local Salesforce: Pub/Sub API $sf_grpc, login and console $sf_http"
  say "         (its topics and streams: curl $sf_http/local/status)"
  say "  publish a quote of your own (a new sample: $run_dir/your-quote.json):"
  say "         $bin local-salesforce publish accepted --url $sf_http \\"
  say "           --file $run_dir/your-quote.json"
  say "         its workflow: $(curl_api "/api/v1/workflows?quote_id=$(helper get "$run_dir/your-quote.json" Quote_Id__c)")"
  say "         q2c's streams: $(curl_api /api/v1/salesforce/subscriptions)"
  say "  logs:  $run_dir/serve.log, sim.log and local-salesforce.log;"
  say "         every simulated effect: $run_dir/sim-ledger.jsonl"
  say ""
  say "Press Ctrl-C to stop q2c serve, q2c sim and the local Salesforce (Postgres and RabbitMQ keep running)."
  wait -n "$serve_pid" "$sim_pid" "$sf_pid" || true
  local pid name
  for pid in $serve_pid $sim_pid $sf_pid; do
    if ! kill -0 "$pid" 2>/dev/null; then
      case $pid in
        "$serve_pid") name=serve ;;
        "$sim_pid") name=sim ;;
        *) name=local-salesforce ;;
      esac
      log_tail "$run_dir/$name.log"
      die "q2c $name stopped unexpectedly"
    fi
  done
}

main() {
  while [ $# -gt 0 ]; do
    case $1 in
      --exit-when-done) exit_when_done=true ;;
      --release) profile=release ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        usage >&2
        exit 2
        ;;
    esac
    shift
  done
  if ! [[ $quotes =~ ^[0-9]+$ ]] || [ "$quotes" -lt 3 ] || [ "$quotes" -gt 100 ]; then
    die "Q2C_QUICKSTART_QUOTES must be a number from 3 to 100 (one credit hold, one declined card, the rest paid)"
  fi
  [[ $timeout_s =~ ^[0-9]+$ ]] || die "Q2C_QUICKSTART_TIMEOUT must be a number of seconds"
  command -v python3 >/dev/null 2>&1 ||
    die "python3 is needed for the JSON handling: apt-get install -y python3"

  say "q2c quick start"
  run_dir=${Q2C_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/q2c-quickstart.XXXXXX")}
  mkdir -p "$run_dir"
  run_dir=$(cd "$run_dir" && pwd)
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP

  services
  build
  token
  start_q2c
  step "Your API token"
  show_token
  publish_events
  await_workflows
  watch_workflows
  summary

  if [ "$exit_when_done" = true ]; then
    if [ "$summary_ok" = true ] && [ "$timed_out" = false ]; then exit 0; fi
    exit 1
  fi
  keep_running
}

# --- the JSON helper --------------------------------------------------------------

helper_source() {
  cat <<'PY'
"""JSON work for deploy/quickstart.sh: sample events, the view, the summary."""
import hashlib
import json
import random
import secrets
import sys
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

ACCOUNTS = [  # name, currency, payment terms
    ("Acme Corp", "USD", "Net 30"),
    ("Globex Industries", "USD", "Net 45"),
    ("Initech GmbH", "EUR", "Net 30"),
    ("Umbrella Health Ltd", "GBP", "Net 60"),
    ("Stark Logistics", "USD", "Net 30"),
    ("Wonka Confections AG", "CHF", "Net 30"),
    ("Tyrell Systems", "USD", "Net 15"),
    ("Cyberdyne Robotics", "CAD", "Net 30"),
    ("Vandelay Imports", "USD", "Due on receipt"),
    ("Soylent Foods", "USD", "Net 30"),
]
CREDIT_HOLD = ("Hooli [Credit Hold]", "USD", "Net 30")
PRODUCTS = [  # code, description, unit price
    ("PLAT-ANNUAL", "Platform subscription, annual", "1200.00"),
    ("SEAT-PRO", "Pro seat, annual", "348.00"),
    ("ONBOARD", "Onboarding package", "2500.00"),
    ("SUPPORT-PREM", "Premium support, annual", "4800.00"),
    ("API-10M", "API calls, block of 10M", "99.95"),
    ("TRAIN-DAY", "Training day, on site", "1450.00"),
    ("SSO-ADDON", "Single sign-on add-on, per seat", "18.75"),
]
QUANTITIES = [1, 2, 3, 5, 10, 20]
DISCOUNTS = ["0", "0", "5", "10", "12.5", "15"]
CARD_OK, CARD_DECLINED = "pm_card_visa", "pm_card_chargeDeclined"

LABELS = {"create_order": "order", "issue_invoice": "invoice",
          "collect_payment": "payment", "report_status": "report"}
MARKS = {"running": "…", "succeeded": "✓", "failed": "✗",
         "cancelled": "cancelled", "skipped": "skipped"}
UNDO_MARKS = {"running": "↩…", "compensated": "↩", "failed": "↩✗", "skipped": "↩ skipped"}
TERMINAL = {"completed", "compensated", "failed", "cancelled"}
ACCOUNT_WIDTH = 22


def salesforce_id(prefix, *parts):
    """An 18-character record id, the same for the same parts."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest().upper()
    return (prefix + digest)[:18]


def sample_lines(rng):
    """Quote lines whose net totals are exact, as CPQ computes them."""
    lines = []
    for code, description, price in rng.sample(PRODUCTS, rng.randint(1, 3)):
        quantity = 1 if code == "ONBOARD" else rng.choice(QUANTITIES)
        discount = rng.choice(DISCOUNTS)
        net = Decimal(quantity) * Decimal(price) * (100 - Decimal(discount)) / 100
        net = net.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
        lines.append({"product_code": code, "description": description,
                      "quantity": quantity, "unit_price": price,
                      "discount_percent": discount, "net_total": str(net)})
    return lines


def sample_fields(run, n, number, account, method, lines, amount):
    """A quote-accepted platform event's fields, in Salesforce names, as the
    local Salesforce's console takes them (CreatedDate and CreatedById are
    filled in when it publishes)."""
    name, currency, terms = account
    return {
        "Quote_Id__c": salesforce_id("a0q", run, n),
        "Quote_Number__c": f"Q-{number:05d}",
        "Account_Id__c": salesforce_id("001", name),
        "Account_Name__c": name,
        "Opportunity_Id__c": salesforce_id("006", run, n),
        "Currency_Iso_Code__c": currency,
        # A double in the event's schema; cents survive the round trip.
        "Net_Amount__c": float(amount),
        "Payment_Terms__c": terms,
        "Payment_Method__c": method,
        "Lines__c": json.dumps(lines),  # a JSON array as text, as Salesforce sends it
    }


def samples(count, state, yours):
    """Writes quote-N.json (the event's fields) for each sample quote,
    samples.tsv listing them, pending.tsv (sample, quote id: those without a
    workflow yet), and one more quote in `yours` for a person to publish."""
    count, state = int(count), Path(state)
    credit_hold, declined = count // 3, 2 * count // 3
    run = secrets.token_hex(8)
    first_number = 100 * secrets.randbelow(900) + 10001
    rows, pending = [], []
    for n in range(count):
        account = CREDIT_HOLD if n == credit_hold else ACCOUNTS[n % len(ACCOUNTS)]
        method = CARD_DECLINED if n == declined else CARD_OK
        expected = ("failed" if n == credit_hold
                    else "compensated" if n == declined else "completed")
        lines = sample_lines(random.Random(n))
        amount = sum(Decimal(line["net_total"]) for line in lines)
        fields = sample_fields(run, n, first_number + n, account, method, lines, amount)
        (state / f"quote-{n}.json").write_text(json.dumps(fields, indent=2) + "\n")
        rows.append([str(n), fields["Quote_Number__c"], account[0],
                     f"{account[1]} {amount:,.2f}", method, expected])
        pending.append(f"{n}\t{fields['Quote_Id__c']}\n")
    (state / "samples.tsv").write_text("".join("\t".join(row) + "\n" for row in rows))
    (state / "pending.tsv").write_text("".join(pending))
    lines = sample_lines(random.Random(count))
    fields = sample_fields(run, count, first_number + count, ACCOUNTS[count % len(ACCOUNTS)],
                           CARD_OK, lines, sum(Decimal(line["net_total"]) for line in lines))
    Path(yours).write_text(json.dumps(fields, indent=2) + "\n")


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def get(path, key):
    """Prints one top-level field of a JSON file."""
    value = (read_json(path) or {}).get(key)
    print("" if value is None else value)


def replay_id(published):
    """The replay id the console answered (hex of 8 bytes), as a number."""
    return int(published.get("replay_id") or "0", 16)


def published(state):
    """Says what the local Salesforce published."""
    state = Path(state)
    answers = [read_json(path) or {} for path in sorted(state.glob("published-*.json"))]
    ids = sorted(replay_id(answer) for answer in answers)
    topics = sorted({answer.get("topic", "?") for answer in answers})
    print(f"  published {len(answers)} events on {', '.join(topics)}, replay ids {ids[0]} to {ids[-1]}")
    print("  waiting for q2c serve to take them in over the Pub/Sub API...")


def found(state):
    """Reads lookup-N.json (GET /api/v1/workflows?quote_id=) of the pending
    samples; keeps in pending.tsv those without a workflow yet, and adds the
    others to workflows.tsv (sample, workflow id)."""
    state = Path(state)
    still, ids = [], []
    for line in (state / "pending.tsv").read_text().splitlines():
        n, _ = line.split("\t")
        items = (read_json(state / f"lookup-{n}.json") or {}).get("items") or []
        if items:
            ids.append(f"{n}\t{items[0]['id']}\n")
        else:
            still.append(line + "\n")
    (state / "pending.tsv").write_text("".join(still))
    with open(state / "workflows.tsv", "a") as workflows:
        workflows.write("".join(ids))


def taken_in(state):
    """Lists each sample with its event's replay id and its workflow; writes
    refresh (every workflow, for the first view)."""
    state = Path(state)
    ids = dict(line.split("\t") for line in (state / "workflows.tsv").read_text().splitlines())
    rows = [line.split("\t") for line in (state / "samples.tsv").read_text().splitlines()]
    replay_ids = [replay_id(read_json(state / f"published-{row[0]}.json") or {}) for row in rows]
    width = len(str(max(replay_ids)))
    for (n, number, account, amount, method, _), replay in zip(rows, replay_ids):
        print(f"  {number:<8}  {account:<{ACCOUNT_WIDTH}}  {amount:>13}  {method:<22}  "
              f"replay id {replay:>{width}} → workflow {ids[n]}")
    (state / "refresh").write_text("".join(f"{ids[n]}\n" for n in ids))


def streams(path, topic=""):
    """One line per topic of GET /api/v1/salesforce/subscriptions (or just
    `topic`'s): its stream's state and the position q2c stored."""
    answer = read_json(path)
    if answer is None:
        print("  (q2c did not answer GET /api/v1/salesforce/subscriptions)")
        return
    if not answer.get("enabled"):
        print("  no subscriber: Q2C_SALESFORCE_PUBSUB_URL did not reach q2c serve")
        return
    for status in answer.get("subscriptions") or []:
        if topic and status["topic"] != topic:
            continue
        detail = f" ({status['detail']})" if status.get("detail") else ""
        dead = f", {status['dead_letters']} dead-lettered" if status.get("dead_letters") else ""
        print(f"  {status['topic']}: {status['state']}{detail}, "
              f"{status['events_received']} events received{dead}, "
              f"position {status.get('position') or 'none'}")


def load(state):
    """The samples, each with its workflow id and its latest detail."""
    state = Path(state)
    ids = dict(line.split("\t") for line in (state / "workflows.tsv").read_text().splitlines())
    quotes = []
    for line in (state / "samples.tsv").read_text().splitlines():
        n, number, account, amount, method, expected = line.split("\t")
        quotes.append({"id": ids[n], "number": number, "account": account, "amount": amount,
                       "expected": expected,
                       "detail": read_json(state / f"workflow-{ids[n]}.json")})
    return quotes


def steps_text(detail, reasons=True):
    """A workflow's steps so far: `order ✓  invoice ✓  payment …`."""
    steps = detail.get("steps") or []
    undone = [f"{LABELS.get(s['name'], s['name'])} {UNDO_MARKS.get(s['compensation']['status'], '↩?')}"
              for s in reversed(steps) if s["compensation"]["status"] != "not_started"]
    failed_at = max((i for i, s in enumerate(steps) if s["status"] in ("failed", "cancelled")),
                    default=None)
    parts = []
    for i, step in enumerate(steps):
        if step["status"] != "pending":
            part = f"{LABELS.get(step['name'], step['name'])} {MARKS.get(step['status'], step['status'])}"
            if step["status"] == "running" and step["attempts"] > 1:
                part += f" (attempt {step['attempts']})"
            if step["status"] == "failed" and reasons and step.get("last_error"):
                part += f" {step['last_error']}"
            parts.append(part)
        if i == failed_at:
            parts += undone  # undoing starts where the failure happened
    if failed_at is None:
        parts += undone
    if detail.get("attention"):
        parts.append(f"! {detail['attention']['reason']}")
    return "  ".join(parts)


def row(quote, reasons):
    detail = quote["detail"] or {"status": "starting"}
    return (f"{quote['number']:<8}  {quote['account'][:ACCOUNT_WIDTH]:<{ACCOUNT_WIDTH}}  "
            f"{detail['status']:<12}  {steps_text(detail, reasons)}").rstrip()


def view(state, width):
    """One line per quote (after a header), fitted to `width` when not 0.
    Writes progress (finished, total) and refresh (the workflows whose detail
    to fetch before the next view)."""
    state, width = Path(state), int(width)
    listed = {item["id"]: item for item in (read_json(state / "list.json") or {}).get("items", [])}
    quotes = load(state)
    lines = [f"{'QUOTE':<8}  {'ACCOUNT':<{ACCOUNT_WIDTH}}  {'STATUS':<12}  STEPS"]
    finished, refresh = 0, []
    for quote in quotes:
        detail, item = quote["detail"], listed.get(quote["id"])
        if detail is None or detail["status"] not in TERMINAL or item is None or (
                item["status"], item["updated_at"]) != (detail["status"], detail["updated_at"]):
            refresh.append(quote["id"])
        finished += bool(detail) and detail["status"] in TERMINAL
        line = row(quote, reasons=True)
        if width and len(line) >= width:
            line = row(quote, reasons=False)
        if width and len(line) >= width:
            line = line[:width - 2] + "…"
        lines.append(line)
    print("\n".join(lines))
    (state / "progress").write_text(f"{finished} {len(quotes)}\n")
    (state / "refresh").write_text("".join(f"{id}\n" for id in refresh))


def summary(state, timed_out):
    """The table of how every quote ended; exits 1 unless each ended as its
    sample expects."""
    quotes = load(state)
    table = [("QUOTE", "ACCOUNT", "AMOUNT", "STATUS", "OUTCOME", "STEPS", "AS EXPECTED")]
    problems, failures, tally = [], [], {}
    for quote in quotes:
        detail = quote["detail"] or {}
        status, outcome = detail.get("status", "unknown"), detail.get("outcome") or "-"
        tally[status] = tally.get(status, 0) + 1
        ok = status == outcome == quote["expected"]
        if not ok:
            problems.append(f"{quote['number']} ({quote['account']}) is {status}, expected "
                            f"{quote['expected']}: GET /api/v1/workflows/{quote['id']}")
        table.append((quote["number"], quote["account"], quote["amount"], status, outcome,
                      steps_text(detail, reasons=False), "yes" if ok else "NO"))
        failures += [f"{quote['number']}: {step['name']} failed for good: {step['last_error']}"
                     for step in detail.get("steps") or []
                     if step["status"] == "failed" and step.get("last_error")]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    for number, cells in enumerate(table):
        print("  " + "  ".join(
            cell.rjust(w) if i == 2 and number else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths))).rstrip())
    if failures:
        print()
        print("\n".join("  " + failure for failure in failures))
    print()
    order = ["completed", "failed", "compensated", "cancelled"]
    counts = ", ".join(f"{tally[status]} {status}" for status in
                       sorted(tally, key=lambda s: order.index(s) if s in order else len(order)))
    if problems or timed_out == "true":
        print(f"NOT as expected ({counts}):")
        print("\n".join("  " + problem for problem in problems))
        sys.exit(1)
    print(f"All {len(quotes)} workflows ended as expected: {counts}.")


def http(method, url, out, body="", header_file=""):
    """curl's job, for machines without curl: prints the HTTP status."""
    import urllib.error
    import urllib.request
    headers = {}
    if header_file:
        name, _, value = Path(header_file).read_text().strip().partition(": ")
        headers[name] = value
    data = Path(body).read_bytes() if body else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            code, content = response.status, response.read()
    except urllib.error.HTTPError as error:
        code, content = error.code, error.read()
    except OSError:
        code, content = 0, b""
    Path(out).write_bytes(content)
    print(f"{code:03d}")


COMMANDS = {"samples": samples, "get": get, "published": published, "found": found,
            "taken_in": taken_in, "streams": streams, "view": view, "summary": summary,
            "http": http}
COMMANDS[sys.argv[1]](*sys.argv[2:])
PY
}

main "$@"
