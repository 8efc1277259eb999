#!/usr/bin/env bash
# Run libiscsi's conformance suite (iscsi-test-cu) against our target and
# summarise per test: clean pass, pass that only skipped, failure.
#
# usage: scripts/conformance.sh [mem|file|multipath|removable ...]   (default: all)
#
#   mem        one 1 GiB memory LUN
#   file       one 1 GiB thin file LUN (in a temporary directory)
#   multipath  memory LUN behind two portals; the second portal's URL is
#              given to iscsi-test-cu as the multipath URL
#   removable  memory LUN presented as removable media (PreventAllow, StartStopUnit)
#   control    the mem run with the control channel on (`serve --control`:
#              tag bits decoded, vendor command C7h answered); not in the
#              default set. Compare with mem: docs/control-channel.md lists
#              what differs and why.
#   rbd        a 1 GiB Ceph RBD image (not in the default set: needs CEPH_CONF
#              and a build with --features cli/rbd)
#
# Environment:
#   ISCSI_BIN   the `iscsi` binary (default: build it with cargo, debug)
#   CU_SUMMARY  the summariser (default: scripts/cu_summary.py, which goes by
#               CUnit's own verdict; see its doc for why). When the team's
#               shared summariser (../shared/tools/cu_summary.py) exists, its
#               count is recorded too, for comparison with earlier figures.
#   OUT_DIR     where summaries go (default: docs/conformance)
#   CU_TIMEOUT  seconds per suite run (default 1800)
#
# Writes OUT_DIR/<run>.txt (counts, failed and skipped tests) and
# OUT_DIR/<run>.json (every test's verdict). Raw logs stay in build/conformance/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RUNS=("$@")
[ ${#RUNS[@]} -eq 0 ] && RUNS=(mem file multipath removable)

command -v iscsi-test-cu >/dev/null || { echo "iscsi-test-cu not found (apt-get install libiscsi-bin)" >&2; exit 3; }

if [ -z "${ISCSI_BIN:-}" ]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/build}
    if [[ " ${RUNS[*]} " == *" rbd "* ]]; then cargo build -q -p cli --features rbd; else cargo build -q -p cli; fi
    ISCSI_BIN=$CARGO_TARGET_DIR/debug/iscsi
fi
SUMMARY=${CU_SUMMARY:-$ROOT/scripts/cu_summary.py}
SHARED_SUMMARY=$ROOT/../shared/tools/cu_summary.py
OUT_DIR=${OUT_DIR:-$ROOT/docs/conformance}
LOG_DIR=$ROOT/build/conformance
mkdir -p "$OUT_DIR" "$LOG_DIR"
IQN=iqn.2024-01.rs.iscsi:conformance

SRV_PID=
TMP=$(mktemp -d)
cleanup() {
    [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# start_target OUT_FILE ARGS... : start the target, wait for its listening lines.
start_target() {
    local out=$1; shift
    "$ISCSI_BIN" target serve --target "$IQN" --log warn "$@" >"$out" 2>"$out.err" &
    SRV_PID=$!
    for _ in $(seq 1 100); do
        if grep -q '^target ' "$out" 2>/dev/null; then return 0; fi
        if ! kill -0 "$SRV_PID" 2>/dev/null; then cat "$out.err" >&2; return 1; fi
        sleep 0.1
    done
    echo "target did not start" >&2
    return 1
}

stop_target() {
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
}

run_suite() {
    local name=$1; shift
    local log=$LOG_DIR/$name.log
    echo "== $name: iscsi-test-cu $*" >&2
    timeout "${CU_TIMEOUT:-1800}" iscsi-test-cu -d -S -v "$@" >"$log" 2>&1 || true
    {
        echo "# iscsi-test-cu ($(dpkg-query -W -f='${Version}' libiscsi-bin 2>/dev/null || echo '?')) against iscsi target serve: $name"
        echo "# $(date -u +%Y-%m-%d) $(uname -m); URL(s): $*"
        python3 "$SUMMARY" "$log"
        if [ -f "$SHARED_SUMMARY" ]; then
            echo "# shared/tools/cu_summary.py (counts any \"FAILED\" text, including libiscsi's"
            echo "# [FAILED] logs inside negative tests that CUnit passed): $(python3 "$SHARED_SUMMARY" "$log")"
        fi
        echo
        echo "## failed"
        python3 "$SUMMARY" "$log" --list failed
        echo
        echo "## passed but skipped"
        python3 "$SUMMARY" "$log" --list skipped
        echo
        echo "## passed (CUnit verdict) while logging expected [FAILED] commands"
        python3 "$SUMMARY" "$log" --list logged
    } >"$OUT_DIR/$name.txt"
    python3 "$SUMMARY" "$log" --json >"$OUT_DIR/$name.json"
    echo "$name: $(python3 "$SUMMARY" "$log")"
}

for run in "${RUNS[@]}"; do
    case $run in
    mem)
        start_target "$TMP/mem.out" --portal 127.0.0.1:0 --lun mem:1G
        port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/mem.out" | head -1)
        run_suite mem "iscsi://127.0.0.1:$port/$IQN/0"
        stop_target
        ;;
    file)
        start_target "$TMP/file.out" --portal 127.0.0.1:0 --lun "file:$TMP/lun0.img,size=1G,thin"
        port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/file.out" | head -1)
        run_suite file "iscsi://127.0.0.1:$port/$IQN/0"
        stop_target
        ;;
    multipath)
        start_target "$TMP/mp.out" --portal 127.0.0.1:0 --portal 127.0.0.2:0 --lun mem:1G
        p1=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/mp.out" | head -1)
        p2=$(sed -n 's/^listening on 127.0.0.2:\([0-9]*\)$/\1/p' "$TMP/mp.out" | head -1)
        run_suite multipath "iscsi://127.0.0.1:$p1/$IQN/0" "iscsi://127.0.0.2:$p2/$IQN/0"
        stop_target
        ;;
    control)
        start_target "$TMP/ctl.out" --portal 127.0.0.1:0 --lun mem:1G --control
        port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/ctl.out" | head -1)
        run_suite control "iscsi://127.0.0.1:$port/$IQN/0"
        stop_target
        ;;
    removable)
        # The same memory LUN as virtual removable media (RMB=1), which the
        # PreventAllow and StartStopUnit suites need; single path only (see
        # docs/conformance/README.md for why multipath + removable cannot pass).
        start_target "$TMP/rm.out" --portal 127.0.0.1:0 --lun mem:1G,removable
        port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/rm.out" | head -1)
        run_suite removable "iscsi://127.0.0.1:$port/$IQN/0"
        stop_target
        ;;
    rbd)
        # A Ceph RBD image (docs/rbd.md): needs ISCSI_BIN built with
        # `--features cli/rbd` (done here when ISCSI_BIN is unset) and a
        # cluster in CEPH_CONF (scripts/ceph-mini.sh start gives one).
        [ -n "${CEPH_CONF:-}" ] || { echo "rbd run: set CEPH_CONF (scripts/ceph-mini.sh start)" >&2; exit 3; }
        img=rbd/conformance-$$
        rbd -c "$CEPH_CONF" create --size 1G "$img"
        start_target "$TMP/rbd.out" --portal 127.0.0.1:0 --lun "rbd:$img,conf=$CEPH_CONF"
        port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$TMP/rbd.out" | head -1)
        run_suite rbd "iscsi://127.0.0.1:$port/$IQN/0"
        stop_target
        rbd -c "$CEPH_CONF" rm --no-progress "$img" >/dev/null 2>&1 || true
        ;;
    *)
        echo "unknown run $run (mem, file, multipath, removable, control, rbd)" >&2
        exit 2
        ;;
    esac
done
