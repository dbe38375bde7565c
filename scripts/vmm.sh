#!/usr/bin/env bash
# The example on Cloud Hypervisor and Firecracker, debugged through
# `ukdb bridge` (issue 10). Run by hand, never by CI: neither VMM is in
# Debian's or crates.io's archives, and both need /dev/kvm.
#
#   scripts/vmm.sh build
#       Finds or builds cloud-hypervisor (v53.0) and firecracker (v1.16.1)
#       into $UKDB_VMM_DIR/bin. Idempotent: a binary that is there and
#       reports the wanted version is kept.
#   scripts/vmm.sh run cloud-hypervisor|firecracker
#       Boots the example (with the stub, ukdb.trap=ud) on the VMM, serial
#       line through `ukdb bridge`, and runs gdb -batch sessions: break, bt,
#       print, stepi, Ctrl-C, detach; a reattach; then, on a second boot, a
#       panic stop. Prints the transcripts, keeps them in
#       $UKDB_VMM_DIR/runs/<vmm>-<time>/.
#   scripts/vmm.sh net cloud-hypervisor|firecracker
#       The network transport: the example's NIC (virtio-net PCI on Cloud
#       Hypervisor, MMIO on Firecracker) on a tap device, shared with the
#       stub at a static address; gdb connects to the guest's port 1234
#       straight, curl to its HTTP server on 8080. Needs root (taps).
#   scripts/vmm.sh net-dedicated cloud-hypervisor|firecracker
#       A dedicated debug NIC: the VM gets two NICs on two taps, the app's
#       (HTTP on 8080) and one the stub drives alone (`ukdb.nic=`: PCI
#       00:02.0 on Cloud Hypervisor, the second MMIO device Firecracker
#       announces, 0xc0002000, on Firecracker), each at its own address;
#       gdb goes straight to the stub's, curl to the app's, before and
#       after; then gdb's Ctrl-C and an lldb session (break, register
#       read, step-inst, detach) over the stub's NIC. Needs root (taps; the
#       ones made here are removed).
#   scripts/vmm.sh boot cloud-hypervisor|firecracker [CMDLINE]
#       Boots the example and leaves you `ukdb bridge` on 127.0.0.1:1234
#       (connect gdb yourself; Ctrl-C ends both).
#
# Environment:
#   UKDB_VMM_DIR  where sources, binaries and runs live (default /work/vmm if
#                 it exists, else ~/.cache/ukdb-vmm)
#   UKDB_IMAGE    the image to boot (default: examples/ukdemo built here)
#   CH_TAG, FC_TAG  the releases to build (default v53.0, v1.16.1)
#
# What `build` needs: git, rustup (the VMMs pin their toolchains: Firecracker
# rust-toolchain.toml; Cloud Hypervisor builds with stable >= 1.89), a C
# compiler, and for Firecracker libclang1-14, libclang-common-14-dev and
# libseccomp-dev (Debian). Sources are cloned from GitHub into
# $UKDB_VMM_DIR/src unless a clone is there already. Firecracker's one git
# dependency, micro_http (and its rust-vmm-ci submodule), is resolved from
# local clones through a git config passed with GIT_CONFIG_GLOBAL
# (url.<clone>.insteadOf), CARGO_NET_GIT_FETCH_WITH_CLI=true and
# protocol.file.allow=always. Firecracker is built for
# x86_64-unknown-linux-gnu (no musl toolchain needed); its build then uses
# an empty seccomp filter, which is fine for a debugging lab, not for
# production.
#
# What `run` needs: /dev/kvm, gdb, socat (Firecracker's serial is its stdio,
# and it reads input only from a tty or a FIFO: socat's `pipes` gives it
# FIFOs, and serves them on a unix socket).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${UKDB_VMM_DIR:-}" ]; then
    if [ -d /work/vmm ]; then UKDB_VMM_DIR=/work/vmm; else UKDB_VMM_DIR="$HOME/.cache/ukdb-vmm"; fi
fi
CH_TAG="${CH_TAG:-v53.0}"
FC_TAG="${FC_TAG:-v1.16.1}"
BIN="$UKDB_VMM_DIR/bin"
SRC="$UKDB_VMM_DIR/src"

die() { echo "vmm.sh: $*" >&2; exit 1; }
say() { echo "vmm.sh: $*" >&2; }

# ---------------------------------------------------------------- build

