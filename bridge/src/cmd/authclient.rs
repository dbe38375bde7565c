//! The client half of the authentication exchange (see the stub's
//! `auth.rs` and docs/debugging.md, "Security"), shared by everything that
//! authenticates for a debugger: `ukdb bridge --key-file` (serial and
//! `--net`), `ukdb core --key-file` and `ukdb run --key-file`.
//!
//! [`Handshake`] makes every decision (what to send, how long to wait
//! after a "too soon", what a reply means); the drivers only carry its
//! packets: [`authenticate`] on a blocking stream, [`authenticate_async`]
//! over anything that implements [`Exchange`].

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::auth::{answer, read_key_file, Credentials};

/// How long to keep retrying while the stub says "too soon" (E0b).
const RETRY_FOR: Duration = Duration::from_secs(30);
/// The first wait after a "too soon"; it doubles up to [`WAIT_MAX`].
const WAIT_FIRST: Duration = Duration::from_millis(50);
/// The longest wait between two attempts.
const WAIT_MAX: Duration = Duration::from_secs(2);
/// The packet that asks for a challenge.
pub const CHALLENGE: &[u8] = b"qUkdb.challenge";

/// The credentials `--key-file FILE --tier TIER` give (`None` without a
/// key file). The file is read once, here.
pub fn credentials(key_file: Option<&Path>, tier: &str) -> anyhow::Result<Option<Credentials>> {
    match key_file {
        Some(path) => Ok(Some(Credentials { key: read_key_file(path)?, tier: tier.to_owned() })),
        None => Ok(None),
    }
}

/// What to do after a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this packet body and hand its reply to [`Handshake::on_reply`].
    Send(Vec<u8>),
    /// Wait this long, then send the body (a new challenge).
    WaitThenSend(Duration, Vec<u8>),
    /// Authenticated.
    Done,
}

/// Where the exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// The challenge's nonce.
    Nonce,
    /// The verdict on our answer.
    Verdict,
}

/// The exchange, sans I/O: challenge, answer, `OK`; while the stub refuses
/// for a while after failures (`E0b`), waits (50 ms, doubling to 2 s) and
/// asks again, for 30 s at most.
pub struct Handshake<'a> {
    creds: &'a Credentials,
    awaiting: Awaiting,
    until: Instant,
    wait: Duration,
}

