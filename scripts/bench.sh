#!/usr/bin/env bash
# The benchmark harness of issue 14: every comparison of its goals, side by
# side in one run on this machine (DESIGN.md, "Performance method"), written
# to a dated Markdown file under docs/bench/ (old files are kept).
#
#   target    our target's CPU per I/O vs tgtd under the same client (QD 32:
#             4 KiB random read and 128 KiB sequential read with libiscsi's
#             iscsi-perf, 4 KiB random write with iscsi-load, which can
#             write), and 128 KiB sequential read throughput vs one iperf3
#             TCP stream over loopback
#   digests   HeaderDigest+DataDigest CRC32C on vs off (our initiator and
#             target; libiscsi cannot do data digests)
#   initiator our initiator (iscsi-load perf) vs libiscsi (iscsi-perf) on
#             the same target: client CPU per 4 KiB random read at QD 32,
#             1 MiB sequential read throughput at QD 8
#   nbd       fio's nbd engine through our NBD export vs qemu-nbd bridging
#             with libiscsi, against our target and tgtd
#   scale     N idle sessions (SCALE_N; and SCALE_MCS sessions of several
#             connections) on each target: logins/s, RSS per session, then
#             a 4 KiB read per session per second: target CPU per I/O and
#             latency percentiles
#   callgrind instructions per operation of the sans-IO hot paths
#             (scripts/bench-callgrind.sh): stable on a busy machine
#
# Server CPU: the target's utime+stime from /proc/PID/stat (all threads)
# over each client run, divided by the I/Os the client completed. Client
# CPU: the client's own (wait4 rusage); for nbd, the bridge process's.
# Each figure is the median of RUNS runs, the compared sides alternating.
# LUNs are preallocated files on tmpfs (/dev/shm), portals on 127.0.0.1.
#
# Usage: scripts/bench.sh [SECTION...]        (default: all six)
# Env:   RUNS=3 SECS=5 LUN_MIB=1024 SCALE_N="1 100 1000 10000" SCALE_MCS=1000x4
#        SCALE_ACTIVE=10 SCALE_HOLD=3 NBD_TARGETS="ours tgtd"
#        QUICK=1 (one short run of each, small scale: a smoke test)
#        OUT=docs/bench/YYYY-MM-DD.md  SKIP_BUILD=1
#        CARGO_TARGET_DIR=... (where the release binaries are; default build/)
# Needs: tgt, libiscsi-bin, fio, iperf3, qemu-utils + qemu-block-extra
#        (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

ALL=(target digests initiator nbd scale callgrind)
SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=("${ALL[@]}")
for s in "${SECTIONS[@]}"; do
    [[ " ${ALL[*]} " == *" $s "* ]] || { echo "unknown section $s (one of: ${ALL[*]})" >&2; exit 2; }
done
if [ -n "${QUICK:-}" ]; then
    RUNS=${RUNS:-1} SECS=${SECS:-1} LUN_MIB=${LUN_MIB:-256}
    SCALE_N=${SCALE_N:-"1 100"} SCALE_MCS=${SCALE_MCS-"10x4"} SCALE_ACTIVE=${SCALE_ACTIVE:-2} SCALE_HOLD=${SCALE_HOLD:-1}
    NBD_TARGETS=${NBD_TARGETS:-ours}
fi
RUNS=${RUNS:-3}
SECS=${SECS:-5}
LUN_MIB=${LUN_MIB:-1024}
SCALE_N=${SCALE_N:-"1 100 1000 10000"}
SCALE_MCS=${SCALE_MCS-"1000x4"}
SCALE_ACTIVE=${SCALE_ACTIVE:-10}
SCALE_HOLD=${SCALE_HOLD:-3}
NBD_TARGETS=${NBD_TARGETS:-"ours tgtd"}
BUILD_DIR=${CARGO_TARGET_DIR:-build}
BIN=$BUILD_DIR/release/iscsi
LOAD=$BUILD_DIR/release/iscsi-load
IQN=iqn.2026-01.rs.iscsi-rs:bench
INIT=iqn.2026-01.rs.iscsi-rs:bench-libiscsi
HZ=$(getconf CLK_TCK)
if [ -z "${OUT:-}" ]; then
    OUT=docs/bench/$(date -u +%F).md
    # A second run the same day keeps the first one's file.
    [ ! -e "$OUT" ] || OUT=docs/bench/$(date -u +%F-%H%M).md
