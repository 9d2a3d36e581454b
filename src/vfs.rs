//! File I/O behind a small trait, so that crash tests can run the engine on a simulated
//! disk that keeps a *written* and a *durable* image of every file and directory.
//!
//! [`RealVfs`] is the operating system. [`SimVfs`] is an in-memory disk: `sync` makes a
//! file's written bytes durable, `sync_dir` makes a directory's names durable, and
//! [`SimVfs::crash`] returns the disk a power cut would leave (optionally with some of
//! the un-synced bytes having reached the platter anyway).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open file: positional reads and writes, no shared cursor.
#[allow(clippy::len_without_is_empty)] // a file length, not a collection
pub trait VFile: Send + Sync {
    /// Fill `buf` from `off`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Make written bytes (and the length) durable: `fdatasync`.
    fn sync(&self) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The OS file, where there is one (lets sealed segments be memory-mapped).
    fn os_file(&self) -> Option<&File> {
        None
    }
    /// Drop this file's clean pages from the page cache (after a bulk write, so that a
    /// merge does not evict the pages readers rely on). A hint: errors are ignored.
    fn drop_cache(&self) {}
    /// Start writing `[off, off + len)` back to the disk, then wait for `[wait_off, off)`
    /// (the previous step) to be written: a bulk writer calls it every few MiB so
    /// that its final `sync` has little left to do and does not stall other writers'
    /// syncs behind a burst (`sync_file_range`). A hint, not durability: errors are
    /// ignored, and the writer still calls `sync`.
    fn write_back(&self, _wait_off: u64, _off: u64, _len: u64) {}
}

/// Lower the calling thread's CPU priority (Linux applies `setpriority` per thread), so
/// that background work such as a merge yields the CPU to committers. A hint: errors
/// are ignored.
pub(crate) fn lower_thread_priority(nice: i32) {
    // SAFETY: setpriority reads only its integer arguments; `0` names the calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
}

/// Give the calling thread the lowest best-effort I/O priority (`ioprio_set`, per thread
/// on Linux; schedulers that know priorities, e.g. BFQ, serve others' requests first),
/// so that a merge's bulk I/O does not queue ahead of committers' syncs. Not the idle
/// class: under steady commits that could starve the merge. A hint: errors are ignored.
pub(crate) fn lower_thread_io_priority() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_BE: libc::c_long = 2;
    const LOWEST: libc::c_long = 7;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: ioprio_set reads only its integer arguments; `0` names the calling thread.
    unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT | LOWEST,
        )
    };
}

