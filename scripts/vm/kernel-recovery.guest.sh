# Guest side of the recovery scenarios of scripts/vm-kernel-initiator.sh (busybox sh).
# The kernel initiator must survive a broken connection / a restarted target without
# losing data: log in, write a pattern, ask the host (through the 9p share /mnt/host)
# to perform ACTION while a write is in flight, then wait for the kernel to recover
# (open-iscsi logs in again), check the in-flight write completed and both patterns
# read back intact, log out.
#
# Env: PORTAL (10.0.2.100:3260)  IQN  ACTION (conn-drop | target-restart)
#      ROUNDS (1: how many times ACTION is requested)  REPLACEMENT_TIMEOUT (60 s)
. /lib/vmtest/lib.sh
PORTAL=${PORTAL:-10.0.2.100:3260}
ACTION=${ACTION:-conn-drop}
ROUNDS=${ROUNDS:-1}
T0=$(now_ms)
[ -d /mnt/host ] || die "no 9p share at /mnt/host (run-guest.sh --share)"

step iscsid-start iscsi_start || die "iscsid did not start"
step discovery sh -c "iscsiadm -m discovery -t st -p $PORTAL > /tmp/disc" || die "discovery failed"
[ -n "$IQN" ] || IQN=$(awk 'NR == 1 { print $2 }' /tmp/disc)
iscsiadm -m node -o delete >/dev/null 2>&1
iscsiadm -m node -o new -T "$IQN" -p "$PORTAL" >/dev/null || die "node -o new failed"
# How long the kernel queues I/O while it tries to log in again before failing it.
iscsiadm -m node -T "$IQN" -p "$PORTAL" -o update -n node.session.timeo.replacement_timeout \
  -v "${REPLACEMENT_TIMEOUT:-60}" || die "node setting"
step login iscsiadm -m node -T "$IQN" -p "$PORTAL" --login || die "login failed"
DEV=$(iscsi_disk) || die "no disk appeared after login"
echo "--- attached disk: $DEV"

dd if=/dev/urandom of=/tmp/p1 bs=1M count=4 2>/dev/null
dd if=/dev/urandom of=/tmp/p2 bs=1M count=16 2>/dev/null
S1=$(sha256sum /tmp/p1 | cut -d' ' -f1)
S2=$(sha256sum /tmp/p2 | cut -d' ' -f1)
dd if=/tmp/p1 of="$DEV" bs=1M count=4 oflag=direct 2>/dev/null || die "first write failed"

# ask_host ACTION N: request ACTION from the host and wait for its acknowledgement
ask_host() {
  rm -f /mnt/host/done
  echo "$1" > /mnt/host/req.tmp && mv /mnt/host/req.tmp /mnt/host/req
  echo "--- asked host: $1 (round $2)"
  _i=0
  while [ ! -e /mnt/host/done ]; do
    _i=$((_i + 1)); [ $_i -gt 600 ] && return 1
    sleep 0.1
  done
  echo "--- host did: $(cat /mnt/host/done)"
}

fails=0
r=1
while [ $r -le "$ROUNDS" ]; do
  # An O_DIRECT write of 16 MiB (in 256 KiB requests) in flight while the host acts.
  ( dd if=/tmp/p2 of="$DEV" bs=256k seek=64 count=64 oflag=direct 2>/tmp/dd2.err; echo $? > /tmp/dd2.rc ) &
  DDPID=$!
  sleep 0.3
  TA=$(now_ms)
  ask_host "$ACTION" $r || die "host did not acknowledge $ACTION"
  # Wait for the in-flight write: the kernel must requeue it after re-login.
  wait $DDPID
  TB=$(now_ms)
  rc=$(cat /tmp/dd2.rc)
  if [ "$rc" = 0 ]; then echo "[check] round $r: in-flight write completed after $ACTION ($((TB - TA)) ms): ok"
  else echo "[check] round $r: in-flight write FAILED (dd rc=$rc): FAILED"; cat /tmp/dd2.err; fails=$((fails + 1)); fi
  st=$(iscsiadm -m session -P1 | awk -F': ' '/iSCSI Session State/ { print $2; exit }')
  echo "--- session state after round $r: $st"
  echo 3 > /proc/sys/vm/drop_caches
  A=$(dd if="$DEV" bs=1M count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  B=$(dd if="$DEV" bs=1M skip=16 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ "$A" = "$S1" ]; then echo "[check] round $r: pattern 1 intact: ok"; else echo "[check] round $r: pattern 1: FAILED"; fails=$((fails + 1)); fi
  if [ "$B" = "$S2" ]; then echo "[check] round $r: pattern 2 (written across $ACTION) intact: ok"; else echo "[check] round $r: pattern 2: FAILED"; fails=$((fails + 1)); fi
  r=$((r + 1))
done
echo "--- kernel log of the recovery:"
dmesg | grep -aE 'connection[0-9]|session[0-9]|sd [0-9:]+: \[sd|I/O error|reset|abort' | head -30
step logout iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout || die "logout failed"
echo "done" > /mnt/host/finished
[ $fails = 0 ] || die "$fails check(s) failed"
echo "--- PASS kernel-recovery: total $(( $(now_ms) - T0 )) ms in guest"
