#!/usr/bin/env bash
# Interoperability of OUR target (`iscsi target serve`) with the Linux KERNEL iSCSI
# initiator (open-iscsi + iscsi_tcp), using the QEMU harness in ../shared/tools/vm.
#
# For each scenario: start our target inside an isolated network namespace (loopback
# only), boot the small Debian guest under QEMU, run scripts/vm/kernel-interop.guest.sh in
# it (discovery, login, mkfs/fsck, file + raw O_DIRECT data checks, discard, logout,
# re-login), stop the target. Optionally (FIO=1) also compare fio through the kernel
# initiator against our target and tgtd (tests/fio-probe.sh), median of RUNS runs.
#
# Opt-in, NOT part of scripts/test.sh: it needs qemu-system-x86 (apt-get install
# --no-install-recommends qemu-system-x86), root (ip netns) and 5-20 s per scenario
# under TCG (about 3 minutes for all). See docs/interop/kernel-initiator.md for results.
#
# usage: scripts/vm-kernel-initiator.sh [--list] [SCENARIO...]   (default: all scenarios)
# env:   VM_DIR     harness directory (default: ../shared/tools/vm next to the repo, or
#                   /work/shared/tools/vm)
#        VM_NETNS   namespace name (default: vmkern; created and deleted here if missing)
#        ISCSI_BIN  target binary (default: build it: cargo build --release -p cli)
#        TARGET_LOG target --log level (default: debug)
#        CAPTURE=1  tshark capture of port 3260 on the namespace loopback, per scenario
#                   (<OUT>/<scenario>/iscsi.pcap; decode: tshark -r FILE -Y iscsi -V)
#        BASELINE=1 also run the guest script once against tgtd ("tgtd-baseline")
#        FIO=1      also run the fio comparison (ours vs tgtd, DEVICES=iscsi)
#        FIO_ONLY=1 only the fio comparison;  RUNS (3) fio runs per target;  RUNTIME (4) s per job
#        OUT        results directory (default: mktemp -d /tmp/vmkern.XXXXXX)
#
# The "control" scenario serves a LUN with --control and runs scripts/vm/control-channel.guest.sh:
# sg_raw (copied in from the host) sends the vendor command C7h and a tagged WRITE(10) as
# docs/control-channel.md shows; the host then checks the per-tag counters (show --json).
#
# The "rbd" scenario (run when Ceph is installed, see scripts/install-deps.sh) starts a
# single-host Ceph cluster INSIDE the namespace (scripts/ceph-mini.sh; the target there
# cannot reach the host's loopback), serves its image rbd/test (256 MiB) from a binary
# built with `--features cli/rbd`, and after the guest's mkfs/fsck/data checks compares
# what the guest wrote through the kernel initiator with `rbd export` of the image.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST=$ROOT/scripts/vm/kernel-interop.guest.sh
GUEST_RECOVERY=$ROOT/scripts/vm/kernel-recovery.guest.sh
GUEST_CONTROL=$ROOT/scripts/vm/control-channel.guest.sh
# shellcheck source=vm/find-harness.sh
. "$ROOT/scripts/vm/find-harness.sh"
NS=${VM_NETNS:-vmkern}
IQN=iqn.2024-01.rs.iscsi:vm
GUEST_IQN=iqn.2005-03.org.open-iscsi:vmtest-guest   # fixed in the guest image
# tgt_start / tgt_stop for the tgtd baseline come from the harness (they use NS, WORK, CPORT)
# shellcheck source=/dev/null
. "$VM_DIR/tests/lib-host.sh"
log() { echo "[vm-kernel-initiator] $*" >&2; }

