# Guest side of scripts/vm-kernel-initiator.sh (runs as /vmtest/test.sh, busybox sh, in the
# vmtest guest of ../shared/tools/vm). The Linux kernel iSCSI initiator (open-iscsi +
# iscsi_tcp) against our target: discovery, optional CHAP / mutual CHAP, optional node
# settings (digests, InitialR2T, burst sizes ...), login, checks of what the kernel's sd
# driver saw (block size, capacity, VPD, discard), mkfs.ext4 + fsck, file write/read with
# sha256, raw O_DIRECT pattern write/read at a few offsets, discard, logout, re-login and
# data persistence, final logout.
#
# Env (run-guest.sh --env):
#   PORTAL            10.0.2.100:3260
#   IQN               target name (empty: first discovered)
#   MB                MiB for file and dd tests (16)
#   CHAP_USER/CHAP_SECRET          one-way CHAP (initiator authenticates to the target)
#   CHAP_USER_IN/CHAP_SECRET_IN    mutual CHAP (target authenticates to the initiator)
#   DISC_CHAP=1       also use the CHAP settings for SendTargets discovery
#   EXPECT_LOGIN_FAIL=1  the login must FAIL (wrong secret): PASS when it does
#   EXPECT_BLOCK      expected logical block size (512 / 4096)
#   EXPECT_BYTES      expected capacity in bytes
#   EXPECT_DISKS      number of disks expected in the session (1)
#   ISCSI_OPTS        "name=value;name=value" node settings applied before login, e.g.
#                     "node.conn[0].iscsi.HeaderDigest=CRC32C;node.session.iscsi.InitialR2T=Yes"
#   RELOGIN=0         skip the logout / login / persistence round
. /lib/vmtest/lib.sh
PORTAL=${PORTAL:-10.0.2.100:3260}
MB=${MB:-16}
EXPECT_DISKS=${EXPECT_DISKS:-1}
RELOGIN=${RELOGIN:-1}
T0=$(now_ms)
fails=0
check() { # check DESCRIPTION COND...
  _d=$1; shift
  if "$@"; then echo "[check] $_d: ok"; else echo "[check] $_d: FAILED"; fails=$((fails + 1)); fi
}

step iscsid-start iscsi_start || die "iscsid did not start"

# Discovery (optionally with CHAP).
if [ "${DISC_CHAP:-0}" = 1 ] && [ -n "$CHAP_USER" ]; then
  iscsiadm -m discoverydb -t st -p "$PORTAL" -o new >/dev/null || die "discoverydb new"
  iscsiadm -m discoverydb -t st -p "$PORTAL" -o update -n discovery.sendtargets.auth.authmethod -v CHAP
  iscsiadm -m discoverydb -t st -p "$PORTAL" -o update -n discovery.sendtargets.auth.username -v "$CHAP_USER"
  iscsiadm -m discoverydb -t st -p "$PORTAL" -o update -n discovery.sendtargets.auth.password -v "$CHAP_SECRET"
  if [ -n "$CHAP_USER_IN" ]; then
    iscsiadm -m discoverydb -t st -p "$PORTAL" -o update -n discovery.sendtargets.auth.username_in -v "$CHAP_USER_IN"
    iscsiadm -m discoverydb -t st -p "$PORTAL" -o update -n discovery.sendtargets.auth.password_in -v "$CHAP_SECRET_IN"
  fi
  DISC_CMD="iscsiadm -m discoverydb -t st -p $PORTAL --discover"
else
  DISC_CMD="iscsiadm -m discovery -t st -p $PORTAL"
fi
echo "--- discovery (sendtargets) at $PORTAL"
if ! step discovery sh -c "$DISC_CMD > /tmp/disc"; then
  if [ "${EXPECT_LOGIN_FAIL:-0}" = 1 ] && [ "${DISC_CHAP:-0}" = 1 ]; then
    echo "--- discovery refused as expected"
    echo "--- PASS kernel-interop (expected failure): total $(( $(now_ms) - T0 )) ms in guest"
    exit 0
  fi
  # A target may leave out of SendTargets what this initiator may not log in to
  # (iscsiadm: "No portals found", rc 21). Only acceptable when the login must fail.
  [ "${EXPECT_LOGIN_FAIL:-0}" = 1 ] && [ -n "$IQN" ] || die "discovery failed"
  echo "--- discovery returned nothing (target hidden from this initiator); trying the login anyway"
  : > /tmp/disc
fi
cat /tmp/disc
[ -n "$IQN" ] || IQN=$(awk 'NR == 1 { print $2 }' /tmp/disc)
[ -n "$IQN" ] || die "no target discovered"
if [ -s /tmp/disc ] || [ "${EXPECT_LOGIN_FAIL:-0}" != 1 ]; then
  grep -q " $IQN\$" /tmp/disc || die "target $IQN not in the SendTargets answer"
fi

