#!/usr/bin/env bash
# Owns: installing the real browser the status-page test drives, Debian's
# chromium (headless), when /usr/bin/chromium is missing. Like
# scripts/kannel.sh: apt-get (through sudo when not root), `apt-get update`
# only when the package lists do not know chromium yet.
#
# Usage: scripts/chromium.sh [install]
#   Installs chromium if needed and prints its path and version as the last
#   line of stdout. The test (tests/status_page.rs) runs
#   `chromium --headless --no-sandbox --disable-gpu --screenshot=… URL` and
#   `--dump-dom URL`; CHROMIUM overrides the binary it uses.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

die() { echo "chromium.sh: $*" >&2; exit 1; }
say() { echo "chromium.sh: $*" >&2; }

cmd_install() {
  [[ -x "$CHROMIUM" ]] && return 0
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show chromium >/dev/null 2>&1; then
    say "apt-get update"
    $sudo apt-get update -qq >&2
  fi
  say "installing chromium"
  # Recommends (fonts among them) left out: the page uses generic fonts and
  # the test looks at colours, not glyphs.
  $sudo apt-get install -y -qq --no-install-recommends chromium >&2
  [[ -x "$CHROMIUM" ]] || die "chromium installed, but $CHROMIUM is missing"
}

case "${1:-install}" in
  install)
    cmd_install
    echo "$CHROMIUM $("$CHROMIUM" --version 2>/dev/null || echo '(version unknown)')"
    ;;
  *) die "usage: $0 [install]" ;;
esac
