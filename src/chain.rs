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
    encode_padding, encode_txn, encoded_txn_len, Header, RecordToWrite, TxnMeta, HEADER_SIZE, MARK_TXN, MIN_PADDING,
};
use crate::segment::{place, seal, PastSegment, Scanner, SealStats, SegmentFile};
use crate::types::{Oid, SegmentName, Tid};
use crate::vfs::{RealVfs, VFile, Vfs};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};

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

/// A transaction written to the file, to be published.
struct Written {
    tid: Tid,
    offset: u64,
    entries: Vec<(Oid, Entry)>,
}

/// What a transaction commits: a snapshot at `base` plus its writes.
pub(crate) struct Staged {
    /// The transaction's id (`Transaction::id`): the holder of its object locks.
    pub id: u64,
    pub base: Tid,
    /// A caller-chosen tid (restore); `None`: the next tid.
    pub tid: Option<Tid>,
    pub meta: TxnMeta,
    pub writes: crate::txn::Writes,
    /// Oids read and required to be current at commit, with the tid read (ZODB's
    /// `checkCurrentSerialInTransaction`): locked at vote like the writes, and checked.
    pub reads: BTreeMap<Oid, Tid>,
    /// The least tid it may get (a client's clock; `None`: the engine's alone).
    pub min_tid: Option<Tid>,
    /// Its finish is followed by a notification in tid order (see `Chain::notified`).
    pub notify: bool,
}

/// A commit (one-step, or the finish of a voted transaction) in the group-commit queue.
struct Pending {
    txn: Staged,
    /// Bytes reserved at vote (0: a one-step commit).
    reserved: u64,
    /// Holds the commit order (`Writer::ordered`).
    ordered: bool,
    result: Mutex<Option<Result<Tid>>>,
}

/// What a successful vote holds until its finish or release: the locks of its oids, the
/// space it reserved and, with a caller-chosen tid, the commit order.
pub(crate) struct Vote {
    id: u64,
    oids: Vec<Oid>,
    reserved: u64,
    ordered: bool,
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

    /// Commit `txn` in one step with the next group commit; its tid once durable. A
    /// voted transaction's oids are locked until it finishes: a commit of one of them
    /// waits (the finish then makes it a conflict, an abort lets it through). Also
    /// whether this thread rotated the active segment (the caller starts what follows a
    /// rotation).
    pub fn commit(&self, txn: Staged) -> (Result<Tid>, bool) {
        let (id, oids): (u64, Vec<Oid>) = (txn.id, txn.writes.oids().collect());
        self.lock_oids(id, &oids);
        let req = Arc::new(Pending { txn, reserved: 0, ordered: false, result: Mutex::new(None) });
        let r = self.group_commit(&req);
        self.unlock_oids(&oids);
        r
    }

    /// Phase one: reserve the space `txn` can take, lock its oids (waiting for other
    /// holders), check conflicts and, with a caller-chosen tid or `hold_order`, take the
    /// commit order. Writes nothing, syncs nothing. After `Ok`, `finish` cannot fail for
    /// a conflict or a full disk. Also whether this thread rotated the active segment.
    pub fn vote(&self, txn: &Staged, hold_order: bool) -> (Result<Vote>, bool) {
        let mut vote = Vote { id: txn.id, oids: Vec::new(), reserved: 0, ordered: false };
        let mut rotated = false;
        let r = self.vote_steps(txn, hold_order, &mut vote, &mut rotated);
        match r {
            Ok(()) => (Ok(vote), rotated),
            Err(e) => {
                self.release(vote);
                (Err(e), rotated)
            }
        }
    }

