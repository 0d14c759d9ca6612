#!/usr/bin/env bash
# The quick start: q2c running on this machine, with sample quotes flowing
# through it, in one command.
#
#   ./deploy/quickstart.sh                   # runs until Ctrl-C
#   ./deploy/quickstart.sh --exit-when-done  # exits after the summary
#
# It starts (or installs) Postgres and RabbitMQ through deploy/services.sh,
# builds q2c, applies the schema, starts `q2c serve` (the orchestrator and its
# HTTP API) and `q2c sim` (simulated ERP, billing, payment and Salesforce
# connectors), sends a batch of sample quote-accepted events to the API, and
# shows each quote moving through order, invoice, payment and status report.
# One sample account is on credit hold (its order is refused: the workflow
# fails) and one card is declined (the order and invoice are undone: the
# workflow is compensated); the others complete.
#
# Run `./deploy/quickstart.sh --help` for the settings. Needs bash, python3
# (for JSON) and curl (or python3 alone); jq is not needed.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/quickstart.sh [--exit-when-done] [--release] [--help]

Starts Postgres, RabbitMQ, `q2c serve` and `q2c sim`, sends sample quotes and
shows them flowing through order, invoice, payment and status report. Then the
API keeps running until Ctrl-C.

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
  Q2C_QUICKSTART_TIMEOUT   seconds to wait for every workflow (default 120)
  Q2C_SIM_LATENCY          delay before each simulated reply (default 1s)
  Q2C_SIM_FAILURE_RATE     share of commands the simulator fails, retryably
                           (default 0; try 0.2 to watch retries)
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
run_dir=""

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

# `http METHOD PATH OUT [BODY_FILE]`: calls the API with the token, writes the
# response body to OUT and prints the HTTP status (000 if unreachable).
http() {
  local method=$1 path=$2 out=$3 body=${4:-}
  if command -v curl >/dev/null 2>&1; then
    local args=(-sS --max-time 10 -o "$out" -w '%{http_code}' -X "$method"
      -H "@$run_dir/auth-header")
    if [ -n "$body" ]; then
      args+=(-H 'Content-Type: application/json' --data-binary "@$body")
    fi
    local code
    code=$(curl "${args[@]}" "$api$path" 2>>"$run_dir/http-errors.log") || true
    echo "${code:-000}"
  else
    helper http "$method" "$api$path" "$run_dir/auth-header" "$out" "$body"
  fi
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
  for pid in $serve_pid $sim_pid; do
    if kill -0 "$pid" 2>/dev/null; then pids+=("$pid"); fi
  done
  [ "${#pids[@]}" -gt 0 ] || return 0
  say ""
  say "Stopping q2c serve and q2c sim..."
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

  step "Starting q2c serve and q2c sim (broker prefix '$Q2C_AMQP_PREFIX')"
  start "$run_dir/serve.ready" "$run_dir/serve.log" "$bin" serve --no-migrate
  serve_pid=$!
  start "$run_dir/sim.ready" "$run_dir/sim.log" \
    "$bin" sim --latency "$latency" --ledger "$run_dir/sim-ledger.jsonl"
  sim_pid=$!
  wait_ready "q2c serve" "$serve_pid" "$run_dir/serve.ready" "$run_dir/serve.log"
  wait_ready "q2c sim" "$sim_pid" "$run_dir/sim.ready" "$run_dir/sim.log"
  api="http://$(helper get "$run_dir/serve.ready" http)"
  say "  q2c serve  pid $serve_pid, API at $api, log $run_dir/serve.log"
  say "  q2c sim    pid $sim_pid, replies after $latency, log $run_dir/sim.log"
}

# How to call the API, with the token.
show_token() {
  if [ "$token_given" = true ]; then
    say "  token: the one in Q2C_API_TOKEN (from your environment)"
    say "  try:   curl -H \"Authorization: Bearer \$Q2C_API_TOKEN\" $api/api/v1/workflows"
  else
    say "  token: $Q2C_API_TOKEN"
    say "  try:   curl -H 'Authorization: Bearer $Q2C_API_TOKEN' $api/api/v1/workflows"
  fi
  say "         (/api/v1/workflows/<id> shows one workflow's steps and history;"
  say "         /healthz, /readyz and /metrics need no token)"
}

send_events() {
  state=$run_dir/state
  rm -rf "$state"
  mkdir -p "$state"
  helper samples "$quotes" "$state"
  step "Sending $quotes quote-accepted events (POST /api/v1/events)"
  local n code
  : >"$state/sent.tsv"
  while IFS=$'\t' read -r n _; do
    code=$(http POST /api/v1/events "$state/reply-$n.json" "$state/event-$n.json")
    case $code in
      200 | 202) ;;
      000) die "the API at $api did not answer (see $run_dir/http-errors.log)" ;;
      *) die "POST /api/v1/events answered $code: $(cat "$state/reply-$n.json")" ;;
    esac
    printf '%s\t%s\n' "$n" "$code" >>"$state/sent.tsv"
  done <"$state/samples.tsv"
  helper sent "$state"
}

