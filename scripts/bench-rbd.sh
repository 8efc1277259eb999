#!/usr/bin/env bash
# RBD LUNs side by side in one run, on one cluster (DESIGN.md "Performance
# method"; issue 13):
#   our target (`iscsi target serve --lun rbd:...`)  vs  tgtd with bs_rbd
#   (Debian `tgt-rbd`)  vs  `rbd bench` (librbd directly, same I/O size and
#   depth: the ceiling for both targets).
# Reads: libiscsi's iscsi-perf on 127.0.0.1, 4 KiB random at QD 32 and
# 128 KiB sequential at QD 32. Writes (iscsi-perf only reads): fio's nbd
# engine through our initiator's NBD bridge (`iscsi login --nbd`, the same
# bridge for both targets), 4 KiB random at QD 32, 128 KiB and 1 MiB
# sequential at QD 8; `rbd bench --io-type write` with as many threads.
# Each target serves its own image of the same size and content (filled by
# `rbd bench` writes, so every read reaches the OSD: librbd answers reads
# of objects that do not exist without the cluster); `rbd bench` uses a
# third. Each figure is the median of RUNS runs; besides IOPS the table
# gives each target's CPU time per I/O (utime+stime of the process over the
# run / I/Os): the target's own cost, which a busy machine disturbs far
# less than throughput.
#
# Usage: scripts/bench-rbd.sh [OUT.md]
# Env:   RUNS=3 PERF_SECS=5 IMAGE_MIB=256 SKIP_BUILD=1
#        WORKLOADS="4k-rr 128k-sr 4k-rw 128k-sw 1m-sw" (a subset to run)
#        BIN_BEFORE=path/to/iscsi (another build of our target, e.g. main
#        before a change: served side by side as a fourth column)
#        CEPH_CONF=... (a running cluster; default: start scripts/ceph-mini.sh's,
#        memstore, and stop it at the end)
#        CARGO_TARGET_DIR=... (where the release binary is; default build/)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh   # free_port, wait_port, median, ratio, start_tgtd, start_ours(_bridge), cpu_ticks, fio_once

RUNS=${RUNS:-3}
PERF_SECS=${PERF_SECS:-5}
IMAGE_MIB=${IMAGE_MIB:-256}
WORKLOADS=${WORKLOADS:-4k-rr 128k-sr 4k-rw 128k-sw 1m-sw}
OUT=${1:-}
BUILD_DIR=${CARGO_TARGET_DIR:-build}
BIN=$BUILD_DIR/release/iscsi
IQN=iqn.2026-01.rs.iscsi-rs:bench-rbd
INIT=iqn.2026-01.rs.iscsi-rs:bench-rbd-initiator
HZ=$(getconf CLK_TCK)

for t in tgtd tgtadm iscsi-perf rbd fio python3; do
    command -v $t >/dev/null || { echo "missing $t (Debian packages tgt, tgt-rbd, libiscsi-bin, ceph-common, fio)" >&2; exit 1; }