    fn vote_steps(&self, txn: &Staged, hold_order: bool, vote: &mut Vote, rotated: &mut bool) -> Result<()> {
        // 1. Space: the record's length depends on neither its tid nor its prev pointers.
        let recs: Vec<RecordToWrite<'_>> =
            txn.writes.iter().map(|(oid, data)| RecordToWrite { oid, prev: 0, data }).collect();
        {
            let mut w = self.writer.lock().unwrap();
            loop {
                w.writable()?;
                if !w.rotate_wanted && w.rotate_asked == 0 {
                    break;
                }
                if w.reserved == 0 && w.rotate_asked == 0 {
                    // The reservations drained (aborts): rotate now.
                    *rotated |= maybe_rotate(self, &mut w);
                    w.rotate_wanted = false;
                    self.writer_cv.notify_all();
                    continue;
                }
                w = self.writer_cv.wait(w).unwrap();
            }
            let seg = w.seg.clone().expect("checked by writable");
            // The form is the active segment's (its header version); a rotation waits
            // for the reservations to drain, so it is still the form at finish.
            let len = encoded_txn_len(&txn.meta, &recs, seg.header.record_form());
            // The most it can take wherever its batch puts it: a padding record before it
            // is shorter than it and than a block, the lengthening after it shorter than
            // `MIN_PADDING` (see `place`).
            let worst = len + len.min(w.alignment) + MIN_PADDING;
            let need = w.end + w.reserved + worst;
            reserve(&mut w, &*seg.file, need, self.opts.preallocate)
                .map_err(|e| Error::io(&seg.path, "reserve space for a voted transaction in", e))?;
            w.reserved += worst;
            vote.reserved = worst;
        }
        // 2. Object locks (waits for voted or committing holders of the same oids), of
        // the oids written and of those read that must stay current.
        vote.oids = txn.writes.oids().chain(txn.reads.keys().copied()).collect();
        vote.oids.sort();
        vote.oids.dedup();
        self.lock_oids(txn.id, &vote.oids);
        // 3. Conflicts: nobody else commits these oids until we finish or abort, and
        // every commit that held one of them was published before it let go.
        {
            let v = self.read();
            for (oid, read) in &txn.reads {
                let now = newest_record(&v, *oid, Tid::ZERO)?.0.unwrap_or(Tid::ZERO);
                if now != *read {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Conflict { oid: *oid, tid: now });
                }
            }
            for oid in txn.writes.oids() {
                if let (Some(t), _) = newest_record(&v, oid, txn.base)? {
                    if t > txn.base {
                        self.conflicts.fetch_add(1, Ordering::Relaxed);
                        return Err(Error::Conflict { oid, tid: t });
                    }
                }
            }
        }
        // 4. A caller-chosen tid takes the commit order now (taken last: waiting for it
        // while holding no order cannot block the holder's finish).
        if txn.tid.is_some() || hold_order {
            let mut w = self.writer.lock().unwrap();
            while w.ordered.is_some() {
                w = self.writer_cv.wait(w).unwrap();
            }
            w.writable()?;
            if let Some(t) = txn.tid.filter(|t| *t <= w.last_tid) {
                let last = w.last_tid;
                return Err(Error::invalid(format!("tid {t} is not after the last tid {last}; tids must increase")));
            }
            w.ordered = Some(txn.id);
            vote.ordered = true;
        }
        Ok(())
    }

    /// Phase two: write the voted `txn` with the next group commit and make it visible;
    /// its tid. Fails only if the disk does (the storage then refuses writes until it is
    /// reopened, or the batch was taken back). Also whether this thread rotated.
    pub fn finish(&self, vote: Vote, txn: Staged) -> (Result<Tid>, bool) {
        // The reservation and the commit order pass to the queued request (the batch
        // that writes it releases them); the locks are released once it is published.
        let req = Arc::new(Pending { txn, reserved: vote.reserved, ordered: vote.ordered, result: Mutex::new(None) });
        let r = self.group_commit(&req);
        self.unlock_oids(&vote.oids);
        r
    }

    /// Give back what a (partial) vote took. Called from `Transaction::drop` too: never
    /// a second panic there.
    pub fn release(&self, vote: Vote) {
        if vote.reserved > 0 || vote.ordered {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            w.reserved -= vote.reserved;
            if vote.ordered && w.ordered == Some(vote.id) {
                w.ordered = None;
            }
            self.writer_cv.notify_all();
        }
        self.unlock_oids(&vote.oids);
    }

    /// Take the locks of `oids` for transaction `id`, all at once (two transactions
    /// never hold parts of each other's sets: no deadlock), waiting while another
    /// transaction holds any of them.
    fn lock_oids(&self, id: u64, oids: &[Oid]) {
        if oids.is_empty() {
            return;
        }
        let mut l = self.locks.lock().unwrap();
        while oids.iter().any(|o| l.get(o).is_some_and(|h| *h != id)) {
            l = self.locks_cv.wait(l).unwrap();
        }
        for o in oids {
            l.insert(*o, id);
        }
    }

    /// Release `oids` (also from `Drop` paths: no second panic).
    fn unlock_oids(&self, oids: &[Oid]) {
        if oids.is_empty() {
            return;
        }
        let mut l = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        for o in oids {
            l.remove(o);
        }
        drop(l);
        self.locks_cv.notify_all();
    }

    /// Queue `req` and wait until a batch wrote and published it (leading one if nobody
    /// does). Also whether this thread rotated the active segment.
    fn group_commit(&self, req: &Arc<Pending>) -> (Result<Tid>, bool) {
        self.queue.lock().unwrap().push(req.clone());
        if req.ordered {
            // A leader may be waiting for this one (the commit order).
            let _w = self.writer.lock().unwrap();
            self.writer_cv.notify_all();
        }
        // Wait while another thread leads a batch: it may write ours too. A finished
        // committer returns without touching the writer lock, so it never waits through
        // the next batch's sync (that is what makes batches grow under load).
        let mut leading = self.leader.lock().unwrap();
        loop {
            if let Some(r) = req.result.lock().unwrap().take() {
                return (r, false);
            }
            if !*leading {
                *leading = true;
                break;
            }
            leading = self.batch_done.wait(leading).unwrap();
        }
        drop(leading);
        let _lead = Leading(self);
        // Leader: write everything queued so far as one batch. A transaction holding the
        // commit order goes first; until it is queued, nothing is written.
        let mut w = self.writer.lock().unwrap();
        let mut batch = loop {
            let mut q = self.queue.lock().unwrap();
            match w.ordered {
                Some(id) if !q.iter().any(|p| p.txn.id == id) => {
                    drop(q);
                    w = self.writer_cv.wait(w).unwrap();
                }
                _ => break std::mem::take(&mut *q),
            }
        };
        if let Some(i) = batch.iter().position(|p| p.ordered) {
            let p = batch.remove(i);
            batch.insert(0, p);
        }
        write_batch(self, &mut w, &batch);
        let rotated = maybe_rotate(self, &mut w);
        self.writer_cv.notify_all();
        drop(w);
        let r = req.result.lock().unwrap().take();
        (r.expect("the leader answers its own request"), rotated)
    }

    /// Seal the active segment and start a new one (see `rotate_locked`). Voted
    /// transactions have space reserved in this segment: new votes wait meanwhile, and
    /// the rotation waits for the voted ones to finish or abort.
    pub fn rotate(&self) -> Result<SegmentName> {
        let mut w = self.writer.lock().unwrap();
        w.rotate_asked += 1;
        while w.reserved > 0 {
            w = self.writer_cv.wait(w).unwrap();
        }
        let r = rotate_locked(self, &mut w);
        w.rotate_asked -= 1;
        w.rotate_wanted = false;
        self.writer_cv.notify_all();
        r
    }

    /// Make every commit durable (after bulk loads with `sync: false`).
    pub fn sync(&self) -> Result<()> {
        let mut w = self.writer.lock().unwrap();
        if let Some(seg) = w.seg.clone() {
            seg.file.sync().map_err(|e| Error::io(&seg.path, "sync", e))?;
            w.synced = w.end;
        }
        Ok(())
    }

    /// Replace the past-segment parts `range` of the view by `parts` (a merge's or a
    /// move's switch, made durable by the caller). Only under the writer lock (`_w`), so
    /// that no rotation changes the chain meanwhile; `parts` are opened before.
    pub fn splice(&self, _w: &Writer, range: std::ops::Range<usize>, parts: Vec<Arc<PastSegment>>) {
        self.view.write().unwrap().pasts.splice(range, parts);
    }
}

