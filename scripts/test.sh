#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the test dependencies,
# then runs every unit and integration test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo test --workspace "$@"
