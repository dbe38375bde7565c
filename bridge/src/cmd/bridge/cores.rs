//! `ukdb bridge --core-dir`: what happens to the crash streams the
//! demultiplexer finds on the line.
//!
//! With a directory, the raw stream is kept in a temporary file there while
//! it arrives; a complete stream becomes `DIR/<name>-<build-id>-<time>.core`
//! (written to a temporary file in DIR, then renamed), a broken one keeps
//! its raw bytes as `DIR/<name>-<time>.core.partial`. Without a directory a
//! stream is only reported.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;
use ukdb_bridge::core::elf::{self, hex};
use ukdb_bridge::core::stream::{Progress, StreamError};
use ukdb_bridge::core::{Image, Snapshot};

/// How often a progress line is printed while a stream arrives.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What the bridge does with crash streams.
#[derive(Debug, Clone, Default)]
pub struct CoreOptions {
    /// Where cores are written (`None`: streams are only reported).
    pub dir: Option<PathBuf>,
    /// The image, for the `gdb IMAGE CORE` line and the build-id check.
    pub image: Option<PathBuf>,
    /// The first part of the file names.
    pub name: String,
}

impl CoreOptions {
    /// The options of `--core-dir`, `--image` and `--name`: the name
    /// defaults to the image's file name, or "unikernel".
    pub fn new(dir: Option<PathBuf>, image: Option<PathBuf>, name: Option<String>) -> Self {
        let name = name
            .or_else(|| {
                image.as_ref().and_then(|i| i.file_name()).map(|n| n.to_string_lossy().into())
            })
            .unwrap_or_else(|| "unikernel".into());
        CoreOptions { dir, image, name }
    }
}

/// The crash streams of one bridge.
pub struct Cores {
    opts: CoreOptions,
    /// The image's build-id, read once.
    image_build_id: Option<Vec<u8>>,
    /// What the cores say of the image, read once.
    image_ref: Option<Image>,
    /// The stream arriving: its raw bytes so far, when kept.
    raw: Option<(BufWriter<File>, tempfile::TempPath)>,
    started: Instant,
    last_progress: Instant,
}

impl Cores {
    /// Checks the directory (created when missing) and reads the image's
    /// build-id.
    pub fn new(opts: CoreOptions) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if let Some(dir) = &opts.dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the core directory {}", dir.display()))?;
        }
        let (image_build_id, image_ref) = match &opts.image {
            Some(image) => {
                let data = std::fs::read(image)
                    .with_context(|| format!("cannot read the image {}", image.display()))?;
                let id = elf::image_build_id(&data);
                if id.is_none() {
                    warn!("{} has no GNU build-id: cores cannot be matched to it", image.display());
                }
                (id, Image::of(image, &data))
            }
            None => (None, None),
        };
        let now = Instant::now();
        Ok(Cores { opts, image_build_id, image_ref, raw: None, started: now, last_progress: now })
    }

    /// A stream starts.
    pub fn start(&mut self) {
        self.started = Instant::now();
        self.last_progress = self.started;
        eprintln!("ukdb: a crash core is arriving");
        self.raw = None;
        let Some(dir) = &self.opts.dir else { return };
        match tempfile::Builder::new().prefix(".ukdb-stream-").tempfile_in(dir) {
            Ok(file) => {
                let (file, path) = file.into_parts();
                self.raw = Some((BufWriter::new(file), path));
            }
            Err(err) => warn!("cannot keep the crash stream in {}: {err}", dir.display()),
        }
    }

    /// Raw bytes of the stream.
    pub fn bytes(&mut self, bytes: &[u8]) {
        if let Some((file, _)) = &mut self.raw {
            if let Err(err) = file.write_all(bytes) {
                warn!("cannot keep the crash stream: {err}");
                self.raw = None;
            }
        }
    }

    /// The stream's progress.
    pub fn progress(&mut self, p: Progress) {
        if self.last_progress.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last_progress = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "ukdb: crash core: {} pages of at most {} ({:.1} MiB on the line, {:.0} s)",
            p.pages,
            p.mapped_pages,
            p.bytes as f64 / (1 << 20) as f64,
            secs
        );
    }

    /// The stream is complete: the core is written (or, without a
    /// directory, reported).
    pub async fn done(&mut self, mut snapshot: Box<Snapshot>) {
        // The raw stream is not needed any more.
        self.raw = None;
        // The process name gdb compares with its executable's file name:
        // the image's, else --name; and where lldb finds the image.
        snapshot.name = match self.opts.image.as_ref().and_then(|i| i.file_name()) {
            Some(file) => file.to_string_lossy().into_owned(),
            None => self.opts.name.clone(),
        };
        snapshot.image = self.image_ref.clone();
        let reason = snapshot.reason.lines().next().unwrap_or("").to_string();
        self.check_build_id(&snapshot.build_id);
        let Some(dir) = self.opts.dir.clone() else {
            eprintln!(
                "ukdb: a crash core arrived (reason: {reason}); run the bridge with --core-dir \
                 DIR to keep it"
            );
            return;
        };
        let path = dir.join(core_name(&self.opts.name, &snapshot.build_id, SystemTime::now()));
        let target = path.clone();
        let written =
            tokio::task::spawn_blocking(move || elf::write_core_file(&snapshot, &target)).await;
        match written {
            Ok(Ok(len)) => {
                let image = match &self.opts.image {
                    Some(image) => image.display().to_string(),
                    None => "<image>".into(),
                };
                eprintln!(
                    "ukdb: core written: {} ({:.1} MiB, reason: {reason})",
                    path.display(),
                    len as f64 / (1 << 20) as f64
                );
                eprintln!("ukdb: open it with: gdb {image} {}", path.display());
            }
            Ok(Err(err)) => eprintln!("ukdb: cannot write the core {}: {err}", path.display()),
            Err(join) => eprintln!("ukdb: cannot write the core {}: {join}", path.display()),
        }
    }

    /// The stream broke: its bytes are kept as a `.partial`.
    pub fn failed(&mut self, error: &StreamError) {
        let why = match error {
            StreamError::Truncated { records } => format!("truncated after {records} records"),
            other => other.to_string(),
        };
        let Some((mut file, temp)) = self.raw.take() else {
            let hint = if self.opts.dir.is_none() {
                "; run the bridge with --core-dir DIR to keep cores"
            } else {
                ""
            };
            eprintln!("ukdb: crash stream broken ({why}){hint}");
            return;
        };
        let dir = self.opts.dir.clone().unwrap_or_default();
        let path = dir.join(partial_name(&self.opts.name, SystemTime::now()));
        let kept = file.flush().and_then(|()| temp.persist(&path).map_err(|e| e.error));
        match kept {
            Ok(()) => eprintln!("ukdb: crash stream broken ({why}); kept {}", path.display()),
            Err(err) => eprintln!("ukdb: crash stream broken ({why}); cannot keep it: {err}"),
        }
    }

    fn check_build_id(&self, core: &[u8]) {
        let (Some(image), Some(id)) = (&self.opts.image, &self.image_build_id) else { return };
        if !core.is_empty() && core != id.as_slice() {
            eprintln!(
                "ukdb: WARNING: build-id mismatch: core {} image {} ({}): the core is not from \
                 this image",
                hex(core),
                hex(id),
                image.display()
            );
        }
    }
}

