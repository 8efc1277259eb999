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
compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null || need+=(libclang-dev)
command -v python3 >/dev/null || need+=(python3)

if ((${#need[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing: ${need[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
