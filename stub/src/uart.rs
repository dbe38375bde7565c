//! The 16550 UART protocol, generic over how its registers are reached
//! ([`UartRegs`]), so the logic runs in host tests against a fake.

/// Register offsets from the base.
const DATA: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;

const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Access to a UART's eight registers.
///
/// # Implementation safety
/// Implementations reach the registers of one real UART (or a model of
/// one) and nothing else; the UART driver calls nothing but these two.
pub trait UartRegs {
    /// Reads register `offset` (0-7).
    fn read(&mut self, offset: u16) -> u8;
    /// Writes register `offset` (0-7).
    fn write(&mut self, offset: u16, value: u8);
}

/// A polled 16550: no interrupts, FIFOs on.
#[derive(Debug)]
pub struct Uart<R> {
    regs: R,
}

impl<R: UartRegs> Uart<R> {
    /// Wraps the registers; call [`Uart::init`] before use.
    pub const fn new(regs: R) -> Self {
        Uart { regs }
    }

    /// 115200 baud, 8N1, FIFOs on, interrupts off. The unikernel may have
    /// done the same already; doing it twice is harmless. The receive FIFO
    /// is not cleared: it may already hold a debugger's first bytes.
    pub fn init(&mut self) {
        self.regs.write(IER, 0x00);
        self.regs.write(LCR, 0x80);
        self.regs.write(DATA, 0x01);
        self.regs.write(IER, 0x00);
        self.regs.write(LCR, 0x03);
        self.regs.write(FCR, 0xC1);
        self.regs.write(MCR, 0x03);
    }

    /// The registers.
    #[cfg_attr(not(feature = "enabled"), allow(dead_code))] // only the stub asks
    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// A received byte, if one is waiting.
    pub fn try_read(&mut self) -> Option<u8> {
        (self.regs.read(LSR) & LSR_DATA_READY != 0).then(|| self.regs.read(DATA))
    }

    /// Whether a received byte is waiting (without taking it).
    pub fn has_input(&mut self) -> bool {
        self.regs.read(LSR) & LSR_DATA_READY != 0
    }

    /// Sends a byte, waiting for room in the transmitter. (Filling the
    /// 16-byte FIFO per status read was measured: no gain under QEMU, whose
    /// chardev writes each byte to the socket on its own.)
    pub fn write(&mut self, byte: u8) {
        while self.regs.read(LSR) & LSR_THR_EMPTY == 0 {
            core::hint::spin_loop();
        }
        self.regs.write(DATA, byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A UART model: a receive queue, a transmit log, and a 16-byte
    /// transmit FIFO that drains `drain` bytes per LSR read.
    #[derive(Default)]
    struct Fake {
        rx: VecDeque<u8>,
        tx: Vec<u8>,
        fifo: usize,
        drain: usize,
        lsr_reads: usize,
        writes: Vec<(u16, u8)>,
    }

    impl UartRegs for Fake {
        fn read(&mut self, offset: u16) -> u8 {
            match offset {
                LSR => {
                    self.lsr_reads += 1;
                    self.fifo = self.fifo.saturating_sub(self.drain);
                    let ready = if self.rx.is_empty() { 0 } else { LSR_DATA_READY };
                    let empty = if self.fifo == 0 { LSR_THR_EMPTY } else { 0 };
                    ready | empty
                }
                DATA => self.rx.pop_front().expect("read DATA with no byte ready"),
                _ => 0,
            }
        }
        fn write(&mut self, offset: u16, value: u8) {
            self.writes.push((offset, value));
            if offset == DATA && self.writes.iter().any(|&(o, v)| o == LCR && v == 0x03) {
                assert!(self.fifo < 16, "transmit FIFO overrun");
                self.fifo += 1;
                self.tx.push(value);
            }
        }
    }

    #[test]
    fn reads_only_when_data_is_ready() {
        let mut u = Uart::new(Fake { rx: VecDeque::from(vec![b'$', 0x03]), ..Fake::default() });
        u.init();
        assert!(u.has_input());
        assert_eq!(u.try_read(), Some(b'$'));
        assert_eq!(u.try_read(), Some(0x03));
        assert!(!u.has_input());
        assert_eq!(u.try_read(), None);
    }

    #[test]
    fn waits_for_room_in_the_fifo() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut u = Uart::new(Fake { drain: 3, ..Fake::default() });
        u.init();
        for &b in &data {
            u.write(b);
        }
        assert_eq!(u.regs.tx, data);
    }

    #[test]
    fn init_programs_115200_8n1() {
        let mut u = Uart::new(Fake::default());
        u.init();
        assert_eq!(
            u.regs.writes,
            vec![(IER, 0), (LCR, 0x80), (DATA, 1), (IER, 0), (LCR, 3), (FCR, 0xC1), (MCR, 3)]
        );
    }
}