fi

for t in tgtd tgtadm iscsi-perf fio iperf3 qemu-nbd python3; do
    command -v $t >/dev/null || { echo "missing $t (scripts/install-deps.sh)" >&2; exit 1; }
done
if [[ " ${SECTIONS[*]} " == *" nbd "* ]] && ! dpkg -s qemu-block-extra >/dev/null 2>&1; then
    echo "qemu-nbd has no iscsi driver: install qemu-block-extra (scripts/install-deps.sh)" >&2
    exit 1
fi
# Thousands of sessions need as many descriptors in the target and the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ -z "${SKIP_BUILD:-}" ]; then
    echo "building (release)" >&2
    cargo build --release -q -p cli -p testbed --bin iscsi --bin iscsi-load
    if [[ " ${SECTIONS[*]} " == *" callgrind "* ]]; then
        cargo build --release -q -p proto --example hotpath
    fi
fi

TMP=$(mktemp -d)
SHM_T=/dev/shm/bench-tgtd-$$.img
SHM_O=/dev/shm/bench-ours-$$.img
PIDS=() TGTD_PID= OURS_PID= CTL= TPORT=
cleanup() {
    set +e
    # Bridges before targets (qemu-nbd hangs on exit when its target is gone).
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    [ -n "$OURS_PID" ] && kill "$OURS_PID" 2>/dev/null
    stop_tgtd
    # Whatever else this script started.
    kill $(jobs -p) 2>/dev/null
    wait 2>/dev/null
    rm -f "$SHM_T" "$SHM_O" "/dev/shm/bench-scale-$$.img"
    rm -rf "$TMP"
}
trap cleanup EXIT

say() { echo "[$(date -u +%T)] $*" >&2; }
# goal NAME VALUE OP LIMIT: append a row to the goals table; prints met/not met.
goal() {
    local verdict
    verdict=$(awk -v v="$2" -v op="$3" -v l="$4" 'BEGIN {
        if (v == "-" || v == "") { print "not measured"; exit }
        ok = (op == "<=") ? (v + 0 <= l + 0) : (v + 0 >= l + 0)
        print ok ? "met" : "not met" }')
    echo "| $1 | $2 | $3 $4 | $verdict |" >>"$TMP/goals.md"
    echo "$verdict"
}
raw() { echo "- $*" >>"$TMP/raw-$SECTION.md"; say "$SECTION: $*"; }

# measure PID PARSER CMD...: run the client CMD once against the target
# PID; prints "IOPS MiB/s server-µs/IO client-µs/IO". PARSER: perf
# (iscsi-perf's "iops average N (M MB/s)", MB meaning MiB) or load
# (iscsi-load's "ios N secs S iops X mib_s Y").
measure() {
    local pid=$1 parser=$2 t0 t1
    shift 2
    t0=$(cpu_ticks "$pid")
    client_run "$TMP/client.cpu" "$@" >"$TMP/client.out" 2>&1 ||
        { echo "client failed: $*" >&2; tail -5 "$TMP/client.out" >&2; exit 1; }
    t1=$(cpu_ticks "$pid")
    python3 - "$parser" "$TMP/client.out" "$(cat "$TMP/client.cpu")" "$((t1 - t0))" "$HZ" "$SECS" <<'EOF'
import re, sys
parser, path, ccpu, ticks, hz, secs = sys.argv[1:]
text = open(path, errors="replace").read().replace("\r", "\n")
if parser == "perf":
    m = re.findall(r"^iops average (\d+) \((\d+) MB/s\)", text, re.M)
    iops, mib = map(float, m[-1])
    ios = iops * float(secs)
else:
    m = re.search(r"^ios (\d+) secs ([\d.]+) iops (\d+) mib_s ([\d.]+)", text, re.M)
    ios, iops, mib = float(m[1]), float(m[3]), float(m[4])
ios = max(ios, 1)
print(f"{iops:.0f} {mib:.0f} {int(ticks) * 1e6 / int(hz) / ios:.2f} {float(ccpu) * 1e6 / ios:.2f}")
EOF
}