/// A directory tree of files.
pub trait Vfs: Send + Sync {
    /// Open an existing file, read-only or read-write.
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>>;
    /// Create a new file (mode 0600); fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// File names in `dir` (not paths), in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Make the names in `dir` durable (fsync of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Create `dir` and its parents (mode 0700).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// The one canonical form of `path` (absolute, symbolic links and `..` resolved), so
    /// that paths are compared as identities, never as text. The simulated disk's paths
    /// are already canonical.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        Ok(path.to_path_buf())
    }
    /// Whether `a` and `b` name the same existing file or directory (same device and
    /// inode: also through bind mounts and hard links). False if either does not exist.
    fn same_file(&self, a: &Path, b: &Path) -> bool {
        a == b && self.exists(a)
    }
    /// Take the exclusive writer lock of the storage in `dir`, held while the returned
    /// value lives. `Ok(None)` where there is nothing to lock (the simulated disk).
    fn lock(&self, _dir: &Path) -> io::Result<Option<File>> {
        Ok(None)
    }
    /// Whether a writer holds the lock of the storage in `dir` now (asked by read-only
    /// opens, which take no lock; they must not create or change anything). `false`
    /// where it cannot be told (no lock file, or no permission to open it).
    fn writer_active(&self, _dir: &Path) -> bool {
        false
    }
    /// Whether a chain may end at a previous segment that is not there (an archive of
    /// some segments only, `backup::ArchiveVfs`): its history starts at the oldest
    /// segment present. In a storage a missing predecessor is an error.
    fn partial_chain(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------
// The real file system.

pub struct RealVfs;

struct RealFile(File);

impl VFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, off)
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.0.write_all_at(buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn os_file(&self) -> Option<&File> {
        Some(&self.0)
    }
    fn drop_cache(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is ours
        // and open for the duration of the call.
        unsafe { libc::posix_fadvise(self.0.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    fn write_back(&self, wait_off: u64, off: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let fd = self.0.as_raw_fd();
        // SAFETY: sync_file_range only reads its integer arguments; the descriptor is ours
        // and open for the duration of the calls.
        unsafe {
            libc::sync_file_range(fd, off as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
            if off > wait_off {
                let all =
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                libc::sync_file_range(fd, wait_off as i64, (off - wait_off) as i64, all);
            }
        }
    }
}

impl Vfs for RealVfs {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        let f = OpenOptions::new().read(true).write(write).open(path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let f = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Some(n) = e?.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        Ok(names)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }
    fn same_file(&self, a: &Path, b: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
            _ => false,
        }
    }
    fn lock(&self, dir: &Path) -> io::Result<Option<File>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join("LOCK"))?;
        // A read-only open asking `writer_active` holds a shared lock for a moment: try
        // again for a while before reporting another writer.
        let mut tries = 0;
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(Some(f)),
                Err(std::fs::TryLockError::WouldBlock) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Err(io::Error::from(io::ErrorKind::WouldBlock)),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
    fn writer_active(&self, dir: &Path) -> bool {
        // Opened for reading only, never created; a shared lock conflicts only with the
        // writer's exclusive one, and is released at once (the file is closed).
        let Ok(f) = File::open(dir.join("LOCK")) else { return false };
        matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
    }
}

use std::os::unix::fs::DirBuilderExt;

// ---------------------------------------------------------------------------------------
// The simulated disk.

#[derive(Default)]
struct SimImage {
    written: Vec<u8>,
    durable: Vec<u8>,
    /// Byte range written since the last sync (a sync copies only this).
    dirty: Option<(usize, usize)>,
}

impl SimImage {
    fn touch(&mut self, start: usize, end: usize) {
        self.dirty = Some(match self.dirty {
            Some((a, b)) => (a.min(start), b.max(end)),
            None => (start, end),
        });
    }
}

/// One simulated inode; names point at it, so a rename keeps its content.
#[derive(Default)]
struct SimInode {
    img: Mutex<SimImage>,
}

#[derive(Default)]
struct SimState {
    /// The names a running program sees.
    names: BTreeMap<PathBuf, Arc<SimInode>>,
    /// The names that survive a crash (updated by `sync_dir`).
    durable_names: BTreeMap<PathBuf, Arc<SimInode>>,
    /// Number of sync points passed (file syncs and directory syncs).
    syncs: u64,
    /// Crash (fail every operation from then on) when `syncs` reaches this.
    crash_at: Option<u64>,
    crashed: bool,
}

/// What survives a simulated crash besides the durable image.
#[derive(Clone, Copy, Debug)]
pub enum CrashMode {
    /// Only what was synced.
    DurableOnly,
    /// Everything written reached the disk (as after a process crash).
    AllWritten,
    /// A pseudo-random subset of the un-synced 512-byte sectors reached the disk.
    Torn(u64),
}

#[derive(Clone, Default)]
pub struct SimVfs {
    state: Arc<Mutex<SimState>>,
}

struct SimFile {
    inode: Arc<SimInode>,
    state: Arc<Mutex<SimState>>,
    write: bool,
}

fn crashed_err() -> io::Error {
    io::Error::other("simulated crash: the disk is gone")
}

impl SimVfs {
    pub fn new() -> SimVfs {
        SimVfs::default()
    }

    /// Make the `n`-th sync point from now (0 = the next one) fail, and every operation
    /// after it. The sync itself does not happen.
    pub fn crash_at_sync(&self, n: u64) {
        let mut s = self.state.lock().unwrap();
        s.crash_at = Some(s.syncs + n);
    }

    /// Sync points passed so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().unwrap().syncs
    }

    /// The disk a power cut leaves now, as a fresh simulated disk.
    pub fn crash(&self, mode: CrashMode) -> SimVfs {
        let s = self.state.lock().unwrap();
        let mut rng = match mode {
            CrashMode::Torn(seed) => seed | 1,
            _ => 1,
        };
        let mut out = SimState::default();
        for (path, inode) in &s.durable_names {
            let img = inode.img.lock().unwrap();
            let mut data = img.durable.clone();
            match mode {
                CrashMode::DurableOnly => {}
                CrashMode::AllWritten => data = img.written.clone(),
                CrashMode::Torn(_) => {
                    data.resize(img.written.len().max(data.len()), 0);
                    for (i, sector) in img.written.chunks(512).enumerate() {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        if rng % 2 == 0 {
                            data[i * 512..i * 512 + sector.len()].copy_from_slice(sector);
                        }
                    }
                    // The length is metadata: either the old or the new one survived.
                    if rng % 3 == 0 {
                        data.truncate(img.written.len());
                    } else {
                        data.truncate(img.durable.len().max(img.written.len().min(data.len())));
                    }
                }
            }
            let inode = Arc::new(SimInode::default());
            *inode.img.lock().unwrap() = SimImage { written: data.clone(), durable: data, dirty: None };
            out.names.insert(path.clone(), inode.clone());
            out.durable_names.insert(path.clone(), inode);
        }
        SimVfs { state: Arc::new(Mutex::new(out)) }
    }

    fn check(&self) -> io::Result<std::sync::MutexGuard<'_, SimState>> {
        let s = self.state.lock().unwrap();
        if s.crashed {
            return Err(crashed_err());
        }
        Ok(s)
    }
}

