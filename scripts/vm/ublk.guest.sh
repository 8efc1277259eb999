#!/bin/sh
# Guest side of scripts/vm-ublk.sh: OUR initiator runs INSIDE the guest (a static `iscsi`
# binary copied in), logs in to our target on the host (10.0.2.100:3260) and exposes the
# LUN as a ublk block device (/dev/ublkbN, kernel ublk_drv of the backports kernel);
# then mkfs.ext4, mount, a file written and checked after a remount, raw O_DIRECT
# patterns, and a clean stop (SIGTERM: the device goes away, the session logs out).
# env: IQN, PORTAL, MB (file size), EXPECT_BYTES
. /lib/vmtest/lib.sh
MB=${MB:-16}
fails=0
check() { what=$1; shift; if "$@"; then echo "[check] $what: ok"; else echo "[check] $what: FAILED"; fails=$((fails + 1)); fi; }

step modprobe modprobe ublk_drv || die "no ublk_drv module in this kernel"
[ -e /dev/ublk-control ] || die "/dev/ublk-control missing after modprobe"
/vmtest/iscsi login --foreground --portal "$PORTAL" --target "$IQN" --ublk --nbd 127.0.0.1:10809 \
  --log info > /tmp/login.log 2>&1 &
LPID=$!
i=0
while [ ! -b /dev/ublkb0 ] && [ $i -lt 300 ]; do
  kill -0 $LPID 2>/dev/null || { cat /tmp/login.log; die "iscsi login exited"; }
  sleep 0.1; i=$((i + 1))
done
[ -b /dev/ublkb0 ] || { cat /tmp/login.log; die "no /dev/ublkb0 after 30 s"; }
DEV=/dev/ublkb0
# A first read, bounded: a device that does not serve I/O shows here, with the log.
if ! timeout 60 dd if=$DEV of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; then
  echo "--- first read of $DEV failed or hung; initiator log:"; tail -n 30 /tmp/login.log; die "no I/O"
fi
BYTES=$(blockdev --getsize64 $DEV)
LBS=$(blockdev --getss $DEV)
echo "--- $DEV: $BYTES bytes, logical block $LBS"
[ -n "${EXPECT_BYTES:-}" ] && check "capacity $EXPECT_BYTES" [ "$BYTES" = "$EXPECT_BYTES" ]
step mkfs.ext4 mkfs.ext4 -q -F $DEV || die "mkfs failed"
mkdir -p /mnt/t
step mount mount -t ext4 $DEV /mnt/t || die "mount failed"
dd if=/dev/urandom of=/tmp/data bs=1M count="$MB" 2>/dev/null
SUM1=$(sha256sum /tmp/data | cut -d' ' -f1)
step "write-${MB}MiB+sync" sh -c "cp /tmp/data /mnt/t/data && sync" || die "write failed"
step umount umount /mnt/t
echo 3 > /proc/sys/vm/drop_caches
step remount mount -t ext4 $DEV /mnt/t || die "remount failed"
check "file sha256 after remount" [ "$SUM1" = "$(sha256sum /mnt/t/data | cut -d' ' -f1)" ]
step umount2 umount /mnt/t
dd if=/dev/urandom of=/tmp/pat bs=1M count=1 2>/dev/null
PSUM=$(sha256sum /tmp/pat | cut -d' ' -f1)
LAST=$(( BYTES / 1048576 - 1 ))
for off in 3 $LAST; do
  dd if=/tmp/pat of=$DEV bs=1M seek=$off count=1 oflag=direct 2>/dev/null || { echo "[check] O_DIRECT write at ${off}MiB: FAILED"; fails=$((fails + 1)); }
done
echo 3 > /proc/sys/vm/drop_caches
for off in 3 $LAST; do
  S=$(dd if=$DEV bs=1M skip=$off count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  check "O_DIRECT pattern at ${off}MiB" [ "$S" = "$PSUM" ]
done
echo "--- raw pattern sha256 $PSUM at MiB 3 $LAST"
step stop kill -TERM $LPID
i=0; while kill -0 $LPID 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
check "initiator exited after SIGTERM" sh -c "! kill -0 $LPID 2>/dev/null"
check "ublk device removed" [ ! -b $DEV ]
echo "--- initiator log (tail):"; tail -n 15 /tmp/login.log
[ $fails = 0 ] || die "$fails check(s) failed"
echo "--- PASS ublk"
