#!/bin/bash
# A single-host Ceph cluster for the RBD backend's tests, benchmark and the
# README's walk-through (based on the team's ../shared/tools/ceph-mini, kept
# here so that CI, which has only this repository, can run it).
#
# usage: scripts/ceph-mini.sh start   # ~15-30 s; prints `export CEPH_CONF=...`
#        scripts/ceph-mini.sh stop [--keep]
#        scripts/ceph-mini.sh conf    # prints the ceph.conf path
#        scripts/ceph-mini.sh restart-osd  # SIGKILL the OSD (a crash), start it again,
#                                          # wait until it is up (bluestore keeps data;
#                                          # memstore loses it)
#
# 1 mon (a), 1 mgr (x), 1 OSD (memstore by default: RAM, fastest; a fully
# written 1 GiB image costs ~3 GB of OSD memory, so keep test images small),
# pool "rbd" (size 1), image "rbd/test" (IMAGE_SIZE), all on 127.0.0.1.
# Nothing system-wide is used: data, keyrings, sockets and logs live under
# $CEPH_MINI_DIR. `stop` kills only the PIDs `start` recorded (and only while
# their command line still names our ceph.conf), then removes the directory.
# Needs Debian's ceph-mon ceph-mgr ceph-osd ceph-common (Ceph 16.2 Pacific).
#
# Env: CEPH_MINI_DIR (default: $TMPDIR/iscsi-rs-ceph-mini), OSD_STORE=memstore|bluestore,
#      MON_PORT_V2 (3300), MON_PORT_V1 (6789), IMAGE_SIZE (1G; empty = no image),
#      WAIT_HEALTH (1; 0: return once the PGs are active+clean, without
#      waiting for HEALTH_OK, which tests do not need)
set -euo pipefail
BASE=${CEPH_MINI_DIR:-${TMPDIR:-/tmp}/iscsi-rs-ceph-mini}
STORE=${OSD_STORE:-memstore}
V2=${MON_PORT_V2:-3300}
V1=${MON_PORT_V1:-6789}
IMAGE_SIZE=${IMAGE_SIZE-1G}
CLUSTER=ceph
CONF=$BASE/ceph.conf

alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${s#Z}" = "$s" ]; }  # zombie = gone
do_stop() {
if [ -f "$BASE/pids" ]; then
  while read -r name pid; do
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$CONF" || continue
    echo "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || continue
    for i in $(seq 150); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then echo "$name (pid $pid) still alive after 15s, SIGKILL"; kill -KILL "$pid"; fi
  done < <(tac "$BASE/pids")
  rm -f "$BASE/pids"
fi
[ "${1:-}" = "--keep" ] || rm -rf "$BASE"
}

do_start() {
T0=$EPOCHREALTIME
ts() { awk -v a="$T0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN{printf "[%6.2fs] %s\n", b-a, m}'; }
trap 'echo "ceph-mini.sh: failed at line $LINENO: $BASH_COMMAND (see $BASE/log/)" >&2' ERR
C() { ceph --cluster $CLUSTER -c "$CONF" --connect-timeout 10 "$@"; }
for t in ceph-mon ceph-mgr ceph-osd ceph rbd ceph-authtool monmaptool uuidgen; do
  command -v $t >/dev/null || { echo "ceph-mini.sh: $t not found (apt-get install ceph-mon ceph-mgr ceph-osd ceph-common)" >&2; exit 3; }
done

# --- 0. clean up any previous run (stops only the PIDs recorded in $BASE/pids) ---
do_stop >/dev/null 2>&1 || true
rm -rf "$BASE"
mkdir -p "$BASE"/{run,log,crash,mon/$CLUSTER-a,mgr/$CLUSTER-x,osd}
FSID=$(uuidgen)

# --- 1. config ---
cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon initial members = a
mon host = [v2:127.0.0.1:$V2,v1:127.0.0.1:$V1]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
osd pool default pg num = 16
osd pool default pgp num = 16
mon data avail warn = 2
mon data avail crit = 1
run dir = $BASE/run
crash dir = $BASE/crash
mgr initial modules = iostat
[client]
keyring = $BASE/$CLUSTER.client.admin.keyring
admin socket = \$run_dir/\$cluster-\$name.\$pid.asok
[mon]
mon data = $BASE/mon/\$cluster-\$id
keyring = \$mon_data/keyring
log file = $BASE/log/\$cluster-\$name.log
mon cluster log file = $BASE/log/\$cluster.\$channel.log
[mgr]
mgr data = $BASE/mgr/\$cluster-\$id
keyring = \$mgr_data/keyring
log file = $BASE/log/\$cluster-\$name.log
[osd]
osd data = $BASE/osd/\$cluster-\$id
keyring = \$osd_data/keyring
log file = $BASE/log/\$cluster-\$name.log
osd objectstore = $STORE
memstore device bytes = 4G
bluestore block path = $BASE/osd/\$cluster-\$id.block
bluestore block create = true
bluestore block size = 10G
EOF
ts "config written (fsid $FSID, objectstore $STORE)"

# --- 2. keyrings + monmap + mon ---
ceph-authtool --create-keyring "$BASE/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$BASE/$CLUSTER.client.admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$BASE/mon.keyring" --import-keyring "$BASE/$CLUSTER.client.admin.keyring" >/dev/null
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$V2,v1:127.0.0.1:$V1]" "$BASE/monmap" >/dev/null
ceph-mon --cluster $CLUSTER -c "$CONF" -i a --mkfs --monmap "$BASE/monmap" --keyring "$BASE/mon.keyring"
setsid ceph-mon --cluster $CLUSTER -c "$CONF" -i a -f </dev/null >>"$BASE/log/mon.a.out" 2>&1 &
echo "mon.a $!" >> "$BASE/pids"
for i in $(seq 60); do C mon stat >/dev/null 2>&1 && break; sleep 0.5; done
C mon stat >/dev/null
ts "mon.a up"

# --- 3. mgr ---
C auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
  -o "$BASE/mgr/$CLUSTER-x/keyring"
setsid ceph-mgr --cluster $CLUSTER -c "$CONF" -i x -f </dev/null >>"$BASE/log/mgr.x.out" 2>&1 &
echo "mgr.x $!" >> "$BASE/pids"
ts "mgr.x started"

# --- 4. one OSD (no block device needed: memstore in RAM, or bluestore on a sparse file) ---
OSD_UUID=$(uuidgen)
OSD_SECRET=$(ceph-authtool --gen-print-key)
ID=$(echo "{\"cephx_secret\": \"$OSD_SECRET\"}" | C osd new "$OSD_UUID" -i -)
mkdir -p "$BASE/osd/$CLUSTER-$ID"
ceph-authtool --create-keyring "$BASE/osd/$CLUSTER-$ID/keyring" --name "osd.$ID" --add-key "$OSD_SECRET" >/dev/null
ceph-osd --cluster $CLUSTER -c "$CONF" -i "$ID" --mkfs --osd-uuid "$OSD_UUID" >>"$BASE/log/osd.$ID.out" 2>&1
setsid ceph-osd --cluster $CLUSTER -c "$CONF" -i "$ID" -f </dev/null >>"$BASE/log/osd.$ID.out" 2>&1 &
echo "osd.$ID $!" >> "$BASE/pids"
for i in $(seq 120); do C osd stat 2>/dev/null | grep -q ' 1 up' && break; sleep 0.5; done
C osd stat | grep -q ' 1 up'
ts "osd.$ID up"

# --- 5. pool + image ---
C osd pool create rbd 16 16 >/dev/null 2>&1
rbd --cluster $CLUSTER -c "$CONF" pool init rbd
if [ -n "$IMAGE_SIZE" ]; then
  rbd --cluster $CLUSTER -c "$CONF" create --size "$IMAGE_SIZE" rbd/test
  ts "pool rbd + image rbd/test ($IMAGE_SIZE) ready"
else
  ts "pool rbd ready"
fi

# --- 6. wait for all PGs active+clean and HEALTH_OK (gives up after ~60 s; WARN is usable) ---
for i in $(seq 120); do C pg stat 2>/dev/null | grep -qE '^([0-9]+) pgs: \1 active\+clean[;,]' && break; sleep 0.5; done
if [ "${WAIT_HEALTH:-1}" = 1 ]; then
  for i in $(seq 120); do h=$(C health 2>/dev/null || true); [ "$h" = HEALTH_OK ] && break; sleep 0.5; done
fi
ts "$(C pg stat | cut -d";" -f1)"
ts "health: $(C health detail | head -5 | tr '\n' ' ')"
echo "export CEPH_CONF=$CONF   # for rbd/rados/ceph CLIs and librados/librbd clients"
}

# A crash and a restart of osd.0: SIGKILL (no clean shutdown), then the
# same command line again; returns once the monitor reports it up.
do_restart_osd() {
C() { ceph --cluster $CLUSTER -c "$CONF" --connect-timeout 10 "$@"; }
local pid
pid=$(awk '$1 == "osd.0" { print $2 }' "$BASE/pids")
[ -n "$pid" ] || { echo "ceph-mini.sh: no osd.0 in $BASE/pids" >&2; exit 1; }
if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$CONF"; then
  kill -KILL "$pid"
  for i in $(seq 100); do alive "$pid" || break; sleep 0.1; done
fi
for i in $(seq 120); do C osd stat 2>/dev/null | grep -q ' 0 up' && break; C osd down 0 >/dev/null 2>&1 || true; sleep 0.5; done
setsid ceph-osd --cluster $CLUSTER -c "$CONF" -i 0 -f </dev/null >>"$BASE/log/osd.0.out" 2>&1 &
local new=$!
sed -i "s/^osd.0 .*/osd.0 $new/" "$BASE/pids"
for i in $(seq 240); do C osd stat 2>/dev/null | grep -q ' 1 up' && break; sleep 0.5; done
C osd stat | grep -q ' 1 up' || { echo "ceph-mini.sh: osd.0 did not come back (see $BASE/log/osd.0.out)" >&2; exit 1; }
echo "osd.0 restarted (pid $new)"
}

case "${1:-}" in
  start) do_start ;;
  restart-osd) do_restart_osd ;;
  stop) shift; do_stop "$@" ;;
  conf) echo "$CONF" ;;
  *) echo "usage: $0 start|stop [--keep]|conf|restart-osd" >&2; exit 2 ;;
esac
