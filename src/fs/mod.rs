//! The filesystem view: maps the mounted tree of docs/NAMESPACE.md onto the engine with plain
//! types ([`Entry`], [`Attr`], [`FsError`]). It does not know FUSE: the adapter in
//! `crate::fuse` translates requests and replies, and the unit tests call this layer
//! directly.
//!
//! - Inodes stand for [`Node`]s (see `inodes`): a revision is keyed by (oid, tid)
//!   wherever it appears, so its inode and page cache are shared and never go stale.
//! - Directory listings stream in key order (oid or tid) with stable offsets: the cookie
//!   of an entry is its key plus [`RESERVED`], so a listing resumes by key and never
//!   holds a whole directory in memory (engine pages of [`PAGE`] entries).
//! - Refusals and engine errors become errno values in one place (`errno`).

mod errno;
mod inodes;
pub mod node;
pub mod txn;
mod write;
pub mod zodb;

pub use errno::{errno_of, refuse, FsError, Refusal};
pub use inodes::Ino;
pub use node::Node;
pub use txn::{MountTxn, Status, TxnNo};
pub use write::{parse_merge, FsOptions, Job, MergeCmd, OpenMode, WriteDone};

use crate::views::{RevStat, SegmentBytes, TxnSummaries, TxnSummary, TxnView};
use crate::{Oid, SegmentInfo, SegmentName, SegmentState, Storage, Tid};
use inodes::Inodes;
use node::{parse_at, parse_hex, parse_hex_maybe_deleted, parse_segment, rev_name};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub type FsResult<T> = Result<T, FsError>;

/// TTL of what never changes (revisions, snapshots, committed transactions).
pub const LONG_TTL: Duration = Duration::from_secs(24 * 3600);
/// TTL of what changes (head entries, status files, the chain). Never 0: a listable
/// node with TTL 0 makes `ls -l` many times slower.
pub const SHORT_TTL: Duration = Duration::from_secs(1);
/// Directory cookies 1..=RESERVED are the fixed entries; a keyed entry's is key+RESERVED+1.
pub const RESERVED: u64 = 16;
/// Entries fetched from the engine per step of a listing.
const PAGE: usize = 256;
/// Transactions remembered after a lookup (each scan of a segment to find one is long).
const TXN_CACHE: usize = 64;

pub const README: &str = "\
This is a filestorage2 storage, mounted by `fs2 mount`.

head/              the latest committed state; head/at holds its tid
@<tid>/            the state as of a tid (also @2026-11-21T11:20:30Z); not listed, just cd there
history/<oid>/     every retained revision of an object, one file per tid (<tid>.deleted: a deletion)
transactions/<tid>/ one directory per retained transaction: info and the data it stored
segments/<name>/   the segment files: info, txns (one line per transaction), data (the file
                   byte for byte) and the newest record of each object in the segment
stats              counters
txn/               transactions being built (writable mounts only):
  mkdir txn/T; echo data > txn/T/<oid>; rm txn/T/<oid>; echo commit > txn/T/ctl
  cat txn/T/ctl (open|voted|committed <tid>|aborted|conflict <oid> <tid>|error ...)
  txn/T/info takes lines: user NAME, description TEXT, extension TEXT;
  cat txn/T/new-oid hands out a fresh oid; rmdir txn/T aborts (or removes an ended one)
merge              echo all|policy [K]|<segment names> [--append source-end|target-end] > merge
gc                 echo dry-run|run > gc: ZODB garbage collection (as fs2 gc); cat gc: the result
classes/           (not listed here; ls classes/) live objects by ZODB class as of head:
                   classes/index has count-bytes-class lines, classes/<module.Class>/<oid>
refs/<oid>         (not listed) the persistent references of head/<oid>, one oid per line
referrers/<oid>    (not listed) the head objects referring to <oid> (a scan of every object)

Names are 16 lowercase hex digits. Times are commit times. To pin one snapshot in a
script: T=$(cat head/at); ls @$T/
Everything outside txn/ and merge is read-only (EROFS).
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// File attributes as the kernel gets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    /// The time of the tid that wrote the node (commit time).
    pub mtime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A looked-up name: the attributes and how long the kernel may cache them.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub attr: Attr,
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
}

/// An open file: the handle and the page-cache policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Immutable content: keep the kernel's page cache across opens.
    pub keep_cache: bool,
    /// Changing content or unknown size: bypass the page cache.
    pub direct_io: bool,
    /// Nothing to do at close (no FLUSH request per close).
    pub no_flush: bool,
}

/// One directory entry offered to the adapter's reply buffer.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: Ino,
    /// Pass this offset back to continue after this entry.
    pub cookie: u64,
    pub name: String,
    pub kind: Kind,
    /// With readdirplus: the entry's attributes (its lookup count is already taken).
    pub entry: Option<Entry>,
}

/// `statfs` numbers of the file system holding the storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// Size and time of a node (what attributes need from the engine).
#[derive(Clone, Copy, Debug)]
struct Meta {
    size: u64,
    tid: Tid,
}

enum FileHandle {
    Bytes(Vec<u8>),
    /// A status file (`ctl`, `info`, `merge`, the clone file): the text as of the open,
    /// and where writes go.
    Control(write::Control, Vec<u8>),
    /// `txn/<name>/<oid>`; `append`: every write goes to the end (O_APPEND).
    Obj(Arc<MountTxn>, Oid, bool),
    /// A revision's data, read at the first `read` (a warm `cat` with the page cache
    /// kept never reads, so its open costs no engine work).
    Rev(Oid, Tid, Mutex<Option<Arc<Vec<u8>>>>),
    Segment(SegmentBytes),
    /// A generated text file (`stats`, `segments/<name>/info`, `txns`): the snapshot whose
    /// size was reported. `grows`: append-only (the active segment's `txns`), so a read
    /// past the end renders again and extends it (`tail -f` follows).
    Text(Node, Mutex<Arc<Vec<u8>>>, bool),
    /// `head/watch`: the last tid this descriptor gave (or the one shown at open) and
    /// what of its line is still to be read (a shell's `read` takes a byte at a time).
    Watch(Mutex<(Tid, Vec<u8>)>),
}

/// How long a rendered text file's snapshot serves opens after its size was reported
/// (longer than the attribute TTL, so that `stat` then `open` see the same bytes).
const SNAPSHOT_KEEP: Duration = Duration::from_secs(2);

/// A rendered text file and when it was rendered.
type Snapshot = (Arc<Vec<u8>>, Instant);

/// An open directory. Listing `transactions/` scans segments: the handle keeps the scan
/// so that consecutive readdir calls continue it instead of starting over.
struct DirHandle {
    node: Node,
    txns: Mutex<Option<TxnCursor>>,
}

struct TxnCursor {
    /// The offset the next readdir call passes if it continues this scan.
    next_offset: u64,
    iter: TxnSummaries,
    /// The summary the last call could not fit.
    pending: Option<TxnSummary>,
}

#[derive(Clone, Copy)]
enum Op {
    Lookup,
    Getattr,
    Open,
    Read,
    Readdir,
}
const OPS: [&str; 5] = ["lookup", "getattr", "open", "read", "readdir"];

