//! `ukdb run`: one command boots the example under QEMU (TCG) and attaches
//! gdb; it cleans up after itself whichever way it ends.
//!
//! gdb's transcript goes to a log file (gdb's `set logging redirect`): on
//! stdout it would share the terminal with the console, whose lines the
//! bridge writes as they arrive.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use ukdb_tests::*;

/// A `ukdb run` process with its stdout (console and debugger) and stderr
/// (ukdb's messages) captured.
struct Run {
    proc: Proc,
    stdout: Arc<Output>,
    stderr: Arc<Output>,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        Self::start_in(Command::new(&artifacts().ukdb), args)
    }

    /// [`Run::start`] in a process group of its own, as a shell starts a
    /// job: a terminal's Ctrl-C is SIGINT to that group.
    fn start_as_job(args: &[&str]) -> Run {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(&artifacts().ukdb);
        cmd.process_group(0);
        Self::start_in(cmd, args)
    }

    fn start_in(mut cmd: Command, args: &[&str]) -> Run {
        let mut child = cmd
            .arg("run")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start ukdb run");
        let stdout = Arc::new(Output::default());
        let stderr = Arc::new(Output::default());
        stdout.spawn_reader(child.stdout.take().unwrap());
        stderr.spawn_reader(child.stderr.take().unwrap());
        Run { proc: Proc(child), stdout, stderr }
    }

    /// QEMU's pid and serial socket, from `ukdb: QEMU pid N (...), serial line unix:PATH`.
    fn qemu(&self) -> (u32, PathBuf) {
        let text = self.stderr.wait("QEMU's pid", |t| t.contains("ukdb: QEMU pid "));
        let pid = capture(&text, r"ukdb: QEMU pid ([0-9]+) ");
        let sock: String = capture(&text, r"serial line unix:(\S+)\n");
        (pid, PathBuf::from(sock))
    }

    /// The debugger's port from `ukdb: debugger port 127.0.0.1:N ...`.
    fn debugger_port(&self) -> u16 {
        let text = self.stderr.wait("the debugger port", |t| t.contains("ukdb: debugger port "));
        capture(&text, r"ukdb: debugger port 127\.0\.0\.1:([0-9]+) ")
    }

    /// Waits for ukdb to exit; returns its exit code and its messages.
    fn exit(&mut self) -> (Option<i32>, String) {
        let stderr = Arc::clone(&self.stderr);
        let status =
            self.proc.wait_exit_or(|| format!("ukdb run did not exit:\n{}", stderr.text()));
        self.stdout.wait_closed("ukdb's stdout");
        (status.code(), self.stderr.wait_closed("ukdb's stderr"))
    }
}