# Node record for the reachable portal (the target reports 127.0.0.1 in its namespace).
iscsiadm -m node -o delete >/dev/null 2>&1
iscsiadm -m node -o new -T "$IQN" -p "$PORTAL" >/dev/null || die "node -o new failed"
node_set() { iscsiadm -m node -T "$IQN" -p "$PORTAL" -o update -n "$1" -v "$2" || die "node setting $1=$2"; }
if [ -n "$CHAP_USER" ]; then
  node_set node.session.auth.authmethod CHAP
  node_set node.session.auth.username "$CHAP_USER"
  node_set node.session.auth.password "$CHAP_SECRET"
  if [ -n "$CHAP_USER_IN" ]; then
    node_set node.session.auth.username_in "$CHAP_USER_IN"
    node_set node.session.auth.password_in "$CHAP_SECRET_IN"
  fi
fi
if [ -n "$ISCSI_OPTS" ]; then
  echo "$ISCSI_OPTS" | tr ';' '\n' | while IFS= read -r kv; do
    [ -n "$kv" ] || continue
    echo "--- node setting ${kv%%=*} = ${kv#*=}"
    node_set "${kv%%=*}" "${kv#*=}"
  done
fi

if [ "${EXPECT_LOGIN_FAIL:-0}" = 1 ]; then
  # Do not let iscsiadm retry for long: one attempt is enough.
  node_set node.session.initial_login_retry_max 1
  if step login-must-fail iscsiadm -m node -T "$IQN" -p "$PORTAL" --login; then
    die "login succeeded although it should have been refused"
  fi
  iscsiadm -m session >/dev/null 2>&1 && die "a session exists after a refused login"
  echo "--- PASS kernel-interop (expected failure): total $(( $(now_ms) - T0 )) ms in guest"
  exit 0
fi

step login iscsiadm -m node -T "$IQN" -p "$PORTAL" --login || die "login failed"
DEV=$(iscsi_disk) || die "no disk appeared after login"
step disk-appeared true
sleep 0.3   # let all LUNs of the REPORT LUNS scan settle
NDISKS=$(iscsiadm -m session -P3 | grep -c 'Attached scsi disk')
check "disks in session = $EXPECT_DISKS (got $NDISKS)" [ "$NDISKS" = "$EXPECT_DISKS" ]
echo "--- session (negotiated parameters)"
iscsiadm -m session -P2 | grep -E 'Target:|Current Portal|Session State|HeaderDigest|DataDigest|MaxRecvDataSegmentLength|MaxXmitDataSegmentLength|FirstBurstLength|MaxBurstLength|ImmediateData|InitialR2T|MaxOutstandingR2T|CHAP|username' | sed 's/^[[:space:]]*/  /; s/password.*/password: <hidden>/'

# What the sd driver made of the LUN.
B=${DEV#/dev/}
Q=/sys/class/block/$B/queue
SD=/sys/class/block/$B/device
LBS=$(cat $Q/logical_block_size)
PBS=$(cat $Q/physical_block_size)
BYTES=$(blockdev --getsize64 "$DEV")
echo "--- $DEV: $BYTES bytes, logical block $LBS, physical block $PBS"
echo "    vendor '$(cat $SD/vendor)' model '$(cat $SD/model)' rev '$(cat $SD/rev)' wwid '$(cat $SD/wwid 2>/dev/null)'"
echo "    write_cache '$(cat /sys/class/scsi_disk/*/cache_type 2>/dev/null | head -n1)' fua $(cat $Q/fua 2>/dev/null)" \
     "rotational $(cat $Q/rotational) max_sectors_kb $(cat $Q/max_sectors_kb) max_hw_sectors_kb $(cat $Q/max_hw_sectors_kb)"
echo "    min_io $(cat $Q/minimum_io_size) opt_io $(cat $Q/optimal_io_size) discard_max_bytes $(cat $Q/discard_max_bytes)" \
     "discard_granularity $(cat $Q/discard_granularity) write_same_max $(cat $Q/write_same_max_bytes)" \
     "write_zeroes_max $(cat $Q/write_zeroes_max_bytes) provisioning '$(cat /sys/class/scsi_disk/*/provisioning_mode 2>/dev/null | head -n1)'"
for p in 80 83 b0 b1 b2; do
  [ -e $SD/vpd_pg$p ] && echo "    vpd_pg$p: $(od -An -tx1 -v $SD/vpd_pg$p | tr -s ' \n' ' ' | cut -c1-120)"
done
[ -n "$EXPECT_BLOCK" ] && check "logical block size $EXPECT_BLOCK (got $LBS)" [ "$LBS" = "$EXPECT_BLOCK" ]
[ -n "$EXPECT_BYTES" ] && check "capacity $EXPECT_BYTES bytes (got $BYTES)" [ "$BYTES" = "$EXPECT_BYTES" ]
# (sysfs reports size 0 for these binary attributes: test the content, not -s)
check "vpd page 0x83 read by the kernel" [ -n "$(od -An -tx1 $SD/vpd_pg83 2>/dev/null | head -c 8)" ]

# Filesystem round trip.
step mkfs.ext4 mkfs.ext4 -q -F "$DEV" || die "mkfs failed"
mkdir -p /mnt/t
step mount mount -t ext4 "$DEV" /mnt/t || die "mount failed"
dd if=/dev/urandom of=/tmp/data bs=1M count="$MB" 2>/dev/null
SUM1=$(sha256sum /tmp/data | cut -d' ' -f1)
step "write-${MB}MiB+sync" sh -c 'cp /tmp/data /mnt/t/data && sync' || die "write failed"
step umount umount /mnt/t || die "umount failed"
echo 3 > /proc/sys/vm/drop_caches
step fsck e2fsck -fn "$DEV" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; die "fsck found errors"; }
step remount mount -t ext4 "$DEV" /mnt/t || die "remount failed"
step "read-${MB}MiB" sh -c 'sha256sum /mnt/t/data > /tmp/sum2' || die "read failed"
check "file sha256 after remount" [ "$SUM1" = "$(cut -d' ' -f1 /tmp/sum2)" ]
if [ "$(cat $Q/discard_max_bytes)" != 0 ]; then
  step fstrim fstrim -v /mnt/t || { echo "[check] fstrim: FAILED"; fails=$((fails + 1)); }
