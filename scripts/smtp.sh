#!/usr/bin/env bash
# Owns: running a real SMTP server (scripts/smtp_sink.py, aiosmtpd from the
# hash-pinned scripts/requirements-e2e.txt) on loopback for end-to-end tests.
# It accepts every message and appends it as one JSON line to DIR/smtp.jsonl
# (fields: see smtp_sink.py). The venv is <repo>/.venv-e2e (git-ignored),
# rebuilt when the requirements file changes.
# A second listener on SMTP_TLS_PORT requires STARTTLS, with a certificate
# for 127.0.0.1/localhost from a throw-away CA that scripts/tls_ca.sh makes
# in DIR/tls (ca.pem is what a client must trust; kept across starts).
#
# Usage: scripts/smtp.sh install | start DIR | stop DIR | status DIR
#   start empties DIR/smtp.jsonl (SMTP_KEEP=1: appends to it, for a restart), prints 127.0.0.1:PORT as the last line of
#   stdout; pid in DIR/smtp.pid, log in DIR/smtp.log.
# Env: SMTP_PORT (default 2525), SMTP_TLS_PORT (default 2526),
#   E2E_VENV (default <repo>/.venv-e2e),
#   SMTP_START_TIMEOUT (seconds, default 30), PYTHON (default python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${E2E_VENV:-$REPO/.venv-e2e}"
REQ="$REPO/scripts/requirements-e2e.txt"
SINK="$REPO/scripts/smtp_sink.py"

die() { echo "smtp.sh: $*" >&2; exit 1; }
say() { echo "smtp.sh: $*" >&2; }

PORT="${SMTP_PORT:-2525}"
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then die "bad port SMTP_PORT=$PORT"; fi
TLS_PORT="${SMTP_TLS_PORT:-2526}"
if ! [[ "$TLS_PORT" =~ ^[0-9]+$ ]] || ((TLS_PORT < 1 || TLS_PORT > 65535)); then die "bad port SMTP_TLS_PORT=$TLS_PORT"; fi

cmd_install() {
  # Reuse the venv only if it was built from the current requirements file.
  if [[ -x "$VENV/bin/python" ]] && cmp -s "$REQ" "$VENV/requirements-e2e.txt" \
    && "$VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    return 0
  fi
  "${PYTHON:-python3}" -c 'import venv, ensurepip' 2>/dev/null \
    || die "${PYTHON:-python3} cannot make a venv (apt-get install python3-venv)"
  say "installing aiosmtpd into $VENV"
  "${PYTHON:-python3}" -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-input \
    --require-hashes --only-binary=:all: -r "$REQ" >&2
  cp "$REQ" "$VENV/requirements-e2e.txt"
}

alive() { # pid: running and not a zombie
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  st="${st##*) }"; [[ "${st%% *}" != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid in DIR/smtp.pid if that process is still our smtp_sink.py.
our_pid() { # dir
  local pid
  pid="$(cat "$1/smtp.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$SINK --out $1/smtp.jsonl" || return 1
  echo "$pid"
}

cmd_stop() { # dir
  local pid i
  if pid="$(our_pid "$1")"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
    say "stopped smtp_sink (pid $pid)"
  fi
  rm -f "$1/smtp.pid"
}

cmd_status() { # dir
  local pid
  if pid="$(our_pid "$1")"; then echo "smtp_sink: running, pid $pid, $(wc -l <"$1/smtp.jsonl") message(s) in $1/smtp.jsonl"
  else echo "smtp_sink: stopped"; return 1; fi
}

cmd_start() { # dir
  local dir="$1" pid tries
  cmd_install
  mkdir -p "$dir"
  cmd_stop "$dir"
  port_open "$PORT" && die "127.0.0.1:$PORT is already in use (set SMTP_PORT)"
  port_open "$TLS_PORT" && die "127.0.0.1:$TLS_PORT is already in use (set SMTP_TLS_PORT)"
  bash "$REPO/scripts/tls_ca.sh" "$dir/tls"
  [[ "${SMTP_KEEP:-}" == 1 ]] || : >"$dir/smtp.jsonl"
  "$VENV/bin/python" "$SINK" --out "$dir/smtp.jsonl" --host 127.0.0.1 --port "$PORT" \
    --tls-port "$TLS_PORT" --tls-cert "$dir/tls/server.pem" --tls-key "$dir/tls/server.key" \
    </dev/null >"$dir/smtp.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/smtp.pid"
  tries=$((${SMTP_START_TIMEOUT:-30} * 10))
  until port_open "$PORT" && port_open "$TLS_PORT"; do
    if ! alive "$pid" || ((tries-- <= 0)); then
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$dir/smtp.pid"
      tail -n 30 "$dir/smtp.log" >&2 || true
      die "smtp_sink did not start listening on 127.0.0.1:$PORT and :$TLS_PORT (log: $dir/smtp.log)"
    fi
    sleep 0.1
  done
  say "smtp_sink pid $pid listening (STARTTLS required on :$TLS_PORT, CA $dir/tls/ca.pem), writing $dir/smtp.jsonl"
  echo "127.0.0.1:$PORT"
}

dir_arg() {
  [[ -n "${1:-}" ]] || die "usage: $0 install | start DIR | stop DIR | status DIR"
  realpath -m -- "$1"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "$(dir_arg "${2:-}")" ;;
  stop) cmd_stop "$(dir_arg "${2:-}")" ;;
  status) cmd_status "$(dir_arg "${2:-}")" ;;
  *) die "usage: $0 install | start DIR | stop DIR | status DIR" ;;
esac