# Polls the API until every workflow has ended (or the timeout), showing a
# line per quote: redrawn in place on a terminal, as new lines otherwise.
watch_workflows() {
  step "Watching them move through order, invoice, payment and status report"
  say "  ✓ done   … in progress   ✗ failed for good   ↩ undone (order cancelled, invoice voided, payment refunded)"
  say ""
  local tty=false width=0
  # Redrawing in place needs the whole block on the screen.
  if [ -t 1 ] && [ $((quotes + 3)) -le "$(tput lines 2>/dev/null || echo 0)" ]; then
    tty=true
  fi
  local started tick drawn=0 code id finished total elapsed line i view pause
  local previous=() lines=()
  started=$(now_ms)
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
  say "  API:   $api (POST /api/v1/events takes your own events too)"
  show_token
  say "  logs:  $run_dir/serve.log and sim.log;"
  say "         every simulated effect: $run_dir/sim-ledger.jsonl"
  say ""
  say "Press Ctrl-C to stop q2c serve and q2c sim (Postgres and RabbitMQ keep running)."
  wait -n "$serve_pid" "$sim_pid" || true
  local pid name log
  for pid in $serve_pid $sim_pid; do
    if ! kill -0 "$pid" 2>/dev/null; then
      name=serve log=$run_dir/serve.log
      [ "$pid" = "$sim_pid" ] && name=sim log=$run_dir/sim.log
      log_tail "$log"
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
  send_events
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
import datetime
import hashlib
import json
import random
import secrets
import sys
import uuid
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


def samples(count, state):
    """Writes event-N.json for each sample quote, and samples.tsv listing them."""
    count, state = int(count), Path(state)
    credit_hold, declined = count // 3, 2 * count // 3
    run = secrets.token_hex(8)
    first_number = 100 * secrets.randbelow(900) + 10001
    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    rows = []
    for n in range(count):
        account, currency, terms = (CREDIT_HOLD if n == credit_hold
                                    else ACCOUNTS[n % len(ACCOUNTS)])
        method = CARD_DECLINED if n == declined else CARD_OK
        expected = ("failed" if n == credit_hold
                    else "compensated" if n == declined else "completed")
        lines = sample_lines(random.Random(n))
        amount = sum(Decimal(line["net_total"]) for line in lines)
        payload = {
            "Quote_Id__c": salesforce_id("a0q", run, n),
            "Quote_Number__c": f"Q-{first_number + n:05d}",
            "Account_Id__c": salesforce_id("001", account),
            "Account_Name__c": account,
            "Opportunity_Id__c": salesforce_id("006", run, n),
            "Currency_Iso_Code__c": currency,
            "Net_Amount__c": str(amount),
            "Payment_Terms__c": terms,
            "Payment_Method__c": method,
            "Lines__c": json.dumps(lines),  # a JSON array as text, as Salesforce sends it
            "CreatedDate": created,
            "CreatedById": "0055e00000Q2CQSTRT",
        }
        event = {"channel": "/event/Q2C_Quote_Accepted__e",
                 "data": {"schema": "Q2C_Quote_Accepted__e-1",
                          "event": {"replayId": n + 1, "EventUuid": str(uuid.uuid4())},
                          "payload": payload}}
        (state / f"event-{n}.json").write_text(json.dumps(event, indent=2) + "\n")
        rows.append([str(n), payload["Quote_Number__c"], account,
                     f"{currency} {amount:,.2f}", method, expected])
    (state / "samples.tsv").write_text("".join("\t".join(row) + "\n" for row in rows))


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def get(path, key):
    """Prints one top-level field of a JSON file."""
    value = (read_json(path) or {}).get(key)
    print("" if value is None else value)


def sent(state):
    """Lists the events sent, and writes workflows.tsv: sample, workflow id."""
    state = Path(state)
    codes = dict(line.split("\t") for line in (state / "sent.tsv").read_text().splitlines())
    ids = []
    for line in (state / "samples.tsv").read_text().splitlines():
        n, number, account, amount, method, _ = line.split("\t")
        reply = read_json(state / f"reply-{n}.json") or {}
        ids.append(f"{n}\t{reply.get('workflow_id', '')}\n")
        print(f"  {number:<8}  {account:<{ACCOUNT_WIDTH}}  {amount:>13}  {method:<22}  "
              f"{codes.get(n, '?')}: workflow {reply.get('workflow_id', '?')}")
    (state / "workflows.tsv").write_text("".join(ids))
    (state / "refresh").write_text("".join(line.split("\t")[1] for line in ids))


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


def http(method, url, header_file, out, body=""):
    """curl's job, for machines without curl: prints the HTTP status."""
    import urllib.error
    import urllib.request
    name, _, value = Path(header_file).read_text().strip().partition(": ")
    data = Path(body).read_bytes() if body else None
    request = urllib.request.Request(url, data=data, method=method, headers={name: value})
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


COMMANDS = {"samples": samples, "get": get, "sent": sent, "view": view,
            "summary": summary, "http": http}
COMMANDS[sys.argv[1]](*sys.argv[2:])
PY
}

main "$@"
