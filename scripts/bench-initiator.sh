#!/usr/bin/env bash
# Sequential 1 MiB throughput, side by side in one run (DESIGN.md,
# "Performance method"):
#   targets:    tgtd (Debian `tgt`)  vs  our target (`iscsi target serve`)
#   initiators: ours (initiator/examples/seqbench)  vs  libiscsi (iscsi-perf)
# Both targets serve a file LUN of the same size on tmpfs (/dev/shm), both
# on 127.0.0.1. Each measurement runs RUNS times (default 3); the table
# shows medians in MiB/s and the ratios our-target/tgtd and
# our-initiator/libiscsi. iscsi-perf only reads, so the libiscsi column
# has no writes.
#
# Usage: scripts/bench-initiator.sh [OUT.md]
# Env:   RUNS=3 LUN_MIB=1024 TOTAL_MIB=2048 PERF_SECS=4 SKIP_BUILD=1
#        CARGO_TARGET_DIR=... (where the release binaries are; default build/)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

RUNS=${RUNS:-3}
LUN_MIB=${LUN_MIB:-1024}
TOTAL_MIB=${TOTAL_MIB:-2048}
PERF_SECS=${PERF_SECS:-4}
OUT=${1:-}
BUILD_DIR=${CARGO_TARGET_DIR:-build}
BIN=$BUILD_DIR/release/iscsi
SEQ=$BUILD_DIR/release/examples/seqbench
IQN=iqn.2026-01.rs.iscsi-rs:bench
INIT=iqn.2026-01.rs.iscsi-rs:bench-initiator

for t in tgtd tgtadm iscsi-perf; do
    command -v $t >/dev/null || { echo "missing $t (Debian packages tgt, libiscsi-bin)" >&2; exit 1; }
done
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p cli -p initiator --bins --examples
fi

TMP=$(mktemp -d)
SHM_T=/dev/shm/bench-tgtd-$$.img
SHM_O=/dev/shm/bench-ours-$$.img
TGTD_PID= OURS_PID= CTL=
cleanup() {
    set +e
    [ -n "$OURS_PID" ] && kill "$OURS_PID" 2>/dev/null
    stop_tgtd
    wait 2>/dev/null
    rm -f "$SHM_T" "$SHM_O"
    rm -rf "$TMP"
}
trap cleanup EXIT

# Same backing store kind for both: a preallocated file on tmpfs.
dd if=/dev/zero of="$SHM_T" bs=1M count="$LUN_MIB" status=none
dd if=/dev/zero of="$SHM_O" bs=1M count="$LUN_MIB" status=none

# --- tgtd: private control port, LUN 1 (LUN 0 is tgtd's controller) ---
start_tgtd "$IQN" "$SHM_T" "$TMP/tgtd.log"
TGTD_PORTAL=127.0.0.1:$TPORT

# --- our target: file LUN 0 ---
"$BIN" target serve --portal 127.0.0.1:0 --target "$IQN" --lun "file:$SHM_O" --log warn \
    --admin-socket "$TMP/admin.sock" >"$TMP/ours.out" 2>"$TMP/ours.err" &
OURS_PID=$!
for _ in $(seq 50); do grep -q "listening on" "$TMP/ours.out" 2>/dev/null && break; sleep 0.1; done
OURS_PORTAL=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$TMP/ours.out" | head -1)
[ -n "$OURS_PORTAL" ] || { echo "our target did not start:" >&2; cat "$TMP/ours.err" >&2; exit 1; }


# seqbench PORTAL LUN QD -> "write read" MiB/s (one run)
seq_once() {
    "$SEQ" "$1" "$IQN" "$2" "$TOTAL_MIB" 1024 "$3" 1 >"$TMP/seq.out"
    local w r
    w=$(sed -n 's/^write: .* = \([0-9]*\) MiB\/s.*/\1/p' "$TMP/seq.out")
    r=$(sed -n 's/^read: .* = \([0-9]*\) MiB\/s.*/\1/p' "$TMP/seq.out")
    echo "$w $r"
}

# iscsi-perf PORTAL LUN QD -> read MiB/s (1 MiB = 2048 blocks of 512 bytes)
perf_once() {
    iscsi-perf -i "$INIT" -m "$3" -b 2048 -t "$PERF_SECS" "iscsi://$1/$IQN/$2" 2>&1 |
        tr '\r' '\n' | sed -n 's/^iops average [0-9]* (\([0-9]*\) MB\/s).*/\1/p' | tail -1
}

declare -A R
for target in tgtd ours; do
    if [ $target = tgtd ]; then portal=$TGTD_PORTAL lun=1; else portal=$OURS_PORTAL lun=0; fi
    for qd in 1 8; do
        ws= rs= ps=
        for _ in $(seq "$RUNS"); do
            read -r w r < <(seq_once "$portal" "$lun" "$qd")
            ws+="$w"$'\n' rs+="$r"$'\n'
            ps+="$(perf_once "$portal" "$lun" "$qd")"$'\n'
        done
        R[$target,ours,write,$qd]=$(printf %s "$ws" | median)
        R[$target,ours,read,$qd]=$(printf %s "$rs" | median)
        R[$target,libiscsi,read,$qd]=$(printf %s "$ps" | median)
        echo "$target qd$qd: ours write [$(echo $ws)] read [$(echo $rs)], libiscsi read [$(echo $ps)]" >&2
    done
done


{
    echo "| initiator | op | QD | tgtd MiB/s | our target MiB/s | our target / tgtd |"
    echo "|---|---|---|---|---|---|"
    for ini in ours libiscsi; do
        for op in write read; do
            [ $ini = libiscsi ] && [ $op = write ] && continue
            for qd in 1 8; do
                a=${R[tgtd,$ini,$op,$qd]} b=${R[ours,$ini,$op,$qd]}
                name=$([ $ini = ours ] && echo "ours (seqbench)" || echo "libiscsi (iscsi-perf)")
                echo "| $name | $op | $qd | $a | $b | $(ratio "$b" "$a") |"
            done
        done
    done
    echo
    echo "| target | QD | our initiator read MiB/s | libiscsi read MiB/s | ours / libiscsi |"
    echo "|---|---|---|---|---|"
    for target in tgtd ours; do
        for qd in 1 8; do
            a=${R[$target,ours,read,$qd]} b=${R[$target,libiscsi,read,$qd]}
            name=$([ $target = ours ] && echo "our target" || echo "tgtd")
            echo "| $name | $qd | $a | $b | $(ratio "$a" "$b") |"
        done
    done
} >"$TMP/table.md"
cat "$TMP/table.md"
if [ -n "$OUT" ]; then cp "$TMP/table.md" "$OUT"; fi
