//! A minimal QMP client: enough to send QEMU a command such as
//! `system_reset` over a `-qmp unix:PATH,server=on,wait=off` socket.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// The QEMU arguments for a QMP server on `path`.
pub fn args(path: &Path) -> [String; 2] {
    ["-qmp".into(), format!("unix:{},server=on,wait=off", path.display())]
}

/// Runs one QMP command (`{"execute": NAME}`) and returns QEMU's answer
/// line; panics unless it is a `return`.
pub fn execute(path: &Path, name: &str) -> String {
    let stream = crate::connect_unix(path);
    stream.set_read_timeout(Some(crate::DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("\"QMP\""), "QMP greeting: {line}");
    let mut answer = |cmd: &str| {
        writer.write_all(format!("{{\"execute\": \"{cmd}\"}}\n").as_bytes()).unwrap();
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "QMP closed");
            // Events come unasked; the answer has `return` or `error`.
            if line.contains("\"return\"") || line.contains("\"error\"") {
                assert!(line.contains("\"return\""), "QMP {cmd}: {line}");
                return line;
            }
        }
    };
    answer("qmp_capabilities");
    answer(name)
}
