//! The legacy 8259 PICs. The firmware may leave them delivering IRQ 0-7 on
//! vectors 8-15, which are exception vectors (IRQ 0, the PIT, would arrive
//! as a double fault). They are remapped to [`BASE`]..[`BASE`]`+16` and
//! every line is masked: interrupts come from the local APIC only. On
//! machines without PICs (Firecracker, Cloud Hypervisor, microvm with
//! `pic=off`) the writes go nowhere, which is harmless.

use crate::port::outb;

/// First vector of the master PIC after remapping; the slave follows at +8.
pub const BASE: u8 = 0x20;
/// IRQ 7 on the master: where the master reports a spurious interrupt.
pub const SPURIOUS_MASTER: u8 = BASE + 7;
/// IRQ 15 on the slave: where the slave reports a spurious interrupt.
pub const SPURIOUS_SLAVE: u8 = BASE + 15;

const MASTER_CMD: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_CMD: u16 = 0xA0;
const SLAVE_DATA: u16 = 0xA1;
const EOI: u8 = 0x20;

/// Remaps both PICs to [`BASE`] and masks all their lines.
pub fn remap_and_mask() {
    // SAFETY: ports 0x20/0x21 and 0xA0/0xA1 are the PICs', which only this
    // module programs; this is the standard ICW1-ICW4 sequence followed by
    // an all-ones interrupt mask.
    unsafe {
        outb(MASTER_CMD, 0x11); // ICW1: edge triggered, cascade, ICW4 follows
        outb(SLAVE_CMD, 0x11);
        outb(MASTER_DATA, BASE); // ICW2: vector base
        outb(SLAVE_DATA, BASE + 8);
        outb(MASTER_DATA, 0x04); // ICW3: slave on IRQ 2
        outb(SLAVE_DATA, 0x02); // ICW3: cascade identity
        outb(MASTER_DATA, 0x01); // ICW4: 8086 mode
        outb(SLAVE_DATA, 0x01);
        outb(MASTER_DATA, 0xFF); // mask everything
        outb(SLAVE_DATA, 0xFF);
    }
}

/// Handles a PIC vector. With every line masked only spurious interrupts
/// can arrive: IRQ 7 needs no EOI; IRQ 15 needs one on the master (which
/// saw a real cascade request), none on the slave. Anything else is
/// acknowledged on both so that it cannot block the PIC.
pub fn on_vector(vector: u8) {
    // SAFETY: the PICs' command ports belong to this module.
    unsafe {
        match vector {
            SPURIOUS_MASTER => {}
            SPURIOUS_SLAVE => outb(MASTER_CMD, EOI),
            _ => {
                if vector >= BASE + 8 {
                    outb(SLAVE_CMD, EOI);
                }
                outb(MASTER_CMD, EOI);
            }
        }
    }
}
