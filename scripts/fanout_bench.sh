#!/usr/bin/env bash
# Owns: measuring the fan-out rate with 1, 2, 3 `outaged --role dispatcher`
# processes through Kannel on Tansu (issue 22 item 6), with real processes
# on ports of its own (not make e2e's), state in out/fanout-bench:
#   1. starts Tansu (memory storage unless TANSU_STORAGE=s3), a throw-away
#      CA and Kannel (bearerbox + smsbox + fakesmsc; sendsms over HTTPS);
#      no SMTP: [sinks.email] is left out, so mail goes to the outbox files;
#   2. creates the topics (the incident log, election and commands with one
#      partition, as --role correlator needs; actions and the per-round
#      deliveries/ledger/credits topics with FANOUT_PARTITIONS);
#   3. writes an alarm storm (`outagectl simulate`, power failures on the
#      demo sites, ending hours ago) and puts it on the alarm topic with
#      `outagectl publish`; one `outaged --role correlator` turns it into
#      incidents and actions (the backlog), and is stopped once the
#      actions stop coming and no incident is open;
#   4. counts the backlog's SMS notices: one dispatcher with no SMS
#      provider (every notice to its outbox, DIR/count/sms.jsonl);
#   5. per rate in FANOUT_RATES, per N in FANOUT_DISPATCHERS, a round under
#      `flock FANOUT_LOCK` (other sessions' heavy runs hold the same lock):
#      N dispatchers started together with a fresh kafka.group_id (so the
#      group `<group_id>-dispatch` reads outage.actions from the start),
#      fresh deliveries, ledger and credits topics and outbox dirs; the
#      SMS at fakesmsc are counted (whole messages: a concatenated SMS
#      counts once, at its last part) until all the backlog's SMS arrived
#      (with a low rate: FANOUT_WINDOW_S seconds' worth of them)
#      (or FANOUT_STALL_S seconds without one more); one JSON line a round:
#      {"dispatchers":N,"rate_per_process":R,"sms":…,"expected":…,
#       "first_to_last_s":…,"sms_per_s":…,"start_to_last_s":…}
#      first_to_last: first SMS at fakesmsc → last; sms_per_s: (sms − 1) /
#      first_to_last; start_to_last: the processes' start → the last SMS.
# and stops everything it started (trap), whatever happened.
#
# Usage: scripts/fanout_bench.sh        (after cargo build --release --bin outaged --bin outagectl)
# Env: OUTAGED, OUTAGECTL (binaries; default target/release/…), FANOUT_DIR
#   (out/fanout-bench), TANSU_PORT (29092), TANSU_S3_PORT (30092),
#   TANSU_STORAGE (memory), KANNEL_ADMIN_PORT (23000), KANNEL_SMSBOX_PORT
#   (23001), KANNEL_SENDSMS_PORT (23013), KANNEL_FAKE_PORT (20000),
#   FANOUT_API_PORT (28290: the correlator's API; dispatchers +1…, the counting one +9),
#   FANOUT_RATES ("40 5000": sinks.sms rate_per_second per process),
#   FANOUT_DISPATCHERS ("1 2 3"), FANOUT_PARTITIONS (6), FANOUT_SEED (42),
#   FANOUT_POWER_FAILURES (3), FANOUT_STORMS (1), FANOUT_WINDOW_S (60: a
#   round whose rate × N × this is below the backlog counts only that many
#   SMS, "expected" in its line), FANOUT_MAX_IN_FLIGHT (32),
#   FANOUT_CONCURRENCY (64: sinks.concurrency), FANOUT_STALL_S (30),
#   FANOUT_LOCK (/tmp/heavy.lock), FANOUT_TLS (1: sendsms over HTTPS; 0: http).
# Nothing here prints a customer's number or address: the counts read only
# fakesmsc's line types and concatenation headers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
W="$(realpath -m -- "${FANOUT_DIR:-out/fanout-bench}")"
BIN="$(realpath -m -- "${OUTAGED:-${CARGO_TARGET_DIR:-target}/release/outaged}")"
CTL="$(realpath -m -- "${OUTAGECTL:-${CARGO_TARGET_DIR:-target}/release/outagectl}")"
export TANSU_PORT="${TANSU_PORT:-29092}" TANSU_S3_PORT="${TANSU_S3_PORT:-30092}" TANSU_STORAGE="${TANSU_STORAGE:-memory}"
export KANNEL_ADMIN_PORT="${KANNEL_ADMIN_PORT:-23000}" KANNEL_SMSBOX_PORT="${KANNEL_SMSBOX_PORT:-23001}"
export KANNEL_SENDSMS_PORT="${KANNEL_SENDSMS_PORT:-23013}" KANNEL_FAKE_PORT="${KANNEL_FAKE_PORT:-20000}"
API_PORT="${FANOUT_API_PORT:-28290}"
PARTS="${FANOUT_PARTITIONS:-6}"
LOCK="${FANOUT_LOCK:-/tmp/heavy.lock}"
KANNEL_DIR="$W/kannel"
PIDS="$W/pids" # every outaged this script (or a round) started, for the trap