/// Leadership of the group commit; released (and waiters woken) even on a panic.
struct Leading<'a>(&'a Chain);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        *self.0.leader.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0.batch_done.notify_all();
    }
}

/// A copy of an I/O error that keeps the OS error number (ENOSPC, EIO).
fn copy_io(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(n) => std::io::Error::from_raw_os_error(n),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// Write `batch` as one append (+ one sync), publish it, then answer every request (in
/// that order: a committer lets go of its object locks once answered, and a vote that
/// takes them next must find the commit published). Releases the reservations and the
/// commit order of the batch's voted transactions.
fn write_batch(chain: &Chain, w: &mut MutexGuard<'_, Writer>, batch: &[Arc<Pending>]) {
    let answer = |p: &Pending, r: Result<Tid>| *p.result.lock().unwrap() = Some(r);
    for p in batch {
        w.reserved -= p.reserved;
        if p.ordered && w.ordered == Some(p.txn.id) {
            w.ordered = None;
        }
    }
    if w.writable().is_err() {
        for p in batch {
            answer(p, w.writable().map(|()| Tid::ZERO));
        }
        return;
    }
    let seg = w.seg.clone().expect("checked by writable");
    let start = w.end;
    let first_tid = w.last_tid;
    let mut live: Vec<&Arc<Pending>> = batch.iter().collect();
    let (buf, pos, written) = loop {
        let (buf, pos, written) = encode_batch(chain, w, &live, start);
        if written.is_empty() {
            return;
        }
        // Outstanding reservations of voted transactions lie beyond this batch: its
        // one-step commits may use only space that leaves them intact.
        if w.reserved == 0 {
            preallocate(w, &*seg.file, pos, chain.opts.preallocate);
            break (buf, pos, written);
        }
        let need = pos + w.reserved;
        match reserve(w, &*seg.file, need, chain.opts.preallocate) {
            Ok(()) => break (buf, pos, written),
            Err(e) if live.iter().any(|p| p.reserved == 0) => {
                for p in live.iter().filter(|p| p.reserved == 0) {
                    answer(p, Err(Error::io(&seg.path, "commit to", copy_io(&e))));
                }
                live.retain(|p| p.reserved > 0);
                w.last_tid = first_tid;
            }
            // Only voted transactions: their own reservations cover them.
            Err(_) => break (buf, pos, written),
        }
    };
    let file = &seg.file;
    let mut res = file.write_all_at(&buf, start);
    if res.is_ok() {
        for (_, wr) in &written {
            res = file.write_all_at(&MARK_TXN, wr.offset);
            if res.is_err() {
                break;
            }
        }
    }
    let wrote = res.is_ok();
    if wrote && chain.opts.sync {
        res = file.sync();
    }
    if let Err(e) = res {
        // Take the batch back. If that fails too, or the sync failed (the kernel may
        // have dropped dirty pages), or voted transactions reserved space beyond it,
        // refuse further writes rather than guess.
        let undone = file.set_len(start).and_then(|_| file.sync()).is_ok();
        w.allocated = start;
        if !undone || wrote || w.reserved > 0 {
            w.poisoned = Some(failed(&format!("{}: {e}", seg.path.display())));
        }
        w.last_tid = first_tid;
        for (i, _) in &written {
            // One copy per transaction of the batch; keep the OS error number (ENOSPC, EIO).
            answer(live[*i], Err(Error::io(&seg.path, "commit to", copy_io(&e))));
        }
        return;
    }
    w.end = pos;
    w.allocated = w.allocated.max(pos);
    if chain.opts.sync {
        w.synced = pos;
    }
    let answers: Vec<(usize, Tid)> = written.iter().map(|(i, wr)| (*i, wr.tid)).collect();
    let notify: Vec<Tid> = answers.iter().filter(|(i, _)| live[*i].txn.notify).map(|(_, t)| *t).collect();
    if !notify.is_empty() {
        chain.notifying.lock().unwrap().extend(notify);
    }
    publish(chain, w, written.into_iter().map(|(_, wr)| wr).collect());
    for (i, tid) in answers {
        answer(live[i], Ok(tid));
    }
}

type Encoded = (Vec<u8>, u64, Vec<(usize, Written)>);

/// Encode the transactions of `batch` that pass their conflict check (the others are
/// answered) after `start`, giving each the next tid. Returns the bytes, the end
/// position and what was encoded (index into `batch`, record).
fn encode_batch(chain: &Chain, w: &mut Writer, batch: &[&Arc<Pending>], start: u64) -> Encoded {
    let answer = |p: &Pending, r: Result<Tid>| *p.result.lock().unwrap() = Some(r);
    let mut buf = Vec::new();
    let mut pos = start;
    let mut written: Vec<(usize, Written)> = Vec::new();
    // oid -> (offset, tid) of records earlier in this batch (kept only while a later
    // transaction of the batch can read it).
    let mut in_batch: HashMap<Oid, (u64, Tid)> = HashMap::new();
    // Records take the form of the segment they go into (its header version).
    let form = w.seg.as_ref().expect("checked by the caller").header.record_form();
    let v = chain.view.read().unwrap();
    'txns: for (i, p) in batch.iter().enumerate() {
        let t = &p.txn;
        // One lookup per oid gives both the conflict check and the prev pointer.
        let mut recs = Vec::with_capacity(t.writes.len());
        for (oid, data) in t.writes.iter() {
            let (latest, prev) = match in_batch.get(&oid) {
                Some(&(off, tid)) => (Some(tid), off),
                None => match newest_record(&v, oid, t.base) {
                    Ok(x) => x,
                    Err(e) => {
                        answer(p, Err(e));
                        continue 'txns;
                    }
                },
            };
            if let Some(tid) = latest.filter(|tid| *tid > t.base) {
                // A voted transaction's oids were locked since its check: never here.
                debug_assert!(p.reserved == 0, "a voted transaction conflicts at finish");
                chain.conflicts.fetch_add(1, Ordering::Relaxed);
                answer(p, Err(Error::Conflict { oid, tid }));
                continue 'txns;
            }
            recs.push(RecordToWrite { oid, prev, data });
        }
        let tid = match t.tid {
            None => Tid::next_after(w.last_tid).max(t.min_tid.unwrap_or(Tid::ZERO)),
            Some(tid) if tid > w.last_tid => tid,
            Some(tid) => {
                let last = w.last_tid;
                answer(
                    p,
                    Err(Error::invalid(format!("tid {tid} is not after the last tid {last}; tids must increase"))),
                );
                continue 'txns;
            }
        };
        let (pad, len) = place(pos, encoded_txn_len(&t.meta, &recs, form), w.alignment);
        if pad > 0 {
            let (head, tail) = encode_padding(pad);
            buf.extend_from_slice(&head);
            buf.resize((pos + pad - start) as usize - tail.len(), 0);
            buf.extend_from_slice(&tail);
        }
        let offset = pos + pad;
        let rels = encode_txn(&mut buf, len, tid, w.synced, &t.meta, &recs, form);
        let entries: Vec<(Oid, Entry)> =
            recs.iter().zip(rels).map(|(r, rel)| (r.oid, Entry { offset: offset + rel, tid })).collect();
        let later = i + 1 < batch.len();
        for (oid, e) in &entries {
            if later {
                in_batch.insert(*oid, (e.offset, tid));
            }
            chain.next_oid.note_used(*oid);
        }
        w.last_tid = tid;
        pos = offset + len;
        written.push((i, Written { tid, offset, entries }));
    }
    (buf, pos, written)
}

