//! The end-to-end harness: builds the example unikernel and the bridge once
//! per test run, boots QEMU under TCG with the serial line on a unix socket,
//! starts `ukdb bridge`, and drives real gdb and lldb in batch mode.
//!
//! Every wait is for a condition with a deadline ([`DEADLINE`]); nothing
//! sleeps to synchronise.

pub mod capture;
pub mod noise;
pub mod qmp;
pub mod raw;
pub mod xen;

use regex::Regex;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long any one expected event may take. Generous: TCG on a loaded
/// 2-core machine, with two VMs booting at once.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// What the tests run.
#[derive(Debug)]
pub struct Artifacts {
    /// `target/release/ukdb`.
    pub ukdb: PathBuf,
    /// The example image with the stub.
    pub image: PathBuf,
    /// The example image without it (production).
    pub production: PathBuf,
}

fn cargo(dir: &Path, args: &[&str]) {
    let status =
        Command::new("cargo").args(args).current_dir(dir).status().expect("cannot run cargo");
    assert!(status.success(), "cargo {} failed in {}", args.join(" "), dir.display());
}

/// Builds the bridge and both images, once per test binary.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let root = root();
        // A release build takes a different lock than the test build that
        // runs this, so it does not wait for it.
        cargo(&root, &["build", "--release", "-p", "ukdb-bridge"]);
        let example = root.join("examples/ukdemo");
        cargo(&example, &["build", "--release"]);
        cargo(
            &example,
            &["build", "--release", "--no-default-features", "--target-dir", "target/production"],
        );
        Artifacts {
            ukdb: root.join("target/release/ukdb"),
            image: example.join("target/x86_64-unknown-none/release/ukdemo"),
            production: example.join("target/production/x86_64-unknown-none/release/ukdemo"),
        }
    })
}

/// The example image with the stub, built in the dev profile (no
/// inlining: the UART's byte write is a function of its own), once per test
/// binary.
pub fn dev_image() -> &'static Path {
    static DEV: OnceLock<PathBuf> = OnceLock::new();
    DEV.get_or_init(|| {
        let example = root().join("examples/ukdemo");
        cargo(&example, &["build"]);
        example.join("target/x86_64-unknown-none/debug/ukdemo")
    })
}

/// The example image with crash dumps and no debugger code
/// (`--no-default-features --features dump`), built once per test binary
/// into `target/dumponly`, where scripts/test.sh builds it too.
pub fn dumponly_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let example = root().join("examples/ukdemo");
        cargo(
            &example,
            &[
                "build",
                "--release",
                "--no-default-features",
                "--features",
                "dump",
                "--target-dir",
                "target/dumponly",
            ],
        );
        example.join("target/dumponly/x86_64-unknown-none/release/ukdemo")
    })
}

/// A process's text output as a reader thread appends it, line by line,
/// with a way to wait for it: [`capture::Capture`] seen as whole lines of
/// text.
#[derive(Default)]
pub struct Output {
    capture: capture::Capture,
}

impl Output {
    /// Appends everything `source` yields, from a thread, until it ends.
    pub fn spawn_reader(self: &Arc<Self>, source: impl Read + Send + 'static) {
        self.capture.read_from(source, |_| {});
    }

    /// Every whole line so far.
    pub fn text(&self) -> String {
        capture::whole_lines(&self.capture.bytes(), false).into_owned()
    }

    /// Waits for the end of the stream; returns everything.
    pub fn wait_closed(&self, what: &str) -> String {
        let bytes = self.capture.wait_closed(what);
        capture::whole_lines(&bytes, true).into_owned()
    }

    /// Waits until `pred` holds for the whole lines so far; panics with
    /// `what` and the output at the deadline.
    pub fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let bytes = self.capture.wait(what, |b, closed| pred(&capture::whole_lines(b, closed)));
        capture::whole_lines(&bytes, false).into_owned()
    }
}

