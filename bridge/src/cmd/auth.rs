//! `ukdb auth`: the response to a locked stub's challenge (for `monitor
//! auth` by hand), and the client half of the exchange that `ukdb bridge
//! --key-file` runs before it serves a debugger (see the stub's `auth.rs`
//! and docs/debugging.md, "Security").

use crate::Exit;
use anyhow::{bail, Context};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What every response starts with (the protocol's version).
pub const DOMAIN: &[u8] = b"ukdb-auth-v1";
/// The longest key, in bytes.
pub const KEY_MAX: usize = 64;

const LONG_ABOUT: &str = "\
Compute the response to a locked stub's challenge.

A stub started with ukdb.key=HEX (full access) or ukdb.rokey=HEX (read-only)
answers nothing but the handshake until the debugger authenticates. ukdb
bridge does it for gdb and lldb (--key-file); a plain gdb connected straight
to the stub does it by hand:

    (gdb) monitor auth
    ukdb: challenge 3f2a...
    $ ukdb auth --key-file full.key --tier full --nonce 3f2a...
    9c41...
    (gdb) monitor auth full 9c41...
    ukdb: authenticated: full access

The response is HMAC-SHA256(key, \"ukdb-auth-v1\" || nonce || tier) in hex.
The key file holds the key in hex (2 to 128 digits; surrounding whitespace is
ignored). Keep it readable by you alone.";

/// Compute the response to a locked stub's challenge (`monitor auth`)
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Cmd {
    /// The file holding the key, in hex.
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,

    /// The challenge's nonce, in hex (64 digits).
    #[arg(long, value_name = "HEX")]
    nonce: String,

    /// The tier asked for: full or ro (read-only); each has its own key.
    #[arg(long, value_name = "full|ro", default_value = "full", value_parser = ["full", "ro"])]
    tier: String,
}

/// Prints the response.
pub fn run(cmd: Cmd) -> anyhow::Result<Exit> {
    let key = read_key_file(&cmd.key_file)?;
    let nonce = unhex(cmd.nonce.trim().as_bytes())
        .filter(|n| n.len() == 32)
        .context("the nonce is 64 hex digits (what `monitor auth` or qUkdb.challenge printed)")?;
    println!("{}", hex(&response(&key, &nonce, cmd.tier.as_bytes())));
    Ok(Exit::Code(0))
}

/// `HMAC-SHA256(key, DOMAIN || nonce || tier)`.
pub fn response(key: &[u8], nonce: &[u8], tier: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(DOMAIN);
    mac.update(nonce);
    mac.update(tier);
    mac.finalize().into_bytes().into()
}

/// Reads a key file: hex, 1 to [`KEY_MAX`] bytes, whitespace around it
/// ignored. Errors never show the file's contents.
pub fn read_key_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the key file {}", path.display()))?;
    match unhex(text.trim_ascii()) {
        Some(key) if !key.is_empty() && key.len() <= KEY_MAX => Ok(key),
        _ => bail!(
            "the key file {} does not hold a key: 2 to {} hex digits expected",
            path.display(),
            2 * KEY_MAX
        ),
    }
}

/// A key and the tier it opens: what `--key-file` gives.
#[derive(Clone)]
pub struct Credentials {
    /// The key's bytes.
    pub key: Vec<u8>,
    /// `full` or `ro`.
    pub tier: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ key: <redacted>, tier: {} }}", self.tier)
    }
}

/// How long the stub may take to answer one packet of the exchange.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Authenticates on a fresh connection to the stub (ack mode, nothing else
/// sent yet): challenge, response, `OK` (see [`super::authclient`]). The
/// stream must have no read timeout set, or one of at least a few seconds.
pub fn authenticate<S: Read + Write>(stream: &mut S, creds: &Credentials) -> anyhow::Result<()> {
    super::authclient::authenticate_blocking(creds, |body| exchange(stream, body))
}

/// The `qUkdb.auth` packet's body answering the challenge `nonce` (the
/// reply's body, in hex).
pub fn answer(creds: &Credentials, nonce: &[u8]) -> anyhow::Result<String> {
    let nonce = unhex(nonce)
        .filter(|n| n.len() == 32)
        .with_context(|| format!("the stub's challenge is not a nonce: {}", show(nonce)))?;
    let mac = response(&creds.key, &nonce, creds.tier.as_bytes());
    Ok(format!("qUkdb.auth:{},{}", creds.tier, hex(&mac)))
}

