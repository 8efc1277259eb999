#!/usr/bin/env bash
# Target CPU cost per I/O, two builds side by side in one run (DESIGN.md,
# "Performance method"): for comparing a change to the target's data path
# on a machine shared with other work, where throughput is noisy but the
# CPU time the target process spends per I/O is not.
#
# Each build serves a memory LUN; one initiator (BIN_A's `iscsi login
# --nbd`, the same for both targets) bridges it to NBD and fio's nbd
# engine drives it. For each workload and
# run, the target's utime+stime (/proc/PID/stat) over the fio run is
# divided by fio's I/O count. Runs alternate between the builds; the
# table shows medians (µs of target CPU per I/O) and the ratio B/A.
#
# Usage: scripts/bench-target-cpu.sh BIN_A BIN_B [OUT.md]
#        (BIN_*: `iscsi` binaries, e.g. release builds before and after)
# Env:   RUNS=3 SECS=8 LUN_MIB=256
# Needs: fio (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

[ $# -ge 2 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
BIN_A=$1 BIN_B=$2 OUT=${3:-}
RUNS=${RUNS:-3}
SECS=${SECS:-8}
LUN_MIB=${LUN_MIB:-256}
IQN=iqn.2026-01.rs.iscsi-rs:bench-cpu
for t in fio python3; do
    command -v $t >/dev/null || { echo "missing $t (scripts/install-deps.sh)" >&2; exit 1; }
done

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    set +e
    # Bridges before targets.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

# start NAME BIN: our target with a memory LUN, and an NBD bridge to it.
# Sets PID_<NAME> and URI_<NAME>.
start() {
    local name=$1 bin=$2 port
    port=$(free_port)
    "$bin" target serve --portal "127.0.0.1:$port" --target "$IQN" --lun "mem:${LUN_MIB}M" \
        --log warn --nop-interval 0 --admin-socket "$TMP/admin-$name.sock" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    PIDS+=($!)
    printf -v "PID_$name" %s "$!"
    wait_port "$port" || { echo "target $name did not start:" >&2; cat "$TMP/$name.err" >&2; exit 1; }
    start_ours_bridge "$BIN_A" "$port" "$IQN" "$TMP/login-$name"
    printf -v "URI_$name" %s "nbd://127.0.0.1:$NBD_PORT/lun0"
}

# once NAME RW BS QD -> "IOPS MiB/s µs-of-target-CPU-per-I/O"
once() {
    local pid_var=PID_$1 uri_var=URI_$1
    fio_once "${!uri_var}" "$2" "$3" "$4" "${!pid_var}"
}

start A "$BIN_A"
start B "$BIN_B"
# Fill both LUNs so reads hit written data.
for n in A B; do
    uri_var=URI_$n
    fio --name=fill --ioengine=nbd --uri="${!uri_var}" --rw=write --bs=1m --iodepth=8 \
        --size="${LUN_MIB}M" >/dev/null 2>"$TMP/fill.err" || { cat "$TMP/fill.err" >&2; exit 1; }
done

WORKLOADS=("randread 4k 32" "randwrite 4k 32" "read 128k 8" "write 128k 8")
declare -A R
for w in "${WORKLOADS[@]}"; do
    read -r rw bs qd <<<"$w"
    declare -A vals=()
    for _ in $(seq "$RUNS"); do
        for n in A B; do
            read -r iops _ us < <(once "$n" "$rw" "$bs" "$qd")
            vals[$n,iops]+="$iops"$'\n' vals[$n,us]+="$us"$'\n'
        done
    done
    for n in A B; do
        R[$rw,$n,iops]=$(printf %s "${vals[$n,iops]}" | median)
        R[$rw,$n,us]=$(printf %s "${vals[$n,us]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        echo "$rw $bs QD$qd $n: IOPS [$(echo ${vals[$n,iops]})] µs CPU/I/O [$(echo ${vals[$n,us]})]" >&2
    done
    unset vals
done

{
    echo "Target CPU per I/O (µs, median of $RUNS runs of ${SECS}s; fio nbd → our NBD bridge → target, mem LUN)"
    echo "A: $BIN_A"
    echo "B: $BIN_B"
    echo
    echo "| workload | A µs/I/O | B µs/I/O | B / A | A IOPS | B IOPS |"
    echo "|---|---|---|---|---|---|"
    for w in "${WORKLOADS[@]}"; do
        read -r rw bs qd <<<"$w"
        echo "| $rw $bs QD$qd | ${R[$rw,A,us]} | ${R[$rw,B,us]} | $(ratio "${R[$rw,B,us]}" "${R[$rw,A,us]}") | ${R[$rw,A,iops]} | ${R[$rw,B,iops]} |"
    done
} | tee ${OUT:+"$OUT"}
