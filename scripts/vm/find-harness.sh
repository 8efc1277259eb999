# Sourced by scripts/vm-*.sh (needs ROOT): sets VM_DIR to the QEMU harness
# (../shared/tools/vm next to the repository, or /work/shared/tools/vm) unless
# the caller set it, and exits 2 with a message when there is none.
if [[ -z ${VM_DIR:-} ]]; then
  for d in "$ROOT/../shared/tools/vm" /work/shared/tools/vm; do
    [[ -x $d/run-guest.sh ]] && { VM_DIR=$(cd "$d" && pwd); break; }
  done
fi
[[ -n ${VM_DIR:-} && -x $VM_DIR/run-guest.sh ]] || { echo "VM harness not found (set VM_DIR)" >&2; exit 2; }
