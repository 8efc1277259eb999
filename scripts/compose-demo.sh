#!/usr/bin/env bash
# The compose demo: our target and our initiator in two containers, the disk
# exported over NBD on the host, checked by an independent NBD client.
#
#   scripts/compose-demo.sh                 build, start, wait for `check`, print the NBD address
#   scripts/compose-demo.sh --down          stop and remove the containers and networks
#   scripts/compose-demo.sh --mcs           the two-network MC/S variant (docker-compose.mcs.yml):
#                                           one connection per network, one network
#                                           disconnected mid-copy while the copy goes on
#   scripts/compose-demo.sh --mcs --down    tear that one down
#
# Environment: NBD_PORT (host port of the NBD export, default 10809),
# COMPOSE_PROJECT_NAME (default iscsi-rs-demo), PROFILE (cargo profile of
# the static build: release by default, dev builds faster).
#
# No image is pulled: the binaries are linked statically on the host
# (glibc with crt-static) and copied into a FROM scratch image. Works with
# Compose v1 (`docker-compose`) and v2 (`docker compose`).
set -euo pipefail
cd "$(dirname "$0")/.."

MCS=0
DOWN=0
for a in "$@"; do
    case "$a" in
    --down) DOWN=1 ;;
    --mcs) MCS=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "compose-demo.sh: unknown argument $a (see --help)" >&2; exit 2 ;;
    esac
done

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    echo "compose-demo.sh: neither 'docker compose' nor 'docker-compose' is installed" >&2
    exit 3
fi
if ! docker info >/dev/null 2>&1; then
    echo "compose-demo.sh: cannot reach the Docker engine (is dockerd running, may this user use it?)" >&2
    exit 3
fi
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-iscsi-rs-demo}
export NBD_PORT=${NBD_PORT:-10809}
FILE=docker-compose.yml
[ "$MCS" = 1 ] && FILE=docker-compose.mcs.yml
dc() { "${COMPOSE[@]}" -f "$FILE" "$@"; }

if [ "$DOWN" = 1 ]; then
    dc down --volumes --remove-orphans
    exit 0
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0=$(now)

# 1. Static binaries (a separate --target build, so RUSTFLAGS does not
#    reach proc macros and build scripts).
PROFILE=${PROFILE:-release}
TRIPLE=x86_64-unknown-linux-gnu
echo "== building static binaries (cargo --profile $PROFILE --target $TRIPLE)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --profile "$PROFILE" --target "$TRIPLE" \
    -p cli -p testbed --bin iscsi --bin nbd-verify
OUT=build/$TRIPLE/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
mkdir -p docker/bin
for b in iscsi nbd-verify; do
    if ! file "$OUT/$b" 2>/dev/null | grep -q "static"; then
        if ldd "$OUT/$b" >/dev/null 2>&1; then
            echo "compose-demo.sh: $OUT/$b is dynamically linked; a scratch image needs a static binary" >&2
            exit 1
        fi
    fi
    # Debug info is not needed in the image (strip when binutils is there).
    strip -o docker/bin/$b "$OUT/$b" 2>/dev/null || cp "$OUT/$b" docker/bin/$b
done
echo "   built in $(since "$T0") s"

# 2. Image and containers.
T1=$(now)
echo "== building the image and starting the containers ($FILE, project $COMPOSE_PROJECT_NAME)"
# (the legacy builder's deprecation notice is noise here; real errors are shown)
if ! out=$(dc build -q 2>&1); then
    echo "$out" >&2
    exit 1
fi
dc up -d
echo "   up in $(since "$T1") s"

# 3. Wait for the one-shot check and report.
T2=$(now)
CHECK=$(dc ps -q check)
[ -n "$CHECK" ] || { echo "compose-demo.sh: no check container" >&2; dc logs; exit 1; }
if [ "$MCS" = 1 ]; then
    # Mid-copy, take one of the two networks away from the initiator.
    sleep "${DISCONNECT_AFTER:-5}"
    INIT=$(dc ps -q initiator)
    NET=${COMPOSE_PROJECT_NAME}_san-a
    echo "== disconnecting the initiator from $NET mid-copy"
    docker network disconnect "$NET" "$INIT"
fi
CODE=$(timeout "${CHECK_TIMEOUT:-300}" docker wait "$CHECK" || echo timeout)
echo "== check finished ($CODE) after $(since "$T2") s:"
dc logs --no-color check | sed 's/^/   /'
if [ "$CODE" != 0 ]; then
    echo "== the check failed; logs of the other services:" >&2
    dc logs --no-color target initiator >&2 || true
    exit 1
fi
if [ "$MCS" = 1 ]; then
    dc logs --no-color initiator | grep -Ei "recover|lost|logged in" | sed 's/^/   /' || true
fi
cat <<MSG
== the compose demo is up (total $(since "$T0") s). The disk is exported over NBD on the host:
   nbdinfo nbd://127.0.0.1:$NBD_PORT/lun0
   qemu-img info nbd://127.0.0.1:$NBD_PORT/lun0
   nbd-client 127.0.0.1 $NBD_PORT /dev/nbd0 -N lun0          (kernel NBD module)
   mkdir -p /tmp/nbd && nbdfuse /tmp/nbd/lun0 nbd://127.0.0.1:$NBD_PORT/lun0 &   (FUSE)
   tear down: $0 ${MCS:+$([ "$MCS" = 1 ] && echo "--mcs ")}--down
MSG