/// Make sure `[allocated, need)` is written with zeros (space a voted transaction, or a
/// batch beside voted ones, counts on), zero-filling `chunk` ahead like `preallocate`.
/// Fails (ENOSPC) when `need` cannot be reached; zeros written are kept (an all-zero
/// tail is the end of the data).
fn reserve(w: &mut Writer, file: &dyn VFile, need: u64, chunk: u64) -> std::io::Result<()> {
    // Without preallocation `allocated` is not kept up: nothing below `end` is free.
    w.allocated = w.allocated.max(w.end);
    if need <= w.allocated {
        return Ok(());
    }
    let target = need.max(w.allocated + chunk).div_ceil(BLOCK) * BLOCK;
    let zeros = vec![0u8; (target - w.allocated).min(1 << 20) as usize];
    let mut at = w.allocated;
    while at < target {
        let n = zeros.len().min((target - at) as usize);
        if let Err(e) = file.write_all_at(&zeros[..n], at) {
            w.allocated = at.max(w.allocated);
            if at >= need {
                return Ok(());
            }
            return Err(e);
        }
        at += n as u64;
    }
    w.allocated = at;
    Ok(())
}

/// Write zeros ahead of the append position, `chunk` bytes at a time, so that commits
/// overwrite allocated space of a file whose length does not change: `fdatasync` then
/// has no size or extent change to journal (1.3-1.5x more durable commits per second
/// measured on ext4 here). Recovery reads an all-zero tail as the end of the data; a seal
/// cuts it off. Only a speed-up: if the zeros do not fit (ENOSPC) or fail otherwise, the
/// commit writes into the space that exists (its own write reports a real failure).
fn preallocate(w: &mut Writer, file: &dyn VFile, need: u64, chunk: u64) {
    if need <= w.allocated || chunk == 0 {
        return;
    }
    let target = need.max(w.allocated + chunk).div_ceil(BLOCK) * BLOCK;
    let zeros = vec![0u8; (target - w.allocated).min(1 << 20) as usize];
    let mut at = w.allocated;
    while at < target {
        let n = zeros.len().min((target - at) as usize);
        if let Err(e) = file.write_all_at(&zeros[..n], at) {
            log::debug!("preallocation stopped at {at}: {e}; committing into the space that exists");
            break;
        }
        at += n as u64;
    }
    // `[allocated, need)` is the batch's to write now (a failed write resets `allocated`):
    // the next preallocation starts after it, never over committed bytes.
    w.allocated = at.max(need);
}

