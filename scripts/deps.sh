#!/usr/bin/env bash
# Installs what building and testing ukdb needs on a Debian machine:
# QEMU, gdb and lldb from Debian, and the pinned Rust toolchain with the
# bare-metal target. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v gdb >/dev/null || missing+=(gdb)
command -v lldb >/dev/null || missing+=(lldb)
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup run "$toolchain" rustc --print target-libdir --target x86_64-unknown-none >/dev/null 2>&1 \
    || ! rustup run "$toolchain" cargo clippy --version >/dev/null 2>&1 \
    || ! rustup run "$toolchain" cargo fmt --version >/dev/null 2>&1; then
    echo "deps: installing Rust $toolchain with x86_64-unknown-none"
    rustup toolchain install "$toolchain" --profile minimal \
        --component rustfmt,clippy --target x86_64-unknown-none
fi
# The sysroot directory exists only once the target's std is installed.
if [ ! -d "$(rustup run "$toolchain" rustc --print target-libdir --target x86_64-unknown-none)" ]; then
    rustup target add --toolchain "$toolchain" x86_64-unknown-none
fi

# `deps.sh fuzz` (scripts/fuzz.sh): also a nightly toolchain and cargo-fuzz,
# for the fuzz targets in fuzz/ (libFuzzer and sanitizers need nightly).
if [ "${1:-}" = fuzz ]; then
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        echo "deps: installing Rust nightly (fuzzing)"
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "deps: installing cargo-fuzz"
        cargo install cargo-fuzz --locked
    fi
fi