/// Connects to a unix socket QEMU serves, retrying until [`DEADLINE`]: QEMU
/// creates the socket file a moment before it listens on it.
pub fn connect_unix(path: &Path) -> std::os::unix::net::UnixStream {
    let end = Instant::now() + DEADLINE;
    loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(sock) => return sock,
            Err(e) => assert!(Instant::now() < end, "cannot connect to {}: {e}", path.display()),
        }
        std::thread::yield_now();
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// Waits for exit, with the deadline.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let id = self.0.id();
        self.wait_exit_or(|| format!("process {id} did not exit"))
    }

    /// Waits for exit, with the deadline; `why` says what went wrong when
    /// it passes.
    pub fn wait_exit_or(&mut self, why: impl Fn() -> String) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "{}", why());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A QEMU virtual machine running an image, its serial line on a socket.
pub struct Vm {
    _proc: Proc,
    /// The serial line's unix socket.
    pub sock: PathBuf,
    /// QEMU's own output.
    pub log: PathBuf,
    dir: tempfile::TempDir,
}

impl Vm {
    /// Boots `image` on `machine` (`q35` or `microvm`) under TCG with the
    /// kernel command line `append`.
    pub fn boot(machine: &str, image: &Path, append: &str) -> Vm {
        Self::boot_with(machine, image, append, &[])
    }

    /// [`Vm::boot`] with `extra` arguments added to QEMU's command line (for
    /// example `-gdb tcp:127.0.0.1:PORT` for QEMU's own gdbstub).
    pub fn boot_with(machine: &str, image: &Path, append: &str, extra: &[&str]) -> Vm {
        Self::boot_opts(machine, image, append, extra, true)
    }

