//! Transactions: a snapshot at a base tid plus staged stores and deletes, committed in
//! one step or in two phases (vote, finish) through the chain (`chain.rs`: group commit,
//! conflict check, tid order and durability are there).

use crate::chain::{Staged, Vote};
use crate::error::{Error, Result};
use crate::format::TxnMeta;
use crate::store::{Inner, Storage};
use crate::types::{Oid, SegmentName, Tid};
use crate::writes::Writes;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Voted,
    Done,
}

/// A transaction: a snapshot at `base` plus staged stores and deletes. Dropping it
/// without committing aborts it.
pub struct Transaction {
    pub(crate) inner: Arc<Inner>,
    id: u64,
    base: Tid,
    meta: TxnMeta,
    writes: Writes,
    state: State,
    tid: Option<Tid>,
    /// The tid asked for with `set_tid` (copying transactions with their tids).
    fixed_tid: Option<Tid>,
    /// `hold_commit_order` was asked for.
    hold_order: bool,
    /// Oids that must still be at these tids at commit (`require_current`).
    reads: BTreeMap<Oid, Tid>,
    /// `set_min_tid`.
    min_tid: Option<Tid>,
    /// Voted: what the vote holds (object locks, reserved space, the commit order).
    vote: Option<Vote>,
}

impl Transaction {
    pub(crate) fn new(inner: Arc<Inner>, base: Tid) -> Transaction {
        let id = inner.next_txn_id.fetch_add(1, Ordering::Relaxed);
        *inner.open_bases.lock().unwrap().entry(base).or_insert(0) += 1;
        Transaction {
            inner,
            id,
            base,
            meta: TxnMeta::default(),
            writes: Writes::new(),
            state: State::Open,
            tid: None,
            fixed_tid: None,
            hold_order: false,
            reads: BTreeMap::new(),
            min_tid: None,
            vote: None,
        }
    }

    /// Begin a transaction whose snapshot (and conflict check) is at `base`, an older
    /// tid: it conflicts with anything committed after `base` on the oids it writes.
    pub fn at(storage: &Storage, base: Tid) -> Transaction {
        Transaction::new(storage.inner.clone(), base.min(storage.last_tid()))
    }

    /// The snapshot this transaction reads and is checked against.
    pub fn base(&self) -> Tid {
        self.base
    }

    fn open(&self) -> Result<()> {
        match self.state {
            State::Open => Ok(()),
            _ => Err(Error::invalid("the transaction is voted or finished; it can no longer change")),
        }
    }

    /// Stage `data` as the new state of `oid` (a client-chosen oid is fine; it is checked
    /// for conflicts at commit).
    pub fn store(&mut self, oid: Oid, data: &[u8]) -> Result<()> {
        self.open()?;
        // A client-chosen oid is never handed out by `new_oid` afterwards.
        self.inner.chain.next_oid.note_used(oid);
        self.writes.store(oid, data.to_vec());
        Ok(())
    }

    /// Stage a deletion of `oid` (an external garbage collector's request).
    pub fn delete(&mut self, oid: Oid) -> Result<()> {
        self.open()?;
        self.writes.delete(oid, &self.inner.chain.dir)
    }

    /// Drop a staged store or delete of `oid`.
    pub fn unstage(&mut self, oid: Oid) -> Result<()> {
        self.open()?;
        self.writes.unstage(oid);
        Ok(())
    }

    pub fn new_oid(&self) -> Result<Oid> {
        Storage { inner: self.inner.clone() }.new_oid()
    }

    pub fn set_user(&mut self, user: &[u8]) {
        self.meta.user = user.to_vec();
    }
    pub fn set_description(&mut self, d: &[u8]) {
        self.meta.description = d.to_vec();
    }
    pub fn set_extension(&mut self, e: &[u8]) {
        self.meta.extension = e.to_vec();
    }
    pub fn meta(&self) -> &TxnMeta {
        &self.meta
    }

    /// Commit with this tid rather than the next one (ZODB's restore, e.g. copying a
    /// `Data.fs` with its tids). The commit fails with `Error::Invalid` unless `tid` is
    /// greater than the storage's last tid when it is written.
    pub fn set_tid(&mut self, tid: Tid) -> Result<()> {
        self.open()?;
        self.fixed_tid = Some(tid);
        Ok(())
    }

