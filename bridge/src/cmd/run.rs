//! `ukdb run`: boot an image under QEMU and attach a debugger, in one
//! command.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use ukdb_bridge::addr::{ListenAddr, Target};

use super::auth::Credentials;
use super::bridge::{self, net, Listener};
use crate::Exit;

/// The stub's TCP port in the guest unless `ukdb.port=N` says otherwise.
const STUB_PORT: u16 = 1234;

/// The example app's HTTP port in the guest.
const APP_PORT: u16 = 8080;

/// How long the bridge may take to connect to QEMU's serial socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the network stub may take to announce itself before the
/// debugger is started anyway (with a warning).
const NET_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the bridge may take to stop, and a debugger to quit after
/// SIGHUP, before they are abandoned or killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The `--help` text of `ukdb run`.
const LONG_ABOUT: &str = "\
Boot IMAGE under QEMU and attach gdb or lldb to its ukdb stub.

Starts qemu-system-x86_64 (TCG unless --kvm) with the serial line on a
private unix socket, runs the bridge on it (the console goes to stdout), and
once the stub is reachable starts the debugger with the image's symbols:

    gdb IMAGE -ex 'target remote 127.0.0.1:PORT' [DEBUGGER-ARGS...]
    lldb IMAGE -o 'gdb-remote 127.0.0.1:PORT' [DEBUGGER-ARGS...]

Over the serial line (the default) the debugger connects to the bridge,
which serves it once the stub has said hello. With --net the VM also gets a
virtio-net NIC on QEMU user networking, with two host ports forwarded (both
printed): one to the stub's TCP port (1234, or ukdb.port=N from --append),
to which the debugger connects straight, and one to the app's port 8080.
The debugger is started once the console shows the network stub's
'ukdb: stub ready on ...' line (a transport other than serial). --net puts
ukdb.net=dhcp on the guest's command line unless --append has a ukdb.net=
already (without a key, the network stub listens only when asked to).

A locked stub (ukdb.key= / ukdb.rokey=, on --append or built into the
image): --key-file FILE makes the bridge authenticate for the debugger (the
full tier by default; --tier ro for the read-only one). With --net the
debugger then connects to the bridge, which authenticates each connection
to the stub before splicing it. --key-on-cmdline also puts the key on the
guest's command line (ukdb.key=HEX, or ukdb.rokey=HEX with --tier ro), for a
quick locked test: QEMU's arguments, and so the key, can be read by every
local user (ps, /proc/PID/cmdline) and by whoever reads the VM's
configuration; build the key into the image (Config::key) where that
matters.

Ctrl-C goes to the debugger (QEMU runs in a process group of its own, and
ukdb ignores SIGINT while a debugger runs). When the debugger quits, QEMU is
stopped; when QEMU exits first, the debugger is stopped. SIGHUP and SIGTERM
stop both. QEMU gets SIGKILL if ukdb itself dies.

    ukdb run target/x86_64-unknown-none/release/kernel
    ukdb run --net --lldb kernel
    ukdb run kernel -- -batch -ex 'break main' -ex continue -ex bt

Exit codes:
  0  the debugger quit cleanly, or ukdb was stopped by a signal (SIGTERM,
     SIGHUP; SIGINT before a debugger runs or with --no-debugger)
  1  error
  2  usage error
  3  QEMU exited before the debugger did
  N  otherwise the debugger's exit code (128+S when a signal S killed it)";

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// PC with PCI (virtio-net-pci).
    Q35,
    /// Minimal VM with virtio-mmio devices (virtio-net-device).
    Microvm,
}

impl Machine {
    fn name(self) -> &'static str {
        match self {
            Machine::Q35 => "q35",
            // With ACPI on, QEMU 7.2 describes microvm's virtio-mmio
            // devices in ACPI tables only; off, it lists them on the kernel
            // command line (`virtio_mmio.device=`), where a unikernel finds them.
            Machine::Microvm => "microvm,acpi=off",
        }
    }
}

