#!/usr/bin/env bash
# NBD export throughput, side by side in one run (DESIGN.md, "Performance
# method"; issue 8): fio's `nbd` engine (libnbd) through
#   ours:     `iscsi login --foreground --nbd ...` (our initiator + NBD server)
#   qemu-nbd: `qemu-nbd iscsi://...` (libiscsi + qemu's NBD server)
# bridging the same LUN, against our target and against tgtd.
# Workloads: 4 KiB random read and write at QD 32, 128 KiB sequential read
# and write at QD 8. Each measurement runs RUNS times (default 3), the two
# bridges alternating; the table shows medians and the ratio ours/qemu-nbd.
# Both targets serve a preallocated file LUN on tmpfs (/dev/shm).
#
# Usage: scripts/bench-nbd.sh [OUT.md]
# Env:   RUNS=3 SECS=10 LUN_MIB=1024 SKIP_BUILD=1
#        CARGO_TARGET_DIR=... (where the release binaries are; default build/)
# Needs: fio, tgt, qemu-utils with qemu-block-extra (the iscsi block driver;
#        installed here when missing, root only).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

RUNS=${RUNS:-3}
SECS=${SECS:-10}
LUN_MIB=${LUN_MIB:-1024}
OUT=${1:-}
BUILD_DIR=${CARGO_TARGET_DIR:-build}
BIN=$BUILD_DIR/release/iscsi
IQN=iqn.2026-01.rs.iscsi-rs:bench-nbd

for t in fio tgtd tgtadm qemu-nbd python3; do
    command -v $t >/dev/null || { echo "missing $t (scripts/install-deps.sh)" >&2; exit 1; }
done

# qemu's iscsi driver lives in qemu-block-extra, which must match qemu-utils
# exactly (a backports qemu needs the backports module).
if ! dpkg -s qemu-block-extra >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || { echo "qemu-block-extra missing; install it as root" >&2; exit 1; }
    v=$(dpkg-query -W -f='${Version}' qemu-utils)
    if [[ $v == *bpo12* ]] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            >/etc/apt/sources.list.d/bookworm-backports.sources
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "qemu-block-extra=$v" >/dev/null
fi

if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p cli
fi

TMP=$(mktemp -d)
SHM_T=/dev/shm/bench-nbd-tgtd-$$.img
SHM_O=/dev/shm/bench-nbd-ours-$$.img
PIDS=() TGTD_PID= CTL= TPORT=
cleanup() {
    set +e
    # Bridges before targets (qemu-nbd hangs on exit when its target is
    # gone), then whatever is left, by force.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    stop_tgtd
    wait 2>/dev/null
    rm -f "$SHM_T" "$SHM_O"
    rm -rf "$TMP"
}
trap cleanup EXIT

dd if=/dev/zero of="$SHM_T" bs=1M count="$LUN_MIB" status=none
dd if=/dev/zero of="$SHM_O" bs=1M count="$LUN_MIB" status=none

# --- tgtd: private control port, LUN 1 (LUN 0 is tgtd's controller) ---
start_tgtd "$IQN" "$SHM_T" "$TMP/tgtd.log"

# --- our target: file LUN 0 ---
OPORT=$(free_port)
"$BIN" target serve --portal "127.0.0.1:$OPORT" --target "$IQN" --lun "file:$SHM_O" --log warn \
    --admin-socket "$TMP/admin.sock" >"$TMP/ours.out" 2>"$TMP/ours.err" &
PIDS+=($!)
wait_port "$OPORT" || { echo "our target did not start:" >&2; cat "$TMP/ours.err" >&2; exit 1; }

