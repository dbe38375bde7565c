#!/usr/bin/env bash
# The main job: builds the example unikernel with the ukdb stub, boots it
# under QEMU, starts `ukdb bridge` on its serial line and attaches gdb.
# Interactive terminal: you get a gdb prompt. Otherwise a short scripted
# session runs and the commands to do it yourself are printed.
#
# Environment: UKDB_ACCEL=tcg|kvm (default tcg), UKDB_MACHINE=q35|microvm,
# UKDB_PORT (default 1234), UKDB_APPEND (kernel command line, e.g. ukdb.wait).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

cargo build --release --locked -p ukdb-bridge
(cd examples/ukdemo && cargo build --release --locked)
image=examples/ukdemo/target/x86_64-unknown-none/release/ukdemo
accel=${UKDB_ACCEL:-tcg}
machine=${UKDB_MACHINE:-q35}
port=${UKDB_PORT:-1234}
append=${UKDB_APPEND:-}
work=$(mktemp -d)
sock=$work/serial.sock

qemu-system-x86_64 -machine "$machine" -accel "$accel" -m 128M -display none -no-reboot \
    -monitor none -kernel "$image" -append "$append" \
    -serial "unix:$sock,server=on,wait=off" >"$work/qemu.log" 2>&1 &
qemu=$!
target/release/ukdb bridge --target "unix:$sock" --listen "127.0.0.1:$port" \
    --console-log "$work/console.log" >/dev/null 2>"$work/bridge.log" &
bridge=$!
cleanup() {
    kill "$bridge" 2>/dev/null || true
    kill "$qemu" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Wait (up to a minute) for the stub to answer the bridge.
for _ in $(seq 600); do
    grep -q "stub answered" "$work/bridge.log" 2>/dev/null && break
    if ! kill -0 "$qemu" 2>/dev/null; then cat "$work/qemu.log"; exit 1; fi
    sleep 0.1
done
grep -q "stub answered" "$work/bridge.log" || { cat "$work/bridge.log"; exit 1; }

cat <<MSG
ukdemo is running under QEMU ($machine, $accel); the ukdb bridge listens on 127.0.0.1:$port.
  console:  tail -f $work/console.log
  gdb:      gdb $image -ex 'target remote 127.0.0.1:$port'
  lldb:     lldb $image -o 'gdb-remote 127.0.0.1:$port'
MSG

if [ -t 0 ] && [ -t 1 ]; then
    gdb -q "$image" -ex "target remote 127.0.0.1:$port"
else
    gdb -batch -q "$image" -ex "target remote 127.0.0.1:$port" \
        -ex 'break ukdemo::app::tick' -ex 'continue' -ex 'bt' \
        -ex 'info registers rip' -ex 'p ukdemo::app::TICKS' -ex 'detach'
    echo "--- console (last lines)"
    tail -n 5 "$work/console.log"
fi
