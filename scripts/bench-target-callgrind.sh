#!/usr/bin/env bash
# Instructions the target executes for a fixed workload, under
# `valgrind --tool=callgrind`: a deterministic figure for comparing two
# builds of the target's data path on a busy machine (see
# docs/bench/target-core.md). fio's nbd engine drives our initiator's NBD
# bridge (INITIATOR_BIN) to the target (TARGET_BIN) serving a memory LUN:
# randread 4k QD32 ×20000, randwrite 4k QD32 ×20000, read 128k QD8 ×2000,
# write 128k QD8 ×2000. Prints the target's PROGRAM TOTALS; the profile
# stays in OUTDIR/cg.out for callgrind_annotate.
#
# Usage: scripts/bench-target-callgrind.sh TARGET_BIN INITIATOR_BIN OUTDIR
# Needs: valgrind, fio.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
[ $# -eq 3 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
BIN=$1 INI=$2 OUT=$3
mkdir -p "$OUT"
IQN=iqn.2026-01.rs.iscsi-rs:callgrind
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
port=$(free_port)
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" "$BIN" target serve \
    --portal "127.0.0.1:$port" --target "$IQN" --lun mem:64M --log warn --nop-interval 0 \
    --admin-socket "$OUT/admin.sock" >"$OUT/target.out" 2>"$OUT/target.err" &
TPID=$!
PIDS+=("$TPID")
for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
start_ours_bridge "$INI" "$port" "$IQN" "$OUT/login"
URI="nbd://127.0.0.1:$NBD_PORT/lun0"
for w in "randread 4k 32 20000" "randwrite 4k 32 20000" "read 128k 8 2000" "write 128k 8 2000"; do
    read -r rw bs qd n <<<"$w"
    fio --name=cg --ioengine=nbd --uri="$URI" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --number_ios="$n" --size=64M --randseed=1 --output-format=terse >/dev/null 2>"$OUT/fio.err" ||
        { echo "fio failed:" >&2; cat "$OUT/fio.err" >&2; exit 1; }
done
# The bridge first, then the target (SIGINT: a clean exit, so that
# callgrind writes its profile).
kill "${PIDS[1]}" 2>/dev/null || true
sleep 1
kill -INT "$TPID"
wait "$TPID" || true
PIDS=()
callgrind_annotate "$OUT/cg.out" 2>/dev/null | grep -m1 "PROGRAM TOTALS"