done
[ -e /usr/lib/tgt/backing-store/bs_rbd.so ] || { echo "tgtd has no rbd backing store (apt-get install tgt-rbd)" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p cli --features rbd
fi

TMP=$(mktemp -d)
TGTD_PID= CTL= OWN_CLUSTER= IMAGES=() PIDS=()
cleanup() {
    set +e
    # Bridges before targets; tgtd's LU goes first so that bs_rbd closes
    # its image (a killed client's watch would block `rbd rm` for 30 s).
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
    sleep 1
    [ -n "$TGTD_PID" ] && timeout 5 tgtadm -C "$CTL" --lld iscsi --mode logicalunit --op delete \
        --tid 1 --lun 1 >/dev/null 2>&1
    stop_tgtd
    wait 2>/dev/null
    for i in "${IMAGES[@]}"; do
        for _ in 1 2 3; do rbd -c "$CEPH_CONF" rm --no-progress "$i" >/dev/null 2>&1 && break; sleep 2; done
    done
    [ -n "$OWN_CLUSTER" ] && CEPH_MINI_DIR=$OWN_CLUSTER scripts/ceph-mini.sh stop >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT

if [ -z "${CEPH_CONF:-}" ]; then
    OWN_CLUSTER=${TMPDIR:-/tmp}/iscsi-rs-bench-ceph
    echo "starting a memstore cluster (scripts/ceph-mini.sh) in $OWN_CLUSTER" >&2
    CEPH_MINI_DIR=$OWN_CLUSTER IMAGE_SIZE= WAIT_HEALTH=0 MON_PORT_V2=3320 MON_PORT_V1=6820 \
        scripts/ceph-mini.sh start >"$TMP/ceph.log" 2>&1 || { cat "$TMP/ceph.log" >&2; exit 1; }
    export CEPH_CONF=$OWN_CLUSTER/ceph.conf
fi

WHO=(tgtd ours)
[ -n "${BIN_BEFORE:-}" ] && WHO+=(before)
# One image per target and one for rbd bench: same size, every object written.
declare -A IMG
for who in "${WHO[@]}" rbd; do
    IMG[$who]=rbd/bench-$who-$$
    rbd -c "$CEPH_CONF" create --size "${IMAGE_MIB}M" "${IMG[$who]}"
    IMAGES+=("${IMG[$who]}")
    rbd -c "$CEPH_CONF" bench --io-type write --io-pattern seq --io-size 4M \
        --io-threads 4 --io-total "${IMAGE_MIB}M" "${IMG[$who]}" >/dev/null
done

# Per target: PID (whose CPU time is counted), PORT and LUN.
declare -A PID PORT LUN URI

# --- tgtd with bs_rbd: LUN 1 (LUN 0 is tgtd's controller) ---
start_tgtd "$IQN" "${IMG[tgtd]}" "$TMP/tgtd.log" --bstype rbd --bsopts "conf=$CEPH_CONF"
PID[tgtd]=$TGTD_PID PORT[tgtd]=$TPORT LUN[tgtd]=1

# --- our target(s): rbd LUN 0 ---
# start_rbd_target WHO BIN: BIN serving the RBD image IMG[WHO] as LUN 0
# (bench-lib's start_ours).
start_rbd_target() {
    start_ours "$2" "$TMP/$1" --portal 127.0.0.1:0 --target "$IQN" \
        --lun "rbd:${IMG[$1]},conf=$CEPH_CONF" --nop-interval 0 --admin-socket "$TMP/admin-$1.sock"
    PIDS+=("$OURS_PID")
    PID[$1]=$OURS_PID PORT[$1]=${OURS_PORTAL##*:} LUN[$1]=0
}
start_rbd_target ours "$BIN"
[ -n "${BIN_BEFORE:-}" ] && start_rbd_target before "$BIN_BEFORE"

# --- NBD bridges (our initiator) for the write workloads ---
for who in "${WHO[@]}"; do
    start_ours_bridge "$BIN" "${PORT[$who]}" "$IQN" "$TMP/login-$who"
    URI[$who]=nbd://127.0.0.1:$NBD_PORT/lun${LUN[$who]}
done

# per_io WHO TICKS0 IOPS SECS -> µs of WHO's CPU per I/O
per_io() {
    local t1
    t1=$(cpu_ticks "${PID[$1]}")
    awk -v t="$((t1 - $2))" -v hz="$HZ" -v iops="$3" -v s="$4" \
        'BEGIN { n = iops * s; if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }'
}

# read_once WHO BLOCKS PATTERN -> "IOPS CPU-µs/IO" (iscsi-perf, QD 32)
read_once() {
    local r=() t0 iops
    [ "$3" = rand ] && r=(-r)
    t0=$(cpu_ticks "${PID[$1]}")
    iops=$(iscsi-perf -i "$INIT" -m 32 -b "$2" -t "$PERF_SECS" "${r[@]}" \
        "iscsi://127.0.0.1:${PORT[$1]}/$IQN/${LUN[$1]}" 2>&1 |
        tr '\r' '\n' | sed -n 's/^iops average \([0-9]*\) .*/\1/p' | tail -1)
    echo "${iops:-0} $(per_io "$1" "$t0" "${iops:-0}" "$PERF_SECS")"
}

# write_once WHO RW BS QD -> "IOPS CPU-µs/IO" (fio nbd → our bridge → WHO;
# bench-lib's fio_once)
write_once() {
    local iops cpu
    read -r iops _ cpu < <(SECS=$PERF_SECS LUN_MIB=$IMAGE_MIB fio_once "${URI[$1]}" "$2" "$3" "$4" "${PID[$1]}")
    echo "$iops $cpu"
}

# rbd_once IO-TYPE BYTES PATTERN THREADS OPS -> ops/sec (wraps around the image)
rbd_once() {
    rbd -c "$CEPH_CONF" bench --io-type "$1" --io-size "$2" --io-threads "$4" \
        --io-total $(($2 * $5)) --io-pattern "$3" "${IMG[rbd]}" 2>&1 |
        sed -n 's/.*ops\/sec: *\([0-9.]*\).*/\1/p' | tail -1 | cut -d. -f1
}

# name: kind pattern blocks(512 B) bytes QD rbd-bench-ops description
declare -A W=(
    [4k-rr]="read rand 8 4096 32 40000 4 KiB random read, QD 32"
    [128k-sr]="read seq 256 131072 32 10000 128 KiB sequential read, QD 32"
    [4k-rw]="write rand 8 4096 32 40000 4 KiB random write, QD 32"
    [128k-sw]="write seq 256 131072 8 10000 128 KiB sequential write, QD 8"
    [1m-sw]="write seq 2048 1048576 8 2000 1 MiB sequential write, QD 8"
)
declare -A R
for name in $WORKLOADS; do
    read -r kind pat blocks bytes qd ops desc <<<"${W[$name]}"
    declare -A v=()
    for _ in $(seq "$RUNS"); do
        for who in "${WHO[@]}"; do
            if [ "$kind" = read ]; then
                read -r iops us < <(read_once "$who" "$blocks" "$pat")
            else
                rw=$([ "$pat" = rand ] && echo randwrite || echo write)
                read -r iops us < <(write_once "$who" "$rw" "$(($bytes / 1024))k" "$qd")
            fi
            v[$who]+="$iops"$'\n' v[$who,us]+="$us"$'\n'
        done
        v[rbd]+="$(rbd_once "$kind" "$bytes" "$pat" "$qd" "$ops")"$'\n'
    done
    for who in "${WHO[@]}"; do
        R[$name,$who]=$(printf %s "${v[$who]}" | median)
        R[$name,$who,us]=$(printf %s "${v[$who,us]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        echo "$desc: $who IOPS [$(echo ${v[$who]})] CPU µs/IO [$(echo ${v[$who,us]})]" >&2
    done
    R[$name,rbd]=$(printf %s "${v[rbd]}" | median)
    echo "$desc: rbd bench IOPS [$(echo ${v[rbd]})]" >&2
    unset v
done

{
    b_h= b_s= b_c=
    [ -n "${BIN_BEFORE:-}" ] && b_h=" ours before IOPS | before µs/IO |" b_s="---:|---:|"
    echo "| workload | tgtd bs_rbd IOPS | our target IOPS | rbd bench IOPS | ours / tgtd | ours / rbd bench | tgtd CPU µs/IO | our CPU µs/IO |$b_h"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|$b_s"
    for name in $WORKLOADS; do
        read -r _ _ _ _ _ _ desc <<<"${W[$name]}"
        [ -n "${BIN_BEFORE:-}" ] && b_c=" ${R[$name,before]} | ${R[$name,before,us]} |"
        echo "| $desc | ${R[$name,tgtd]} | ${R[$name,ours]} | ${R[$name,rbd]} |" \
            "$(ratio "${R[$name,ours]}" "${R[$name,tgtd]}") | $(ratio "${R[$name,ours]}" "${R[$name,rbd]}") |" \
            "${R[$name,tgtd,us]} | ${R[$name,ours,us]} |$b_c"
    done
} >"$TMP/table.md"
cat "$TMP/table.md"
if [ -n "$OUT" ]; then cp "$TMP/table.md" "$OUT"; fi
