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
