//! Rendering bytes for `--trace` logs and messages.

use std::fmt;

/// Displays bytes as text: printable ASCII as itself, a backslash as `\\`,
/// `\n` `\r` `\t` as such, and every other byte as `\xNN`. The result is one
/// line of plain ASCII, whatever the input.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            match b {
                b'\\' => f.write_str("\\\\")?,
                b'\n' => f.write_str("\\n")?,
                b'\r' => f.write_str("\\r")?,
                b'\t' => f.write_str("\\t")?,
                0x20..=0x7e => write!(f, "{}", b as char)?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        Ok(())
    }
}

/// Escapes bytes into a `String`; see [`Escaped`].
pub fn escape(bytes: &[u8]) -> String {
    Escaped(bytes).to_string()
}

/// Describes a single RSP byte sent outside a packet: `+` (ack), `-` (nack),
/// `^C` (the interrupt, 0x03), or the escaped byte.
pub fn describe_rsp_byte(byte: u8) -> String {
    match byte {
        b'+' => "+ (ack)".to_owned(),
        b'-' => "- (nack)".to_owned(),
        0x03 => "^C (interrupt)".to_owned(),
        other => format!("{} (stray byte outside a packet)", Escaped(&[other])),
    }
}

/// Names the control sequence `DLE byte`, e.g. `DLE 'F'`.
pub fn control_sequence(byte: u8) -> String {
    format!("DLE '{}'", Escaped(&[byte]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_kept() {
        assert_eq!(escape(b"$m1000,8#92"), "$m1000,8#92");
        assert_eq!(escape(b" ~"), " ~");
    }

    #[test]
    fn everything_else_is_escaped() {
        assert_eq!(escape(b"a\\b"), "a\\\\b");
        assert_eq!(escape(b"\n\r\t"), "\\n\\r\\t");
        assert_eq!(escape(&[0x00, 0x03, 0x10, 0x7f, 0x80, 0xff]), "\\x00\\x03\\x10\\x7f\\x80\\xff");
    }

    #[test]
    fn every_byte_escapes_to_printable_ascii() {
        for b in 0..=255u8 {
            let s = escape(&[b]);
            assert!(s.bytes().all(|c| (0x20..=0x7e).contains(&c)), "{b:#04x} -> {s:?}");
        }
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe_rsp_byte(b'+'), "+ (ack)");
        assert_eq!(describe_rsp_byte(b'-'), "- (nack)");
        assert_eq!(describe_rsp_byte(3), "^C (interrupt)");
        assert_eq!(describe_rsp_byte(b'x'), "x (stray byte outside a packet)");
        assert_eq!(control_sequence(b'X'), "DLE 'X'");
        assert_eq!(control_sequence(0x01), "DLE '\\x01'");
    }
}