    /// The tid chosen at commit is at least `tid` (still after every tid before it): a
    /// client's clock, as ZODB's FileStorage takes tids from `time.time()` in the
    /// client. Unlike `set_tid`, it takes no commit order.
    pub fn set_min_tid(&mut self, tid: Tid) -> Result<()> {
        self.open_or_voted()?;
        self.min_tid = Some(tid);
        Ok(())
    }

    fn open_or_voted(&self) -> Result<()> {
        match self.state {
            State::Done => Err(Error::invalid("the transaction is finished")),
            _ => Ok(()),
        }
    }

    /// Require `oid` to be still at `tid` (its newest record, a deletion counts) when
    /// this transaction commits (ZODB's `checkCurrentSerialInTransaction`): its vote
    /// locks `oid` like a written one, so no commit changes it until this one ends, and
    /// fails with `Error::Conflict` if it changed before.
    pub fn require_current(&mut self, oid: Oid, tid: Tid) -> Result<()> {
        self.open()?;
        self.reads.insert(oid, tid);
        Ok(())
    }

    /// Take the commit order at vote, as a transaction with `set_tid` does: from a
    /// successful vote to finish or abort no other transaction is written, so the
    /// transactions visible after the vote are all that commit before this one (`fs2 gc`
    /// checks them for references to what it deletes).
    pub fn hold_commit_order(&mut self) -> Result<()> {
        self.open()?;
        self.hold_order = true;
        Ok(())
    }

    /// The tid this transaction got: known once it is committed (or voted, when it was
    /// chosen with `set_tid`).
    pub fn tid(&self) -> Option<Tid> {
        self.tid
    }

    /// What this transaction has staged for `oid`: `Some(None)` = a deletion.
    pub fn staged(&self, oid: Oid) -> Option<Option<&[u8]>> {
        self.writes.get(oid)
    }

