#!/usr/bin/env bash
# The control channel (docs/control-channel.md) from the Linux KERNEL initiator: our target
# serves a LUN with `--control` in an isolated network namespace; in the QEMU guest,
# open-iscsi logs in and sg_raw (copied in from the host's sg3-utils) sends the vendor
# commands through SG_IO: INQUIRY VPD C7h, LIST / GET / SET of the vendor command C7h (the
# switch list comes back), io_mode=ro refusing the next write, a WRITE(10) with tag 6 in
# byte 6 (0xC0); the host then checks the target's per-tag counters and ring.
#
# One implementation: this is the "control" scenario of scripts/vm-kernel-initiator.sh
# (guest side scripts/vm/control-channel.guest.sh), under the name the docs use.
# Opt-in, NOT part of scripts/test.sh: needs root (ip netns), qemu-system-x86, sg3-utils on
# the host, and ~20-60 s under TCG. Env: as scripts/vm-kernel-initiator.sh (VM_DIR,
# VM_NETNS, ISCSI_BIN, OUT).
#
# usage: scripts/vm-control-sgraw.sh
set -euo pipefail
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/vm-kernel-initiator.sh" control
