#!/usr/bin/env bash
# The whole test suite: unit, property, integration against real peers
# (tgtd, libiscsi's tools and conformance suite, a Ceph cluster for the RBD
# backend). Installs what it needs first.
#
# With Ceph installed (scripts/install-deps.sh tries; ISCSI_NO_CEPH=1 skips
# it), the workspace is built with `--features cli/rbd` and a single-host
# cluster (scripts/ceph-mini.sh, memstore) runs for the RBD tests, started
# while cargo builds and stopped on exit whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
features=()
if [ -z "${ISCSI_NO_CEPH:-}" ] && [ -e /usr/include/rbd/librbd.h ] && [ -e /usr/include/rados/librados.h ] \
    && [ -e /usr/include/rados/librados.hpp ] \
    && command -v ceph-mon >/dev/null && command -v rbd >/dev/null; then
    features=(--features cli/rbd)
    export CEPH_MINI_DIR=${CEPH_MINI_DIR:-${TMPDIR:-/tmp}/iscsi-rs-test-ceph}
    ceph_pid=
    # Keeps the suite's exit status: under `set -e` a failing `kill` of the
    # already finished start-up job would otherwise end the trap, and the
    # script, with status 1 after a green run.
    stop_ceph() {
        local rc=$?
        set +e
        [ -n "$ceph_pid" ] && kill "$ceph_pid" 2>/dev/null
        wait 2>/dev/null
        scripts/ceph-mini.sh stop >/dev/null 2>&1
        exit "$rc"
    }
    trap stop_ceph EXIT
    IMAGE_SIZE= WAIT_HEALTH=0 scripts/ceph-mini.sh start >"${TMPDIR:-/tmp}/iscsi-rs-ceph-mini.log" 2>&1 &
    ceph_pid=$!
else
    echo "Ceph packages (ceph-mon ceph-mgr ceph-osd ceph-common librbd-dev librados-dev libradospp-dev) missing:" \
        "building without the rbd feature; the RBD tests will skip" >&2
fi
cargo build --workspace --all-targets "${features[@]}"
# The ublk export (cargo feature, off by default; the kernel here has no
# ublk driver, so it is only built).
cargo check -p initiator --features ublk
cargo check -p cli --features ublk
if ((${#features[@]})); then
    if wait "$ceph_pid"; then
        export ISCSI_TEST_CEPH_CONF=$CEPH_MINI_DIR/ceph.conf
    else
        echo "warning: the test Ceph cluster did not start (log: ${TMPDIR:-/tmp}/iscsi-rs-ceph-mini.log);" \
            "the RBD tests that need it will skip" >&2
        tail -5 "${TMPDIR:-/tmp}/iscsi-rs-ceph-mini.log" >&2 || true
    fi
fi
cargo nextest run --workspace --no-fail-fast "${features[@]}" "$@"