/// Whether a live (not zombie) process has `needle` in its command line.
fn running_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
            .unwrap_or(true);
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// Waits until no process runs with `sock` (ukdb's private serial socket)
/// on its command line.
fn assert_no_qemu_left(sock: &Path) {
    let needle = sock.to_str().unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        let left = running_with(needle);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < end, "QEMU left behind: pids {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// gdb arguments (after ukdb's `target remote`) that log the transcript to
/// `log`, then run `cmds`.
fn gdb_logged(log: &Path, cmds: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["-batch", "-nx", "-ex", "set pagination off"].iter().map(|s| s.to_string()).collect();
    for c in [
        format!("set logging file {}", log.display()),
        "set logging overwrite on".into(),
        "set logging redirect on".into(),
        "set logging enabled on".into(),
    ] {
        args.extend(["-ex".to_string(), c]);
    }
    for c in cmds {
        args.extend(["-ex".to_string(), c.to_string()]);
    }
    args
}

const TICK_BREAK: &str = "\
Breakpoint 1 at {hex}: file src/app.rs, line {n}.

Breakpoint 1, ukdemo::app::tick (n={n}) at src/app.rs:{n}
{n}\t{*}
#0  ukdemo::app::tick (n={n}) at src/app.rs:{n}
#1  {hex} in ukdemo::app::run () at src/app.rs:{n}
#2  {hex} in ukdemo::kmain (start_info=<optimized out>) at src/main.rs:{n}
#3  {hex} in _start64 ()
[Inferior 1 (process 1) detached]
";

#[test]
fn serial_gdb_batch_hits_a_breakpoint_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gdb.log");
    let image = artifacts().image.to_str().unwrap();
    let gdb = gdb_logged(&log, &["break ukdemo::app::tick", "continue", "bt", "detach"]);
    let mut args = vec![image, "--"];
    args.extend(gdb.iter().map(String::as_str));
    let mut run = Run::start(&args);
    let (_, sock) = run.qemu();
    let port = run.debugger_port();
    let (code, stderr) = run.exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert_transcript(&std::fs::read_to_string(&log).unwrap(), TICK_BREAK);

    // The console went to stdout; the bridge served gdb once and stopped.
    let stdout = run.stdout.text();
    assert!(stdout.contains("ukdb: stub ready on serial, breakpoints use int3\n"), "{stdout}");
    assert!(stdout.contains("line 0 ticks "), "{stdout}");
    let messages: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("ukdb: waiting for unix:"))
        .map(|l| if l.starts_with("ukdb: starting gdb ") { "ukdb: starting gdb ..." } else { l })
        .collect();
    assert_transcript(
        &(messages.join("\n") + "\n"),
        &format!(
            "\
ukdb: QEMU pid {{n}} (q35, TCG), serial line unix:{sock}
ukdb: debugger port 127.0.0.1:{port} (the bridge)
ukdb: connected to unix:{sock}
ukdb: stub answered; framing on
ukdb: starting gdb ...
ukdb: debugger connected (127.0.0.1:{{n}})
ukdb: debugger disconnected (127.0.0.1:{{n}})
ukdb: stopping (the debugger quit)
",
            sock = sock.display()
        ),
    );
    assert!(stderr.contains(&format!(
        "ukdb: starting gdb {image} -ex 'target remote 127.0.0.1:{port}' -batch -nx"
    )));
    assert_no_qemu_left(&sock);
    assert!(!sock.parent().unwrap().exists(), "the private directory is left");
}

#[test]
fn lldb_hits_a_breakpoint_through_ukdb_run() {
    let image = artifacts().image.to_str().unwrap();
    let mut run = Run::start(&[
        "--lldb",
        image,
        "--",
        "--no-lldbinit",
        "--batch",
        "-o",
        "breakpoint set -n ukdemo::app::tick",
        "-o",
        "continue",
        "-o",
        "process detach",
    ]);
    let (_, sock) = run.qemu();
    let port = run.debugger_port();
    let (code, stderr) = run.exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&format!(
        "ukdb: starting lldb {image} -o 'gdb-remote 127.0.0.1:{port}' --no-lldbinit --batch"
    )));
    // lldb's lines share stdout with the console: look for them.
    let stdout = run.stdout.text();
    for line in [
        format!("(lldb) gdb-remote 127.0.0.1:{port}\n"),
        "(lldb) breakpoint set -n ukdemo::app::tick\nBreakpoint 1: where = ukdemo`ukdemo::app::tick".into(),
        "* thread #1, stop reason = breakpoint 1.1\n".into(),
        "Process 1 detached\n".into(),
    ] {
        assert!(stdout.contains(&line), "{line:?} not in:\n{stdout}");
    }
    assert_no_qemu_left(&sock);
}

