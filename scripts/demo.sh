#!/usr/bin/env bash
# The main job, end to end on loopback: build, serve a target with a memory
# LUN, discover it with our initiator, query it, write a pattern through the
# initiator, read it back and compare, then stop the target.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p cli
BIN=build/release/iscsi
TMP=$(mktemp -d)
trap 'kill $TGT 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"' EXIT

IQN=iqn.2024-01.rs.iscsi:demo
$BIN target serve --portal 127.0.0.1:0 --target $IQN --lun mem:64M >"$TMP/serve.out" 2>"$TMP/serve.err" &
TGT=$!
for _ in $(seq 50); do grep -q "listening on" "$TMP/serve.out" 2>/dev/null && break; sleep 0.1; done
PORTAL=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$TMP/serve.out" | head -1)
[ -n "$PORTAL" ] || { echo "target did not start:"; cat "$TMP/serve.err"; exit 1; }
echo "== target $IQN serving on $PORTAL"

echo "== iscsi discover --portal $PORTAL"
$BIN discover --portal "$PORTAL"
echo "== iscsi scsi inquiry"
$BIN scsi --portal "$PORTAL" --target $IQN --lun 0 inquiry
echo "== iscsi scsi readcap"
$BIN scsi --portal "$PORTAL" --target $IQN --lun 0 readcap

echo "== write 1 MiB at LBA 2048 and read it back"
head -c 1048576 /dev/urandom >"$TMP/pattern"
# WRITE(10) LBA 2048, 2048 blocks of 512 bytes
$BIN scsi --portal "$PORTAL" --target $IQN --lun 0 raw 2a 00 00 00 08 00 00 08 00 00 --write-file "$TMP/pattern" >/dev/null
# READ(10) the same range
$BIN scsi --portal "$PORTAL" --target $IQN --lun 0 raw 28 00 00 00 08 00 00 08 00 00 --read 1048576 --output "$TMP/readback" >/dev/null
cmp "$TMP/pattern" "$TMP/readback" && echo "data verified: 1 MiB round trip OK"
