//! The hostile-input catalogue (/work/shared/hostile-inputs.md, 53 rows):
//! each row is tried against the example through `ukdb bridge` (or, where
//! the row says RAW, straight on the serial socket).
//!
//! Rows are grouped into a few VMs. After EACH row: the bridge is up and the
//! unikernel runs (new console lines, numbered without a gap); at the end of
//! each group a fresh gdb attaches and hits a breakpoint. Where the spec
//! fixes a reply (malformed -> `E16` with the session kept, a bad checksum
//! -> `-`, `m` longer than 8192 bytes -> exactly 8192 bytes, ...), the row
//! asserts it; such reply mismatches are collected per row so one run shows
//! every row's result, and the test fails at the end naming them.

use std::sync::Arc;
use std::time::{Duration, Instant};
use ukdb_tests::raw::{self, hex, packet, read_mem, Raw, Reply};
use ukdb_tests::*;

/// Result of one row's reply checks.
type Row = Result<(), String>;

macro_rules! check {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn is_stop(reply: &str) -> bool {
    reply.starts_with('T') || reply.starts_with('S')
}

fn is_error(reply: &str) -> bool {
    reply.len() == 3 && reply.starts_with('E') && raw::unhex(&reply.as_bytes()[1..]).is_some()
}

/// The address of the first symbol whose (mangled) name contains every part.
fn sym(image: &std::path::Path, parts: &[&str]) -> u64 {
    symbols(image)
        .into_iter()
        .find(|(n, _)| parts.iter().all(|p| n.contains(p)))
        .unwrap_or_else(|| panic!("no symbol with {parts:?}"))
        .1
}

/// One VM, one bridge, rows tried in turn.
struct Rig {
    image: std::path::PathBuf,
    _vm: Vm,
    bridge: Bridge,
    failures: Vec<String>,
    tick: u64,
    ticks: u64,
}

impl Rig {
    fn new() -> Rig {
        let a = artifacts();
        let vm = Vm::boot("q35", &a.image, "ukdemo.rate=50");
        let bridge = Bridge::start(&vm);
        bridge.wait_more_lines(2);
        Rig {
            tick: sym(&a.image, &["6ukdemo3app4tick17h"]),
            ticks: sym(&a.image, &["6ukdemo3app5TICKS"]),
            image: a.image.clone(),
            _vm: vm,
            bridge,
            failures: Vec::new(),
        }
    }

    fn connect(&self) -> Raw {
        let c = Raw::connect(&self.bridge.addr);
        c.set_write_timeout(Some(DEADLINE));
        c
    }

    /// A client with a session: the unikernel is stopped.
    fn session(&self) -> Raw {
        let mut c = self.connect();
        let stop = c.attach();
        assert!(is_stop(&stop), "stop reply: {stop}");
        c
    }

    /// Runs row `n`; records a reply mismatch; then asserts that the bridge
    /// is up and the unikernel runs on, gap-free.
    fn row(&mut self, n: u32, f: impl FnOnce(&mut Rig) -> Row) {
        let started = Instant::now();
        if let Err(e) = f(self) {
            println!("row {n} FAILED: {e}");
            self.failures.push(format!("row {n}: {e}"));
        }
        println!("row {n}: sent; checking that the bridge is up and the unikernel runs on");
        self.bridge.assert_up(&format!("row {n}"));
        self.bridge.assert_runs_gap_free(2, &format!("row {n}"));
        println!("row {n}: {:.1} s", started.elapsed().as_secs_f64());
    }

    /// A fresh gdb attaches and hits a breakpoint; then every recorded
    /// reply mismatch fails the test.
    fn finish(mut self) {
        if !self.failures.is_empty() {
            println!("rows failed so far:\n{}", self.failures.join("\n"));
        }
        gdb_breaks_at_tick(&self.image, &self.bridge.addr);
        self.bridge.assert_runs_gap_free(2, "after the group's gdb");
        self.bridge.assert_up("at the end");
        assert!(self.failures.is_empty(), "rows failed:\n{}", self.failures.join("\n"));
    }
}

/// A fresh gdb breaks in `tick`, deletes the breakpoint and detaches.
fn gdb_breaks_at_tick(image: &std::path::Path, remote: &str) -> String {
    let out =
        Debugger::gdb(image, remote, &["break ukdemo::app::tick", "continue", "delete", "detach"])
            .finish();
    let line = line_of("src/app.rs", "write_volatile(t)");
    let expected = format!(
        "{{*}}\n{{*}}\n\
         Breakpoint 1 at {{hex}}: file src/app.rs, line {line}.\n\
         \n\
         Breakpoint 1, ukdemo::app::tick (n={{n}}) at src/app.rs:{line}\n\
         {line}\t    unsafe {{ addr_of_mut!(TICKS).write_volatile(t) }};\n\
         [Inferior 1 (process 1) detached]\n"
    );
    assert_transcript(&out, &expected);
    out
}

/// Sends `body` and checks the reply is exactly `want`.
fn expect(c: &mut Raw, body: &[u8], want: &str) -> Row {
    let got = c.request(body);
    check!(got == want, "{:?}: want {want:?}, got {got:?}", String::from_utf8_lossy(body));
    Ok(())
}

/// Sends `body` and checks the reply is an `Exx` error.
fn expect_error(c: &mut Raw, body: &[u8]) -> Row {
    let got = c.request(body);
    check!(is_error(&got), "{:?}: want an error, got {got:?}", String::from_utf8_lossy(body));
    Ok(())
}

/// After a packet whose answer the spec leaves open (an error, an empty
/// reply, or none): `?` gives a stop reply, after at most that one answer.
fn stop_reply_after_one(c: &mut Raw) -> Row {
    c.send_packet(b"?");
    let first = c.reply();
    if is_stop(&first) {
        return Ok(());
    }
    let second = c.reply();
    check!(is_stop(&second), "'?' after the row: got {first:?}, then {second:?}");
    Ok(())
}

/// `monitor CMD` through `qRcmd`: the console output (hex-decoded `O`
/// packets) up to the final `OK`.
fn monitor(c: &mut Raw, cmd: &str) -> Result<String, String> {
    c.send_packet(format!("qRcmd,{}", hex(cmd.as_bytes())).as_bytes());
    let mut text = String::new();
    loop {
        let got = c.reply();
        if got == "OK" {
            return Ok(text);
        }
        let bytes = got
            .strip_prefix('O')
            .and_then(|h| raw::unhex(h.as_bytes()))
            .ok_or(format!("monitor {cmd}: got {got:?}"))?;
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
}

/// `monitor unsafe-writes on`, checked.
fn unsafe_writes_on(c: &mut Raw) -> Row {
    let text = monitor(c, "unsafe-writes on")?;
    check!(
        text == "unsafe-writes on: writes to the stub, the IDT and the page tables are allowed until the session ends\n",
        "monitor unsafe-writes on: {text:?}"
    );
    Ok(())
}

/// The session is still there and answers: `?` gives a stop reply.
fn still_stopped(c: &mut Raw) -> Row {
    let got = c.request(b"?");
    check!(is_stop(&got), "'?' after the row: want a stop reply, got {got:?}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Group 1: junk on the debugger port, framing, connections.

#[test]
fn rows_03_04_05_06_07_08_39_45_01_junk_framing_connections() {
    let mut rig = Rig::new();
    rig.row(3, |r| {
        let mut c = r.session();
        let mut body = b"qRcmd,".to_vec();
        body.extend(std::iter::repeat_n(b'6', 20000 - body.len()));
        c.send_packet(&body);
        let res = stop_reply_after_one(&mut c);
        c.close();
        res
    });
    rig.row(4, |r| {
        let mut c = r.connect();
        let mut junk = vec![b'$'];
        junk.extend(std::iter::repeat_n(b'a', 2 << 20));
        // The bridge may drop the client before it has read it all.
        let _ = c.try_send(&junk);
        c.close();
        Ok(())
    });
    rig.row(5, |r| {
        let mut c = r.session();
        c.send(b"$?#00");
        let got = c.next_within(raw::REPLY);
        let res = if got == Some(Reply::Nak) {
            still_stopped(&mut c)
        } else {
            Err(format!("bad checksum: want '-', got {got:?}"))
        };
        c.close();
        res
    });
    rig.row(6, |r| {
        let mut c = r.session();
        c.send(b"$m100000,10$?#3f");
        // Either the second `$` restarts the packet and `?` is answered, or
        // the whole is one packet with a wrong checksum and gets `-`.
        let got = loop {
            match c.next_within(raw::REPLY) {
                Some(Reply::Ack) => continue,
                other => break other,
            }
        };
        let res = match got {
            Some(Reply::Nak) => still_stopped(&mut c),
            Some(Reply::Packet(p)) if is_stop(&String::from_utf8_lossy(&p)) => {
                c.send(b"+");
                still_stopped(&mut c)
            }
            other => Err(format!("'$m100000,10$?#3f': want a stop reply or '-', got {other:?}")),
        };
        c.close();
        res
    });
    rig.row(7, |r| {
        let mut c = r.connect();
        let _ = c.try_send(&vec![b'$'; 100 * 1024]);
        c.close();
        Ok(())
    });
    rig.row(8, |r| {
        let mut c = r.session();
        c.send(b"$m100000,1");
        c.close();
        Ok(())
    });
    rig.row(39, |r| {
        let mut first = r.session();
        let mut second = r.connect();
        let _ = second.try_send(&packet(b"?"));
        // The second client gets nothing of the first one's session.
        let res = still_stopped(&mut first);
        let stray = second.next_within(Duration::from_millis(500));
        second.close();
        first.close();
        res?;
        check!(
            !matches!(stray, Some(Reply::Packet(_))),
            "the second client got a packet: {stray:?}"
        );
        Ok(())
    });
    rig.row(45, |r| {
        let start = Instant::now();
        for _ in 0..200 {
            r.connect().close();
        }
        println!("200 connect/disconnect cycles in {:?}", start.elapsed());
        Ok(())
    });
    // Random bytes hold 0x03s: last, as a lone 0x03 stopped the foundation.
    rig.row(1, |r| {
        let mut c = r.connect();
        c.send(&raw::random_bytes(1, 1024));
        c.close();
        Ok(())
    });
    rig.finish();
}

#[test]
fn row_02_random_mib_then_next_gdb() {
    let mut rig = Rig::new();
    rig.row(2, |r| {
        let mut c = r.connect();
        let _ = c.try_send(&raw::random_bytes(2, 1 << 20));
        c.close();
        let out = gdb_breaks_at_tick(&r.image, &r.bridge.addr);
        check!(!out.contains("Remote replied unexpectedly"), "{out}");
        Ok(())
    });
    rig.finish();
}

// ---------------------------------------------------------------------------
// Group 2: memory and breakpoints.

#[test]
fn rows_10_11_12_13_14_15_17_18_20_21_22_23_25_memory_and_breakpoints() {
    let mut rig = Rig::new();
    rig.row(10, |r| {
        let mut c = r.session();
        let res = expect_error(&mut c, b"m7f0000001000,10");
        c.close();
        res
    });
    rig.row(11, |r| {
        let mut c = r.session();
        let res = expect_error(&mut c, b"m8000000000000000,10");
        c.close();
        res
    });
    rig.row(12, |r| {
        let mut c = r.session();
        let res = expect_error(&mut c, b"mffffffffffffff00,200");
        c.close();
        res
    });
    rig.row(13, |r| {
        let mut c = r.session();
        let mut res = Ok(());
        for body in
            [&b"m10000000000000000,10"[..], b"m100000,10000000000000000", b"m-1", b"mzz", b"m,"]
        {
            if let Err(e) = expect(&mut c, body, "E16") {
                res = res.and(Err(e));
            }
        }
        let res = res.and_then(|()| still_stopped(&mut c));
        c.close();
        res
    });
    rig.row(14, |r| {
        let mut c = r.session();
        let res = expect_error(&mut c, b"M7f0000001000,4:01020304");
        c.close();
        res
    });
    rig.row(15, |r| {
        let mut c = r.session();
        let res = expect_error(&mut c, b"M0,4:01020304");
        c.close();
        res
    });
    rig.row(17, |r| {
        // The stub's packet buffers (`Buffers`: the receive buffer first,
        // which holds the packet being handled): protected, `E0d`.
        let buf = symbols(&r.image)
            .into_iter()
            .find(|(n, _)| {
                (n.contains("ukdb_stub") && n.contains("BUFFERS"))
                    || n.to_lowercase().contains("packet_buf")
            })
            .expect("no packet buffer symbol")
            .1;
        let mut c = r.session();
        let res = expect(&mut c, format!("M{buf:x},8:0102030405060708").as_bytes(), "E0d")
            .and_then(|()| still_stopped(&mut c));
        c.close();
        res
    });
    rig.row(18, |r| {
        // The session's state, zeroed: refused, so the session goes on.
        let session = sym(&r.image, &["SESSION"]);
        let mut c = r.session();
        let res = (|| {
            let before = read_mem(&mut c, session, 64)?;
            expect(&mut c, format!("M{session:x},40:{}", "00".repeat(64)).as_bytes(), "E0d")?;
            expect(&mut c, format!("X{session:x},1:a").as_bytes(), "E0d")?;
            check!(read_mem(&mut c, session, 64)? == before, "SESSION changed");
            // With the guard lifted: written (the same bytes), answered.
            unsafe_writes_on(&mut c)?;
            expect(&mut c, format!("M{session:x},40:{}", hex(&before)).as_bytes(), "OK")?;
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(20, |r| {
        let ticks = r.ticks;
        let mut c = r.session();
        let res = (|| {
            let before = read_mem(&mut c, ticks, 8)?;
            // Length field 2, eight data bytes.
            expect(&mut c, format!("X{ticks:x},2:abcdefgh").as_bytes(), "E16")?;
            // Length field 8, two data bytes.
            expect(&mut c, format!("X{ticks:x},8:ab").as_bytes(), "E16")?;
            // An escape with nothing after it.
            expect(&mut c, format!("X{ticks:x},1:}}").as_bytes(), "E16")?;
            let after = read_mem(&mut c, ticks, 8)?;
            check!(before == after, "X changed memory: {before:02x?} -> {after:02x?}");
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(21, |r| {
        let mut c = r.session();
        let res = expect_error(&mut c, b"Z0,7f0000001000,1").and_then(|()| still_stopped(&mut c));
        c.close();
        res
    });
    rig.row(22, |r| {
        let tick = r.tick;
        let mut c = r.session();
        let mut oks = 0;
        let mut res = Ok(());
        for i in 0..1000u64 {
            let got = c.request(format!("Z0,{:x},1", tick + i).as_bytes());
            if got == "OK" {
                oks += 1;
            } else if !is_error(&got) {
                res = Err(format!("Z0 #{i}: want OK or an error, got {got:?}"));
                break;
            }
        }
        println!("row 22: {oks} of 1000 Z0 accepted");
        c.close();
        res?;
        check!(oks > 0, "no Z0 accepted");
        Ok(())
    });
    rig.row(23, |r| {
        let (tick, ticks) = (r.tick, r.ticks);
        let mut c = r.session();
        let res = (|| {
            for i in 0..4 {
                expect(&mut c, format!("Z1,{:x},1", tick + i).as_bytes(), "OK")?;
            }
            expect_error(&mut c, format!("Z1,{:x},1", tick + 4).as_bytes())?;
            expect_error(&mut c, format!("Z2,{ticks:x},8").as_bytes())?;
            for i in 0..4 {
                expect(&mut c, format!("z1,{:x},1", tick + i).as_bytes(), "OK")?;
            }
            expect_error(&mut c, format!("Z2,{ticks:x},3").as_bytes())?;
            expect_error(&mut c, format!("Z2,{ticks:x},10").as_bytes())?;
            expect_error(&mut c, format!("Z3,{:x},8", ticks + 1).as_bytes())?;
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(25, |r| {
        let mut c = r.session();
        let res = (|| {
            // An error, or the empty reply (no such register).
            for body in [&b"p999"[..], b"pffffffffffffffffff", b"P999=0000000000000000", b"Pzz=00"]
            {
                let got = c.request(body);
                check!(
                    is_error(&got) || got.is_empty(),
                    "{}: want an error or empty, got {got:?}",
                    String::from_utf8_lossy(body)
                );
            }
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.finish();
}

#[test]
fn row_09_m_huge_length_is_a_short_read() {
    let mut rig = Rig::new();
    rig.row(9, |r| {
        let tick = r.tick;
        let mut c = r.session();
        let res = (|| {
            for len in [0xffff_ffffu64, 0x10000, 0x2001] {
                let got = c.request(format!("m{tick:x},{len:x}").as_bytes());
                check!(
                    got.len() == 2 * 8192 && raw::unhex(got.as_bytes()).is_some(),
                    "m{tick:x},{len:x}: want 8192 bytes (16384 hex digits), got {} characters: {}...",
                    got.len(),
                    &got[..got.len().min(40)]
                );
            }
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    // A huge read in flight when the debugger goes: the unikernel runs on
    // (the row's check after this waits for new console lines).
    rig.row(9, |r| {
        let mut c = r.session();
        c.send_packet(format!("m{:x},ffffffff", r.tick).as_bytes());
        c.close();
        Ok(())
    });
    rig.finish();
}

#[test]
fn row_24_g_short_long_nonhex() {
    let mut rig = Rig::new();
    rig.row(24, |r| {
        let mut c = r.session();
        let res = (|| {
            let regs = c.request(b"g");
            check!(raw::unhex(regs.as_bytes()).is_some(), "g: {regs:?}");
            let odd = format!("G{regs}0");
            let short = format!("G{}", &regs[..regs.len() / 2]);
            let long = format!("G{regs}00");
            let nonhex = format!("G{}zz{}", &regs[..16], &regs[18..]);
            for (what, body) in
                [("odd", odd), ("short", short), ("long", long), ("non-hex", nonhex)]
            {
                let got = c.request(body.as_bytes());
                check!(got == "E16", "{what} G: want E16, got {got:?}");
                let now = c.request(b"g");
                check!(now == regs, "{what} G changed the registers");
            }
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.finish();
}

// ---------------------------------------------------------------------------
// Group 3: protocol abuse.

#[test]
fn rows_26_27_29_30_31_32_33_34_35_36_37_38_40_42_47_48_49_50_protocol() {
    let mut rig = Rig::new();
    rig.row(26, |r| {
        let mut c = r.session();
        // An error, or (one thread) a step of the only thread.
        let got = c.request(b"vCont;s:99");
        let res = if is_error(&got) || is_stop(&got) {
            still_stopped(&mut c)
        } else {
            Err(format!("vCont;s:99: {got:?}"))
        };
        c.close();
        res
    });
    rig.row(27, |r| {
        let mut c = r.session();
        let got = c.request(b"vCont;x");
        let res = if got == "E16" {
            still_stopped(&mut c)
        } else {
            Err(format!("vCont;x: want E16, got {got:?}"))
        };
        c.close();
        res
    });
    rig.row(29, |r| {
        let mut c = r.session();
        let res = (|| {
            let got = c.request(b"qXfer:features:read:target.xml:ffffffff,1000");
            check!(got == "l" || is_error(&got), "offset 0xffffffff: {got:?}");
            let got = c.request(b"qXfer:features:read:target.xml:0,ffffffff");
            check!(
                (got.starts_with('l') || got.starts_with('m')) && got.len() <= 0x4000,
                "huge length: {} characters",
                got.len()
            );
            let got = c.request(b"qXfer:features:read:nope.xml:0,100");
            check!(is_error(&got) || got.is_empty(), "bad annex: {got:?}");
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(30, |r| {
        let mut c = r.session();
        let res = (|| {
            // Replies to qRcmd may come with `O` output packets first.
            let final_reply = |c: &mut Raw, body: &[u8]| {
                c.send_packet(body);
                loop {
                    let got = c.reply();
                    if !(got.starts_with('O') && got != "OK") {
                        return got;
                    }
                }
            };
            let got = final_reply(&mut c, b"qRcmd,zz");
            check!(is_error(&got) || got == "OK" || got.is_empty(), "qRcmd,zz: {got:?}");
            let huge = format!("qRcmd,{}", "61".repeat(5000));
            let got = final_reply(&mut c, huge.as_bytes());
            check!(is_error(&got) || got == "OK" || got.is_empty(), "huge qRcmd: {got:?}");
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(31, |r| {
        let mut c = r.connect();
        let mut body = b"qSupported:multiprocess+".to_vec();
        for i in 0..1000 {
            body.extend_from_slice(format!(";xfeat{i:04}+").as_bytes());
        }
        let got = c.request(&body);
        let res = if got.contains("PacketSize=") {
            still_stopped(&mut c)
        } else {
            Err(format!("qSupported with 10 KiB of features: {got:?}"))
        };
        c.close();
        res
    });
    rig.row(32, |r| {
        let mut c = r.session();
        let mut res = Ok(());
        // A count below 29 (`\x1c`), `#`/`$` as counts, `*` at the end: an
        // `m` with a broken run is malformed.
        for body in [&b"m1*\x1c0000,1"[..], b"m1*\x7f0000,1", b"m100000,1*"] {
            res = res.and(expect(&mut c, body, "E16"));
        }
        // `*` first has no character to repeat: no command starts with it,
        // so it is an unknown packet, which gets the empty reply.
        res = res.and(expect(&mut c, b"*\x22m100000,1", ""));
        let res = res.and_then(|()| still_stopped(&mut c));
        c.close();
        res
    });
    rig.row(33, |r| {
        let mut c = r.session();
        let res = (|| {
            c.send_packet(b"c");
            r.bridge.wait_more_lines(2);
            c.send(&[0x03; 200]);
            let got = c.reply();
            check!(is_stop(&got), "0x03 storm: want a stop reply, got {got:?}");
            // Only one stop: the next reply is the answer to `m`.
            let got = c.request(format!("m{:x},1", r.tick).as_bytes());
            check!(got.len() == 2, "after the storm, m: {got:?}");
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(34, |r| {
        let mut c = r.session();
        let res = (|| {
            let stop = c.request(b"?");
            check!(is_stop(&stop), "?: {stop:?}");
            c.send(&[b'-'; 50]);
            c.send_packet(b"qAttached");
            let mut resent = 0;
            loop {
                let got = c.reply();
                if got == stop {
                    resent += 1;
                    continue;
                }
                check!(got == "1" || got.is_empty(), "qAttached after the NAK storm: {got:?}");
                break;
            }
            println!("row 34: {resent} retransmissions for 50 NAKs");
            check!((1..=50).contains(&resent), "{resent} retransmissions for 50 NAKs");
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    for (n, ctl) in [(35, b'X'), (36, b'R'), (37, b'F')] {
        rig.row(n, |r| {
            let mut c = r.session();
            c.send(&[0x10, ctl]);
            let res = still_stopped(&mut c);
            c.close();
            res
        });
    }
    rig.row(38, |r| {
        let tick = r.tick;
        let mut c = r.session();
        let res = (|| {
            // Inside packets: data (malformed here, so E16).
            for ctl in [b'X', b'R', b'F'] {
                let mut body = format!("m{tick:x},").into_bytes();
                body.extend_from_slice(&[0x10, ctl]);
                expect(&mut c, &body, "E16")?;
            }
            // Split across packets: DLE at the end of one write, the letter
            // at the start of the next.
            for ctl in [b'X', b'R', b'F'] {
                let mut first = packet(b"?");
                first.push(0x10);
                c.send(&first);
                let got = c.reply();
                check!(is_stop(&got), "?: {got:?}");
                let mut second = vec![ctl];
                second.extend_from_slice(&packet(b"?"));
                c.send(&second);
                let got = c.reply();
                check!(is_stop(&got), "? after a split DLE {}: {got:?}", ctl as char);
            }
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(40, |r| {
        let mut c = r.session();
        for _ in 0..60 {
            c.send_packet(format!("m{:x},2000", r.tick).as_bytes());
        }
        c.send_packet(b"c");
        // Never reads; goes away after the unikernel ran on.
        r.bridge.wait_more_lines(2);
        c.close();
        Ok(())
    });
    rig.row(42, |r| {
        let tick = r.tick;
        let mut c = r.session();
        let res = (|| {
            expect(&mut c, format!("Z0,{tick:x},1").as_bytes(), "OK")?;
            c.send_packet(b"c");
            let got = c.reply();
            check!(got.starts_with("T05"), "c to the breakpoint: {got:?}");
            expect(&mut c, b"m-1", "E16")?;
            c.send_packet(b"c");
            let got = c.reply();
            check!(got.starts_with("T05"), "the breakpoint after a malformed packet: {got:?}");
            expect(&mut c, format!("z0,{tick:x},1").as_bytes(), "OK")?;
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(47, |r| {
        let mut c = r.session();
        c.send_packet(b"k");
        let _ = c.next_within(Duration::from_millis(1));
        c.close();
        Ok(())
    });
    rig.row(48, |r| {
        let mut c = r.session();
        let res = (|| {
            expect(&mut c, b"QStartNoAckMode", "OK")?;
            c.ack = false;
            // Dropped silently in no-ack mode; junk between packets too.
            c.send(b"$?#00");
            c.send(b"zzz\xff\x00");
            let got = c.request(format!("m{:x},1", r.tick).as_bytes());
            check!(got.len() == 2, "after a bad checksum in no-ack mode: {got:?}");
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(49, |r| {
        let mut c = r.session();
        let res = (|| {
            expect(&mut c, b"Hgzz", "E16")?;
            expect(&mut c, b"Hcp1.zz", "E16")?;
            expect_error(&mut c, b"T99")?;
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.row(50, |r| {
        let mut c = r.session();
        let res = (|| {
            expect(&mut c, b"m\x00\xff,10", "E16")?;
            expect(&mut c, b"\x00\xff\x80\x10", "")?;
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.finish();
}

#[test]
fn row_28_vcont_garbage() {
    let mut rig = Rig::new();
    rig.row(28, |r| {
        let mut c = r.session();
        let res = (|| {
            let long = format!("vCont{}", ";c:1".repeat(10 * 1024 / 4));
            // (`vCont;c:-1` is valid: -1 means all threads.)
            for body in ["vCont;;;", "vCont;c:-2", "vCont;s:p1.-2", "vContzz", long.as_str()] {
                let got = c.request(body.as_bytes());
                check!(got == "E16", "{}: want E16, got {got:?}", &body[..body.len().min(20)]);
            }
            still_stopped(&mut c)
        })();
        c.close();
        res
    });
    rig.finish();
}

// ---------------------------------------------------------------------------
// Group 4: the stub's own code and the IDT (destructive, last).

#[test]
fn rows_16_19_53_stub_code_and_idt() {
    let mut rig = Rig::new();
    rig.row(16, |r| {
        // The stub's code that the unikernel runs all the time: its console
        // path (`poll` is inlined into the idle loop).
        let syms = symbols(&r.image);
        let poll = syms
            .iter()
            .find(|(n, _)| n.contains("9ukdb_stub3imp3api4poll17h"))
            .or_else(|| {
                syms.iter().find(|(n, _)| n.contains("9ukdb_stub3imp4line13console_write17h"))
            })
            .expect("no ukdb_stub poll or console_write symbol")
            .1;
        let mut c = r.session();
        let res = (|| {
            let code = read_mem(&mut c, poll, 16)?;
            // Protected: refused, nothing written.
            expect(&mut c, format!("M{poll:x},10:{}", hex(&code)).as_bytes(), "E0d")?;
            expect(&mut c, format!("M{poll:x},1:cc").as_bytes(), "E0d")?;
            check!(read_mem(&mut c, poll, 16)? == code, "poll changed");
            // A software breakpoint is not a write the debugger makes: the
            // stub arms it only while the unikernel runs, so it takes one in
            // its own code (test gdb::stopping_and_stepping_inside_a_console_write).
            expect(&mut c, format!("Z0,{poll:x},1").as_bytes(), "OK")?;
            expect(&mut c, format!("z0,{poll:x},1").as_bytes(), "OK")?;
            check!(read_mem(&mut c, poll, 16)? == code, "poll changed");
            // Off by default in each new session.
            let text = monitor(&mut c, "unsafe-writes")?;
            check!(
                text == "unsafe-writes off: writes to the stub, the IDT and the page tables are refused\n",
                "monitor unsafe-writes: {text:?}"
            );
            // Lifted: the old behaviour. An int3 in the stub's own poll:
            // whatever the stub does with it, the original byte goes back
            // and the unikernel runs on.
            unsafe_writes_on(&mut c)?;
            expect(&mut c, format!("M{poll:x},10:{}", hex(&code)).as_bytes(), "OK")?;
            check!(read_mem(&mut c, poll, 16)? == code, "poll changed");
            expect(&mut c, format!("M{poll:x},1:cc").as_bytes(), "OK")?;
            c.send_packet(b"c");
            let stop = c.packet_within(Duration::from_secs(5)).map(|r| r.text());
            if stop.is_none() {
                c.send(&[0x03]);
                let _ = c.reply();
            }
            expect(&mut c, format!("M{poll:x},1:{:02x}", code[0]).as_bytes(), "OK")?;
            // Back to the start of the instruction if it stopped after it.
            let rip = c.request(b"p10");
            if let Some(b) = raw::unhex(rip.as_bytes()) {
                let pc = u64::from_le_bytes(b[..8].try_into().unwrap());
                if pc == poll + 1 {
                    let fixed = hex(&poll.to_le_bytes());
                    expect(&mut c, format!("P10={fixed}").as_bytes(), "OK")?;
                }
            }
            check!(read_mem(&mut c, poll, 16)? == code, "poll not restored");
            Ok(())
        })();
        c.close();
        res
    });
    rig.row(19, |r| {
        let idt = sym(&r.image, &["3idt3IDT"]);
        let gate = idt + 3 * 16;
        // The example's page tables (identity-mapped statics).
        let pml4 = sym(&r.image, &["6ukdemo6paging4PML4"]);
        let pd = sym(&r.image, &["6ukdemo6paging2PD17h"]);
        let mut c = r.session();
        let res = (|| {
            let bytes = read_mem(&mut c, gate, 16)?;
            // Refused, whole: not even the bytes before the IDT.
            expect(&mut c, format!("M{gate:x},10:{}", "00".repeat(16)).as_bytes(), "E0d")?;
            expect(&mut c, format!("M{:x},20:{}", idt - 16, "00".repeat(32)).as_bytes(), "E0d")?;
            check!(read_mem(&mut c, gate, 16)? == bytes, "the gate changed");
            // Also through the example's second mapping of physical memory
            // (identity-mapped image: physical = virtual).
            const ALIAS: u64 = 0xffff_8000_0000_0000;
            for table in [pml4, pd, ALIAS + pml4, ALIAS + gate] {
                let entry = read_mem(&mut c, table, 8)?;
                expect(&mut c, format!("M{table:x},8:{}", "00".repeat(8)).as_bytes(), "E0d")?;
                check!(read_mem(&mut c, table, 8)? == entry, "a protected byte changed");
            }
            // Lifted: the old behaviour (zeroed, run, interrupted, restored).
            unsafe_writes_on(&mut c)?;
            expect(&mut c, format!("M{gate:x},10:{}", "00".repeat(16)).as_bytes(), "OK")?;
            c.send_packet(b"c");
            r.bridge.wait_more_lines(10);
            c.send(&[0x03]);
            let got = c.reply();
            check!(is_stop(&got), "interrupt: {got:?}");
            expect(&mut c, format!("M{gate:x},10:{}", hex(&bytes)).as_bytes(), "OK")?;
            Ok(())
        })();
        c.close();
        res
    });
    rig.row(53, |r| {
        let idt = sym(&r.image, &["3idt3IDT"]);
        let gate = idt + 3 * 16;
        let mut c = r.session();
        // A new session: the guard is back.
        let res = expect(&mut c, format!("M{gate:x},10:{}", "00".repeat(16)).as_bytes(), "E0d")
            .and_then(|()| unsafe_writes_on(&mut c))
            .and_then(|()| {
                expect(&mut c, format!("M{gate:x},10:{}", "00".repeat(16)).as_bytes(), "OK")
            });
        c.close();
        res
    });
    // The group's fresh gdb plants its breakpoint with the #BP gate zeroed.
    rig.finish();
}

// ---------------------------------------------------------------------------
// The rows that did not hold on the foundation, one VM each.

#[test]
fn row_41_lone_ctrl_c_with_no_session_then_disconnect() {
    let mut rig = Rig::new();
    rig.row(41, |r| {
        let mut c = r.connect();
        c.send(&[0x03]);
        c.close();
        r.bridge.assert_runs_gap_free(10, "after a lone 0x03");
        let out = gdb_breaks_at_tick(&r.image, &r.bridge.addr);
        check!(!out.contains("SIGINT"), "the next gdb saw a stale SIGINT:\n{out}");
        Ok(())
    });
    rig.finish();
}

#[test]
fn row_43_queued_m_requests_then_disconnect_next_gdb() {
    let mut rig = Rig::new();
    rig.row(43, |r| {
        let mut burst = Vec::new();
        for i in 0..3000u64 {
            burst.extend_from_slice(&packet(format!("m{:x},40", r.tick + i % 64).as_bytes()));
        }
        // The next gdb at once, then (as found) a second later.
        for wait_lines in [0, 50] {
            let mut c = r.connect();
            c.send(&burst);
            c.close();
            if wait_lines > 0 {
                r.bridge.wait_more_lines(wait_lines);
            }
            let out = gdb_breaks_at_tick(&r.image, &r.bridge.addr);
            check!(!out.contains("Remote replied unexpectedly"), "{out}");
        }
        Ok(())
    });
    rig.finish();
}

#[test]
fn row_46_full_speed_client_for_10_s_bridge_rss_bounded() {
    let mut rig = Rig::new();
    let pid = rig.bridge.proc.0.id();
    rig.row(46, |r| {
        let rss = || -> u64 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
        };
        let before = rss();
        let addr = r.bridge.addr.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut c = Raw::connect(&addr);
                c.set_write_timeout(Some(Duration::from_millis(200)));
                let mut chunk = Vec::new();
                while chunk.len() < 64 * 1024 {
                    chunk.extend_from_slice(&packet(b"m100000,40"));
                }
                let end = Instant::now() + Duration::from_secs(10);
                let mut sent = 0usize;
                while Instant::now() < end {
                    if c.try_send(&chunk) {
                        sent += chunk.len();
                    }
                }
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                c.close();
                sent
            })
        };
        let mut peak = before;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            peak = peak.max(rss());
            std::thread::sleep(Duration::from_millis(50));
        }
        let sent = writer.join().unwrap();
        println!("row 46: sent {sent} bytes; bridge RSS {before} -> peak {peak}");
        check!(peak < 200 << 20, "bridge RSS reached {} MB", peak >> 20);
        Ok(())
    });
    rig.finish();
}

// ---------------------------------------------------------------------------
// RAW serial rows: no bridge while the row runs; then a bridge attaches,
// syncs, and a gdb breaks.

/// Boots a VM and waits for app lines on its raw serial line.
fn raw_vm() -> Vm {
    let vm = Vm::boot("q35", &artifacts().image, "ukdemo.rate=50");
    let console = Arc::new(Output::default());
    let s = connect_unix(&vm.sock);
    console.spawn_reader(s.try_clone().unwrap());
    console.wait("app lines", |t| app_lines(t).len() >= 2);
    s.shutdown(std::net::Shutdown::Both).unwrap();
    console.wait_closed("the raw console");
    vm
}

fn bridge_syncs_and_gdb_breaks(vm: &Vm) {
    let mut bridge = Bridge::start(vm);
    bridge.assert_up("after the raw row");
    gdb_breaks_at_tick(&artifacts().image, &bridge.addr);
    bridge.assert_runs_gap_free(3, "after the raw row");
}

#[test]
fn row_44_raw_partial_packet_then_bridge() {
    let vm = raw_vm();
    let mut c = Raw::connect(&vm.sock.display().to_string());
    c.send(b"$m100000");
    c.close_after_delivery();
    bridge_syncs_and_gdb_breaks(&vm);
}

#[test]
fn row_51_raw_random_bytes_while_printing() {
    let vm = raw_vm();
    // The unikernel prints while the bytes arrive; each chunk waits for
    // console output in between.
    let mut c = Raw::connect(&vm.sock.display().to_string());
    for i in 0..8 {
        c.send(&raw::random_bytes(51 + i, 512));
    }
    // Random bytes end anywhere, here inside a packet: a `$` and more
    // random bytes, no `#`.
    // Printable noise, so that nothing in it ends the packet some other way.
    let mut tail = vec![b'$'];
    tail.extend(
        raw::random_bytes(59, 64)
            .into_iter()
            .map(|b| 0x20 + b % 0x5f)
            .filter(|b| !b"#$}*".contains(b)),
    );
    c.send(&tail);
    c.close_after_delivery();
    bridge_syncs_and_gdb_breaks(&vm);
}

#[test]
fn row_52_raw_packet_interleaved_with_dle_sequences() {
    let vm = raw_vm();
    let mut c = Raw::connect(&vm.sock.display().to_string());
    let res = (|| -> Row {
        // Framing on, a packet, framing off, a packet split by a DLE F.
        let mut bytes = vec![0x10, b'F'];
        bytes.extend_from_slice(&packet(b"qSupported:multiprocess+"));
        c.send(&bytes);
        let got = c.reply();
        check!(got.contains("PacketSize="), "qSupported: {got:?}");
        let mut bytes = vec![0x10, b'R'];
        bytes.extend_from_slice(&packet(b"?"));
        bytes.extend_from_slice(&[0x10, b'F', 0x10, b'R']);
        c.send(&bytes);
        let got = c.reply();
        check!(is_stop(&got), "?: {got:?}");
        expect(&mut c, b"D", "OK")?;
        Ok(())
    })();
    c.close();
    res.unwrap();
    bridge_syncs_and_gdb_breaks(&vm);
}

// ---------------------------------------------------------------------------
// Protected memory through a stock gdb.

/// gdb cannot write the IDT (`E0d`: "Cannot access memory"); `monitor
/// unsafe-writes` says the guard is on, and `on` lifts it.
#[test]
fn gdb_cannot_write_the_idt() {
    let mut rig = Rig::new();
    let idt = sym(&rig.image, &["3idt3IDT"]);
    let gate = idt + 3 * 16;
    let (image, addr) = (rig.image.clone(), rig.bridge.addr.clone());
    rig.row(19, |_| {
        let set = format!("set {{char}}{gate:#x} = 0");
        let get = format!("x/1bx {gate:#x}");
        let keep = format!("set $orig = *(unsigned char *){gate:#x}");
        let restore = format!("set {{unsigned char}}{gate:#x} = $orig");
        let out = Debugger::gdb(
            &image,
            &addr,
            &[
                "break ukdemo::app::tick",
                "continue",
                "set language c",
                &get,
                &keep,
                &set,
                "monitor unsafe-writes",
                "monitor unsafe-writes on",
                &set,
                &get,
                &restore,
                "monitor unsafe-writes off",
                "delete",
                "detach",
            ],
        )
        .finish();
        let line = line_of("src/app.rs", "write_volatile(t)");
        let expected = format!(
            "{{*}}\n{{*}}\n\
             Breakpoint 1 at {{hex}}: file src/app.rs, line {line}.\n\
             \n\
             Breakpoint 1, ukdemo::app::tick (n={{n}}) at src/app.rs:{line}\n\
             {line}\t    unsafe {{ addr_of_mut!(TICKS).write_volatile(t) }};\n\
             Warning: the current language does not match this frame.\n\
             {gate:#x} <{{*}}>:\t{{hex}}\n\
             Cannot access memory at address {gate:#x}\n\
             unsafe-writes off: writes to the stub, the IDT and the page tables are refused\n\
             unsafe-writes on: writes to the stub, the IDT and the page tables are allowed until the session ends\n\
             {gate:#x} <{{*}}>:\t0x00\n\
             unsafe-writes off: writes to the stub, the IDT and the page tables are refused\n\
             [Inferior 1 (process 1) detached]\n"
        );
        assert_transcript(&out, &expected);
        Ok(())
    });
    rig.finish();
}
