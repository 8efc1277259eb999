#!/usr/bin/env bash
# OUR initiator's ublk export under a real kernel: a QEMU guest with the bookworm-backports
# kernel (which has ublk_drv) runs a static `iscsi` built with `--features ublk`; it logs in
# to our target on the host side of an isolated network namespace and exposes the LUN as
# /dev/ublkb0; the guest runs mkfs.ext4, mounts, writes and checks a file and raw O_DIRECT
# patterns, stops the initiator with SIGTERM; the host then finds the guest's pattern in
# the target's file LUN.
#
# Opt-in, NOT part of scripts/test.sh: needs root (ip netns), qemu-system-x86, libclang-dev
# (libublk's bindgen) and the harness image with the backports kernel, built once:
#   VM_CACHE=$VM_DIR/cache/bp KERNEL_SUITE=bookworm-backports $VM_DIR/build-image.sh
# (done here when missing). Results: docs/nbd.md ("ublk").
#
# usage: scripts/vm-ublk.sh
# env:   VM_DIR (default: ../shared/tools/vm or /work/shared/tools/vm), VM_NETNS (vmublk),
#        ISCSI_BIN (host target binary; default: the static build below), MB (16)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=vm/find-harness.sh
. "$ROOT/scripts/vm/find-harness.sh"
NS=${VM_NETNS:-vmublk}
IQN=iqn.2024-01.rs.iscsi:vmublk
MB=${MB:-16}
CACHE=$VM_DIR/cache/bp
log() { echo "[vm-ublk] $*" >&2; }

if [[ ! -e $CACHE/vmlinuz ]]; then
  log "building the harness image with the backports kernel (ublk_drv) in $CACHE"
  VM_CACHE=$CACHE KERNEL_SUITE=bookworm-backports "$VM_DIR/build-image.sh" >&2
fi
TRIPLE=x86_64-unknown-linux-gnu
log "building a static iscsi with --features ublk"
(cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release --target $TRIPLE \
  -p cli --features ublk --bin iscsi)
GUEST_BIN=${CARGO_TARGET_DIR:-$ROOT/build}/$TRIPLE/release/iscsi
ISCSI_BIN=${ISCSI_BIN:-$GUEST_BIN}

WORK=$(mktemp -d /tmp/vmublk.XXXXXX)
TGT_PID= CREATED_NS=0
cleanup() {
  set +e
  [[ -n $TGT_PID ]] && { kill -TERM "$TGT_PID" 2>/dev/null; wait "$TGT_PID" 2>/dev/null; }
  ((CREATED_NS)) && "$VM_DIR/netns.sh" down "$NS" >/dev/null 2>&1
  rm -f "$WORK/disk.img"
}
trap cleanup EXIT
ip netns list | awk '{print $1}' | grep -qxF "$NS" || { "$VM_DIR/netns.sh" up "$NS" >&2; CREATED_NS=1; }

ip netns exec "$NS" "$ISCSI_BIN" target serve --portal 127.0.0.1:3260 --target "$IQN" \
  --lun "file:$WORK/disk.img,size=256M" --log info > "$WORK/target.log" 2>&1 &
TGT_PID=$!
for _ in $(seq 100); do ip netns exec "$NS" ss -Hltn 'sport = :3260' | grep -q . && break; sleep 0.1; done

t0=$(date +%s)
set +e
VM_CACHE=$CACHE "$VM_DIR/run-guest.sh" --netns "$NS" --timeout "${TIMEOUT:-300}" -q --log "$WORK/console.log" \
  --file "$GUEST_BIN:/vmtest/iscsi" --env PORTAL=10.0.2.100:3260 --env IQN="$IQN" --env MB="$MB" \
  --env EXPECT_BYTES=268435456 "$ROOT/scripts/vm/ublk.guest.sh"
rc=$?
set -e
kill -TERM "$TGT_PID" 2>/dev/null; wait "$TGT_PID" 2>/dev/null || true; TGT_PID=
grep -aE '^\[(step|check)\]|^--- |FATAL|ublk|error' "$WORK/console.log" | tr -d '\r' | sed 's/^/  [guest] /' >&2 || true
if ((rc == 0)); then
  line=$(grep -a -- '--- raw pattern sha256' "$WORK/console.log" | tail -1 | tr -d '\r')
  want=$(awk '{print $5}' <<< "$line")
  for off in $(awk '{for (i = 8; i <= NF; i++) print $i}' <<< "$line"); do
    got=$(dd if="$WORK/disk.img" bs=1M skip="$off" count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
    if [[ $got == "$want" ]]; then log "target's file: MiB $off holds the guest's pattern"
    else log "target's file: MiB $off DIFFERS"; rc=1; fi
  done
fi
log "$([[ $rc == 0 ]] && echo PASS || echo "FAIL (rc=$rc)") in $(( $(date +%s) - t0 )) s; logs in $WORK"
exit $rc