say() { echo "fanout_bench: $*" >&2; }
die() { say "$*"; exit 1; }
alive() { local st; st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1; st="${st##*) }"; [[ "${st%% *}" != Z ]]; }
# Our pids only: the pid file holds what we started, checked against the binary.
ours() { [[ "$(readlink "/proc/$1/exe" 2>/dev/null)" == "$BIN"* ]]; }
stop_pid() { # pid: SIGTERM, then SIGKILL after 15 s
  local i
  alive "$1" && ours "$1" || return 0
  kill -TERM "$1" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do alive "$1" || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
stop_all_outaged() {
  local p
  [[ -f "$PIDS" ]] || return 0
  for p in $(cat "$PIDS"); do stop_pid "$p"; done
  : >"$PIDS"
}
metric() { # port name-with-labels → value (empty if absent)
  { exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && timeout 5 cat <&3; } 2>/dev/null \
    | awk -v m="$2" 'index($0, m " ") == 1 { print $NF; exit }' || true
}

# A dispatcher's or the correlator's config: the demo reference data, the
# topics (actions and the incident log shared; deliveries, ledger and
# credits per round), an SMS provider when RATE is given.
config() { # file group_id listen_port outbox_dir round_tag rate(or "")
  local f="$1" g="$2" port="$3" out="$4" tag="$5" rate="$6" scheme=https
  [[ "${FANOUT_TLS:-1}" == 1 ]] || scheme=http
  mkdir -p "$out"
  cat >"$f" <<EOF
[kafka]
bootstrap = "127.0.0.1:$TANSU_PORT"
partitions = $PARTS
replication_factor = 1
group_id = "$g"

[kafka.topics]
alarms = "noc.alarms"
dlq = "noc.alarms.dlq"
incidents = "outage.incidents"
actions = "outage.actions"
control = "outage.control"
commands = "outage.commands"
deliveries = "fanout.deliveries.$tag"
ledger = "fanout.ledger.$tag"
credits = "fanout.credits.$tag"

[refdata]
sites = "$REPO/data/demo/sites.csv"
postcodes = "$REPO/data/demo/postcodes.csv"
customers = "$REPO/data/demo/customers.csv"
unsubscribes = "$out/unsubscribes.jsonl"

[sinks]
outbox_dir = "$out"
concurrency = ${FANOUT_CONCURRENCY:-64}

[api]
listen = "127.0.0.1:$port"
EOF
  if [[ -n "$rate" ]]; then
    cat >>"$f" <<EOF

[sinks.tls]
ca_file = "$W/tls/ca.pem"

[[sinks.sms]]
name = "kannel"
kind = "kannel"
url = "$scheme://127.0.0.1:$KANNEL_SENDSMS_PORT/cgi-bin/sendsms"
username = "outage"
password = "${KANNEL_PASSWORD:-outage-e2e}"
rate_per_second = $rate
max_in_flight = ${FANOUT_MAX_IN_FLIGHT:-32}
EOF
  fi
}

topic() { # name partitions
  "$TANSU" topic create --broker "tcp://127.0.0.1:$TANSU_PORT" --partitions "$2" "$1" >/dev/null
}

start_role() { # role config log → pid on stdout
  RUST_LOG=info "$BIN" --role "$1" --config "$2" </dev/null >"$3" 2>&1 &
  echo $! >>"$PIDS"
  echo $!
}

# ------------------------------------------------------------------ a round
# Runs under flock (the script calls itself): N dispatchers, fakesmsc
# counted from where its log is now.
ROUND_PIDS=()
round() { # N rate expected
  local n="$1" rate="$2" expected="$3" tag i d
  tag="r$rate-n$n-$(date +%s)"
  d="$W/$tag"
  mkdir -p "$d"
  topic "fanout.deliveries.$tag" "$PARTS"; topic "fanout.ledger.$tag" "$PARTS"; topic "fanout.credits.$tag" "$PARTS"
  for ((i = 1; i <= n; i++)); do
    config "$d/d$i.toml" "fanout-$tag" $((API_PORT + i)) "$d/d$i" "$tag" "$rate"
  done
  local offset want="$expected" window="${FANOUT_WINDOW_S:-60}"
  # A per-process limit gives a steady rate: count about WINDOW seconds' worth.
  ((rate * n * window < want)) && want=$((rate * n * window))
  offset="$(stat -c %s "$KANNEL_DIR/fakesmsc.log")"
  # The watcher takes its t0, then the dispatchers start at once.
  python3 - "$KANNEL_DIR/fakesmsc.log" "$offset" "$want" "${FANOUT_STALL_S:-30}" "$d/ready" \
    "$n" "$rate" >"$d/result.json" <<'PY' &
import json, sys, time, os
path, offset, expected, stall, ready, n, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
t0 = time.time()
open(ready, "w").close()
f = open(path, "rb"); f.seek(offset)
buf, sms, parts, first, last = b"", 0, 0, None, None
limit = t0 + 60 + 4 * expected / max(1, min(rate * n, 400)) + stall
while True:
    chunk = f.read()
    now = time.time()
    if chunk:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            i = line.find(b"Got message ")
            if i < 0: continue
            lt = line.find(b"<", i)
            if lt < 0: continue
            fields = line[lt + 1:].rstrip(b">").split(b" ", 4)
            if len(fields) < 4: continue
            parts += 1
            whole = True
            if fields[2] == b"udh":  # %05%00%03 ref total seq: whole at its last part
                import urllib.parse
                udh = urllib.parse.unquote_to_bytes(fields[3].replace(b"+", b" "))
                whole = len(udh) >= 6 and udh[5] == udh[4]
            if whole:
                sms += 1
                if first is None: first = now
                last = now
    if sms >= expected > 0: break
    if last is not None and now - last > stall: break
    if now > limit: break
    time.sleep(0.05)
span = (last - first) if sms else 0.0
print(json.dumps({
    "dispatchers": n, "rate_per_process": rate, "sms": sms, "expected": expected, "parts": parts,
    "first_to_last_s": round(span, 2),
    "sms_per_s": round((sms - 1) / span, 1) if span > 0 else None,
    "start_to_last_s": round(last - t0, 2) if sms else None,
    "complete": sms >= expected,
}))
PY
  local watcher=$!
  until [[ -e "$d/ready" ]]; do sleep 0.02; done
  for ((i = 1; i <= n; i++)); do ROUND_PIDS+=("$(start_role dispatcher "$d/d$i.toml" "$d/d$i.log")"); done
  wait "$watcher" || true
  # Per dispatcher: SMS it carried (its /metrics), before it stops.
  local per=()
  for ((i = 1; i <= n; i++)); do
    per+=("$(metric $((API_PORT + i)) 'outage_actions_total{channel="sms",result="done"}')")
  done
  for p in "${ROUND_PIDS[@]}"; do stop_pid "$p"; done
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["per_dispatcher_sms"]=[int(x) if x else None for x in sys.argv[2:]]; print(json.dumps(r))' \
    "$d/result.json" "${per[@]}"
}

if [[ "${1:-}" == --round ]]; then
  trap 'for p in "${ROUND_PIDS[@]}"; do stop_pid "$p"; done' EXIT
  TANSU="$(bash scripts/tansu.sh install 2>/dev/null | tail -n1)"
  round "$2" "$3" "$4"
  exit 0
fi

# ------------------------------------------------------------------ set-up
[[ -x "$BIN" && -x "$CTL" ]] || die "missing $BIN or $CTL (cargo build --release --bin outaged --bin outagectl)"
mkdir -p "$W/bin"
# Copies: a build in the shared target/ cannot swap them mid-run.
cp "$BIN" "$W/bin/outaged"; cp "$CTL" "$W/bin/outagectl"
BIN="$W/bin/outaged" CTL="$W/bin/outagectl"
: >"$PIDS"
ROUND=""
cleanup() {
  local c
  if [[ -n "$ROUND" ]] && alive "$ROUND"; then # flock, and the round it runs
    for c in $(cat "/proc/$ROUND/task/$ROUND/children" 2>/dev/null); do kill -TERM "$c" 2>/dev/null || true; done
    kill -TERM "$ROUND" 2>/dev/null || true
    wait "$ROUND" 2>/dev/null || true
  fi
  stop_all_outaged
  bash scripts/kannel.sh stop "$KANNEL_DIR" || true
  bash scripts/tansu.sh stop "$TANSU_PORT" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
TANSU="$(bash scripts/tansu.sh install | tail -n1)"
bootstrap="$(bash scripts/tansu.sh start "$TANSU_PORT" | tail -n1)"
say "Tansu ($TANSU_STORAGE storage) at $bootstrap"
tlsdir=()
if [[ "${FANOUT_TLS:-1}" == 1 ]]; then
  bash scripts/tls_ca.sh "$W/tls"
  tlsdir=(KANNEL_TLS_DIR="$W/tls")
fi
sendsms="$(env "${tlsdir[@]}" bash scripts/kannel.sh start "$KANNEL_DIR" | tail -n1)"
say "Kannel sendsms at $sendsms"

# One partition where --role correlator needs it; the alarms on one too.
for t in noc.alarms noc.alarms.dlq outage.incidents outage.control outage.commands; do topic "$t" 1; done
topic outage.actions "$PARTS"
for t in deliveries ledger credits; do topic "fanout.$t.corr" "$PARTS"; done

# The storm, ended hours ago: a backlog the correlator plans at once.
start="$(date -u -d '-6 hours' +%Y-%m-%dT%H:%M:%SZ)"
"$CTL" simulate --sites data/demo/sites.csv --seed "${FANOUT_SEED:-42}" --start "$start" \
  --power-failures "${FANOUT_POWER_FAILURES:-3}" --storms "${FANOUT_STORMS:-1}" --flaps 0 \
  --out "$W/storm.jsonl" --truth "$W/truth.json" >&2
"$CTL" publish --kafka "$bootstrap" --topic noc.alarms "$W/storm.jsonl" >&2

config "$W/correlator.toml" fanout "$API_PORT" "$W/correlator" corr ""
cpid="$(start_role correlator "$W/correlator.toml" "$W/correlator.log")"
say "correlator pid $cpid: waiting for the actions"
planned="" stable=0 deadline=$((SECONDS + 600))
while ((stable < 15)); do
  ((SECONDS < deadline)) || die "the correlator did not finish in 600 s (log: $W/correlator.log)"
  alive "$cpid" || die "the correlator exited (log: $W/correlator.log)"
  sleep 1
  now="$(metric "$API_PORT" outage_actions_planned_total)"
  open="$(metric "$API_PORT" 'outage_incidents{state="declared"}')"
  if [[ -n "$now" && "$now" != 0 && "$now" == "$planned" && "${open:-0}" == 0 ]]; then
    stable=$((stable + 1))
  else stable=0; fi
  planned="$now"
done
say "correlator planned $planned actions; stopping it"
stop_pid "$cpid"

# The backlog's SMS: one dispatcher without a gateway writes them to its
# outbox (emptied first: an earlier run's journals would add up).
rm -rf "$W/count"
config "$W/count.toml" fanout-count $((API_PORT + 9)) "$W/count" corr ""
kpid="$(start_role dispatcher "$W/count.toml" "$W/count.log")"
last=-1 stable=0 deadline=$((SECONDS + 600))
while ((stable < 5)); do
  ((SECONDS < deadline)) || die "the counting dispatcher did not finish (log: $W/count.log)"
  alive "$kpid" || die "the counting dispatcher exited (log: $W/count.log)"
  sleep 1
  n="$(cat "$W/count/sms.jsonl" 2>/dev/null | wc -l)"
  lag="$(metric $((API_PORT + 9)) outage_consumer_lag_records)"
  if [[ "$n" == "$last" && "$n" != 0 && "$lag" == 0 ]]; then stable=$((stable + 1)); else stable=0; fi
  last="$n"
done
stop_pid "$kpid"
expected="$last"
say "backlog: $expected SMS notices on outage.actions ($PARTS partitions)"

# ------------------------------------------------------------------ rounds
for rate in ${FANOUT_RATES:-40 5000}; do
  for n in ${FANOUT_DISPATCHERS:-1 2 3}; do
    say "round: $n dispatcher(s), rate_per_second $rate each (waiting for $LOCK)"
    # In the background and waited for, so that a signal reaches the trap
    # at once and the trap can stop the waiting (or running) round.
    flock "$LOCK" env FANOUT_DIR="$W" OUTAGED="$BIN" OUTAGECTL="$CTL" bash "$0" --round "$n" "$rate" "$expected" &
    ROUND=$!
    wait "$ROUND"
    ROUND=""
  done
done
