#!/usr/bin/env bash
# Captures real iSCSI PDU streams between libiscsi's tools (initiator) and
# tgtd (target) on 127.0.0.1, for proto/tests/pdu_vectors.rs.
#
# Output: proto/tests/data/<scenario>.c<N>.<dir>.hex, one file per TCP
# connection and direction (dir = i2t: initiator to target, t2i: target to
# initiator). Each line is the hex of one TCP segment's payload, in order;
# the concatenation is the PDU stream. Also writes a few seed inputs for the
# fuzz targets under fuzz/corpus/.
#
# Scenarios:
#   discovery  iscsi-ls -s: discovery login, SendTargets, normal logins, REPORT LUNS
#   inquiry    iscsi-inq: login, INQUIRY (Data-In with status), logout
#   readcap    iscsi-readcapacity16
#   chap       iscsi-inq with one-way CHAP (CHAP_A/I/C/N/R in login PDUs)
#   hdigest    iscsi-inq with HeaderDigest=CRC32C (libiscsi has no data digest)
#   write      iscsi-test-cu residual tests on a target with ImmediateData=No
#              (R2T + Data-Out, residual over/underflow)
#   tmf        iscsi-test-cu TMF tests (ABORT TASK, LOGICAL UNIT RESET)
#   datasn     iscsi-test-cu Data-Out with a bad DataSN
#   cmdsn      iscsi-test-cu commands with CmdSN outside the window
#
# Needs root (tgtd), tgt, libiscsi-bin, tshark. Usage: scripts/capture-vectors.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${CAPTURE_PORT:-3271}
CTL=${CAPTURE_CONTROL_PORT:-3271}
OUT=proto/tests/data
CORPUS=fuzz/corpus
IQN=iqn.2024-01.org.example:vectors
IQN_CHAP=iqn.2024-01.org.example:vectors-chap
IQN_W=iqn.2024-01.org.example:vectors-write
IQN_HD=iqn.2024-01.org.example:vectors-hdigest
INITIATOR=iqn.2024-01.org.example:initiator
CHAP_USER=vectoruser
CHAP_SECRET=vectorsecret12
TGTD_PID=
TSHARK_PID=

# Fuzz seeds (small, commit-friendly): the first 4 KiB of some streams,
# prefixed with the pdu_decode target's selector byte (0x03: 16 MiB limit,
# no digests), and a few login/text segments for text_parse.
write_seeds() {
    mkdir -p "$CORPUS/pdu_decode" "$CORPUS/text_parse"
    for f in "$OUT"/inquiry.c*.hex "$OUT"/chap.c*.hex "$OUT"/discovery.c0.*.hex \
        "$OUT"/tmf.c1.*.hex "$OUT"/write.c1.t2i.hex; do
        [ -e "$f" ] || continue
        { printf '\003'; tr -d '\n' <"$f" | xxd -r -p | head -c 4096; } \
            >"$CORPUS/pdu_decode/$(basename "$f" .hex)"
    done
    printf 'InitiatorName=%s\0SessionType=Discovery\0AuthMethod=None\0' "$INITIATOR" \
        >"$CORPUS/text_parse/login-discovery"
    printf 'SendTargets=All\0' >"$CORPUS/text_parse/sendtargets"
    printf 'TargetName=%s\0TargetAddress=127.0.0.1:3260,1\0' "$IQN" >"$CORPUS/text_parse/targets"
    printf 'CHAP_A=5\0CHAP_I=1\0CHAP_C=0x0123456789abcdef\0' >"$CORPUS/text_parse/chap"
    printf 'HeaderDigest=CRC32C,None\0MaxRecvDataSegmentLength=262144\0X-vendor.key=a,b\0' \
        >"$CORPUS/text_parse/operational"
}

if [ "${1:-}" = "--seeds-only" ]; then
    write_seeds
    exit 0
fi

WORK=$(mktemp -d /tmp/iscsi-capture.XXXXXX)

