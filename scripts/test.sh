#!/usr/bin/env bash
# The whole test suite: unit, property, integration against real peers
# (tgtd, libiscsi's tools and conformance suite). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --workspace --all-targets
# The ublk export (cargo feature, off by default; the kernel here has no
# ublk driver, so it is only built).
cargo check -p initiator --features ublk
cargo check -p cli --features ublk
cargo nextest run --workspace --no-fail-fast "$@"
