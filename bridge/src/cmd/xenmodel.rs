//! `ukdb xen-model` (hidden): the Xen console backend model as a process.
//! It serves the console ring in the first page of the file behind a
//! guest's ivshmem-plain device ([`ukdb_bridge::xenmodel::Model`]) on a
//! unix socket, as QEMU's `-serial unix:PATH,server=on,wait=off` serves a
//! UART, so that `ukdb bridge --target unix:PATH` works unchanged.
//!
//! With `--listen pty` it serves a pseudo-terminal instead, as xenconsoled
//! serves each domain's console (the pty xenstore names as
//! `/local/domain/DOMID/console/tty`): `ukdb bridge --target pty:PATH`, or
//! `--target xen:DOMAIN` with a xenstore that names it. The model holds the
//! pty's slave open itself, so a client may come and go; output no client
//! reads waits in the pty and then in the backlog below.
//!
//! One client at a time: the next connection waits in the listen backlog
//! until the current one closes. The guest's output keeps flowing with no
//! client: the model goes on draining the ring and keeps the newest
//! [`BACKLOG`] bytes, which the next client gets first (older bytes are
//! dropped and counted on stderr), so the guest never waits for a client.
//! With a client, the model writes to it as fast as it reads; a client that
//! takes no bytes for [`STALL`] is dropped (its bytes go to the backlog),
//! so a stuck client stalls the guest's console for at most that long.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg};
use ukdb_bridge::xenmodel::{Model, Moved};

use crate::Exit;

/// Guest output kept while no client is connected.
pub const BACKLOG: usize = 64 * 1024;
/// How often an idle model looks at the guest's `out` ring.
const IDLE_POLL: Duration = Duration::from_micros(200);
/// How long a client may refuse the guest's output before it is dropped.
pub const STALL: Duration = Duration::from_secs(5);

/// Serve a Xen console ring in shared memory (the ivshmem backend model) on a unix socket.
#[derive(Debug, Args)]
pub struct Cmd {
    /// The file behind the guest's ivshmem-plain memory
    /// (`-object memory-backend-file,share=on,mem-path=FILE`).
    #[arg(long, value_name = "FILE")]
    pub shm: PathBuf,
    /// Where to serve the console: `unix:PATH`, or `pty` (a new
    /// pseudo-terminal, its path printed on stderr).
    #[arg(long, value_name = "unix:PATH|pty")]
    pub listen: String,
    /// Drain the guest's output slowly: at most N bytes per step, in chunk
    /// sizes cycling through odd sizes up to N, yielding between steps.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=2048))]
    pub slow: Option<u16>,
}

/// Where the guest's output goes.
enum Client {
    /// A unix-socket client, with a write timeout of [`STALL`].
    Unix(UnixStream),
    /// The pty's master side, non-blocking: what the pty cannot take now
    /// waits in the backlog.
    Pty(File),
}

/// The guest's output: to the client if there is one, else to the backlog.
#[derive(Default)]
struct Out {
    client: Option<Client>,
    backlog: VecDeque<u8>,
    dropped: u64,
}

impl Out {
    fn keep(&mut self, bytes: &[u8]) {
        self.backlog.extend(bytes);
        let over = self.backlog.len().saturating_sub(BACKLOG);
        if over > 0 {
            self.backlog.drain(..over);
            self.dropped += over as u64;
        }
    }

    /// Says once how many console bytes the backlog dropped, when output
    /// flows again.
    fn report_dropped(&mut self) {
        if self.dropped > 0 {
            eprintln!("ukdb xen-model: {} console bytes dropped with no client", self.dropped);
            self.dropped = 0;
        }
    }

    /// A new unix-socket client: the backlog first.
    fn attach(&mut self, mut client: UnixStream) {
        self.report_dropped();
        let (a, b) = self.backlog.as_slices();
        if client.write_all(a).and_then(|()| client.write_all(b)).is_ok() {
            self.backlog.clear();
            self.client = Some(Client::Unix(client));
        }
    }

