#!/usr/bin/env bash
# Owns: installing and running a real SMS gateway, Kannel 1.4.5 (Debian's
# kannel + kannel-extras), on loopback for end-to-end tests: bearerbox, smsbox
# and fakesmsc (the test SMSC from kannel-extras) as its only SMSC. The config
# is deploy/kannel/kannel.conf with its @...@ placeholders filled in.
#
# Usage: scripts/kannel.sh start DIR | stop DIR | status DIR
#                          | stop-box DIR NAME | start-box DIR NAME
#   start installs kannel + kannel-extras with apt-get if missing, writes
#   DIR/kannel.conf, starts the three processes (pids in DIR/{bearerbox,
#   smsbox,fakesmsc}.pid, logs in DIR/*.log, DIR/*.out), waits until the fake
#   SMSC is online and smsbox is connected, and prints the sendsms URL as the
#   last line of stdout. stop kills what the pid files name (only if it is
#   still that Kannel process) and waits for it to exit. stop-box/start-box
#   stop and start one box (NAME smsbox or bearerbox) of a running Kannel,
#   the others left alone (a gateway outage, tests/faults.rs); start-box
#   waits until smsbox is connected again (for bearerbox: the fake SMSC too),
#   starting a stopped smsbox when bearerbox comes back.
# Env: KANNEL_ADMIN_PORT (13000), KANNEL_SMSBOX_PORT (13001),
#   KANNEL_SENDSMS_PORT (13013), KANNEL_FAKE_PORT (10000, bearerbox listens,
#   fakesmsc connects), KANNEL_PASSWORD (outage-e2e: sendsms user `outage`,
#   admin and status password), KANNEL_START_TIMEOUT (seconds, 30),
#   KANNEL_TLS_DIR (unset: plain http; set: sendsms is HTTPS only, with
#   KANNEL_TLS_DIR/server.pem and server.key, e.g. from scripts/tls_ca.sh).
#
# sendsms: http://127.0.0.1:$KANNEL_SENDSMS_PORT/cgi-bin/sendsms?username=outage
#   &password=$KANNEL_PASSWORD&from=..&to=..&text=..(&charset=UTF-8&coding=2)
#   202 "0: Accepted for delivery" (also for a long text, one answer for all
#   its parts; past max-messages=10 parts the text is cut, still 202);
#   403 "Authorization failed for sendsms"; 400 "Missing receiver number,
#   rejected" / "Number(s) has/have been denied by white- and/or black-lists."
#
# DIR/fakesmsc.log (rewritten by each start): fakesmsc's own log; each SMS
# part Kannel hands to the SMSC is one line, N counting parts from 1, the
# wire line between "<" and ">":
#   <date> <time> [pid] [0] DEBUG: Got message N: <FROM TO TYPE ...>
# TYPE, as smsc_fake writes it (gw/smsc/smsc_fake.c sms_to_client):
#   text TEXT        no UDH, 7-bit: TEXT raw UTF-8, not escaped. Characters
#                    outside GSM-7 arrive as "?" (send them with coding=2);
#                    a newline in TEXT breaks the log line in two.
#   ucs-2 URLENC     no UDH, coding=2: UTF-16BE bytes, url-encoded with "+"
#                    for the byte 0x20 (so a space U+0020 is "%00+"). Decode:
#                    unquote_to_bytes(s.replace("+", " ")).decode("utf-16-be")
#   data URLENC      no UDH, 8-bit: the bytes, url-encoded the same way.
#   udh UDH data URLENC
#                    a concatenated part: UDH url-encoded, %05%00%03 + ref,
#                    total, seq (one byte each); payload url-encoded as above,
#                    and its coding NOT shown: a 7-bit part holds UTF-8 text
#                    (153 septets a part; € etc. take 2), a UCS-2 part UTF-16BE (67 chars
#                    a part). Join the payloads of a ref in seq order, then
#                    decode: UTF-16BE if it holds a NUL byte (7-bit text never
#                    does), else UTF-8 (check_gateways.sh does exactly this).
# DIR/access.log (bearerbox): one "Sent SMS" line per whole message (not per
# part) with [flags:mclass:coding:mwi:compress:dlrmask] (coding 0 = 7-bit,
# 2 = UCS-2) and [msg:LEN:TEXT] (hex for UCS-2; 7-bit non-ASCII bytes as "."),
# and "Receive DLR" lines.
# fakesmsc runs with -m 0: it sends no MO messages, it only prints.
# Delivery reports work: with dlr-mask=31 and a dlr-url, smsbox GETs the
# dlr-url twice per message (also per 3-part message): %d = 8 (SMSC
# ACK, %A = "ACK/") and %d = 1 (delivered, %A empty; smsc_fake invents it),
# in either order, within a second.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEMPLATE="$REPO/deploy/kannel/kannel.conf"
BEARERBOX=/usr/sbin/bearerbox
SMSBOX=/usr/sbin/smsbox
FAKESMSC=/usr/lib/kannel/test/fakesmsc # from kannel-extras

