//! Who is attached, and everything that goes to the stub.
//!
//! All bytes for the stub go through [`Shared`], under one lock together with
//! the record of the attached debugger. That makes the ordering guarantees
//! simple: a debugger's bytes are queued only while it owns the session;
//! its `DLE 'X'` is queued, and the session freed, in one step; so the next
//! debugger's first byte always comes after the previous one's `DLE 'X'`, and
//! nothing of a debugger ever follows its `DLE 'X'` or the final `DLE 'R'`.
//!
//! The queue for the stub is one byte buffer, bounded for debuggers: a
//! debugger's task waits for [`Shared::wait_room`] before it reads more from
//! its socket, so a client that sends faster than the line carries is slowed
//! down (TCP backpressure) instead of filling the bridge's memory. Control
//! sequences are always queued (they are few and tiny).
//!
//! Every `DLE 'X'` the bridge sends is acknowledged by the stub's `DLE 'E'`.
//! While an acknowledgement is outstanding, the stub's debugger bytes are
//! late replies to an ended session and are discarded, so that they never
//! reach the next debugger.
//!
//! A debugger's request packets are paced ([`Pacer`]): one at a time is
//! outstanding at the stub, the others wait here, up to [`HELD_LIMIT`]
//! bytes; further ones are dropped (with a warning: no debugger sends so
//! many requests without waiting for answers). The stub's replies release
//! them (in [`Shared::to_client`]), so does
//! the acknowledgement of an ended session's `DLE 'X'` (a request of a
//! departed debugger stays outstanding until then: the next debugger's first
//! packet is not queued behind it) and, as a safety net, the timeout that
//! the debugger's task runs ([`Shared::pace_deadline`], [`Shared::expire`]).
//! A departing debugger's held packets are dropped before its `DLE 'X'`.
//!
//! Nothing is logged while the lock is held: each method collects its
//! messages in a [`Logs`] and emits them after unlocking.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, info, warn};
use ukdb_bridge::escape::{control_sequence, describe_rsp_byte, Escaped};
use ukdb_bridge::pace::{Pacer, Release, Released, Request, HELD_LIMIT, REPLY_TIMEOUT};
use ukdb_bridge::reliable::{self, Link};
use ukdb_bridge::rsp;
use ukdb_bridge::wire::{self, DLE};

/// How many bytes of stub output may wait for a debugger that does not read
/// them before it is dropped. Counted in bytes, not chunks: QEMU writes the
/// line a byte at a time, so one reply can arrive in a thousand reads (a
/// count of chunks dropped a gdb that was merely scheduled late while
/// target.xml arrived).
const CLIENT_QUEUE_BYTES: usize = 4 << 20;

/// How many bytes from debuggers may be queued for the line before their
/// tasks stop reading their sockets. The queue can exceed it by what one
/// read brings (one read buffer, or one packet of at most
/// [`rsp::DEFAULT_MAX_PACKET`] that it completes).
pub const TO_STUB_LIMIT: usize = 64 * 1024;

/// How long an unacknowledged `DLE 'X'` may keep the stub's replies from an
/// attached debugger before the bridge warns (once) that the stub may not
/// speak protocol v2.
const ACK_WARNING: Duration = Duration::from_secs(5);

/// Whether new bridges keep the serial hop reliable (`--noisy-line`): see
/// [`ukdb_bridge::reliable`]. Process-wide, set once from the command line
/// before the bridge starts.
static NOISY_LINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every [`Shared`] created from now on keep the serial hop
/// reliable (ack mode, checksums checked, retransmissions).
pub fn set_noisy_line(on: bool) {
    NOISY_LINE.store(on, Ordering::Relaxed);
}

/// How long a request may stay outstanding on a noisy line before the
/// next one is forwarded anyway.
const NOISY_REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A random first request number for a link (see
/// [`ukdb_bridge::reliable::Link::new`]).
fn rand_seq() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

/// Whether `--noisy-line` is on.
pub fn noisy_line() -> bool {
    NOISY_LINE.load(Ordering::Relaxed)
}

/// Log lines collected under the lock and emitted after it is released.
#[derive(Debug, Default)]
#[must_use = "the collected lines must be emitted with `emit`"]
struct Logs(Vec<(Level, String)>);

#[derive(Debug, Clone, Copy)]
enum Level {
    Debug,
    Info,
    Warn,
}

impl Logs {
    fn push(&mut self, level: Level, msg: String) {
        self.0.push((level, msg));
    }

    fn emit(self) {
        for (level, msg) in self.0 {
            match level {
                Level::Debug => debug!("{msg}"),
                Level::Info => info!("{msg}"),
                Level::Warn => warn!("{msg}"),
            }
        }
    }
}

/// Why a debugger cannot have the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Another debugger has it.
    #[error("a debugger is attached already ({0})")]
    Busy(String),
    /// The bridge is shutting down.
    #[error("the bridge is stopping")]
    Stopping,
}

/// What a hello from the stub (a restarted unikernel) did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restart {
    /// The debugger whose connection was dropped, if any.
    pub dropped: Option<String>,
}

/// The state shared by the bridge's tasks.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    trace: bool,
    /// Wakes the channel writer: bytes or a flush request were queued.
    queued: Notify,
    /// Wakes debugger tasks waiting for room in the queue.
    room: Notify,
}

#[derive(Debug)]
struct State {
    /// Bytes for the stub, in order, not yet taken by the writer.
    out: Vec<u8>,
    /// Answered once everything queued before them has been written.
    flushes: Vec<oneshot::Sender<()>>,
    client: Option<Client>,
    next_id: u64,
    closing: bool,
    /// A hello or a sync has been seen: a stub is there.
    stub_seen: bool,
    /// A `DLE 'F'` has been written: the stub may be in framed mode.
    framing_requested: bool,
    /// The last bytes queued in `out` are a `DLE 'F'` of ours.
    framing_last: bool,
    /// `DLE 'X'` sent and not yet acknowledged by `DLE 'E'`.
    acks_outstanding: u32,
    /// When `acks_outstanding` last went from 0 to 1.
    acks_since: Option<Instant>,
    /// Whether the bridge has warned about a missing acknowledgement.
    ack_warned: bool,
    /// The attached debugger's request packets not yet forwarded, and the
    /// one outstanding at the stub.
    pacer: Pacer,
    /// With `--noisy-line`: the acknowledgements of both hops, terminated
    /// here.
    link: Option<Link>,
}

