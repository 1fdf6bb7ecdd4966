#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, skipping
# whatever is already there. Safe to run repeatedly.
set -euo pipefail

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "${APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

# The integration tests start private redis-server processes (never the
# shared one on 6379).
command -v redis-server >/dev/null || apt_install redis-server

# The cross-check suite (tests/it/crosscheck.rs) signs requests with the
# providers' official libraries: the Python ones in a private venv, GitHub's
# in node. Both are reinstalled only when their pinned versions change.
root="$(cd "$(dirname "$0")/.." && pwd)"
crosscheck="$root/tests/crosscheck"
venv="$root/target/crosscheck-venv"

command -v python3 >/dev/null || apt_install python3
if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian ships ensurepip (needed by venv) separately.
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
fi
want="$(sha256sum "$crosscheck/requirements.txt" | cut -d' ' -f1)"
stamp="$venv/.requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$crosscheck/requirements.txt"
  echo "$want" >"$stamp"
fi

command -v npm >/dev/null || apt_install nodejs npm
want="$(sha256sum "$crosscheck/package-lock.json" | cut -d' ' -f1)"
stamp="$crosscheck/node_modules/.package-lock.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  (cd "$crosscheck" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi

# The dashboard test (tests/it/dashboard.rs) drives the page in Debian's
# Chromium through playwright-core, which never downloads a browser of its own.
[ -x /usr/bin/chromium ] || apt_install chromium
browser="$root/tests/browser"
want="$(sha256sum "$browser/package-lock.json" | cut -d' ' -f1)"
stamp="$browser/node_modules/.package-lock.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