/// Boot an image under QEMU and attach gdb or lldb to its stub
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Cmd {
    /// Give the VM a virtio-net NIC (QEMU user networking) and debug over
    /// TCP, straight to the network stub.
    #[arg(long)]
    net: bool,

    /// The QEMU machine.
    #[arg(long, value_enum, default_value_t = Machine::Q35)]
    machine: Machine,

    /// Use KVM instead of TCG.
    #[arg(long)]
    kvm: bool,

    /// The kernel command line (e.g. "ukdb.wait ukdb.port=2345").
    #[arg(long, value_name = "ARGS", default_value = "")]
    append: String,

    /// Start gdb (the default).
    #[arg(long, group = "debugger")]
    gdb: bool,

    /// Start lldb.
    #[arg(long, group = "debugger")]
    lldb: bool,

    /// Start no debugger: print the commands that attach one and wait for
    /// Ctrl-C, SIGTERM or SIGHUP.
    #[arg(long, group = "debugger", conflicts_with = "debugger_args")]
    no_debugger: bool,

    /// The QEMU binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    qemu: PathBuf,

    /// Also append the console output to FILE.
    #[arg(long, value_name = "FILE")]
    console_log: Option<PathBuf>,

    /// The unikernel image (an ELF with a PVH note, with its symbols).
    #[arg(value_name = "IMAGE")]
    image: PathBuf,

    /// More arguments for the debugger, after `--`.
    #[arg(last = true, value_name = "DEBUGGER-ARGS")]
    debugger_args: Vec<OsString>,

    /// The stub is locked (ukdb.key= / ukdb.rokey=): the bridge
    /// authenticates for the debugger with the key in FILE (hex).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// With --key-file: the tier the key opens, full or ro (read-only).
    #[arg(long, value_name = "full|ro", default_value = "full", value_parser = ["full", "ro"], requires = "key_file")]
    tier: String,

    /// Also put the key on the guest's command line (ukdb.key=, or
    /// ukdb.rokey= with --tier ro). Local users can read it there (ps).
    #[arg(long, requires = "key_file")]
    key_on_cmdline: bool,
}

/// The debugger to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Debugger {
    Gdb,
    Lldb,
}

impl Cmd {
    fn debugger(&self) -> Option<Debugger> {
        if self.no_debugger {
            None
        } else if self.lldb {
            Some(Debugger::Lldb)
        } else {
            Some(Debugger::Gdb)
        }
    }
}

/// The host ports forwarded into the guest with --net.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Forwards {
    /// Host port to the stub's port.
    stub: u16,
    /// The stub's port in the guest.
    guest_stub: u16,
    /// Host port to the app's port 8080.
    app: u16,
}

/// The stub's port in the guest: the last `ukdb.port=N` of the command
/// line, else [`STUB_PORT`].
fn guest_stub_port(append: &str) -> u16 {
    append
        .split_ascii_whitespace()
        .filter_map(|arg| arg.strip_prefix("ukdb.port=")?.parse().ok())
        .next_back()
        .unwrap_or(STUB_PORT)
}

/// The guest's command line: `--append`, then `ukdb.net=dhcp` with --net
/// unless `--append` has a `ukdb.net=`, then the key with
/// --key-on-cmdline.
fn guest_cmdline(cmd: &Cmd, creds: Option<&Credentials>) -> String {
    let mut line = cmd.append.clone();
    let mut add = |word: &str| {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    };
    if cmd.net && !cmd.append.split_ascii_whitespace().any(|w| w.starts_with("ukdb.net=")) {
        add("ukdb.net=dhcp");
    }
    if let Some(creds) = creds.filter(|_| cmd.key_on_cmdline) {
        let option = if creds.tier == "ro" { "ukdb.rokey" } else { "ukdb.key" };
        add(&format!("{option}={}", crate::cmd::auth::hex(&creds.key)));
    }
    line
}

