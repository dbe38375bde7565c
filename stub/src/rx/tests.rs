//! Unit tests of the receiver, and (with `enabled`) the proof that every
//! packet it passes on is handled by a real gdbstub without an error.

use super::*;

const SIZE: usize = 0x4000;

/// An [`Event`] that owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Control(Control),
    Ack,
    Nak,
    Interrupt,
    Packet(Vec<u8>, PacketClass),
    Reject(Reply),
    BadChecksum,
    Overflow,
}

impl From<Event<'_>> for Ev {
    fn from(e: Event<'_>) -> Ev {
        match e {
            Event::Control(c) => Ev::Control(c),
            Event::Ack => Ev::Ack,
            Event::Nak => Ev::Nak,
            Event::Interrupt => Ev::Interrupt,
            Event::Packet { bytes, class } => Ev::Packet(bytes.to_vec(), class),
            Event::Reject(r) => Ev::Reject(r),
            Event::BadChecksum => Ev::BadChecksum,
            Event::Overflow => Ev::Overflow,
        }
    }
}

/// `$body#xx` with the right checksum.
fn pkt(body: &[u8]) -> Vec<u8> {
    let mut p = vec![b'$'];
    p.extend_from_slice(body);
    p.extend_from_slice(format!("#{:02x}", checksum(body)).as_bytes());
    p
}

fn feed(rx: &mut Rx<'_>, bytes: &[u8]) -> Vec<Ev> {
    bytes.iter().filter_map(|&b| rx.push(b).map(Ev::from)).collect()
}

fn run(bytes: &[u8]) -> Vec<Ev> {
    let mut buf = vec![0u8; SIZE];
    feed(&mut Rx::new(&mut buf), bytes)
}

fn passed(body: &[u8], class: PacketClass) -> Vec<Ev> {
    vec![Ev::Packet(pkt(body), class)]
}

