#!/usr/bin/env bash
# Owns: timing a standby correlator's takeover with real processes: two
# `outaged --role correlator` on a broker (normally Tansu from
# scripts/tansu.sh), the leader stopped by SIGTERM (it leaves the election
# group) or SIGKILL (the group waits for its session timeout). Prints one
# JSON line per stop: seconds from the signal to the standby's
# "this process correlates" log line.
# Usage: scripts/takeover_bench.sh BOOTSTRAP [WORKDIR]   (OUTAGED: the binary,
#   default target/debug/outaged; the config is deploy/outage.example.toml
#   with one partition per topic, run from the repo for its data/demo files)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BOOT="${1:?bootstrap}"; W="${2:-out/takeover-bench}"
BIN="${OUTAGED:-${CARGO_TARGET_DIR:-target}/debug/outaged}"
mkdir -p "$W"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
config() { # name port group
  sed -e "s|^# bootstrap = .*|bootstrap = \"$BOOT\"|" -e 's|^partitions = 8|partitions = 1|' \
      -e "s|^group_id = \"outaged\"|group_id = \"$3\"|" -e "s|^outbox_dir = \"out\"|outbox_dir = \"$W/$1\"|" \
      -e "s|^unsubscribes = \"out/unsubscribes.jsonl\"|unsubscribes = \"$W/$1/unsubscribes.jsonl\"|" \
      -e "s|^listen = \"127.0.0.1:8080\"|listen = \"127.0.0.1:$2\"|" deploy/outage.example.toml >"$W/$1.toml"
}
elected() { grep -q "this process correlates" "$W/$1.log"; }
wait_for() { # what timeout-seconds cmd...
  local what="$1" t="$2"; shift 2
  local end=$((SECONDS + t))
  until "$@"; do ((SECONDS < end)) || { echo "takeover_bench: timed out: $what" >&2; return 1; }; sleep 0.1; done
}
# librdkafka's range assignor gives the one partition to the member whose
# id sorts first, so B's join moves the leadership about half the time (A
# is deposed and exits): such a round is not a takeover, and is run again.
round() { # sig
  local sig="$1" g="tk-$1-$RANDOM" a b t0 t1
  config "a-$sig" 28180 "$g"; config "b-$sig" 28181 "$g"
  RUST_LOG=info "$BIN" --role correlator --config "$W/a-$sig.toml" >"$W/a-$sig.log" 2>&1 & a=$!; pids+=("$a")
  wait_for "A elected" 60 elected "a-$sig" || exit 1
  RUST_LOG=info "$BIN" --role correlator --config "$W/b-$sig.toml" >"$W/b-$sig.log" 2>&1 & b=$!; pids+=("$b")
  sleep 15 # B joined and the group settled (B a standby)
  if elected "b-$sig"; then
    echo "takeover_bench: B was elected when it joined (A deposed): again" >&2
    kill -KILL "$a" "$b" 2>/dev/null || true; wait "$a" "$b" 2>/dev/null || true
    return 1
  fi
  t0=$(date +%s.%N); kill -"$sig" "$a"
  wait_for "B elected" 90 elected "b-$sig" || exit 1
  t1=$(date +%s.%N)
  echo "{\"stop\":\"SIG$sig\",\"takeover_s\":$(echo "$t1 - $t0" | bc -l | xargs printf '%.1f')}"
  kill -TERM "$b"; wait "$b" 2>/dev/null || true; wait "$a" 2>/dev/null || true
}
for sig in TERM KILL; do
  for try in 1 2 3 4; do
    round "$sig" && break
    ((try < 4)) || { echo "takeover_bench: B took the leadership on joining 4 times" >&2; exit 1; }
  done
done