/// QEMU's arguments; `append` is the guest's command line.
fn qemu_args(cmd: &Cmd, append: &str, serial: &Path, forwards: Option<Forwards>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |s: &dyn AsRef<OsStr>| args.push(s.as_ref().to_owned());
    for arg in ["-machine", cmd.machine.name(), "-accel", if cmd.kvm { "kvm" } else { "tcg" }] {
        push(&arg);
    }
    for arg in ["-m", "128M", "-display", "none", "-no-reboot", "-monitor", "none", "-kernel"] {
        push(&arg);
    }
    push(&cmd.image);
    push(&"-append");
    push(&append);
    // wait=on: the guest starts once the bridge is connected, so not one
    // byte of the console (nor the stub's hello) is missed.
    let mut chardev = OsString::from("unix:");
    chardev.push(serial);
    chardev.push(",server=on,wait=on");
    push(&"-serial");
    push(&chardev);
    if let Some(fwd) = forwards {
        push(&"-netdev");
        push(&format!(
            "user,id=n0,hostfwd=tcp:127.0.0.1:{}-:{},hostfwd=tcp:127.0.0.1:{}-:{APP_PORT}",
            fwd.stub, fwd.guest_stub, fwd.app
        ));
        push(&"-device");
        push(&match cmd.machine {
            Machine::Q35 => "virtio-net-pci,netdev=n0",
            Machine::Microvm => "virtio-net-device,netdev=n0",
        });
    }
    args
}

/// The debugger's command line: the image, the attach command, then the
/// user's arguments.
fn debugger_command(
    debugger: Debugger,
    image: &Path,
    port: u16,
    extra: &[OsString],
) -> (&'static str, Vec<OsString>) {
    let mut args = vec![image.as_os_str().to_owned()];
    let program = match debugger {
        Debugger::Gdb => {
            args.push("-ex".into());
            args.push(format!("target remote 127.0.0.1:{port}").into());
            "gdb"
        }
        Debugger::Lldb => {
            args.push("-o".into());
            args.push(format!("gdb-remote 127.0.0.1:{port}").into());
            "lldb"
        }
    };
    args.extend(extra.iter().cloned());
    (program, args)
}

/// `s` quoted for a POSIX shell (unchanged when it needs no quotes).
fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:,=@%".contains(&b));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn shell_line(program: &str, args: &[OsString]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    line
}

/// A free TCP port on loopback (bound and released: QEMU binds it next).
fn free_port() -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1")
}

fn port_of(listener: &std::net::TcpListener) -> anyhow::Result<u16> {
    Ok(listener.local_addr()?.port())
}

/// Makes the child get `signal` when the thread that spawned it dies: call
/// only from the main thread (the one that lives as long as ukdb), which is
/// where the top-level future of the runtime's `block_on` runs.
fn die_with_parent(cmd: &mut Command, signal: Signal) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec; it only
    // makes the prctl and getppid system calls and builds an io::Error from
    // an errno, none of which allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
            // The parent may have died before the prctl: then nobody is
            // left to send the signal.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The processes `ukdb run` started; killed (and reaped) on drop, so that
/// an error path leaves nothing behind.
struct Started {
    qemu: Child,
    debugger: Option<Child>,
}

impl Drop for Started {
    fn drop(&mut self) {
        for child in self.debugger.iter_mut().chain(std::iter::once(&mut self.qemu)) {
            if let Ok(None) = child.try_wait() {
                let _ = child.start_kill();
            }
        }
    }
}

impl Started {
    /// Kills QEMU and waits for it.
    async fn stop_qemu(&mut self) {
        if let Ok(None) = self.qemu.try_wait() {
            let _ = self.qemu.start_kill();
            let _ = self.qemu.wait().await;
        }
    }

    /// Asks the debugger to quit (SIGHUP), then kills it.
    async fn stop_debugger(&mut self) {
        let Some(debugger) = &mut self.debugger else {
            return;
        };
        if let Ok(None) = debugger.try_wait() {
            if let Some(pid) = debugger.id() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
            }
            if tokio::time::timeout(STOP_TIMEOUT, debugger.wait()).await.is_err() {
                let _ = debugger.start_kill();
                let _ = debugger.wait().await;
            }
        }
    }
}