# The two targets of the throughput sections, each on its own tmpfs file.
start_targets() {
    say "starting tgtd and our target (LUNs of $LUN_MIB MiB on /dev/shm)"
    dd if=/dev/zero of="$SHM_T" bs=1M count="$LUN_MIB" status=none
    dd if=/dev/zero of="$SHM_O" bs=1M count="$LUN_MIB" status=none
    start_tgtd "$IQN" "$SHM_T" "$TMP/tgtd.log"
    start_ours "$BIN" "$TMP/ours" --portal 127.0.0.1:0 --target "$IQN" --lun "file:$SHM_O" \
        --nop-interval 0 --admin-socket "$TMP/admin.sock"
    PORTAL_ours=$OURS_PORTAL LUN_ours=0 PID_ours=$OURS_PID
    PORTAL_tgtd=127.0.0.1:$TPORT LUN_tgtd=1 PID_tgtd=$TGTD_PID
}

pid_of() { local v=PID_$1; echo "${!v}"; }
# perf_cmd TARGET BLOCKS QD [-r]: iscsi-perf against TARGET (512-byte blocks).
perf_cmd() {
    local p=PORTAL_$1 l=LUN_$1
    echo iscsi-perf -i "$INIT" -m "$3" -b "$2" -t "$SECS" ${4:-} "iscsi://${!p}/$IQN/${!l}"
}
# load_cmd TARGET ARGS...: iscsi-load perf against TARGET.
load_cmd() {
    local p=PORTAL_$1 l=LUN_$1
    shift
    echo "$LOAD" perf "${!p}" "$IQN" "${!l}" --secs "$SECS" "$@"
}

# runs KEY SIDES...: RUNS runs of each side's measurement, SPEC[side] =
# "PID PARSER CMD..." (the arguments of measure), the sides alternating;
# sets R[KEY,side,{iops,mib,srv,cli}] to the medians.
declare -A R
runs() {
    local key=$1 sides=("${@:2}") s i iops mib srv cli
    declare -A v=()
    for i in $(seq "$RUNS"); do
        for s in "${sides[@]}"; do
            read -r iops mib srv cli < <(eval "measure ${SPEC[$s]}")
            v[$s,iops]+="$iops"$'\n' v[$s,mib]+="$mib"$'\n' v[$s,srv]+="$srv"$'\n' v[$s,cli]+="$cli"$'\n'
        done
    done
    for s in "${sides[@]}"; do
        for f in iops mib srv cli; do R[$key,$s,$f]=$(printf %s "${v[$s,$f]}" | median); done
        raw "$key $s: IOPS [$(echo ${v[$s,iops]})] MiB/s [$(echo ${v[$s,mib]})]" \
            "server µs/IO [$(echo ${v[$s,srv]})] client µs/IO [$(echo ${v[$s,cli]})]"
    done
}
declare -A SPEC

iperf_once() {
    local port
    port=$(free_port)
    iperf3 -s -p "$port" >/dev/null 2>&1 &
    local spid=$!
    wait_port "$port"
    sleep 0.2
    iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -J >"$TMP/iperf.json" || true
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null || true
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(round(j["end"]["sum_received"]["bits_per_second"]/8/1048576))' "$TMP/iperf.json"
}

