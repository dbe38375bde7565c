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
    /// How many bytes (0 only for `x`: lldb's probe for the packet).
    pub len: u64,
}

fn hex_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| Some(n << 4 | u64::from((d as char).to_digit(16)?)))
}

/// The read a packet (`$body#xx`, checksum already checked) asks for:
/// `mADDR,LEN` with LEN not 0, or `xADDR,LEN` (`x0,0` is how lldb asks
/// whether the stub has `x`). Anything else: `None`.
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
    (len > 0 || binary).then_some(Read { binary, addr, len })
}

/// The most bytes one reply carries in a buffer of `buf_len` bytes: the
/// worst case of either encoding is two bytes out per byte read, plus the
/// ack, `$` and `#xx`.
pub fn max_len(buf_len: usize) -> usize {
    buf_len.saturating_sub(5) / 2
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Every byte's two hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

/// The two hex digits of `b` (for every hex encoding in the stub).
#[inline]
pub fn hex_pair(b: u8) -> [u8; 2] {
    HEX_PAIRS[usize::from(b)]
}

/// The hex digits of four bytes (little-endian in `v`), in order, as
/// eight ASCII bytes of a little-endian word.
fn hex4(v: u32) -> u64 {
    let x = u64::from(v);
    let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    // High nibble first (the lower byte of each 16-bit lane).
    let nibbles = ((x >> 4) & 0x000f_000f_000f_000f) | ((x & 0x000f_000f_000f_000f) << 8);
    let letters = ((nibbles + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    nibbles + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64
}

/// The sum, mod 256, of four 16-bit lanes.
fn lane_sum(lanes: u64) -> u8 {
    let s = (lanes & 0xffff) + ((lanes >> 16) & 0xffff) + ((lanes >> 32) & 0xffff) + (lanes >> 48);
    s as u8
}

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
    let end = from.checked_add(n)?;
    if end > buf.len() {
        return None;
    }
    if !binary {
        // The digits of byte `k` land at `w + 2k`, behind the next byte to
        // read (`from + k + 1`) as long as `w + n <= from`.
        let out_end = w.checked_add(n.checked_mul(2)?)?;
        if w.checked_add(n)? > from || out_end.checked_add(3)? > buf.len() {
            return None;
        }
        // Four bytes at a time (SWAR: no table, one 8-byte store): under
        // TCG every guest memory access is costly, and this makes 3 per 4
        // bytes instead of 3 per byte.
        let mut lanes = 0u64;
        let mut k = 0;
        while k + 4 <= n {
            let word = buf.get(from + k..from + k + 4)?;
            let ascii = hex4(u32::from_le_bytes(word.try_into().ok()?));
            buf.get_mut(w + 2 * k..w + 2 * k + 8)?.copy_from_slice(&ascii.to_le_bytes());
            // Byte sums in 16-bit lanes; flushed before they can overflow.
            lanes += (ascii & 0x00ff_00ff_00ff_00ff) + ((ascii >> 8) & 0x00ff_00ff_00ff_00ff);
            k += 4;
            if k % 1024 == 0 {
                sum = sum.wrapping_add(lane_sum(lanes));
                lanes = 0;
            }
        }
        sum = sum.wrapping_add(lane_sum(lanes));
        for k in k..n {
            let pair = hex_pair(*buf.get(from + k)?);
            buf.get_mut(w + 2 * k..w + 2 * k + 2)?.copy_from_slice(&pair);
            sum = sum.wrapping_add(pair[0]).wrapping_add(pair[1]);
        }
        w = out_end;
    } else {
        for i in from..end {
            let b = *buf.get(i)?;
            let escaped = matches!(b, b'#' | b'$' | b'}' | b'*');
            // One or two bytes out for byte `i`, never past it: the next
            // byte to read is `i + 1`.
            if w + usize::from(escaped) > i {
                return None;
            }
            if escaped {
                *buf.get_mut(w)? = b'}';
                *buf.get_mut(w + 1)? = b ^ 0x20;
                sum = sum.wrapping_add(b'}').wrapping_add(b ^ 0x20);
                w += 2;
            } else {
                *buf.get_mut(w)? = b;
                sum = sum.wrapping_add(b);
                w += 1;
            }
        }
    }
    let [hi, lo] = hex_pair(sum);
    buf.get_mut(w..w.checked_add(3)?)?.copy_from_slice(&[b'#', hi, lo]);
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
        let probe = Read { binary: true, addr: 0, len: 0 };
        assert_eq!(parse(&packet("x0,0")), Some(probe));
    }

    #[test]
    fn refuses_what_is_not_a_read() {
        for body in [
            "m1000,0",
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
    fn four_bytes_at_a_time_as_one_at_a_time() {
        for v in [0u32, 0xffff_ffff, 0x0123_4567, 0x89ab_cdef, 0x0a0b_0c0d, 0x9f90_a0af] {
            let want: Vec<u8> =
                v.to_le_bytes().iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect();
            assert_eq!(hex4(v).to_le_bytes().to_vec(), want, "{v:#x}");
        }
        // The lane sums do not overflow between flushes: 1024 bytes of 0xff.
        let n = 4096;
        let mut buf = vec![0xffu8; 2 * n + 8];
        let from = buf.len() - n;
        let end = encode(&mut buf, 1, from, n, false).unwrap();
        assert_eq!(buf[1..end], expected(&vec![0xff; n], false)[..]);
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