clone() { # clone NAME URL [TAG]
    local dir="$SRC/$1"
    if [ ! -d "$dir/.git" ]; then
        say "cloning $2 into $dir"
        git clone -q "$2" "$dir"
    fi
    [ -n "${3:-}" ] || return 0
    local tag
    if ! tag="$(git -C "$dir" rev-parse -q --verify "refs/tags/$3^{commit}")"; then
        say "$1: no tag $3, building $(git -C "$dir" rev-parse HEAD)"
    elif [ "$(git -C "$dir" rev-parse HEAD)" != "$tag" ]; then
        git -C "$dir" -c advice.detachedHead=false checkout -q "$3"
    fi
}

# The version a VMM binary reports, or nothing.
version_of() { "$1" --version 2>/dev/null | head -1 || true; }

build_ch() {
    local want="${CH_TAG#v}"
    if [[ "$(version_of "$BIN/cloud-hypervisor")" == *"v$want"* ]]; then
        say "cloud-hypervisor: $(version_of "$BIN/cloud-hypervisor") (kept)"
        return
    fi
    clone cloud-hypervisor https://github.com/cloud-hypervisor/cloud-hypervisor "$CH_TAG"
    (cd "$SRC/cloud-hypervisor" && nice cargo build --release --bin cloud-hypervisor)
    install -m 755 "$SRC/cloud-hypervisor/target/release/cloud-hypervisor" "$BIN/"
    say "cloud-hypervisor: $(version_of "$BIN/cloud-hypervisor")"
}

build_fc() {
    local want="${FC_TAG#v}"
    if [[ "$(version_of "$BIN/firecracker")" == *"v$want"* ]]; then
        say "firecracker: $(version_of "$BIN/firecracker") (kept)"
        return
    fi
    for pkg in libclang1-14 libclang-common-14-dev libseccomp-dev; do
        dpkg -s "$pkg" >/dev/null 2>&1 ||
            die "firecracker needs $pkg (apt-get install -y libclang1-14 libclang-common-14-dev libseccomp-dev)"
    done
    clone firecracker https://github.com/firecracker-microvm/firecracker "$FC_TAG"
    clone micro-http https://github.com/firecracker-microvm/micro-http
    clone rust-vmm-ci https://github.com/rust-vmm/rust-vmm-ci
    local cfg="$UKDB_VMM_DIR/gitconfig"
    cat >"$cfg" <<EOF
[url "$SRC/micro-http"]
	insteadOf = https://github.com/firecracker-microvm/micro-http
[url "$SRC/rust-vmm-ci"]
	insteadOf = https://github.com/rust-vmm/rust-vmm-ci.git
	insteadOf = https://github.com/rust-vmm/rust-vmm-ci
[protocol "file"]
	allow = always
EOF
    (cd "$SRC/firecracker" &&
        GIT_CONFIG_GLOBAL="$cfg" CARGO_NET_GIT_FETCH_WITH_CLI=true \
            nice cargo build --release -p firecracker --bin firecracker \
            --target x86_64-unknown-linux-gnu)
    install -m 755 \
        "$SRC/firecracker/build/cargo_target/x86_64-unknown-linux-gnu/release/firecracker" "$BIN/"
    say "firecracker: $(version_of "$BIN/firecracker")"
}

cmd_build() {
    command -v git >/dev/null || die "git is needed"
    command -v cargo >/dev/null || die "cargo (rustup) is needed"
    mkdir -p "$BIN" "$SRC"
    build_ch
    build_fc
}

# ---------------------------------------------------------------- run

PIDS=()
TAPS=() # taps made here for one run only (net-dedicated), removed by cleanup
cleanup() {
    local pid tap
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    for tap in "${TAPS[@]}"; do ip link del "$tap" 2>/dev/null || true; done
    TAPS=()
}
trap cleanup EXIT

# wait_for FILE REGEX SECONDS: polls FILE until REGEX matches (grep -E).
wait_for() {
    local end=$((SECONDS + $3))
    until grep -Eq -- "$2" "$1" 2>/dev/null; do
        [ $SECONDS -lt "$end" ] || {
            echo "--- $1:" >&2
            tail -20 "$1" >&2 || true
            die "timed out waiting for /$2/ in $1"
        }
        sleep 0.1
    done
}