die() { echo "kannel.sh: $*" >&2; exit 1; }
say() { echo "kannel.sh: $*" >&2; }

port_env() { # NAME DEFAULT -> validated port
  local p="${!1:-$2}"
  if ! [[ "$p" =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "bad port $1=$p"; fi
  echo "$p"
}
ADMIN_PORT="$(port_env KANNEL_ADMIN_PORT 13000)"
SMSBOX_PORT="$(port_env KANNEL_SMSBOX_PORT 13001)"
SENDSMS_PORT="$(port_env KANNEL_SENDSMS_PORT 13013)"
FAKE_PORT="$(port_env KANNEL_FAKE_PORT 10000)"
PASSWORD="${KANNEL_PASSWORD:-outage-e2e}"
[[ "$PASSWORD" =~ ^[A-Za-z0-9._-]+$ ]] || die "KANNEL_PASSWORD may only hold [A-Za-z0-9._-]"

cmd_install() {
  [[ -x "$BEARERBOX" && -x "$SMSBOX" && -x "$FAKESMSC" ]] && return 0
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update only when the package lists do not know kannel-extras yet.
  if ! apt-cache show kannel-extras >/dev/null 2>&1; then
    say "apt-get update"
    $sudo apt-get update -qq >&2
  fi
  say "installing kannel kannel-extras"
  $sudo apt-get install -y -qq --no-install-recommends kannel kannel-extras >&2
  [[ -x "$BEARERBOX" && -x "$SMSBOX" && -x "$FAKESMSC" ]] \
    || die "kannel installed, but $BEARERBOX, $SMSBOX or $FAKESMSC is missing"
}

alive() { # pid: running and not a zombie
  local st
  st="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  st="${st##*) }"; [[ "${st%% *}" != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# GET http://127.0.0.1:PORT/PATH, the whole response (headers too) on stdout.
http_get() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3 \
    && timeout 5 cat <&3) 2>/dev/null
}

# The pid in DIR/NAME.pid if that process is still ours: its command line
# names NAME and (boxes) our config or (fakesmsc) our fake SMSC port.
our_pid() { # dir name
  local pid cmd
  pid="$(cat "$1/$2.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  case "$2" in
    fakesmsc) [[ "$cmd" == "$FAKESMSC "* ]] || return 1 ;;
    *) [[ "$cmd" == *"/$2 "*"$1/kannel.conf"* ]] || return 1 ;;
  esac
  echo "$pid"
}

cmd_stop() { # dir
  local dir="$1" name pid i
  for name in smsbox fakesmsc bearerbox; do
    if pid="$(our_pid "$dir" "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      # bearerbox shuts down gracefully, which takes a few seconds.
      for ((i = 0; i < 150; i++)); do alive "$pid" || break; sleep 0.1; done
      if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
      say "stopped $name (pid $pid)"
    fi
    rm -f "$dir/$name.pid"
  done
}

cmd_status() { # dir; exit 1 unless all three run
  local dir="$1" name pid rc=0
  for name in bearerbox smsbox fakesmsc; do
    if pid="$(our_pid "$dir" "$name")"; then echo "$name: running, pid $pid"
    else echo "$name: stopped"; rc=1; fi
  done
  ((rc == 0)) && http_get "$ADMIN_PORT" "/status.txt?password=$PASSWORD" | sed -n '/^SMS:/,$p'
  return "$rc"
}

