#!/usr/bin/env bash
# Installs the real peers the test suite talks to (Debian packages) and the
# cargo tools it runs with. Idempotent: does nothing when all are present.
set -euo pipefail

need=()
command -v tgtd >/dev/null || need+=(tgt)
command -v iscsi-test-cu >/dev/null || need+=(libiscsi-bin)
command -v nbdinfo >/dev/null || need+=(libnbd-bin)
command -v nbdkit >/dev/null || need+=(nbdkit)
command -v fio >/dev/null || need+=(fio)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
# libublk's build runs bindgen, which needs libclang (feature `ublk`).
# (libclang-cpp, which other packages bring, is not it: look for libclang.so itself.)
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null \
    || need+=(libclang-dev)
command -v python3 >/dev/null || need+=(python3)
# The compose demo's test (cli/tests/compose_demo.rs) runs where a Docker
# engine is; it needs Compose v1 or v2 there.
if command -v docker >/dev/null && ! docker compose version >/dev/null 2>&1 \
    && ! command -v docker-compose >/dev/null; then
    need+=(docker-compose)
fi

if ((${#need[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing: ${need[*]}" >&2
    $SUDO apt-get update -qq
    updated=1
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Ceph (the RBD backend's tests: a single-host cluster from
# scripts/ceph-mini.sh, and librbd/librados to build `--features cli/rbd`).
# Optional: when these cannot be installed, scripts/test.sh builds without
# the feature and the RBD tests say so and skip.
ceph=()
command -v ceph-mon >/dev/null || ceph+=(ceph-mon)
command -v ceph-mgr >/dev/null || ceph+=(ceph-mgr)
command -v ceph-osd >/dev/null || ceph+=(ceph-osd)
command -v rbd >/dev/null || ceph+=(ceph-common)
[ -e /usr/include/rbd/librbd.h ] || ceph+=(librbd-dev)
[ -e /usr/include/rados/librados.h ] || ceph+=(librados-dev)
# librados.hpp and buffer.h: the C++ shim of zero-copy RBD reads (target/build.rs).
[ -e /usr/include/rados/librados.hpp ] || ceph+=(libradospp-dev)
if ((${#ceph[@]})) && [ -z "${ISCSI_NO_CEPH:-}" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing (optional, for the RBD tests): ${ceph[*]}" >&2
    [ -n "${updated:-}" ] || $SUDO apt-get update -qq || true
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${ceph[@]}" >/dev/null; then
        echo "warning: could not install ${ceph[*]}: the RBD backend is not built and its tests skip" >&2
    fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