/// Count a sync point; fail (and stay failed) if it is the one chosen to crash at.
fn sync_point(s: &mut SimState) -> io::Result<()> {
    if s.crashed {
        return Err(crashed_err());
    }
    if s.crash_at == Some(s.syncs) {
        s.crashed = true;
        return Err(crashed_err());
    }
    s.syncs += 1;
    Ok(())
}

impl VFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let img = self.inode.img.lock().unwrap();
        let start = usize::try_from(off).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let end = start.checked_add(buf.len()).filter(|&e| e <= img.written.len());
        match end {
            Some(end) => {
                buf.copy_from_slice(&img.written[start..end]);
                Ok(())
            }
            None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if !self.write {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if self.state.lock().unwrap().crashed {
            return Err(crashed_err());
        }
        let mut img = self.inode.img.lock().unwrap();
        let start = off as usize;
        if img.written.len() < start + buf.len() {
            img.written.resize(start + buf.len(), 0);
        }
        img.written[start..start + buf.len()].copy_from_slice(buf);
        img.touch(start, start + buf.len());
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        sync_point(&mut self.state.lock().unwrap())?;
        let mut img = self.inode.img.lock().unwrap();
        let SimImage { written, durable, dirty } = &mut *img;
        durable.resize(written.len(), 0);
        if let Some((a, b)) = dirty.take() {
            let b = b.min(written.len());
            if a < b {
                durable[a..b].copy_from_slice(&written[a..b]);
            }
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.inode.img.lock().unwrap().written.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.state.lock().unwrap().crashed {
            return Err(crashed_err());
        }
        let mut img = self.inode.img.lock().unwrap();
        let old = img.written.len();
        img.written.resize(len as usize, 0);
        // Bytes re-grown after a shrink are zeros the durable image may not have.
        img.touch(old.min(len as usize), len as usize);
        Ok(())
    }
}

impl Vfs for SimVfs {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        let s = self.check()?;
        let inode = s.names.get(path).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(Arc::new(SimFile { inode, state: self.state.clone(), write }))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        let mut s = self.check()?;
        if s.names.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let inode = Arc::new(SimInode::default());
        s.names.insert(path.to_path_buf(), inode.clone());
        Ok(Arc::new(SimFile { inode, state: self.state.clone(), write: true }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.check()?;
        let inode = s.names.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.names.insert(to.to_path_buf(), inode);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.check()?;
        s.names.remove(path).map(|_| ()).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.check()?;
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(String::from))
            .collect())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        sync_point(&mut s)?;
        let SimState { names, durable_names, .. } = &mut *s;
        durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, inode) in names.iter().filter(|(p, _)| p.parent() == Some(dir)) {
            durable_names.insert(p.clone(), inode.clone());
        }
        Ok(())
    }
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        self.check().map(|_| ())
    }
    fn exists(&self, path: &Path) -> bool {
        self.state.lock().unwrap().names.contains_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_keeps_only_synced_bytes_and_names() {
        let vfs = SimVfs::new();
        let dir = Path::new("/s");
        let f = vfs.create_new(&dir.join("a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        // Name not durable yet: a crash loses the file.
        assert!(!vfs.crash(CrashMode::AllWritten).exists(&dir.join("a")));
        vfs.sync_dir(dir).unwrap();
        f.sync().unwrap();
        f.write_all_at(b"J", 0).unwrap();
        let after = vfs.crash(CrashMode::DurableOnly);
        let mut buf = [0u8; 5];
        after.open(&dir.join("a"), false).unwrap().read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello");
        let after = vfs.crash(CrashMode::AllWritten);
        after.open(&dir.join("a"), false).unwrap().read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"Jello");
    }

    #[test]
    fn sim_crash_point_fails_that_sync_and_everything_after() {
        let vfs = SimVfs::new();
        let f = vfs.create_new(Path::new("/s/a")).unwrap();
        vfs.crash_at_sync(1);
        f.sync().unwrap();
        assert!(f.sync().is_err());
        assert!(f.write_all_at(b"x", 0).is_err());
        assert!(vfs.sync_dir(Path::new("/s")).is_err());
    }
}
