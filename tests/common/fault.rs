//! A disk that fills or fails under the engine: a `Vfs` wrapping the real file system or
//! the simulated one, failing writes (ENOSPC) and syncs (EIO) as `Faults` says.

use super::workload::SIM_DIR;
use filestorage2::vfs::{CrashMode, RealVfs, SimVfs, VFile, Vfs};
use filestorage2::{Options, Storage};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

/// Faults to inject under the engine.
pub struct Faults {
    /// Writes that still succeed before the disk is full (-1: never full). A write that
    /// finds the disk full writes half its bytes, then fails with ENOSPC.
    writes_left: AtomicI64,
    /// Syncs (of files and directories) that still succeed before one fails with EIO
    /// (-1: never).
    syncs_left: AtomicI64,
    /// After the first failing sync, keep failing.
    eio_sticky: AtomicBool,
    /// A full disk as file systems have it: writes that would grow a file fail with
    /// ENOSPC, writes into its existing length succeed.
    full: AtomicBool,
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults {
            writes_left: AtomicI64::new(-1),
            syncs_left: AtomicI64::new(-1),
            eio_sticky: AtomicBool::new(false),
            full: AtomicBool::new(false),
        })
    }
    /// The disk is full after `writes` more writes.
    pub fn disk_full_after(&self, writes: i64) {
        self.writes_left.store(writes, Ordering::SeqCst);
    }
    /// A full disk (`true`) fails the writes that grow a file, until `false`.
    pub fn disk_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }
    pub fn space_returns(&self) {
        self.writes_left.store(-1, Ordering::SeqCst);
    }
    /// The sync after `syncs` more fails with EIO; `sticky`: and every one after it.
    pub fn eio_after(&self, syncs: i64, sticky: bool) {
        self.eio_sticky.store(sticky, Ordering::SeqCst);
        self.syncs_left.store(syncs, Ordering::SeqCst);
    }
    /// No more failing syncs.
    pub fn heal(&self) {
        self.syncs_left.store(-1, Ordering::SeqCst);
    }
    /// Whether the sync fault set by a non-sticky `eio_after` has fired (and healed).
    pub fn eio_fired(&self) -> bool {
        self.syncs_left.load(Ordering::SeqCst) == -1
    }
    /// Count one operation against `left`; true if it must fail.
    fn hit(left: &AtomicI64) -> bool {
        left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| (v > 0).then(|| v - 1)).is_err()
            && left.load(Ordering::SeqCst) == 0
    }
    fn write_fails(&self) -> bool {
        Faults::hit(&self.writes_left)
    }
    fn sync_fails(&self) -> bool {
        let fail = Faults::hit(&self.syncs_left);
        if fail && !self.eio_sticky.load(Ordering::SeqCst) {
            self.heal();
        }
        fail
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// A `Vfs` that delegates to another one, failing as `Faults` says.
pub struct FaultVfs {
    pub inner: Arc<dyn Vfs>,
    pub faults: Arc<Faults>,
}

struct FaultFile {
    inner: Arc<dyn VFile>,
    faults: Arc<Faults>,
}

impl VFile for FaultFile {
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if self.faults.write_fails() {
            self.inner.write_all_at(&buf[..buf.len() / 2], off)?;
            return Err(enospc());
        }
        if self.faults.full.load(Ordering::SeqCst) && off + buf.len() as u64 > self.inner.len()? {
            return Err(enospc());
        }
        self.inner.write_all_at(buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        if self.faults.sync_fails() {
            return Err(eio());
        }
        self.inner.sync()
    }
    crate::vfile_passthrough!(inner: read_exact_at, len, set_len, os_file);
}

impl FaultVfs {
    fn wrap(&self, f: Arc<dyn VFile>) -> Arc<dyn VFile> {
        Arc::new(FaultFile { inner: f, faults: self.faults.clone() })
    }
}

impl Vfs for FaultVfs {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        self.inner.open(path, write).map(|f| self.wrap(f))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        self.inner.create_new(path).map(|f| self.wrap(f))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.faults.sync_fails() {
            return Err(eio());
        }
        self.inner.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        self.inner.canonicalize(path)
    }
    fn same_file(&self, a: &Path, b: &Path) -> bool {
        self.inner.same_file(a, b)
    }
    fn lock(&self, dir: &Path) -> io::Result<Option<File>> {
        self.inner.lock(dir)
    }
    fn writer_active(&self, dir: &Path) -> bool {
        self.inner.writer_active(dir)
    }
}

/// A storage directory on a faulty disk: the real file system or the simulated one.
pub struct Faulty {
    pub inner: Arc<dyn Vfs>,
    pub sim: Option<SimVfs>,
    pub dir: PathBuf,
    pub faults: Arc<Faults>,
    _tmp: Option<tempfile::TempDir>,
}

impl Faulty {
    pub fn real() -> Faulty {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        Faulty { inner: Arc::new(RealVfs), sim: None, dir, faults: Faults::new(), _tmp: Some(tmp) }
    }
    pub fn sim() -> Faulty {
        let sim = SimVfs::new();
        Faulty { inner: Arc::new(sim.clone()), sim: Some(sim), dir: SIM_DIR.into(), faults: Faults::new(), _tmp: None }
    }
    /// Small preallocation chunks, no automatic rotation.
    fn opts_on(vfs: Arc<dyn Vfs>) -> Options {
        Options { vfs, alignment: 4096, rotate_size: 0, preallocate: 8192, ..Default::default() }
    }
    pub fn opts(&self) -> Options {
        Faulty::opts_on(Arc::new(FaultVfs { inner: self.inner.clone(), faults: self.faults.clone() }))
    }
    pub fn open(&self, ctx: &str) -> Storage {
        Storage::open(&self.dir, self.opts()).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"))
    }
    /// The length of the active segment's file.
    pub fn active_len(&self, s: &Storage) -> u64 {
        let name = s.segments().unwrap().last().unwrap().name.file_name();
        self.inner.open(&self.dir.join(name), false).unwrap().len().unwrap()
    }
    /// Segment-like files in the storage directory (segments, unfinished merge results).
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.inner.list(&self.dir).unwrap().into_iter().filter(|n| n.contains(".fs2")).collect();
        v.sort();
        v
    }
    /// `fs2 check` finds nothing.
    pub fn check(&self, ctx: &str) {
        let report = filestorage2::check::check(&self.dir, false, self.opts(), &mut |_, _| {}).unwrap();
        assert!(report.ok(), "{ctx}: check: {:?}", report.problems);
    }
    /// On the simulated disk: the storage as a power cut now leaves it (only what is
    /// durable), opened on a disk without faults. `None` on the real disk.
    pub fn after_power_cut(&self, ctx: &str) -> Option<Storage> {
        let cut = self.sim.as_ref()?.crash(CrashMode::DurableOnly);
        let s = Storage::open(&self.dir, Faulty::opts_on(Arc::new(cut)));
        Some(s.unwrap_or_else(|e| panic!("{ctx}: after a power cut: {e}")))
    }
}
