//! The chain's one owner: what readers see (`View`: the active segment and the past
//! segments) and the writer that appends to it. The methods of [`Chain`] are the only way
//! to change the chain: publish commits (`commit`, `vote`/`finish`: group commit into
//! the active segment), swap the active segment (`rotate`), splice past segments
//! (`splice`, for merges and moves). Transactions (`txn`), merges (`merge`) and
//! recovery call down into this module; it calls none of them.
//!
//! Commit order and durability. One thread at a time holds the writer lock. A commit (a
//! one-step `commit`, or the `finish` of a voted transaction) queues itself; whoever
//! takes the writer lock next writes every queued transaction as one batch (group
//! commit): conflict check, tid, encode under the `PPPP` marker, one `pwrite`, flip each
//! marker to `TTTT`, one `fdatasync`, publish, then answer all. Two-phase commit: `vote`
//! locks the transaction's oids (per-object locks: a vote or commit of a locked oid
//! waits), checks conflicts and reserves the transaction's space in the file (zeros
//! written ahead); it writes no record and syncs nothing, so a voted transaction never
//! becomes visible after a crash. `finish` queues it like a one-step commit: it gets its
//! tid there, shares the batch's one `fdatasync`, and cannot meet a conflict (its oids
//! are locked) or a full disk (its space is reserved). A caller-chosen tid (`set_tid`)
//! takes the commit order at vote: no other batch is written until it finishes or
//! aborts. Tids are handed out under the writer lock and published in that order, so
//! visibility follows tid order and a snapshot never changes.
//!
//! Records become visible only when the writer publishes them into the view after they
//! are durable, and `last_tid` is raised in the same critical section, so a reader's
//! snapshot at `last_tid` is complete.
//!
//! **Lock order: writer → view** (and writer → queue; the object locks are a leaf). The view's write lock is taken
//! only here, only by a thread holding the writer lock (the methods that take it want
//! the `Writer` as proof), and never across I/O: segments are opened before it is taken.
//! Readers take the view's read lock alone. `leader` is never held while waiting for
//! another lock. Lock policy: `lock().unwrap()` everywhere (a poisoned lock means a
//! thread panicked mid-update; we do not go on with half-applied shared state), except
//! in `Drop` impls, which use `unwrap_or_else(|e| e.into_inner())` to avoid a double
//! panic.

use crate::error::{Error, Result};
use crate::format::{
    encode_padding, encode_txn, encoded_txn_len, RecordToWrite, TxnMeta, HEADER_SIZE, MARK_TXN, MIN_PADDING,
};
use crate::segment::{place, seal, PastSegment, Scanner, SealStats, SegmentFile};
use crate::types::{Oid, SegmentName, Tid};
use crate::vfs::{RealVfs, VFile, Vfs};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};

mod commit;
mod rotate;

use commit::*;
pub(crate) use commit::{Staged, Vote};
use rotate::*;

/// Preallocated zeros end on a file-system block boundary (4 KiB: ext4, xfs), so a commit
/// never writes a partial block of fresh allocation.
const BLOCK: u64 = 4096;

/// How to open a storage.
#[derive(Clone)]
pub struct Options {
    /// Open without the writer lock; refuse writes; never repair anything on disk.
    pub read_only: bool,
    /// `fdatasync` before a commit returns (default). `false` is the bulk-load mode: a
    /// crash may lose the most recent commits (never corrupts); call `Storage::sync`.
    pub sync: bool,
    /// Rotate automatically when the active segment passes this many bytes (0 = never).
    pub rotate_size: u64,
    /// Alignment of new segments (records never span a multiple of it).
    pub alignment: u64,
    /// Zero-fill the active segment this many bytes ahead of the data (0 = off), so that
    /// durable commits do not change the file length (faster `fdatasync`).
    pub preallocate: u64,
    /// Where merged-away segments go (default: `archive/` in the storage directory).
    pub archive_dir: Option<PathBuf>,
    pub vfs: Arc<dyn Vfs>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            read_only: false,
            sync: true,
            rotate_size: 64 << 20,
            alignment: 1 << 28,
            preallocate: 4 << 20,
            archive_dir: None,
            vfs: Arc::new(RealVfs),
        }
    }
}

