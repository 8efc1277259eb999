# Shared by the benchmark scripts (sourced, not run): a private tgtd with
# one LUN, free ports, medians and ratios.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# start_ours_bridge BIN PORT IQN LOG_PREFIX: our initiator (`BIN login
# --nbd`) logged in to 127.0.0.1:PORT, exporting the target's LUNs over
# NBD. Sets NBD_PORT and appends the process to PIDS once it is ready.
start_ours_bridge() {
    NBD_PORT=$(free_port)
    "$1" login --foreground --portal "127.0.0.1:$2" --target "$3" \
        --nbd "127.0.0.1:$NBD_PORT" --log warn >"$4.out" 2>"$4.err" &
    PIDS+=($!)
    wait_port "$NBD_PORT" || { echo "iscsi login failed:" >&2; cat "$4.err" >&2; exit 1; }
    for _ in $(seq 100); do grep -q '^ready:' "$4.out" && break; sleep 0.1; done
}

# Median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# ratio A B: A/B with two decimals, "-" when B is 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

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
    timeout 5 tgtadm -C "$CTL" --op delete --mode system >/dev/null 2>&1
    sleep 0.2
    kill -9 "$TGTD_PID" 2>/dev/null
    rm -f "/var/run/tgtd/socket.$CTL" "/var/run/tgtd/socket.$CTL.lock"
}