vmm_bin() { # the VMM binary: $BIN, then PATH
    if [ -x "$BIN/$1" ]; then echo "$BIN/$1"; elif command -v "$1" >/dev/null; then command -v "$1"; else
        die "no $1 in $BIN or on PATH: run scripts/vmm.sh build"
    fi
}

image() {
    if [ -n "${UKDB_IMAGE:-}" ]; then echo "$UKDB_IMAGE"; return; fi
    (cd "$ROOT/examples/ukdemo" && cargo build --release --locked -q) >&2
    echo "$ROOT/examples/ukdemo/target/x86_64-unknown-none/release/ukdemo"
}

# Taps and addresses of `net`: the host end is .1, the guest .2.
CH_TAP=ukdbch0 CH_NET=172.17.0
FC_TAP=ukdbfc0 FC_NET=172.18.0
# The stub's dedicated NIC (`net-dedicated`): a second tap and subnet, and
# where the guest finds the device. Cloud Hypervisor puts its `--net`
# devices on PCI bus 0 in order from 00:01.0; Firecracker its network
# interfaces in order from 0xc0001000, one 4 KiB window each, and says so
# on the command line (virtio_mmio.device=4K@0xc0002000:6).
CH_DBG_TAP=ukdbch1 CH_DBG_NET=172.19.0 CH_DBG_NIC=pci:00:02.0
FC_DBG_TAP=ukdbfc1 FC_DBG_NET=172.20.0 FC_DBG_NIC=mmio:0xc0002000

# fc_tap NAME NET: a tap for Firecracker (which takes an existing one), the
# host at NET.1; with `once`, removed again by cleanup.
fc_tap() {
    if ! ip link show "$1" >/dev/null 2>&1; then
        ip tuntap add "$1" mode tap
        ip addr add "$2.1/24" dev "$1"
        [ "${3:-}" != once ] || TAPS+=("$1")
    fi
    ip link set "$1" up
}

# boot_vmm VMM DIR CMDLINE [net|dedicated]: starts the VMM with the example,
# its serial line on DIR/serial.sock (a unix socket for `ukdb bridge
# --target unix:`); with `net`, a virtio-net NIC on the VMM's tap; with
# `dedicated`, a second one on the second tap, for the stub.
boot_vmm() {
    local vmm="$1" dir="$2" cmdline="$3" net="${4:-}" img
    img="$(image)"
    rm -f "$dir/serial.sock"
    case "$vmm" in
    cloud-hypervisor)
        local nic=()
        # Cloud Hypervisor creates the tap and gives it the host address.
        [ -z "$net" ] || nic=(--net "tap=$CH_TAP,ip=$CH_NET.1,mask=255.255.255.0,mac=12:34:56:78:90:ab")
        [ "$net" != dedicated ] ||
            nic+=("tap=$CH_DBG_TAP,ip=$CH_DBG_NET.1,mask=255.255.255.0,mac=12:34:56:78:90:ac")
        "$(vmm_bin cloud-hypervisor)" --kernel "$img" --cmdline "$cmdline" \
            --serial "socket=$dir/serial.sock" --console off \
            --cpus boot=1 --memory size=128M "${nic[@]}" >"$dir/vmm.log" 2>&1 &
        PIDS+=($!)
        ;;
    firecracker)
        local nic=""
        if [ -n "$net" ]; then
            # Firecracker takes an existing tap; it announces the MMIO
            # device on the command line (virtio_mmio.device=4K@ADDR:IRQ).
            local once=""
            [ "$net" != dedicated ] || once=once
            fc_tap "$FC_TAP" "$FC_NET" $once
            nic=', "network-interfaces": [ { "iface_id": "eth0", "guest_mac": "06:00:ac:12:00:02", "host_dev_name": "'"$FC_TAP"'" }'
            if [ "$net" = dedicated ]; then
                fc_tap "$FC_DBG_TAP" "$FC_DBG_NET" once
                nic+=', { "iface_id": "eth1", "guest_mac": "06:00:ac:14:00:02", "host_dev_name": "'"$FC_DBG_TAP"'" }'
            fi
            nic+=' ]'
        fi
        cat >"$dir/firecracker.json" <<EOF
{
  "boot-source": { "kernel_image_path": "$img", "boot_args": "$cmdline" },
  "drives": [],
  "machine-config": { "vcpu_count": 1, "mem_size_mib": 128 }$nic
}
EOF
        : >"$dir/firecracker.log"
        # Firecracker starts when the bridge connects; its stdio (the
        # serial line) are socat's pipes.
        socat "UNIX-LISTEN:$dir/serial.sock,unlink-early" \
            "EXEC:$(vmm_bin firecracker) --no-api --id ukdemo --config-file $dir/firecracker.json --log-path $dir/firecracker.log --level Info,pipes" \
            2>"$dir/vmm.log" &
        PIDS+=($!)
        ;;
    *) die "unknown VMM $vmm (cloud-hypervisor or firecracker)" ;;
    esac
    local end=$((SECONDS + 30))
    until [ -S "$dir/serial.sock" ]; do
        [ $SECONDS -lt $end ] || die "no serial socket from $vmm: $(cat "$dir/vmm.log")"
        sleep 0.1
    done
}

