#!/usr/bin/env bash
# Instructions per operation of the sans-IO hot paths (the PDU codec,
# CRC32C, the target's connection core), counted by
# `valgrind --tool=callgrind`: deterministic figures, the same on a busy
# machine as on a quiet one, for seeing a regression in a change without
# timing anything. proto/examples/hotpath.rs runs each workload N times;
# the figure is (Ir(N) - Ir(0)) / N, start-up excluded. For the whole
# target process under a real workload see scripts/bench-target-callgrind.sh.
#
# Usage: scripts/bench-callgrind.sh [WORKLOAD...]   (default: all)
# Env:   N=20000 SKIP_BUILD=1 CARGO_TARGET_DIR=... (default build/)
# Prints a Markdown table: workload | instructions per operation.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
BIN=${CARGO_TARGET_DIR:-build}/release/examples/hotpath
WORKLOADS=("$@")
[ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=(read_4k read_128k read_128k_mrdsl_8k write_4k_immediate
    write_128k_immediate encode_command decode_command encode_data_in_8k decode_data_in_8k
    decode_data_in_8k_crc crc32c_8k)
command -v valgrind >/dev/null || { echo "missing valgrind" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p proto --example hotpath
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# ir WORKLOAD COUNT: instructions of one run of hotpath.
ir() {
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$BIN" "$1" "$2" 2>"$TMP/vg.err" ||
        { cat "$TMP/vg.err" >&2; exit 1; }
    sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' "$TMP/vg.err"
}

echo "| workload (proto/examples/hotpath.rs) | instructions per operation |"
echo "|---|---|"
for w in "${WORKLOADS[@]}"; do
    base=$(ir "$w" 0)
    full=$(ir "$w" "$N")
    echo "| $w | $(( (full - base) / N )) |"
done
