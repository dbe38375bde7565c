#!/usr/bin/env bash
# Cargo's runner for examples/ukdemo (its .cargo/config.toml): `cargo run`
# calls it with the image's path and the arguments after `--`. It builds
# `ukdb` when needed and boots the image with `ukdb run --net IMAGE ARGS...`,
# so ARGS may hold ukdb run's options (e.g. --lldb, --machine microvm,
# --no-debugger) and, after a second `--`, the debugger's:
#
#     cargo run --release -- --lldb
#     cargo run --release -- -- -batch -ex 'break ukdemo::app::tick' -ex continue -ex bt
#
# UKDB_NET=0 debugs over the serial line instead of the network.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image=$1
shift
# From the repository root: the example's .cargo/config.toml (bare-metal
# target) must not apply to the host tool.
(cd "$root" && cargo build --release --quiet -p ukdb-bridge)
net=(--net)
if [ "${UKDB_NET:-1}" = 0 ]; then net=(); fi
exec "$root/target/release/ukdb" run "${net[@]}" "$image" "$@"