# bridge DIR [LISTEN]: `ukdb bridge` on DIR/serial.sock; console in
# DIR/console.txt, messages in DIR/bridge.log; sets ADDR.
bridge() {
    local dir="$1" listen="${2:-127.0.0.1:0}"
    (cd "$ROOT" && cargo build --release --locked -q -p ukdb-bridge) >&2
    "$ROOT/target/release/ukdb" bridge --target "unix:$dir/serial.sock" --listen "$listen" \
        >"$dir/console.txt" 2>"$dir/bridge.log" &
    PIDS+=($!)
    wait_for "$dir/bridge.log" "ukdb: listening on " 30
    wait_for "$dir/bridge.log" "ukdb: stub answered; framing on" 60
    ADDR="$(sed -n 's/^ukdb: listening on //p' "$dir/bridge.log" | head -1)"
}

app_lines() { grep -Ec '^line [0-9]+ ticks [0-9]+' "$1" || true; }

# gdb_session NAME IMAGE CMD...: gdb -batch on $ADDR; transcript in
# $DIR/NAME.txt. In the background when GDB_BG=1 (then GDB_PID is set).
gdb_session() {
    local name="$1" img="$2"
    shift 2
    local args=(-batch -nx -ex 'set pagination off' -ex 'set confirm off' "$img"
        -ex "target remote $ADDR")
    local c
    for c in "$@"; do args+=(-ex "$c"); done
    if [ "${GDB_BG:-0}" = 1 ]; then
        gdb "${args[@]}" >"$DIR/$name.txt" 2>&1 &
        GDB_PID=$!
    else
        gdb "${args[@]}" >"$DIR/$name.txt" 2>&1
    fi
}

# lldb_session NAME IMAGE CMD...: lldb --batch on $ADDR; transcript in
# $DIR/NAME.txt.
lldb_session() {
    local name="$1" img="$2"
    shift 2
    local args=(--no-lldbinit --batch -o "target create $img" -o "gdb-remote $ADDR")
    local c
    for c in "$@"; do args+=(-o "$c"); done
    lldb "${args[@]}" >"$DIR/$name.txt" 2>&1
}

# interrupt_when_running NAME: once the background gdb (GDB_BG=1) has
# echoed "(running: Ctrl-C next)" and the console shows the app going on,
# Ctrl-C it; waits for it to end.
interrupt_when_running() {
    wait_for "$DIR/$1.txt" "^\(running: Ctrl-C next\)" 60
    local have end
    have="$(app_lines "$DIR/console.txt")"
    end=$((SECONDS + 30))
    until [ "$(app_lines "$DIR/console.txt")" -gt "$have" ]; do
        [ $SECONDS -lt $end ] || die "the app did not run on after continue"
        sleep 0.1
    done
    kill -INT "$GDB_PID"
    wait "$GDB_PID" || die "gdb failed: $(cat "$DIR/$1.txt")"
}

show() { echo "=== $1"; cat "$DIR/$1.txt"; echo; }

# open_run VMM NAME: the image ($IMG), the VMM's version ($VERSION, also in
# version.txt) and a new run directory ($DIR, runs/NAME-TIME).
open_run() {
    IMG="$(image)"
    VERSION="$(version_of "$(vmm_bin "$1")")"
    DIR="$UKDB_VMM_DIR/runs/$2-$(date -u +%Y%m%dT%H%M%S)"
    mkdir -p "$DIR"
    say "$VERSION; transcripts in $DIR"
    echo "$VERSION" >"$DIR/version.txt"
}