impl Options {
    pub fn read_only() -> Options {
        Options { read_only: true, ..Options::default() }
    }
}

/// The newest record of an oid in the active segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub offset: u64,
    pub tid: Tid,
}

/// The active segment as readers see it (published state only).
pub(crate) struct Active {
    pub seg: Arc<SegmentFile>,
    pub index: BTreeMap<Oid, Entry>,
    /// End of the published data.
    pub end: u64,
    pub stats: SealStats,
    /// Damaged transactions, in file order (see `damage`).
    pub damaged: Vec<crate::damage::DamagedRange>,
}

impl Active {
    /// A scan of the published data that steps over the damaged transactions.
    pub fn scanner(&self) -> Scanner {
        Scanner::new(&self.seg, HEADER_SIZE as u64, self.end)
            .skipping(self.damaged.iter().map(|d| (d.start, d.end)).collect())
    }

    /// The largest oid in this segment: indexed, or in a damaged transaction.
    pub fn max_oid(&self) -> Option<Oid> {
        let damaged = self.damaged.iter().filter_map(|d| d.oids.as_ref()?.last().copied()).max();
        self.index.keys().next_back().copied().max(damaged)
    }

    /// A read of `oid` wanting revisions with tids up to `at`, whose newest valid record
    /// in this segment is at `newest` (0: none): an error if a damaged transaction after
    /// it may hold a newer revision that is one of them.
    pub fn cross(&self, oid: Oid, at: Tid, newest: u64) -> Result<()> {
        // The damaged transaction's tid, when a verified part of it says; else only that
        // it is newer than the valid transaction before it.
        let wanted = |d: &crate::damage::DamagedRange| d.tid.map_or(at > d.after, |t| at >= t);
        match self.damaged.iter().find(|d| d.start > newest && wanted(d) && d.suspects(oid)) {
            Some(d) => Err(d.error(&self.seg.path, oid)),
            None => Ok(()),
        }
    }
}

/// What readers see: the active segment and the past segments, newest first.
pub(crate) struct View {
    pub active: Option<Active>,
    /// The parts of the past segments, newest data first (a segment with regions
    /// appended by a semi-sequential merge has several; see `PastSegment`).
    pub pasts: Vec<Arc<PastSegment>>,
    pub last_tid: Tid,
}

impl View {
    /// The past segments, newest first, each as the run of its parts.
    pub fn files(&self) -> impl DoubleEndedIterator<Item = &[Arc<PastSegment>]> + '_ {
        self.pasts.chunk_by(|a, b| Arc::ptr_eq(&a.seg, &b.seg))
    }

    /// Where in `pasts` the parts of past segment `name` are.
    pub fn parts_of(&self, name: SegmentName) -> Option<std::ops::Range<usize>> {
        let start = self.pasts.iter().position(|p| p.seg.header.name == name)?;
        let len = self.pasts[start..].iter().take_while(|p| p.seg.header.name == name).count();
        Some(start..start + len)
    }
}

/// Hands out fresh oids, each larger than every oid stored, staged or allocated before.
/// Never wraps around to oids in use: after `u64::MAX` the space is exhausted.
pub(crate) struct OidAllocator(Mutex<Option<u64>>);

impl OidAllocator {
    /// Above `max_used` (and never 0, the root's oid).
    pub(crate) fn new(max_used: Option<Oid>) -> OidAllocator {
        OidAllocator(Mutex::new(max_used.map_or(Some(1), |o| o.0.checked_add(1)).map(|n| n.max(1))))
    }

    /// `oid` is in use (stored or staged): never hand it (or anything below) out.
    pub fn note_used(&self, oid: Oid) {
        let mut next = self.0.lock().unwrap();
        if next.is_some_and(|n| oid.0 >= n) {
            *next = oid.0.checked_add(1);
        }
    }

    pub fn allocate(&self) -> Result<Oid> {
        let mut next = self.0.lock().unwrap();
        let n = next.ok_or_else(|| {
            Error::invalid(
                "the oid space is exhausted: oid ffffffffffffffff (the largest) is in use, so no new oid \
                 can be allocated; store under oids you choose (unused ones below it)",
            )
        })?;
        *next = n.checked_add(1);
        Ok(Oid(n))
    }
}

