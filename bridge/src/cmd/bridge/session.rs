//! Who is attached, and everything that goes to the stub.
//!
//! All bytes for the stub go through [`Shared`], under one lock together with
//! the record of the attached debugger. That makes the ordering guarantees
//! simple: a debugger's bytes are forwarded only while it owns the session;
//! its `DLE 'X'` is queued, and the session freed, in one step; so the next
//! debugger's first byte always comes after the previous one's `DLE 'X'`, and
//! nothing of a debugger ever follows its `DLE 'X'` or the final `DLE 'R'`.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use ukdb_bridge::escape::{control_sequence, describe_rsp_byte, Escaped};
use ukdb_bridge::rsp;
use ukdb_bridge::wire::{self, DLE};

/// How many chunks of stub output may wait for a debugger that does not
/// read them before it is dropped.
const CLIENT_QUEUE: usize = 1024;

/// A message for the task that writes to the channel.
#[derive(Debug)]
pub enum ToStub {
    /// Bytes to write, in order.
    Bytes(Vec<u8>),
    /// Answer once everything queued before has been written.
    Flush(oneshot::Sender<()>),
}

/// The state shared by the bridge's tasks.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    trace: bool,
}

#[derive(Debug)]
struct State {
    to_stub: mpsc::UnboundedSender<ToStub>,
    client: Option<Client>,
    next_id: u64,
    closing: bool,
}

#[derive(Debug)]
struct Client {
    id: u64,
    peer: String,
    /// Stub output for the debugger; `None` once the bridge has decided to
    /// drop it (the session stays taken until its task has sent `DLE 'X'`).
    tx: Option<mpsc::Sender<Vec<u8>>>,
}

/// A debugger's claim on the session, handed to its task.
#[derive(Debug)]
pub struct Attached {
    pub id: u64,
    pub from_stub: mpsc::Receiver<Vec<u8>>,
}

impl State {
    fn send(&self, bytes: Vec<u8>) {
        // The writer task lives as long as the channel; when it has ended the
        // channel is closed and the bridge is about to exit anyway.
        let _ = self.to_stub.send(ToStub::Bytes(bytes));
    }

    fn owns(&self, id: u64) -> bool {
        self.client.as_ref().is_some_and(|c| c.id == id)
    }
}