    /// [`Vm::boot_with`]; with `no_reboot` false, a reset (a triple fault,
    /// QMP `system_reset`) restarts the guest instead of ending QEMU.
    pub fn boot_opts(
        machine: &str,
        image: &Path,
        append: &str,
        extra: &[&str],
        no_reboot: bool,
    ) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("serial.sock");
        let log = dir.path().join("qemu.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", machine, "-accel", "tcg", "-m", "128M", "-display", "none"])
            .args(if no_reboot { &["-no-reboot"][..] } else { &[][..] })
            .args(["-monitor", "none", "-kernel"])
            .arg(image)
            .args(["-append", append, "-serial"])
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("cannot start qemu-system-x86_64");
        let mut vm = Vm { _proc: Proc(child), sock, log, dir };
        let end = Instant::now() + DEADLINE;
        while !vm.sock.exists() {
            if let Some(status) = vm._proc.0.try_wait().unwrap() {
                panic!("qemu exited ({status}): {}", std::fs::read_to_string(&vm.log).unwrap());
            }
            assert!(Instant::now() < end, "qemu did not create {}", vm.sock.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        vm
    }

    /// A scratch directory that lives as long as the VM.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `ukdb bridge` attached to a VM's serial line.
pub struct Bridge {
    /// The bridge process.
    pub proc: Proc,
    /// Where debuggers connect: `HOST:PORT`, or `unix:PATH`.
    pub addr: String,
    /// The unikernel's console, as the bridge prints it.
    pub console: Arc<Output>,
    /// The bridge's messages.
    pub stderr: Arc<Output>,
}

impl Bridge {
    /// Starts the bridge and waits until it listens and the stub answered.
    pub fn start(vm: &Vm) -> Bridge {
        Self::start_with(vm, &[])
    }

    /// [`Bridge::start`] with more arguments for `ukdb bridge`.
    pub fn start_with(vm: &Vm, extra: &[&str]) -> Bridge {
        let bridge = Self::start_unsynced(vm, extra);
        bridge
            .stderr
            .wait("the stub to answer", |t| t.contains("ukdb: stub answered; framing on\n"));
        bridge
    }

    /// Starts the bridge and waits until it listens.
    pub fn start_unsynced(vm: &Vm, extra: &[&str]) -> Bridge {
        Self::start_unsynced_at(&vm.sock, extra)
    }

    /// [`Bridge::start_unsynced`] with the serial line at `sock` (for
    /// example a relay in front of the VM's socket).
    pub fn start_unsynced_at(sock: &Path, extra: &[&str]) -> Bridge {
        Self::start_unsynced_target(&format!("unix:{}", sock.display()), extra, &[])
    }

    /// `ukdb bridge --target TARGET EXTRA`, with `env` added to its
    /// environment, once the stub answered.
    pub fn start_target(target: &str, env: &[(&str, &str)]) -> Bridge {
        let bridge = Self::start_unsynced_target(target, &[], env);
        bridge
            .stderr
            .wait("the stub to answer", |t| t.contains("ukdb: stub answered; framing on\n"));
        bridge
    }

    fn start_unsynced_target(target: &str, extra: &[&str], env: &[(&str, &str)]) -> Bridge {
        let mut args = vec!["--target", target];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        Self::spawn(&args, env)
    }

    /// `ukdb bridge --net` in front of a network stub at `stub`
    /// (`HOST:PORT`), listening on a free port; waits until it listens.
    pub fn start_net(stub: &str) -> Bridge {
        Self::spawn(&["--net", "--target", &format!("tcp:{stub}"), "--listen", "127.0.0.1:0"], &[])
    }

    /// `ukdb bridge ARGS`, once it says where it listens.
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Bridge {
        let mut child = Command::new(&artifacts().ukdb)
            .arg("bridge")
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start ukdb");
        let console = Arc::new(Output::default());
        let stderr = Arc::new(Output::default());
        console.spawn_reader(child.stdout.take().unwrap());
        stderr.spawn_reader(child.stderr.take().unwrap());
        let text = stderr.wait("the bridge to listen", |t| t.contains("ukdb: listening on "));
        let addr =
            text.lines().find_map(|l| l.strip_prefix("ukdb: listening on ")).unwrap().to_string();
        Bridge { proc: Proc(child), addr, console, stderr }
    }

    /// Waits for `n` more console lines of the app than there are now, and
    /// returns all of them.
    pub fn wait_more_lines(&self, n: usize) -> Vec<(u64, u64)> {
        let have = app_lines(&self.console.text()).len();
        let text =
            self.console.wait(&format!("{n} more app lines"), |t| app_lines(t).len() >= have + n);
        app_lines(&text)
    }
}

impl Bridge {
    /// Asserts that the bridge process still runs.
    pub fn assert_up(&mut self, what: &str) {
        if let Some(status) = self.proc.0.try_wait().unwrap() {
            panic!("{what}: the bridge exited ({status}):\n{}", self.stderr.text());
        }
    }

    /// Waits for `n` more app lines and asserts that every app line so far
    /// is numbered without a gap (the unikernel runs, no console byte lost).
    pub fn assert_runs_gap_free(&self, n: usize, what: &str) {
        let lines = self.wait_more_lines(n);
        assert_gap_free(&lines, what);
    }
}

/// Asserts that consecutive app lines are numbered consecutively.
pub fn assert_gap_free(lines: &[(u64, u64)], what: &str) {
    for w in lines.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].0 + 1,
            "{what}: console lines not gap-free: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
}