/// A published commit: its tid and the oids it stored or deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitEvent {
    pub tid: Tid,
    pub oids: Vec<Oid>,
}

/// Receivers of [`CommitEvent`]s (see [`Storage::subscribe`]).
#[derive(Default)]
pub(crate) struct Subscribers(Mutex<Vec<Sender<CommitEvent>>>);

impl Subscribers {
    pub(crate) fn add(&self, tx: Sender<CommitEvent>) {
        self.0.lock().unwrap().push(tx);
    }

    /// `build()` (the events of a batch of commits) if someone listens, else nothing.
    pub(crate) fn events(&self, build: impl FnOnce() -> Vec<CommitEvent>) -> Vec<CommitEvent> {
        if self.0.lock().unwrap().is_empty() {
            return Vec::new();
        }
        build()
    }

    /// Send each event to every live subscriber; drop the ones whose receiver is gone.
    /// Called after publishing, outside the view lock; sending never blocks.
    pub(crate) fn notify(&self, events: Vec<CommitEvent>) {
        if events.is_empty() {
            return;
        }
        let mut subs = self.0.lock().unwrap();
        subs.retain(|s| events.iter().all(|e| s.send(e.clone()).is_ok()));
    }
}

/// The writer's side: where the next record goes. Guarded by `Chain::writer`;
/// only this module changes it.
pub(crate) struct Writer {
    seg: Option<Arc<SegmentFile>>,
    alignment: u64,
    /// Append position: the end of the written data.
    end: u64,
    /// File length: bytes in `[end, allocated)` are zeros written ahead (see `preallocate`
    /// and `reserve`).
    allocated: u64,
    /// Everything below this offset of the active segment is durable.
    synced: u64,
    /// The last tid handed out.
    last_tid: Tid,
    /// Bytes reserved beyond `end` by voted, unfinished transactions (allocated zeros that
    /// their finish writes into: a full disk cannot fail it).
    reserved: u64,
    /// The voted transaction with a caller-chosen tid (or `hold_order`) that holds the
    /// commit order: no batch is written until it is queued, then it goes first.
    ordered: Option<u64>,
    /// An automatic rotation waits for the reservations to drain: new votes wait
    /// meanwhile, and the first to find none left rotates.
    rotate_wanted: bool,
    /// Callers of `Chain::rotate` waiting for the reservations to drain (new votes wait).
    rotate_asked: usize,
    /// Set after a failed sync (writes are refused until the storage is reopened), or
    /// at open when damage was found: the message writes are refused with.
    poisoned: Option<String>,
}

impl Writer {
    /// Why writes are refused, if they are (damage found at open, an earlier failure).
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// The writer of a chain just opened: `damage` found at open refuses writes.
    fn new(view: &View, alignment: u64, damage: &[String]) -> Writer {
        let a = view.active.as_ref();
        Writer {
            seg: a.map(|a| a.seg.clone()),
            alignment,
            end: a.map_or(0, |a| a.end),
            allocated: a.map_or(0, |a| a.seg.len().unwrap_or(a.end).max(a.end)),
            synced: a.map_or(0, |a| a.end),
            last_tid: view.last_tid,
            reserved: 0,
            ordered: None,
            rotate_wanted: false,
            rotate_asked: 0,
            // Damage found at open: reads are served, writes wait for the salvage.
            poisoned: a
                .and_then(|a| {
                    a.damaged.first().map(|d| {
                        format!(
                            "writes are refused: {}; run `fs2 check --repair --salvage` on the storage",
                            d.describe(&a.seg.path)
                        )
                    })
                })
                .or_else(|| damage.first().map(|d| format!("writes are refused: {d}"))),
        }
    }

    /// Refuse writes to a poisoned or read-only writer.
    fn writable(&self) -> Result<()> {
        if let Some(why) = &self.poisoned {
            return Err(Error::ReadOnly(why.clone()));
        }
        if self.seg.is_none() {
            return Err(Error::ReadOnly("the storage has no active segment (read-only open)".into()));
        }
        Ok(())
    }
}

/// The message of a writer poisoned by a failure.
fn failed(why: &str) -> String {
    format!("writes are refused after an earlier failure ({why}); reopen the storage")
}

