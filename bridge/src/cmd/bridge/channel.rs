//! The connection to the unikernel's serial line: Unix socket, TCP or pty,
//! or a Xen domain's console (a pty found in xenstore).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use anyhow::anyhow;
use nix::fcntl::OFlag;
use nix::sys::termios::{self, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;
use tracing::{debug, info};
use ukdb_bridge::addr::Target;

/// A bidirectional byte stream: the channel, or a debugger's connection.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// The first pause between connection attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Connects to `target`, retrying until `timeout` has passed: QEMU may still
/// be starting and not have created its socket or pty yet.
pub async fn connect(target: &Target, timeout: Duration) -> anyhow::Result<Box<dyn Stream>> {
    // A Xen domain is resolved once: missing tools or an unknown domain are
    // not worth waiting for; the pty it names is then retried like any other.
    let resolved;
    let target = match target {
        Target::Xen(domain) => {
            let tty = xen::console_tty(domain, None).await?;
            info!("xen:{domain}: console is {}", tty.display());
            resolved = Target::Pty(tty);
            &resolved
        }
        other => other,
    };
    let deadline = Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut announced = false;
    loop {
        let err = match tokio::time::timeout_at(deadline, connect_once(target)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => anyhow::Error::from(err),
            Err(_) => anyhow!("connection attempt timed out"),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(err.context(format!(
                "cannot connect to {target} (gave up after {timeout:?}; see --connect-timeout)"
            )));
        }
        if !announced {
            info!("waiting for {target} ({err:#})");
            announced = true;
        } else {
            debug!("connecting to {target}: {err:#}");
        }
        tokio::time::sleep_until((now + backoff).min(deadline)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect_once(target: &Target) -> io::Result<Box<dyn Stream>> {
    Ok(match target {
        Target::Unix(path) => Box::new(UnixStream::connect(path).await?),
        Target::Tcp(addr) => {
            let stream = TcpStream::connect(addr.as_str()).await?;
            stream.set_nodelay(true)?;
            Box::new(stream)
        }
        Target::Pty(path) => Box::new(PtyStream::open(path).await?),
        Target::Xen(domain) => Box::new(
            PtyStream::open(&xen::console_tty(domain, None).await.map_err(io::Error::other)?)
                .await?,
        ),
    })
}

/// `xen:DOMID` / `xen:NAME`: the domain's console pty, from xenstore.
pub mod xen {
    use std::ffi::OsStr;
    use std::io;
    use std::path::PathBuf;
    use tokio::process::Command;

    /// What `xen:DOMAIN` could not be resolved to.
    #[derive(Debug, thiserror::Error)]
    pub enum XenError {
        /// A Xen tool is not on PATH.
        #[error("xen: needs {0} (Xen tools) on PATH")]
        NoTool(&'static str),
        /// A tool could not be run, or failed in a way that says nothing
        /// about the domain.
        #[error("xen: {tool} failed: {why}")]
        Tool {
            /// The tool.
            tool: &'static str,
            /// Its error or stderr.
            why: String,
        },
        /// No domain has that id or name.
        #[error("xen: no domain {0}")]
        UnknownDomain(String),
        /// The domain exists but xenstore names no console tty for it.
        #[error("xen: domain {0} has no console tty in xenstore (is xenconsoled running?)")]
        NoTty(String),
    }

    /// The output of `tool args..` (trimmed stdout), or `None` when it
    /// exited non-zero (e.g. xenstore-read of an absent key).
    async fn run(
        tool: &'static str,
        args: &[&str],
        path: Option<&OsStr>,
    ) -> Result<Option<String>, XenError> {
        let mut cmd = Command::new(tool);
        cmd.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
        if let Some(path) = path {
            // Also where the tool is looked up (std uses the child's PATH).
            cmd.env("PATH", path);
        }
        let out = cmd.output().await.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => XenError::NoTool(tool),
            _ => XenError::Tool { tool, why: e.to_string() },
        })?;
        if !out.status.success() {
            return Ok(None);
        }
        let text = String::from_utf8(out.stdout)
            .map_err(|_| XenError::Tool { tool, why: "output is not UTF-8".into() })?;
        Ok(Some(text.trim().to_owned()))
    }

    /// The domain id of `domain`: itself if numeric, else from `xl domid`
    /// or, without `xl`, a search of `/local/domain/*/name` in xenstore.
    async fn domid(domain: &str, path: Option<&OsStr>) -> Result<u32, XenError> {
        if let Ok(id) = domain.parse::<u32>() {
            return Ok(id);
        }
        match run("xl", &["domid", domain], path).await {
            Ok(Some(out)) => {
                return out.parse().map_err(|_| XenError::Tool {
                    tool: "xl",
                    why: format!("`xl domid {domain}` printed {out:?}"),
                })
            }
            Ok(None) => return Err(XenError::UnknownDomain(domain.to_owned())),
            Err(XenError::NoTool(_)) => {}
            Err(e) => return Err(e),
        }
        let list = run("xenstore-list", &["/local/domain"], path).await?.ok_or(XenError::Tool {
            tool: "xenstore-list",
            why: "cannot list /local/domain".into(),
        })?;
        for id in list.split_whitespace().filter_map(|id| id.parse::<u32>().ok()) {
            let key = format!("/local/domain/{id}/name");
            if run("xenstore-read", &[&key], path).await?.as_deref() == Some(domain) {
                return Ok(id);
            }
        }
        Err(XenError::UnknownDomain(domain.to_owned()))
    }

    /// The pty of `domain`'s PV console: `/local/domain/DOMID/console/tty`.
    /// `path` replaces PATH for the tools (tests); `None`: the inherited one.
    pub async fn console_tty(domain: &str, path: Option<&OsStr>) -> Result<PathBuf, XenError> {
        let id = domid(domain, path).await?;
        let key = format!("/local/domain/{id}/console/tty");
        match run("xenstore-read", &[&key], path).await? {
            Some(tty) if !tty.is_empty() => Ok(PathBuf::from(tty)),
            _ => {
                let name = format!("/local/domain/{id}/name");
                match run("xenstore-read", &[&name], path).await? {
                    Some(_) => Err(XenError::NoTty(domain.to_owned())),
                    None => Err(XenError::UnknownDomain(domain.to_owned())),
                }
            }
        }
    }
}

/// A pseudo-terminal slave in raw mode, with non-blocking async I/O.
#[derive(Debug)]
pub struct PtyStream {
    file: AsyncFd<File>,
}

impl PtyStream {
    /// Opens the pty slave at `path` read/write (never as the controlling
    /// terminal) and puts it in raw mode: no echo, no line editing, no
    /// translation of bytes, 8 data bits. The blocking calls (`open`,
    /// `tcsetattr`) run on tokio's blocking pool.
    pub async fn open(path: &Path) -> io::Result<Self> {
        let owned = path.to_owned();
        let file = tokio::task::spawn_blocking(move || Self::open_raw(&owned))
            .await
            .map_err(io::Error::other)??;
        // SAFETY: `file` owns its descriptor, which stays open, and the same
        // one, until the `AsyncFd` (which owns `file`) is dropped: this type
        // never takes the file out, swaps it or closes its descriptor.
        let file = unsafe { AsyncFd::register(file) }?;
        Ok(Self { file })
    }

    /// The blocking part of [`PtyStream::open`].
    fn open_raw(path: &Path) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
            .open(path)?;
        let mut attrs = termios::tcgetattr(&file).map_err(|errno| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a terminal ({errno})", path.display()),
            )
        })?;
        termios::cfmakeraw(&mut attrs);
        termios::tcsetattr(&file, SetArg::TCSANOW, &attrs).map_err(io::Error::from)?;
        Ok(file)
    }
}

