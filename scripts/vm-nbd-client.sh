#!/usr/bin/env bash
# The Linux KERNEL NBD client (nbd.ko + nbd-client, in a QEMU guest) against OUR NBD export:
# our target serves a LUN, `iscsi login --foreground --nbd` logs in to it with our
# initiator and exports it, and the guest attaches the export with nbd-client, runs
# mkfs.ext4, mounts, writes a file, remounts and checks its sha256, then raw O_DIRECT dd
# (the harness's tests/nbd-basic.guest.sh, EXTERNAL_SERVER=1). Everything runs on the
# loopback of an isolated network namespace.
#
# Opt-in, NOT part of scripts/test.sh: needs root (ip netns), qemu-system-x86 (on a host
# whose qemu-utils come from bookworm-backports, install it from there too:
# `apt-get install -t bookworm-backports --no-install-recommends qemu-system-x86`) and
# ~15-60 s under TCG. Results: docs/interop/kernel-nbd-client.md.
#
# usage: scripts/vm-nbd-client.sh
# env:   VM_DIR    harness directory (default: ../shared/tools/vm next to the repo, or
#                  /work/shared/tools/vm)
#        VM_NETNS  namespace (default: vmnbd; created and deleted here)
#        ISCSI_BIN our binary (default: build it: cargo build --release -p cli)
#        LUN       LUN spec (default: mem:256M)   CONNECTIONS (default: 2)   MB (default: 32)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=vm/find-harness.sh
. "$ROOT/scripts/vm/find-harness.sh"
NS=${VM_NETNS:-vmnbd}
IQN=iqn.2024-01.rs.iscsi:vmnbd
LUN=${LUN:-mem:256M}
CONNECTIONS=${CONNECTIONS:-2}
MB=${MB:-32}
log() { echo "[vm-nbd-client] $*" >&2; }

if [[ -z ${ISCSI_BIN:-} ]]; then
  log "building: cargo build --release -p cli"
  (cd "$ROOT" && cargo build --release -p cli)
  ISCSI_BIN=${CARGO_TARGET_DIR:-$ROOT/build}/release/iscsi
fi
[[ -x $ISCSI_BIN ]] || { log "no binary at $ISCSI_BIN"; exit 2; }

WORK=$(mktemp -d /tmp/vmnbd.XXXXXX)
PIDS=()
cleanup() {
  # Newest first: the initiator logs out before its target stops.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    kill -INT "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null && log "pid $p did not stop on SIGINT within 10 s"
  done
  "$VM_DIR/netns.sh" down "$NS" || true
  log "logs in $WORK"
}
trap cleanup EXIT

"$VM_DIR/netns.sh" up "$NS"
ip netns exec "$NS" "$ISCSI_BIN" target serve --portal 127.0.0.1:3260 \
  --target "$IQN" --lun "$LUN" --admin-socket "$WORK/admin.sock" > "$WORK/target.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'listening on' "$WORK/target.log" && break; sleep 0.1; done
grep -q 'listening on' "$WORK/target.log" || { log "target did not start"; cat "$WORK/target.log"; exit 1; }

ip netns exec "$NS" "$ISCSI_BIN" login --foreground --portal 127.0.0.1:3260 \
  --target "$IQN" --nbd 127.0.0.1:10809 --connections "$CONNECTIONS" --json \
  > "$WORK/login.out" 2> "$WORK/login.log" &
PIDS+=($!)
for _ in $(seq 200); do [[ -s $WORK/login.out ]] && break; sleep 0.1; done
[[ -s $WORK/login.out ]] || { log "login did not export"; cat "$WORK/login.log"; exit 1; }
log "exports: $(cat "$WORK/login.out")"

set +e
EXTERNAL_SERVER=1 NBD_EXPORT=lun0 VM_NETNS="$NS" MB="$MB" "$VM_DIR/tests/nbd-basic.sh" 2>&1 | tee "$WORK/guest.txt"
rc=${PIPESTATUS[0]}
set -e
grep -E -- '--- (sha256|checksum|PASS)|step|MB/s' "$WORK/guest.txt" | tail -20 || true
log "result: $([[ $rc == 0 ]] && echo PASS || echo "FAIL (rc=$rc)")"
exit "$rc"