fi
step umount2 umount /mnt/t

# Raw O_DIRECT: a 1 MiB random pattern at the start, the middle and the last MiB of the
# disk, read back with O_DIRECT after dropping caches.
dd if=/dev/urandom of=/tmp/pat bs=1M count=1 2>/dev/null
PSUM=$(sha256sum /tmp/pat | cut -d' ' -f1)
LAST=$(( BYTES / 1048576 - 1 ))
for off in 0 $((LAST / 2)) $LAST; do
  dd if=/tmp/pat of="$DEV" bs=1M seek=$off count=1 oflag=direct 2>/dev/null || { echo "[check] write at ${off}MiB: FAILED"; fails=$((fails + 1)); }
done
echo 3 > /proc/sys/vm/drop_caches
for off in 0 $((LAST / 2)) $LAST; do
  S=$(dd if="$DEV" bs=1M skip=$off count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  check "O_DIRECT pattern at ${off}MiB" [ "$S" = "$PSUM" ]
done
# For host-side checks of the backing store (the rbd scenario compares `rbd export`).
echo "--- raw pattern sha256 $PSUM at MiB $((LAST / 2)) $LAST"  # MiB 0 later gets the LBA 7 write
# An unaligned-size odd request: 3 logical blocks at an odd LBA (exercises small transfers).
dd if=/dev/urandom of=/tmp/small bs="$LBS" count=3 2>/dev/null
dd if=/tmp/small of="$DEV" bs="$LBS" seek=7 count=3 oflag=direct 2>/dev/null
S=$(dd if="$DEV" bs="$LBS" skip=7 count=3 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
check "3-block O_DIRECT write/read at LBA 7" [ "$S" = "$(sha256sum /tmp/small | cut -d' ' -f1)" ]
dd_rate "write-direct-1M" "$MB" if=/dev/zero of="$DEV" bs=1M seek=1 count="$MB" oflag=direct
dd_rate "read-direct-1M" "$MB" if="$DEV" of=/dev/null bs=1M skip=1 count="$MB" iflag=direct
if [ "$(cat $Q/discard_max_bytes)" != 0 ]; then
  step blkdiscard-1M blkdiscard -o $((2 * 1048576)) -l 1048576 "$DEV" || { echo "[check] blkdiscard: FAILED"; fails=$((fails + 1)); }
fi
SAVE=$(dd if="$DEV" bs=1M skip=$LAST count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)

step logout iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout || die "logout failed"
i=0; while [ -b "$DEV" ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
[ -b "$DEV" ] && die "$DEV still present after logout"

if [ "$RELOGIN" = 1 ]; then
  step relogin iscsiadm -m node -T "$IQN" -p "$PORTAL" --login || die "re-login failed"
  DEV=$(iscsi_disk) || die "no disk after re-login"
  S=$(dd if="$DEV" bs=1M skip=$LAST count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  check "data persists across sessions" [ "$S" = "$SAVE" ]
  check "data persists = written pattern" [ "$S" = "$PSUM" ]
  step logout2 iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout || die "second logout failed"
fi
dmesg | grep -aiE 'iscsi|connection[0-9]|sd [0-9]' | grep -aiE 'error|fail|reset|abort|timed out|detected conn' | head -20 > /tmp/kerr
if [ -s /tmp/kerr ]; then echo "--- kernel messages worth a look:"; cat /tmp/kerr; fi
[ $fails = 0 ] || die "$fails check(s) failed"
echo "--- PASS kernel-interop: total $(( $(now_ms) - T0 )) ms in guest"