impl Shared {
    pub fn new(to_stub: mpsc::UnboundedSender<ToStub>, trace: bool) -> Self {
        Self {
            state: Mutex::new(State { to_stub, client: None, next_id: 1, closing: false }),
            trace,
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

    fn control(&self, state: &State, seq: [u8; 2], why: &str) {
        if self.trace {
            info!("bridge -> stub: {} ({why})", control_sequence(seq[1]));
        }
        state.send(seq.to_vec());
    }

    /// Asks the stub to switch to framed mode (`DLE 'F'`).
    pub fn request_framing(&self) {
        let state = self.lock();
        self.control(&state, wire::REQUEST_FRAMING, "switch to framed mode");
    }

    /// Gives the session to a new debugger; or, when one is attached already
    /// or the bridge is stopping, says why not.
    pub fn attach(&self, peer: &str) -> Result<Attached, String> {
        let mut state = self.lock();
        if state.closing {
            return Err("the bridge is stopping".to_owned());
        }
        if let Some(client) = &state.client {
            return Err(format!("a debugger is attached already ({})", client.peer));
        }
        let id = state.next_id;
        state.next_id += 1;
        let (tx, from_stub) = mpsc::channel(CLIENT_QUEUE);
        state.client = Some(Client { id, peer: peer.to_owned(), tx: Some(tx) });
        info!("debugger connected ({peer})");
        Ok(Attached { id, from_stub })
    }

    /// Forwards one event of debugger `id`'s RSP stream to the stub. Returns
    /// `false` when `id` no longer owns the session (it must stop).
    pub fn forward(&self, id: u64, event: rsp::Event) -> bool {
        let state = self.lock();
        if !state.owns(id) {
            return false;
        }
        match event {
            rsp::Event::Packet(packet) => {
                if self.trace {
                    let bad = if rsp::checksum_ok(&packet) == Some(false) {
                        " (bad checksum)"
                    } else {
                        ""
                    };
                    info!("gdb -> stub: {}{bad}", Escaped(&packet));
                }
                state.send(packet);
            }
            rsp::Event::Byte(DLE) => {
                // Outside a packet a DLE starts a control sequence for the
                // stub; a debugger has no business sending one.
                warn!("debugger sent a DLE byte outside a packet; not forwarded");
            }
            rsp::Event::Byte(byte) => {
                if self.trace {
                    info!("gdb -> stub: {}", describe_rsp_byte(byte));
                }
                state.send(vec![byte]);
            }
            rsp::Event::Restarted(partial) => {
                let msg = format!(
                    "gdb -> stub: discarded incomplete packet {} (a new `$` started)",
                    Escaped(&partial)
                );
                if self.trace {
                    info!("{msg}");
                } else {
                    debug!("{msg}");
                }
            }
        }
        true
    }

    /// Ends debugger `id`'s session, if it still has it: sends `DLE 'X'` so
    /// the stub removes its breakpoints and resumes the unikernel.
    pub fn detach(&self, id: u64) {
        let mut state = self.lock();
        if !state.owns(id) {
            return;
        }
        let client = state.client.take().expect("owned");
        self.control(&state, wire::DEBUGGER_GONE, "debugger gone");
        info!("debugger disconnected ({})", client.peer);
    }

    /// Hands stub output to the attached debugger, or discards it when none
    /// is attached. A debugger that lets [`CLIENT_QUEUE`] chunks pile up is
    /// dropped.
    pub fn to_client(&self, bytes: Vec<u8>) {
        let mut state = self.lock();
        let Some(client) = state.client.as_mut() else {
            debug!(
                "no debugger attached; discarding {} bytes from the stub: {}",
                bytes.len(),
                Escaped(&bytes)
            );
            return;
        };
        let Some(tx) = &client.tx else {
            return;
        };
        match tx.try_send(bytes) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!("debugger {} does not read the stub's replies; dropping it", client.peer);
                // Its task sees the queue end, then detaches.
                client.tx = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Stops the bridge: ends the session of an attached debugger
    /// (`DLE 'X'`), switches the stub back to raw mode (`DLE 'R'`) and
    /// returns a receiver that fires once both are written.
    pub fn shutdown(&self) -> oneshot::Receiver<()> {
        let mut state = self.lock();
        state.closing = true;
        if let Some(client) = state.client.take() {
            self.control(&state, wire::DEBUGGER_GONE, "bridge stopping");
            info!("debugger disconnected ({})", client.peer);
        }
        self.control(&state, wire::REQUEST_RAW, "back to raw mode");
        let (tx, rx) = oneshot::channel();
        let _ = state.to_stub.send(ToStub::Flush(tx));
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::UnboundedReceiver<ToStub>) -> Vec<u8> {
        let mut out = Vec::new();
        while let Ok(msg) = rx.try_recv() {
            if let ToStub::Bytes(bytes) = msg {
                out.extend(bytes);
            }
        }
        out
    }

    #[test]
    fn one_debugger_at_a_time_and_x_between_sessions() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shared = Shared::new(tx, false);
        shared.request_framing();
        let first = shared.attach("a").unwrap();
        assert!(shared.attach("b").is_err());
        assert!(shared.forward(first.id, rsp::Event::Packet(b"$g#67".to_vec())));
        shared.detach(first.id);
        // The old session can no longer send anything.
        assert!(!shared.forward(first.id, rsp::Event::Byte(b'+')));
        let second = shared.attach("c").unwrap();
        assert!(shared.forward(second.id, rsp::Event::Byte(3)));
        // A stale detach does not end the new session.
        shared.detach(first.id);
        assert!(shared.forward(second.id, rsp::Event::Byte(b'+')));
        assert_eq!(drain(&mut rx), b"\x10F$g#67\x10X\x03+".to_vec());
    }

    #[test]
    fn dle_outside_packets_is_not_forwarded() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shared = Shared::new(tx, false);
        let a = shared.attach("a").unwrap();
        assert!(shared.forward(a.id, rsp::Event::Byte(DLE)));
        assert!(shared.forward(a.id, rsp::Event::Byte(b'R')));
        assert!(shared.forward(a.id, rsp::Event::Packet(b"$\x10R#62".to_vec())));
        assert_eq!(drain(&mut rx), b"R$\x10R#62".to_vec());
    }

    #[test]
    fn shutdown_sends_x_then_r_and_refuses_new_debuggers() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shared = Shared::new(tx, true);
        let a = shared.attach("a").unwrap();
        let _flushed = shared.shutdown();
        assert!(!shared.forward(a.id, rsp::Event::Byte(b'+')));
        assert!(shared.attach("b").is_err());
        assert_eq!(drain(&mut rx), b"\x10X\x10R".to_vec());

        let (tx, mut rx) = mpsc::unbounded_channel();
        let shared = Shared::new(tx, false);
        let _flushed = shared.shutdown();
        assert_eq!(drain(&mut rx), b"\x10R".to_vec());
    }

    #[test]
    fn stub_output_goes_to_the_attached_debugger_only() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let shared = Shared::new(tx, false);
        shared.to_client(b"$OK#9a".to_vec()); // discarded: nobody attached
        let mut a = shared.attach("a").unwrap();
        shared.to_client(b"+".to_vec());
        shared.to_client(b"$OK#9a".to_vec());
        assert_eq!(a.from_stub.try_recv().unwrap(), b"+".to_vec());
        assert_eq!(a.from_stub.try_recv().unwrap(), b"$OK#9a".to_vec());
        assert!(a.from_stub.try_recv().is_err());
    }

    #[test]
    fn a_debugger_that_does_not_read_is_dropped() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shared = Shared::new(tx, false);
        let mut a = shared.attach("a").unwrap();
        for _ in 0..=CLIENT_QUEUE {
            shared.to_client(b"x".to_vec());
        }
        // Its queue is closed after what was queued...
        for _ in 0..CLIENT_QUEUE {
            assert_eq!(a.from_stub.try_recv().unwrap(), b"x".to_vec());
        }
        assert_eq!(a.from_stub.try_recv(), Err(mpsc::error::TryRecvError::Disconnected));
        // ...and the session stays taken until its task detaches.
        assert!(shared.attach("b").is_err());
        shared.detach(a.id);
        assert!(shared.attach("b").is_ok());
        assert_eq!(drain(&mut rx), b"\x10X".to_vec());
    }
}
