//! The socket that debuggers connect to.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use tokio::net::{TcpListener, UnixListener};
use tracing::warn;
use ukdb_bridge::addr::ListenAddr;

use super::channel::Stream;

/// A bound TCP or Unix listener. A Unix socket file is removed on drop.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener, SocketAddr),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `addr`. A TCP address that is not loopback is allowed (the user
    /// typed it: the default is loopback) but warned about.
    pub async fn bind(addr: &ListenAddr) -> anyhow::Result<Self> {
        match addr {
            ListenAddr::Tcp(host_port) => {
                let listener = TcpListener::bind(host_port.as_str())
                    .await
                    .with_context(|| format!("cannot listen on {host_port}"))?;
                let local = listener.local_addr()?;
                if !local.ip().is_loopback() {
                    warn!(
                        "listening on {local}, which is not a loopback address: anyone who can \
                         reach it can read and write the unikernel's memory"
                    );
                }
                Ok(Listener::Tcp(listener, local))
            }
            ListenAddr::Unix(path) => {
                remove_stale_socket(path).await?;
                let listener = UnixListener::bind(path)
                    .with_context(|| format!("cannot listen on unix:{}", path.display()))?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    /// Accepts the next debugger; returns its stream and a name for messages.
    pub async fn accept(&self) -> io::Result<(Box<dyn Stream>, String)> {
        match self {
            Listener::Tcp(listener, _) => {
                let (stream, peer) = listener.accept().await?;
                // Latency matters more than throughput for RSP's small packets.
                if let Err(err) = stream.set_nodelay(true) {
                    warn!("cannot set TCP_NODELAY for {peer}: {err}");
                }
                Ok((Box::new(stream), peer.to_string()))
            }
            Listener::Unix(listener, path) => {
                let (stream, _) = listener.accept().await?;
                Ok((Box::new(stream), format!("unix:{}", path.display())))
            }
        }
    }
}

impl std::fmt::Display for Listener {
    /// The address actually bound, e.g. `127.0.0.1:40521` for `127.0.0.1:0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Tcp(_, addr) => write!(f, "{addr}"),
            Listener::Unix(_, path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes a Unix socket file left behind by a bridge that did not exit
/// cleanly. A socket that someone still listens on, or a file that is not a
/// socket, is an error. The check connects without blocking: a listener
/// whose backlog is full makes a blocking connect wait forever.
async fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!("cannot listen on unix:{}: the file exists and is not a socket", path.display());
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => {
            bail!("cannot listen on unix:{}: another process is listening there", path.display())
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => bail!(
            "cannot listen on unix:{}: another process is listening there (its backlog is full)",
            path.display()
        ),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display())),
        Err(err) => Err(err).with_context(|| format!("cannot listen on unix:{}", path.display())),
    }
}
