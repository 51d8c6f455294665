#!/usr/bin/env bash
# Runs every dpfleet test: unit tests, golden wire tests, and the end-to-end tests that
# start the real dpfleet-node in network namespaces with TAP ports. Needs root.
#
#   scripts/test.sh [extra cargo test args]
#
# Uses CARGO_TARGET_DIR (default /var/cache/dpfleet/target) so builds are reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/dpfleet/target}
cargo build --workspace --bins
export DPFLEET_NODE_BIN=$CARGO_TARGET_DIR/debug/dpfleet-node
cargo test --workspace --no-fail-fast "$@"