cmd_run() {
    local vmm="$1"
    command -v gdb >/dev/null || die "gdb is needed"
    [ "$vmm" != firecracker ] || command -v socat >/dev/null || die "socat is needed"
    open_run "$vmm" "$vmm"

    # 1. break, bt, print, stepi, Ctrl-C, detach.
    boot_vmm "$vmm" "$DIR" "ukdb.trap=ud ukdemo.rate=10"
    bridge "$DIR"
    wait_for "$DIR/console.txt" "ukdemo: booted" 30
    wait_for "$DIR/console.txt" "^line 3 ticks " 30
    GDB_BG=1 gdb_session 1-break "$IMG" \
        'break ukdemo::app::tick' 'continue' 'bt' 'p n' 'p ukdemo::app::TICKS' \
        'stepi' 'x/i $pc' 'delete' 'echo (running: Ctrl-C next)\n' 'continue' 'bt 1' \
        'detach'
    # Ctrl-C: once gdb runs the unikernel again (after its echo) and the
    # console shows the app going on, interrupt gdb.
    interrupt_when_running 1-break
    show 1-break

    # 2. Detached, the app runs; a second gdb attaches, breaks, detaches.
    local have end
    have="$(app_lines "$DIR/console.txt")"
    end=$((SECONDS + 30))
    until [ "$(app_lines "$DIR/console.txt")" -gt $((have + 1)) ]; do
        [ $SECONDS -lt $end ] || die "the app did not run on after detach"
        sleep 0.1
    done
    gdb_session 2-reattach "$IMG" 'break ukdemo::app::tick' 'continue' 'p n' \
        'info registers rip rsp cs ss' 'detach'
    show 2-reattach
    cleanup

    # 3. A panic stop, on a second boot.
    mkdir -p "$DIR/panic"
    local top="$DIR"
    DIR="$DIR/panic"
    boot_vmm "$vmm" "$DIR" "ukdb.trap=ud ukdemo.rate=10 ukdemo.panic=5"
    bridge "$DIR"
    wait_for "$DIR/console.txt" "tick 5 asked to panic" 60
    gdb_session 3-panic "$IMG" 'bt' 'monitor why' 'detach'
    show 3-panic
    cleanup
    DIR="$top"
    echo "=== console (first boot)"
    head -5 "$DIR/console.txt"
    echo "=== $VERSION; $(grep -c . "$DIR/console.txt") console lines; transcripts in $DIR"
}

# start_net_run VMM KIND NICS CMDLINE: the preamble of `net` and
# `net-dedicated`: checks, the image, a run directory ($DIR, named
# VMM-KIND-TIME), a boot with NICS ("net" or "dedicated") and the serial
# console captured raw in console.txt (the network stub does not use it).
start_net_run() {
    local vmm="$1" kind="$2" nics="$3" cmdline="$4"
    command -v gdb >/dev/null || die "gdb is needed"
    command -v curl >/dev/null || die "curl is needed"
    [ "$(id -u)" = 0 ] || die "$kind needs root (tap devices)"
    open_run "$vmm" "$vmm-$kind"
    boot_vmm "$vmm" "$DIR" "$cmdline" "$nics"
    socat -u "UNIX-CONNECT:$DIR/serial.sock" - >"$DIR/console.txt" 2>/dev/null &
    PIDS+=($!)
}

# fetch_app URL: the app's page, after the command that fetched it.
fetch_app() { echo "\$ curl $1"; curl -sS -m 10 "$1"; echo; }

cmd_net() {
    local vmm="$1" guest
    case "$vmm" in cloud-hypervisor) guest="$CH_NET.2" ;; *) guest="$FC_NET.2" ;; esac
    start_net_run "$vmm" net net "ukdb.trap=ud ukdemo.rate=10 ukdemo.ip=$guest/24 ukdb.net=$guest/24"
    wait_for "$DIR/console.txt" "ukdb: stub ready on virtio-net" 60
    wait_for "$DIR/console.txt" "^line 3 ticks " 30
    ADDR="$guest:1234"
    fetch_app "http://$guest:8080/" >"$DIR/4-net.txt"
    gdb_session 4-net-gdb "$IMG" 'break ukdemo::app::tick' 'continue' 'bt' 'p n' 'stepi' \
        'detach'
    cat "$DIR/4-net-gdb.txt" >>"$DIR/4-net.txt"
    fetch_app "http://$guest:8080/" >>"$DIR/4-net.txt"
    show 4-net
    echo "=== console"
    head -6 "$DIR/console.txt"
    cleanup
}