#[derive(Debug)]
struct Client {
    id: u64,
    peer: String,
    /// Stub output for the debugger; `None` once the bridge has decided to
    /// drop it (the session stays taken until its task has detached).
    tx: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// Bytes in `tx` that its task has not taken yet.
    queued: Arc<AtomicUsize>,
    /// Whether anything of this debugger was queued for the stub (only then
    /// may the stub have a session for it, which `DLE 'X'` ends).
    forwarded: bool,
    /// How many of its packets the pacer dropped (it held too many).
    dropped: u64,
}

/// A debugger's claim on the session, handed to its task.
#[derive(Debug)]
pub struct Attached {
    pub id: u64,
    pub from_stub: FromStub,
}

/// Stub output for one debugger, bounded by [`CLIENT_QUEUE_BYTES`].
#[derive(Debug)]
pub struct FromStub {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

impl FromStub {
    /// The next chunk; `None` once the bridge has dropped the debugger.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let bytes = self.rx.recv().await?;
        self.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
        Some(bytes)
    }

    /// The next chunk if one waits.
    #[cfg(test)]
    pub fn try_recv(&mut self) -> Result<Vec<u8>, mpsc::error::TryRecvError> {
        let bytes = self.rx.try_recv()?;
        self.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
        Ok(bytes)
    }
}

impl State {
    fn owns(&self, id: u64) -> bool {
        self.client.as_ref().is_some_and(|c| c.id == id)
    }
}

impl Shared {
    pub fn new(trace: bool) -> Self {
        Self {
            state: Mutex::new(State {
                out: Vec::new(),
                flushes: Vec::new(),
                client: None,
                next_id: 1,
                closing: false,
                stub_seen: false,
                framing_requested: false,
                framing_last: false,
                acks_outstanding: 0,
                acks_since: None,
                ack_warned: false,
                // On a noisy line the link retries a request for longer than
                // the pacer's usual timeout: the next one must not overtake it.
                pacer: if noisy_line() {
                    Pacer::new(NOISY_REPLY_TIMEOUT, HELD_LIMIT)
                } else {
                    Pacer::default()
                },
                link: noisy_line().then(|| Link::new(rand_seq())),
            }),
            trace,
            queued: Notify::new(),
            room: Notify::new(),
        }
    }