/// Takes the first whole packet out of `bytes` (what came before it, acks
/// included, is dropped) and returns its body; `None` until one is whole.
pub fn take_packet(bytes: &mut Vec<u8>) -> Option<Vec<u8>> {
    let start = bytes.iter().position(|&b| b == b'$')?;
    let hash = start + bytes.get(start..)?.iter().position(|&b| b == b'#')?;
    if bytes.len() < hash + 3 {
        return None;
    }
    let body = bytes.get(start + 1..hash)?.to_vec();
    bytes.drain(..hash + 3);
    Some(body)
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends one packet and returns the reply's body, acknowledging it.
fn exchange<S: Read + Write>(stream: &mut S, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    stream.write_all(&packet(body)).context("cannot write to the stub")?;
    stream.flush()?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    // Skip acks (and anything before the packet), then read to `#xx`.
    loop {
        if Instant::now() > deadline {
            bail!("the stub did not answer {}", show(body));
        }
        if stream.read(&mut byte).context("cannot read from the stub")? == 0 {
            bail!("the stub closed the connection");
        }
        match byte[0] {
            b'$' if reply.is_empty() => reply.push(b'$'),
            b'-' if reply.is_empty() => {
                stream.write_all(&packet(body))?;
            }
            b'#' if !reply.is_empty() => {
                let mut sum = [0u8; 2];
                stream.read_exact(&mut sum).context("cannot read from the stub")?;
                let body = reply.split_off(1);
                let want = format!("{:02x}", checksum(&body));
                if want.as_bytes() != sum {
                    stream.write_all(b"-")?;
                    reply.clear();
                    continue;
                }
                stream.write_all(b"+")?;
                stream.flush()?;
                return Ok(body);
            }
            b if !reply.is_empty() => {
                if reply.len() > 4096 {
                    bail!("the stub's reply is too long");
                }
                reply.push(b);
            }
            _ => {}
        }
    }
}

fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// `$body#xx`.
pub fn packet(body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(body.len() + 4);
    p.push(b'$');
    p.extend_from_slice(body);
    p.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
    p
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_hmac_sha256_of_domain_nonce_and_tier() {
        let nonce = [0x11u8; 32];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"\x01\x02").unwrap();
        mac.update(&[DOMAIN, &nonce[..], b"ro"].concat());
        let want: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(response(b"\x01\x02", &nonce, b"ro"), want);
        assert_ne!(response(b"\x01\x02", &nonce, b"full"), want);
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, " 00ff10\n").unwrap();
        assert_eq!(read_key_file(&path).unwrap(), vec![0, 0xff, 0x10]);
        for bad in ["", "0", "zz", &"a".repeat(2 * KEY_MAX + 2), "00 11"] {
            std::fs::write(&path, bad).unwrap();
            let err = read_key_file(&path).unwrap_err().to_string();
            assert!(err.contains("does not hold a key"), "{bad}: {err}");
            assert!(bad.len() < 2 || !err.contains(bad), "{err}");
        }
        let creds = Credentials { key: vec![0x42; 8], tier: "ro".into() };
        assert!(!format!("{creds:?}").contains("42"));
    }

    /// A fake stub on the other end of a socket pair: answers the
    /// exchange once for `key`.
    fn fake_stub(mut s: std::os::unix::net::UnixStream, key: Vec<u8>, first: &'static [u8]) {
        let mut buf = Vec::new();
        let mut nonce = [7u8; 32];
        let mut replies = vec![first.to_vec()];
        let mut byte = [0u8; 1];
        while s.read(&mut byte).unwrap_or(0) == 1 {
            buf.push(byte[0]);
            let Some(hash) = buf.iter().position(|&b| b == b'#') else { continue };
            if buf.len() < hash + 3 {
                continue;
            }
            let start = buf.iter().position(|&b| b == b'$').unwrap();
            let body = buf[start + 1..hash].to_vec();
            buf.clear();
            let reply = if body == b"qUkdb.challenge" {
                nonce[0] = nonce[0].wrapping_add(1);
                hex(&nonce).into_bytes()
            } else if let Some(mac) = body.strip_prefix(b"qUkdb.auth:full,") {
                let good = hex(&response(&key, &nonce, b"full")).into_bytes();
                match replies.pop() {
                    Some(r) => r,
                    None if mac == good.as_slice() => b"OK".to_vec(),
                    None => b"E01".to_vec(),
                }
            } else {
                b"E01".to_vec()
            };
            s.write_all(b"+").unwrap();
            s.write_all(&packet(&reply)).unwrap();
        }
    }

    #[test]
    fn the_exchange_against_a_fake_stub() {
        for (key, first, ok) in [
            (vec![1u8, 2, 3], &b"E0b"[..], true),
            (vec![9u8], &b"OK"[..], true),
            (vec![9u8], &b"E01"[..], false),
        ] {
            let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let k = key.clone();
            let stub = std::thread::spawn(move || fake_stub(theirs, k, first));
            let creds = Credentials { key, tier: "full".into() };
            let got = authenticate(&mut ours, &creds);
            assert_eq!(got.is_ok(), ok, "{first:?}: {got:?}");
            drop(ours);
            stub.join().unwrap();
        }
    }
}
