//! Real mounts for tests: mount a storage in-process on a temp dir, run real commands
//! against it (each under `timeout`), unmount in `Drop` (lazily if busy) and check that
//! nothing is left mounted. A watchdog aborts a hung test after detaching its mount.

use filestorage2::fuse::{self, MountOptions, Mounted};
use filestorage2::Storage;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest a whole mount test may run before the watchdog detaches and aborts.
const TEST_LIMIT: Duration = Duration::from_secs(180);

/// `python3 -c PROBE op a [b]`: prints OK or the errno name of the operation (`excl`
/// creates exclusively, `create` not; `put` writes `b` over the file; `truncate` to `b`,
/// default 0).
const PROBE: &str = r#"
import errno, os, sys
op, a, b = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
def put(path, data, flags=os.O_WRONLY | os.O_TRUNC):
    fd = os.open(path, flags)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)
try:
    {"excl": lambda: os.close(os.open(a, os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
     "create": lambda: os.close(os.open(a, os.O_WRONLY | os.O_CREAT)),
     "write": lambda: open(a, "r+"), "append": lambda: open(a, "a"), "put": lambda: put(a, b),
     "truncate": lambda: os.truncate(a, int(b or 0)), "mkdir": lambda: os.mkdir(a),
     "rmdir": lambda: os.rmdir(a), "unlink": lambda: os.unlink(a), "chmod": lambda: os.chmod(a, 0o600),
     "chown": lambda: os.chown(a, 1, 1), "link": lambda: os.link(a, b), "symlink": lambda: os.symlink(b, a),
     "rename": lambda: os.rename(a, b), "utime": lambda: os.utime(a, (1, 1)), "stat": lambda: os.stat(a),
     "read": lambda: open(a, "rb").read(), "listdir": lambda: os.listdir(a)}[op]()
    print("OK")
except OSError as e:
    print(errno.errorcode[e.errno])
"#;

pub struct TestMount {
    pub storage: Storage,
    pub root: PathBuf,
    mounted: Option<Mounted>,
    watchdog: Option<mpsc::Sender<()>>,
    _mnt: tempfile::TempDir,
}

/// Whether real mounts can run here; prints why not. With `FS2_REQUIRE_FUSE` set (as
/// `.ci/run` does) a missing `/dev/fuse` fails the test instead of skipping it.
pub fn available() -> bool {
    if !Path::new("/dev/fuse").exists() {
        let why = "/dev/fuse is missing (real-mount tests need the fuse module)";
        assert!(std::env::var_os("FS2_REQUIRE_FUSE").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return false;
    }
    true
}

/// Whether `mountpoint` appears in this process's mount table.
pub fn is_mounted(mountpoint: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mountpoint.to_string_lossy().replace(' ', "\\040");
    table.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

impl TestMount {
    pub fn new(storage: Storage) -> TestMount {
        TestMount::with(storage, &MountOptions::default())
    }

    pub fn with(storage: Storage, opts: &MountOptions) -> TestMount {
        let mnt = tempfile::tempdir().unwrap();
        let root = mnt.path().to_path_buf();
        let mounted = fuse::spawn(storage.clone(), &root, opts).expect("mount");
        assert!(is_mounted(&root), "the mount shows in /proc/self/mountinfo");
        let fsname = format!("fs2:{}", storage.dir().display());
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(table.contains(&fsname), "found by its FSName {fsname}");
        let (tx, rx) = mpsc::channel::<()>();
        let watched = root.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(TEST_LIMIT) {
                eprintln!("mount test hung for {TEST_LIMIT:?}: detaching {} and aborting", watched.display());
                let _ = fuse::lazy_unmount(&watched);
                std::process::abort();
            }
        });
        TestMount { storage, root, mounted: Some(mounted), watchdog: Some(tx), _mnt: mnt }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    /// Run `args` in the mount's root under `timeout 30`.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("timeout")
            .args(["-k", "5", "30"])
            .args(args)
            .current_dir(&self.root)
            .output()
            .expect("run a command");
        assert_ne!(out.status.code(), Some(124), "{args:?} timed out");
        out
    }

    /// Run `args`; it must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// The errno name of the operation `op` on `a` (with `b`: a second path or the data)
    /// as Python reports it (`OK` if it succeeded); see `PROBE` for the operations.
    pub fn probe(&self, op: &str, a: &str, b: Option<&str>) -> String {
        let mut args = vec!["python3", "-c", PROBE, op, a];
        args.extend(b);
        String::from_utf8(self.ok(&args)).unwrap().trim().to_string()
    }

    /// `sh -c script` in the mount's root; must succeed; stdout as a string.
    pub fn sh(&self, script: &str) -> String {
        String::from_utf8(self.ok(&["sh", "-c", script])).unwrap()
    }

    /// Unmount now (as `Drop` does) and check that it is gone.
    pub fn unmount(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(m) = self.mounted.take() {
            if let Err(e) = m.unmount() {
                eprintln!("unmount {}: {e} (detached lazily)", self.root.display());
            }
        }
        assert!(!is_mounted(&self.root), "{} is still mounted", self.root.display());
        self.watchdog.take();
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(m) = self.mounted.take() {
                drop(m);
            }
            if is_mounted(&self.root) {
                let _ = fuse::lazy_unmount(&self.root);
            }
            return;
        }
        self.finish();
    }
}

/// Start `fs2 mount STORAGE MP args...` and wait until the mount serves: opening `head/`
/// always asks the daemon (a stale mount at MP is in the mount table too, and a `stat`
/// can be answered from the kernel's caches).
pub fn start(storage: &Path, mp: &Path, args: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fs2"))
        .env("RUST_LOG", "warn")
        .arg("mount")
        .arg(storage)
        .arg(mp)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !is_mounted(mp) || std::fs::read_dir(mp.join("head")).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("fs2 mount exited with {st}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(start.elapsed() < Duration::from_secs(20), "fs2 mount did not mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Detaches whatever is left mounted at the path when the test ends, even on failure.
pub struct Cleanup<'a>(pub &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = fuse::lazy_unmount(self.0);
        }
    }
}