#[test]
fn no_debugger_prints_the_commands_and_sigterm_cleans_up() {
    let image = artifacts().image.to_str().unwrap();
    let mut run = Run::start(&["--no-debugger", image]);
    let (_, sock) = run.qemu();
    let port = run.debugger_port();
    let text = run.stderr.wait("the commands", |t| t.contains("Ctrl-C stops it"));
    assert!(
        text.contains(&format!("ukdb: gdb {image} -ex 'target remote 127.0.0.1:{port}'\n")),
        "{text}"
    );
    assert!(text.contains(&format!("ukdb: lldb {image} -o 'gdb-remote 127.0.0.1:{port}'\n")));

    // The printed command works.
    let remote = format!("127.0.0.1:{port}");
    let gdb = Debugger::gdb(&artifacts().image, &remote, &["p ukdemo::app::TICKS > 0", "detach"]);
    let out = gdb.finish();
    assert!(out.contains("$1 = true\n"), "{out}");

    run.proc.signal(Signal::SIGTERM);
    let (code, stderr) = run.exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.ends_with("ukdb: stopping (SIGTERM)\n"), "{stderr}");
    assert_no_qemu_left(&sock);
    assert!(!sock.parent().unwrap().exists(), "the private directory is left");
}

#[test]
fn qemu_dying_ends_the_run_with_3_and_stops_the_debugger() {
    let image = artifacts().image.to_str().unwrap();
    // gdb continues until QEMU goes away.
    let mut run = Run::start(&[image, "--", "-batch", "-nx", "-ex", "continue"]);
    let (qemu, sock) = run.qemu();
    run.stderr.wait("gdb to attach", |t| t.contains("ukdb: debugger connected"));
    let gdb_pids = running_with(&format!("target remote 127.0.0.1:{}", run.debugger_port()));
    assert_eq!(gdb_pids.len(), 1, "{gdb_pids:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(qemu as i32), Signal::SIGKILL).unwrap();
    let (code, stderr) = run.exit();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("ukdb: QEMU exited (signal: 9 (SIGKILL))\n"), "{stderr}");
    assert_no_qemu_left(&sock);
    assert!(running_with(&format!("target remote 127.0.0.1:{}", run.debugger_port())).is_empty());
}

#[test]
fn ctrl_c_goes_to_the_debugger() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gdb.log");
    let image = artifacts().image.to_str().unwrap();
    let gdb = gdb_logged(&log, &["continue", "bt 1", "detach"]);
    let mut args = vec![image, "--"];
    args.extend(gdb.iter().map(String::as_str));
    let mut run = Run::start_as_job(&args);
    let (_, sock) = run.qemu();
    run.stderr.wait("gdb to attach", |t| t.contains("ukdb: debugger connected"));
    // The unikernel runs on after gdb's `continue`.
    let have = app_lines(&run.stdout.text()).len();
    run.stdout.wait("the app to run on", |t| app_lines(t).len() >= have + 3);
    // The terminal's Ctrl-C: SIGINT to the foreground job, ukdb and gdb.
    let job = nix::unistd::Pid::from_raw(run.proc.0.id() as i32);
    nix::sys::signal::killpg(job, Signal::SIGINT).unwrap();
    let (code, stderr) = run.exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert_transcript(
        &std::fs::read_to_string(&log).unwrap(),
        "\n\
         Program received signal SIGINT, Interrupt.\n\
         {*}\n\
         {*}\n\
         #0  {*}\n\
         [Inferior 1 (process 1) detached]\n",
    );
    assert!(stderr.ends_with("ukdb: stopping (the debugger quit)\n"), "{stderr}");
    assert_no_qemu_left(&sock);
}

#[test]
fn an_image_qemu_cannot_boot_ends_the_run_with_3_and_qemus_message() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("not-a-kernel");
    std::fs::write(&image, b"not a kernel").unwrap();
    let mut run = Run::start(&[image.to_str().unwrap()]);
    let (_, sock) = run.qemu();
    let (code, stderr) = run.exit();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "ukdb: QEMU exited (exit status: 1)\nukdb: qemu: qemu: invalid kernel header\n"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("starting gdb"), "{stderr}");
    assert_no_qemu_left(&sock);
}

#[test]
fn qemu_dies_with_ukdb() {
    let image = artifacts().image.to_str().unwrap();
    let run = Run::start(&["--no-debugger", image]);
    let (_, sock) = run.qemu();
    run.stderr.wait("the stub", |t| t.contains("ukdb: stub answered"));
    assert_eq!(running_with(sock.to_str().unwrap()).len(), 1);
    // No cleanup code runs: QEMU goes by its parent-death signal.
    run.proc.signal(Signal::SIGKILL);
    assert_no_qemu_left(&sock);
    let _ = std::fs::remove_dir_all(sock.parent().unwrap());
}