section_target() {
    {
        echo "## Target: CPU per I/O vs tgtd, throughput vs one TCP stream"
        echo
        echo "Same client for both targets; server µs of CPU per I/O (lower is better), client µs per I/O beside it."
        echo
        echo "| workload (QD 32) | client | ours µs/IO | tgtd µs/IO | ours / tgtd | goal | ours IOPS | tgtd IOPS | client µs/IO ours / tgtd |"
        echo "|---|---|---|---|---|---|---|---|---|"
    } >"$TMP/sec-target.md"
    local w name client g
    for w in "randread 8 -r perf" "randwrite 8 - load" "seqread 256 - perf"; do
        read -r name blocks rnd client <<<"$w"
        for t in ours tgtd; do
            if [ "$client" = perf ]; then
                SPEC[$t]="$(pid_of $t) perf $(perf_cmd $t "$blocks" 32 "${rnd%-}")"
            else
                SPEC[$t]="$(pid_of $t) load $(load_cmd $t --bs $((blocks * 512)) --qd 32 --random --write)"
            fi
        done
        say "target: $name ($((blocks / 2)) KiB, QD 32), $RUNS run(s) of ${SECS}s each side"
        runs "$name" ours tgtd
        local r
        r=$(ratio "${R[$name,ours,srv]}" "${R[$name,tgtd,srv]}")
        g=$(goal "target CPU per I/O, $name $((blocks / 2)) KiB QD32, ours / tgtd" "$r" "<=" 0.4)
        echo "| $name $((blocks / 2)) KiB | $([ $client = perf ] && echo iscsi-perf || echo iscsi-load) | ${R[$name,ours,srv]} | ${R[$name,tgtd,srv]} | $r | ≤ 0.4: $g | ${R[$name,ours,iops]} | ${R[$name,tgtd,iops]} | ${R[$name,ours,cli]} / ${R[$name,tgtd,cli]} |" >>"$TMP/sec-target.md"
    done
    say "target: iperf3, one loopback stream, $RUNS run(s) of ${SECS}s"
    local ip=""
    for _ in $(seq "$RUNS"); do ip+="$(iperf_once)"$'\n'; done
    local ipm
    ipm=$(printf %s "$ip" | median)
    raw "iperf3 one stream MiB/s: [$(echo $ip)]"
    local r
    r=$(ratio "${R[seqread,ours,mib]}" "$ipm")
    g=$(goal "sequential read throughput (128 KiB QD32) / one iperf3 stream" "$r" ">=" 0.95)
    {
        echo
        echo "| sequential read 128 KiB QD 32 | ours MiB/s | tgtd MiB/s | iperf3 one stream MiB/s | ours / iperf3 | goal |"
        echo "|---|---|---|---|---|---|"
        echo "| iscsi-perf | ${R[seqread,ours,mib]} | ${R[seqread,tgtd,mib]} | $ipm | $r | ≥ 0.95: $g |"
    } >>"$TMP/sec-target.md"
}

section_digests() {
    {
        echo "## Digests: HeaderDigest + DataDigest CRC32C on vs off"
        echo
        echo "Our initiator (iscsi-load perf) against our target; the client line shows the digests negotiated."
        echo
        echo "| workload (QD 32) | on MiB/s | off MiB/s | on / off | goal | server µs/IO on / off | client µs/IO on / off |"
        echo "|---|---|---|---|---|---|---|"
    } >"$TMP/sec-digests.md"
    local name args g r
    for w in "seqread --bs 131072" "seqwrite --bs 131072 --write"; do
        read -r name args <<<"$w"
        SPEC[on]="$PID_ours load $(load_cmd ours $args --qd 32 --digests)"
        SPEC[off]="$PID_ours load $(load_cmd ours $args --qd 32)"
        say "digests: $name 128 KiB, $RUNS run(s) of ${SECS}s each side"
        runs "dig-$name" on off
        r=$(ratio "${R[dig-$name,on,mib]}" "${R[dig-$name,off,mib]}")
        g=$(goal "digests on / off, $name 128 KiB QD32 (throughput)" "$r" ">=" 0.8)
        echo "| $name 128 KiB | ${R[dig-$name,on,mib]} | ${R[dig-$name,off,mib]} | $r | ≥ 0.8: $g | ${R[dig-$name,on,srv]} / ${R[dig-$name,off,srv]} | ${R[dig-$name,on,cli]} / ${R[dig-$name,off,cli]} |" >>"$TMP/sec-digests.md"
    done
    # The digests were really on: one short run, its negotiated line.
    "$LOAD" perf "$PORTAL_ours" "$IQN" 0 --secs 0.2 --digests | grep -q "digests on/on" ||
        echo "WARNING: the digest runs did not negotiate CRC32C" | tee -a "$TMP/sec-digests.md" >&2
}