cleanup() {
    if [ -n "$TSHARK_PID" ]; then kill "$TSHARK_PID" 2>/dev/null || true; fi
    if [ -n "$TGTD_PID" ]; then
        # tgtd ignores SIGTERM while it has targets: remove them, then stop it.
        for tid in 1 2 3 4; do
            tgtadm -C "$CTL" --lld iscsi --op delete --force --mode target --tid "$tid" \
                >/dev/null 2>&1 || true
        done
        tgtadm -C "$CTL" --op delete --mode system >/dev/null 2>&1 || true
        for _ in $(seq 20); do
            kill -0 "$TGTD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$TGTD_PID" 2>/dev/null || true
        wait "$TGTD_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

adm() { tgtadm -C "$CTL" --lld iscsi "$@"; }

tgtd -f -C "$CTL" --iscsi "portal=127.0.0.1:$PORT" >"$WORK/tgtd.log" 2>&1 &
TGTD_PID=$!
for _ in $(seq 50); do
    adm --op show --mode target >/dev/null 2>&1 && break
    sleep 0.1
done

truncate -s 4M "$WORK/lun.img" "$WORK/lun-chap.img" "$WORK/lun-w.img"
# Recognisable content in the first block, read back by the tests.
printf 'iSCSI capture vector block 0\n' | dd of="$WORK/lun.img" conv=notrunc status=none

adm --op new --mode target --tid 1 -T "$IQN"
adm --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/lun.img"
adm --op bind --mode target --tid 1 -I ALL

adm --op new --mode target --tid 2 -T "$IQN_CHAP"
adm --op new --mode logicalunit --tid 2 --lun 1 -b "$WORK/lun-chap.img"
adm --op bind --mode target --tid 2 -I ALL
adm --op new --mode account --user "$CHAP_USER" --password "$CHAP_SECRET"
adm --op bind --mode account --tid 2 --user "$CHAP_USER"

adm --op new --mode target --tid 3 -T "$IQN_W"
adm --op new --mode logicalunit --tid 3 --lun 1 -b "$WORK/lun-w.img"
adm --op bind --mode target --tid 3 -I ALL
# No immediate data: every write goes R2T -> Data-Out.
adm --op update --mode target --tid 3 -n ImmediateData -v No
# Target-initiated NOP-In pings every second.
adm --op update --mode target --tid 3 -n nop_interval -v 1 || true
adm --op update --mode target --tid 3 -n nop_count -v 3 || true

adm --op new --mode target --tid 4 -T "$IQN_HD"
adm --op new --mode logicalunit --tid 4 --lun 1 -b "$WORK/lun.img"
adm --op bind --mode target --tid 4 -I ALL
# libiscsi offers HeaderDigest=None,CRC32C; make tgtd pick CRC32C.
adm --op update --mode target --tid 4 -n HeaderDigest -v CRC32C

# capture <scenario> <command...>: runs the command under a tshark capture
# and splits the TCP payloads per connection and direction.
capture() {
    local name=$1
    shift
    local pcap="$WORK/$name.pcap"
    tshark -q -i lo -f "tcp port $PORT" -w "$pcap" >"$WORK/$name.tshark.log" 2>&1 &
    TSHARK_PID=$!
    # Wait until tshark is capturing.
    for _ in $(seq 100); do
        grep -q "Capturing on" "$WORK/$name.tshark.log" 2>/dev/null && break
        sleep 0.1
    done
    sleep 0.5
    "$@" >"$WORK/$name.out" 2>&1 || {
        echo "note: '$*' exited with $?:" >&2
        tail -5 "$WORK/$name.out" >&2
    }
    sleep 1
    kill -INT "$TSHARK_PID"
    wait "$TSHARK_PID" 2>/dev/null || true
    TSHARK_PID=
    rm -f "$OUT/$name".c*.hex
    tshark -r "$pcap" -Y "tcp.len > 0" -T fields -e tcp.stream -e tcp.dstport -e tcp.payload \
        -o tcp.desegment_tcp_streams:FALSE 2>/dev/null |
        while read -r stream dport payload; do
            [ -n "$payload" ] || continue
            if [ "$dport" = "$PORT" ]; then dir=i2t; else dir=t2i; fi
            echo "${payload//:/}" >>"$OUT/$name.c$stream.$dir.hex"
        done
    echo "$name: $(ls "$OUT/$name".c*.hex | wc -l) stream files, $(cat "$OUT/$name".c*.hex | wc -c) hex chars"
}

mkdir -p "$OUT"
capture discovery iscsi-ls -i "$INITIATOR" -s "iscsi://127.0.0.1:$PORT"
capture inquiry iscsi-inq -i "$INITIATOR" "iscsi://127.0.0.1:$PORT/$IQN/1"
capture readcap iscsi-readcapacity16 -i "$INITIATOR" "iscsi://127.0.0.1:$PORT/$IQN/1"
capture chap iscsi-inq -i "$INITIATOR" \
    "iscsi://$CHAP_USER%$CHAP_SECRET@127.0.0.1:$PORT/$IQN_CHAP/1"
capture hdigest iscsi-inq -i "$INITIATOR" \
    "iscsi://127.0.0.1:$PORT/$IQN_HD/1"
capture write iscsi-test-cu -d -s -i "$INITIATOR" \
    -t 'iSCSI.iSCSIResiduals.Write10Residuals' "iscsi://127.0.0.1:$PORT/$IQN_W/1"
capture tmf iscsi-test-cu -d -s -i "$INITIATOR" \
    -t 'iSCSI.iSCSITMF' "iscsi://127.0.0.1:$PORT/$IQN_W/1"
capture datasn iscsi-test-cu -d -s -i "$INITIATOR" \
    -t 'iSCSI.iSCSIdatasn' "iscsi://127.0.0.1:$PORT/$IQN_W/1"
capture cmdsn iscsi-test-cu -d -s -i "$INITIATOR" \
    -t 'iSCSI.iSCSIcmdsn' "iscsi://127.0.0.1:$PORT/$IQN/1"

write_seeds