/// Packets gdb 13 and lldb 14 send to the stub: all pass unchanged.
fn valid_bodies() -> Vec<Vec<u8>> {
    let g_core: String = "0123456789abcdef".repeat(0x218 * 2 / 16);
    let g_full: String = "fedcba9876543210".repeat(0x228 * 2 / 16);
    let mut bodies: Vec<Vec<u8>> = [
        &b"qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;exec-events+;vContSupported+;QThreadEvents+;no-resumed+;memory-tagging+;xmlRegisters=i386"[..],
        b"qSupported:xmlRegisters=i386,arm,mips,arc;multiprocess+;fork-events+;vfork-events+",
        b"vMustReplyEmpty",
        b"QStartNoAckMode",
        b"Hg0",
        b"Hg1",
        b"Hgp1.1",
        b"Hc-1",
        b"Hc0",
        b"Hcp1.-1",
        b"qXfer:features:read:target.xml:0,ffb",
        b"qXfer:features:read:target.xml:ffb,ffb",
        b"qXfer:features:read:target.xml:0,3ffb",
        b"qTStatus",
        b"?",
        b"qfThreadInfo",
        b"qsThreadInfo",
        b"qAttached",
        b"qAttached:1",
        b"qC",
        b"qOffsets",
        b"qSymbol::",
        b"g",
        b"m100000,40",
        b"m0,1",
        b"mffffffffffffff00,200",
        b"m100000,2000",
        b"m100000,0",
        b"M100000,4:01020304",
        b"M100000,0:",
        b"X100000,0:",
        b"X100000,4:ab}]d",
        b"X100000,3:}\x03}\x04}\x0a",
        b"X0,2:\x10\x00",
        b"p10",
        b"p3a",
        b"p3b",
        b"P10=0011223344556677",
        b"P11=00112233",
        b"Z0,100000,1",
        b"z0,100000,1",
        b"Z0,100000,1;X2,0a",
        b"Z1,100000,1",
        b"Z2,100000,8",
        b"Z3,100000,4",
        b"z4,100000,4",
        b"Z9,1,1",
        b"vCont?",
        b"vCont;c",
        b"vCont;s:1;c",
        b"vCont;s:p1.1;c",
        b"vCont;c:p1.-1",
        b"vCont;c:-1",
        b"vCont;c:0",
        b"vCont;C05",
        b"vCont;S0b:1",
        b"c",
        b"s",
        b"c100000",
        b"vKill;1",
        b"D",
        b"D;1",
        b"k",
        b"qRcmd,776879",
        b"qRcmd,627265616b706f696e7473",
        b"qRcmd",
        b"T1",
        b"Tp1.1",
        b"",
        // lldb.
        b"qHostInfo",
        b"qProcessInfo",
        b"qRegisterInfo0",
        b"qStructuredDataPlugins",
        b"QThreadSuffixSupported",
        b"QListThreadsInStopReply",
        b"qVAttachOrWaitSupported",
        b"QEnableErrorStrings",
        b"qGDBServerVersion",
        b"qShlibInfoAddr",
        b"jThreadsInfo",
        b"qMemoryRegionInfo:100000",
        b"x100000,200",
        b"vFile:open:6a7573742077696c6c206e6f74206f70656e,0,0",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    bodies.push(format!("G{g_core}").into_bytes());
    bodies.push(format!("G{g_full}").into_bytes());
    bodies.push(format!("G{}", "x".repeat(0x218 * 2)).into_bytes());
    bodies
}

/// Well-formed packets from the hostile-input catalogue
/// (`/work/shared/hostile-inputs.md`): they pass, and the target refuses
/// or bounds what they ask.
fn hostile_bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        &b"m100000,ffffffff"[..],
        b"m7f0000001000,10",
        b"m8000000000000000,10",
        b"mffffffffffffff00,200",
        b"M7f0000001000,1:00",
        b"M0,1:00",
        b"Z0,7f0000001000,1",
        b"Z2,100000,3",
        b"Z3,100000,4",
        b"Z1,1,1",
        b"p3b",
        b"pffff",
        b"P3b=00",
        b"Pffff=0011",
        b"P0=00",
        b"vCont;s:99",
        b"vCont;c:p1.0",
        b"qXfer:features:read:target.xml:ffffffff,ffb",
        b"qXfer:features:read:target.xml:0,ffffffffffffffff",
        b"Hgp0.0",
        b"Hg99",
        b"Hc99",
        b"T99",
        b"Tp0.1",
        b"q\x00\xff\x80\x10",
        b"\x00",
        b"k",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    bodies.push(format!("qRcmd,{}", "61".repeat(8000)).into_bytes());
    bodies.push(format!("qSupported:{}multiprocess+", "feature+;".repeat(1200)).into_bytes());
    // The longest packet that fits the buffer.
    bodies.push(vec![b'q'; SIZE - 4]);
    bodies
}

