#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the test dependencies,
# runs every unit and integration test of the workspace on a single Redis,
# then runs the integration tests that must hold on every Redis mode
# (delivery, dead letters, replay, audit, visibility, flow control, ordered delivery, the gateway chaos
# scenarios) again on a 3-master Redis Cluster (SWITCHYARD_TEST_REDIS).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo test --workspace "$@"
SWITCHYARD_TEST_REDIS=cluster cargo test -p switchyard --test it -- \
  delivery:: dead_letters:: visibility:: flow_control:: ordered:: \
  chaos::sigkill chaos::two_gateways chaos::destination_flapping chaos::senders
