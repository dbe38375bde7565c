//! `ukdb bridge --target xen:DOMAIN`: the domain's console pty resolved with
//! fake Xen tools on the spawned bridge's PATH (the test process's own
//! environment is left alone), then opened like any pty.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Fake `xenstore-read` and `xl` answering from `KEY VALUE` lines.
fn fake_tools(dir: &Path, store: &str) {
    std::fs::write(dir.join("store"), store).unwrap();
    let db = dir.join("store");
    let db = db.display();
    let script = |name: &str, body: String| {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        "xenstore-read",
        format!(
            "v=$(awk -v k=\"$1\" '$1 == k {{ print $2; f = 1 }} END {{ exit !f }}' {db}) \
             || {{ echo \"couldn't read path $1\" >&2; exit 1; }}\necho \"$v\"\n"
        ),
    );
    script(
        "xl",
        format!(
            "d=$(awk -v n=\"$2\" '$2 == n && $1 ~ /\\/name$/ {{ split($1, p, \"/\"); print p[4] }}' {db})\n\
             [ -n \"$d\" ] && {{ echo $d; exit 0; }}\necho \"$2 is an invalid domain identifier\" >&2; exit 1\n"
        ),
    );
}

fn bridge(path: &Path, target: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ukdb"));
    cmd.args(["bridge", "--target", target, "--listen", "127.0.0.1:0", "--connect-timeout", "2"])
        .env("PATH", format!("{}:/usr/bin:/bin", path.display()))
        .stdin(Stdio::null());
    cmd
}

#[test]
fn unknown_domain_and_missing_tools_fail_at_once_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fake_tools(dir.path(), "/local/domain/3/name vm\n");
    let start = Instant::now();
    let out = bridge(dir.path(), "xen:nosuch").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("xen: no domain nosuch"), "{stderr}");
    // Resolution errors are not retried until the connect timeout.
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());

    let out = bridge(dir.path(), "xen:vm").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("xen: domain vm has no console tty in xenstore"), "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let out = bridge(empty.path(), "xen:3").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("xen: needs xenstore-read (Xen tools) on PATH"), "{stderr}");
}

#[test]
fn a_named_domain_is_reached_through_the_pty_xenstore_names() {
    let pty = nix::pty::openpty(None, None).unwrap();
    let tty = nix::unistd::ttyname(&pty.slave).unwrap();
    let dir = tempfile::tempdir().unwrap();
    fake_tools(
        dir.path(),
        &format!("/local/domain/7/name uk\n/local/domain/7/console/tty {}\n", tty.display()),
    );
    // The stub's side: console text waits in the pty before the bridge
    // opens it (the slave stays open here, so nothing is lost) and must
    // reach the bridge's stdout.
    let mut master = std::fs::File::from(pty.master);
    master.write_all(b"hello\n").unwrap();
    let mut child =
        bridge(dir.path(), "xen:uk").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.windows(5).any(|w| w == b"hello") {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let got =
        got.unwrap_or_else(|_| panic!("no console text via xen:uk; bridge {status}: {stderr}"));
    assert!(String::from_utf8_lossy(&got).contains("hello"), "{got:?} {stderr}");
    assert!(stderr.contains(&format!("xen:uk: console is {}", tty.display())), "{stderr}");
    drop(pty.slave);
}