/// `<name>-<build-id first 12 hex>-<UTC time>.core` (no build-id part
/// without one).
pub fn core_name(name: &str, build_id: &[u8], at: SystemTime) -> String {
    let id = hex(build_id);
    let id = id.get(..12).unwrap_or(&id);
    if id.is_empty() {
        format!("{name}-{}.core", utc_stamp(at))
    } else {
        format!("{name}-{id}-{}.core", utc_stamp(at))
    }
}

/// `<name>-<UTC time>.core.partial`.
pub fn partial_name(name: &str, at: SystemTime) -> String {
    format!("{name}-{}.core.partial", utc_stamp(at))
}

/// `YYYYmmddTHHMMSSZ`.
pub fn utc_stamp(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to a calendar starting in March of year 0, in 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(at(0)), "19700101T000000Z");
        // 2000-02-29 12:34:56, a leap day of a century leap year.
        assert_eq!(utc_stamp(at(951_827_696)), "20000229T123456Z");
        // 2024-12-31 23:59:59 and the next second.
        assert_eq!(utc_stamp(at(1_735_689_599)), "20241231T235959Z");
        assert_eq!(utc_stamp(at(1_735_689_600)), "20250101T000000Z");
    }

    #[test]
    fn names_carry_the_build_id_and_the_time() {
        let id = [0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4];
        assert_eq!(core_name("ukdemo", &id, at(0)), "ukdemo-deadbeef0001-19700101T000000Z.core");
        assert_eq!(core_name("ukdemo", &[], at(0)), "ukdemo-19700101T000000Z.core");
        assert_eq!(core_name("u", &[1], at(0)), "u-01-19700101T000000Z.core");
        assert_eq!(partial_name("ukdemo", at(0)), "ukdemo-19700101T000000Z.core.partial");
        let opts = CoreOptions::new(None, Some("/x/ukdemo".into()), None);
        assert_eq!(opts.name, "ukdemo");
        assert_eq!(CoreOptions::new(None, None, None).name, "unikernel");
        assert_eq!(CoreOptions::new(None, None, Some("n".into())).name, "n");
    }

    #[test]
    fn a_core_is_written_under_its_name_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.core");
        let len = elf::write_core_file(&Snapshot::default(), &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        // A snapshot the writer refuses leaves nothing behind.
        let mut bad = Snapshot::default();
        bad.pages.insert(1, vec![]);
        let bad_path = dir.path().join("b.core");
        assert!(elf::write_core_file(&bad, &bad_path).is_err());
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.core")]);
    }
}