section_initiator() {
    {
        echo "## Initiator: ours (iscsi-load perf) vs libiscsi (iscsi-perf)"
        echo
        echo "Same target, same run; client µs of CPU per I/O (wait4 rusage of the client process)."
        echo
        echo "| target | workload | ours client µs/IO | libiscsi client µs/IO | ours / libiscsi | ours MiB/s | libiscsi MiB/s | ours / libiscsi | goal |"
        echo "|---|---|---|---|---|---|---|---|---|"
    } >"$TMP/sec-initiator.md"
    # name | iscsi-load args | iscsi-perf blocks QD flags | judged on | goal
    local specs=("randread-4k|--bs 4096 --qd 32 --random|8 32 -r|cli|<=|0.7|4 KiB random read QD 32"
        "seqread-1m|--bs 1048576 --qd 8|2048 8 |mib|>=|1.2|1 MiB sequential read QD 8")
    local t spec name largs pargs on op lim desc k rc rt r g
    for t in ours tgtd; do
        for spec in "${specs[@]}"; do
            IFS='|' read -r name largs pargs on op lim desc <<<"$spec"
            k=ini-$t-$name
            SPEC[ours]="$(pid_of $t) load $(load_cmd $t $largs)"
            SPEC[libiscsi]="$(pid_of $t) perf $(perf_cmd $t $pargs)"
            say "initiator: $desc against $t, $RUNS run(s)"
            runs "$k" ours libiscsi
            rc=$(ratio "${R[$k,ours,cli]}" "${R[$k,libiscsi,cli]}")
            rt=$(ratio "${R[$k,ours,mib]}" "${R[$k,libiscsi,mib]}")
            if [ "$on" = cli ]; then r=$rc; else r=$rt; fi
            g=$(goal "initiator $([ "$on" = cli ] && echo "CPU per I/O" || echo throughput), $desc, ours / libiscsi ($t target)" "$r" "$op" "$lim")
            echo "| $t | $desc | ${R[$k,ours,cli]} | ${R[$k,libiscsi,cli]} | $rc | ${R[$k,ours,mib]} | ${R[$k,libiscsi,mib]} | $rt | $([ "$on" = cli ] && echo CPU || echo MiB/s) $op $lim: $g |" >>"$TMP/sec-initiator.md"
        done
    done
}

