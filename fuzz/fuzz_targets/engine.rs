//! The protocol engine on the host: the stub's `Rx` in front of gdbstub's
//! `GdbStubStateMachine`, as the stub's session runs it, fed arbitrary
//! packet streams. The target is the fake the stub's own host tests use
//! (`ukdb_stub::fuzzing::engine`: a memory image and registers, with the
//! extensions of `stub/src/imp/target/`). Every packet goes through
//! `memreply::parse` and `ukquery::parse` first, as in the stub.
//!
//! Invariant: gdbstub never ends the session with an error on a packet `Rx`
//! passed on (the stub's contract in `rx.rs`), and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ukdb_stub::fuzzing::engine::{Engine, Fake};
use ukdb_stub::fuzzing::memreply;
use ukdb_stub::fuzzing::rx::{Event, Rx};
use ukdb_stub::fuzzing::ukquery;

/// The stub's packet size.
const SIZE: usize = 0x4000;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else { return };
    let mut packet_buffer = vec![0u8; SIZE];
    let mut engine = Engine::new(&mut packet_buffer, Fake::new(usize::from(sel) * 64, 0x5a));
    // After a resume the target stops at once, or keeps running to receive
    // the next bytes while it runs.
    engine.stop_at_once = sel & 1 == 0;
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    for &byte in stream {
        let forward: Option<Vec<u8>> = match rx.push(byte) {
            Some(Event::Packet { bytes, .. }) => {
                // The stub answers these itself (memreply, ukquery).
                if let Some(read) = memreply::parse(bytes) {
                    assert!(read.len > 0 || read.binary);
                    None
                } else if ukquery::parse(bytes).is_some() {
                    None
                } else {
                    Some(bytes.to_vec())
                }
            }
            Some(Event::Ack) => Some(b"+".to_vec()),
            Some(Event::Interrupt) => Some(b"\x03".to_vec()),
            Some(
                Event::Nak
                | Event::BadChecksum
                | Event::Overflow
                | Event::Control(_)
                | Event::Reject(_),
            )
            | None => None,
        };
        if let Some(bytes) = forward {
            engine.gdbstub(&bytes, &bytes);
            engine.take_output();
        }
    }
});