/// `oid`'s newest record before this batch, found with one lookup: its tid where it may
/// be newer than `base` (the conflict check; `None` means no newer record), and the
/// prev pointer for a new record of it (its offset in the active segment, 1 if an
/// earlier segment holds it, 0 if it never existed).
fn newest_record(v: &View, oid: Oid, base: Tid) -> Result<(Option<Tid>, u64)> {
    if let Some(e) = v.active.as_ref().and_then(|a| a.index.get(&oid)) {
        return Ok((Some(e.tid), e.offset));
    }
    // Past segments, newest first; the first one holding `oid` has its newest record. Its
    // tid matters only if the segment has transactions newer than `base` (an empty past
    // segment, from a rotation with no commit since the last, holds no oid).
    for p in &v.pasts {
        if let Some(off) = p.find(oid)? {
            let newer = p.trailer.txn_count > 0 && p.trailer.last_tid > base;
            let tid = if newer { Some(p.record(off, oid)?.header.tid) } else { None };
            return Ok((tid, 1));
        }
    }
    Ok((None, 0))
}

/// Make written transactions visible (index entries first, then `last_tid`, in one
/// critical section).
fn publish(chain: &Chain, w: &Writer, written: Vec<Written>) {
    let mut v = chain.view.write().unwrap();
    let n = written.len() as u64;
    let a = v.active.as_mut().expect("a writable storage has an active segment");
    let mut last = None;
    let events = chain.subscribers.events(|| {
        let ev = |wr: &Written| CommitEvent { tid: wr.tid, oids: wr.entries.iter().map(|e| e.0).collect() };
        written.iter().map(ev).collect()
    });
    for wr in written {
        a.stats.note_txn(wr.tid, wr.entries.len());
        a.index.extend(wr.entries);
        last = Some(wr.tid);
    }
    // Voted transactions write nothing before their batch: the writer's end is final.
    a.end = w.end;
    if let Some(t) = last {
        v.last_tid = t;
    }
    drop(v);
    chain.commits.fetch_add(n, Ordering::Relaxed);
    chain.subscribers.notify(events);
}

