#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (see fuzz/README.md).
#
#   scripts/fuzz.sh smoke [TARGET...]     every target briefly: a fixed number
#                                         of runs each (~15 s), for CI
#   scripts/fuzz.sh long [N] [TARGET...]  each for N executions (default 10^7)
#
# FUZZ_MAX_SECONDS=S caps each target's run at S seconds (0: no cap).
# FUZZ_ARGS="..." adds libFuzzer options to every run (e.g. -max_len=512).
# FUZZ_SANITIZER=none builds without AddressSanitizer (2-4x faster; the
# fuzzed code is safe Rust apart from the stub's audited unsafe blocks, which
# these targets do not reach); the default is cargo-fuzz's (address).
#
# Each run starts from the seeds in fuzz/corpus/TARGET and writes what it
# finds to a scratch corpus (the seeds stay a handful); a crash is saved in
# fuzz/artifacts/TARGET/ and fails the script. Installs nightly Rust and
# cargo-fuzz when missing (scripts/deps.sh fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

all=(rx cmdline paging engine demux crashstream)
# Smoke runs per target: about 15 s each on one core of the CI machine.
declare -A smoke_runs=(
    [rx]=150000 [cmdline]=300000 [paging]=180000
    [engine]=15000 [demux]=120000 [crashstream]=30000
)

mode=${1:-smoke}
shift || true
runs=
if [ "$mode" = long ]; then
    runs=10000000
    if [[ ${1:-} =~ ^[0-9]+$ ]]; then runs=$1; shift; fi
elif [ "$mode" != smoke ]; then
    echo "usage: $0 smoke [TARGET...] | long [N] [TARGET...]" >&2
    exit 2
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

bash scripts/deps.sh fuzz >&2
san=(-s "${FUZZ_SANITIZER:-address}")
cargo +nightly fuzz build "${san[@]}" --fuzz-dir fuzz >&2

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in "${targets[@]}"; do
    n=${runs:-${smoke_runs[$t]:?unknown target $t}}
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    log="$scratch/$t.log"
    # -timeout: one input may walk MAX_LEAVES page-table leaves (slow
    # under the address sanitizer), never longer.
    if cargo +nightly fuzz run "${san[@]}" --fuzz-dir fuzz "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -runs="$n" -max_total_time="${FUZZ_MAX_SECONDS:-0}" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" ${FUZZ_ARGS:-} >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=1
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20 >&2 || true
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    printf 'fuzz %-12s %-6s %10s runs %8s exec/s\n' "$t" "$status" "${execs:-?}" "${rate:-?}"
done
exit "$failed"