/// The app's console lines, `line N ticks T`, as (N, T).
pub fn app_lines(console: &str) -> Vec<(u64, u64)> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("line ")?;
            let (n, t) = rest.split_once(" ticks ")?;
            Some((n.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

/// A debugger process with its stdout and stderr in one [`Output`], in the
/// order it wrote them.
pub struct Debugger {
    /// The process.
    pub proc: Proc,
    /// What it printed.
    pub out: Arc<Output>,
}

impl Debugger {
    fn spawn(mut cmd: Command) -> Debugger {
        let (reader, writer) = std::io::pipe().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .spawn()
            .expect("cannot start the debugger");
        drop(cmd);
        let out = Arc::new(Output::default());
        out.spawn_reader(reader);
        Debugger { proc: Proc(child), out }
    }

    /// gdb in batch mode: `target remote` to `remote`, then `cmds`.
    pub fn gdb(image: &Path, remote: &str, cmds: &[&str]) -> Debugger {
        Self::gdb_with(image, remote, &[], cmds)
    }

    /// [`Debugger::gdb`] with `init` commands run before the image is
    /// loaded (`-iex`: `set remotetimeout 20`, say).
    pub fn gdb_with(image: &Path, remote: &str, init: &[&str], cmds: &[&str]) -> Debugger {
        let mut cmd = Command::new("gdb");
        cmd.args(["-batch", "-nx"]);
        for c in init {
            cmd.args(["-iex", c]);
        }
        cmd.args(["-ex", "set pagination off", "-ex", "set confirm off"]);
        cmd.arg(image);
        cmd.args(["-ex", &format!("target remote {remote}")]);
        for c in cmds {
            cmd.args(["-ex", c]);
        }
        Self::spawn(cmd)
    }

    /// lldb in batch mode: the image, `gdb-remote` to `remote`, then `cmds`.
    pub fn lldb(image: &Path, remote: &str, cmds: &[&str]) -> Debugger {
        let mut cmd = Command::new("lldb");
        cmd.args(["--no-lldbinit", "--batch", "-o"]);
        cmd.arg(format!("target create {}", image.display()));
        cmd.args(["-o", &format!("gdb-remote {remote}")]);
        for c in cmds {
            cmd.args(["-o", c]);
        }
        Self::spawn(cmd)
    }

    /// Waits for the debugger to exit successfully; returns its transcript.
    pub fn finish(self) -> String {
        self.finish_or(String::new)
    }

    /// [`Debugger::finish`], with `more` added to the report when the
    /// debugger does not finish.
    pub fn finish_or(mut self, more: impl Fn() -> String) -> String {
        let out = Arc::clone(&self.out);
        let status = self
            .proc
            .wait_exit_or(|| format!("the debugger did not finish:\n{}\n{}", out.text(), more()));
        let text = self.out.wait_closed("the debugger's output to end");
        assert!(status.success(), "debugger failed ({status}):\n{text}");
        text
    }
}

/// Asserts that `actual` is `expected` line for line, where `expected` may
/// use `{hex}` (a 0x number), `{n}` (a decimal number) and `{*}` (anything
/// on that line). Blank lines count.
pub fn assert_transcript(actual: &str, expected: &str) {
    let pattern = |line: &str| {
        let escaped = regex::escape(line);
        let re = escaped
            .replace(r"\{hex\}", "0x[0-9a-f]+")
            .replace(r"\{n\}", "[0-9]+")
            .replace(r"\{\*\}", ".*");
        Regex::new(&format!("^{re}$")).unwrap()
    };
    let want: Vec<&str> = expected.lines().collect();
    let got: Vec<&str> = actual.lines().collect();
    let ok = want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| pattern(w).is_match(g));
    if !ok {
        let mut report = String::new();
        for i in 0..want.len().max(got.len()) {
            let w = want.get(i).copied().unwrap_or("<none>");
            let g = got.get(i).copied().unwrap_or("<none>");
            let mark = if pattern(w).is_match(g) { " " } else { "!" };
            report.push_str(&format!("{mark} want: {w}\n{mark}  got: {g}\n"));
        }
        panic!("transcript mismatch:\n{report}\nfull output:\n{actual}");
    }
}

/// The address of the first symbol whose demangled name is `name`.
pub fn symbol_address(image: &Path, name: &str) -> u64 {
    symbols(image)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no symbol {name} in {}", image.display()))
        .1
}

/// Every code and data symbol of an ELF image: (name, address). File and
/// section symbols are left out: they name object files, not contents (the
/// no-op stub still contributes an empty compile unit's file symbol).
pub fn symbols(image: &Path) -> Vec<(String, u64)> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.symbols()
        .filter(|s| !matches!(s.kind(), SymbolKind::File | SymbolKind::Section))
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
        .collect()
}

