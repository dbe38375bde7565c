//! TEMPORARY minimal receiver (replaced by the full validating `Rx`).

use crate::wire::{self, DLE};

/// A control sequence from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `DLE 'F'`.
    Framed,
    /// `DLE 'R'`.
    Raw,
    /// `DLE 'X'`.
    DebuggerGone,
}

/// What a packet means for session boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    /// `qSupported`, `QStartNoAckMode`.
    Opening,
    /// `vMustReplyEmpty`.
    Handshake,
    /// Anything else.
    Other,
}

/// The reply to a rejected packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `E16`.
    Einval,
    /// The empty reply.
    Empty,
}

/// What the host's bytes mean.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'p> {
    /// A control sequence.
    Control(Control),
    /// `+`.
    Ack,
    /// `-`.
    Nak,
    /// `0x03`.
    Interrupt,
    /// A whole packet.
    Packet {
        /// `$...#xx`.
        bytes: &'p [u8],
        /// Its class.
        class: PacketClass,
    },
    /// Malformed.
    Reject(Reply),
    /// Bad checksum.
    BadChecksum,
    /// Too long.
    Overflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Between,
    Escape,
    Body,
    Sum1,
    Sum2,
}

/// The receiver.
#[derive(Debug)]
pub struct Rx<'b> {
    buf: &'b mut [u8],
    len: usize,
    state: State,
    overflow: bool,
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

impl<'b> Rx<'b> {
    /// A receiver assembling packets in `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Rx { buf, len: 0, state: State::Between, overflow: false }
    }

    /// Mid-packet.
    pub fn in_packet(&self) -> bool {
        matches!(self.state, State::Body | State::Sum1 | State::Sum2)
    }

    /// Drops a partial packet.
    pub fn abandon(&mut self) {
        self.state = State::Between;
        self.len = 0;
        self.overflow = false;
    }

    fn put(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }

    /// Feeds one byte.
    pub fn push(&mut self, byte: u8) -> Option<Event<'_>> {
        match self.state {
            State::Between => match byte {
                DLE => {
                    self.state = State::Escape;
                    None
                }
                b'$' => {
                    self.abandon();
                    self.state = State::Body;
                    self.put(b'$');
                    None
                }
                b'+' => Some(Event::Ack),
                b'-' => Some(Event::Nak),
                0x03 => Some(Event::Interrupt),
                _ => None,
            },
            State::Escape => {
                self.state = State::Between;
                match byte {
                    wire::FRAME => Some(Event::Control(Control::Framed)),
                    wire::RAW => Some(Event::Control(Control::Raw)),
                    wire::GONE => Some(Event::Control(Control::DebuggerGone)),
                    _ => self.push(byte),
                }
            }
            State::Body => {
                if byte == b'$' {
                    self.abandon();
                    self.state = State::Body;
                    self.put(b'$');
                    return None;
                }
                self.put(byte);
                if byte == b'#' {
                    self.state = State::Sum1;
                }
                None
            }
            State::Sum1 => {
                self.put(byte);
                self.state = State::Sum2;
                None
            }
            State::Sum2 => {
                self.put(byte);
                self.state = State::Between;
                if self.overflow {
                    self.overflow = false;
                    return Some(Event::Overflow);
                }
                let len = self.len;
                let pkt = self.buf.get(..len)?;
                let body = pkt.get(1..len.checked_sub(3)?)?;
                let sum = body.iter().fold(0u8, |a, &b| a.wrapping_add(b));
                let want = hex(*pkt.get(len - 2)?)? << 4 | hex(*pkt.get(len - 1)?)?;
                if sum != want {
                    return Some(Event::BadChecksum);
                }
                let class = if body.starts_with(b"qSupported") || body == b"QStartNoAckMode" {
                    PacketClass::Opening
                } else if body == b"vMustReplyEmpty" {
                    PacketClass::Handshake
                } else {
                    PacketClass::Other
                };
                Some(Event::Packet { bytes: pkt, class })
            }
        }
    }
}