/// The chain and its writer (see the module doc).
pub(crate) struct Chain {
    pub dir: PathBuf,
    pub opts: Options,
    view: RwLock<View>,
    writer: Mutex<Writer>,
    /// Signalled when a reservation or the commit order is released, a batch ends, or a
    /// rotation is done.
    writer_cv: Condvar,
    /// Per-object locks: oid -> the transaction (voted, or committing in one step) that
    /// holds it. A leaf lock (never held while taking another). `locks_cv` is signalled
    /// on release.
    locks: Mutex<HashMap<Oid, u64>>,
    locks_cv: Condvar,
    /// Commits waiting for a leader to write them (group commit).
    queue: Mutex<Vec<Arc<Pending>>>,
    /// True while a committer leads a batch; `batch_done` is signalled when it ends.
    leader: Mutex<bool>,
    batch_done: Condvar,
    pub next_oid: OidAllocator,
    pub commits: AtomicU64,
    pub conflicts: AtomicU64,
    /// Who hears about published commits (`Storage::subscribe`).
    pub subscribers: Subscribers,
    /// Published tids whose finisher has not yet run its notification (`notified`):
    /// registered under the writer lock before they are published. A leaf lock but for
    /// the view's read lock (`notified_tid`).
    notifying: Mutex<BTreeSet<Tid>>,
    notifying_cv: Condvar,
}

impl Chain {
    /// The chain recovery opened: `damage` found at open refuses writes.
    pub fn new(
        dir: PathBuf,
        opts: Options,
        view: View,
        alignment: u64,
        damage: &[String],
        max_oid: Option<Oid>,
    ) -> Chain {
        let writer = Writer::new(&view, alignment, damage);
        Chain {
            dir,
            opts,
            view: RwLock::new(view),
            writer: Mutex::new(writer),
            writer_cv: Condvar::new(),
            locks: Mutex::new(HashMap::new()),
            locks_cv: Condvar::new(),
            queue: Mutex::new(Vec::new()),
            leader: Mutex::new(false),
            batch_done: Condvar::new(),
            next_oid: OidAllocator::new(max_oid),
            commits: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            subscribers: Default::default(),
            notifying: Mutex::new(BTreeSet::new()),
            notifying_cv: Condvar::new(),
        }
    }

    /// Run `f` for the finished transaction `tid` once every notification of a smaller
    /// tid has run: callers (ZODB's invalidation callbacks) see commits in tid order.
    pub fn notified<R>(&self, tid: Tid, f: impl FnOnce() -> R) -> R {
        /// Takes `tid` out of the set however `f` ends (a panic must not stop the others).
        struct Done<'a>(&'a Chain, Tid);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.notifying.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
                self.0.notifying_cv.notify_all();
            }
        }
        let mut n = self.notifying.lock().unwrap();
        while n.first().is_some_and(|t| *t < tid) {
            n = self.notifying_cv.wait(n).unwrap();
        }
        drop(n);
        let _done = Done(self, tid);
        f()
    }

    /// The last tid, once it and every smaller tid are notified (waits for the
    /// notifications of tids up to the last tid at the call: tids published later do not
    /// keep it waiting).
    pub fn notified_tid(&self) -> Tid {
        let last = self.read().last_tid;
        let mut n = self.notifying.lock().unwrap();
        while n.first().is_some_and(|t| *t <= last) {
            n = self.notifying_cv.wait(n).unwrap();
        }
        last
    }

    /// What readers see now (the published state).
    pub fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap()
    }

    /// The writer lock, for chain changes made outside a commit (merges, moves): no
    /// commit or rotation runs while it is held. Take it before the view (lock order).
    pub fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap()
    }

    /// Replace the past-segment parts `range` of the view by `parts` (a merge's or a
    /// move's switch, made durable by the caller). Only under the writer lock (`_w`), so
    /// that no rotation changes the chain meanwhile; `parts` are opened before.
    pub fn splice(&self, _w: &Writer, range: std::ops::Range<usize>, parts: Vec<Arc<PastSegment>>) {
        self.view.write().unwrap().pasts.splice(range, parts);
    }
}