/// The linker-script markers around the stub's sections
/// (`__ukdb_stub_{text,data,bss}_{start,end}`, see `examples/ukdemo/link.ld`):
/// each section's name and size (end - start). A production image has the
/// markers (the linker script is the same) with nothing between them.
pub fn stub_section_sizes(image: &Path) -> Vec<(String, u64)> {
    let syms = symbols(image);
    let at = |name: &str| syms.iter().find(|(n, _)| n == name).map(|&(_, a)| a);
    ["text", "data", "bss"]
        .iter()
        .filter_map(|s| {
            let (start, end) =
                (at(&format!("__ukdb_stub_{s}_start"))?, at(&format!("__ukdb_stub_{s}_end"))?);
            Some((s.to_string(), end.wrapping_sub(start)))
        })
        .collect()
}

/// Whether a symbol is one of the linker-script markers of
/// [`stub_section_sizes`] (not stub code or data).
pub fn is_stub_marker(name: &str) -> bool {
    name.starts_with("__ukdb_stub_") && (name.ends_with("_start") || name.ends_with("_end"))
}

/// The 1-based line of the first line of `file` (relative to the example's
/// directory) that contains `snippet`: transcripts name source lines
/// through this, so editing the example moves them along.
pub fn line_of(file: &str, snippet: &str) -> usize {
    let path = root().join("examples/ukdemo").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .position(|l| l.contains(snippet))
        .unwrap_or_else(|| panic!("{snippet:?} is not in {}", path.display()))
        + 1
}

/// The first capture of `re` in `text`, parsed.
pub fn capture<T: std::str::FromStr>(text: &str, re: &str) -> T {
    let caps = Regex::new(re)
        .unwrap()
        .captures(text)
        .unwrap_or_else(|| panic!("/{re}/ does not match:\n{text}"));
    caps[1].parse().ok().unwrap_or_else(|| panic!("cannot parse {:?}", &caps[1]))
}

/// gdb's answer to `break ukdemo::app::tick` (breakpoint `num`).
pub fn break_tick(num: u32) -> String {
    let line = line_of("src/app.rs", "write_volatile(t)");
    format!("Breakpoint {num} at {{hex}}: file src/app.rs, line {line}.\n")
}

/// gdb's report of the breakpoint in `tick` (inserted as breakpoint `num`)
/// stopping at tick `n`.
pub fn tick_hit(num: u32, n: u64) -> String {
    let line = line_of("src/app.rs", "write_volatile(t)");
    format!(
        "\nBreakpoint {num}, ukdemo::app::tick (n={n}) at src/app.rs:{line}\n\
         {line}\t    unsafe {{ addr_of_mut!(TICKS).write_volatile(t) }};\n"
    )
}

/// gdb's report of a Ctrl-C that stopped the app waiting for its next
/// tick, then `bt 1`.
pub fn sigint_in_run() -> String {
    let wait = line_of("src/app.rs", "while time::rdtsc() < next");
    format!(
        "\nProgram received signal SIGINT, Interrupt.\n\
         ukdemo::app::run () at src/app.rs:{wait}\n\
         {wait}\t        while time::rdtsc() < next {{\n\
         #0  ukdemo::app::run () at src/app.rs:{wait}\n"
    )
}