START_DIR=""
fail_start() { # message: show the logs (less PANIC backtraces), stop what started, exit 1
  local name f
  for name in bearerbox fakesmsc smsbox; do
    f="$START_DIR/$name.log"
    [[ -s "$f" ]] || f="$START_DIR/$name.out" # config errors come before the log file opens
    [[ -s "$f" ]] || continue
    echo "---- tail of $f" >&2
    grep -vE 'PANIC: (/|\[)' "$f" | tail -n 12 >&2 || true
  done
  cmd_stop "$START_DIR"
  die "$1"
}

# Wait until CHECK (a command) succeeds; fail if NAME's process died or time ran out.
wait_for() { # name pid what check...
  local name="$1" pid="$2" what="$3"; shift 3
  until "$@"; do
    alive "$pid" || fail_start "$name exited while waiting for $what"
    ((SECONDS < DEADLINE)) || fail_start "timed out (KANNEL_START_TIMEOUT=${KANNEL_START_TIMEOUT:-30}s) waiting for $what"
    sleep 0.1
  done
}

bearerbox_listening() { port_open "$ADMIN_PORT" && port_open "$FAKE_PORT"; }
smsc_online() { http_get "$ADMIN_PORT" "/status.txt?password=$PASSWORD" | grep -q "FAKE:$FAKE_PORT (online"; }
smsbox_connected() {
  port_open "$SENDSMS_PORT" \
    && http_get "$ADMIN_PORT" "/status.txt?password=$PASSWORD" | grep -q "smsbox:.*(on-line"
}

cmd_start() { # dir
  local dir="$1" p pid
  cmd_install
  [[ -r "$TEMPLATE" ]] || die "missing $TEMPLATE"
  mkdir -p "$dir"
  cmd_stop "$dir"
  for p in "$ADMIN_PORT" "$SMSBOX_PORT" "$SENDSMS_PORT" "$FAKE_PORT"; do
    if port_open "$p"; then
      die "127.0.0.1:$p is already in use (another Kannel? Debian's kannel service: systemctl stop kannel; or set KANNEL_*_PORT)"
    fi
  done
  START_DIR="$dir"
  DEADLINE=$((SECONDS + ${KANNEL_START_TIMEOUT:-30}))
  rm -f "$dir"/{bearerbox,smsbox,fakesmsc}.{log,out} "$dir"/{access,smsbox-access}.log
  local tls=(-e "/@CORE_TLS@/d" -e "/@SENDSMS_TLS@/d") scheme=http
  if [[ -n "${KANNEL_TLS_DIR:-}" ]]; then
    local t
    t="$(realpath -m -- "$KANNEL_TLS_DIR")"
    [[ -r "$t/server.pem" && -r "$t/server.key" ]] || die "KANNEL_TLS_DIR=$t has no server.pem and server.key (scripts/tls_ca.sh makes them)"
    tls=(-e "s#@CORE_TLS@#ssl-server-cert-file = \"$t/server.pem\"\nssl-server-key-file = \"$t/server.key\"#"
      -e "s#@SENDSMS_TLS@#sendsms-port-ssl = true#")
    scheme=https
  fi
  sed -e "s#@DIR@#$dir#g" -e "s#@ADMIN_PORT@#$ADMIN_PORT#g" -e "s#@SMSBOX_PORT@#$SMSBOX_PORT#g" \
    -e "s#@SENDSMS_PORT@#$SENDSMS_PORT#g" -e "s#@FAKE_PORT@#$FAKE_PORT#g" \
    -e "s#@PASSWORD@#$PASSWORD#g" "${tls[@]}" "$TEMPLATE" >"$dir/kannel.conf"
  ! grep -q '@[A-Z_]*@' "$dir/kannel.conf" || die "unfilled placeholder in $dir/kannel.conf"

  # 1. bearerbox: admin port and the fake SMSC's listening port.
  "$BEARERBOX" -v 1 "$dir/kannel.conf" </dev/null >"$dir/bearerbox.out" 2>&1 &
  pid=$!; echo "$pid" >"$dir/bearerbox.pid"
  wait_for bearerbox "$pid" "bearerbox on ports $ADMIN_PORT and $FAKE_PORT" \
    bearerbox_listening

  # 2. fakesmsc connects to it; -m 0: no MO messages (the "0 0 text nop"
  # template is required but never sent), -i: MO interval (unused).
  "$FAKESMSC" -H 127.0.0.1 -r "$FAKE_PORT" -i 1 -m 0 "0 0 text nop" </dev/null >"$dir/fakesmsc.log" 2>&1 &
  pid=$!; echo "$pid" >"$dir/fakesmsc.pid"
  wait_for fakesmsc "$pid" "the fake SMSC to be online in bearerbox's status" smsc_online

  # 3. smsbox: sendsms HTTP port, connected to bearerbox.
  "$SMSBOX" -v 1 "$dir/kannel.conf" </dev/null >"$dir/smsbox.out" 2>&1 &
  pid=$!; echo "$pid" >"$dir/smsbox.pid"
  wait_for smsbox "$pid" "smsbox on port $SENDSMS_PORT, connected to bearerbox" smsbox_connected

  say "bearerbox, fakesmsc and smsbox running (conf and logs in $dir)"
  echo "$scheme://127.0.0.1:$SENDSMS_PORT/cgi-bin/sendsms"
}