    /// Staged oids in order.
    pub fn staged_oids(&self) -> impl Iterator<Item = Oid> + '_ {
        self.writes.oids()
    }

    /// Read `oid` as this transaction sees it: staged data first, then the snapshot.
    pub fn load(&self, oid: Oid) -> Result<Option<Vec<u8>>> {
        match self.writes.get(oid) {
            Some(d) => Ok(d.map(<[u8]>::to_vec)),
            None => Ok(Storage { inner: self.inner.clone() }.load_at(oid, self.base)?.map(|(_, d)| d)),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.chain.opts.read_only {
            return Err(Error::ReadOnly("the storage is open read-only".into()));
        }
        self.meta.validate()
    }

    /// Commit in one step: returns the new tid once the transaction is durable.
    /// On conflict nothing is applied and the error names the oid.
    pub fn commit(mut self) -> Result<Tid> {
        if self.state == State::Voted {
            return self.finish();
        }
        if !self.reads.is_empty() {
            // Reads to keep current are locked and checked by a vote.
            self.vote()?;
            return self.finish();
        }
        self.open()?;
        self.check_writable()?;
        self.state = State::Done;
        let staged = self.take_staged();
        let (r, rotated) = self.inner.chain.commit(staged);
        self.after(rotated);
        r
    }

    /// What this transaction commits (its metadata and writes move out).
    fn take_staged(&mut self) -> Staged {
        Staged {
            id: self.id,
            base: self.base,
            tid: self.fixed_tid,
            meta: std::mem::take(&mut self.meta),
            writes: std::mem::replace(&mut self.writes, Writes::new()),
            reads: std::mem::take(&mut self.reads),
            min_tid: self.min_tid,
            notify: false,
        }
    }

    /// Phase one: lock the staged oids, check conflicts and reserve the transaction's
    /// space; nothing is written or synced. After `Ok`, `finish` cannot fail with a
    /// conflict or for lack of space; commits and votes of other oids go on. A vote (or
    /// one-step commit) of a locked oid waits until the holder finishes (then it
    /// conflicts) or aborts, as with ZEO 5's and RelStorage's object locks. With
    /// `set_tid` (or `hold_commit_order`) the transaction also takes the commit order:
    /// no other batch is written until it finishes or aborts. After an error the
    /// transaction is still open with its writes (ZODB's transaction manager aborts it).
    pub fn vote(&mut self) -> Result<()> {
        self.open()?;
        self.check_writable()?;
        let staged = self.take_staged();
        let (r, rotated) = self.inner.chain.vote(&staged, self.hold_order);
        (self.meta, self.writes, self.reads) = (staged.meta, staged.writes, staged.reads);
        self.after(rotated);
        self.vote = Some(r?);
        self.tid = self.fixed_tid;
        self.state = State::Voted;
        Ok(())
    }

    /// Phase two: write the voted transaction with the next group commit (sharing its
    /// fsync) and make it visible; returns its tid, chosen now. Fails only if the disk
    /// does (EIO: the storage then refuses writes until reopened).
    pub fn finish(mut self) -> Result<Tid> {
        if self.state != State::Voted {
            return Err(Error::invalid("finish needs a voted transaction; call vote first (or commit)"));
        }
        self.state = State::Done;
        let vote = self.vote.take().expect("a voted transaction holds its vote");
        let staged = self.take_staged();
        let (r, rotated) = self.inner.chain.finish(vote, staged);
        self.after(rotated);
        self.tid = r.as_ref().ok().copied();
        r
    }

    /// `finish`, then `f(tid)` once the `f`s of the `finish_then`s with smaller tids have
    /// run (ZODB delivers invalidations this way: in tid order). Until `f` returns,
    /// [`Storage::notified_tid`] waits. `f` must not call `notified_tid`.
    pub fn finish_then<R>(mut self, f: impl FnOnce(Tid) -> R) -> Result<(Tid, R)> {
        if self.state != State::Voted {
            return Err(Error::invalid("finish needs a voted transaction; call vote first (or commit)"));
        }
        self.state = State::Done;
        let vote = self.vote.take().expect("a voted transaction holds its vote");
        let staged = Staged { notify: true, ..self.take_staged() };
        let (r, rotated) = self.inner.chain.finish(vote, staged);
        self.after(rotated);
        let tid = r?;
        self.tid = Some(tid);
        Ok((tid, self.inner.chain.notified(tid, || f(tid))))
    }

    /// What follows a rotation this thread made (outside every chain lock).
    fn after(&self, rotated: bool) {
        if rotated {
            Storage { inner: self.inner.clone() }.after_rotation();
        }
    }

    /// Discard everything; a voted transaction's locks, reservation and commit order are
    /// released.
    pub fn abort(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if let Some(v) = self.vote.take() {
            self.inner.chain.release(v);
        }
        self.state = State::Done;
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.release();
        let mut bases = self.inner.open_bases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = bases.get_mut(&self.base) {
            *n -= 1;
            if *n == 0 {
                bases.remove(&self.base);
            }
        }
    }
}

impl Storage {
    /// Begin a transaction with a snapshot at the current last tid.
    pub fn begin(&self) -> Transaction {
        Transaction::new(self.inner.clone(), self.last_tid())
    }

    /// Seal the active segment and start a new one; returns the new active segment.
    pub fn rotate(&self) -> Result<SegmentName> {
        if self.inner.chain.opts.read_only {
            return Err(Error::ReadOnly("the storage is open read-only".into()));
        }
        let name = self.inner.chain.rotate()?;
        self.after_rotation();
        Ok(name)
    }

    /// With minimal retention, merge every past segment in the background after a
    /// rotation. A merge already running is left to finish (the next rotation retries).
    pub(crate) fn after_rotation(&self) {
        if self.retention() != crate::settings::Retention::Minimal {
            return;
        }
        match self.start_merge(&crate::merge::Policy::All) {
            Ok(_) | Err(Error::Busy(_)) => {}
            Err(e) => log::warn!("minimal retention: could not start a merge: {e}"),
        }
    }

    /// The last tid, once the callbacks of the [`Transaction::finish_then`]s up to it ran
    /// (ZODB's `lastTransaction`: no snapshot includes a commit whose invalidations were
    /// not delivered); waits for them.
    pub fn notified_tid(&self) -> Tid {
        self.inner.chain.notified_tid()
    }

    /// Make every commit durable (after bulk loads with `sync: false`).
    pub fn sync(&self) -> Result<()> {
        self.inner.chain.sync()
    }
}
