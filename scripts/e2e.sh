#!/usr/bin/env bash
# Owns: the end-to-end pass. Starts the real parts on loopback — Tansu (a
# Kafka-protocol broker), Kannel (bearerbox + smsbox + fakesmsc; sendsms
# over HTTPS) and an SMTP server (aiosmtpd; STARTTLS on its second port),
# with their state in out/e2e, then runs
#   - the Kafka integration tests (tests/pipeline.rs) against Tansu;
#   - the gateway test (tests/gateways.rs): the outaged binary through Kannel
#     and SMTP, killed and restarted mid fan-out;
#   - the fault-injection suite (tests/faults.rs): one storm fault-free,
#     then under kill -9 at five points, the broker stopped 30 s (Tansu's
#     storage is durable: scripts/tansu.sh keeps it on an S3 store), the
#     daemon started with the broker down, smsbox and SMTP down 30 s, and
#     poison records, each compared with the fault-free run (a figures
#     table at the end);
#   - the status-page test (tests/status_page.rs): `outaged demo` left
#     running, its public GET /status loaded by a real browser (Debian's
#     chromium, headless, installed by scripts/chromium.sh): a screenshot
#     must show the footprint colour, the DOM every declared incident;
# and stops everything again, whatever happened.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT="${TANSU_PORT:-19092}"
DIR="$(pwd)/out/e2e"
mkdir -p "$DIR"
cleanup() {
  bash scripts/smtp.sh stop "$DIR" || true
  bash scripts/kannel.sh stop "$DIR" || true
  bash scripts/tansu.sh stop "$PORT" || true
}
trap cleanup EXIT
bash scripts/chromium.sh | tail -n1
bootstrap="$(bash scripts/tansu.sh start "$PORT" | tail -n1)"
echo "e2e: Tansu at $bootstrap"
# One throw-away CA for the TLS the gateways speak: Kannel's sendsms is
# HTTPS only, the SMTP sink's second port requires STARTTLS; the daemon
# trusts DIR/tls/ca.pem through sinks.tls.ca_file.
bash scripts/tls_ca.sh "$DIR/tls"
sendsms="$(KANNEL_TLS_DIR="$DIR/tls" bash scripts/kannel.sh start "$DIR" | tail -n1)"
echo "e2e: Kannel sendsms at $sendsms"
bash scripts/smtp.sh start "$DIR" | tail -n1
export OUTAGE_TEST_BOOTSTRAP="$bootstrap" OUTAGE_TEST_GATEWAYS="$DIR" KANNEL_SENDSMS_URL="$sendsms"
# All of them run here. The ledger's two-outage restart used to time out
# on Tansu: its group join takes seconds, and the alarm reorderer let the
# watermark take the wall clock while the consumer still waited for its
# partitions, so the backlog was applied in arrival order (one incident
# per partition, dismissed); it now holds the watermark until assigned
# (transforms::order). The standby correlator's takeover runs here: a
# stopping leader waits for a rebalance in progress before it leaves
# (Tansu 0.6 loses a group whose leader leaves while it forms; BENCHMARKS.md).
cargo test --test pipeline -- --test-threads=1
cargo test --test gateways -- --ignored --nocapture --test-threads=1
KANNEL_TLS_DIR="$DIR/tls" cargo test --test faults -- --ignored --nocapture --test-threads=1
cargo test --test status_page -- --ignored --nocapture
