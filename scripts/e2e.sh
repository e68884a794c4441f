#!/usr/bin/env bash
# Owns: the end-to-end pass: start Tansu on loopback, run the Kafka
# integration tests (tests/pipeline.rs) against it, stop it again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT="${TANSU_PORT:-19092}"
bootstrap="$(bash scripts/tansu.sh start "$PORT" | tail -n1)"
trap 'bash scripts/tansu.sh stop "$PORT" || true' EXIT
echo "e2e: Tansu at $bootstrap"
OUTAGE_TEST_BOOTSTRAP="$bootstrap" cargo test --test pipeline -- --test-threads=1
