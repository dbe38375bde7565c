#!/usr/bin/env bash
# The main job: builds the example unikernel with the ukdb stub and runs it
# with `cargo run --release` in examples/ukdemo, whose runner is
# `ukdb run --net`: QEMU boots it with a virtio-net NIC, the console shows
# on stdout, and gdb attaches straight to the stub over TCP (`ukdb run --net`
# puts ukdb.net=dhcp on the command line: without a key, the network stub
# listens only when ukdb.net= asks it to; see docs/debugging.md, Security).
# Interactive terminal: you get a gdb prompt (quit ends the VM). Otherwise a
# short scripted gdb session runs.
#
# Environment: UKDB_ACCEL=tcg|kvm (default tcg), UKDB_MACHINE=q35|microvm,
# UKDB_APPEND (kernel command line, e.g. ukdb.wait), UKDB_NET=0 (debug over
# the serial line instead).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

cargo build --release --locked -p ukdb-bridge
args=(--machine "${UKDB_MACHINE:-q35}" --append "${UKDB_APPEND:-}")
if [ "${UKDB_ACCEL:-tcg}" = kvm ]; then args+=(--kvm); fi

cd examples/ukdemo
if [ -t 0 ] && [ -t 1 ]; then
    exec cargo run --release --locked -- "${args[@]}"
else
    exec cargo run --release --locked -- "${args[@]}" -- -batch -q \
        -ex 'break ukdemo::app::tick' -ex 'continue' -ex 'bt' \
        -ex 'info registers rip' -ex 'p ukdemo::app::TICKS' -ex 'detach'
fi
