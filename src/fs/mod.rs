//! The filesystem view: maps the mounted tree of docs/NAMESPACE.md onto the engine with plain
//! types ([`Entry`], [`Attr`], [`FsError`]). It does not know FUSE: the adapter in
//! `crate::fuse` translates requests and replies, and the unit tests call this layer
//! directly. One responsibility per file:
//!
//! - `names`: what a name stands for, its attributes and cache lifetimes. Inodes stand
//!   for [`Node`]s (`inodes`, `node`): a revision is keyed by (oid, tid) wherever it
//!   appears, so its inode and page cache are shared and never go stale.
//! - `files`: the open-file table and reads; `readdir`: directory listings, streamed in
//!   key order (oid or tid) with stable offsets: the cookie of an entry is its key plus
//!   [`RESERVED`], so a listing resumes by key and never holds a whole directory in memory.
//! - `text`: the generated text files (README, info, txns); `stats`: counters and statfs;
//!   `shown`: what `head/` shows to every process (read-your-writes, `head/watch`).
//! - `write` and `txn`: the writable part (`txn/`, `merge`); `zodb`: the ZODB views.
//! - Refusals and engine errors become errno values in one place (`errno`).
//!
//! Locks: `lock().unwrap()` everywhere. A poisoned lock means a thread panicked
//! mid-update, and we do not go on with half-applied shared state (the panic spreads).
//! Only `Drop` impls use `unwrap_or_else(|e| e.into_inner())`, to avoid a double panic.

mod errno;
mod files;
mod inodes;
mod names;
pub mod node;
mod policy;
mod readdir;
mod segments;
mod shown;
mod staging;
mod stats;
mod text;
pub mod txn;
mod write;
pub mod zodb;

pub use errno::{errno_of, refuse, FsError, Refusal};
pub use inodes::Ino;
pub use node::Node;
pub use policy::{not_offered, NotOffered, SetAttr};
pub use text::README;
pub use txn::{MountTxn, Status, TxnNo};
pub use write::{parse_merge, Job, MergeCmd, OpenMode, WriteDone};

use crate::views::TxnView;
use crate::{Storage, Tid};
use files::FileHandle;
use inodes::Inodes;
use readdir::DirHandle;
use shown::Shown;
use stats::Counters;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use text::Snapshot;

pub type FsResult<T> = Result<T, FsError>;

/// TTL of what never changes (revisions, snapshots, committed transactions).
pub const LONG_TTL: Duration = Duration::from_secs(24 * 3600);
/// TTL of what changes (head entries, status files, the chain). Never 0: a listable
/// node with TTL 0 makes `ls -l` many times slower.
pub const SHORT_TTL: Duration = Duration::from_secs(1);
/// Directory cookies 1..=RESERVED are the fixed entries; a keyed entry's is key+RESERVED+1.
pub const RESERVED: u64 = 16;

/// How to mount: the one options type of `fs2 mount`, the adapter and this layer.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// A read-only tree (kernel `ro`): `txn/` is hidden, `merge` and `gc` refused (EROFS).
    pub read_only: bool,
    /// Let other users read (default: the owner only). Writing (`txn/`, `merge`) stays
    /// with the owner: the kernel checks the modes (`default_permissions`).
    pub allow_other: bool,
    /// With `allow_other`: let other users write too (writable nodes 0777/0666).
    pub allow_other_write: bool,
    /// A voted transaction with no commit or abort within this time is aborted.
    pub vote_timeout: Duration,
    /// Larger staged objects are refused with EFBIG.
    pub max_object_size: u64,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            read_only: false,
            allow_other: false,
            allow_other_write: false,
            vote_timeout: Duration::from_secs(60),
            max_object_size: 1 << 30,
        }
    }
}

impl MountOptions {
    /// Writable nodes are writable by every user, not by the owner only.
    fn others_write(&self) -> bool {
        self.allow_other && self.allow_other_write
    }
}

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

/// An open file or directory, as the kernel passes it back (its `fh`): numbers come
/// from one counter and are never reused while the mount lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fh(pub u64);

impl std::fmt::Display for Fh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An open file: the handle and the page-cache policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: Fh,
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

/// The mounted tree over one storage. `Send + Sync`: every method takes `&self`.
pub struct Fs {
    storage: Storage,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<Fh, Arc<FileHandle>>>,
    dirs: Mutex<HashMap<Fh, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    txns: Mutex<VecDeque<Arc<TxnView>>>,
    uid: u32,
    gid: u32,
    started: SystemTime,
    counters: Counters,
    opts: MountOptions,
    /// Where transactions stage data (memory, then `<storage>/.staging`); `None` when
    /// read-only.
    staging: Option<Arc<txn::Staging>>,
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
        Fs::with_options(storage, MountOptions::default())
    }

    /// The tree with `txn/` and `merge` writable unless `opts.read_only` or the storage
    /// is open read-only. A writable tree empties `<storage>/.staging` (left by a daemon
    /// that died).
    pub fn with_options(storage: Storage, mut opts: MountOptions) -> Fs {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        opts.read_only |= storage.is_read_only();
        let staging = (!opts.read_only).then(|| {
            let d = storage.dir().join(".staging");
            let _ = std::fs::remove_dir_all(&d);
            if let Err(e) = txn::private_dir(&d) {
                log::warn!("create {}: {e} (transactions through the mount will fail)", d.display());
            }
            txn::Staging::new(d, txn::STAGE_MEMORY, txn::STAGE_MEMORY_OBJECT)
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
}

#[cfg(test)]
mod tests;