/// `EIO` from a pty slave means that the master side is closed: end of stream.
fn is_hangup(err: &io::Error) -> bool {
    err.raw_os_error() == Some(nix::errno::Errno::EIO as i32)
}

impl AsyncRead for PtyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.file.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|file| file.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) if is_hangup(&err) => return Poll::Ready(Ok(())),
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.file.poll_write_ready(cx))?;
            match guard.try_io(|file| file.get_ref().write(data)) {
                Ok(Err(err)) if is_hangup(&err) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the pty's master side is closed",
                    )))
                }
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the pty; there is no buffer of ours to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::pty::openpty;
    use std::os::fd::OwnedFd;
    use std::path::PathBuf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn slave_path(slave: &OwnedFd) -> std::path::PathBuf {
        nix::unistd::ttyname(slave).expect("ttyname of the pty slave")
    }

    #[tokio::test]
    async fn pty_is_raw_and_passes_every_byte() {
        let pty = openpty(None, None).expect("openpty");
        let path = slave_path(&pty.slave);
        let mut stream = PtyStream::open(&path).await.expect("open the slave");
        let mut master = File::from(pty.master);

        // Every byte value, in both directions, unchanged (raw mode: no echo,
        // no CR/LF translation, no signals for ^C).
        let all: Vec<u8> = (0..=255u8).collect();
        master.write_all(&all).unwrap();
        let mut got = vec![0; all.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
            .await
            .expect("read in time")
            .unwrap();
        assert_eq!(got, all);

        stream.write_all(&all).await.unwrap();
        let mut back = vec![0; all.len()];
        let master_reader =
            std::thread::spawn(move || master.read_exact(&mut back).map(|_| (master, back)));
        let (master, back) = master_reader.join().unwrap().unwrap();
        assert_eq!(back, all);

        // Closing the master is the end of the stream for the slave.
        drop(master);
        drop(pty.slave);
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("EOF in time")
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_regular_file_is_not_a_pty() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = PtyStream::open(file.path()).await.unwrap_err();
        assert!(err.to_string().contains("not a terminal"), "{err}");
    }

    #[tokio::test]
    async fn connect_gives_up_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::Unix(dir.path().join("absent.sock"));
        let start = Instant::now();
        let err = connect(&target, Duration::from_millis(300)).await.err().unwrap();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        assert!(format!("{err:#}").contains("cannot connect to unix:"), "{err:#}");
    }

    /// A directory of fake Xen tools: shell scripts answering from a table
    /// of xenstore keys (one `KEY VALUE` line each).
    fn fake_xen(store: &str, with_xl: bool) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("store"), store).unwrap();
        let db = dir.path().join("store");
        let script = |name: &str, body: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let db = db.display();
        script(
            "xenstore-read",
            format!(
                "v=$(awk -v k=\"$1\" '$1 == k {{ $1 = \"\"; sub(/^ /, \"\"); print; f = 1 }} END {{ exit !f }}' {db}) \
                 || {{ echo \"couldn't read path $1\" >&2; exit 1; }}\necho \"$v\"\n"
            ),
        );
        script(
            "xenstore-list",
            format!("awk '{{ split($1, p, \"/\"); if (p[3] == \"domain\") print p[4] }}' {db} | sort -u\n"),
        );
        if with_xl {
            script(
                "xl",
                format!(
                    "for d in $(awk '{{ split($1, p, \"/\"); print p[4] }}' {db} | sort -u); do\n\
                     if [ \"$(xenstore-read /local/domain/$d/name 2>/dev/null)\" = \"$2\" ]; then echo $d; exit 0; fi\n\
                     done\necho \"$2 is an invalid domain identifier\" >&2; exit 1\n"
                ),
            );
        }
        dir
    }

    /// PATH for the fake tools: the directory, then /usr/bin and /bin for
    /// `sh`, `awk` and `sort` (the test process's own PATH is left alone).
    fn fake_path(dir: &tempfile::TempDir) -> std::ffi::OsString {
        format!("{}:/usr/bin:/bin", dir.path().display()).into()
    }

    const STORE: &str = "/local/domain/0/name Domain-0