cmd_stop_box() { # dir name
  local dir="$1" name="$2" pid i
  case "$name" in smsbox | bearerbox) ;; *) die "stop-box: NAME is smsbox or bearerbox, not $name" ;; esac
  if pid="$(our_pid "$dir" "$name")"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
    say "stopped $name (pid $pid)"
  fi
  rm -f "$dir/$name.pid"
}

cmd_start_box() { # dir name
  local dir="$1" name="$2" pid
  START_DIR="$dir"
  DEADLINE=$((SECONDS + ${KANNEL_START_TIMEOUT:-30}))
  case "$name" in
    bearerbox)
      our_pid "$dir" bearerbox >/dev/null && die "bearerbox is running"
      "$BEARERBOX" -v 1 "$dir/kannel.conf" </dev/null >>"$dir/bearerbox.out" 2>&1 &
      pid=$!; echo "$pid" >"$dir/bearerbox.pid"
      wait_for bearerbox "$pid" "bearerbox on ports $ADMIN_PORT and $FAKE_PORT" bearerbox_listening
      # fakesmsc reconnects by itself; smsbox exits when bearerbox goes.
      wait_for bearerbox "$pid" "the fake SMSC to be online again" smsc_online
      our_pid "$dir" smsbox >/dev/null || cmd_start_box "$dir" smsbox
      ;;
    smsbox)
      our_pid "$dir" smsbox >/dev/null && die "smsbox is running"
      "$SMSBOX" -v 1 "$dir/kannel.conf" </dev/null >>"$dir/smsbox.out" 2>&1 &
      pid=$!; echo "$pid" >"$dir/smsbox.pid"
      wait_for smsbox "$pid" "smsbox on port $SENDSMS_PORT, connected to bearerbox" smsbox_connected
      ;;
    *) die "start-box: NAME is smsbox or bearerbox, not $name" ;;
  esac
  say "$name running again"
}

dir_arg() {
  [[ -n "${1:-}" ]] || die "usage: $0 start DIR | stop DIR | status DIR"
  realpath -m -- "$1"
}

case "${1:-}" in
  start) cmd_start "$(dir_arg "${2:-}")" ;;
  stop) cmd_stop "$(dir_arg "${2:-}")" ;;
  status) cmd_status "$(dir_arg "${2:-}")" ;;
  stop-box) cmd_stop_box "$(dir_arg "${2:-}")" "${3:-}" ;;
  start-box) cmd_start_box "$(dir_arg "${2:-}")" "${3:-}" ;;
  *) die "usage: $0 start DIR | stop DIR | status DIR | stop-box DIR NAME | start-box DIR NAME" ;;
esac
