# Shared by the benchmark scripts (sourced, not run): a private tgtd with
# one LUN, our target, free ports, CPU counters, medians and ratios.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# start_ours BIN LOG_PREFIX ARGS...: `BIN target serve --portal
# 127.0.0.1:0 ARGS...` (ARGS: --target/--lun/... or --config), waiting
# for its "listening on" line. Sets OURS_PID and OURS_PORTAL.
start_ours() {
    local bin=$1 log=$2
    shift 2
    "$bin" target serve --log warn "$@" >"$log.out" 2>"$log.err" &
    OURS_PID=$!
    for _ in $(seq 300); do grep -q "listening on" "$log.out" 2>/dev/null && break; sleep 0.1; done
    OURS_PORTAL=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log.out" | head -1)
    [ -n "$OURS_PORTAL" ] || { echo "our target did not start:" >&2; cat "$log.err" >&2; exit 1; }
}

# start_ours_bridge BIN PORT IQN LOG_PREFIX: our initiator (`BIN login
# --nbd`) logged in to 127.0.0.1:PORT, exporting the target's LUNs over
# NBD. Sets NBD_PORT and BRIDGE_PID and appends the process to PIDS once
# it is ready.
start_ours_bridge() {
    NBD_PORT=$(free_port)
    "$1" login --foreground --portal "127.0.0.1:$2" --target "$3" \
        --nbd "127.0.0.1:$NBD_PORT" --log warn >"$4.out" 2>"$4.err" &
    BRIDGE_PID=$!
    PIDS+=($!)
    wait_port "$NBD_PORT" || { echo "iscsi login failed:" >&2; cat "$4.err" >&2; exit 1; }
    for _ in $(seq 100); do grep -q '^ready:' "$4.out" && break; sleep 0.1; done
}

# cpu_ticks PID: utime + stime of the whole process (every thread, the
# exited ones included), in clock ticks (getconf CLK_TCK a second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# rss_kib PID: resident set size in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# client_run CPUFILE CMD...: run CMD (stdout and stderr as ours) and write
# its user+system CPU seconds (its children's included) to CPUFILE.
client_run() {
    python3 -c '
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, st, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{ru.ru_utime + ru.ru_stime:.4f}\n")
sys.exit(os.waitstatus_to_exitcode(st))' "$@"
}

# fio_once URI RW BS QD PID: one time-based fio run (nbd engine, SECS
# seconds over LUN_MIB MiB; scratch files in TMP) -> "IOPS MiB/s
# µs-of-PID's-CPU-per-I/O".
fio_once() {
    local t0 t1
    t0=$(cpu_ticks "$5")
    fio --name=bench --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$4" \
        --runtime="$SECS" --time_based --size="${LUN_MIB}M" \
        --output-format=json --output="$TMP/fio.json" >"$TMP/fio.out" 2>"$TMP/fio.err" ||
        { echo "fio failed on $1:" >&2; cat "$TMP/fio.err" >&2; exit 1; }
    t1=$(cpu_ticks "$5")
    python3 - "$TMP/fio.json" "$((t1 - t0))" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()  # fio may print notes before the JSON
j = json.loads(text[text.index("{"):])["jobs"][0]
ios = max(j["read"]["total_ios"] + j["write"]["total_ios"], 1)
iops = j["read"]["iops"] + j["write"]["iops"]
mib = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1048576
print(f'{iops:.0f} {mib:.0f} {int(sys.argv[2]) * 1e6 / int(sys.argv[3]) / ios:.2f}')
EOF
}

# Median of the numbers on stdin, one a line (integers stay integers).
median() {
    sort -g | awk '{a[NR]=$1} END {
        if (NR == 0) { print "-"; exit }
        v = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2
        if (v == int(v)) printf "%d\n", v; else printf "%.2f\n", v }'
}

# ratio A B: A/B with two decimals, "-" when B is 0 or missing.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a != "-") printf "%.2f", a / b; else print "-" }'; }

# start_tgtd IQN BACKING LOG [TGTADM_LU_ARGS...]: tgtd on 127.0.0.1 with a
# private control port, target IQN, LUN 1 (LUN 0 is tgtd's controller) on
# BACKING (a file, or with `--bstype rbd --bsopts conf=...` an RBD image).
# Sets TGTD_PID, CTL, TPORT.
start_tgtd() {
    mkdir -p /var/run/tgtd
    CTL=$((20000 + RANDOM % 12000))
    TPORT=$(free_port)
    tgtd -f -C "$CTL" --iscsi "portal=127.0.0.1:$TPORT" >"$3" 2>&1 &
    TGTD_PID=$!
    for _ in $(seq 50); do
        tgtadm -C "$CTL" --lld iscsi --mode target --op show >/dev/null 2>&1 && break
        sleep 0.1
    done
    tgtadm -C "$CTL" --lld iscsi --mode target --op new --tid 1 --targetname "$1"
    tgtadm -C "$CTL" --lld iscsi --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$2" "${@:4}"
    tgtadm -C "$CTL" --lld iscsi --mode target --op bind --tid 1 --initiator-address ALL
}

# stop_tgtd: tgtd ignores SIGTERM while it has targets, so ask it to exit.
stop_tgtd() {
    [ -n "${TGTD_PID:-}" ] || return 0
    timeout 5 tgtadm -C "$CTL" --op delete --mode system >/dev/null 2>&1 || true
    sleep 0.2
    kill -9 "$TGTD_PID" 2>/dev/null
    wait "$TGTD_PID" 2>/dev/null || true
    rm -f "/var/run/tgtd/socket.$CTL" "/var/run/tgtd/socket.$CTL.lock"
    TGTD_PID=
}