    /// Moves what the pty can take from the backlog into it.
    fn drain_to_pty(&mut self) {
        let Some(Client::Pty(pty)) = self.client.as_mut() else { return };
        let mut took = false;
        while !self.backlog.is_empty() {
            let (a, _) = self.backlog.as_slices();
            match pty.write(a) {
                Ok(0) => break,
                Ok(n) => {
                    self.backlog.drain(..n);
                    took = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Full (`WouldBlock`): the rest waits.
                Err(_) => break,
            }
        }
        if took {
            self.report_dropped();
        }
    }
}

/// What the ring carried, for the report when a client leaves.
#[derive(Default)]
struct Counts {
    /// Host to guest bytes.
    input: AtomicU64,
    /// Guest to host bytes.
    out: AtomicU64,
    /// Times the model filled `in` to the brim (input left over).
    in_full: AtomicU64,
}

impl Counts {
    fn add(&self, m: Moved) {
        self.input.fetch_add(m.input as u64, Ordering::Relaxed);
        self.out.fetch_add(m.out as u64, Ordering::Relaxed);
        self.in_full.fetch_add(u64::from(m.in_full), Ordering::Relaxed);
    }

    /// The report: bytes in and out, and how often `in` was full.
    fn report(&self) -> String {
        format!(
            "{} bytes in, {} out, `in` filled to the brim {} times",
            self.input.load(Ordering::Relaxed),
            self.out.load(Ordering::Relaxed),
            self.in_full.load(Ordering::Relaxed)
        )
    }
}

/// The sink `Model::pump` writes to.
struct Sink<'a>(&'a Mutex<Out>);

impl Write for Sink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut out = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match out.client.as_mut() {
            Some(Client::Unix(client)) => {
                if client.write_all(bytes).is_ok() {
                    return Ok(bytes.len());
                }
                // Gone or stalled for `STALL`: the reader sees the close too.
                if let Some(Client::Unix(client)) = out.client.take() {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                }
                out.keep(bytes);
            }
            Some(Client::Pty(_)) => {
                // In order: the backlog, then these.
                out.keep(bytes);
                out.drain_to_pty();
            }
            None => out.keep(bytes),
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The chunk sizes `--slow N` cycles through.
fn slow_chunks(n: usize) -> Vec<usize> {
    let odd = |k: usize| (k | 1).clamp(1, n);
    [n, 1, n / 3, 3, n / 2, n.saturating_sub(2), 7].into_iter().map(odd).collect()
}

/// Pumps the ring for good: client input in, guest output out. `pty`:
/// the output goes to a pty, whose backlog each idle step drains.
fn pump(
    mut model: Model,
    out: &Mutex<Out>,
    input: &Receiver<Vec<u8>>,
    slow: Option<usize>,
    pty: bool,
    counts: &Counts,
) {
    let chunks = slow.map(slow_chunks).unwrap_or_else(|| vec![2048]);
    let mut k = 0;
    let mut idle = 0u32;
    loop {
        loop {
            match input.try_recv() {
                Ok(chunk) => model.queue_input(&chunk),
                Err(TryRecvError::Empty) => break,
                // The accept loop ended: nothing more will come.
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let want = chunks.get(k % chunks.len()).copied().unwrap_or(1);
        k += 1;
        match model.pump(&mut Sink(out), want) {
            Ok(Ok(m)) if m.out + m.input > 0 => {
                counts.add(m);
                idle = 0;
                if slow.is_some() {
                    std::thread::yield_now();
                }
                continue;
            }
            Ok(Ok(_)) if pty => out.lock().unwrap_or_else(PoisonError::into_inner).drain_to_pty(),
            // A unix client gets its backlog when it attaches.
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("ukdb xen-model: corrupt ring reset: {e:?}"),
            Err(e) => eprintln!("ukdb xen-model: {e}"),
        }
        idle = idle.saturating_add(1);
        match idle {
            0..=1000 => std::hint::spin_loop(),
            1001..=2000 => std::thread::yield_now(),
            // Idle for a while: the guest's output is polled every 200 µs,
            // and a client's request wakes the pump at once.
            _ => match input.recv_timeout(IDLE_POLL) {
                Ok(chunk) => {
                    model.queue_input(&chunk);
                    idle = 0;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            },
        }
    }
}

/// Runs `ukdb xen-model`: until killed.
pub fn run(cmd: Cmd) -> anyhow::Result<Exit> {
    let listen = match cmd.listen.as_str() {
        "pty" => None,
        other => match other.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Some(path.to_owned()),
            _ => bail!("--listen takes unix:PATH or pty, not {}", cmd.listen),
        },
    };
    let model =
        Model::open(&cmd.shm).with_context(|| format!("cannot map {}", cmd.shm.display()))?;
    let out = Arc::new(Mutex::new(Out::default()));
    let counts = Arc::new(Counts::default());
    let (tx, rx) = mpsc::channel();
    let slow = cmd.slow.map(usize::from);
    let to_pty = listen.is_none();
    let start_pump = || {
        let pump_out = Arc::clone(&out);
        let pump_counts = Arc::clone(&counts);
        std::thread::spawn(move || pump(model, &pump_out, &rx, slow, to_pty, &pump_counts));
    };
    let Some(path) = listen else {
        let pty = Pty::open().context("cannot open a pty")?;
        eprintln!(
            "ukdb xen-model: serving the console ring of {} on pty:{}",
            cmd.shm.display(),
            pty.path.display()
        );
        let writer = pty.master.try_clone().context("cannot clone the pty")?;
        out.lock().unwrap_or_else(PoisonError::into_inner).client = Some(Client::Pty(writer));
        start_pump();
        pty.serve(&tx)?;
        return Ok(Exit::Error);
    };
    let listener =
        UnixListener::bind(&path).with_context(|| format!("cannot listen on unix:{path}"))?;
    eprintln!("ukdb xen-model: serving the console ring of {} on unix:{path}", cmd.shm.display());
    start_pump();
    for client in listener.incoming() {
        let mut client = client.context("accept")?;
        let writer = client.try_clone().context("cannot clone the client socket")?;
        writer.set_write_timeout(Some(STALL)).context("set_write_timeout")?;
        out.lock().unwrap_or_else(PoisonError::into_inner).attach(writer);
        let mut buf = [0u8; 4096];
        loop {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf.get(..n).unwrap_or_default().to_vec()).is_err() {
                        bail!("the ring's pump stopped");
                    }
                }
            }
        }
        out.lock().unwrap_or_else(PoisonError::into_inner).client = None;
        eprintln!("ukdb xen-model: client gone; so far {}", counts.report());
    }
    Ok(Exit::Error)
}