    pub fn trace(&self) -> bool {
        self.trace
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent state
        // (every critical section is a few field updates), so go on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a control sequence (under the lock; `logs` gets the trace line).
    fn control(&self, state: &mut State, seq: [u8; 2], why: &str, logs: &mut Logs) {
        if self.trace {
            logs.push(Level::Info, format!("bridge -> stub: {} ({why})", control_sequence(seq[1])));
        }
        if seq == wire::REQUEST_FRAMING {
            state.framing_requested = true;
        }
        if seq == wire::DEBUGGER_GONE {
            if state.acks_outstanding == 0 {
                state.acks_since = Some(Instant::now());
            }
            state.acks_outstanding = state.acks_outstanding.saturating_add(1);
        }
        state.out.extend_from_slice(&seq);
        state.framing_last = seq == wire::REQUEST_FRAMING;
    }

    /// Queues a request packet of the attached debugger that the pacer let
    /// through (under the lock; `logs` gets the trace line).
    fn queue_packet(&self, state: &mut State, packet: &[u8], logs: &mut Logs) {
        if self.trace {
            let bad = if rsp::checksum_ok(packet) == Some(false) { " (bad checksum)" } else { "" };
            logs.push(Level::Info, format!("gdb -> stub: {}{bad}", Escaped(packet)));
        }
        match state.link.as_mut() {
            Some(link) => link.send(packet, Instant::now(), &mut state.out),
            None => state.out.extend_from_slice(packet),
        }
        state.framing_last = false;
        if let Some(client) = state.client.as_mut() {
            client.forwarded = true;
        }
    }

    /// Sends `bytes` of the bridge's own to the attached debugger (under
    /// the lock).
    fn answer_client(state: &mut State, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if let Some(Client { tx: Some(tx), queued, .. }) = state.client.as_ref() {
            queued.fetch_add(bytes.len(), Ordering::AcqRel);
            let _ = tx.send(bytes);
        }
    }

    /// Forgets the link's state (a session ended or the stub restarted),
    /// logging what it did on a noisy line.
    fn reset_link(state: &mut State, logs: &mut Logs) {
        if let Some(link) = state.link.as_mut() {
            let s = link.stats();
            logs.push(
                Level::Info,
                format!(
                    "noisy line: {} requests, {} pieces, piece limit {}, {} timeouts, {} damaged \
                     answers, {} naks, {} stale answers, {} requests abandoned",
                    s.requests,
                    s.pieces,
                    link.piece(),
                    s.timeouts,
                    s.damaged,
                    s.naks,
                    s.stale,
                    s.abandoned
                ),
            );
            link.reset();
        }
    }

    /// Acts on a release of the outstanding request (under the lock): queues
    /// the next held packet, if any.
    fn released(&self, state: &mut State, released: Option<Released>, logs: &mut Logs) {
        let Some(Released { why, next }) = released else {
            return;
        };
        if why == Release::TimedOut {
            let then =
                if next.is_some() { "forwarding the next one" } else { "not waiting for it" };
            logs.push(
                Level::Debug,
                format!(
                    "no answer to the debugger's request within {}s (a resume?); {then}",
                    REPLY_TIMEOUT.as_secs()
                ),
            );
        }
        if let Some(packet) = next {
            self.queue_packet(state, &packet, logs);
        }
    }

    /// Drops the held packets of `client`, which has left or is dropped
    /// (under the lock).
    fn end_pacing(state: &mut State, client: &Client, logs: &mut Logs) {
        let held = state.pacer.ended();
        if held > 0 {
            logs.push(
                Level::Debug,
                format!(
                    "dropping {held} packets of debugger {} that waited for an outstanding \
                     request (not forwarded)",
                    client.peer
                ),
            );
        }
        if client.dropped > 0 {
            logs.push(
                Level::Debug,
                format!(
                    "debugger {}: {} packets were dropped (too many waited)",
                    client.peer, client.dropped
                ),
            );
        }
    }

    /// Takes the lock, runs `f`, releases the lock, wakes the writer, then
    /// emits the collected log lines.
    fn with<R>(&self, f: impl FnOnce(&mut State, &mut Logs) -> R) -> R {
        let mut logs = Logs::default();
        let result = {
            let mut state = self.lock();
            f(&mut state, &mut logs)
        };
        self.queued.notify_one();
        logs.emit();
        result
    }

    /// Probes for a stub that announced itself before the bridge connected:
    /// queues `DLE 'F'` unless a hello or sync has been seen. Returns whether
    /// it probed.
    pub fn probe(&self) -> bool {
        self.with(|state, logs| {
            if state.stub_seen {
                return false;
            }
            self.control(state, wire::REQUEST_FRAMING, "probe: is there a stub?", logs);
            true
        })
    }

    /// Asks a stub that has been seen (a hello or a sync) for framing
    /// again, unless a request is still waiting to be written; `true` if
    /// one was queued. The caller asks while the stub has not answered: on
    /// a noisy line the request or the stub's sync can be lost, and nothing
    /// else would ask again.
    pub fn request_framing_again(&self) -> bool {
        self.with(|state, logs| {
            if !state.stub_seen || state.framing_last {
                return false;
            }
            self.control(state, wire::REQUEST_FRAMING, "no answer to framing yet", logs);
            true
        })
    }

    /// Whether a hello or a sync has been seen.
    pub fn stub_seen(&self) -> bool {
        self.lock().stub_seen
    }

    /// The stub's sync (`DLE 'F'`) arrived.
    pub fn on_sync(&self) {
        self.lock().stub_seen = true;
    }

    /// The stub's hello (`DLE 'H'`) arrived: a stub has just started, raw and
    /// without a session. When the line was `framed` (or the attached
    /// debugger had sent anything) this is a restart: the debugger's
    /// connection is dropped. Outstanding acknowledgements are forgotten (the
    /// new stub knows nothing of them) and framing is requested.
    pub fn on_hello(&self, framed: bool) -> Restart {
        self.with(|state, logs| {
            state.stub_seen = true;
            state.acks_outstanding = 0;
            state.acks_since = None;
            let mut restart = Restart::default();
            let held = state.pacer.held_packets() > 0;
            if state.client.as_ref().is_some_and(|c| framed || c.forwarded || held) {
                // Dropping the record drops its sender: the task sees its
                // queue end and finds the session no longer its own.
                let client = state.client.take().expect("checked");
                logs.push(Level::Info, format!("debugger disconnected ({})", client.peer));
                restart.dropped = Some(client.peer);
            }
            // The new stub has no request outstanding.
            Self::reset_link(state, logs);
            let dropped = state.pacer.reset();
            if dropped > 0 {
                logs.push(
                    Level::Debug,
                    format!("dropping {dropped} packets held for the old stub"),
                );
            }
            // A request still waiting to be written serves this hello too: a
            // guest that repeats hellos without reading cannot grow the queue.
            if !state.framing_last {
                self.control(state, wire::REQUEST_FRAMING, "answer to the stub's hello", logs);
            }
            restart
        })
    }

    /// The stub's `DLE 'E'` arrived: one `DLE 'X'` is acknowledged. Once all
    /// are, a request of an ended session is no longer outstanding.
    pub fn on_ended(&self) {
        let unexpected = self.with(|state, logs| {
            let was = state.acks_outstanding;
            state.acks_outstanding = was.saturating_sub(1);
            if state.acks_outstanding == 0 {
                state.acks_since = None;
                let released = state.pacer.acknowledged(Instant::now());
                self.released(state, released, logs);
            }
            was == 0
        });
        if unexpected {
            debug!("the stub ended a session the bridge did not end (DLE 'E' with none due)");
        }
    }

    /// Gives the session to a new debugger; or, when one is attached already
    /// or the bridge is stopping, says why not.
    pub fn attach(&self, peer: &str) -> Result<Attached, AttachError> {
        let attached = {
            let mut state = self.lock();
            if state.closing {
                return Err(AttachError::Stopping);
            }
            if let Some(client) = &state.client {
                return Err(AttachError::Busy(client.peer.clone()));
            }
            let id = state.next_id;
            state.next_id += 1;
            let (tx, rx) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicUsize::new(0));
            let from_stub = FromStub { rx, queued: Arc::clone(&queued) };
            state.client = Some(Client {
                id,
                peer: peer.to_owned(),
                tx: Some(tx),
                queued,
                forwarded: false,
                dropped: 0,
            });
            Attached { id, from_stub }
        };
        info!("debugger connected ({peer})");
        Ok(attached)
    }

    /// Whether debuggers may queue more bytes for the stub.
    pub fn has_room(&self) -> bool {
        self.lock().out.len() < TO_STUB_LIMIT
    }

