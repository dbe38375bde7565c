//! The connection to the unikernel's serial line: Unix socket, TCP or pty.

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
    })
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