cmd_net_dedicated() {
    local vmm="$1" app stub nic
    case "$vmm" in
    cloud-hypervisor) app="$CH_NET.2" stub="$CH_DBG_NET.2" nic="$CH_DBG_NIC" ;;
    *) app="$FC_NET.2" stub="$FC_DBG_NET.2" nic="$FC_DBG_NIC" ;;
    esac
    start_net_run "$vmm" dedicated dedicated \
        "ukdb.trap=ud ukdemo.rate=10 ukdemo.ip=$app/24 ukdb.nic=$nic ukdb.net=$stub/24"
    wait_for "$DIR/console.txt" "ukdb: stub ready on virtio-net $stub:1234" 60
    wait_for "$DIR/console.txt" "http on port 8080" 30
    wait_for "$DIR/console.txt" "^line 3 ticks " 30
    ADDR="$stub:1234"
    local out="$DIR/5-dedicated.txt"
    fetch_app "http://$app:8080/" >"$out"
    echo "\$ gdb -batch IMAGE -ex 'target remote $ADDR' ..." >>"$out"
    gdb_session 5-dedicated-gdb "$IMG" 'break ukdemo::app::tick' 'continue' 'bt' \
        'p n' 'p ukdemo::app::TICKS' 'stepi' 'x/i $pc' 'delete' 'detach' ||
        say "gdb failed (checked below)"
    cat "$DIR/5-dedicated-gdb.txt" >>"$out"
    fetch_app "http://$app:8080/" >>"$out"
    show 5-dedicated
    # Ctrl-C over the stub's NIC, then lldb.
    GDB_BG=1 gdb_session 6-dedicated-ctrl-c "$IMG" 'echo (running: Ctrl-C next)\n' \
        'continue' 'bt 1' 'detach'
    interrupt_when_running 6-dedicated-ctrl-c
    show 6-dedicated-ctrl-c
    lldb_session 7-dedicated-lldb "$IMG" 'breakpoint set --name ukdemo::app::tick' 'continue' \
        'bt 1' 'register read rip' 'thread step-inst' 'breakpoint delete --force' 'process detach' ||
        say "lldb failed (checked below)"
    show 7-dedicated-lldb
    echo "=== console"
    head -5 "$DIR/console.txt"
    cleanup
    local t
    for t in 5-dedicated-gdb 6-dedicated-ctrl-c; do
        grep -q '^\[Inferior 1 (process 1) detached\]' "$DIR/$t.txt" ||
            die "$t: the gdb session did not end in a detach"
    done
    grep -q 'received signal SIGINT\|stopped' "$DIR/6-dedicated-ctrl-c.txt" ||
        die "Ctrl-C did not stop the unikernel"
    grep -q 'stop reason = breakpoint 1.1' "$DIR/7-dedicated-lldb.txt" ||
        die "lldb did not stop at the breakpoint"
    grep -q 'Process 1 detached' "$DIR/7-dedicated-lldb.txt" || die "lldb did not detach"
    # The app's page is `TICKS n`.
    [ "$(grep -c '^TICKS [0-9]' "$out")" = 2 ] || die "the app's HTTP server did not answer twice"
    echo "=== $VERSION; transcripts in $DIR"
}

cmd_boot() {
    local vmm="$1" cmdline="${2:-ukdb.trap=ud}"
    DIR="$(mktemp -d)"
    boot_vmm "$vmm" "$DIR" "$cmdline"
    say "serial line: unix:$DIR/serial.sock; bridge on 127.0.0.1:1234 (gdb -ex 'target remote 127.0.0.1:1234' IMAGE)"
    (cd "$ROOT" && cargo build --release --locked -q -p ukdb-bridge)
    "$ROOT/target/release/ukdb" bridge --target "unix:$DIR/serial.sock" --listen 127.0.0.1:1234
}

case "${1:-}" in
build) cmd_build ;;
run) cmd_run "${2:?cloud-hypervisor or firecracker}" ;;
net) cmd_net "${2:?cloud-hypervisor or firecracker}" ;;
net-dedicated) cmd_net_dedicated "${2:?cloud-hypervisor or firecracker}" ;;
boot) cmd_boot "${2:?cloud-hypervisor or firecracker}" "${3:-}" ;;
*) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