    /// When the request outstanding at the stub times out, if one is. The
    /// attached debugger's task calls [`Shared::expire`] then. The deadline
    /// only moves later behind the task's back (a release that forwards a
    /// held packet), so a task that waits for an older deadline at worst
    /// wakes early.
    pub fn pace_deadline(&self) -> Option<Instant> {
        let state = self.lock();
        let link = state.link.as_ref().and_then(Link::deadline);
        match (state.pacer.deadline(), link) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Releases the outstanding request if it has timed out.
    pub fn expire(&self) {
        self.with(|state, logs| {
            let now = Instant::now();
            if let Some(link) = state.link.as_mut() {
                link.expire(now, &mut state.out);
            }
            let released = state.pacer.expire(now);
            self.released(state, released, logs);
        });
    }

    /// Waits until debuggers may queue more bytes for the stub.
    pub async fn wait_room(&self) {
        loop {
            // Created before the check: a wake-up between the check and the
            // await is not lost (`notify_waiters` reaches every `Notified`
            // created before it).
            let notified = self.room.notified();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }

    /// Forwards one event of debugger `id`'s RSP stream to the stub: a
    /// packet when no request is outstanding (otherwise the pacer holds it),
    /// `+`, `-` and `0x03` at once; other bytes outside packets are dropped. Returns `false` when `id` no longer owns the
    /// session (it must stop).
    pub fn forward(&self, id: u64, event: rsp::Event) -> bool {
        self.with(|state, logs| {
            if !state.owns(id) {
                return false;
            }
            match event {
                rsp::Event::Packet(packet) => {
                    if let Some(link) = state.link.as_mut() {
                        let reliable::FromDebugger { answer, forward } =
                            link.from_debugger(&packet);
                        Self::answer_client(state, answer);
                        if !forward {
                            return true;
                        }
                    }
                    let line = self.trace.then(|| format!("gdb -> bridge: {}", Escaped(&packet)));
                    match state.pacer.request(packet, Instant::now()) {
                        Request::Forward(packet) => self.queue_packet(state, &packet, logs),
                        Request::Held => {
                            if let Some(line) = line {
                                let held = "held: a request is outstanding";
                                logs.push(Level::Info, format!("{line} ({held})"));
                            }
                        }
                        Request::Retransmission => {
                            if let Some(line) = line {
                                let dropped = "a retransmission of the unanswered request; dropped";
                                logs.push(Level::Info, format!("{line} ({dropped})"));
                            }
                        }
                        Request::Dropped => {
                            if let Some(line) = line {
                                logs.push(Level::Info, format!("{line} (dropped)"));
                            }
                            if let Some(client) = state.client.as_mut() {
                                client.dropped += 1;
                                if client.dropped == 1 {
                                    logs.push(
                                        Level::Warn,
                                        format!(
                                            "debugger {} sends requests without waiting for \
                                             answers: {} KiB wait; dropping further ones",
                                            client.peer,
                                            HELD_LIMIT / 1024
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
                rsp::Event::Byte(DLE) => {
                    // Outside a packet a DLE starts a control sequence for
                    // the stub; a debugger has no business sending one.
                    logs.push(
                        Level::Warn,
                        "debugger sent a DLE byte outside a packet; not forwarded".to_owned(),
                    );
                }
                rsp::Event::Byte(byte)
                    if !matches!(byte, b'+' | b'-' | 0x03)
                        || (state.link.is_some() && !Link::forward_byte(byte)) =>
                {
                    // The stub drops anything else between packets: not
                    // worth the line's time (a client's junk would delay
                    // the DLE 'X' behind it, and the bridge would read the
                    // client only as fast as the line takes the junk).
                    if self.trace {
                        logs.push(
                            Level::Info,
                            format!("gdb -> bridge: {}; dropped", describe_rsp_byte(byte)),
                        );
                    }
                }
                rsp::Event::Byte(byte) => {
                    if self.trace {
                        logs.push(Level::Info, format!("gdb -> stub: {}", describe_rsp_byte(byte)));
                    }
                    match state.link.as_mut() {
                        Some(link) => link.interrupted(Instant::now(), &mut state.out),
                        None => state.out.push(byte),
                    }
                    state.framing_last = false;
                    if let Some(client) = state.client.as_mut() {
                        client.forwarded = true;
                    }
                }
                rsp::Event::Restarted(partial) => {
                    let level = if self.trace { Level::Info } else { Level::Debug };
                    if !self.trace && !tracing::enabled!(tracing::Level::DEBUG) {
                        return true;
                    }
                    logs.push(
                        level,
                        format!(
                            "gdb -> stub: discarded incomplete packet {} (a new `$` started)",
                            Escaped(&partial)
                        ),
                    );
                }
            }
            true
        })
    }

    /// Ends debugger `id`'s session, if it still has it: sends `DLE 'X'`
    /// (when the debugger sent the stub anything) so the stub removes its
    /// breakpoints and resumes the unikernel.
    pub fn detach(&self, id: u64) {
        self.with(|state, logs| {
            if !state.owns(id) {
                return;
            }
            let client = state.client.take().expect("owned");
            Self::end_pacing(state, &client, logs);
            Self::reset_link(state, logs);
            if client.forwarded {
                self.control(state, wire::DEBUGGER_GONE, "debugger gone", logs);
            }
            logs.push(Level::Info, format!("debugger disconnected ({})", client.peer));
        });
    }

    /// Hands stub output to the attached debugger, and lets it release the
    /// debugger's outstanding request. It is discarded when no debugger is
    /// attached, or while a `DLE 'X'` is unacknowledged (it then belongs to
    /// an ended session). A debugger that lets [`CLIENT_QUEUE_BYTES`] pile
    /// up is dropped.
    pub fn to_client(&self, bytes: Vec<u8>) {
        enum Outcome {
            Sent,
            Late(Vec<u8>, bool),
            Nobody(Vec<u8>),
            Slow(String),
        }
        let outcome = self.with(|state, logs| {
            let late = state.acks_outstanding > 0;
            // Replies withheld from an attached debugger for long: warn once.
            let overdue = late
                && state.client.is_some()
                && !state.ack_warned
                && state.acks_since.is_some_and(|since| since.elapsed() >= ACK_WARNING);
            state.ack_warned |= overdue;
            let mut released = None;
            let outcome = match state.client.as_mut() {
                _ if late => Outcome::Late(bytes, overdue),
                None => Outcome::Nobody(bytes),
                Some(Client { tx: None, .. }) => Outcome::Sent,
                Some(client) if state.link.is_some() => {
                    let link = state.link.as_mut().expect("checked");
                    let now = Instant::now();
                    let mut reply = Vec::new();
                    link.from_stub(&bytes, now, &mut state.out, &mut reply);
                    let queued = client.queued.load(Ordering::Acquire);
                    let full = queued.saturating_add(reply.len()) > CLIENT_QUEUE_BYTES;
                    if full {
                        client.tx = None;
                        Outcome::Slow(client.peer.clone())
                    } else {
                        if let (false, Some(tx)) = (reply.is_empty(), &client.tx) {
                            released = state.pacer.from_stub(&reply, now);
                            client.queued.fetch_add(reply.len(), Ordering::AcqRel);
                            let _ = tx.send(reply);
                        }
                        Outcome::Sent
                    }
                }
                Some(client) => {
                    let queued = client.queued.load(Ordering::Acquire);
                    let full = queued.saturating_add(bytes.len()) > CLIENT_QUEUE_BYTES;
                    if !full {
                        if let Some(tx) = &client.tx {
                            released = state.pacer.from_stub(&bytes, Instant::now());
                            client.queued.fetch_add(bytes.len(), Ordering::AcqRel);
                            // Fails only when its task has ended and is
                            // detaching.
                            let _ = tx.send(bytes);
                        }
                    }
                    if full {
                        // Its task sees the queue end, then detaches.
                        client.tx = None;
                        Outcome::Slow(client.peer.clone())
                    } else {
                        Outcome::Sent
                    }
                }
            };
            self.released(state, released, logs);
            outcome
        });
        match outcome {
            Outcome::Sent => {}
            Outcome::Late(bytes, overdue) => {
                if overdue {
                    warn!(
                        "the stub has not acknowledged the end of the previous session (DLE \
                         'E') within {}s; its replies are discarded until it does (a stub \
                         older than protocol v2?)",
                        ACK_WARNING.as_secs()
                    );
                }
                debug!(
                    "discarding {} bytes from the stub for an ended session: {}",
                    bytes.len(),
                    Escaped(&bytes)
                );
            }
            Outcome::Nobody(bytes) => debug!(
                "no debugger attached; discarding {} bytes from the stub: {}",
                bytes.len(),
                Escaped(&bytes)
            ),
            Outcome::Slow(peer) => {
                warn!("debugger {peer} does not read the stub's replies; dropping it")
            }
        }
    }

    /// Stops the bridge: ends the session of an attached debugger
    /// (`DLE 'X'`), switches the stub back to raw mode (`DLE 'R'`, if framing
    /// was ever requested) and returns a receiver that fires once both are
    /// written.
    pub fn shutdown(&self) -> oneshot::Receiver<()> {
        self.with(|state, logs| {
            state.closing = true;
            if let Some(client) = state.client.take() {
                Self::end_pacing(state, &client, logs);
                if client.forwarded {
                    self.control(state, wire::DEBUGGER_GONE, "bridge stopping", logs);
                }
                logs.push(Level::Info, format!("debugger disconnected ({})", client.peer));
            }
            if state.framing_requested {
                self.control(state, wire::REQUEST_RAW, "back to raw mode", logs);
            }
            let (tx, rx) = oneshot::channel();
            state.flushes.push(tx);
            rx
        })
    }

    /// For the channel writer: waits until bytes or flush requests are
    /// queued, then swaps the queued bytes into `buf` (which must be empty)
    /// and returns the flush requests to answer once `buf` is written.
    pub async fn next_output(&self, buf: &mut Vec<u8>) -> Vec<oneshot::Sender<()>> {
        debug_assert!(buf.is_empty());
        loop {
            let notified = self.queued.notified();
            {
                let mut state = self.lock();
                if !state.out.is_empty() || !state.flushes.is_empty() {
                    std::mem::swap(&mut state.out, buf);
                    state.framing_last = false;
                    let flushes = std::mem::take(&mut state.flushes);
                    drop(state);
                    self.room.notify_waiters();
                    return flushes;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Everything queued for the stub so far, taken as the writer takes it.
    fn drain(shared: &Shared) -> Vec<u8> {
        let mut state = shared.lock();
        state.framing_last = false;
        std::mem::take(&mut state.out)
    }

    fn packet(bytes: &[u8]) -> rsp::Event {
        rsp::Event::Packet(bytes.to_vec())
    }

    #[test]
    fn one_debugger_at_a_time_and_x_between_sessions() {
        let shared = Shared::new(false);
        shared.on_hello(false);
        let first = shared.attach("a").unwrap();
        assert_eq!(shared.attach("b").unwrap_err(), AttachError::Busy("a".to_owned()));
        assert!(shared.forward(first.id, packet(b"$g#67")));
        shared.detach(first.id);
        // The old session can no longer send anything.
        assert!(!shared.forward(first.id, rsp::Event::Byte(b'+')));
        let second = shared.attach("c").unwrap();
        assert!(shared.forward(second.id, rsp::Event::Byte(3)));
        // A stale detach does not end the new session.
        shared.detach(first.id);
        assert!(shared.forward(second.id, rsp::Event::Byte(b'+')));
        assert_eq!(drain(&shared), b"\x10F$g#67\x10X\x03+".to_vec());
    }

    #[test]
    fn only_acks_and_ctrl_c_are_forwarded_outside_packets() {
        let shared = Shared::new(false);
        let a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, rsp::Event::Byte(DLE)));
        assert!(shared.forward(a.id, rsp::Event::Byte(b'R')));
        assert!(shared.forward(a.id, packet(b"$\x10R#62")));
        for byte in *b"x+\x00-\x03\xff#}" {
            assert!(shared.forward(a.id, rsp::Event::Byte(byte)));
        }
        assert_eq!(drain(&shared), b"$\x10R#62+-\x03".to_vec());
        // Junk alone does not make the stub's session ours to end.
        let shared = Shared::new(false);
        let a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, rsp::Event::Byte(b'x')));
        shared.detach(a.id);
        assert_eq!(drain(&shared), b"".to_vec());
    }

    #[test]
    fn shutdown_sends_x_then_r_and_refuses_new_debuggers() {
        let shared = Shared::new(true);
        shared.on_hello(false);
        let a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, rsp::Event::Byte(b'+')));
        let _flushed = shared.shutdown();
        assert!(!shared.forward(a.id, rsp::Event::Byte(b'+')));
        assert_eq!(shared.attach("b").unwrap_err(), AttachError::Stopping);
        assert_eq!(drain(&shared), b"\x10F+\x10X\x10R".to_vec());

        let shared = Shared::new(false);
        shared.on_hello(false);
        let _flushed = shared.shutdown();
        assert_eq!(drain(&shared), b"\x10F\x10R".to_vec());
    }

    #[test]
    fn nothing_is_written_into_a_guest_that_never_announced_a_stub() {
        // A debugger that came and went without sending anything, then
        // shutdown: no DLE 'X', no DLE 'R'.
        let shared = Shared::new(false);
        let a = shared.attach("a").unwrap();
        shared.detach(a.id);
        let _flushed = shared.shutdown();
        assert_eq!(drain(&shared), b"".to_vec());
    }

    #[test]
    fn probes_stop_once_a_stub_is_seen() {
        let shared = Shared::new(false);
        assert!(shared.probe());
        shared.on_sync();
        assert!(!shared.probe());
        assert_eq!(drain(&shared), b"\x10F".to_vec());
        let shared = Shared::new(false);
        shared.on_hello(false);
        assert!(!shared.probe());
        assert_eq!(drain(&shared), b"\x10F".to_vec());
    }

    #[test]
    fn framing_is_asked_again_only_of_a_stub_seen_and_once_at_a_time() {
        let shared = Shared::new(false);
        assert!(!shared.request_framing_again(), "no stub seen yet");
        assert_eq!(drain(&shared), b"".to_vec());
        shared.on_hello(false);
        assert!(!shared.request_framing_again(), "the hello's request is still queued");
        assert_eq!(drain(&shared), b"\x10F".to_vec());
        assert!(shared.request_framing_again());
        assert!(!shared.request_framing_again());
        assert_eq!(drain(&shared), b"\x10F".to_vec());
    }

    #[test]
    fn repeated_hellos_do_not_grow_the_queue() {
        let shared = Shared::new(false);
        for _ in 0..1000 {
            shared.on_hello(false);
        }
        assert_eq!(drain(&shared), b"\x10F".to_vec());
        // Once written, the next hello is answered again.
        shared.on_hello(false);
        assert_eq!(drain(&shared), b"\x10F".to_vec());
        // A client's packet that happens to end in DLE 'F' (its checksum
        // characters are not checked here) does not count as a request.
        shared.on_sync();
        let a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, packet(b"$a#\x10F")));
        shared.on_hello(true);
        assert_eq!(drain(&shared), b"$a#\x10F\x10F".to_vec());
    }

    #[test]
    fn stub_output_goes_to_the_attached_debugger_only() {
        let shared = Shared::new(false);
        shared.to_client(b"$OK#9a".to_vec()); // discarded: nobody attached
        let mut a = shared.attach("a").unwrap();
        shared.to_client(b"+".to_vec());
        shared.to_client(b"$OK#9a".to_vec());
        assert_eq!(a.from_stub.try_recv().unwrap(), b"+".to_vec());
        assert_eq!(a.from_stub.try_recv().unwrap(), b"$OK#9a".to_vec());
        assert!(a.from_stub.try_recv().is_err());
    }

    #[test]
    fn late_replies_are_discarded_until_the_stub_acknowledges_the_detach() {
        let shared = Shared::new(false);
        shared.on_sync();
        let a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, packet(b"$m0,1#fa")));
        shared.detach(a.id);
        let a2 = shared.attach("a2").unwrap();
        // Its packet waits for the first one's (late) answer and is dropped
        // when it leaves; the ack is forwarded.
        assert!(shared.forward(a2.id, packet(b"$g#67")));
        assert!(shared.forward(a2.id, rsp::Event::Byte(b'+')));
        shared.detach(a2.id);
        assert_eq!(drain(&shared), b"$m0,1#fa\x10X+\x10X".to_vec());
        let mut b = shared.attach("b").unwrap();
        // Two DLE 'X' are outstanding: replies to the old sessions.
        shared.to_client(b"$00#60".to_vec());
        shared.on_ended();
        shared.to_client(b"$E01#a6".to_vec());
        assert!(b.from_stub.try_recv().is_err());
        shared.on_ended();
        shared.to_client(b"+".to_vec());
        assert_eq!(b.from_stub.try_recv().unwrap(), b"+".to_vec());
        // An unexpected DLE 'E' does not make the count negative.
        shared.on_ended();
        shared.to_client(b"$OK#9a".to_vec());
        assert_eq!(b.from_stub.try_recv().unwrap(), b"$OK#9a".to_vec());
    }

    #[test]
    fn requests_are_paced_acks_and_ctrl_c_are_not() {
        let shared = Shared::new(false);
        shared.on_sync();
        let mut a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, packet(b"$c#63")));
        assert!(shared.forward(a.id, packet(b"$g#67")));
        assert!(shared.forward(a.id, packet(b"$?#3f")));
        assert!(shared.forward(a.id, rsp::Event::Byte(b'+')));
        assert!(shared.forward(a.id, rsp::Event::Byte(0x03)));
        assert_eq!(drain(&shared), b"$c#63+\x03".to_vec());
        // The stub's ack releases nothing; its stop reply releases one.
        shared.to_client(b"+".to_vec());
        assert_eq!(drain(&shared), b"".to_vec());
        shared.to_client(b"$T02#".to_vec());
        shared.to_client(b"b7".to_vec());
        assert_eq!(drain(&shared), b"$g#67".to_vec());
        // A NAK from the stub releases the next one too.
        shared.to_client(b"-".to_vec());
        assert_eq!(drain(&shared), b"$?#3f".to_vec());
        shared.to_client(b"$S05#b8".to_vec());
        assert_eq!(drain(&shared), b"".to_vec());
        // Nothing outstanding: the next packet goes at once.
        assert!(shared.forward(a.id, packet(b"$s#73")));
        assert_eq!(drain(&shared), b"$s#73".to_vec());
        let mut got = Vec::new();
        while let Ok(bytes) = a.from_stub.try_recv() {
            got.extend(bytes);
        }
        assert_eq!(got, b"+$T02#b7-$S05#b8".to_vec());
    }

    #[test]
    fn a_departed_flood_is_dropped_and_the_next_debugger_waits_for_the_ack() {
        let shared = Shared::new(false);
        shared.on_sync();
        let a = shared.attach("a").unwrap();
        for i in 0..3000 {
            assert!(shared.forward(a.id, packet(format!("$m{i:x},40#00").as_bytes())));
        }
        shared.detach(a.id);
        assert_eq!(drain(&shared), b"$m0,40#00\x10X".to_vec());
        assert!(shared.has_room());
        // The next debugger's first packet waits for the stub to finish the
        // old session (its late reply releases nothing); an ack does not.
        let mut b = shared.attach("b").unwrap();
        assert!(shared.forward(b.id, packet(b"$qSupported#37")));
        assert!(shared.forward(b.id, rsp::Event::Byte(b'+')));
        shared.to_client(b"+$00#60".to_vec());
        assert_eq!(drain(&shared), b"+".to_vec());
        shared.on_ended();
        assert_eq!(drain(&shared), b"$qSupported#37".to_vec());
        shared.to_client(b"+$PacketSize=4000#00".to_vec());
        assert_eq!(b.from_stub.try_recv().unwrap(), b"+$PacketSize=4000#00".to_vec());
    }

    #[test]
    fn held_packets_are_bounded_and_not_counted_as_queued() {
        let shared = Shared::new(false);
        let a = shared.attach("a").unwrap();
        let big = |byte| rsp::Event::Packet(vec![byte; HELD_LIMIT / 2]);
        assert!(shared.forward(a.id, big(b'a')));
        let _ = drain(&shared);
        for byte in b"bcde" {
            assert!(shared.forward(a.id, big(*byte)));
            assert!(shared.has_room());
        }
        assert_eq!(shared.lock().pacer.held_packets(), 2);
        assert_eq!(shared.lock().client.as_ref().unwrap().dropped, 2);
        // Acks still go.
        assert!(shared.forward(a.id, rsp::Event::Byte(b'+')));
        assert_eq!(drain(&shared), b"+".to_vec());
        // Dropped when the debugger leaves.
        shared.detach(a.id);
        assert_eq!(shared.lock().pacer.held_packets(), 0);
        assert_eq!(drain(&shared), b"\x10X".to_vec());
    }

    #[test]
    fn a_request_without_an_answer_times_out() {
        let shared = Shared::new(false);
        shared.lock().pacer = Pacer::new(Duration::ZERO, HELD_LIMIT);
        let a = shared.attach("a").unwrap();
        assert_eq!(shared.pace_deadline(), None);
        assert!(shared.forward(a.id, packet(b"$c#63")));
        assert!(shared.forward(a.id, packet(b"$g#67")));
        assert!(shared.pace_deadline().is_some());
        assert_eq!(drain(&shared), b"$c#63".to_vec());
        shared.expire();
        assert_eq!(drain(&shared), b"$g#67".to_vec());
        shared.expire();
        assert_eq!(shared.pace_deadline(), None);
        assert_eq!(drain(&shared), b"".to_vec());
    }

    #[test]
    fn a_hello_forgets_the_outstanding_request() {
        let shared = Shared::new(false);
        shared.on_sync();
        let a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, packet(b"$c#63")));
        assert!(shared.forward(a.id, packet(b"$g#67")));
        assert_eq!(shared.on_hello(true), Restart { dropped: Some("a".to_owned()) });
        shared.detach(a.id);
        shared.on_sync();
        let b = shared.attach("b").unwrap();
        assert!(shared.forward(b.id, packet(b"$?#3f")));
        assert_eq!(drain(&shared), b"$c#63\x10F$?#3f".to_vec());
    }

    #[test]
    fn a_hello_drops_the_debugger_and_forgets_outstanding_acks() {
        let shared = Shared::new(false);
        shared.on_hello(false);
        shared.on_sync();
        let a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, packet(b"$?#3f")));
        shared.detach(a.id);
        let mut b = shared.attach("b").unwrap();
        assert_eq!(shared.on_hello(true), Restart { dropped: Some("b".to_owned()) });
        // Its queue is closed and the session is no longer its own.
        assert_eq!(b.from_stub.try_recv(), Err(mpsc::error::TryRecvError::Disconnected));
        assert!(!shared.forward(b.id, rsp::Event::Byte(b'+')));
        shared.detach(b.id);
        // The outstanding DLE 'X' is forgotten: the next debugger gets the
        // new stub's replies.
        let mut c = shared.attach("c").unwrap();
        shared.to_client(b"+".to_vec());
        assert_eq!(c.from_stub.try_recv().unwrap(), b"+".to_vec());
        assert_eq!(drain(&shared), b"\x10F$?#3f\x10X\x10F".to_vec());
        // A debugger that is still waiting for the first sync stays.
        let shared = Shared::new(false);
        let _waiting = shared.attach("w").unwrap();
        assert_eq!(shared.on_hello(false), Restart { dropped: None });
        assert!(shared.attach("x").is_err());
    }

    #[test]
    fn a_reply_in_many_small_chunks_does_not_drop_the_debugger() {
        // QEMU writes the serial line a byte at a time: target.xml (about
        // 8 KiB) can reach the bridge in thousands of reads before the
        // debugger's task runs. (The bound used to be 1024 chunks.)
        let shared = Shared::new(false);
        let mut a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, rsp::Event::Byte(b'+')));
        for _ in 0..8192 {
            shared.to_client(b"x".to_vec());
        }
        for _ in 0..8192 {
            assert_eq!(a.from_stub.try_recv().unwrap(), b"x".to_vec());
        }
        assert_eq!(a.from_stub.try_recv(), Err(mpsc::error::TryRecvError::Empty));
        assert!(shared.attach("b").is_err(), "a is still attached");
    }

    #[test]
    fn a_debugger_that_does_not_read_is_dropped() {
        let shared = Shared::new(false);
        let mut a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, rsp::Event::Byte(b'+')));
        let chunk = vec![b'x'; 64 * 1024];
        let fit = CLIENT_QUEUE_BYTES / chunk.len();
        for _ in 0..=fit {
            shared.to_client(chunk.clone());
        }
        // Its queue is closed after what was queued...
        for _ in 0..fit {
            assert_eq!(a.from_stub.try_recv().unwrap(), chunk);
        }
        assert_eq!(a.from_stub.try_recv(), Err(mpsc::error::TryRecvError::Disconnected));
        // ...and the session stays taken until its task detaches.
        assert!(shared.attach("b").is_err());
        shared.detach(a.id);
        assert!(shared.attach("b").is_ok());
        assert_eq!(drain(&shared), b"+\x10X".to_vec());
    }

    #[tokio::test]
    async fn debuggers_wait_for_room_and_the_writer_makes_it() {
        let shared = Arc::new(Shared::new(false));
        let a = shared.attach("a").unwrap();
        let big = rsp::Event::Packet(vec![b'a'; TO_STUB_LIMIT]);
        assert!(shared.has_room());
        assert!(shared.forward(a.id, big.clone()));
        assert!(!shared.has_room());
        let waiting = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { shared.wait_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let mut buf = Vec::new();
        let flushes = shared.next_output(&mut buf).await;
        assert!(flushes.is_empty());
        assert_eq!(buf.len(), TO_STUB_LIMIT);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("room made")
            .unwrap();
        // Control sequences are queued even when the queue is full.
        buf.clear();
        assert!(shared.forward(a.id, big.clone()));
        shared.detach(a.id);
        let _ = shared.next_output(&mut buf).await;
        assert_eq!(&buf[buf.len() - 2..], b"\x10X");
    }

    /// A tracing subscriber that checks, for every event, that the shared
    /// state's lock is free (logging under the lock would make every task
    /// wait for stderr).
    struct LockChecker {
        shared: Arc<Shared>,
        events: AtomicUsize,
        warnings: AtomicUsize,
        held: AtomicBool,
    }

    impl LockChecker {
        fn new(shared: &Arc<Shared>) -> Arc<Self> {
            Arc::new(LockChecker {
                shared: Arc::clone(shared),
                events: AtomicUsize::new(0),
                warnings: AtomicUsize::new(0),
                held: AtomicBool::new(false),
            })
        }
    }

    impl tracing::Subscriber for LockChecker {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            self.events.fetch_add(1, Ordering::Relaxed);
            if *event.metadata().level() == tracing::Level::WARN {
                self.warnings.fetch_add(1, Ordering::Relaxed);
            }
            if self.shared.state.try_lock().is_err() {
                self.held.store(true, Ordering::Relaxed);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn nothing_is_logged_under_the_lock() {
        let shared = Arc::new(Shared::new(true));
        let checker = LockChecker::new(&shared);
        let dispatch = tracing::Dispatch::from(Arc::clone(&checker));
        tracing::dispatcher::with_default(&dispatch, || {
            shared.on_hello(false);
            shared.on_sync();
            let a = shared.attach("a").unwrap();
            assert!(shared.forward(a.id, packet(b"$g#67")));
            // Held, released by the reply, held again (dropped at the hello).
            assert!(shared.forward(a.id, packet(b"$?#3f")));
            shared.to_client(b"$00#60".to_vec());
            assert!(shared.forward(a.id, packet(b"$s#73")));
            assert!(shared.forward(a.id, packet(b"$c#63")));
            assert!(shared.forward(a.id, rsp::Event::Byte(DLE)));
            assert!(shared.forward(a.id, rsp::Event::Restarted(b"$m".to_vec())));
            shared.to_client(b"+".to_vec());
            shared.on_hello(true);
            shared.detach(a.id);
            let b = shared.attach("b").unwrap();
            assert!(shared.forward(b.id, rsp::Event::Byte(b'+')));
            // A timeout releases a held packet; one is held when b leaves.
            shared.lock().pacer = Pacer::new(Duration::ZERO, HELD_LIMIT);
            assert!(shared.forward(b.id, packet(b"$g#67")));
            assert!(shared.forward(b.id, packet(b"$s#73")));
            assert!(shared.forward(b.id, packet(b"$s#73")));
            shared.expire();
            assert!(shared.forward(b.id, packet(b"$c#63")));
            assert_eq!(shared.lock().pacer.held_packets(), 1);
            shared.detach(b.id);
            shared.to_client(b"late".to_vec());
            shared.on_ended();
            shared.on_ended();
            let _ = shared.attach("c").unwrap();
            let _flushed = shared.shutdown();
        });
        assert!(checker.events.load(Ordering::Relaxed) >= 10);
        assert!(!checker.held.load(Ordering::Relaxed), "an event was logged under the lock");
    }

    #[test]
    fn an_overdue_acknowledgement_is_warned_about_once() {
        let shared = Arc::new(Shared::new(false));
        let checker = LockChecker::new(&shared);
        let dispatch = tracing::Dispatch::from(Arc::clone(&checker));
        tracing::dispatcher::with_default(&dispatch, || {
            shared.on_sync();
            let a = shared.attach("a").unwrap();
            assert!(shared.forward(a.id, rsp::Event::Byte(b'+')));
            shared.detach(a.id);
            let _b = shared.attach("b").unwrap();
            // Not overdue yet: discarded quietly.
            shared.to_client(b"+".to_vec());
            assert_eq!(checker.warnings.load(Ordering::Relaxed), 0);
            shared.lock().acks_since = Instant::now().checked_sub(ACK_WARNING);
            shared.to_client(b"+".to_vec());
            shared.to_client(b"+".to_vec());
            assert_eq!(checker.warnings.load(Ordering::Relaxed), 1);
        });
        assert!(!checker.held.load(Ordering::Relaxed));
    }
}
