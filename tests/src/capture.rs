//! What a background thread reads from a stream (a process's output, a
//! socket), with waits for a condition under a deadline. The one capture
//! primitive of the end-to-end tests and the bridge's tests.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::DEADLINE;

/// Shows bytes readably in assertion messages.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Everything read so far from a stream by a background thread, with a
/// condition variable to wait on. Clones share the same capture.
#[derive(Clone, Default)]
pub struct Capture {
    inner: Arc<(Mutex<Captured>, Condvar)>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    closed: bool,
}

impl Capture {
    /// Starts a thread that reads `reader` to its end.
    pub fn spawn(reader: impl Read + Send + 'static) -> Self {
        Self::spawn_with(reader, |_| {})
    }

    /// Like [`Capture::spawn`], calling `hook` with each chunk read before
    /// it is captured.
    pub fn spawn_with(
        reader: impl Read + Send + 'static,
        hook: impl FnMut(&[u8]) + Send + 'static,
    ) -> Self {
        let capture = Capture::default();
        capture.read_from(reader, hook);
        capture
    }

    /// Starts a thread that appends what `reader` yields to this capture,
    /// until it ends (then the capture is closed).
    pub fn read_from(
        &self,
        mut reader: impl Read + Send + 'static,
        mut hook: impl FnMut(&[u8]) + Send + 'static,
    ) {
        let inner = Arc::clone(&self.inner);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = reader.read(&mut buf).unwrap_or(0);
                hook(&buf[..n]);
                let (lock, cvar) = &*inner;
                let mut captured = lock.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    captured.closed = true;
                    cvar.notify_all();
                    return;
                }
                captured.bytes.extend_from_slice(&buf[..n]);
                cvar.notify_all();
            }
        });
    }

    /// Everything so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner()).bytes.clone()
    }

    /// Everything so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until `done(bytes, closed)` holds; panics with `what` and the
    /// bytes so far after [`DEADLINE`].
    pub fn wait(&self, what: &str, done: impl Fn(&[u8], bool) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + DEADLINE;
        let (lock, cvar) = &*self.inner;
        let mut captured = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if done(&captured.bytes, captured.closed) {
                return captured.bytes.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let (bytes, closed) = (captured.bytes.clone(), captured.closed);
                drop(captured); // don't poison the lock for the reader thread
                panic!(
                    "timed out waiting for {what}; got so far (closed: {closed}):\n{}",
                    show(&bytes)
                );
            }
            captured =
                cvar.wait_timeout(captured, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Waits for a whole line containing `needle` and returns it.
    pub fn wait_line(&self, needle: &str) -> String {
        let find = |bytes: &[u8]| -> Option<String> {
            String::from_utf8_lossy(bytes)
                .split_inclusive('\n')
                .filter(|line| line.ends_with('\n'))
                .find(|line| line.contains(needle))
                .map(|line| line.trim_end().to_owned())
        };
        let bytes = self.wait(&format!("a line with {needle:?}"), |b, _| find(b).is_some());
        find(&bytes).unwrap()
    }

    /// Waits until the captured bytes are exactly `expect`.
    pub fn wait_exact(&self, what: &str, expect: &[u8]) {
        let got = self.wait(what, |b, closed| b.len() >= expect.len() || closed);
        assert_eq!(show(&got), show(expect), "{what}");
    }

    /// Waits until the stream has ended.
    pub fn wait_closed(&self, what: &str) -> Vec<u8> {
        self.wait(what, |_, closed| closed)
    }
}

/// The whole lines of `bytes` (all of it once the stream has closed), as
/// text.
pub(crate) fn whole_lines(bytes: &[u8], closed: bool) -> std::borrow::Cow<'_, str> {
    let end = if closed {
        bytes.len()
    } else {
        bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
    };
    String::from_utf8_lossy(&bytes[..end])
}