/// The pseudo-terminal `--listen pty` serves: raw, its master side
/// non-blocking, its slave held open by the model so that clients may come
/// and go (a pty whose slave nobody holds reports a hang-up).
struct Pty {
    master: File,
    _slave: OwnedFd,
    path: PathBuf,
}

impl Pty {
    fn open() -> anyhow::Result<Pty> {
        let pty = nix::pty::openpty(None, None)?;
        let mut attrs = termios::tcgetattr(&pty.slave)?;
        termios::cfmakeraw(&mut attrs);
        termios::tcsetattr(&pty.slave, SetArg::TCSANOW, &attrs)?;
        let path = nix::unistd::ttyname(&pty.slave)?;
        let flags = OFlag::from_bits_truncate(fcntl(&pty.master, FcntlArg::F_GETFL)?);
        fcntl(&pty.master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Pty { master: File::from(pty.master), _slave: pty.slave, path })
    }

    /// Passes what clients write to the pty on to the ring: for good.
    fn serve(&self, tx: &mpsc::Sender<Vec<u8>>) -> anyhow::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => bail!("poll on the pty: {e}"),
            }
            match (&self.master).read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    if tx.send(buf.get(..n).unwrap_or_default().to_vec()).is_err() {
                        bail!("the ring's pump stopped");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => bail!("reading the pty: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_keeps_the_newest_bytes() {
        let mut out = Out::default();
        out.keep(&vec![1u8; BACKLOG]);
        out.keep(&[2, 3]);
        assert_eq!(out.backlog.len(), BACKLOG);
        assert_eq!(out.dropped, 2);
        assert_eq!(out.backlog.iter().rev().take(3).copied().collect::<Vec<_>>(), [3, 2, 1]);
    }

    #[test]
    fn a_pty_that_takes_bytes_again_hears_what_was_dropped() {
        let pty = Pty::open().unwrap();
        let mut out =
            Out { client: Some(Client::Pty(pty.master.try_clone().unwrap())), ..Out::default() };
        out.keep(&vec![1u8; BACKLOG + 2]);
        assert_eq!(out.dropped, 2);
        out.drain_to_pty();
        assert!(out.backlog.len() < BACKLOG, "the pty took nothing");
        assert_eq!(out.dropped, 0, "the drop was not reported");
    }

    #[test]
    fn slow_chunks_are_odd_and_bounded() {
        for n in [1usize, 2, 7, 61, 2048] {
            for c in slow_chunks(n) {
                assert!(c >= 1 && c <= n.max(1), "{n}: {c}");
                assert!(c % 2 == 1 || c == n, "{n}: {c}");
            }
        }
    }
}
