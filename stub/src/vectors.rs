//! The names of the x86_64 exception vectors 0-31, for messages (the stub's
//! `monitor why`, a unikernel's fatal-exception line). Compiled in every
//! configuration.

const NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection fault",
    "page fault",
    "reserved",
    "x87 error",
    "alignment check",
    "machine check",
    "SIMD error",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// The name of exception `vector`; `"exception"` for a vector above 31.
/// Inlined, so a production image that uses it holds no stub symbol.
#[inline(always)]
pub fn name(vector: u64) -> &'static str {
    usize::try_from(vector).ok().and_then(|v| NAMES.get(v)).copied().unwrap_or("exception")
}

/// Whether the CPU pushes an error code for exception `vector` (8, 10-14,
/// 17, 21, 29, 30): the entry code pushes a 0 for every other vector so
/// that each frame has the same layout.
#[inline(always)]
pub fn has_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(0), "divide error");
        assert_eq!(name(13), "general protection fault");
        assert_eq!(name(14), "page fault");
        assert_eq!(name(21), "control protection");
        assert_eq!(name(31), "reserved");
        assert_eq!(name(32), "exception");
        assert_eq!(name(u64::MAX), "exception");
    }

    #[test]
    fn error_codes() {
        let with: Vec<u64> = (0..32).filter(|&v| has_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    }
}