/// gdb's transcript of `continue`, `bt`, `monitor why`, `continue`,
/// `detach` on the example booted with `ukdb.wait ukdemo.panic=2`: the
/// panic message, the stop (SIGABRT) in the stub's panic handler with the
/// whole backtrace, the reason, the second stop where a continued panic
/// stays.
pub fn panic_stop_transcript() -> String {
    let panic_line = line_of("src/app.rs", "panic!(\"tick {} asked to panic\"");
    let stop = "\nProgram received signal SIGABRT, Aborted.\n";
    format!(
        "{{*}}\n\
         {{*}}\n\
         panicked at src/app.rs:{panic_line}:9:\n\
         tick 2 asked to panic\n\
         {stop}\
         {{*}}ukdb_stub::imp::api::on_panic{{*}}\n\
         {{*}}\n\
         #0  {{*}}ukdb_stub::imp::api::on_panic{{*}}\n\
         #1  {{*}}ukdemo::panic (info={{hex}}) at src/main.rs:{{n}}\n\
         #2  {{hex}} in core::panicking::panic_fmt (){{*}}\n\
         #3  {{hex}} in ukdemo::app::tick (n=2) at src/app.rs:{panic_line}\n\
         #4  {{hex}} in ukdemo::app::run () at src/app.rs:{call_line}\n\
         #5  {{hex}} in ukdemo::kmain (start_info=<optimized out>) at src/main.rs:{run_line}\n\
         #6  {{hex}} in _start64 ()\n\
         panic: panicked at src/app.rs:{panic_line}:9:\n\
         tick 2 asked to panic\n\
         panicked at src/app.rs:{panic_line}:9:\n\
         tick 2 asked to panic\n\
         {stop}\
         {{*}}ukdb_stub::imp::api::on_panic{{*}}\n\
         {{*}}\n\
         [Inferior 1 (process 1) detached]\n",
        call_line = line_of("src/app.rs", "tick(n);"),
        run_line = line_of("src/main.rs", "app::run()"),
    )
}

/// The tick a gdb transcript stopped in `tick` at.
pub fn hit_n(out: &str) -> u64 {
    capture(out, r"ukdemo::app::tick \(n=(\d+)\)")
}

/// The transcript from gdb's first `Breakpoint 1 at` on (where gdb attaches
/// varies: the idle loop or the timer handler's poll).
pub fn from_break(out: &str) -> &str {
    let at = out.find("Breakpoint 1 at ").unwrap_or_else(|| panic!("no breakpoint:\n{out}"));
    &out[at..]
}

/// gdb on `remote` breaks in `tick`, prints its argument and detaches: the
/// transcript from `break` on is asserted; returns the whole transcript.
pub fn break_print_detach(image: &Path, remote: &str) -> String {
    let out =
        Debugger::gdb(image, remote, &["break ukdemo::app::tick", "continue", "p n", "detach"])
            .finish();
    let n = hit_n(&out);
    let expected = format!(
        "{brk}{hit}$1 = {n}\n[Inferior 1 (process 1) detached]\n",
        brk = break_tick(1),
        hit = tick_hit(1, n),
    );
    assert_transcript(from_break(&out), &expected);
    out
}

/// Sizes of an ELF image, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    /// The file on disk (with debug info).
    pub file: u64,
    /// What the loader places in memory: the sum of the `PT_LOAD` sizes.
    pub loaded: u64,
    /// The `.text` section.
    pub text: u64,
}

/// Measures an image.
pub fn image_size(image: &Path) -> ImageSize {
    use object::{Object, ObjectSection, ObjectSegment};
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    ImageSize {
        file: data.len() as u64,
        loaded: file.segments().map(|s| s.size()).sum(),
        text: file.section_by_name(".text").map(|s| s.size()).unwrap_or(0),
    }
}

/// The total size of the functions whose (mangled) names contain any of
/// `needles`.
pub fn code_size_of(image: &Path, needles: &[&str]) -> u64 {
    use object::{Object, ObjectSymbol, SymbolKind};
    let data = std::fs::read(image).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.symbols()
        .filter(|s| s.kind() == SymbolKind::Text)
        .filter(|s| s.name().is_ok_and(|n| needles.iter().any(|x| n.contains(x))))
        .map(|s| s.size())
        .sum()
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A VM with a virtio-net device on QEMU's user networking: the stub's TCP
/// port (1234 in the guest) and the app's HTTP port (8080) are forwarded to
/// free ports of the host. The console is read raw from the serial socket
/// (the network stub does not share the serial line).
pub struct NetVm {
    /// The VM (its serial socket is [`NetVm::console`]'s source).
    pub vm: Vm,
    /// `127.0.0.1:PORT`, forwarded to the stub's port.
    pub debug: String,
    /// `127.0.0.1:PORT`, forwarded to the app's HTTP port.
    pub http: String,
    /// Everything the unikernel printed on its serial line.
    pub console: Arc<Output>,
}

/// The virtio-net device for `machine`: PCI on q35, MMIO on microvm.
pub fn nic_device(machine: &str) -> &'static str {
    if machine.starts_with("microvm") {
        "virtio-net-device"
    } else {
        "virtio-net-pci"
    }
}