/// Malformed packets for commands the stub supports: each is refused with
/// `E16` (and most would end the session inside gdbstub).
fn malformed_bodies() -> Vec<Vec<u8>> {
    let g = |n: usize, c: char| format!("G{}", c.to_string().repeat(n)).into_bytes();
    let mut bodies: Vec<Vec<u8>> = [
        &b"m-1"[..],
        b"m-1,1",
        b"m1,-1",
        b"mzz",
        b"mzz,1",
        b"m1,zz",
        b"m,",
        b"m,1",
        b"m1,",
        b"m",
        b"m1",
        b"m1,1,1",
        b"m12345678901234567,1",
        b"m1,12345678901234567",
        b"m00000000000000001,1",
        b"m1000*!,4",
        b"M1,2:00",
        b"M1,1:0",
        b"M1:00",
        b"M1,1:zz",
        b"M1,1",
        b"Mzz,1:00",
        b"X121000,2:abcdefgh",
        b"X100000,1:}",
        b"X100000,2:}",
        b"X100000,4:ab*\"",
        b"X100000,1",
        b"X100000:1,a",
        b"Xzz,1:a",
        b"X1,zz:a",
        b"vContzz",
        b"vCont",
        b"vCont;",
        b"vCont;;;",
        b"vCont;c;",
        b"vCont;x",
        b"vCont;c:",
        b"vCont;s:p1.-2",
        b"vCont;c:p0.1",
        b"vCont;c:zz",
        b"vCont;c:00",
        b"vCont;s:1;s:1",
        b"vCont;s:1;C05",
        b"vCont;c;c;c",
        b"vCont;C",
        b"vCont;C100",
        b"vCont;Szz",
        b"vCont?x",
        b"vContc",
        b"vCont;r1",
        b"Hg-1",
        b"Hgp1.-1",
        b"Hx1",
        b"H",
        b"Hg",
        b"Hgzz",
        b"Hg-2",
        b"Hgp1.2.3",
        b"T0",
        b"T-1",
        b"Tp1.0",
        b"Tzz",
        b"T",
        b"p",
        b"pzz",
        b"p-1",
        b"p12345678901234567",
        b"P",
        b"P1",
        b"P1=",
        b"P=00",
        b"Pzz=00",
        b"P1=0",
        b"P1=00=00",
        b"P1=zz",
        b"Z",
        b"Z0",
        b"Z0,1",
        b"Z0,,1",
        b"Z0,1,",
        b"Z,1,1",
        b"Z100,1,1",
        b"Zzz,1,1",
        b"Z0,zz,1",
        b"Z0,1,zz",
        b"Z0,1,1,1",
        b"z0,1",
        b"z2,1,-1",
        b"qXfer:features:read:foo.xml:0,10",
        b"qXfer:features:read:target.xml:zz,10",
        b"qXfer:features:read:target.xml:0",
        b"qXfer:features:read:target.xml:0,",
        b"qXfer:features:read:target.xml",
        b"qXfer:features:read",
        b"qXfer:features:read:",
        b"qXfer:features:readXX:target.xml:0,10",
        b"qXfer:features:read:target.xml:123456789abcdef01,1",
        b"qSupported",
        b"qSupported:",
        b"qSupported:a;;b",
        b"qSupported:a;",
        b"qSupportedX",
        b"QStartNoAckModeX",
        b"?x",
        b"gx",
        b"g0",
        b"kx",
        b"qfThreadInfoX",
        b"qsThreadInfoX",
        b"D;0",
        b"D;zz",
        b"D;",
        b"Dx",
        b"qAttached:0",
        b"qAttached:",
        b"qAttachedX",
        b"vKill",
        b"vKill;0",
        b"vKill;",
        b"vKillX",
        b"qRcmd,7",
        b"qRcmdzz",
        b"qRcmd,zz",
        b"czz",
        b"c-1",
        b"c12345678901234567",
        b"szz",
        b"s,",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    bodies.push(g(0x218 * 2 - 1, '0'));
    bodies.push(g(0x218 * 2 + 1, '0'));
    bodies.push(g(0x218 * 2 - 2, '0'));
    bodies.push(g(0x218 * 2 + 2, '0'));
    bodies.push(g(0x228 * 2 + 2, '0'));
    bodies.push(g(0x228 * 2 - 1, '0'));
    bodies.push(g(0x218 * 2, 'z'));
    bodies.push(g(0, '0'));
    bodies.push(format!("G0*{}", "0".repeat(0x218 * 2 - 2)).into_bytes());
    // 10 KiB of vCont actions.
    bodies.push(format!("vCont{}", ";c".repeat(5 * 1024)).into_bytes());
    bodies.push(format!("vCont{}", ";s:1".repeat(2 * 1024)).into_bytes());
    bodies
}

#[test]
fn valid_packets_pass_unchanged() {
    for body in valid_bodies() {
        let class = match &body[..] {
            b"vMustReplyEmpty" => PacketClass::Handshake,
            b"QStartNoAckMode" => PacketClass::Opening,
            b if b.starts_with(b"qSupported:") => PacketClass::Opening,
            _ => PacketClass::Other,
        };
        assert_eq!(run(&pkt(&body)), passed(&body, class), "{}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn hostile_but_well_formed_packets_pass() {
    for body in hostile_bodies() {
        let class =
            if body.starts_with(b"qSupported") { PacketClass::Opening } else { PacketClass::Other };
        let expect = match &body[..] {
            b"m100000,ffffffff" => passed(b"m100000,2000", class),
            _ => passed(&body, class),
        };
        assert_eq!(run(&pkt(&body)), expect, "{}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn malformed_packets_are_refused_with_einval() {
    for body in malformed_bodies() {
        assert_eq!(
            run(&pkt(&body)),
            vec![Ev::Reject(Reply::Einval)],
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn memory_map_reads_are_checked() {
    // The stub's target serves gdb's memory map, so gdbstub parses these
    // and ends the session on a malformed one (found by fuzz/engine).
    for body in [
        &b"qXfer:memory-map:read::0,f\0fb"[..],
        b"qXfer:memory-map:read::0,",
        b"qXfer:memory-map:read::,ffb",
        b"qXfer:memory-map:read::0",
        b"qXfer:memory-map:read:",
        b"qXfer:memory-map:read",
        b"qXfer:memory-map:read:x:0,ffb",
        b"qXfer:memory-map:read::0,11111111111111111",
    ] {
        assert_eq!(check(body), Err(Reply::Einval), "{}", String::from_utf8_lossy(body));
    }
    for body in
        [&b"qXfer:memory-map:read::0,ffb"[..], b"qXfer:memory-map:read::1a3,ffffffffffffffff"]
    {
        assert_eq!(check(body), Ok(Verdict::Pass(PacketClass::Other)));
    }
}

#[test]
fn unsupported_vcont_actions_get_the_empty_reply() {
    for body in [&b"vCont;t"[..], b"vCont;r1000,2000:1", b"vCont;r1,2;c"] {
        assert_eq!(run(&pkt(body)), vec![Ev::Reject(Reply::Empty)]);
    }
}

#[test]
fn reply_packets_carry_their_checksums() {
    assert_eq!(Reply::Einval.packet(), &pkt(b"E16")[..]);
    assert_eq!(Reply::Empty.packet(), &pkt(b"")[..]);
}

#[test]
fn long_m_reads_are_clamped() {
    assert_eq!(Rx::new(&mut [0u8; SIZE]).m_max(), M_MAX);
    assert_eq!(run(&pkt(b"m100000,2001")), passed(b"m100000,2000", PacketClass::Other));
    assert_eq!(run(&pkt(b"m100000,ffffffff")), passed(b"m100000,2000", PacketClass::Other));
    assert_eq!(run(&pkt(b"m0,ffffffffffffffff")), passed(b"m0,2000", PacketClass::Other));
    assert_eq!(run(&pkt(b"m100000,0000002001")), passed(b"m100000,2000", PacketClass::Other));
    // Exactly M_MAX is left alone, even with leading zeros.
    assert_eq!(run(&pkt(b"m1,002000")), passed(b"m1,002000", PacketClass::Other));
}

#[test]
fn the_m_limit_follows_the_buffer() {
    // Half the buffer, never below M_MAX (small buffers keep the default).
    let mut small = vec![0u8; 64];
    assert_eq!(Rx::new(&mut small).m_max(), M_MAX);
    let mut big = vec![0u8; 0x10000];
    let mut rx = Rx::new(&mut big);
    assert_eq!(rx.m_max(), 0x8000);
    assert_eq!(feed(&mut rx, &pkt(b"m100000,8001")), passed(b"m100000,8000", PacketClass::Other));
    assert_eq!(feed(&mut rx, &pkt(b"m0,fffffffff")), passed(b"m0,8000", PacketClass::Other));
    assert_eq!(feed(&mut rx, &pkt(b"m1,8000")), passed(b"m1,8000", PacketClass::Other));
    assert_eq!(feed(&mut rx, &pkt(b"m1,4001")), passed(b"m1,4001", PacketClass::Other));
    let mut odd = vec![0u8; 0x12345];
    let mut rx = Rx::new(&mut odd);
    assert_eq!(rx.m_max(), 0x91a2);
    assert_eq!(feed(&mut rx, &pkt(b"m1,100000")), passed(b"m1,91a2", PacketClass::Other));
}

#[test]
fn checksum_ok_and_bad() {
    assert_eq!(run(b"$g#67"), passed(b"g", PacketClass::Other));
    assert_eq!(run(b"$g#67"), run(b"$g#67"));
    assert_eq!(run(b"$g#6A"), vec![Ev::BadChecksum]);
    assert_eq!(run(b"$g#68"), vec![Ev::BadChecksum]);
    // Upper-case digits are fine; non-hex digits are not.
    assert_eq!(run(b"$md,a#5E"), vec![Ev::Packet(b"$md,a#5E".to_vec(), PacketClass::Other)]);
    assert_eq!(run(b"$#00"), passed(b"", PacketClass::Other));
    assert_eq!(run(b"$#xx"), vec![Ev::BadChecksum]);
    assert_eq!(run(b"$#0g"), vec![Ev::BadChecksum]);
    // A malformed packet with a bad checksum is a bad checksum.
    assert_eq!(run(b"$m-1#00"), vec![Ev::BadChecksum]);
}

#[test]
fn acks_naks_and_interrupts_between_packets() {
    assert_eq!(run(b"+-\x03"), vec![Ev::Ack, Ev::Nak, Ev::Interrupt]);
    let mut input = b"+".to_vec();
    input.extend(pkt(b"?"));
    input.extend(b"-\x03+");
    let mut expect = vec![Ev::Ack];
    expect.extend(passed(b"?", PacketClass::Other));
    expect.extend([Ev::Nak, Ev::Interrupt, Ev::Ack]);
    assert_eq!(run(&input), expect);
    // Inside a packet they are data.
    assert_eq!(run(&pkt(b"qFoo+-\x03")), passed(b"qFoo+-\x03", PacketClass::Other));
}

#[test]
fn junk_between_packets_is_dropped() {
    assert_eq!(run(b"hello\r\n\x00\xff#00}*x"), vec![]);
    let mut input = b"noise".to_vec();
    input.extend(pkt(b"g"));
    input.extend(b"\x10q\x10\x10garbage");
    input.extend(pkt(b"?"));
    let mut expect = passed(b"g", PacketClass::Other);
    expect.extend(passed(b"?", PacketClass::Other));
    assert_eq!(run(&input), expect);
    // A DLE before an ack, or before a packet, is noise.
    assert_eq!(run(b"\x10+"), vec![Ev::Ack]);
    let mut input = b"\x10".to_vec();
    input.extend(pkt(b"g"));
    assert_eq!(run(&input), passed(b"g", PacketClass::Other));
}

#[test]
fn dollar_restarts_a_packet() {
    // gdb resends a packet whole; the partial one before it is dropped.
    assert_eq!(run(b"$m100000,10$?#3f"), passed(b"?", PacketClass::Other));
    assert_eq!(run(b"$g#$?#3f"), passed(b"?", PacketClass::Other));
    assert_eq!(run(b"$g#6$?#3f"), passed(b"?", PacketClass::Other));
    let flood = vec![b'$'; 100 * 1024];
    let mut input = flood.clone();
    input.extend(pkt(b"g"));
    assert_eq!(run(&flood), vec![]);
    assert_eq!(run(&input), passed(b"g", PacketClass::Other));
}

#[test]
fn overflow_drops_the_packet_whole() {
    // The largest packet that fits: `$`, body, `#xx` in SIZE bytes.
    let body = vec![b'q'; SIZE - 4];
    assert_eq!(run(&pkt(&body)), passed(&body, PacketClass::Other));
    let body = vec![b'q'; SIZE - 3];
    assert_eq!(run(&pkt(&body)), vec![Ev::Overflow]);
    // Its tail is not mistaken for packets or controls; the next packet passes.
    let mut body = vec![b'q'; 20000];
    body.extend(b"+-\x03\x10X");
    let mut input = pkt(&body);
    input.extend(pkt(b"g"));
    let mut expect = vec![Ev::Overflow];
    expect.extend(passed(b"g", PacketClass::Other));
    assert_eq!(run(&input), expect);
    // A `$` in an overlong packet starts a new one.
    let mut input = vec![b'q'; 20000];
    input.insert(0, b'$');
    input.extend(pkt(b"g"));
    assert_eq!(run(&input), passed(b"g", PacketClass::Other));
}

#[test]
fn tiny_buffers_never_panic() {
    for size in 0..6 {
        let mut buf = vec![0u8; size];
        let mut rx = Rx::new(&mut buf);
        let events = feed(&mut rx, b"$#00$g#67+\x10F");
        let mut expect = match size {
            0..=3 => vec![Ev::Overflow, Ev::Overflow],
            4 => vec![Ev::Packet(b"$#00".to_vec(), PacketClass::Other), Ev::Overflow],
            _ => vec![
                Ev::Packet(b"$#00".to_vec(), PacketClass::Other),
                Ev::Packet(b"$g#67".to_vec(), PacketClass::Other),
            ],
        };
        expect.extend([Ev::Ack, Ev::Control(Control::Framed)]);
        assert_eq!(events, expect, "buffer of {size}");
    }
}

#[test]
fn controls_between_packets_and_not_inside() {
    assert_eq!(
        run(b"\x10F\x10R\x10X"),
        vec![
            Ev::Control(Control::Framed),
            Ev::Control(Control::Raw),
            Ev::Control(Control::DebuggerGone)
        ]
    );
    // Inside a packet body and its checksum, DLE is data.
    assert_eq!(run(&pkt(b"X0,2:\x10X")), passed(b"X0,2:\x10X", PacketClass::Other));
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    assert_eq!(feed(&mut rx, b"$g#\x10X"), vec![Ev::BadChecksum]);
    // A control split around a packet: the DLE is noise, the packet passes.
    let mut input = b"\x10".to_vec();
    input.extend(pkt(b"g"));
    input.push(b'X');
    assert_eq!(run(&input), passed(b"g", PacketClass::Other));
    // After an abandoned partial packet, controls work again.
    let mut rx_buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut rx_buf);
    assert_eq!(feed(&mut rx, b"$m100000"), vec![]);
    assert!(rx.in_packet());
    assert_eq!(feed(&mut rx, b"\x10F"), vec![], "inside a packet");
    rx.abandon();
    assert!(!rx.in_packet());
    assert_eq!(feed(&mut rx, b"\x10F"), vec![Ev::Control(Control::Framed)]);
}

#[test]
fn in_packet_tracks_every_packet_state() {
    let mut buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut buf);
    assert!(!rx.in_packet());
    for &b in b"\x10" {
        rx.push(b);
        assert!(!rx.in_packet(), "a pending DLE is between packets");
    }
    rx.push(b'F');
    for &b in b"$g#6" {
        rx.push(b);
        assert!(rx.in_packet());
    }
    rx.push(b'7');
    assert!(!rx.in_packet());
    let long = vec![b'q'; SIZE];
    rx.push(b'$');
    for &b in &long {
        rx.push(b);
    }
    assert!(rx.in_packet(), "skipping an overlong packet");
    rx.push(b'#');
    rx.push(b'0');
    assert!(rx.in_packet());
    assert_eq!(rx.push(b'0').map(Ev::from), Some(Ev::Overflow));
    assert!(!rx.in_packet());
}

#[test]
fn class_detection() {
    let cases: [(&[u8], PacketClass); 7] = [
        (b"qSupported:multiprocess+", PacketClass::Opening),
        (b"QStartNoAckMode", PacketClass::Opening),
        (b"vMustReplyEmpty", PacketClass::Handshake),
        (b"vMustReplyEmptyX", PacketClass::Other),
        (b"qSymbol::", PacketClass::Other),
        (b"qS", PacketClass::Other),
        (b"g", PacketClass::Other),
    ];
    for (body, class) in cases {
        assert_eq!(run(&pkt(body)), passed(body, class), "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn byte_at_a_time_equals_bulk() {
    // One stream with every kind of event; fed in one go, and fed in
    // pieces with the receiver kept between them (as the stub does, one
    // byte per read), the events are the same.
    let mut input = b"junk+\x10F".to_vec();
    input.extend(pkt(b"qSupported:multiprocess+"));
    input.extend(b"-\x03$m100000,10");
    input.extend(pkt(b"m100000,ffff"));
    input.extend(pkt(b"m-1"));
    input.extend(b"$g#00");
    input.extend(pkt(&vec![b'q'; 20000]));
    input.extend(pkt(b"vCont;t"));
    input.extend(b"\x10X");
    let bulk = run(&input);
    assert_eq!(bulk.len(), 11, "{bulk:?}");
    for chunk in [1, 2, 3, 7, 4096] {
        let mut buf = vec![0u8; SIZE];
        let mut rx = Rx::new(&mut buf);
        let mut pieces = Vec::new();
        for part in input.chunks(chunk) {
            pieces.extend(feed(&mut rx, part));
        }
        assert_eq!(pieces, bulk, "chunks of {chunk}");
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'s, T>(&mut self, items: &'s [T]) -> &'s T {
        &items[self.below(items.len())]
    }
}

#[test]
fn random_streams_yield_only_well_formed_events() {
    // 1 MiB of noise, biased towards the bytes that matter, in one stream
    // (the hostile-input rows "random 1 MiB" and "random bytes on the raw
    // line"): every packet passed on is whole, checks out, and fits.
    let mut rng = Rng(0x0dd5_eed5_0fc0_ffee);
    let alphabet = b"$#+-\x03\x10FRXm0123456789abcdef,:;vCont?gGqSupported";
    let mut input = Vec::with_capacity(1 << 20);
    for _ in 0..1 << 20 {
        input.push(if rng.below(2) == 0 { rng.next() as u8 } else { *rng.pick(alphabet) });
    }
    // Some valid packets in between, so packets do pass.
    for i in 0..1000 {
        let at = rng.below(input.len());
        let body = format!("m{i:x},10");
        input.splice(at..at, pkt(body.as_bytes()));
    }
    let mut buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut buf);
    let mut packets = 0;
    for &b in &input {
        if let Some(Event::Packet { bytes, .. }) = rx.push(b) {
            packets += 1;
            assert!(bytes.len() <= SIZE);
            let (body, sum) = split_packet(bytes).expect("a whole packet");
            assert_eq!(checksum(body), sum);
            assert!(!body.contains(&b'#') && !body.contains(&b'$'));
            assert!(check(body).is_ok());
        }
    }
    assert!(packets >= 900, "{packets} packets");
}

#[cfg(feature = "enabled")]
mod against_gdbstub;

/// Feeds `bytes` through [`Rx::push_checked`]: the events, each with the
/// envelope it came in.
fn feed_checked(rx: &mut Rx<'_>, bytes: &[u8]) -> Vec<(Option<crate::checked::Envelope>, Ev)> {
    let mut out = Vec::new();
    for &b in bytes {
        let mut env = None;
        if let Some(e) = rx.push_checked(b, &mut env) {
            out.push((env, Ev::from(e)));
        }
    }
    out
}

fn checked_request(seq: u32, limit: u32, body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let env = crate::checked::Envelope { seq, limit, offset: 0 };
    crate::checked::write_request(env, body, |b| wire.extend_from_slice(b));
    wire
}

#[test]
fn a_checked_packet_comes_out_plain_with_its_envelope() {
    let mut buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut buf);
    let env = crate::checked::Envelope { seq: 9, limit: 0x40, offset: 0 };
    let events = feed_checked(&mut rx, &checked_request(9, 0x40, b"m1000,10"));
    assert_eq!(events, vec![(Some(env), Ev::Packet(pkt(b"m1000,10"), PacketClass::Other))]);
    // Checked like a plain packet: clamped, rejected, classified.
    let events = feed_checked(&mut rx, &checked_request(10, 0x40, b"m1000,ffffffff"));
    assert_eq!(events[0].1, Ev::Packet(pkt(b"m1000,2000"), PacketClass::Other));
    let events = feed_checked(&mut rx, &checked_request(11, 0x40, b"vCont;x"));
    assert_eq!(events[0].1, Ev::Reject(Reply::Einval));
    assert_eq!(events[0].0.map(|e| e.seq), Some(11));
    let events = feed_checked(&mut rx, &checked_request(12, 0x40, b"qSupported:xmlRegisters=i386"));
    assert_eq!(events[0].1, Ev::Packet(pkt(b"qSupported:xmlRegisters=i386"), PacketClass::Opening));
    // A plain packet has no envelope.
    assert_eq!(
        feed_checked(&mut rx, &pkt(b"g")),
        vec![(None, Ev::Packet(pkt(b"g"), PacketClass::Other))]
    );
}

#[test]
fn a_damaged_checked_packet_is_a_bad_checksum_even_when_its_sum_holds() {
    let mut buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut buf);
    // Two faults that keep RSP's byte sum: '1' + 1 and '0' - 1.
    let wire = checked_request(3, 0x40, b"M1000,2:0110");
    let text = String::from_utf8(wire).unwrap();
    let damaged = text.replacen(":0110", ":0200", 1);
    assert_eq!(feed_checked(&mut rx, damaged.as_bytes()), vec![(None, Ev::BadChecksum)]);
    // The receiver goes on.
    assert_eq!(feed_checked(&mut rx, &pkt(b"?")).len(), 1);
}

#[test]
fn junk_is_a_bad_checksum_when_the_mode_is_set_after_every_byte() {
    // As the session drives it: `set_nak_junk` after each byte.
    let mut buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut buf);
    let mut events = Vec::new();
    for &b in b"@1,18,0:0011aabb#4f" {
        rx.set_nak_junk(true);
        if let Some(e) = rx.push(b) {
            events.push(Ev::from(e));
        }
    }
    assert_eq!(events, vec![Ev::BadChecksum]);
}

#[test]
fn junk_that_ends_like_a_packet_is_a_bad_checksum_only_when_asked() {
    let mut buf = vec![0u8; SIZE];
    let mut rx = Rx::new(&mut buf);
    // The rest of a packet whose `$` was lost.
    let junk = b"@1,18,0:0011aabb#4f";
    assert_eq!(feed(&mut rx, junk), vec![]);
    rx.set_nak_junk(true);
    assert_eq!(feed(&mut rx, junk), vec![Ev::BadChecksum]);
    // A packet after it is taken as usual; `+`, `-` and 0x03 still mean
    // what they mean.
    assert_eq!(feed(&mut rx, &pkt(b"g")), vec![Ev::Packet(pkt(b"g"), PacketClass::Other)]);
    assert_eq!(feed(&mut rx, b"+-\x03"), vec![Ev::Ack, Ev::Nak, Ev::Interrupt]);
}