# bridges TARGET PORT LUN: start both NBD bridges; sets URI_ours / URI_qemu.
bridges() {
    local name=$1 port=$2 lun=$3 nport qport
    start_ours_bridge "$BIN" "$port" "$IQN" "$TMP/login-$name"
    nport=$NBD_PORT
    qport=$(free_port)
    qemu-nbd -t -f raw -x "lun$lun" -b 127.0.0.1 -p "$qport" --shared=8 \
        "iscsi://127.0.0.1:$port/$IQN/$lun" >"$TMP/qemu-$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$qport" || { echo "qemu-nbd failed:" >&2; cat "$TMP/qemu-$name.log" >&2; exit 1; }
    URI_ours="nbd://127.0.0.1:$nport/lun$lun"
    URI_qemu="nbd://127.0.0.1:$qport/lun$lun"
}

# fio_once URI RW BS QD -> "IOPS MiB/s"
fio_once() {
    fio --name=bench --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$4" \
        --runtime="$SECS" --time_based --ramp_time=1 --size="${LUN_MIB}M" \
        --output-format=json --output="$TMP/fio.json" >"$TMP/fio.out" 2>"$TMP/fio.err" ||
        { echo "fio failed on $1:" >&2; cat "$TMP/fio.err" >&2; exit 1; }
    python3 - "$TMP/fio.json" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()  # fio may print notes before the JSON
j = json.loads(text[text.index("{"):])["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
print(f'{d["iops"]:.0f} {d["bw_bytes"] / 1048576:.0f}')
EOF
}


WORKLOADS=("randread 4k 32" "randwrite 4k 32" "read 128k 8" "write 128k 8")
declare -A R
for target in ours tgtd; do
    if [ $target = tgtd ]; then bridges tgtd "$TPORT" 1; else bridges ours "$OPORT" 0; fi
    # Fill the LUN once through our bridge so reads hit written data.
    fio --name=fill --ioengine=nbd --uri="$URI_ours" --rw=write --bs=1m --iodepth=8 \
        --size="${LUN_MIB}M" >/dev/null 2>"$TMP/fill.err" || { cat "$TMP/fill.err" >&2; exit 1; }
    for w in "${WORKLOADS[@]}"; do
        read -r rw bs qd <<<"$w"
        declare -A vals=()
        for _ in $(seq "$RUNS"); do
            for bridge in ours qemu; do
                uri_var=URI_$bridge
                read -r iops mib < <(fio_once "${!uri_var}" "$rw" "$bs" "$qd")
                [ -n "${iops:-}" ] || { echo "fio run failed ($bridge $target $rw)" >&2; exit 1; }
                vals[$bridge,iops]+="$iops"$'\n' vals[$bridge,mib]+="$mib"$'\n'
            done
        done
        for bridge in ours qemu; do
            R[$target,$rw,$bridge,iops]=$(printf %s "${vals[$bridge,iops]}" | median)
            R[$target,$rw,$bridge,mib]=$(printf %s "${vals[$bridge,mib]}" | median)
            echo "$target $rw $bs QD$qd $bridge: IOPS [$(echo ${vals[$bridge,iops]})] MiB/s [$(echo ${vals[$bridge,mib]})]" >&2
        done
        unset vals
    done
done


{
    echo "| target | workload | ours IOPS | ours MiB/s | qemu-nbd IOPS | qemu-nbd MiB/s | ours / qemu-nbd |"
    echo "|---|---|---|---|---|---|---|"
    for target in ours tgtd; do
        tname=$([ $target = ours ] && echo "our target" || echo "tgtd")
        for w in "${WORKLOADS[@]}"; do
            read -r rw bs qd <<<"$w"
            oi=${R[$target,$rw,ours,iops]} om=${R[$target,$rw,ours,mib]}
            qi=${R[$target,$rw,qemu,iops]} qm=${R[$target,$rw,qemu,mib]}
            echo "| $tname | $rw $bs QD$qd | $oi | $om | $qi | $qm | $(ratio "$oi" "$qi") |"
        done
    done
} >"$TMP/table.md"
cat "$TMP/table.md"
if [ -n "$OUT" ]; then cp "$TMP/table.md" "$OUT"; fi