impl<'a> Handshake<'a> {
    /// A new exchange, started at `now`; send [`CHALLENGE`] first.
    pub fn new(creds: &'a Credentials, now: Instant) -> Handshake<'a> {
        Handshake { creds, awaiting: Awaiting::Nonce, until: now + RETRY_FOR, wait: WAIT_FIRST }
    }

    /// The first packet's body.
    pub fn start(&self) -> Vec<u8> {
        CHALLENGE.to_vec()
    }

    /// The stub's reply (its body) to the last packet sent, at `now`.
    pub fn on_reply(&mut self, reply: &[u8], now: Instant) -> anyhow::Result<Step> {
        match self.awaiting {
            Awaiting::Nonce => {
                self.awaiting = Awaiting::Verdict;
                Ok(Step::Send(answer(self.creds, reply)?.into_bytes()))
            }
            Awaiting::Verdict => {
                self.awaiting = Awaiting::Nonce;
                match reply {
                    b"OK" => Ok(Step::Done),
                    b"E0b" if now + self.wait < self.until => {
                        let wait = self.wait;
                        self.wait = (self.wait * 2).min(WAIT_MAX);
                        Ok(Step::WaitThenSend(wait, CHALLENGE.to_vec()))
                    }
                    b"E0b" => bail!(
                        "the stub still refuses after {}s of failed attempts (E0b)",
                        RETRY_FOR.as_secs()
                    ),
                    b"E01" => bail!(
                        "the stub refused the key for the {} tier (a wrong key, or a key of the \
                         other tier: see --tier)",
                        self.creds.tier
                    ),
                    other => bail!(
                        "the stub did not authenticate us: {}",
                        String::from_utf8_lossy(other)
                    ),
                }
            }
        }
    }
}

/// Sends one packet (its body) to the stub and returns the reply's body,
/// acknowledged: what [`authenticate_async`] needs of a connection.
pub trait Exchange {
    /// One request and its reply.
    fn ask(&mut self, body: &[u8]) -> impl Future<Output = anyhow::Result<Vec<u8>>> + Send;
}

/// Authenticates over `conn` (nothing else sent in the session yet).
pub async fn authenticate_async<E: Exchange + Send>(
    conn: &mut E,
    creds: &Credentials,
) -> anyhow::Result<()> {
    let mut handshake = Handshake::new(creds, Instant::now());
    let mut send = handshake.start();
    loop {
        let reply = conn.ask(&send).await?;
        match handshake.on_reply(&reply, Instant::now())? {
            Step::Send(body) => send = body,
            Step::WaitThenSend(wait, body) => {
                tokio::time::sleep(wait).await;
                send = body;
            }
            Step::Done => return Ok(()),
        }
    }
}

/// Authenticates with blocking calls: `ask` sends one packet and returns
/// the reply's body.
pub fn authenticate_blocking(
    creds: &Credentials,
    mut ask: impl FnMut(&[u8]) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut handshake = Handshake::new(creds, Instant::now());
    let mut send = handshake.start();
    loop {
        let reply = ask(&send)?;
        match handshake.on_reply(&reply, Instant::now())? {
            Step::Send(body) => send = body,
            Step::WaitThenSend(wait, body) => {
                std::thread::sleep(wait);
                send = body;
            }
            Step::Done => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::auth::{hex, response};

    fn creds(tier: &str) -> Credentials {
        Credentials { key: vec![1, 2, 3], tier: tier.into() }
    }

    #[test]
    fn challenge_answer_ok() {
        let c = creds("ro");
        let now = Instant::now();
        let mut h = Handshake::new(&c, now);
        assert_eq!(h.start(), CHALLENGE);
        let nonce = [0x5au8; 32];
        let Step::Send(answer) = h.on_reply(hex(&nonce).as_bytes(), now).unwrap() else {
            panic!("no answer")
        };
        let want = format!("qUkdb.auth:ro,{}", hex(&response(&c.key, &nonce, b"ro")));
        assert_eq!(answer, want.into_bytes());
        assert_eq!(h.on_reply(b"OK", now).unwrap(), Step::Done);
    }

    #[test]
    fn too_soon_waits_doubling_then_gives_up() {
        let c = creds("full");
        let start = Instant::now();
        let mut h = Handshake::new(&c, start);
        let nonce = hex(&[1u8; 32]);
        let mut waits = Vec::new();
        let mut now = start;
        loop {
            assert!(matches!(h.on_reply(nonce.as_bytes(), now).unwrap(), Step::Send(_)));
            match h.on_reply(b"E0b", now) {
                Ok(Step::WaitThenSend(wait, body)) => {
                    assert_eq!(body, CHALLENGE);
                    waits.push(wait.as_millis());
                    now += wait;
                }
                Ok(other) => panic!("{other:?}"),
                Err(err) => {
                    assert!(err.to_string().contains("still refuses after 30s"), "{err}");
                    break;
                }
            }
        }
        assert_eq!(waits[..7], [50, 100, 200, 400, 800, 1600, 2000]);
        assert!(now - start <= RETRY_FOR);
    }

    #[test]
    fn refusals_name_the_tier() {
        for tier in ["ro", "full"] {
            let c = creds(tier);
            let now = Instant::now();
            let mut h = Handshake::new(&c, now);
            h.on_reply(hex(&[2u8; 32]).as_bytes(), now).unwrap();
            let err = h.on_reply(b"E01", now).unwrap_err().to_string();
            assert!(err.contains(&format!("for the {tier} tier")), "{err}");
        }
        let c = creds("ro");
        let mut h = Handshake::new(&c, Instant::now());
        let err = h.on_reply(b"E16", Instant::now()).unwrap_err().to_string();
        assert!(err.contains("not a nonce: E16"), "{err}");
    }

    #[test]
    fn credentials_from_the_options() {
        assert!(credentials(None, "ro").unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "0a0b\n").unwrap();
        let c = credentials(Some(&path), "ro").unwrap().unwrap();
        assert_eq!((c.key, c.tier.as_str()), (vec![10, 11], "ro"));
        assert!(credentials(Some(&dir.path().join("none")), "ro").is_err());
    }
}
