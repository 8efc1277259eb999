#!/usr/bin/env bash
# RBD LUNs side by side in one run, on one cluster (DESIGN.md "Performance
# method"; issue 13):
#   our target (`iscsi target serve --lun rbd:...`)  vs  tgtd with bs_rbd
#   (Debian `tgt-rbd`), both read by libiscsi's iscsi-perf on 127.0.0.1:
#     4 KiB random reads at QD 32, 128 KiB sequential reads at QD 32;
#   plus `rbd bench` (librbd directly, same I/O size and depth) as the
#   ceiling for both.
# Each target serves its own image of the same size and content (filled by
# `rbd bench` writes, so every read reaches the OSD: librbd answers reads
# of objects that do not exist without the cluster). Each figure is the
# median of RUNS runs; the table gives IOPS and the ratios ours/tgtd and
# ours/rbd-bench.
#
# Usage: scripts/bench-rbd.sh [OUT.md]
# Env:   RUNS=3 PERF_SECS=5 IMAGE_MIB=256 SKIP_BUILD=1
#        CEPH_CONF=... (a running cluster; default: start scripts/ceph-mini.sh's,
#        memstore, and stop it at the end)
#        CARGO_TARGET_DIR=... (where the release binary is; default build/)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh   # free_port, median, ratio (shared with bench-nbd.sh, bench-initiator.sh)
ROOT=$(pwd)

RUNS=${RUNS:-3}
PERF_SECS=${PERF_SECS:-5}
IMAGE_MIB=${IMAGE_MIB:-256}
OUT=${1:-}
BUILD_DIR=${CARGO_TARGET_DIR:-build}
BIN=$BUILD_DIR/release/iscsi
IQN=iqn.2026-01.rs.iscsi-rs:bench-rbd
INIT=iqn.2026-01.rs.iscsi-rs:bench-rbd-initiator

for t in tgtd tgtadm iscsi-perf rbd; do
    command -v $t >/dev/null || { echo "missing $t (Debian packages tgt, tgt-rbd, libiscsi-bin, ceph-common)" >&2; exit 1; }
done
[ -e /usr/lib/tgt/backing-store/bs_rbd.so ] || { echo "tgtd has no rbd backing store (apt-get install tgt-rbd)" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p cli --features rbd
fi

TMP=$(mktemp -d)
TGTD_PID= OURS_PID= CTL= OWN_CLUSTER= IMAGES=()
cleanup() {
    set +e
    [ -n "$OURS_PID" ] && kill "$OURS_PID" 2>/dev/null && wait "$OURS_PID" 2>/dev/null
    stop_tgtd
    wait 2>/dev/null
    for i in "${IMAGES[@]}"; do rbd -c "$CEPH_CONF" rm --no-progress "$i" >/dev/null 2>&1; done
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

# Two images of the same size and content, every object written.
for who in tgtd ours; do
    img=rbd/bench-$who-$$
    rbd -c "$CEPH_CONF" create --size "${IMAGE_MIB}M" "$img"
    IMAGES+=("$img")
    rbd -c "$CEPH_CONF" bench --io-type write --io-pattern seq --io-size 4M \
        --io-threads 4 --io-total "${IMAGE_MIB}M" "$img" >/dev/null
done
TGTD_IMG=${IMAGES[0]} OURS_IMG=${IMAGES[1]}


# --- tgtd with bs_rbd: LUN 1 (LUN 0 is tgtd's controller) ---
start_tgtd "$IQN" "$TGTD_IMG" "$TMP/tgtd.log" --bstype rbd --bsopts "conf=$CEPH_CONF"
TGTD_PORTAL=127.0.0.1:$TPORT

# --- our target: rbd LUN 0 ---
"$BIN" target serve --portal 127.0.0.1:0 --target "$IQN" --lun "rbd:$OURS_IMG,conf=$CEPH_CONF" \
    --log warn --admin-socket "$TMP/admin.sock" >"$TMP/ours.out" 2>"$TMP/ours.err" &
OURS_PID=$!
for _ in $(seq 300); do grep -q "listening on" "$TMP/ours.out" 2>/dev/null && break; sleep 0.1; done
OURS_PORTAL=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$TMP/ours.out" | head -1)
[ -n "$OURS_PORTAL" ] || { echo "our target did not start:" >&2; cat "$TMP/ours.err" >&2; exit 1; }


# iscsi-perf PORTAL LUN BLOCKS RANDOM -> average IOPS (one run, QD 32)
perf_once() {
    local r=()
    [ "$4" = rand ] && r=(-r)
    iscsi-perf -i "$INIT" -m 32 -b "$3" -t "$PERF_SECS" "${r[@]}" "iscsi://$1/$IQN/$2" 2>&1 |
        tr '\r' '\n' | sed -n 's/^iops average \([0-9]*\) .*/\1/p' | tail -1
}

# rbd bench IMAGE BYTES PATTERN -> ops/sec (one run, 32 threads, reads)
rbdbench_once() {
    local total=$(( $2 * 20000 ))
    [ "$total" -gt $(( IMAGE_MIB << 20 )) ] && [ "$3" = seq ] && total=$(( IMAGE_MIB << 20 ))
    rbd -c "$CEPH_CONF" bench --io-type read --io-size "$2" --io-threads 32 \
        --io-total "$total" --io-pattern "$3" "$1" 2>&1 |
        sed -n 's/.*ops\/sec: *\([0-9.]*\).*/\1/p' | tail -1 | cut -d. -f1
}

declare -A R
for w in "4k rand 8 4096" "128k seq 256 131072"; do
    read -r name pat blocks bytes <<<"$w"
    t= o= b=
    for _ in $(seq "$RUNS"); do
        t+="$(perf_once "$TGTD_PORTAL" 1 "$blocks" "$pat")"$'\n'
        o+="$(perf_once "$OURS_PORTAL" 0 "$blocks" "$pat")"$'\n'
        b+="$(rbdbench_once "$TGTD_IMG" "$bytes" "$pat")"$'\n'
    done
    R[$name,tgtd]=$(printf %s "$t" | median)
    R[$name,ours]=$(printf %s "$o" | median)
    R[$name,rbd]=$(printf %s "$b" | median)
    echo "$name $pat QD32: tgtd [$(echo $t)] ours [$(echo $o)] rbd bench [$(echo $b)]" >&2
done

{
    echo "| workload (iscsi-perf, QD 32) | tgtd bs_rbd IOPS | our target IOPS | rbd bench IOPS | ours / tgtd | ours / rbd bench |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in 4k 128k; do
        desc=$([ $name = 4k ] && echo "4 KiB random read" || echo "128 KiB sequential read")
        echo "| $desc | ${R[$name,tgtd]} | ${R[$name,ours]} | ${R[$name,rbd]} | $(ratio "${R[$name,ours]}" "${R[$name,tgtd]}") | $(ratio "${R[$name,ours]}" "${R[$name,rbd]}") |"
    done
} >"$TMP/table.md"
cat "$TMP/table.md"
if [ -n "$OUT" ]; then cp "$TMP/table.md" "$OUT"; fi
