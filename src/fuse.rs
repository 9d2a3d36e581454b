//! The fuser adapter: one method per FUSE operation, translating requests to the `fs`
//! layer and its answers to replies. Caching policy: immutable files are opened with
//! `FOPEN_KEEP_CACHE` and long TTLs, changing ones with `FOPEN_DIRECT_IO`; `head/`
//! entries are invalidated after each commit by a notifier thread (never from a request
//! handler: the kernel can deadlock against one).

pub use crate::fs::MountOptions;
use crate::fs::{Attr, Entry, Fh, Fs, FsError, FsResult, Ino, Kind, NotOffered, OpenMode, SetAttr, WriteDone};
use crate::Storage;
use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, Notifier, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// The fuser `Filesystem` over an [`Fs`].
pub struct FuseFs {
    fs: Arc<Fs>,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>) -> FuseFs {
        FuseFs { fs }
    }

    /// Log a failure once (what to do instead is in the message) and turn it into an errno.
    fn fail(&self, op: &str, e: FsError) -> Errno {
        fail(&self.fs, op, e)
    }

    /// Run `op` once `head/` shows the engine's last commit: at once (the usual case), or
    /// on a worker thread while the notifier catches up, so that a transaction begun now
    /// (mkdir, opening the clone file) never reads a `head/` older than its base. Session
    /// threads never wait for the notifier (it may wait for them).
    fn after_shown(&self, op: impl FnOnce(&Fs) + Send + 'static) {
        if !self.fs.shown_behind() {
            return op(&self.fs);
        }
        let fs = self.fs.clone();
        on_worker(move || {
            fs.wait_shown();
            op(&fs)
        });
    }
}

/// Answer off the session threads: only this caller waits, the session goes on. An idle
/// worker takes the job, else a new worker starts (a job may block until the next commit,
/// so none waits for another); a worker idle for [`WORKER_IDLE`] ends. A steady stream
/// of commits thus starts no thread per commit. If no thread can start, the dropped reply
/// answers EIO (fuser does that).
fn on_worker(answer: impl FnOnce() + Send + 'static) {
    static POOL: Workers = Workers::new();
    POOL.run(Box::new(answer));
}

/// How long a worker waits for another job before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

struct Workers {
    /// Queued jobs, and workers waiting for one (never fewer than the jobs queued).
    state: Mutex<(VecDeque<Job>, usize)>,
    wake: Condvar,
}

impl Workers {
    const fn new() -> Workers {
        Workers { state: Mutex::new((VecDeque::new(), 0)), wake: Condvar::new() }
    }

    fn run(&'static self, job: Job) {
        let mut st = self.state.lock().unwrap();
        if st.1 > st.0.len() {
            st.0.push_back(job);
            self.wake.notify_one();
            return;
        }
        drop(st);
        let spawned = std::thread::Builder::new().name("fs2-worker".into()).spawn(move || self.serve(job));
        if let Err(e) = spawned {
            log::error!("cannot start a worker thread: {e}");
        }
    }

    fn serve(&self, first: Job) {
        first();
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(job) = st.0.pop_front() {
                drop(st);
                job();
                st = self.state.lock().unwrap();
                continue;
            }
            st.1 += 1;
            let (next, waited) = self.wake.wait_timeout(st, WORKER_IDLE).unwrap();
            st = next;
            st.1 -= 1;
            // A job queued for this worker is taken above, even after the timeout.
            if waited.timed_out() && st.0.is_empty() {
                return;
            }
        }
    }
}

fn fail(fs: &Fs, op: &str, e: FsError) -> Errno {
    fs.note_error(&e);
    if e.errno == libc::EIO {
        log::error!("{op}: {e}");
    } else if e.is_loud() {
        log::warn!("{op}: {e}");
    } else {
        log::info!("{op}: {e}");
    }
    Errno::from_i32(e.errno)
}

fn reply_entry(fs: &Fs, op: &str, r: FsResult<Entry>, reply: ReplyEntry) {
    match r {
        Ok(e) => reply.entry_with_ttls(&e.attr_ttl, &e.entry_ttl, &file_attr(&e.attr), Generation(0)),
        Err(e) => reply.error(fail(fs, op, e)),
    }
}

fn reply_empty(fs: &Fs, op: &str, r: FsResult<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(fail(fs, op, e)),
    }
}

/// The errno of an operation the tree does not offer: no log line, no count.
fn quietly(op: NotOffered) -> Errno {
    Errno::from_i32(crate::fs::not_offered(op).errno)
}