/// `append` with `ukdb.net=dhcp` added unless it has a `ukdb.net=` word:
/// without a key, the network stub listens only when asked to.
pub fn with_net(append: &str) -> String {
    if append.split_ascii_whitespace().any(|w| w.starts_with("ukdb.net=")) {
        append.to_owned()
    } else if append.is_empty() {
        "ukdb.net=dhcp".to_owned()
    } else {
        format!("{append} ukdb.net=dhcp")
    }
}

impl NetVm {
    /// Boots `image` with a NIC and the network stub on it
    /// (`ukdb.net=dhcp` unless `append` has a `ukdb.net=`); `extra` goes
    /// on QEMU's command line too.
    pub fn boot(machine: &str, image: &Path, append: &str, extra: &[&str]) -> NetVm {
        Self::boot_port(machine, image, append, extra, 1234)
    }

    /// [`NetVm::boot`] with the stub on guest port `stub_port`.
    pub fn boot_port(
        machine: &str,
        image: &Path,
        append: &str,
        extra: &[&str],
        stub_port: u16,
    ) -> NetVm {
        Self::boot_exact(machine, image, &with_net(append), extra, stub_port)
    }

    /// [`NetVm::boot_port`] with `append` exactly as given (no
    /// `ukdb.net=` added).
    pub fn boot_exact(
        machine: &str,
        image: &Path,
        append: &str,
        extra: &[&str],
        stub_port: u16,
    ) -> NetVm {
        let (debug, http) = (free_port(), free_port());
        let netdev = format!(
            "user,id=n0,hostfwd=tcp:127.0.0.1:{debug}-:{stub_port},hostfwd=tcp:127.0.0.1:{http}-:8080"
        );
        let device = format!("{},netdev=n0", nic_device(machine));
        let mut args = vec!["-netdev", &netdev, "-device", &device];
        args.extend_from_slice(extra);
        // microvm lists its virtio-mmio devices on the kernel command line
        // (`virtio_mmio.device=`) only with ACPI off (QEMU 7.2).
        let machine = if machine == "microvm" { "microvm,acpi=off" } else { machine };
        let vm = Vm::boot_with(machine, image, append, &args);
        let console = Arc::new(Output::default());
        console.spawn_reader(connect_unix(&vm.sock));
        NetVm {
            vm,
            debug: format!("127.0.0.1:{debug}"),
            http: format!("127.0.0.1:{http}"),
            console,
        }
    }

    /// Waits for the network stub's `ukdb: stub ready on ...` line; returns it.
    pub fn wait_stub_ready(&self) -> String {
        let text = self.console.wait("the network stub", |t| t.contains("ukdb: stub ready on "));
        text.lines().find(|l| l.starts_with("ukdb: stub ready on ")).unwrap().to_string()
    }

    /// Waits for the app's HTTP server.
    pub fn wait_http_ready(&self) {
        self.console.wait("the app's HTTP server", |t| t.contains("http on port 8080"));
    }
}

/// `GET /` from the app's HTTP server at `addr`; the whole response, or the
/// error. Waits at most `timeout` for it.
pub fn http_get(addr: &str, timeout: Duration) -> std::io::Result<String> {
    use std::io::Write;
    let mut sock = std::net::TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.write_all(b"GET / HTTP/1.0\r\nHost: ukdemo\r\n\r\n")?;
    let mut reply = String::new();
    sock.read_to_string(&mut reply)?;
    Ok(reply)
}
