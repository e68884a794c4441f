#!/usr/bin/env bash
# Start or stop a real Kannel (bearerbox + smsbox) with fakesmsc as its
# SMSC, all on loopback, for `make e2e`.
#
#   scripts/kannel.sh start DIR    # installs kannel + kannel-extras if missing
#   scripts/kannel.sh stop DIR
#
# sendsms: http://127.0.0.1:$KANNEL_SENDSMS_PORT/cgi-bin/sendsms
#          username=outage password=$KANNEL_PASSWORD
# Every message Kannel hands to the fake SMSC is printed by fakesmsc to
# DIR/fakesmsc.log, one line per SMS part:
#   ... Got message N: <from> <to> text <url-encoded text>     (GSM-7)
#   ... Got message N: <from> <to> ucs2 <url-encoded UCS-2>    (coding=2)
#   ... udh-text / udh-data <url-encoded UDH> <text>           (a concatenated part)
set -euo pipefail
cmd=${1:?start|stop}
dir=$(realpath -m "${2:?directory}")
: "${KANNEL_ADMIN_PORT:=13000}" "${KANNEL_SMSBOX_PORT:=13001}" "${KANNEL_SENDSMS_PORT:=13013}"
: "${KANNEL_FAKE_PORT:=10000}" "${KANNEL_PASSWORD:=outage-e2e}"
here=$(cd "$(dirname "$0")/.." && pwd)
fakesmsc=/usr/lib/kannel/test/fakesmsc

stop() {
  for p in fakesmsc smsbox bearerbox; do
    if [ -f "$dir/$p.pid" ]; then kill "$(cat "$dir/$p.pid")" 2>/dev/null || true; rm -f "$dir/$p.pid"; fi
  done
}

wait_port() { # port what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "kannel.sh: $2 did not listen on port $1; log tail:" >&2
  tail -n 30 "$dir"/*.log >&2 || true
  stop
  exit 1
}

case "$cmd" in
  start)
    if [ ! -x /usr/sbin/bearerbox ] || [ ! -x "$fakesmsc" ]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y --no-install-recommends kannel kannel-extras >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends kannel kannel-extras >/dev/null; }
    fi
    mkdir -p "$dir"
    stop
    sed -e "s#@DIR@#$dir#g" -e "s#@ADMIN_PORT@#$KANNEL_ADMIN_PORT#" -e "s#@SMSBOX_PORT@#$KANNEL_SMSBOX_PORT#g" \
        -e "s#@SENDSMS_PORT@#$KANNEL_SENDSMS_PORT#" -e "s#@FAKE_PORT@#$KANNEL_FAKE_PORT#" \
        -e "s#@PASSWORD@#$KANNEL_PASSWORD#g" "$here/deploy/kannel/kannel.conf" > "$dir/kannel.conf"
    /usr/sbin/bearerbox -v 1 "$dir/kannel.conf" > "$dir/bearerbox.out" 2>&1 & echo $! > "$dir/bearerbox.pid"
    wait_port "$KANNEL_FAKE_PORT" bearerbox
    # -m 0: send no MO messages, just print what arrives.
    "$fakesmsc" -H 127.0.0.1 -r "$KANNEL_FAKE_PORT" -i 1 -m 0 "0 0 text nop" > "$dir/fakesmsc.log" 2>&1 &
    echo $! > "$dir/fakesmsc.pid"
    /usr/sbin/smsbox -v 1 "$dir/kannel.conf" > "$dir/smsbox.out" 2>&1 & echo $! > "$dir/smsbox.pid"
    wait_port "$KANNEL_SENDSMS_PORT" smsbox
    echo "kannel: sendsms at http://127.0.0.1:$KANNEL_SENDSMS_PORT/cgi-bin/sendsms, fake SMSC log $dir/fakesmsc.log"
    ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