/// Rotate when the active segment has grown past the configured size.
/// Whether it rotated.
fn maybe_rotate(chain: &Chain, w: &mut MutexGuard<'_, Writer>) -> bool {
    let limit = chain.opts.rotate_size;
    if limit > 0 && w.end >= limit && w.poisoned.is_none() && w.seg.is_some() {
        if w.reserved > 0 {
            // Voted transactions have space reserved in this segment: new votes wait
            // (`rotate_wanted`) until they finished, then whoever is next rotates.
            w.rotate_wanted = true;
            return false;
        }
        w.rotate_wanted = false;
        match rotate_locked(chain, w) {
            Ok(_) => return true,
            Err(e) => log::error!("automatic rotation failed: {e}"),
        }
    }
    w.rotate_wanted = false;
    false
}

/// Seal the active segment (index + trailer), start the next one, swap the in-memory
/// index for the mapped one. Each step is durable before the next; recovery finishes a
/// rotation interrupted after sealing and drops an unfinished seal.
fn rotate_locked(chain: &Chain, w: &mut MutexGuard<'_, Writer>) -> Result<SegmentName> {
    if let Some(why) = &w.poisoned {
        return Err(Error::ReadOnly(why.clone()));
    }
    if w.reserved > 0 {
        return Err(Error::Busy("a voted transaction is pending; rotate after it finishes".into()));
    }
    let Some(seg) = w.seg.clone() else { return Err(Error::ReadOnly("the storage is open read-only".into())) };
    let (entries, stats) = {
        let v = chain.view.read().unwrap();
        let a = v.active.as_ref().expect("active");
        (a.index.iter().map(|(o, e)| (*o, e.offset)).collect::<Vec<_>>(), a.stats.clone())
    };
    let fail = |w: &mut MutexGuard<'_, Writer>, e: Error| {
        w.poisoned = Some(failed(&format!("rotation failed: {e}")));
        e
    };
    if let Err(e) = seal(&seg, w.end, &entries, &stats) {
        return Err(fail(w, e));
    }
    let header = Header {
        name: SegmentName::single(seg.header.name.last + 1),
        prev: Some(seg.header.name.file_name()),
        generation: 1,
        sealed_len: None,
        version: crate::format::VERSION,
        ..seg.header.clone()
    };
    let new_seg = match SegmentFile::create(&*chain.opts.vfs, &chain.dir, header) {
        Ok(s) => Arc::new(s),
        Err(e) => return Err(fail(w, e)),
    };
    let parts = match SegmentFile::open(&*chain.opts.vfs, &seg.path, false).and_then(PastSegment::open) {
        Ok(p) => p,
        Err(e) => return Err(fail(w, e)),
    };
    {
        let mut v = chain.view.write().unwrap();
        v.pasts.splice(0..0, parts);
        v.active = Some(Active {
            seg: new_seg.clone(),
            index: BTreeMap::new(),
            end: HEADER_SIZE as u64,
            stats: Default::default(),
            damaged: Vec::new(),
        });
    }
    let name = new_seg.header.name;
    w.seg = Some(new_seg);
    w.end = HEADER_SIZE as u64;
    w.allocated = HEADER_SIZE as u64;
    w.synced = HEADER_SIZE as u64;
    Ok(name)
}
