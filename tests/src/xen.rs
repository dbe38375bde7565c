//! The Xen console ring model in a real VM: `ukdb xen-model` serving the
//! ring in an ivshmem-plain device's shared memory, the example's stub on
//! it (`ukdb.xenring=ivshmem`). For tests/tests/xen.rs and the benches.

use std::process::{Command, Stdio};
use std::sync::Arc;

use regex::Regex;

use crate::{artifacts, Bridge, Output, Proc, Vm};

/// A q35 VM whose stub talks over the console ring model, with
/// `ukdb xen-model` serving the ring on a unix socket or a pty.
pub struct XenVm {
    /// Declared first: QEMU goes before the model.
    _vm: Vm,
    model: Proc,
    /// The model's stderr.
    pub model_err: Arc<Output>,
    /// Where the model serves the console: `unix:PATH` or `pty:PATH`, for
    /// `ukdb bridge --target`.
    pub target: String,
    _dir: tempfile::TempDir,
}

impl XenVm {
    /// The model on a unix socket (with `--slow N` if given), then QEMU
    /// with `append` and `extra` arguments.
    pub fn boot(append: &str, slow: Option<u32>, extra: &[&str]) -> XenVm {
        let dir = tempfile::tempdir().unwrap();
        let sock = format!("unix:{}", dir.path().join("model.sock").display());
        let mut listen = vec!["--listen".to_owned(), sock];
        if let Some(n) = slow {
            listen.extend(["--slow".to_owned(), n.to_string()]);
        }
        Self::start(dir, &listen, append, extra)
    }

    /// The model on a pty, as xenconsoled serves a domain's console.
    pub fn boot_pty(append: &str) -> XenVm {
        let dir = tempfile::tempdir().unwrap();
        Self::start(dir, &["--listen".to_owned(), "pty".to_owned()], append, &[])
    }

    fn start(dir: tempfile::TempDir, listen: &[String], append: &str, extra: &[&str]) -> XenVm {
        let ring = dir.path().join("ring");
        std::fs::File::create(&ring).unwrap().set_len(1 << 20).unwrap();
        let mut cmd = Command::new(&artifacts().ukdb);
        cmd.arg("xen-model").arg("--shm").arg(&ring).args(listen);
        let mut child =
            cmd.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cannot start ukdb");
        let model_err = Arc::new(Output::default());
        model_err.spawn_reader(child.stderr.take().unwrap());
        let model = Proc(child);
        let text =
            model_err.wait("the model to listen", |t| t.contains("ukdb xen-model: serving "));
        let target = text
            .lines()
            .find_map(|l| l.split_once(" on ").filter(|_| l.contains("serving ")))
            .map(|(_, t)| t.to_owned())
            .unwrap();
        let object =
            format!("memory-backend-file,id=ring,share=on,mem-path={},size=1M", ring.display());
        let mut args = vec!["-object", &object, "-device", "ivshmem-plain,memdev=ring"];
        args.extend_from_slice(extra);
        let append = format!("ukdb.xenring=ivshmem {append}");
        let vm = Vm::boot_with("q35", &artifacts().image, append.trim_end(), &args);
        XenVm { _vm: vm, model, model_err, target, _dir: dir }
    }

    /// `ukdb bridge` on the model's console, once the stub answered.
    pub fn bridge(&self) -> Bridge {
        Bridge::start_target(&self.target, &[])
    }

    /// Panics if the model has exited.
    pub fn assert_model_up(&mut self) {
        if let Some(status) = self.model.0.try_wait().unwrap() {
            panic!("the model exited ({status}):\n{}", self.model_err.text());
        }
    }

    /// The model's report when its client left (`ukdb bridge` exited):
    /// bytes into the guest and times `in` was filled to the brim.
    pub fn after_client(&self) -> (u64, u64) {
        let report = |t: &str| {
            let re = Regex::new(
                r"client gone; so far (\d+) bytes in, \d+ out, `in` filled to the brim (\d+) times",
            )
            .unwrap();
            re.captures(t).map(|c| (c[1].parse().unwrap(), c[2].parse().unwrap()))
        };
        self.model_err.wait("the model's report", |t| report(t).is_some());
        report(&self.model_err.text()).unwrap()
    }
}

/// A directory with a fake `xl` and `xenstore-read` that know one domain,
/// `name` with id `domid`, whose console is `tty`: Xen's tools as
/// `ukdb --target xen:` uses them (`xl domid NAME`, `xenstore-read
/// /local/domain/DOMID/console/tty`). Returns the directory and a `PATH`
/// with it first.
pub fn fake_xen_tools(name: &str, domid: u32, tty: &str) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tool = |file: &str, script: String| {
        let path = dir.path().join(file);
        std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    tool(
        "xl",
        format!(
            "[ \"$1 $2\" = \"domid {name}\" ] && exec echo {domid}\n\
             echo \"$2 is an invalid domain identifier\" >&2; exit 1\n"
        ),
    );
    tool(
        "xenstore-read",
        format!(
            "[ \"$1\" = /local/domain/{domid}/console/tty ] && exec echo {tty}\n\
             echo \"couldn't read path $1\" >&2; exit 1\n"
        ),
    );
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    (dir, path)
}