# ---- scenarios: NAME | target options (after --portal/--target) | guest env (space separated)
# @WORK@ is replaced by the run directory. Secrets are 12+ characters (RFC 7143 §12.1.3 wants
# IPsec for secrets with fewer than 96 random bits; neither side enforces a length here).
SCENARIOS=(
  "basic|--lun mem:256M|EXPECT_BLOCK=512 EXPECT_BYTES=268435456"
  "file-4k|--lun file:@WORK@/disk4k.img,size=256M,sector=4096,thin|EXPECT_BLOCK=4096 EXPECT_BYTES=268435456"
  "multi-lun|--lun mem:64M --lun file:@WORK@/lun1.img,size=128M,sector=4096|EXPECT_DISKS=2 MB=8"
  "chap|--lun mem:128M --chap kerneluser:kernelsecret12|CHAP_USER=kerneluser CHAP_SECRET=kernelsecret12 MB=8"
  "chap-discovery|--lun mem:128M --chap kerneluser:kernelsecret12|CHAP_USER=kerneluser CHAP_SECRET=kernelsecret12 DISC_CHAP=1 MB=8 RELOGIN=0"
  "mutual-chap|--lun mem:128M --chap kerneluser:kernelsecret12 --mutual-chap targetuser:targetsecret34|CHAP_USER=kerneluser CHAP_SECRET=kernelsecret12 CHAP_USER_IN=targetuser CHAP_SECRET_IN=targetsecret34 MB=8"
  "chap-bad-secret|--lun mem:128M --chap kerneluser:kernelsecret12|CHAP_USER=kerneluser CHAP_SECRET=wrongsecret99 EXPECT_LOGIN_FAIL=1"
  "mutual-chap-bad-target-secret|--lun mem:128M --chap kerneluser:kernelsecret12 --mutual-chap targetuser:targetsecret34|CHAP_USER=kerneluser CHAP_SECRET=kernelsecret12 CHAP_USER_IN=targetuser CHAP_SECRET_IN=notthetarget56 EXPECT_LOGIN_FAIL=1"
  "acl-allowed|--lun mem:128M --allow $GUEST_IQN|MB=8 RELOGIN=0"
  "acl-denied|--lun mem:128M --allow iqn.2024-01.example:someone-else|EXPECT_LOGIN_FAIL=1"
  "conn-drop|--lun file:@WORK@/disk.img,size=128M|SCRIPT=recovery ACTION=conn-drop ROUNDS=2"
  "target-restart|--lun file:@WORK@/disk.img,size=128M|SCRIPT=recovery ACTION=target-restart"
  "rbd|--lun rbd:rbd/test,conf=@CEPH@|EXPECT_BLOCK=512 EXPECT_BYTES=268435456 MB=16"
  "control|--lun mem:64M --control|SCRIPT=control"
  "digests-r2t|--lun mem:256M|MB=16 ISCSI_OPTS=node.conn[0].iscsi.HeaderDigest=CRC32C;node.conn[0].iscsi.DataDigest=CRC32C;node.session.iscsi.InitialR2T=Yes;node.session.iscsi.ImmediateData=No;node.session.iscsi.FirstBurstLength=8192;node.session.iscsi.MaxBurstLength=16384;node.conn[0].iscsi.MaxRecvDataSegmentLength=4096"
)

[[ ${BASELINE:-0} == 1 ]] && SCENARIOS=("tgtd-baseline|TGTD|EXPECT_BLOCK=512 EXPECT_BYTES=268435456" "${SCENARIOS[@]}")
if [[ ${1:-} == --list ]]; then
  for s in "${SCENARIOS[@]}"; do echo "${s%%|*}"; done; exit 0