section_nbd() {
    {
        echo "## NBD export: our initiator's NBD server vs qemu-nbd (libiscsi)"
        echo
        echo "fio's nbd engine (libnbd) through each bridge to the same LUN; bridge µs of CPU per I/O from /proc."
        echo
        echo "| target | workload | ours IOPS | qemu-nbd IOPS | ours / qemu-nbd | goal | bridge µs/IO ours / qemu-nbd |"
        echo "|---|---|---|---|---|---|---|"
    } >"$TMP/sec-nbd.md"
    local t port lun qport w rw bs qd b i iops mib us g r
    for t in $NBD_TARGETS; do
        if [ "$t" = ours ]; then port=${PORTAL_ours##*:} lun=0; else port=$TPORT lun=1; fi
        start_ours_bridge "$BIN" "$port" "$IQN" "$TMP/login-$t"
        local ours_pid=$BRIDGE_PID uri_ours="nbd://127.0.0.1:$NBD_PORT/lun$lun"
        qport=$(free_port)
        qemu-nbd -t -f raw -x "lun$lun" -b 127.0.0.1 -p "$qport" --shared=8 \
            "iscsi://127.0.0.1:$port/$IQN/$lun" >"$TMP/qemu-$t.log" 2>&1 &
        local qemu_pid=$!
        PIDS+=($!)
        wait_port "$qport" || { echo "qemu-nbd failed:" >&2; cat "$TMP/qemu-$t.log" >&2; exit 1; }
        local uri_qemu="nbd://127.0.0.1:$qport/lun$lun"
        say "nbd: filling the $t LUN through our bridge"
        fio --name=fill --ioengine=nbd --uri="$uri_ours" --rw=write --bs=1m --iodepth=8 \
            --size="${LUN_MIB}M" >/dev/null 2>"$TMP/fill.err" || { cat "$TMP/fill.err" >&2; exit 1; }
        for w in "randread 4k 32" "randwrite 4k 32" "read 128k 8" "write 128k 8"; do
            read -r rw bs qd <<<"$w"
            say "nbd: $t $rw $bs QD$qd, $RUNS run(s) of ${SECS}s each bridge"
            declare -A v=()
            for i in $(seq "$RUNS"); do
                for b in ours qemu; do
                    local u=uri_$b p=${b}_pid
                    read -r iops mib us < <(fio_once "${!u}" "$rw" "$bs" "$qd" "${!p}")
                    v[$b,iops]+="$iops"$'\n' v[$b,us]+="$us"$'\n'
                done
            done
            for b in ours qemu; do
                R[nbd,$t,$rw,$b,iops]=$(printf %s "${v[$b,iops]}" | median)
                R[nbd,$t,$rw,$b,us]=$(printf %s "${v[$b,us]}" | median)
                raw "nbd $t $rw $bs QD$qd $b: IOPS [$(echo ${v[$b,iops]})] bridge µs/IO [$(echo ${v[$b,us]})]"
            done
            unset v
            r=$(ratio "${R[nbd,$t,$rw,ours,iops]}" "${R[nbd,$t,$rw,qemu,iops]}")
            g=$(goal "NBD export vs qemu-nbd, $rw $bs QD$qd ($t target)" "$r" ">=" 1.5)
            echo "| $t | $rw $bs QD $qd | ${R[nbd,$t,$rw,ours,iops]} | ${R[nbd,$t,$rw,qemu,iops]} | $r | ≥ 1.5: $g | ${R[nbd,$t,$rw,ours,us]} / ${R[nbd,$t,$rw,qemu,us]} |" >>"$TMP/sec-nbd.md"
        done
        kill "$qemu_pid" "$ours_pid" 2>/dev/null || true
        wait "$qemu_pid" "$ours_pid" 2>/dev/null || true
        # The ceiling of any bridge to this target: libiscsi's iscsi-perf
        # straight to the LUN, with no NBD layer and no fio sharing the CPUs.
        say "nbd: $t ceiling, iscsi-perf straight to the target, randread 4k QD32"
        SPEC[direct]="$(pid_of "$t") perf $(perf_cmd "$t" 8 32 -r)"
        runs "nbd-direct-$t" direct
        r=$(ratio "${R[nbd-direct-$t,direct,iops]}" "${R[nbd,$t,randread,qemu,iops]}")
        echo "- $t: iscsi-perf straight to the target (no NBD layer, no fio), randread 4k QD 32:" \
            "${R[nbd-direct-$t,direct,iops]} IOPS, $r × qemu-nbd's figure above: the most any bridge could reach." \
            >>"$TMP/sec-nbd-ceiling.md"
    done
    { echo; echo "Ceilings:"; echo; cat "$TMP/sec-nbd-ceiling.md"; } >>"$TMP/sec-nbd.md"
}

# scale_one TARGET N [C]: a fresh target, N sessions of C connections
# (default 1) held idle, then active. Appends one table row.
scale_one() {
    local t=$1 n=$2 c=${3:-1} pid portal lun base rss t0 t1 c0 c1
    local shm=/dev/shm/bench-scale-$$.img
    # The throughput sections' targets stay up: keep their handles.
    local keep_tgtd=$TGTD_PID keep_ctl=$CTL keep_tport=$TPORT keep_ours=$OURS_PID
    dd if=/dev/zero of="$shm" bs=1M count=64 status=none
    if [ "$t" = ours ]; then
        cat >"$TMP/scale.json" <<EOF
{ "limits": { "max_sessions_per_target": $((n + 16)), "max_connections_per_initiator": $((n * c + 16)),
              "max_logins_in_progress": 256 },
  "targets": [ { "name": "$IQN", "portal_groups": [ { "tpgt": 1, "portals": ["127.0.0.1:0"] } ],
                 "luns": [ { "lun": 0, "backend": "file", "path": "$shm" } ],
                 "session": { "nop_interval_secs": 0 } } ] }
EOF
        start_ours "$BIN" "$TMP/scale-ours" --config "$TMP/scale.json" --admin-socket "$TMP/scale.sock"
        pid=$OURS_PID portal=$OURS_PORTAL lun=0
    else
        start_tgtd "$IQN" "$shm" "$TMP/scale-tgtd.log"
        pid=$TGTD_PID portal=127.0.0.1:$TPORT lun=1
    fi
    sleep 0.5
    base=$(rss_kib "$pid")
    "$LOAD" sessions "$portal" "$IQN" --lun "$lun" --sessions "$n" --connections "$c" --parallel 64 \
        --hold "$SCALE_HOLD" --active "$SCALE_ACTIVE" >"$TMP/scale.out" 2>"$TMP/scale.err" &
    local lpid=$!
    until grep -q '^holding' "$TMP/scale.out" 2>/dev/null; do
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.2
    done
    sleep 1
    rss=$(rss_kib "$pid")
    until grep -q '^active' "$TMP/scale.out" 2>/dev/null; do
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.1
    done
    t0=$(cpu_ticks "$pid") c0=$(cpu_ticks "$lpid" 2>/dev/null || echo 0)
    # The last second: the client's CPU is read before it prints and exits.
    local window
    window=$(awk -v a="$SCALE_ACTIVE" 'BEGIN { print (a > 1.5) ? a - 1 : a / 2 }')
    sleep "$window"
    c1=$(cpu_ticks "$lpid" 2>/dev/null || echo 0)
    until grep -q '^reads' "$TMP/scale.out" 2>/dev/null; do
        kill -0 "$lpid" 2>/dev/null || break
        sleep 0.1
    done
    t1=$(cpu_ticks "$pid")
    wait "$lpid" || true
    if [ "$t" = ours ]; then kill "$OURS_PID"; wait "$OURS_PID" 2>/dev/null || true; else stop_tgtd; fi
    TGTD_PID=$keep_tgtd CTL=$keep_ctl TPORT=$keep_tport OURS_PID=$keep_ours
    rm -f "$shm"
    python3 - "$t" "$n$([ "$c" = 1 ] || echo "×$c")" "$TMP/scale.out" "$base" "$rss" "$((t1 - t0))" "$HZ" "$((c1 - c0))" "$window" <<'EOF' | tee -a "$TMP/sec-scale.md" >&2
import sys
t, n, path, base, rss, ticks, hz, cticks, window = sys.argv[1:]
# Each line of iscsi-load is "key value key value ...", named by its first key.
lines = {}
for l in open(path):
    w = l.split()
    if len(w) >= 2:
        lines[w[0]] = dict(zip(w[::2], w[1::2]))
def field(line, name, default="-"):
    return lines.get(line, {}).get(name, default)
logged, lerr, lps = field("logged_in", "logged_in"), field("logged_in", "errors"), field("logged_in", "logins_per_s")
reads = field("reads", "reads")
per = (int(rss) - int(base)) / max(int(logged) if logged != "-" else 0, 1)
cpu = f"{int(ticks) * 1e6 / int(hz) / int(reads):.1f}" if reads not in ("-", "0") else "-"
# The client's CPU over the active phase (but its last second), in % of one CPU.
ccpu = f"{int(cticks) / int(hz) / float(window) * 100:.0f}"
print(f"| {t} | {n} | {logged} | {lerr} | {lps} | {int(base) / 1024:.1f} | {int(rss) / 1024:.1f} | {per:.1f} | "
      f"{reads} | {field('reads', 'errors')} | {cpu} | {ccpu} | {field('reads', 'p50_us')} | {field('reads', 'p99_us')} | "
      f"{field('reads', 'p999_us')} | {field('reads', 'max_us')} | {field('logged_in', 'connections')} |")
EOF
}

section_scale() {
    {
        echo "## Scale: idle sessions, then a 4 KiB read per session per second"
        echo
        echo "Client: iscsi-load sessions (our initiator, one connection per session unless N×C, 64 logins at a time, NOP-Out every 5 s);"
        echo "each target fresh per row, LUN a 64 MiB file on tmpfs. RSS per session = (RSS with N sessions held − RSS before) / N."
        echo "Active phase: ${SCALE_ACTIVE}s; target CPU per read over it (NOPs included; /proc ticks of 10 ms, so 0 at few reads);"
        echo "client CPU in % of one CPU (100 % or more: the client, not the target, limits the reads and their latency)."
        echo
        echo "| target | N | logged in | login errors | logins/s | RSS before MiB | RSS held MiB | KiB/session | reads | read errors | target µs CPU/read | client CPU % | p50 µs | p99 µs | p99.9 µs | max µs | connections up |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    } >"$TMP/sec-scale.md"
    local n t
    for n in $SCALE_N; do
        for t in ours tgtd; do
            say "scale: $t with $n sessions"
            scale_one "$t" "$n"
        done
    done
    local m
    for m in $SCALE_MCS; do
        for t in ours tgtd; do
            say "scale: $t with ${m%x*} sessions of ${m#*x} connections"
            scale_one "$t" "${m%x*}" "${m#*x}"
        done
        local up
        up=$(awk -F'|' -v m="${m/x/×}" '$2 ~ /ours/ && $3 ~ m {gsub(/ /, "", $5); gsub(/ /, "", $11); gsub(/ /, "", $18); print ($5 + $11 == 0) ? $18 : 0}' "$TMP/sec-scale.md")
        goal "connections up and reading without error, ours ($m: sessions x connections)" "${up:--}" ">=" "$((${m%x*} * ${m#*x}))" >/dev/null
    done
    local big per
    big=$(echo $SCALE_N | tr ' ' '\n' | sort -n | tail -1)
    per=$(awk -F'|' -v n="$big" '$2 ~ /ours/ && $3 + 0 == n {gsub(/ /, "", $9); print $9}' "$TMP/sec-scale.md")
    goal "RSS per idle session, ours, $big sessions (KiB)" "${per:--}" "<=" 16 >/dev/null
    local errs
    errs=$(awk -F'|' -v n="$big" '$2 ~ /ours/ && $3 + 0 == n {gsub(/ /, "", $5); gsub(/ /, "", $11); print $5 + $11}' "$TMP/sec-scale.md")
    local logged
    logged=$(awk -F'|' -v n="$big" '$2 ~ /ours/ && $3 + 0 == n {gsub(/ /, "", $4); print $4}' "$TMP/sec-scale.md")
    goal "sessions logged in and reading without error, ours (of $big)" "$([ "${errs:-1}" = 0 ] && echo "${logged:--}" || echo 0)" ">=" 10000 >/dev/null
}

section_callgrind() {
    say "callgrind: instructions per operation of the sans-IO hot paths"
    {
        echo "## Instructions per operation of the sans-IO hot paths (callgrind)"
        echo
        echo "\`scripts/bench-callgrind.sh\` (proto/examples/hotpath.rs, the workloads of proto/benches): deterministic, so"
        echo "comparable between runs and machines of one architecture whatever the load."
        echo
        SKIP_BUILD=1 scripts/bench-callgrind.sh
    } >"$TMP/sec-callgrind.md"
}

# --- run ---
START=$(date -u '+%F %T UTC')
LOAD_START=$(uptime)
say "sections: ${SECTIONS[*]}; RUNS=$RUNS SECS=$SECS; results: $OUT"
echo "| goal | figure | target | verdict |" >"$TMP/goals.md"
echo "|---|---|---|---|" >>"$TMP/goals.md"
if [[ " ${SECTIONS[*]} " =~ \ (target|digests|initiator|nbd)\  ]]; then start_targets; fi
for SECTION in "${SECTIONS[@]}"; do
    : >"$TMP/raw-$SECTION.md"
    "section_$SECTION"
done
LOAD_END=$(uptime)

mkdir -p "$(dirname "$OUT")"
{
    echo "# Benchmarks, $START"
    echo
    echo "\`scripts/bench.sh ${SECTIONS[*]}\` with RUNS=$RUNS SECS=$SECS LUN_MIB=$LUN_MIB${QUICK:+ QUICK=1}$([[ " ${SECTIONS[*]} " == *" scale "* ]] && echo " SCALE_N=\"$SCALE_N\" SCALE_MCS=\"$SCALE_MCS\" SCALE_ACTIVE=$SCALE_ACTIVE"),"
    echo "at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with local changes)'). Every figure is a median of $RUNS run(s)."
    echo
    echo "- Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1), kernel $(uname -r), $(free -g | awk '/^Mem:/ {print $2}') GiB"
    echo "- Load at start: \`$LOAD_START\`"
    echo "- Load at end: \`$LOAD_END\`"
    echo "- Peers: tgtd $(tgtd --version 2>&1 | head -1), libiscsi $(dpkg-query -W -f='${Version}' libiscsi-bin 2>/dev/null),"
    echo "  $(qemu-nbd --version | head -1), $(iperf3 --version | head -1 | cut -d' ' -f1-2), $(fio --version)"
    echo
    echo "## Goals (issue 14)"
    echo
    cat "$TMP/goals.md"
    for SECTION in "${SECTIONS[@]}"; do
        echo
        cat "$TMP/sec-$SECTION.md"
        if [ -s "$TMP/raw-$SECTION.md" ]; then
            echo
            echo "Runs, in order:"
            echo
            cat "$TMP/raw-$SECTION.md"
        fi
    done
} >"$OUT"
say "wrote $OUT"
cat "$TMP/goals.md"
