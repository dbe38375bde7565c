#!/usr/bin/env bash
# The test command: formatting and lints for the host and the bare-metal
# target (stub with and without its feature), unit tests, the bridge's
# tests, and the end-to-end tests (QEMU under TCG, real gdb and lldb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check
(cd examples/ukdemo && cargo fmt -- --check)
(cd examples/x86_64-idt && cargo fmt -- --check)

step "lints: host"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p ukdb-stub --features enabled --all-targets --locked -- -D warnings

step "lints and builds: x86_64-unknown-none (stub without and with its feature, the examples)"
cargo clippy -p ukdb-stub --target x86_64-unknown-none --locked -- -D warnings
cargo clippy -p ukdb-stub --features enabled --target x86_64-unknown-none --locked -- -D warnings
cargo clippy -p ukdb-stub --features dump --target x86_64-unknown-none --locked -- -D warnings
(cd examples/ukdemo && cargo clippy --release --locked -- -D warnings \
    && cargo clippy --release --locked --no-default-features -- -D warnings \
    && cargo clippy --release --locked --no-default-features --features dump -- -D warnings)
# The x86_64-crate integration example (docs/debugging.md quotes it): lints
# and links, with and without the stub; it is not booted.
(cd examples/x86_64-idt && cargo clippy --release --locked -- -D warnings \
    && cargo clippy --release --locked --no-default-features -- -D warnings \
    && cargo build --release --locked)

step "docs: the stub's API docs build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --locked -q -p ukdb-stub --no-deps
RUSTDOCFLAGS="-D warnings" cargo doc --locked -q -p ukdb-stub --features enabled --no-deps
RUSTDOCFLAGS="-D warnings" cargo doc --locked -q -p ukdb-stub --features dump --no-deps

step "build: bridge and the example images: full, production, dump-only (once for all tests)"
cargo build --release --locked -p ukdb-bridge
(cd examples/ukdemo && cargo build --release --locked \
    && cargo build --release --locked --no-default-features --target-dir target/production \
    && cargo build --release --locked --no-default-features --features dump --target-dir target/dumponly)

step "tests: stub logic (without and with the feature), bridge, end to end"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run_tests() { cargo test --locked "$@" 2>&1 | tee -a "$log"; }
run_tests -p ukdb-stub
run_tests -p ukdb-stub --features enabled
run_tests -p ukdb-bridge
run_tests -p ukdb-tests -- --show-output

step "fuzz smoke: every fuzz target briefly (fuzz/, nightly + cargo-fuzz)"
(cd fuzz && cargo fmt -- --check && cargo clippy --locked --all-targets -- -D warnings)
bash scripts/fuzz.sh smoke

# One closing line for the whole run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nall tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$log"