fi
WANT=("$@")
HAVE_CEPH=0
command -v ceph-mon >/dev/null && [[ -e /usr/include/rbd/librbd.h ]] && HAVE_CEPH=1
if ((!HAVE_CEPH)); then
  ((${#WANT[@]})) && [[ " ${WANT[*]} " == *" rbd "* ]] && { log "rbd: Ceph is not installed (scripts/install-deps.sh)"; exit 2; }
  for i in "${!SCENARIOS[@]}"; do [[ ${SCENARIOS[$i]} == rbd\|* ]] && unset 'SCENARIOS[i]'; done
  SCENARIOS=("${SCENARIOS[@]}")
fi
OUT=${OUT:-$(mktemp -d /tmp/vmkern.XXXXXX)}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

# ---- our binary
if [[ -z ${ISCSI_BIN:-} ]]; then
  feat=(); ((HAVE_CEPH)) && feat=(--features rbd)
  log "building the target: cargo build --release -p cli ${feat[*]}"
  (cd "$ROOT" && cargo build --release -p cli "${feat[@]}")
  ISCSI_BIN=${CARGO_TARGET_DIR:-$ROOT/build}/release/iscsi
fi
[[ -x $ISCSI_BIN ]] || { log "no binary at $ISCSI_BIN"; exit 2; }

# ---- namespace, cleanup
CREATED_NS=0 TGT_PID= CAP_PID=
capture_stop() {
  [[ -n $CAP_PID ]] || return 0
  sleep 0.5; kill -INT "$CAP_PID" 2>/dev/null; wait "$CAP_PID" 2>/dev/null || true; CAP_PID=
}
ns_exists() { ip netns list | awk '{print $1}' | grep -qxF "$1"; }
target_stop() {
  [[ -n $TGT_PID ]] || return 0
  if kill -0 "$TGT_PID" 2>/dev/null; then
    kill -TERM "$TGT_PID" 2>/dev/null
    local i; for i in $(seq 50); do kill -0 "$TGT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$TGT_PID" 2>/dev/null && { log "target $TGT_PID ignored SIGTERM for 5 s: SIGKILL"; kill -KILL "$TGT_PID"; }
  fi
  wait "$TGT_PID" 2>/dev/null || true
  TGT_PID=
}
CEPH_DIRS=()
ceph_stop() {
  local d
  for d in "${CEPH_DIRS[@]}"; do CEPH_MINI_DIR=$d "$ROOT/scripts/ceph-mini.sh" stop --keep >/dev/null 2>&1; done
  CEPH_DIRS=()
}
cleanup() {
  set +e
  target_stop
  ceph_stop
  tgt_stop
  capture_stop
  ((CREATED_NS)) && "$VM_DIR/netns.sh" down "$NS"
  rm -f "$OUT"/*/disk*.img "$OUT"/*/lun*.img
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if ! ns_exists "$NS"; then "$VM_DIR/netns.sh" up "$NS" >&2; CREATED_NS=1; fi
if ip netns exec "$NS" ss -Hltn 'sport = :3260' | grep -q .; then
  log "something already listens on 127.0.0.1:3260 in netns $NS"; exit 2
fi

# target_start WORKDIR ARGS... : our target on 127.0.0.1:3260 in $NS
target_start() {
  local work=$1 i; shift
  ip netns exec "$NS" "$ISCSI_BIN" target serve --portal 127.0.0.1:3260 --target "$IQN" \
    --admin-socket "$work/admin.sock" --log "${TARGET_LOG:-debug}" "$@" >> "$work/target.log" 2>&1 &
  TGT_PID=$!
  for i in $(seq 100); do
    ip netns exec "$NS" ss -Hltn 'sport = :3260' | grep -q . && return 0
    kill -0 "$TGT_PID" 2>/dev/null || { log "target died:"; cat "$work/target.log" >&2; TGT_PID=; return 1; }
    sleep 0.1
  done
  log "target did not listen within 10 s"; return 1
}

# ---- recovery scenarios: the guest asks for an ACTION through the 9p share
# (share/req), the host performs it and acknowledges (share/done).
#   conn-drop       ss -K: the target's TCP connections are reset (RST) under the initiator
#   target-restart  SIGTERM our target, wait RESTART_GAP (3) s, start it again (same file LUN)
run_recovery_guest() {
  local work=$1 targs=$2 gpid act rc; shift 2
  rm -rf "$work/share"; mkdir -p "$work/share"
  "$VM_DIR/run-guest.sh" --netns "$NS" --timeout "${TIMEOUT:-240}" -q --log "$work/console.log" \
    --share "$work/share" --env PORTAL=10.0.2.100:3260 --env IQN="$IQN" "$@" "$GUEST_RECOVERY" &
  gpid=$!
  while kill -0 "$gpid" 2>/dev/null; do
    if [[ -e $work/share/req ]]; then
      act=$(cat "$work/share/req"); rm -f "$work/share/req"
      case $act in
        conn-drop)
          log "host action: ss -K on the target's connections"
          ip netns exec "$NS" ss -tn state established '( sport = :3260 )' >&2 || true
          ip netns exec "$NS" ss -K state established '( sport = :3260 )' >/dev/null 2>&1 || true ;;
        target-restart)
          log "host action: restarting the target"
          echo "==== host: target stopped (SIGTERM) for a restart" >> "$work/target.log"
          target_stop; sleep "${RESTART_GAP:-3}"
          # shellcheck disable=SC2086
          set -f; target_start "$work" $targs || log "target restart failed"; set +f ;;
        *) log "unknown action $act" ;;
      esac
      echo "$act at $(date +%T.%N)" > "$work/share/done"
    fi
    sleep 0.1
  done
  wait "$gpid"; rc=$?
  return $rc
}

# ---- control channel (docs/control-channel.md): the guest sends the vendor command and a
# tagged WRITE(10) with sg_raw, copied in from the host (same Debian release as the guest);
# then the host reads the target's per-tag counters through the admin socket.
run_control_guest() {
  local work=$1 rc lib show; shift
  lib=$(ldd /usr/bin/sg_raw | awk '/libsgutils2/ { print $3 }')
  [[ -n $lib ]] || { log "control: sg3-utils not installed on the host (apt-get install sg3-utils)"; return 2; }
  "$VM_DIR/run-guest.sh" --netns "$NS" --timeout "${TIMEOUT:-240}" -q --log "$work/console.log" \
    --file /usr/bin/sg_raw:/usr/bin/sg_raw --file "$(readlink -f "$lib"):/vmtest/${lib##*/}" \
    --env PORTAL=10.0.2.100:3260 --env IQN="$IQN" "$@" "$GUEST_CONTROL"
  rc=$?
  show=$("$ISCSI_BIN" target show --json --admin-socket "$work/admin.sock") || return 1
  echo "$show" > "$work/show.json"
  python3 - "$work/show.json" <<'PY' >&2 || rc=1
import json, sys
lun = json.load(open(sys.argv[1]))["targets"][0]["luns"][0]
t6 = lun["control"]["tags"]["6"]
print(f"--- host: tag 6 {t6}; mode {lun['mode']}; flushes {lun['io']['flush_ops']}")
assert t6["commands"] == 1 and t6["bytes"] == 512 and t6["forced_fua"] == 1, t6
assert lun["control"]["recent"][-1]["lba"] == 8, lun["control"]["recent"]
print("--- host: PASS control counters")
PY
  return $rc
}

# rbd_export_check WORK: the pattern the guest wrote through the kernel initiator (its
# sha256 and MiB offsets are on the console) is in the RBD image, read with `rbd export`.
rbd_export_check() {
  local work=$1 line want off got bad=0
  line=$(grep -a -- '--- raw pattern sha256' "$work/console.log" | tail -1 | tr -d '\r')
  [[ -n $line ]] || { log "rbd: no pattern line on the console"; return 1; }
  want=$(awk '{print $5}' <<< "$line")
  ip netns exec "$NS" rbd -c "$work/ceph/ceph.conf" export --no-progress rbd/test "$work/rbd-export.img" >&2 || return 1
  log "rbd export: $(stat -c %s "$work/rbd-export.img") bytes"
  for off in $(awk '{for (i = 8; i <= NF; i++) print $i}' <<< "$line"); do
    got=$(dd if="$work/rbd-export.img" bs=1M skip="$off" count=1 2>/dev/null | sha256sum | cut -d' ' -f1)
    if [[ $got == "$want" ]]; then log "rbd export: MiB $off holds the guest's pattern"
    else log "rbd export: MiB $off DIFFERS ($got, want $want)"; bad=1; fi
  done
  rm -f "$work/rbd-export.img"
  return $bad
}

# ---- functional scenarios
run_scenario() {
  local spec=$1 name targs genv work rc t0 t1 envs=() kv
  name=${spec%%|*}; spec=${spec#*|}; targs=${spec%%|*}; genv=${spec#*|}
  work=$OUT/$name; mkdir -p "$work"
  targs=${targs//@WORK@/$work}
  if [[ $targs == *@CEPH@* ]]; then
    log "$name: starting a Ceph cluster in netns $NS ($work/ceph)"
    CEPH_DIRS+=("$work/ceph")
    if ! ip netns exec "$NS" env CEPH_MINI_DIR="$work/ceph" IMAGE_SIZE=256M WAIT_HEALTH=0 \
        "$ROOT/scripts/ceph-mini.sh" start > "$work/ceph-mini.log" 2>&1; then
      tail -5 "$work/ceph-mini.log" >&2; echo "$name FAIL(ceph-start) 0" >> "$SUMMARY"; ceph_stop; return 1
    fi
    targs=${targs//@CEPH@/$work/ceph/ceph.conf}
  fi
  set -f   # ISCSI_OPTS holds "[0]": no globbing while splitting
  for kv in $genv; do envs+=(--env "$kv"); done
  log "=== $name: target ${targs}"
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086  # word splitting of the option string is intended
  if [[ $targs == TGTD ]]; then
    WORK=$work tgt_start "$IQN" 256M || { set +f; echo "$name FAIL(tgtd-start) 0" >> "$SUMMARY"; return 1; }
  elif ! target_start "$work" $targs; then set +f; echo "$name FAIL(target-start) 0" >> "$SUMMARY"; return 1; fi
  set +f
  if [[ ${CAPTURE:-0} == 1 ]]; then
    ip netns exec "$NS" tshark -q -i lo -f 'tcp port 3260' -w "$work/iscsi.pcap" > "$work/tshark.log" 2>&1 &
    CAP_PID=$!
    sleep 1.5   # tshark needs a moment before it captures
  fi
  set +e
  if [[ " $genv " == *" SCRIPT=recovery "* ]]; then
    run_recovery_guest "$work" "$targs" "${envs[@]}"
  elif [[ " $genv " == *" SCRIPT=control "* ]]; then
    run_control_guest "$work" "${envs[@]}"
  else
    "$VM_DIR/run-guest.sh" --netns "$NS" --timeout "${TIMEOUT:-240}" -q --log "$work/console.log" \
      --env PORTAL=10.0.2.100:3260 --env IQN="$IQN" "${envs[@]}" "$GUEST"
  fi
  rc=$?
  set -e
  capture_stop
  target_stop
  tgt_stop
  if [[ $name == rbd ]]; then
    ((rc == 0)) && { rbd_export_check "$work" || rc=1; }
    ceph_stop
  fi
  t1=$(date +%s.%N)
  grep -aE '^\[(step|check|dd)\]|^--- (PASS|discovery|node|session|/dev|asked|host)|FATAL|^  (Header|Data|MaxRecv|MaxXmit|First|MaxBurst|Immediate|InitialR2T)|^    (vendor|write_cache|min_io)' \
    "$work/console.log" | sed "s/^/  [$name] /" >&2 || true
  local wall; wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  local res; res=$([[ $rc == 0 ]] && echo PASS || echo "FAIL(rc=$rc)")
  printf '%-30s %-12s %6ss  %s\n' "$name" "$res" "$wall" "$work" | tee -a "$SUMMARY" >&2
  [[ $rc == 0 ]]
}

# ---- fio comparison: our target vs tgtd, same guest, same jobs, DEVICES=iscsi
fio_median() { # fio_median FILE... : median per job of IOPS / MiB/s / lat over the runs
  awk '/^\[fio\] \/dev\// { j = $3 " " $4 " " $5; n[j]++; io[j, n[j]] = $6; bw[j, n[j]] = $7; lat[j, n[j]] = $8
                           if (!(j in seen)) { seen[j] = 1; order[++k] = j } }
       function med(a, j, c,   i, x, y, t, v) { for (i = 1; i <= c; i++) v[i] = a[j, i]
         for (x = 1; x <= c; x++) for (y = x + 1; y <= c; y++) if (v[y] < v[x]) { t = v[x]; v[x] = v[y]; v[y] = t }
         return (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2 }
       END { for (i = 1; i <= k; i++) { j = order[i]; printf "%s|%.0f|%.1f|%.0f|%d\n", j, med(io, j, n[j]), med(bw, j, n[j]), med(lat, j, n[j]), n[j] } }' "$@"
}
run_fio() {
  local runs=${RUNS:-3} r work=$OUT/fio
  mkdir -p "$work"
  WITH_FIO=1 "$VM_DIR/build-image.sh" >&2
  for r in $(seq "$runs"); do
    log "=== fio run $r/$runs: our target (mem:1G)"
    target_start "$work" --lun mem:1G || return 1
    VM_NETNS=$NS EXTERNAL=1 IQN=$IQN DEVICES=iscsi RUNTIME=${RUNTIME:-4} "$VM_DIR/tests/fio-probe.sh" \
      > "$work/ours.$r.txt" 2>&1 || log "fio against our target failed (run $r), see $work/ours.$r.txt"
    target_stop
    grep -a '^\[fio\]' "$work/ours.$r.txt" >&2 || true
    log "=== fio run $r/$runs: tgtd (1G file)"
    VM_NETNS=$NS DEVICES=iscsi RUNTIME=${RUNTIME:-4} "$VM_DIR/tests/fio-probe.sh" \
      > "$work/tgtd.$r.txt" 2>&1 || log "fio against tgtd failed (run $r), see $work/tgtd.$r.txt"
    grep -a '^\[fio\]' "$work/tgtd.$r.txt" >&2 || true
  done
  {
    echo
    echo "fio through the kernel initiator (libaio, O_DIRECT, ${RUNTIME:-4} s/job), median of $runs run(s)"
    printf '%-20s %10s %10s %10s %10s %10s %10s %8s\n' job ours-IOPS tgtd-IOPS ours-MiB/s tgtd-MiB/s ours-lat tgtd-lat ratio
    join -t'|' <(fio_median "$work"/ours.*.txt | sort) <(fio_median "$work"/tgtd.*.txt | sort) |
      awk -F'|' '{ r = ($6 > 0) ? $2 / $6 : 0; printf "%-20s %10s %10s %10s %10s %8sus %8sus %8.2f\n", $1, $2, $6, $3, $7, $4, $8, r }'
  } | tee -a "$SUMMARY" >&2
}

fails=0
if [[ ${FIO_ONLY:-0} != 1 ]]; then
  "$VM_DIR/build-image.sh" >&2
  for s in "${SCENARIOS[@]}"; do
    name=${s%%|*}
    if ((${#WANT[@]})) && [[ ! " ${WANT[*]} " == *" $name "* ]]; then continue; fi
    run_scenario "$s" || fails=$((fails + 1))
  done
fi
if [[ ${FIO:-0} == 1 || ${FIO_ONLY:-0} == 1 ]]; then run_fio || fails=$((fails + 1)); fi
echo "---- summary ($OUT)"; cat "$SUMMARY"
((fails == 0)) || { log "$fails scenario(s) failed"; exit 1; }
log "all passed"
