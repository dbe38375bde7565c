//! Memory reads answered without gdbstub: `m` (hex) and `x` (binary, the
//! form lldb uses) written straight into the reply buffer.
//!
//! gdbstub 0.7 has no `x`, and its `m` writes each hex digit through its
//! run-length encoder and the connection one byte at a time, which cost
//! about 140 ns per byte read under TCG: a 32 KiB read took 4.7 ms before
//! its first byte went out (measured in a packet capture). Here the bytes
//! are read into the end of the reply buffer and encoded forward into the
//! same buffer, with a table, in one pass. Pure logic, host-tested.

/// A memory read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Binary (`x`) or hex (`m`).
    pub binary: bool,
    /// The first address.
    pub addr: u64,
    /// How many bytes (not 0).
    pub len: u64,
}

fn hex_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| Some(n << 4 | u64::from((d as char).to_digit(16)?)))
}

/// The read a packet (`$body#xx`, checksum already checked) asks for:
/// `mADDR,LEN` or `xADDR,LEN` with LEN not 0. Anything else: `None`.
pub fn parse(packet: &[u8]) -> Option<Read> {
    let body = packet.strip_prefix(b"$")?;
    let body = body.get(..body.len().checked_sub(3)?)?;
    let (binary, rest) = match body.split_first()? {
        (b'm', rest) => (false, rest),
        (b'x', rest) => (true, rest),
        _ => return None,
    };
    let comma = rest.iter().position(|&b| b == b',')?;
    let addr = hex_number(rest.get(..comma)?)?;
    let len = hex_number(rest.get(comma + 1..)?)?;
    (len > 0).then_some(Read { binary, addr, len })
}

/// The most bytes one reply carries in a buffer of `buf_len` bytes: the
/// worst case of either encoding is two bytes out per byte read, plus the
/// ack, `$` and `#xx`.
pub fn max_len(buf_len: usize) -> usize {
    buf_len.saturating_sub(5) / 2
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Encodes `buf[from..from + n]` (the bytes read, at the end of `buf`) as
/// a reply packet at `buf[at..]`: `$`, the data in hex or escaped binary,
/// `#` and the checksum. Returns where the packet ends, or `None` if it
/// would not fit (never, when `n <= max_len(buf.len())` and `at <= 1` and
/// `from + n == buf.len()`).
pub fn encode(buf: &mut [u8], at: usize, from: usize, n: usize, binary: bool) -> Option<usize> {
    let mut w = at;
    let mut sum: u8 = 0;
    *buf.get_mut(w)? = b'$';
    w += 1;
    for i in from..from.checked_add(n)? {
        let b = *buf.get(i)?;
        let (first, second) = if !binary {
            (HEX[usize::from(b >> 4)], Some(HEX[usize::from(b & 15)]))
        } else if matches!(b, b'#' | b'$' | b'}' | b'*') {
            (b'}', Some(b ^ 0x20))
        } else {
            (b, None)
        };
        // The write never overtakes the next byte to read (see `max_len`).
        if w >= i && !(w == i && second.is_none()) {
            return None;
        }
        *buf.get_mut(w)? = first;
        sum = sum.wrapping_add(first);
        w += 1;
        if let Some(second) = second {
            if w > i + 1 && i + 1 < from + n {
                return None;
            }
            *buf.get_mut(w)? = second;
            sum = sum.wrapping_add(second);
            w += 1;
        }
    }
    let tail = [b'#', HEX[usize::from(sum >> 4)], HEX[usize::from(sum & 15)]];
    buf.get_mut(w..w + 3)?.copy_from_slice(&tail);
    Some(w + 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |s, b| s.wrapping_add(b));
        format!("${body}#{sum:02x}").into_bytes()
    }

    #[test]
    fn parses_m_and_x() {
        let m = Read { binary: false, addr: 0x1000, len: 0x20 };
        assert_eq!(parse(&packet("m1000,20")), Some(m));
        let x = Read { binary: true, addr: 0xffff_8000_0000_0000, len: 1 };
        assert_eq!(parse(&packet("xffff800000000000,1")), Some(x));
    }

    #[test]
    fn refuses_what_is_not_a_read() {
        for body in [
            "m1000,0",
            "x0,0",
            "m1000",
            "m,10",
            "m1000,",
            "m10000000000000000,1",
            "mzz,1",
            "M1000,1:00",
            "g",
            "",
            "m1000,1;",
        ] {
            assert_eq!(parse(&packet(body)), None, "{body:?}");
        }
        assert_eq!(parse(b"m10,1"), None);
        assert_eq!(parse(b"$m10,1"), None);
        assert_eq!(parse(b""), None);
    }

    /// What a reply must be: checked against a plain encoder.
    fn expected(data: &[u8], binary: bool) -> Vec<u8> {
        let mut body = Vec::new();
        for &b in data {
            if !binary {
                body.extend_from_slice(format!("{b:02x}").as_bytes());
            } else if matches!(b, b'#' | b'$' | b'}' | b'*') {
                body.extend_from_slice(&[b'}', b ^ 0x20]);
            } else {
                body.push(b);
            }
        }
        let sum = body.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        let mut p = vec![b'$'];
        p.extend_from_slice(&body);
        p.extend_from_slice(format!("#{sum:02x}").as_bytes());
        p
    }

    #[test]
    fn encodes_in_place_up_to_the_limit_in_both_forms() {
        for size in [16usize, 17, 64, 1000, 4096] {
            let n = max_len(size);
            for binary in [false, true] {
                for fill in [0u8, b'}', b'#', 0x41] {
                    let mut buf = vec![0xeeu8; size];
                    let from = size - n;
                    let data: Vec<u8> =
                        (0..n).map(|i| if i % 3 == 0 { fill } else { i as u8 }).collect();
                    buf[from..].copy_from_slice(&data);
                    let end = encode(&mut buf, 1, from, n, binary).expect("fits");
                    assert_eq!(buf[1..end], expected(&data, binary)[..], "{size} {binary} {fill}");
                }
            }
        }
    }

    #[test]
    fn refuses_what_would_overlap_or_overflow() {
        let mut buf = vec![0u8; 64];
        assert_eq!(encode(&mut buf, 1, 32, 32, false), None);
        assert_eq!(encode(&mut buf, 1, 60, 8, false), None);
        assert_eq!(encode(&mut buf, 70, 60, 1, false), None);
        assert_eq!(encode(&mut buf, 1, usize::MAX, 2, true), None);
    }
}