/local/domain/3/name unikernel
/local/domain/3/console/tty /dev/pts/42
/local/domain/5/name noconsole
";

    #[tokio::test]
    async fn xen_domains_resolve_by_id_and_by_name() {
        for with_xl in [true, false] {
            let dir = fake_xen(STORE, with_xl);
            let path = fake_path(&dir);
            for domain in ["3", "unikernel"] {
                let tty = xen::console_tty(domain, Some(&path)).await;
                assert_eq!(tty.unwrap(), PathBuf::from("/dev/pts/42"), "{domain} xl={with_xl}");
            }
        }
    }

    #[tokio::test]
    async fn xen_errors_say_what_is_wrong() {
        let dir = fake_xen(STORE, true);
        let path = fake_path(&dir);
        let err = |d: &'static str| {
            let path = path.clone();
            async move { xen::console_tty(d, Some(&path)).await.unwrap_err().to_string() }
        };
        assert_eq!(err("nosuch").await, "xen: no domain nosuch");
        assert_eq!(err("9").await, "xen: no domain 9");
        assert_eq!(
            err("noconsole").await,
            "xen: domain noconsole has no console tty in xenstore (is xenconsoled running?)"
        );
        assert_eq!(err("5").await, err("noconsole").await.replace("noconsole", "5"));
        // Without xl, names are searched in xenstore: the same answers.
        let dir = fake_xen(STORE, false);
        let path = fake_path(&dir);
        let e = xen::console_tty("nosuch", Some(&path)).await.unwrap_err();
        assert_eq!(e.to_string(), "xen: no domain nosuch");
        // No Xen tools at all.
        let empty = tempfile::tempdir().unwrap();
        let e = xen::console_tty("3", Some(empty.path().as_os_str())).await.unwrap_err();
        assert_eq!(e.to_string(), "xen: needs xenstore-read (Xen tools) on PATH");
        let e = xen::console_tty("vm", Some(empty.path().as_os_str())).await.unwrap_err();
        assert_eq!(e.to_string(), "xen: needs xenstore-list (Xen tools) on PATH");
    }

    #[tokio::test]
    async fn connect_waits_for_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.sock");
        let target = Target::Unix(path.clone());
        let connecting =
            tokio::spawn(async move { connect(&target, Duration::from_secs(10)).await });
        // Bind only after the first attempts have failed.
        tokio::task::yield_now().await;
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (_server, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("accepted in time")
            .unwrap();
        connecting.await.unwrap().expect("connected");
    }
}
