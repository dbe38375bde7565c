//! End of interrupt for the 8259 PICs (blog_os drives them with the
//! `pic8259` crate; the remapping to vector 32 is the kernel's business).

use crate::idt::TIMER_VECTOR;
use x86_64::instructions::port::Port;

const MASTER_COMMAND: u16 = 0x20;
const SLAVE_COMMAND: u16 = 0xA0;
const EOI: u8 = 0x20;

/// Acknowledges interrupt `vector` (a remapped PIC vector).
pub fn end_of_interrupt(vector: u8) {
    // SAFETY: the PICs' command ports belong to the kernel's interrupt
    // code, which runs with interrupts disabled; EOI is the command the PIC
    // expects at the end of an interrupt it delivered.
    unsafe {
        if vector >= TIMER_VECTOR + 8 {
            Port::<u8>::new(SLAVE_COMMAND).write(EOI);
        }
        Port::<u8>::new(MASTER_COMMAND).write(EOI);
    }
}