/// Why `ukdb run` ends.
enum End {
    /// The debugger exited with this status.
    Debugger(ExitStatus),
    /// A signal.
    Signal(&'static str),
    /// QEMU exited.
    Qemu(std::io::Result<ExitStatus>),
    /// The bridge ended by itself.
    Bridge(Result<anyhow::Result<Exit>, tokio::task::JoinError>),
}

/// The exit code for a debugger's status: its code, or 128 + the signal.
fn debugger_exit(status: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt as _;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    match u8::try_from(code) {
        Ok(0) => Exit::Stopped,
        Ok(code) => Exit::Code(code),
        Err(_) => Exit::Error,
    }
}

/// Boots the image, runs the bridge and the debugger until one of them ends.
pub async fn run(cmd: Cmd) -> anyhow::Result<Exit> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    std::fs::File::open(&cmd.image)
        .with_context(|| format!("cannot read the image {}", cmd.image.display()))?;
    let image = std::path::absolute(&cmd.image)?;
    let credentials = crate::cmd::authclient::credentials(cmd.key_file.as_deref(), &cmd.tier)?;
    let dir = tempfile::Builder::new()
        .prefix("ukdb-run-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let serial = dir.path().join("serial.sock");
    let console_log = bridge::open_console_log(cmd.console_log.as_deref()).await?;

    // Serial: the bridge's port for the debugger. Net: the forwarded ports,
    // and with a key the bridge's port, which authenticates to the stub.
    let (listener, forwards) = if cmd.net {
        let (stub, app) = (free_port()?, free_port()?);
        let forwards = Forwards {
            stub: port_of(&stub)?,
            guest_stub: guest_stub_port(&cmd.append),
            app: port_of(&app)?,
        };
        let listener = match credentials {
            Some(_) => Some(Listener::bind(&ListenAddr::Tcp("127.0.0.1:0".to_owned())).await?),
            None => None,
        };
        (listener, Some(forwards))
    } else {
        let listen = ListenAddr::Tcp("127.0.0.1:0".to_owned());
        (Some(Listener::bind(&listen).await?), None)
    };
    let debugger_port = match (&listener, forwards) {
        (Some(Listener::Tcp(_, addr)), _) => addr.port(),
        (_, Some(forwards)) => forwards.stub,
        _ => anyhow::bail!("no port for the debugger"),
    };

    let qemu_log = dir.path().join("qemu.log");
    let log = std::fs::File::create(&qemu_log).context("cannot create QEMU's log")?;
    let mut qemu = Command::new(&cmd.qemu);
    let append = guest_cmdline(&cmd, credentials.as_ref());
    qemu.args(qemu_args(&cmd, &append, &serial, forwards))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: the terminal's Ctrl-C is for the debugger.
        .process_group(0)
        .kill_on_drop(true);
    die_with_parent(&mut qemu, Signal::SIGKILL);
    let qemu = qemu.spawn().with_context(|| format!("cannot start {}", cmd.qemu.display()))?;
    let mut started = Started { qemu, debugger: None };
    info!(
        "QEMU pid {} ({}, {}), serial line unix:{}",
        started.qemu.id().unwrap_or(0),
        cmd.machine.name(),
        if cmd.kvm { "KVM" } else { "TCG" },
        serial.display()
    );
    // The bridge connects once QEMU has created its socket (it would retry,
    // with a message that looks like an error).
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    while !serial.exists() && tokio::time::Instant::now() < deadline {
        if let Some(status) = started.qemu.try_wait()? {
            eprintln!("ukdb: QEMU exited ({status})");
            show_qemu_log(&qemu_log);
            return Ok(Exit::ChannelClosed);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match forwards {
        Some(fwd) if credentials.is_some() => {
            eprintln!(
                "ukdb: debugger port 127.0.0.1:{debugger_port} (the bridge, authenticating to the \
                 stub at 127.0.0.1:{})",
                fwd.stub
            );
            eprintln!("ukdb: app port {APP_PORT} -> 127.0.0.1:{}", fwd.app);
        }
        Some(fwd) => {
            eprintln!("ukdb: debugger port 127.0.0.1:{} (tcp, straight to the stub)", fwd.stub);
            eprintln!("ukdb: app port {APP_PORT} -> 127.0.0.1:{}", fwd.app);
        }
        None => eprintln!("ukdb: debugger port 127.0.0.1:{debugger_port} (the bridge)"),
    }

    // The bridge, in-process: the console, and with a serial stub the
    // debugger's port.
    let (stop_tx, mut stop_rx) = watch::channel(None::<&'static str>);
    let stop = async move {
        match stop_rx.wait_for(Option::is_some).await {
            Ok(why) => why.unwrap_or("stop"),
            Err(_) => "stop",
        }
    };
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let target = Target::Unix(serial.clone());
    let mut bridge_task = match (listener, forwards) {
        (Some(listener), None) => {
            let opts = bridge::Options {
                target,
                console_log,
                trace: false,
                connect_timeout: CONNECT_TIMEOUT,
                no_probe: false,
                credentials,
            };
            tokio::spawn(async move {
                tokio::pin!(stop);
                bridge::serve(opts, listener, stop, ready_tx).await
            })
        }
        (None, None) => anyhow::bail!("no port for the debugger"),
        (listener, Some(fwd)) => {
            let opts = net::Options {
                stub: listener.map(|l| (l, format!("127.0.0.1:{}", fwd.stub))),
                console: Some(target),
                console_log,
                connect_timeout: CONNECT_TIMEOUT,
                credentials,
            };
            tokio::spawn(async move {
                tokio::pin!(stop);
                net::serve(opts, stop, ready_tx).await
            })
        }
    };

    // Until the stub is reachable.
    let ready_deadline = tokio::time::sleep(NET_READY_TIMEOUT);
    tokio::pin!(ready_deadline);
    let end = tokio::select! {
            ready = ready_rx.wait_for(|&r| r) => {
                if ready.is_ok() {
                    None
                } else {
                    // The bridge has ended (dropping the sender).
                    Some(End::Bridge((&mut bridge_task).await))
                }
            }
            () = &mut ready_deadline, if cmd.net => {
                warn!(
                    "the console has not shown the network stub's 'ukdb: stub ready on' line \
                     within {}s; starting the debugger anyway",
                    NET_READY_TIMEOUT.as_secs()
                );
                None
            }
            status = started.qemu.wait() => Some(End::Qemu(status)),
            end = &mut bridge_task => Some(End::Bridge(end)),
            _ = sigint.recv() => Some(End::Signal("SIGINT")),
            _ = sigterm.recv() => Some(End::Signal("SIGTERM")),
            _ = sighup.recv() => Some(End::Signal("SIGHUP")),
    };

    let end = match end {
        Some(end) => end,
        None => {
            let debugger = cmd.debugger();
            match debugger {
                Some(debugger) => {
                    let (program, args) =
                        debugger_command(debugger, &image, debugger_port, &cmd.debugger_args);
                    info!("starting {}", shell_line(program, &args));
                    let mut child = Command::new(program);
                    child.args(&args);
                    die_with_parent(&mut child, Signal::SIGHUP);
                    let child = child.spawn().with_context(|| format!("cannot start {program}"))?;
                    started.debugger = Some(child);
                }
                None => {
                    for debugger in [Debugger::Gdb, Debugger::Lldb] {
                        let (program, args) =
                            debugger_command(debugger, &image, debugger_port, &[]);
                        eprintln!("ukdb: {}", shell_line(program, &args));
                    }
                    eprintln!("ukdb: the unikernel runs; Ctrl-C stops it");
                }
            }
            let running = debugger.is_some();
            let (qemu, debugger) = (&mut started.qemu, &mut started.debugger);
            let debugger_exit = async {
                match debugger {
                    Some(child) => child.wait().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = debugger_exit => match status {
                    Ok(status) => End::Debugger(status),
                    Err(err) => {
                        return Err(anyhow::Error::from(err).context("waiting for the debugger"))
                    }
                },
                status = qemu.wait() => End::Qemu(status),
                end = &mut bridge_task => End::Bridge(end),
                () = ignore_while(running, &mut sigint) => End::Signal("SIGINT"),
                _ = sigterm.recv() => End::Signal("SIGTERM"),
                _ = sighup.recv() => End::Signal("SIGHUP"),
            }
        }
    };

    // Cleanup, in every case: the debugger, the bridge, QEMU.
    let mut why = "exit";
    let exit = match end {
        End::Debugger(status) => {
            debug!("the debugger exited ({status})");
            why = "the debugger quit";
            debugger_exit(status)
        }
        End::Signal(signal) => {
            why = signal;
            Exit::Stopped
        }
        End::Qemu(status) => {
            why = "QEMU exited";
            let status = match status {
                Ok(status) => status.to_string(),
                Err(err) => err.to_string(),
            };
            eprintln!("ukdb: QEMU exited ({status})");
            show_qemu_log(&qemu_log);
            Exit::ChannelClosed
        }
        End::Bridge(end) => {
            // The serial line closed (QEMU is exiting) or the bridge failed.
            let qemu = tokio::time::timeout(STOP_TIMEOUT, started.qemu.wait()).await;
            match (end, qemu) {
                (_, Ok(Ok(status))) => {
                    why = "QEMU exited";
                    eprintln!("ukdb: QEMU exited ({status})");
                    show_qemu_log(&qemu_log);
                    Exit::ChannelClosed
                }
                (Ok(Err(err)), _) => {
                    started.stop_debugger().await;
                    started.stop_qemu().await;
                    return Err(err.context("the bridge failed"));
                }
                (Ok(Ok(exit)), _) => exit,
                (Err(join), _) => {
                    started.stop_debugger().await;
                    started.stop_qemu().await;
                    return Err(anyhow::Error::from(join).context("the bridge failed"));
                }
            }
        }
    };
    started.stop_debugger().await;
    // The bridge says why it stops.
    let _ = stop_tx.send(Some(why));
    if !bridge_task.is_finished() {
        match tokio::time::timeout(STOP_TIMEOUT, &mut bridge_task).await {
            Ok(_) => {}
            Err(_) => {
                warn!("the bridge did not stop in time");
                bridge_task.abort();
            }
        }
    }
    started.stop_qemu().await;
    drop(started);
    drop(dir);
    Ok(exit)
}

/// Resolves on SIGINT unless a debugger runs (then SIGINT is its: the
/// terminal sent it to the whole foreground process group).
async fn ignore_while(running: bool, sigint: &mut tokio::signal::unix::Signal) {
    loop {
        sigint.recv().await;
        if !running {
            return;
        }
        debug!("SIGINT: for the debugger");
    }
}

/// Prints QEMU's own output (its error messages), if any.
fn show_qemu_log(path: &Path) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // The line about the serial socket is QEMU's, expected.
            let noise = |l: &str| l.is_empty() || l.contains("QEMU waiting for connection on");
            for line in text.lines().filter(|l| !noise(l)) {
                eprintln!("ukdb: qemu: {line}");
            }
        }
        Err(err) => debug!("cannot read QEMU's log: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        cmd: Cmd,
    }

    fn parse(args: &[&str]) -> Result<Cmd, clap::Error> {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|c| c.cmd)
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn defaults() {
        let cmd = parse(&["kernel"]).unwrap();
        assert!(!cmd.net && !cmd.kvm);
        assert_eq!(cmd.machine, Machine::Q35);
        assert_eq!(cmd.debugger(), Some(Debugger::Gdb));
        assert_eq!(cmd.image, PathBuf::from("kernel"));
        assert!(cmd.debugger_args.is_empty());
        assert_eq!(
            strings(&qemu_args(&cmd, &cmd.append, Path::new("/t/s.sock"), None)).join(" "),
            "-machine q35 -accel tcg -m 128M -display none -no-reboot -monitor none \
             -kernel kernel -append  -serial unix:/t/s.sock,server=on,wait=on"
        );
    }

    #[test]
    fn net_on_both_machines() {
        let fwd = Forwards { stub: 40001, guest_stub: 1234, app: 40002 };
        let cmd = parse(&["--net", "--kvm", "--append", "ukdb.wait", "k"]).unwrap();
        let args =
            strings(&qemu_args(&cmd, &guest_cmdline(&cmd, None), Path::new("/s"), Some(fwd)));
        assert_eq!(
            args[args.len() - 4..],
            [
                "-netdev",
                "user,id=n0,hostfwd=tcp:127.0.0.1:40001-:1234,hostfwd=tcp:127.0.0.1:40002-:8080",
                "-device",
                "virtio-net-pci,netdev=n0",
            ]
        );
        assert_eq!(args[..4], ["-machine", "q35", "-accel", "kvm"]);
        assert!(args.windows(2).any(|w| w == ["-append", "ukdb.wait ukdb.net=dhcp"]));
        let cmd = parse(&["--net", "--machine", "microvm", "k"]).unwrap();
        let args = strings(&qemu_args(&cmd, &cmd.append, Path::new("/s"), Some(fwd)));
        assert_eq!(args[..2], ["-machine", "microvm,acpi=off"]);
        assert_eq!(args.last().unwrap(), "virtio-net-device,netdev=n0");
    }

    #[test]
    fn the_guest_command_line() {
        let creds = |tier: &str| Credentials { key: vec![0xab, 0x01], tier: tier.into() };
        let line = |args: &[&str], creds: Option<&Credentials>| {
            guest_cmdline(&parse(args).unwrap(), creds)
        };
        assert_eq!(line(&["k"], None), "");
        assert_eq!(line(&["--append", "ukdb.wait", "k"], None), "ukdb.wait");
        // --net asks for the network stub unless --append already says.
        assert_eq!(line(&["--net", "k"], None), "ukdb.net=dhcp");
        let fixed = ["--net", "--append", "ukdb.net=10.0.2.15/24", "k"];
        assert_eq!(line(&fixed, None), "ukdb.net=10.0.2.15/24");
        // The key goes on the guest's command line only when asked for.
        let keyed = ["--key-file", "f", "--append", "ukdb.wait", "k"];
        assert_eq!(line(&keyed, Some(&creds("full"))), "ukdb.wait");
        let on = ["--key-file", "f", "--key-on-cmdline", "--append", "ukdb.wait", "k"];
        assert_eq!(line(&on, Some(&creds("full"))), "ukdb.wait ukdb.key=ab01");
        let ro = ["--key-file", "f", "--tier", "ro", "--key-on-cmdline", "--net", "k"];
        assert_eq!(line(&ro, Some(&creds("ro"))), "ukdb.net=dhcp ukdb.rokey=ab01");
        assert_eq!(parse(&["--key-file", "f", "k"]).unwrap().tier, "full");
        assert!(parse(&["--key-on-cmdline", "k"]).is_err());
        assert!(parse(&["--tier", "ro", "k"]).is_err());
        assert!(parse(&["--key-file", "f", "--tier", "admin", "k"]).is_err());
    }

    #[test]
    fn the_stub_port_follows_the_command_line() {
        assert_eq!(guest_stub_port(""), 1234);
        assert_eq!(guest_stub_port("ukdb.wait ukdb.port=2345"), 2345);
        assert_eq!(guest_stub_port("ukdb.port=1 ukdb.port=7"), 7);
        assert_eq!(guest_stub_port("ukdb.port=99999 ukdb.port=x"), 1234);
    }

    #[test]
    fn debuggers_and_their_arguments() {
        let cmd = parse(&["--lldb", "k", "--", "--batch", "-o", "bt"]).unwrap();
        assert_eq!(cmd.debugger(), Some(Debugger::Lldb));
        let (program, args) =
            debugger_command(Debugger::Lldb, Path::new("/i/k"), 5, &cmd.debugger_args);
        assert_eq!(program, "lldb");
        assert_eq!(strings(&args), ["/i/k", "-o", "gdb-remote 127.0.0.1:5", "--batch", "-o", "bt"]);
        let (program, args) = debugger_command(Debugger::Gdb, Path::new("/i/k"), 5, &[]);
        assert_eq!(shell_line(program, &args), "gdb /i/k -ex 'target remote 127.0.0.1:5'");
        assert_eq!(parse(&["--no-debugger", "k"]).unwrap().debugger(), None);
        // Options may follow the image; debugger arguments only after `--`.
        assert!(parse(&["k", "--net"]).unwrap().net);
        assert_eq!(strings(&parse(&["k", "--", "--net"]).unwrap().debugger_args), ["--net"]);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &[][..],
            &["--gdb", "--lldb", "k"],
            &["--no-debugger", "--gdb", "k"],
            &["--no-debugger", "k", "--", "-batch"],
            &["--machine", "pc", "k"],
            &["k", "extra"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(OsStr::new("/a/b-c_d.e")), "/a/b-c_d.e");
        assert_eq!(shell_quote(OsStr::new("a b")), "'a b'");
        assert_eq!(shell_quote(OsStr::new("it's")), r"'it'\''s'");
        assert_eq!(shell_quote(OsStr::new("")), "''");
    }

    #[test]
    fn debugger_exit_codes() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(debugger_exit(ExitStatus::from_raw(0)), Exit::Stopped);
        assert_eq!(debugger_exit(ExitStatus::from_raw(1 << 8)), Exit::Code(1));
        assert_eq!(debugger_exit(ExitStatus::from_raw(9)), Exit::Code(137));
    }
}