#[test]
fn net_gdb_batch_goes_straight_to_the_stub() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gdb.log");
    let image = artifacts().image.to_str().unwrap();
    let gdb = gdb_logged(&log, &["break ukdemo::app::tick", "continue", "bt", "detach"]);
    let mut args = vec!["--net", image, "--"];
    args.extend(gdb.iter().map(String::as_str));
    let mut run = Run::start(&args);
    let (_, sock) = run.qemu();
    let text = run.stderr.wait("the ports", |t| t.contains("ukdb: app port 8080 -> "));
    assert!(text.contains("(tcp, straight to the stub)\n"), "{text}");
    let (code, stderr) = run.exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert_transcript(&std::fs::read_to_string(&log).unwrap(), TICK_BREAK);
    assert_no_qemu_left(&sock);
}

/// A key file in `dir`.
fn key_file(dir: &Path, key: &str) -> String {
    let path = dir.join(format!("{key}.key"));
    std::fs::write(&path, format!("{key}\n")).unwrap();
    path.display().to_string()
}

/// `--key-file` with `--key-on-cmdline` over the serial line: the guest is
/// locked with the full key, the bridge authenticates, and stock gdb's
/// session is the usual one.
#[test]
fn serial_with_a_key_the_bridge_authenticates_for_gdb() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gdb.log");
    let key = key_file(dir.path(), "00112233445566778899aabbccddeeff");
    let image = artifacts().image.to_str().unwrap();
    let gdb = gdb_logged(&log, &["break ukdemo::app::tick", "continue", "bt", "detach"]);
    let mut args = vec!["--key-file", &key, "--key-on-cmdline", image, "--"];
    args.extend(gdb.iter().map(String::as_str));
    let mut run = Run::start(&args);
    let (_, sock) = run.qemu();
    let (code, stderr) = run.exit();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("authenticated to the stub (full tier)"), "{stderr}");
    assert_transcript(&std::fs::read_to_string(&log).unwrap(), TICK_BREAK);
    // The example's boot line shows the option, not the key.
    let stdout = run.stdout.text();
    assert!(stdout.contains("ukdb.key=*"), "{stdout}");
    assert!(!stdout.contains("00112233445566778899aabbccddeeff"), "{stdout}");
    assert_no_qemu_left(&sock);
}

/// `--net` with a read-only key: the debugger connects to the bridge, which
/// authenticates each connection to the stub; the read-only tier reads and
/// takes hardware breakpoints, and refuses a register write.
#[test]
fn net_with_a_read_only_key_goes_through_the_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gdb.log");
    let key = key_file(dir.path(), "0badc0de");
    let image = artifacts().image.to_str().unwrap();
    let cmds = ["hbreak ukdemo::app::tick", "continue", "set var $rax = 5", "detach"];
    let gdb = gdb_logged(&log, &cmds);
    let mut args = vec!["--net", "--key-file", &key, "--tier", "ro", "--key-on-cmdline", image];
    args.push("--");
    args.extend(gdb.iter().map(String::as_str));
    let mut run = Run::start(&args);
    let (_, sock) = run.qemu();
    let text = run.stderr.wait("the ports", |t| t.contains("ukdb: app port 8080 -> "));
    assert!(text.contains("(the bridge, authenticating to the stub at 127.0.0.1:"), "{text}");
    let (code, stderr) = run.exit();
    assert!(stderr.contains("authenticated to the stub (ro tier)"), "{stderr}");
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(out.contains("Hardware assisted breakpoint 1 at"), "{out}");
    assert!(out.contains("Breakpoint 1, ukdemo::app::tick"), "{out}");
    assert!(out.contains("E01") || out.contains("Could not write register"), "{out}");
    assert_eq!(code, Some(0), "{stderr}\n{out}");
    assert_no_qemu_left(&sock);
}
