//! The `--target` and `--listen` addresses.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A malformed `--target` or `--listen` address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// The target has no `KIND:` prefix or an unknown one.
    #[error("`{0}` is not a target: expected unix:PATH, tcp:HOST:PORT, pty:PATH or xen:DOMAIN")]
    UnknownTarget(String),
    /// `xen:` with no domain, or a name no Xen domain can have.
    #[error("`{0}`: expected xen:DOMID or xen:NAME")]
    BadDomain(String),
    /// `unix:` or `pty:` with nothing after it.
    #[error("`{0}` has an empty path")]
    EmptyPath(String),
    /// Not `HOST:PORT`.
    #[error("`{0}` is not HOST:PORT")]
    NotHostPort(String),
    /// The port is not a number from 0 to 65535.
    #[error("`{0}` has no valid port (0-65535)")]
    BadPort(String),
    /// An IPv6 address without brackets.
    #[error("`{0}`: write an IPv6 address in brackets, e.g. [::1]:1234")]
    UnbracketedIpv6(String),
}

/// Where the unikernel's serial line is: what `--target` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `unix:PATH`: a Unix socket, e.g. QEMU's `-serial unix:PATH,server,nowait`.
    Unix(PathBuf),
    /// `tcp:HOST:PORT`: a TCP socket, e.g. QEMU's `-serial tcp::PORT,server,nowait`.
    Tcp(String),
    /// `pty:PATH`: a pseudo-terminal slave, e.g. the `/dev/pts/N` that QEMU's
    /// `-serial pty` prints.
    Pty(PathBuf),
    /// `xen:DOMID` or `xen:NAME`: a Xen domain's PV console, the pty that
    /// xenconsoled names in xenstore (`/local/domain/DOMID/console/tty`).
    Xen(String),
}

impl FromStr for Target {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rest) =
            s.split_once(':').ok_or_else(|| AddrError::UnknownTarget(s.to_owned()))?;
        match kind {
            "unix" => Ok(Target::Unix(non_empty_path(s, rest)?)),
            "pty" => Ok(Target::Pty(non_empty_path(s, rest)?)),
            "tcp" => Ok(Target::Tcp(host_port(rest)?)),
            "xen" => Ok(Target::Xen(domain(s, rest)?)),
            _ => Err(AddrError::UnknownTarget(s.to_owned())),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Tcp(addr) => write!(f, "tcp:{addr}"),
            Target::Pty(path) => write!(f, "pty:{}", path.display()),
            Target::Xen(domain) => write!(f, "xen:{domain}"),
        }
    }
}

/// Where debuggers connect: what `--listen` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT` (or `tcp:HOST:PORT`): a TCP port, for `target remote HOST:PORT`.
    Tcp(String),
    /// `unix:PATH`: a Unix socket, for `target remote PATH` in gdb.
    Unix(PathBuf),
}

impl Default for ListenAddr {
    fn default() -> Self {
        ListenAddr::Tcp(DEFAULT_LISTEN.to_owned())
    }
}

/// The default `--listen` address: loopback only, gdb's customary port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1234";

impl FromStr for ListenAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("unix:") {
            Ok(ListenAddr::Unix(non_empty_path(s, rest)?))
        } else if let Some(rest) = s.strip_prefix("tcp:") {
            Ok(ListenAddr::Tcp(host_port(rest)?))
        } else {
            Ok(ListenAddr::Tcp(host_port(s)?))
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => f.write_str(addr),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

fn non_empty_path(whole: &str, path: &str) -> Result<PathBuf, AddrError> {
    if path.is_empty() {
        Err(AddrError::EmptyPath(whole.to_owned()))
    } else {
        Ok(PathBuf::from(path))
    }
}

/// A domain id or name, as `xl` takes it: not empty, no `/` (it becomes part
/// of a xenstore path), no whitespace or control characters.
fn domain(whole: &str, domain: &str) -> Result<String, AddrError> {
    let ok = !domain.is_empty()
        && domain.len() <= 256
        && !domain.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(domain.to_owned())
    } else {
        Err(AddrError::BadDomain(whole.to_owned()))
    }
}

/// Checks `HOST:PORT` (host may be a name, an IPv4 address or a bracketed
/// IPv6 address) and returns it unchanged, ready for name resolution.
fn host_port(s: &str) -> Result<String, AddrError> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| AddrError::NotHostPort(s.to_owned()))?;
    if host.is_empty() {
        return Err(AddrError::NotHostPort(s.to_owned()));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(AddrError::UnbracketedIpv6(s.to_owned()));
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err(AddrError::BadPort(s.to_owned()));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!("unix:/tmp/serial.sock".parse(), Ok(Target::Unix("/tmp/serial.sock".into())));
        assert_eq!("unix:rel/x".parse(), Ok(Target::Unix("rel/x".into())));
        assert_eq!("tcp:localhost:4444".parse(), Ok(Target::Tcp("localhost:4444".into())));
        assert_eq!("tcp:[::1]:4444".parse(), Ok(Target::Tcp("[::1]:4444".into())));
        assert_eq!("pty:/dev/pts/3".parse(), Ok(Target::Pty("/dev/pts/3".into())));
        assert_eq!("xen:7".parse(), Ok(Target::Xen("7".into())));
        assert_eq!("xen:my-vm.1".parse(), Ok(Target::Xen("my-vm.1".into())));
    }

    #[test]
    fn bad_targets() {
        for bad in [
            "",
            "/tmp/x",
            "serial:/x",
            "unix:",
            "pty:",
            "tcp:",
            "tcp:host",
            "tcp::1234",
            "tcp:h:99999",
            "tcp:h:",
            "tcp:h:-1",
            "tcp:::1:80",
            "xen:",
            "xen:a/b",
            "xen:a b",
            "xen:\n",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn targets_display_as_typed() {
        for s in [
            "unix:/tmp/s",
            "tcp:127.0.0.1:4444",
            "tcp:[::1]:1",
            "pty:/dev/pts/0",
            "xen:3",
            "xen:vm",
        ] {
            assert_eq!(s.parse::<Target>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!("127.0.0.1:1234".parse(), Ok(ListenAddr::Tcp("127.0.0.1:1234".into())));
        assert_eq!("tcp:0.0.0.0:1".parse(), Ok(ListenAddr::Tcp("0.0.0.0:1".into())));
        assert_eq!("localhost:0".parse(), Ok(ListenAddr::Tcp("localhost:0".into())));
        assert_eq!("[::1]:1234".parse(), Ok(ListenAddr::Tcp("[::1]:1234".into())));
        assert_eq!("unix:/tmp/gdb.sock".parse(), Ok(ListenAddr::Unix("/tmp/gdb.sock".into())));
        assert_eq!(ListenAddr::default(), ListenAddr::Tcp("127.0.0.1:1234".into()));
        for bad in ["", "1234", ":1234", "unix:", "host:port", "::1:1234"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad:?} accepted");
        }
    }
}