#[derive(Default)]
struct Counters {
    count: [AtomicU64; 5],
    nanos: [AtomicU64; 5],
    read_bytes: AtomicU64,
    refusals: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    txn_cache_hits: AtomicU64,
    txn_cache_misses: AtomicU64,
}

struct Timer<'a>(&'a Counters, Op, Instant);
impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let i = self.1 as usize;
        self.0.count[i].fetch_add(1, Ordering::Relaxed);
        self.0.nanos[i].fetch_add(self.2.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// The mounted tree over one storage. `Send + Sync`: every method takes `&self`.
pub struct Fs {
    storage: Storage,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<FileHandle>>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    txns: Mutex<VecDeque<Arc<TxnView>>>,
    uid: u32,
    gid: u32,
    started: SystemTime,
    counters: Counters,
    opts: FsOptions,
    /// Where transactions stage their files (`<storage>/.staging`); `None` when read-only.
    staging: Option<std::path::PathBuf>,
    wtxns: Mutex<WTxns>,
    merge: Arc<write::MergeState>,
    /// The newest tid whose stale kernel names have been dropped (read-your-writes).
    shown: Arc<Shown>,
    /// Text files as last rendered for their size (see [`SNAPSHOT_KEEP`]).
    snapshots: Mutex<HashMap<Node, Snapshot>>,
    /// Unmounting: blocked `head/watch` reads end.
    closing: std::sync::atomic::AtomicBool,
    /// `classes/`: the view at the last head it was asked at.
    zviews: zodb::ViewCache,
    gc: Arc<zodb::GcState>,
}

/// The tid that `head/` shows to every process: a commit counts only once the kernel's
/// cached `head/<oid>` names it replaced have been invalidated. `None` while no notifier
/// runs (the unit tests call this layer without a kernel: nothing is cached there).
#[derive(Default)]
struct Shown {
    tid: Mutex<Option<Tid>>,
    cv: std::sync::Condvar,
    /// Segment files rewritten in place (a merge rewrites its successor's header):
    /// (rewrites asked, rewrites whose cached pages the notifier has dropped).
    rewrites: Mutex<(u64, u64)>,
    rewrites_cv: std::sync::Condvar,
}

/// How long a commit waits for the notifier before answering anyway (with a warning).
const SHOWN_WAIT: Duration = Duration::from_secs(10);

impl Shown {
    fn set(&self, tid: Tid) {
        let mut t = self.tid.lock().unwrap();
        if let Some(old) = *t {
            *t = Some(old.max(tid));
        }
        self.cv.notify_all();
    }

    /// Ask the notifier to drop the kernel's cached pages of every segment file, and wait
    /// until it has (at once when untracked): nobody reads a header a merge rewrote.
    pub(super) fn rewritten(&self) {
        if self.tid.lock().unwrap().is_none() {
            return;
        }
        let mut r = self.rewrites.lock().unwrap();
        r.0 += 1;
        let n = r.0;
        let (_r, w) = self.rewrites_cv.wait_timeout_while(r, SHOWN_WAIT, |r| r.1 < n).unwrap();
        if w.timed_out() {
            log::warn!("segment pages not dropped after {SHOWN_WAIT:?}: the notifier is late");
        }
    }

    /// Wait until `tid` or newer is shown (at once when untracked).
    fn wait(&self, tid: Tid) {
        let t = self.tid.lock().unwrap();
        let (t, r) = self.cv.wait_timeout_while(t, SHOWN_WAIT, |t| t.is_some_and(|s| s < tid)).unwrap();
        if r.timed_out() {
            log::warn!("head/ shows {} after {SHOWN_WAIT:?}, not yet {tid}: the notifier is late", opt_tid(*t));
        }
    }
}

/// The transactions of `txn/`. Lock order: this, then a transaction's own lock.
#[derive(Default)]
struct WTxns {
    by_name: BTreeMap<String, TxnNo>,
    by_no: HashMap<TxnNo, Arc<MountTxn>>,
    next: u64,
}

fn tid_time(t: Tid, fallback: SystemTime) -> SystemTime {
    let s = t.to_unix();
    if t == Tid::ZERO || !s.is_finite() || s < 0.0 {
        return fallback;
    }
    UNIX_EPOCH + Duration::from_secs_f64(s)
}

fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn opt_tid(t: Option<Tid>) -> String {
    t.map_or("-".into(), |t| t.to_string())
}

fn no_such(what: impl std::fmt::Display) -> FsError {
    FsError::not_found(format!("{what}: no such name (names are 16 lowercase hex digits; see README)"))
}

impl Fs {
    pub fn new(storage: Storage) -> Fs {
        Fs::with_options(storage, FsOptions::default())
    }

    /// The tree with `txn/` and `merge` writable unless `opts.read_only` or the storage
    /// is open read-only. A writable tree empties `<storage>/.staging` (left by a daemon
    /// that died).
    pub fn with_options(storage: Storage, mut opts: FsOptions) -> Fs {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        opts.read_only |= storage.is_read_only();
        let staging = (!opts.read_only).then(|| {
            let d = storage.dir().join(".staging");
            let _ = std::fs::remove_dir_all(&d);
            if let Err(e) = txn::private_dir(&d) {
                log::warn!("create {}: {e} (transactions through the mount will fail)", d.display());
            }
            d
        });
        Fs {
            opts,
            staging,
            wtxns: Mutex::new(WTxns { next: 1, ..WTxns::default() }),
            merge: Arc::new(write::MergeState::default()),
            shown: Arc::new(Shown::default()),
            snapshots: Mutex::new(HashMap::new()),
            closing: Default::default(),
            zviews: zodb::ViewCache::default(),
            gc: Arc::new(zodb::GcState::default()),
            storage,
            inodes: Mutex::new(Inodes::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            txns: Mutex::new(VecDeque::new()),
            uid,
            gid,
            started: SystemTime::now(),
            counters: Counters::default(),
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    fn timer(&self, op: Op) -> Timer<'_> {
        Timer(&self.counters, op, Instant::now())
    }

    /// Count a failure that the adapter is about to return (for `stats`).
    pub fn note_error(&self, e: &FsError) {
        let c = match e.errno {
            // A miss (a shell probing names) is not an error.
            libc::ENOENT => &self.counters.misses,
            libc::EROFS | libc::EPERM | libc::EXDEV | libc::EACCES => &self.counters.refusals,
            _ => &self.counters.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A notifier starts: from now on commits wait until it has shown them. Call it right
    /// after subscribing to the storage's commits.
    pub fn track_shown(&self) {
        *self.shown.tid.lock().unwrap() = Some(self.storage.last_tid());
    }

    /// The notifier has dropped every kernel name that commits up to `tid` made stale.
    pub fn set_shown(&self, tid: Tid) {
        self.shown.set(tid);
    }

    /// Segment files were rewritten: the inodes of the chain's `data` files the kernel knows and
    /// the request number to pass to [`Fs::pages_dropped`] once their pages are dropped.
    pub fn rewritten_data(&self) -> Option<(u64, Vec<Ino>)> {
        let (asked, done) = *self.shown.rewrites.lock().unwrap();
        if asked == done {
            return None;
        }
        // Only segments still in the chain: a merged-away one keeps its bytes (open
        // descriptors read on), and invalidating it would make the kernel ask for its
        // attributes, which are gone.
        let chain: Vec<SegmentName> =
            self.storage.segments().map(|v| v.into_iter().map(|i| i.name).collect()).unwrap_or_default();
        let inodes = self.inodes.lock().unwrap().matching(|n| matches!(n, Node::SegData(s) if chain.contains(s)));
        Some((asked, inodes))
    }

    pub fn pages_dropped(&self, n: u64) {
        let mut r = self.shown.rewrites.lock().unwrap();
        r.1 = r.1.max(n);
        self.shown.rewrites_cv.notify_all();
    }

    /// The tid `head/` shows (the engine's last tid when no notifier runs).
    pub fn shown_tid(&self) -> Tid {
        self.shown.tid.lock().unwrap().unwrap_or_else(|| self.storage.last_tid())
    }

    /// Whether the engine is ahead of what `head/` shows (a commit's names are being
    /// invalidated): a new transaction must wait ([`Fs::wait_shown`]) so that its `head/`
    /// reads are never older than its base. Waiting blocks: not on a session thread.
    pub fn shown_behind(&self) -> bool {
        self.shown.tid.lock().unwrap().is_some_and(|t| t < self.storage.last_tid())
    }

    /// Wait until `head/` shows the engine's last tid to every process.
    pub fn wait_shown(&self) {
        self.shown.wait(self.storage.last_tid());
    }

    /// Whether `fh` is a `head/watch` descriptor (its reads block: not on a session thread).
    pub fn is_watch(&self, fh: u64) -> bool {
        matches!(self.files.lock().unwrap().get(&fh).map(|h| &**h), Some(FileHandle::Watch(_)))
    }

    /// Wait until `head/` shows a tid newer than `last`; EINTR once `fh` is closed or
    /// the mount ends.
    fn watch(&self, fh: u64, last: Tid) -> FsResult<Tid> {
        loop {
            let t = self.shown.tid.lock().unwrap();
            let (t, _) =
                self.shown.cv.wait_timeout_while(t, Duration::from_secs(1), |t| t.is_some_and(|t| t <= last)).unwrap();
            drop(t);
            let now = self.shown_tid();
            if now > last {
                return Ok(now);
            }
            if !self.files.lock().unwrap().contains_key(&fh) || self.closing.load(Ordering::Relaxed) {
                return Err(FsError::new(libc::EINTR, "head/watch: closed while waiting"));
            }
        }
    }

    /// The inode of `head/` if the kernel knows it (for invalidating head entries).
    pub fn head_ino(&self) -> Option<Ino> {
        self.inodes.lock().unwrap().peek(Node::HeadDir)
    }

    /// The inodes the kernel knows of the directories whose names are oids of head
    /// objects (`head/`, `refs/`): a commit invalidates the names of the oids it changed.
    pub fn head_inos(&self) -> Vec<Ino> {
        let i = self.inodes.lock().unwrap();
        [Node::HeadDir, Node::RefsDir].into_iter().filter_map(|n| i.peek(n)).collect()
    }

    pub fn node(&self, ino: Ino) -> FsResult<Node> {
        self.inodes
            .lock()
            .unwrap()
            .node(ino)
            .ok_or_else(|| FsError::new(libc::ESTALE, format!("inode {} is no longer known", ino.0)))
    }

    /// A readable path of a node for messages.
    pub fn describe(&self, ino: Ino) -> String {
        self.node(ino).map_or_else(|_| format!("inode {}", ino.0), |n| n.to_string().trim_end_matches('/').to_string())
    }

    // ---------------------------------------------------------------------------
    // Names.

    /// Look `name` up in `parent`; counts one kernel lookup of the result.
    pub fn lookup(&self, parent: Ino, name: &str) -> FsResult<Entry> {
        let _t = self.timer(Op::Lookup);
        let pnode = self.node(parent)?;
        let (node, meta) = self.resolve(pnode, name)?;
        let ino = self.inodes.lock().unwrap().lookup(node);
        Ok(self.entry(pnode, node, ino, meta))
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.inodes.lock().unwrap().forget(ino, n);
    }

    fn entry(&self, parent: Node, node: Node, ino: Ino, meta: Meta) -> Entry {
        // Names in head/ and in the chain's directories point at other nodes after a
        // commit, rotation or merge; elsewhere a name always means the same node.
        let entry_ttl = match parent {
            Node::HeadDir
            | Node::SegmentsDir
            | Node::SegDir(_)
            | Node::TxnArea
            | Node::WTxn(_)
            | Node::ClassesDir
            | Node::ClassDir(_)
            | Node::RefsDir
            | Node::ReferrersDir => SHORT_TTL,
            _ => LONG_TTL,
        };
        let entry_ttl = if node.is_per_lookup() { Duration::ZERO } else { entry_ttl };
        let attr_ttl = if node.is_immutable() { LONG_TTL } else { SHORT_TTL };
        Entry { attr: self.attr(node, ino, meta), attr_ttl, entry_ttl }
    }

    fn attr(&self, node: Node, ino: Ino, meta: Meta) -> Attr {
        let writable = node.is_writable() && !self.opts.read_only;
        // The kernel checks these (default_permissions): everyone may read; only the
        // owner writes unless the mount lets others write.
        let (kind, perm, nlink) = match (node.is_dir(), writable, self.opts.others_write) {
            (true, false, _) => (Kind::Dir, 0o555, 2),
            (true, true, false) => (Kind::Dir, 0o755, 2),
            (true, true, true) => (Kind::Dir, 0o777, 2),
            (false, false, _) => (Kind::File, 0o444, 1),
            (false, true, false) => (Kind::File, 0o644, 1),
            (false, true, true) => (Kind::File, 0o666, 1),
        };
        Attr {
            ino,
            kind,
            size: meta.size,
            mtime: tid_time(meta.tid, self.started),
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// The child `name` of `parent`, with its size and time.
    fn resolve(&self, parent: Node, name: &str) -> FsResult<(Node, Meta)> {
        let s = &self.storage;
        let child = match parent {
            Node::Root => match name {
                "README" => Node::Readme,
                "head" => Node::HeadDir,
                "history" => Node::HistoryDir,
                "transactions" => Node::TxnsDir,
                "segments" => Node::SegmentsDir,
                "stats" => Node::Stats,
                "merge" => Node::Merge(self.next_fh.fetch_add(1, Ordering::Relaxed)),
                "gc" => Node::Gc(self.next_fh.fetch_add(1, Ordering::Relaxed)),
                "classes" => Node::ClassesDir,
                "refs" => Node::RefsDir,
                "referrers" => Node::ReferrersDir,
                "txn" if !self.opts.read_only => Node::TxnArea,
                _ => {
                    let t = parse_at(name).ok_or_else(|| no_such(name))?;
                    self.check_at(name, t)?;
                    Node::AtDir(t)
                }
            },
            Node::HeadDir | Node::AtDir(_) => {
                let at = if let Node::AtDir(t) = parent { t } else { Tid::MAX };
                if name == "at" {
                    return Ok(if at == Tid::MAX { Node::HeadAt } else { Node::AtAt(at) })
                        .and_then(|n| Ok((n, self.meta(n)?)));
                }
                if name == "watch" && at == Tid::MAX {
                    return Ok((Node::HeadWatch, self.meta(Node::HeadWatch)?));
                }
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                match s.stat_at(oid, at)? {
                    Some(r) if !r.deleted => return Ok((Node::Rev(oid, r.tid), Meta { size: r.size, tid: r.tid })),
                    _ => return Err(FsError::not_found(format!("{name}: no such object (in {parent})"))),
                }
            }
            Node::HistoryDir => {
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                let tid = s.current_tid(oid)?.ok_or_else(|| no_such(format!("history/{name}")))?;
                return Ok((Node::HistoryOid(oid), Meta { size: 0, tid }));
            }
            Node::HistoryOid(oid) => {
                let (t, deleted) = parse_hex_maybe_deleted(name).ok_or_else(|| no_such(name))?;
                match s.stat_at(oid, Tid(t))? {
                    Some(r) if r.tid == Tid(t) && r.deleted == deleted => return Ok(rev_node(&r)),
                    _ => return Err(no_such(format!("history/{oid}/{name}"))),
                }
            }
            Node::TxnsDir => {
                let t = Tid(parse_hex(name).ok_or_else(|| no_such(name))?);
                self.txn(t)?;
                Node::TxnDir(t)
            }
            Node::TxnDir(t) => {
                if name == "info" {
                    Node::TxnInfo(t)
                } else {
                    let (o, deleted) = parse_hex_maybe_deleted(name).ok_or_else(|| no_such(name))?;
                    let txn = self.txn(t)?;
                    let r = txn.records.iter().find(|r| r.oid == Oid(o) && r.deleted == deleted);
                    return r.map(rev_node).ok_or_else(|| no_such(format!("transactions/{t}/{name}")));
                }
            }
            Node::SegmentsDir => {
                let n = parse_segment(name).ok_or_else(|| no_such(name))?;
                self.seg_info(n)?;
                Node::SegDir(n)
            }
            Node::SegDir(n) => match name {
                "info" => Node::SegInfo(n),
                "txns" => Node::SegTxns(n),
                "data" => Node::SegData(n),
                _ => {
                    let (o, deleted) = parse_hex_maybe_deleted(name).ok_or_else(|| no_such(name))?;
                    return match s.segment_record(n, Oid(o))? {
                        Some(r) if r.deleted == deleted => Ok(rev_node(&r)),
                        _ => Err(no_such(format!("segments/{n}/{name}"))),
                    };
                }
            },
            Node::TxnArea | Node::WTxn(_) => return self.resolve_txn(parent, name),
            Node::ClassesDir | Node::ClassDir(_) | Node::RefsDir | Node::ReferrersDir => {
                return self.resolve_zodb(parent, name)
            }
            _ => return Err(FsError::new(libc::ENOTDIR, format!("{parent} is not a directory"))),
        };
        Ok((child, self.meta(child)?))
    }

    /// `@<tid>` must lie within the retained history: not older than the oldest retained
    /// transaction, not newer than head.
    fn check_at(&self, name: &str, t: Tid) -> FsResult<()> {
        let s = &self.storage;
        let last = s.last_tid();
        // A merge keeps only the states at the ends of what it merged: states strictly
        // inside are gone.
        if let Some((_, end, seg)) = s.history_gaps()?.into_iter().find(|(lo, hi, _)| *lo < t && t < *hi) {
            return Err(FsError::not_found(format!(
                "{name}: that history was merged into {seg} (exact states from {end} on); see segments/"
            )));
        }
        match s.first_tid() {
            Some(first) if t >= first && t <= last => Ok(()),
            // A time (not a tid) after the last commit that has passed: head as of then
            // (a later commit gets a later tid, so this state never changes).
            Some(_) if t > last && t <= Tid::now() && parse_hex(&name[1..]).is_none() => Ok(()),
            Some(first) => Err(FsError::not_found(format!(
                "{name}: outside the retained history {first}..{last} (see head/at and transactions/)"
            ))),
            None => Err(FsError::not_found(format!("{name}: the storage has no transactions yet"))),
        }
    }

    fn txn(&self, t: Tid) -> FsResult<Arc<TxnView>> {
        {
            let c = self.txns.lock().unwrap();
            if let Some(x) = c.iter().find(|x| x.tid == t) {
                self.counters.txn_cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(x.clone());
            }
        }
        self.counters.txn_cache_misses.fetch_add(1, Ordering::Relaxed);
        let x = Arc::new(self.storage.transaction(t)?.ok_or_else(|| no_such(format!("transactions/{t}")))?);
        let mut c = self.txns.lock().unwrap();
        if c.len() >= TXN_CACHE {
            c.pop_front();
        }
        c.push_back(x.clone());
        Ok(x)
    }

    fn seg_info(&self, n: SegmentName) -> FsResult<SegmentInfo> {
        self.storage
            .segments()?
            .into_iter()
            .find(|s| s.name == n)
            .ok_or_else(|| FsError::not_found(format!("segments/{n}: not in the chain (merged away?); ls segments/")))
    }

    /// Size and time of `node` (errors if it has vanished, e.g. merged away).
    fn meta(&self, node: Node) -> FsResult<Meta> {
        let s = &self.storage;
        let last = s.last_tid();
        let m = |size: u64, tid: Tid| Ok(Meta { size, tid });
        match node {
            Node::Root | Node::HeadDir | Node::HistoryDir | Node::TxnsDir | Node::SegmentsDir => m(0, last),
            Node::Stats => m(self.snapshot(node)?.len() as u64, last),
            Node::Readme => m(README.len() as u64, Tid::ZERO),
            Node::HeadAt => m(17, last),
            // A stream (like a pipe): no size.
            Node::HeadWatch => m(0, last),
            Node::AtDir(t) => m(0, t),
            Node::AtAt(t) => m(17, t),
            Node::Rev(o, t) | Node::Deleted(o, t) => match s.stat_at(o, t)? {
                Some(r) if r.tid == t && r.deleted == matches!(node, Node::Deleted(..)) => m(r.size, t),
                _ => Err(FsError::not_found(format!("revision {t} of {o} is no longer retained (merged away)"))),
            },
            Node::HistoryOid(o) => {
                m(0, s.current_tid(o)?.ok_or_else(|| no_such(format!("history/{o}: no retained revisions")))?)
            }
            Node::TxnDir(t) => self.txn(t).map(|_| Meta { size: 0, tid: t }),
            Node::TxnInfo(t) => m(render_txn_info(&*self.txn(t)?).len() as u64, t),
            Node::SegDir(n) => m(0, self.seg_info(n)?.last_tid.unwrap_or(Tid::ZERO)),
            Node::SegTxns(n) | Node::SegInfo(n) => {
                let size = self.snapshot(node)?.len() as u64;
                m(size, self.seg_info(n)?.last_tid.unwrap_or(Tid::ZERO))
            }
            Node::SegData(n) => {
                let i = self.seg_info(n)?;
                m(s.segment_bytes(n)?.file_len()?, i.last_tid.unwrap_or(Tid::ZERO))
            }
            Node::TxnArea | Node::TxnClone(_) => m(0, last),
            Node::WNewOid(_) => m(17, last),
            Node::Merge(_) => m(self.merge_text().len() as u64, last),
            Node::Gc(_) => m(self.gc.text().len() as u64, last),
            Node::ClassesDir | Node::RefsDir | Node::ReferrersDir => m(0, last),
            Node::Referrers(_) => m(self.snapshot(node)?.len() as u64, last),
            Node::ClassesAt => m(17, self.shown_tid()),
            Node::ClassIndex => {
                let size = self.snapshot(node)?.len() as u64;
                m(size, self.shown_tid())
            }
            Node::ClassDir(id) => {
                let v = self.class_view()?;
                let c = v.class(id).ok_or_else(|| self.gone_class(id, v.tid))?;
                m(c.count, v.tid)
            }
            Node::Refs(o, t) => m(self.refs_text(o, t)?.len() as u64, t),
            Node::WTxn(n) => self.wtxn(n).map(|_| Meta { size: 0, tid: last }),
            Node::WCtl(n) => m(self.wtxn(n)?.status_line().len() as u64, last),
            Node::WInfo(n) => m(self.wtxn(n)?.info_text().len() as u64, last),
            Node::WObj(n, o) => match self.wtxn(n)?.stat(s, o)? {
                Some(size) => m(size, last),
                None => Err(no_such(format!("{node}"))),
            },
        }
    }

    /// Attributes of `ino` and how long they may be cached.
    pub fn getattr(&self, ino: Ino) -> FsResult<(Attr, Duration)> {
        self.getattr_open(ino, None)
    }

    /// Attributes of `ino`, asked through the open file `fh` if given: a segment
    /// merged away since the open has no name any more, but its open file still has
    /// its size (the kernel asks before reading at the end).
    pub fn getattr_open(&self, ino: Ino, fh: Option<u64>) -> FsResult<(Attr, Duration)> {
        let _t = self.timer(Op::Getattr);
        let node = self.node(ino)?;
        let meta = self.meta(node).or_else(|e| {
            let h = fh.and_then(|fh| self.files.lock().unwrap().get(&fh).cloned());
            match h.as_deref() {
                Some(FileHandle::Segment(seg)) => Ok(Meta { size: seg.file_len()?, tid: Tid::ZERO }),
                _ => Err(e),
            }
        })?;
        let ttl = if node.is_immutable() { LONG_TTL } else { SHORT_TTL };
        Ok((self.attr(node, ino, meta), ttl))
    }

    // ---------------------------------------------------------------------------
    // Files.

    /// Open a file for reading, or for writing when `write` (EROFS outside `txn/` and
    /// `merge`).
    pub fn open(&self, ino: Ino, write: bool) -> FsResult<Opened> {
        self.open_with(ino, OpenMode { write, ..OpenMode::default() })
    }

    /// Open a file as `mode` says.
    pub fn open_with(&self, ino: Ino, mode: OpenMode) -> FsResult<Opened> {
        let _t = self.timer(Op::Open);
        let node = self.node(ino)?;
        if (mode.write || mode.truncate) && (!node.is_writable() || self.opts.read_only) {
            return Err(refuse(Refusal::Write("open for writing"), &node.to_string()));
        }
        if let Some(h) = self.open_writable(node, mode)? {
            return Ok(self.add_handle(h, false));
        }
        let s = &self.storage;
        let (handle, keep_cache) = match node {
            Node::Rev(o, t) => (FileHandle::Rev(o, t, Mutex::new(None)), true),
            Node::Deleted(..) => (FileHandle::Bytes(Vec::new()), true),
            Node::Readme => (FileHandle::Bytes(README.as_bytes().to_vec()), true),
            Node::HeadAt => (FileHandle::Bytes(format!("{}\n", self.shown_tid()).into_bytes()), false),
            Node::HeadWatch => (FileHandle::Watch(Mutex::new((self.shown_tid(), Vec::new()))), false),
            Node::AtAt(t) => (FileHandle::Bytes(format!("{t}\n").into_bytes()), true),
            Node::TxnInfo(t) => (FileHandle::Bytes(render_txn_info(&*self.txn(t)?).into_bytes()), true),
            Node::Stats | Node::SegInfo(_) | Node::SegTxns(_) | Node::ClassIndex | Node::Referrers(_) => {
                let kept = self.snapshots.lock().unwrap().get(&node).cloned();
                let bytes = match kept {
                    Some((b, at)) if at.elapsed() < SNAPSHOT_KEEP => b,
                    _ => self.snapshot(node)?,
                };
                let grows = matches!(node, Node::SegTxns(n) if self.seg_info(n)?.state == SegmentState::Active);
                (FileHandle::Text(node, Mutex::new(bytes), grows), false)
            }
            Node::ClassesAt => (FileHandle::Bytes(format!("{}\n", self.class_view()?.tid).into_bytes()), false),
            Node::Refs(o, t) => (FileHandle::Bytes(self.refs_text(o, t)?.into_bytes()), true),
            Node::SegData(n) => {
                let b = s.segment_bytes(n)?;
                // A sealed segment never changes; the active one grows.
                let sealed = b.state == SegmentState::Past;
                (FileHandle::Segment(b), sealed)
            }
            _ => return Err(FsError::new(libc::EISDIR, format!("{node} is a directory"))),
        };
        Ok(self.add_handle(handle, keep_cache))
    }

    fn add_handle(&self, handle: FileHandle, keep_cache: bool) -> Opened {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().unwrap().insert(fh, Arc::new(handle));
        Opened { fh, keep_cache, direct_io: !keep_cache, no_flush: true }
    }

    /// At most `size` bytes at `offset` (fewer at the end; never more than asked).
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let _t = self.timer(Op::Read);
        let h = self.files.lock().unwrap().get(&fh).cloned();
        let h = h.ok_or_else(|| FsError::new(libc::EBADF, format!("file handle {fh} is not open")))?;
        let slice = |b: &[u8]| {
            let start = (offset.min(b.len() as u64)) as usize;
            let end = start + (size as usize).min(b.len() - start);
            b[start..end].to_vec()
        };
        let out = match &*h {
            FileHandle::Bytes(b) | FileHandle::Control(_, b) => slice(b),
            FileHandle::Obj(t, oid, _) => t.read(&self.storage, *oid, offset, size)?,
            FileHandle::Rev(o, t, cell) => {
                let mut c = cell.lock().unwrap();
                let data = match &*c {
                    Some(d) => d.clone(),
                    None => {
                        let d = match self.storage.revision(*o, *t)? {
                            Some(r) if r.data.is_some() => Arc::new(r.data.unwrap_or_default()),
                            _ => return Err(FsError::not_found(format!("revision {t} of {o} is no longer retained"))),
                        };
                        *c = Some(d.clone());
                        d
                    }
                };
                drop(c);
                slice(&data)
            }
            FileHandle::Watch(w) => {
                let mut w = w.lock().unwrap();
                let (last, pending) = &mut *w;
                if pending.is_empty() {
                    *last = self.watch(fh, *last)?;
                    *pending = format!("{last}\n").into_bytes();
                }
                pending.drain(..pending.len().min(size as usize)).collect()
            }
            FileHandle::Text(node, cell, grows) => {
                let mut b = cell.lock().unwrap();
                if *grows && offset.saturating_add(size as u64) > b.len() as u64 {
                    // Append-only: a longer rendering that keeps what was read extends it.
                    let now = self.render(*node)?;
                    if now.len() > b.len() && now.starts_with(&b) {
                        *b = Arc::new(now);
                    }
                }
                slice(&b)
            }
            FileHandle::Segment(seg) => {
                let mut buf = vec![0u8; size as usize];
                let n = seg.read_at(&mut buf, offset)?;
                buf.truncate(n);
                buf
            }
        };
        self.counters.read_bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    pub fn release(&self, fh: u64) {
        let h = self.files.lock().unwrap().remove(&fh);
        if let Some(h) = h {
            self.released(&h);
        }
    }

    // ---------------------------------------------------------------------------
    // Directories.

    pub fn opendir(&self, ino: Ino) -> FsResult<u64> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(FsError::new(libc::ENOTDIR, format!("{node} is not a directory")));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().unwrap().insert(fh, Arc::new(DirHandle { node, txns: Mutex::new(None) }));
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
    }

    /// Offer the entries of directory `ino` after `offset` to `add`, in order, until
    /// `add` returns true (buffer full; that entry was not taken). With `plus`, each
    /// taken entry (except `.` and `..`) carries its attributes and counts as a lookup.
    pub fn readdir(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(&DirEntry) -> bool,
    ) -> FsResult<()> {
        let _t = self.timer(Op::Readdir);
        let dir = self.dirs.lock().unwrap().get(&fh).cloned();
        let dir = match dir {
            Some(d) => d,
            None => Arc::new(DirHandle { node: self.node(ino)?, txns: Mutex::new(None) }),
        };
        let node = dir.node;
        let mut e = Emit { fs: self, dir: node, ino, plus, add };
        let fixed: &[&str] = match node {
            // classes/ and refs/ are lookup-only here: tree walks never enter them.
            Node::Root if self.opts.read_only => {
                &[".", "..", "README", "gc", "head", "history", "merge", "segments", "stats", "transactions"]
            }
            Node::Root => {
                &[".", "..", "README", "gc", "head", "history", "merge", "segments", "stats", "transactions", "txn"]
            }
            Node::ClassesDir => &[".", "..", "at", "index"],
            Node::TxnArea => &[".", "..", "new"],
            Node::WTxn(_) => &[".", "..", "ctl", "info", "new-oid"],
            // head/watch is lookup-only: a tree walk (`cp -r`, `grep -r`) must not block on it.
            Node::HeadDir | Node::AtDir(_) => &[".", "..", "at"],
            Node::TxnDir(_) => &[".", "..", "info"],
            Node::SegDir(_) => &[".", "..", "info", "txns", "data"],
            _ => &[".", ".."],
        };
        // Fixed entries first: cookie i + 1.
        let mut start_key = 0u64;
        if offset <= RESERVED {
            for (i, name) in fixed.iter().enumerate().skip(offset as usize) {
                let cookie = i as u64 + 1;
                let ok = match *name {
                    "." | ".." => e.offer_dot(cookie, name),
                    _ => {
                        let (child, meta) = self.resolve(node, name)?;
                        e.offer(cookie, name.to_string(), child, || Ok(meta))?
                    }
                };
                if !ok {
                    return Ok(());
                }
            }
        } else {
            start_key = offset - RESERVED;
        }
        let s = &self.storage;
        match node {
            Node::HeadDir | Node::AtDir(_) => {
                let at = if let Node::AtDir(t) = node { t } else { Tid::MAX };
                let mut key = start_key;
                loop {
                    let (page, next) = live_page(s, Oid(key), at)?;
                    for o in &page {
                        let meta = Meta { size: o.size, tid: o.tid };
                        if !e.keyed(o.oid.0, o.oid.to_string(), Node::Rev(o.oid, o.tid), || Ok(meta))? {
                            return Ok(());
                        }
                    }
                    match next {
                        Some(n) => key = n,
                        None => return Ok(()),
                    }
                }
            }
            Node::HistoryDir => {
                let mut key = start_key;
                loop {
                    let page = s.list_oids(Oid(key), PAGE)?;
                    for &o in &page {
                        let meta = || {
                            let tid = s.current_tid(o)?.unwrap_or(Tid::ZERO);
                            Ok(Meta { size: 0, tid })
                        };
                        if !e.keyed(o.0, o.to_string(), Node::HistoryOid(o), meta)? {
                            return Ok(());
                        }
                    }
                    match page.last() {
                        Some(l) if page.len() == PAGE && l.0 < u64::MAX => key = l.0 + 1,
                        _ => return Ok(()),
                    }
                }
            }
            Node::HistoryOid(o) => {
                // One object's retained revisions (bounded by what merging keeps).
                let mut h = s.history(o)?;
                h.reverse();
                for r in h.into_iter().filter(|r| r.tid.0 >= start_key) {
                    let st = RevStat { oid: o, tid: r.tid, size: r.size, deleted: r.deleted };
                    let (child, meta) = rev_node(&st);
                    if !e.keyed(r.tid.0, rev_name(r.tid.0, r.deleted), child, || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::TxnsDir => {
                let mut cur = dir.txns.lock().unwrap();
                let resume = matches!(&*cur, Some(c) if c.next_offset == offset);
                if !resume {
                    *cur =
                        Some(TxnCursor { next_offset: offset, iter: s.txn_summaries(Tid(start_key)), pending: None });
                }
                let c = cur.as_mut().expect("set above");
                loop {
                    let x = match c.pending.take() {
                        Some(x) => x,
                        None => match c.iter.next() {
                            Some(Ok(x)) => x,
                            // A damaged transaction (fault containment) is left out.
                            Some(Err(e)) if e.is_corruption() => {
                                log::error!("transactions/: not listed: {e}");
                                continue;
                            }
                            Some(Err(e)) => return Err(e.into()),
                            None => return Ok(()),
                        },
                    };
                    let meta = Meta { size: 0, tid: x.tid };
                    if !e.keyed(x.tid.0, x.tid.to_string(), Node::TxnDir(x.tid), || Ok(meta))? {
                        c.pending = Some(x);
                        return Ok(());
                    }
                    c.next_offset = x.tid.0.saturating_add(RESERVED + 1);
                }
            }
            Node::TxnDir(t) => {
                let txn = self.txn(t)?;
                let mut recs: Vec<&RevStat> = txn.records.iter().filter(|r| r.oid.0 >= start_key).collect();
                recs.sort_by_key(|r| r.oid);
                for r in recs {
                    let (child, meta) = rev_node(r);
                    if !e.keyed(r.oid.0, rev_name(r.oid.0, r.deleted), child, || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::SegmentsDir => {
                for i in s.segments()?.into_iter().filter(|i| i.name.first >= start_key) {
                    let meta = Meta { size: 0, tid: i.last_tid.unwrap_or(Tid::ZERO) };
                    if !e.keyed(i.name.first, i.name.to_string(), Node::SegDir(i.name), || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::SegDir(n) => {
                let mut key = start_key;
                loop {
                    let page = s.segment_records(n, Oid(key), PAGE)?;
                    for r in &page {
                        let (child, meta) = rev_node(r);
                        if !e.keyed(r.oid.0, rev_name(r.oid.0, r.deleted), child, || Ok(meta))? {
                            return Ok(());
                        }
                    }
                    match page.last() {
                        Some(l) if page.len() == PAGE && l.oid.0 < u64::MAX => key = l.oid.0 + 1,
                        _ => return Ok(()),
                    }
                }
            }
            Node::TxnArea => {
                let names: Vec<(String, TxnNo)> =
                    self.wtxns.lock().unwrap().by_name.iter().map(|(k, v)| (k.clone(), *v)).collect();
                // Cookies by position: a name made or removed during a listing may shift it.
                for (i, (name, no)) in names.into_iter().enumerate().skip(start_key as usize) {
                    if !e.keyed(i as u64, name, Node::WTxn(no), || Ok(Meta { size: 0, tid: s.last_tid() }))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::ClassesDir => {
                let v = self.class_view()?;
                let names: Vec<(u32, String)> = {
                    let n = self.zviews.names.lock().unwrap();
                    v.classes
                        .iter()
                        .filter(|c| c.id as u64 >= start_key)
                        .map(|c| (c.id, n.name(c.id).unwrap_or("?").to_string()))
                        .collect()
                };
                for (id, name) in names {
                    let c = v.class(id).expect("listed from the view");
                    let meta = Meta { size: c.count, tid: v.tid };
                    if !e.keyed(id as u64, name, Node::ClassDir(id), || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::ClassDir(id) => {
                let v = self.class_view()?;
                let c = v.class(id).ok_or_else(|| self.gone_class(id, v.tid))?;
                for m in v.members(c, start_key) {
                    let meta = Meta { size: m.size, tid: m.tid };
                    if !e.keyed(m.oid.0, m.oid.to_string(), Node::Rev(m.oid, m.tid), || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::WTxn(n) => {
                let t = self.wtxn(n)?;
                for (o, size) in t.staged_data().into_iter().filter(|(o, _)| o.0 >= start_key) {
                    let meta = Meta { size, tid: s.last_tid() };
                    if !e.keyed(o.0, o.to_string(), Node::WObj(n, o), || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ---------------------------------------------------------------------------
    // The ZODB views (`zodb`).

    /// The class view as of the tid `head/` shows (built at the first use after head moved).
    fn class_view(&self) -> FsResult<Arc<zodb::ClassView>> {
        Ok(self.zviews.get(&self.storage, self.shown_tid())?)
    }

    fn gone_class(&self, id: u32, at: Tid) -> FsError {
        let n = self.zviews.names.lock().unwrap().name(id).unwrap_or("?").to_string();
        FsError::not_found(format!("classes/{n}: no live object of that class as of {at}"))
    }

    /// `refs/<oid>` of revision (oid, tid): ENOENT (with the reason) if it is not a ZODB record.
    fn refs_text(&self, oid: Oid, tid: Tid) -> FsResult<String> {
        let data = match self.storage.revision(oid, tid)? {
            Some(r) if r.data.is_some() => r.data.unwrap_or_default(),
            _ => return Err(FsError::not_found(format!("revision {tid} of {oid} is no longer retained"))),
        };
        zodb::refs_text(&data).map_err(|why| {
            FsError::not_found(format!("refs/{oid}: {why} (classes/{}/ lists such objects)", zodb::NOT_ZODB_DIR))
        })
    }

    /// Names inside `classes/`, `classes/<name>/` and `refs/`.
    fn resolve_zodb(&self, parent: Node, name: &str) -> FsResult<(Node, Meta)> {
        let child = match parent {
            Node::ClassesDir if name == "at" => Node::ClassesAt,
            Node::ClassesDir if name == "index" => Node::ClassIndex,
            Node::ClassesDir => {
                let v = self.class_view()?;
                let id = self.zviews.names.lock().unwrap().find(name);
                let c = id.and_then(|id| v.class(id)).ok_or_else(|| {
                    FsError::not_found(format!("classes/{name}: no live object of that class as of {}", v.tid))
                })?;
                return Ok((Node::ClassDir(c.id), Meta { size: c.count, tid: v.tid }));
            }
            Node::ClassDir(id) => {
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                let v = self.class_view()?;
                let c = v.class(id).ok_or_else(|| self.gone_class(id, v.tid))?;
                let m = v.member(c, oid).ok_or_else(|| no_such(format!("{parent}/{name}")))?;
                return Ok((Node::Rev(m.oid, m.tid), Meta { size: m.size, tid: m.tid }));
            }
            Node::RefsDir => {
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                match self.storage.stat_at(oid, Tid::MAX)? {
                    Some(r) if !r.deleted => Node::Refs(oid, r.tid),
                    _ => return Err(FsError::not_found(format!("refs/{name}: no such object"))),
                }
            }
            Node::ReferrersDir => {
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                match self.storage.stat_at(oid, Tid::MAX)? {
                    Some(r) if !r.deleted => Node::Referrers(oid),
                    _ => return Err(FsError::not_found(format!("referrers/{name}: no such object"))),
                }
            }
            _ => unreachable!("resolve_zodb is called for the ZODB directories"),
        };
        Ok((child, self.meta(child)?))
    }

    // ---------------------------------------------------------------------------
    // The file system and status files.

    /// The real numbers of the file system holding the storage.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let dir = self.storage.dir();
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| FsError::new(libc::EINVAL, "storage path holds a NUL byte"))?;
        // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path; statvfs fills in `st` completely on
        // success.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(FsError::new(e.raw_os_error().unwrap_or(libc::EIO), format!("statvfs {}: {e}", dir.display())));
        }
        Ok(StatFs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namemax as u32,
            frsize: st.f_frsize as u32,
        })
    }

    /// The text of a generated file as of now.
    fn render(&self, node: Node) -> FsResult<Vec<u8>> {
        Ok(match node {
            Node::Stats => self.render_stats()?.into_bytes(),
            Node::SegInfo(n) => render_seg_info(&self.seg_info(n)?).into_bytes(),
            Node::ClassIndex => {
                let v = self.class_view()?;
                v.index_text(&self.zviews.names.lock().unwrap()).into_bytes()
            }
            Node::Referrers(o) => zodb::referrers_text(&self.storage, o, self.shown_tid())?.into_bytes(),
            Node::SegTxns(n) => {
                let mut out = String::new();
                for x in self.storage.segment_txn_summaries(n)? {
                    // A damaged transaction (fault containment) is left out.
                    let x = match x {
                        Ok(x) => x,
                        Err(e) if e.is_corruption() => {
                            log::error!("{n}/txns: not listed: {e}");
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    out.push_str(&format!("{} {} {}\n", x.tid, x.objects, x.bytes));
                }
                out.into_bytes()
            }
            _ => return Err(FsError::new(libc::EINVAL, format!("{node} is not a generated text file"))),
        })
    }

    /// Render `node` now and keep it for the next open (its size is about to be reported).
    fn snapshot(&self, node: Node) -> FsResult<Arc<Vec<u8>>> {
        let b = Arc::new(self.render(node)?);
        let mut snaps = self.snapshots.lock().unwrap();
        snaps.retain(|_, (_, at)| at.elapsed() < SNAPSHOT_KEEP);
        snaps.insert(node, (b.clone(), Instant::now()));
        Ok(b)
    }

    fn render_stats(&self) -> FsResult<String> {
        let s = &self.storage;
        let st = s.stats()?;
        let c = &self.counters;
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k}: {v}\n"));
        line("last_tid", st.last_tid.to_string());
        line("objects", s.count_objects()?.to_string());
        line("max_oid", st.max_oid.map_or("-".into(), |o| o.to_string()));
        line("segments", st.segments.to_string());
        line("bytes", st.bytes.to_string());
        line("transactions", st.transactions.to_string());
        line("records", st.records.to_string());
        line("commits", st.commits.to_string());
        line("conflicts", st.conflicts.to_string());
        line(
            "ignored_tail",
            s.ignored_tail()
                .map_or("-".into(), |t| format!("{} bytes at {}:{}", t.bytes, t.segment.display(), t.offset)),
        );
        let merge = match s.merge_progress() {
            Some(p) => {
                let names: Vec<String> = p.inputs.iter().map(|n| n.to_string()).collect();
                let total = p.bytes_total.load(Ordering::Relaxed).max(1);
                let pct = p.bytes_done.load(Ordering::Relaxed) * 100 / total;
                format!("running {} {pct}%", names.join(" "))
            }
            None => "idle".into(),
        };
        line("merge", merge);
        line("class_view_builds", self.zviews.builds.load(Ordering::Relaxed).to_string());
        line("inodes", self.inodes.lock().unwrap().len().to_string());
        line("open_files", self.files.lock().unwrap().len().to_string());
        line("txn_cache_hits", c.txn_cache_hits.load(Ordering::Relaxed).to_string());
        line("txn_cache_misses", c.txn_cache_misses.load(Ordering::Relaxed).to_string());
        line("read_bytes", c.read_bytes.load(Ordering::Relaxed).to_string());
        line("refusals", c.refusals.load(Ordering::Relaxed).to_string());
        line("not_found", c.misses.load(Ordering::Relaxed).to_string());
        line("errors", c.errors.load(Ordering::Relaxed).to_string());
        for (i, name) in OPS.iter().enumerate() {
            let n = c.count[i].load(Ordering::Relaxed);
            let ns = c.nanos[i].load(Ordering::Relaxed);
            let mean = if n == 0 { 0.0 } else { ns as f64 / n as f64 / 1000.0 };
            line(name, format!("{n} requests, mean {mean:.1} us"));
        }
        Ok(out)
    }
}

/// The node and meta of a retained record.
fn rev_node(r: &RevStat) -> (Node, Meta) {
    let node = if r.deleted { Node::Deleted(r.oid, r.tid) } else { Node::Rev(r.oid, r.tid) };
    (node, Meta { size: if r.deleted { 0 } else { r.size }, tid: r.tid })
}

fn render_txn_info(t: &TxnView) -> String {
    format!(
        "tid: {}\ntime: {}\nuser: {}\ndescription: {}\nextension: {}\nobjects: {}\nbytes: {}\nsegment: {}\n",
        t.tid,
        t.tid.iso8601(),
        esc(&t.meta.user),
        esc(&t.meta.description),
        esc(&t.meta.extension),
        t.records.len(),
        t.bytes,
        t.segment
    )
}

fn render_seg_info(i: &SegmentInfo) -> String {
    let state = match i.state {
        SegmentState::Active => "active",
        SegmentState::Past => "past",
    };
    let mut out = format!(
        "name: {}\nstate: {state}\nprevious: {}\nfirst_tid: {}\nlast_tid: {}\nbytes: {}\ntransactions: {}\n\
         records: {}\npath: {}\n",
        i.name,
        i.prev.as_deref().unwrap_or("-"),
        opt_tid(i.first_tid),
        opt_tid(i.last_tid),
        i.bytes,
        i.transactions,
        i.records,
        i.path.display()
    );
    // What an append merge put behind this segment's own data, newest data first.
    for a in &i.appended {
        let as_of = match a.as_of {
            crate::types::AsOf::Source => "source-end",
            crate::types::AsOf::Target => "target-end",
        };
        out.push_str(&format!(
            "appended: {} as of {as_of}, tids {}..{}, {} transactions, {} records\n",
            a.source,
            opt_tid(a.first_tid),
            opt_tid(a.last_tid),
            a.transactions,
            a.records
        ));
    }
    out
}

/// Feeds one readdir reply.
struct Emit<'a> {
    fs: &'a Fs,
    dir: Node,
    ino: Ino,
    plus: bool,
    add: &'a mut dyn FnMut(&DirEntry) -> bool,
}

impl Emit<'_> {
    fn offer_dot(&mut self, cookie: u64, name: &str) -> bool {
        let ino = if name == "." { self.ino } else { Ino::ROOT };
        let entry = self.plus.then(|| {
            let attr = self.fs.attr(Node::Root, ino, Meta { size: 0, tid: Tid::ZERO });
            Entry { attr, attr_ttl: SHORT_TTL, entry_ttl: SHORT_TTL }
        });
        !(self.add)(&DirEntry { ino, cookie, name: name.to_string(), kind: Kind::Dir, entry })
    }

    /// Offer an entry; false when the buffer is full.
    fn offer(
        &mut self,
        cookie: u64,
        name: String,
        node: Node,
        meta: impl FnOnce() -> FsResult<Meta>,
    ) -> FsResult<bool> {
        let kind = if node.is_dir() { Kind::Dir } else { Kind::File };
        if !self.plus {
            // Plain readdir: d_ino is informational; unknown nodes get no inode.
            let ino = self.fs.inodes.lock().unwrap().peek(node).unwrap_or(Ino(u64::MAX));
            return Ok(!(self.add)(&DirEntry { ino, cookie, name, kind, entry: None }));
        }
        let meta = meta()?;
        let ino = self.fs.inodes.lock().unwrap().lookup(node);
        let entry = self.fs.entry(self.dir, node, ino, meta);
        let taken = !(self.add)(&DirEntry { ino, cookie, name, kind, entry: Some(entry) });
        if !taken {
            self.fs.forget(ino, 1);
        }
        Ok(taken)
    }

    /// Offer the entry with key `key` (cookie key + RESERVED + 1); false when full or
    /// when the key is too large to have a cookie (keys above u64::MAX - 17 are
    /// reachable by lookup only).
    fn keyed(&mut self, key: u64, name: String, node: Node, meta: impl FnOnce() -> FsResult<Meta>) -> FsResult<bool> {
        match key.checked_add(RESERVED + 1) {
            Some(cookie) => self.offer(cookie, name, node, meta),
            None => Ok(false),
        }
    }
}

/// A page of live objects from `start` as of `at`, and the key to go on from. Damaged
/// objects are left out of the listing (logged; looking one up answers EIO).
fn live_page(s: &Storage, start: Oid, at: Tid) -> FsResult<(Vec<crate::ObjectInfo>, Option<u64>)> {
    let (page, damaged, next) = s.list_contained(start, at, PAGE)?;
    for (oid, e) in damaged {
        log::error!("{oid}: not listed: {e}");
    }
    Ok((page, next.map(|o| o.0)))
}

#[cfg(test)]
mod tests;