/// The I/O size `stat` reports (st_blksize): a page, what the kernel reads at a time.
const BLKSIZE: u32 = 4096;

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino.0),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // READDIRPLUS_AUTO: the kernel asks for attributes while the reader also stats
        // the entries (`ls -l`), plain names otherwise (`ls | wc -l` of a million objects
        // then creates no kernel inode, and no inode here, per entry).
        // ATOMIC_O_TRUNC: `echo x > file` arrives as one open(O_TRUNC), not open + setattr.
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
        ] {
            if let Err(missing) = config.add_capabilities(cap) {
                log::info!("the kernel does not offer {missing:?}");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(n) = name.to_str() else {
            return reply.error(self.fail("lookup", FsError::not_found("names are ASCII")));
        };
        reply_entry(&self.fs, "lookup", self.fs.lookup(Ino(parent.0), n), reply)
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(Ino(ino.0), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr_open(Ino(ino.0), fh.map(|f| Fh(f.0))) {
            Ok((a, ttl)) => reply.attr(&ttl, &file_attr(&a)),
            Err(e) => reply.error(self.fail("getattr", e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.fs.setattr(Ino(ino.0), SetAttr { mode, uid, gid, size }) {
            Ok((a, ttl)) => reply.attr(&ttl, &file_attr(&a)),
            Err(e) => reply.error(self.fail("setattr", e)),
        }
    }

    fn mknod(&self, _req: &Request, p: INodeNo, name: &OsStr, _m: u32, _u: u32, _r: u32, reply: ReplyEntry) {
        reply_entry(&self.fs, "mknod", self.fs.mknod(Ino(p.0), &name.to_string_lossy()), reply)
    }

    fn mkdir(&self, _req: &Request, p: INodeNo, name: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        let name = name.to_string_lossy().into_owned();
        self.after_shown(move |fs| reply_entry(fs, "mkdir", fs.mkdir(Ino(p.0), &name), reply));
    }

    fn unlink(&self, _req: &Request, p: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(&self.fs, "unlink", self.fs.unlink(Ino(p.0), &name.to_string_lossy()), reply)
    }

    fn rmdir(&self, _req: &Request, p: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(&self.fs, "rmdir", self.fs.rmdir(Ino(p.0), &name.to_string_lossy()), reply)
    }

    fn symlink(&self, _req: &Request, p: INodeNo, name: &OsStr, _target: &Path, reply: ReplyEntry) {
        reply_entry(&self.fs, "symlink", self.fs.symlink(Ino(p.0), &name.to_string_lossy()), reply)
    }

    fn rename(
        &self,
        _req: &Request,
        p: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(&self.fs, "rename", self.fs.rename(Ino(p.0), &name.to_string_lossy(), Ino(newparent.0)), reply)
    }

    fn link(&self, _req: &Request, _ino: INodeNo, p: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(&self.fs, "link", self.fs.link(Ino(p.0), &name.to_string_lossy()), reply)
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = OpenMode {
            write: flags.acc_mode() != OpenAccMode::O_RDONLY,
            truncate: flags.0 & libc::O_TRUNC != 0,
            append: flags.0 & libc::O_APPEND != 0,
        };
        self.after_shown(move |fs| match fs.open_with(Ino(ino.0), mode) {
            Ok(o) => reply.opened(FileHandle(o.fh.0), fopen_flags(&o)),
            Err(e) => reply.error(fail(fs, "open", e)),
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if self.fs.is_watch(Fh(fh.0)) {
            // Blocks until the next commit: only this reader waits.
            let fs = self.fs.clone();
            return on_worker(move || match fs.read(Fh(fh.0), offset, size) {
                Ok(b) => reply.data(&b),
                Err(e) => reply.error(fail(&fs, "read", e)),
            });
        }
        match self.fs.read(Fh(fh.0), offset, size) {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(self.fail("read", e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(Fh(fh.0), offset, data) {
            Ok(WriteDone::Now(n)) => reply.written(n),
            // A vote, commit or merge: only this caller waits; the session goes on.
            Ok(WriteDone::Later(job)) => {
                let fs = self.fs.clone();
                on_worker(move || match job() {
                    Ok(n) => reply.written(n),
                    Err(e) => reply.error(fail(&fs, "write", e)),
                });
            }
            Err(e) => reply.error(self.fail("write", e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(Fh(fh.0));
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(Ino(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh.0), FopenFlags::empty()),
            Err(e) => reply.error(self.fail("opendir", e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let kind = |k| if k == Kind::Dir { FileType::Directory } else { FileType::RegularFile };
        let r = self.fs.readdir(Ino(ino.0), Fh(fh.0), offset, false, &mut |e| {
            reply.add(INodeNo(e.ino.0), e.cookie, kind(e.kind), &e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("readdir", e)),
        }
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let r = self.fs.readdir(Ino(ino.0), Fh(fh.0), offset, true, &mut |e| {
            let entry = e.entry.expect("readdirplus entries carry attributes");
            // One TTL for both: the shorter (a head name must not outlive a commit).
            let ttl = entry.entry_ttl.min(entry.attr_ttl);
            reply.add(INodeNo(e.ino.0), e.cookie, &e.name, &ttl, &file_attr(&entry.attr), Generation(0))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("readdirplus", e)),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.fs.releasedir(Fh(fh.0));
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize),
            Err(e) => reply.error(self.fail("statfs", e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(quietly(NotOffered::Ioctl));
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(quietly(NotOffered::Xattr));
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(quietly(NotOffered::Xattr));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(quietly(NotOffered::Xattr));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(quietly(NotOffered::Xattr));
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        reply_empty(&self.fs, "access", self.fs.access(Ino(ino.0), mask.contains(AccessFlags::W_OK)), reply)
    }

    fn create(
        &self,
        _req: &Request,
        p: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (excl, append) = (flags & libc::O_EXCL != 0, flags & libc::O_APPEND != 0);
        match self.fs.create(Ino(p.0), &name.to_string_lossy(), excl, append) {
            Ok((e, o)) => {
                reply.created(&e.attr_ttl, &file_attr(&e.attr), Generation(0), FileHandle(o.fh.0), fopen_flags(&o))
            }
            Err(e) => reply.error(self.fail("create", e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(quietly(NotOffered::CopyFileRange));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(&self.fs, "fallocate", self.fs.fallocate(Ino(ino.0)), reply)
    }
}

fn fopen_flags(o: &crate::fs::Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if o.no_flush {
        f |= FopenFlags::FOPEN_NOFLUSH;
    }
    f
}

/// Threads serving requests. Nothing a session thread runs blocks for long: vote,
/// commit, merge, `head/watch` reads and opens that wait for the notifier answer from
/// worker threads. Two let a slow engine read (a cold `cat`, a `transactions/` scan)
/// overlap with other requests.
const SESSION_THREADS: usize = 2;

/// How often the notifier looks for work that sends no commit event (the names of
/// merged-away segments and ended clone transactions, segment pages a merge rewrote) and
/// for `stop`: the longest a merge waits in [`Fs::rewritten_data`]'s handshake and an
/// unmount waits for this thread.
const NOTIFIER_POLL: Duration = Duration::from_millis(100);

/// The session configuration: owner-only unless `allow_other`; the kernel checks the
/// modes the tree shows (`default_permissions`: what only the owner may write says so);
/// the FSName names the storage (`fs2:<dir>`, how tests and `fs2 umount` find the mount).
pub fn config(storage: &Storage, opts: &MountOptions) -> Config {
    let mut c = Config::default();
    let dir = storage.dir().display().to_string().replace([',', ' ', '\\'], "_");
    c.mount_options = vec![
        MountOption::FSName(format!("fs2:{dir}")),
        MountOption::Subtype("fs2".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
    ];
    if opts.read_only {
        c.mount_options.push(MountOption::RO);
    }
    c.acl = if opts.allow_other { SessionACL::All } else { SessionACL::Owner };
    c.n_threads = Some(SESSION_THREADS);
    c
}

/// Invalidate the kernel's `head/<oid>` entries after each commit and the names of
/// merged-away segments and closed clone transactions, until `stop`. Runs in its own
/// thread, never inside a request handler; a commit through the mount answers only once
/// this thread has shown it (`Fs::wait_shown`): read-your-writes across processes.
pub fn spawn_notifier(fs: Arc<Fs>, notifier: Notifier, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let rx = fs.storage().subscribe();
    fs.track_shown();
    std::thread::Builder::new().name("fs2-notify".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for (parent, name) in fs.take_stale_names() {
                let _ = notifier.inval_entry(INodeNo(parent.0), OsStr::new(&name));
            }
            if let Some((n, inodes)) = fs.rewritten_data() {
                for ino in inodes {
                    // Drop the cached pages and attributes (ENOENT = not cached).
                    let _ = notifier.inval_inode(INodeNo(ino.0), 0, -1);
                }
                fs.pages_dropped(n);
            }
            let ev = match rx.recv_timeout(NOTIFIER_POLL) {
                Ok(ev) => ev,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            // Only names the kernel may have cached need it (it knows head/ then). The
            // kernel takes head/'s directory lock: lookups in flight finish first, and
            // their names are dropped too.
            // head/ and refs/ name objects by oid.
            for dir in fs.head_inos() {
                for oid in &ev.oids {
                    // ENOENT = not cached: nothing to do.
                    let _ = notifier.inval_entry(INodeNo(dir.0), OsStr::new(&oid.to_string()));
                }
            }
            // Now no process can be served a name older than this commit.
            fs.set_shown(ev.tid);
        }
    })
}

/// A mount served by background threads (tests, benchmarks). Dropping it unmounts
/// (lazily if the mount is busy) and stops the threads.
pub struct Mounted {
    session: Option<BackgroundSession>,
    stop: Arc<AtomicBool>,
    notify: Option<JoinHandle<()>>,
    pub mountpoint: PathBuf,
    pub fs: Arc<Fs>,
}

/// Mount `storage` on `mountpoint` in background threads.
pub fn spawn(storage: Storage, mountpoint: &Path, opts: &MountOptions) -> std::io::Result<Mounted> {
    let fs = Arc::new(Fs::with_options(storage, opts.clone()));
    let session = fuser::Session::new(FuseFs::new(fs.clone()), mountpoint, &config(fs.storage(), opts))?;
    let notifier = session.notifier();
    let session = session.spawn()?;
    let stop = Arc::new(AtomicBool::new(false));
    let notify = spawn_notifier(fs.clone(), notifier, stop.clone())?;
    Ok(Mounted { session: Some(session), stop, notify: Some(notify), mountpoint: mountpoint.to_path_buf(), fs })
}

impl Mounted {
    /// Unmount and wait for the session to end.
    pub fn unmount(mut self) -> std::io::Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.notify.take() {
            let _ = t.join();
        }
        let r = match self.session.take() {
            Some(s) => s.umount_and_join().inspect_err(|_| {
                // Busy: detach now; the kernel ends the session when the last user leaves.
                let _ = lazy_unmount(&self.mountpoint);
            }),
            None => Ok(()),
        };
        // Unmount aborts every open transaction.
        self.fs.shutdown();
        r
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            log::warn!("unmount {}: {e} (detached lazily)", self.mountpoint.display());
        }
    }
}

fn cpath(p: &Path) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)
}

/// `umount2(path, flags)`.
pub fn umount2(path: &Path, flags: i32) -> std::io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Detach a mount now even if busy (`umount -l`).
pub fn lazy_unmount(path: &Path) -> std::io::Result<()> {
    umount2(path, libc::MNT_DETACH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A blocked job never holds up another, and a worker that is done serves the next
    /// job (no thread per job).
    #[test]
    fn workers_never_queue_a_job_behind_a_blocked_one_and_are_reused() {
        static POOL: Workers = Workers::new();
        let (tx, rx) = mpsc::channel();
        let (unblock, blocked) = mpsc::channel::<()>();
        let t = tx.clone();
        POOL.run(Box::new(move || {
            blocked.recv().unwrap();
            t.send(("blocked", std::thread::current().id())).unwrap();
        }));
        let t = tx.clone();
        POOL.run(Box::new(move || t.send(("second", std::thread::current().id())).unwrap()));
        let timeout = Duration::from_secs(10);
        let (what, second) = rx.recv_timeout(timeout).unwrap();
        assert_eq!(what, "second", "the second job ran while the first was blocked");
        unblock.send(()).unwrap();
        let (what, first) = rx.recv_timeout(timeout).unwrap();
        assert_eq!(what, "blocked");
        assert_ne!(first, second);
        let both_idle = || {
            let deadline = std::time::Instant::now() + timeout;
            while POOL.state.lock().unwrap().1 < 2 {
                assert!(std::time::Instant::now() < deadline, "the workers never became idle");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        for _ in 0..10 {
            both_idle();
            let t = tx.clone();
            POOL.run(Box::new(move || t.send(("again", std::thread::current().id())).unwrap()));
            let (_, id) = rx.recv_timeout(timeout).unwrap();
            assert!(id == first || id == second, "a new thread ran a job while two workers were idle");
        }
    }
}
