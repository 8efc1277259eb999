# Guest side of the "control" scenario of scripts/vm-kernel-initiator.sh (runs as
# /vmtest/test.sh, busybox sh, in the vmtest guest of ../shared/tools/vm): the Linux
# kernel initiator logs in to our target (served with --control) and sends the
# control channel's commands with sg_raw (sg3_utils, copied in from the host), exactly
# as docs/control-channel.md shows them: VPD page C7h, vendor command C7h LIST / GET /
# SET, a WRITE(10) carrying tag 6. The host checks the target's counters afterwards.
#
# Env (run-guest.sh --env): PORTAL (10.0.2.100:3260), IQN (empty: first discovered).
. /lib/vmtest/lib.sh
PORTAL=${PORTAL:-10.0.2.100:3260}
T0=$(now_ms)
fails=0
check() { # check DESCRIPTION COND...
  _d=$1; shift
  if "$@"; then echo "[check] $_d: ok"; else echo "[check] $_d: FAILED"; fails=$((fails + 1)); fi
}
has() { grep -q "$2" "$1"; }   # has FILE PATTERN (binary files too)

# libsgutils2 comes in /vmtest/ next to this script (not in the loader's default path).
export LD_LIBRARY_PATH=/vmtest
command -v sg_raw >/dev/null || die "sg_raw missing in the guest (the host passes it with --file)"
step iscsid-start iscsi_start || die "iscsid did not start"
iscsiadm -m discovery -t st -p "$PORTAL" > /tmp/disc || die "discovery failed"
[ -n "$IQN" ] || IQN=$(awk 'NR == 1 { print $2 }' /tmp/disc)
iscsiadm -m node -o delete >/dev/null 2>&1
iscsiadm -m node -o new -T "$IQN" -p "$PORTAL" >/dev/null || die "node -o new failed"
step login iscsiadm -m node -T "$IQN" -p "$PORTAL" --login || die "login failed"
DEV=$(iscsi_disk) || die "no disk appeared after login"
echo "--- $DEV"

# VPD page C7h (raw INQUIRY EVPD=1, page C7h, allocation length 255).
step vpd-c7 sg_raw -o /tmp/vpd.bin -r 255 "$DEV" 12 01 C7 00 FF 00 || fails=$((fails + 1))
check "VPD page C7h lists tag6.policy" has /tmp/vpd.bin tag6.policy

# LIST (allocation length 4096).
step list sg_raw -o /tmp/list.bin -r 4096 "$DEV" C7 00 01 00 00 00 00 00 00 00 00 00 00 00 10 00 \
  || fails=$((fails + 1))
check "LIST has io_mode" has /tmp/list.bin io_mode
check "LIST has tag7.policy" has /tmp/list.bin tag7.policy
echo "--- LIST answer (hex)"
od -A d -t x1 /tmp/list.bin | head -8

# SET io_mode=ro, then a write fails and GET says ro.
# (the Data-Out comes from stdin, as in docs/control-channel.md)
step set-ro sh -c "printf ro | sg_raw -s 2 $DEV C7 02 01 69 6f 5f 6d 6f 64 65 00 00 00 00 00 02" \
  || fails=$((fails + 1))
sg_raw -o /tmp/get.bin -r 512 "$DEV" C7 01 01 69 6f 5f 6d 6f 64 65 00 00 00 00 02 00
check "GET io_mode says ro" has /tmp/get.bin io_modero
if dd if=/dev/zero of="$DEV" bs=4096 count=1 oflag=direct 2>/tmp/dd.err; then
  echo "[check] write after io_mode=ro: FAILED (the write succeeded)"; fails=$((fails + 1))
else
  echo "[check] write after io_mode=ro fails: ok ($(head -1 /tmp/dd.err))"
fi
printf wb > /tmp/wb
step set-wb sg_raw -i /tmp/wb -s 2 "$DEV" C7 02 01 69 6f 5f 6d 6f 64 65 00 00 00 00 00 02 \
  || fails=$((fails + 1))
step write-after-wb dd if=/dev/zero of="$DEV" bs=4096 count=1 oflag=direct || fails=$((fails + 1))

# SET tag6.policy=fua, then a WRITE(10) with tag 6 (byte 6 = C0h): LBA 8, one block.
printf fua > /tmp/fua
step set-fua sg_raw -i /tmp/fua -s 3 "$DEV" C7 02 01 74 61 67 36 2e 70 6f 6c 69 63 79 00 03 \
  || fails=$((fails + 1))
dd if=/dev/zero bs=512 count=1 2>/dev/null | tr '\000' 'T' > /tmp/blk
step tagged-write10 sh -c "sg_raw -s 512 $DEV 2A 00 00 00 00 08 C0 00 01 00 < /tmp/blk" || fails=$((fails + 1))
dd if="$DEV" bs=512 skip=8 count=1 iflag=direct 2>/dev/null > /tmp/back
check "tagged write landed" cmp -s /tmp/blk /tmp/back

iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout >/dev/null 2>&1
if [ $fails -eq 0 ]; then
  echo "--- PASS control-channel: total $(( $(now_ms) - T0 )) ms in guest"
  exit 0
fi
echo "--- FAIL control-channel: $fails check(s) failed"
exit 1
