//! Transactions: snapshot reads, conflict detection, group commit, two-phase commit and
//! rotation.
//!
//! Commit order and durability. One thread at a time holds the writer lock. A one-step
//! commit queues itself; whoever takes the writer lock next writes every queued
//! transaction as one batch (group commit): conflict check, tid, encode under the `PPPP`
//! marker, one `pwrite`, flip each marker to `TTTT`, one `fdatasync`, publish, answer
//! all. Two-phase commit: `vote` writes the record under `PPPP` and syncs (durable, not
//! visible) and holds the commit lock so that no other transaction gets a tid until
//! `finish` flips the marker, syncs and publishes (or `abort` leaves the record as
//! padding). Visibility therefore follows tid order, and a snapshot never changes.

use crate::error::{Error, Result};
use crate::format::{
    encode_padding, encode_txn, encoded_txn_len, Header, RecordToWrite, TxnMeta, HEADER_SIZE, MARK_TXN,
};
use crate::recovery::{note_txn, Opened};
use crate::segment::{place, seal, PastSegment, SegmentFile};
use crate::store::{Active, Entry, Inner, Storage, View};
use crate::types::{Oid, SegmentName, Tid};
use crate::vfs::VFile;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

/// The writer's side: where the next record goes. Guarded by `Inner::writer`.
pub(crate) struct Writer {
    pub seg: Option<Arc<SegmentFile>>,
    pub alignment: u64,
    /// Append position (includes a voted, unpublished record).
    pub end: u64,
    /// File length: bytes in `[end, allocated)` are zeros written ahead (see `preallocate`).
    pub allocated: u64,
    /// Everything below this offset of the active segment is durable.
    pub synced: u64,
    /// The last tid handed out.
    pub last_tid: Tid,
    pub voted: Option<Voted>,
    /// Set after a failed sync (writes are refused until the storage is reopened), or
    /// at open when damage was found: the message writes are refused with.
    pub poisoned: Option<String>,
}

impl Writer {
    pub(crate) fn new(o: &Opened) -> Writer {
        let a = o.view.active.as_ref();
        Writer {
            seg: a.map(|a| a.seg.clone()),
            alignment: o.alignment,
            end: a.map_or(0, |a| a.end),
            allocated: a.map_or(0, |a| a.seg.len().unwrap_or(a.end).max(a.end)),
            synced: a.map_or(0, |a| a.end),
            last_tid: o.view.last_tid,
            voted: None,
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
                .or_else(|| o.damage.first().map(|d| format!("writes are refused: {d}"))),
        }
    }
}

/// The message of a writer poisoned by a failure.
fn failed(why: &str) -> String {
    format!("writes are refused after an earlier failure ({why}); reopen the storage")
}

/// A transaction voted and not yet finished: it holds the commit lock.
pub(crate) struct Voted {
    id: u64,
    done: Written,
}

/// A transaction written to the file, to be published.
struct Written {
    tid: Tid,
    offset: u64,
    entries: Vec<(Oid, Entry)>,
}

/// A one-step commit waiting in the group-commit queue.
pub(crate) struct Pending {
    base: Tid,
    /// A caller-chosen tid (restore); `None`: the next tid.
    tid: Option<Tid>,
    meta: TxnMeta,
    writes: BTreeMap<Oid, Option<Vec<u8>>>,
    result: Mutex<Option<Result<Tid>>>,
}

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
    writes: BTreeMap<Oid, Option<Vec<u8>>>,
    state: State,
    tid: Option<Tid>,
    /// The tid asked for with `set_tid` (copying transactions with their tids).
    fixed_tid: Option<Tid>,
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
            writes: BTreeMap::new(),
            state: State::Open,
            tid: None,
            fixed_tid: None,
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
        self.inner.next_oid.note_used(oid);
        self.writes.insert(oid, Some(data.to_vec()));
        Ok(())
    }

    /// Stage a deletion of `oid` (an external garbage collector's request).
    pub fn delete(&mut self, oid: Oid) -> Result<()> {
        self.open()?;
        self.writes.insert(oid, None);
        Ok(())
    }

    /// Drop a staged store or delete of `oid`.
    pub fn unstage(&mut self, oid: Oid) -> Result<()> {
        self.open()?;
        self.writes.remove(&oid);
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

    /// The tid this transaction got: known once it is voted (or committed).
    pub fn tid(&self) -> Option<Tid> {
        self.tid
    }

    /// What this transaction has staged for `oid`: `Some(None)` = a deletion.
    pub fn staged(&self, oid: Oid) -> Option<Option<&[u8]>> {
        self.writes.get(&oid).map(|d| d.as_deref())
    }

    /// Staged oids in order.
    pub fn staged_oids(&self) -> impl Iterator<Item = Oid> + '_ {
        self.writes.keys().copied()
    }

    /// Read `oid` as this transaction sees it: staged data first, then the snapshot.
    pub fn load(&self, oid: Oid) -> Result<Option<Vec<u8>>> {
        match self.writes.get(&oid) {
            Some(d) => Ok(d.clone()),
            None => Ok(Storage { inner: self.inner.clone() }.load_at(oid, self.base)?.map(|(_, d)| d)),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.opts.read_only {
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
        self.open()?;
        self.check_writable()?;
        self.state = State::Done;
        let req = Arc::new(Pending {
            base: self.base,
            tid: self.fixed_tid,
            meta: std::mem::take(&mut self.meta),
            writes: std::mem::take(&mut self.writes),
            result: Mutex::new(None),
        });
        let inner = &self.inner;
        inner.queue.lock().unwrap().push(req.clone());
        // Wait while another thread leads a batch: it may write ours too. A finished
        // committer returns without touching the writer lock, so it never waits through
        // the next batch's sync (that is what makes batches grow under load).
        let mut leading = inner.leader.lock().unwrap();
        loop {
            if let Some(r) = req.result.lock().unwrap().take() {
                return r;
            }
            if !*leading {
                *leading = true;
                break;
            }
            leading = inner.batch_done.wait(leading).unwrap();
        }
        drop(leading);
        let _lead = Leading(inner);
        // Leader: write everything queued so far as one batch.
        let mut w = inner.writer.lock().unwrap();
        while w.voted.is_some() {
            w = inner.writer_cv.wait(w).unwrap();
        }
        let batch = std::mem::take(&mut *inner.queue.lock().unwrap());
        write_batch(inner, &mut w, &batch, false);
        let rotated = maybe_rotate(inner, &mut w);
        drop(w);
        if rotated {
            Storage { inner: inner.clone() }.after_rotation();
        }
        let r = req.result.lock().unwrap().take();
        r.expect("the leader answers its own request")
    }

    /// Phase one: check conflicts and write the transaction durably but invisibly. After
    /// `Ok`, `finish` cannot fail with a conflict; other commits wait until this one
    /// finishes or aborts. After an error the transaction is still open with its writes
    /// (ZODB's transaction manager then aborts it).
    pub fn vote(&mut self) -> Result<()> {
        self.open()?;
        self.check_writable()?;
        let inner = &self.inner;
        let mut w = inner.writer.lock().unwrap();
        while w.voted.is_some() {
            w = inner.writer_cv.wait(w).unwrap();
        }
        let req = Arc::new(Pending {
            base: self.base,
            tid: self.fixed_tid,
            meta: self.meta.clone(),
            writes: std::mem::take(&mut self.writes),
            result: Mutex::new(None),
        });
        let written = write_batch(inner, &mut w, std::slice::from_ref(&req), true);
        let res = req.result.lock().unwrap().take().expect("answered");
        self.writes = Arc::try_unwrap(req).ok().map(|p| p.writes).unwrap_or_default();
        match res {
            Ok(tid) => {
                self.tid = Some(tid);
                self.state = State::Voted;
                let done = written.into_iter().next().expect("one written");
                w.voted = Some(Voted { id: self.id, done });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Phase two: make the voted transaction visible; returns its tid.
    pub fn finish(mut self) -> Result<Tid> {
        if self.state != State::Voted {
            return Err(Error::invalid("finish needs a voted transaction; call vote first (or commit)"));
        }
        self.state = State::Done;
        let inner = self.inner.clone();
        let mut w = inner.writer.lock().unwrap();
        let voted = match w.voted.take() {
            Some(v) if v.id == self.id => v,
            other => {
                w.voted = other;
                return Err(Error::invalid("this transaction does not hold the commit lock"));
            }
        };
        inner.writer_cv.notify_all();
        let seg = w.seg.clone().expect("a writable storage has an active segment");
        let res = seg.file.write_all_at(&MARK_TXN, voted.done.offset).and_then(|_| {
            if inner.opts.sync {
                seg.file.sync()
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            // The record may or may not become visible after a restart: refuse to guess.
            let msg = format!("finishing transaction {} failed: {e}", voted.done.tid);
            w.poisoned = Some(failed(&msg));
            return Err(Error::io(&seg.path, "finish transaction in", e));
        }
        let tid = voted.done.tid;
        publish(&inner, &w, vec![voted.done]);
        let rotated = maybe_rotate(&inner, &mut w);
        drop(w);
        if rotated {
            Storage { inner: inner.clone() }.after_rotation();
        }
        Ok(tid)
    }

    /// Discard everything; a voted record stays in the file as padding.
    pub fn abort(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if self.state == State::Voted {
            let mut w = self.inner.writer.lock().unwrap();
            if w.voted.as_ref().is_some_and(|v| v.id == self.id) {
                w.voted = None;
                self.inner.writer_cv.notify_all();
            }
        }
        self.state = State::Done;
    }
}

/// Leadership of the group commit; released (and waiters woken) even on a panic.
struct Leading<'a>(&'a Inner);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        *self.0.leader.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0.batch_done.notify_all();
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

/// Write `batch` as one append (+ one sync). Answers every request; returns what was
/// written (for a vote, not yet published). `vote`: leave the `PPPP` markers.
fn write_batch(inner: &Inner, w: &mut MutexGuard<'_, Writer>, batch: &[Arc<Pending>], vote: bool) -> Vec<Written> {
    let answer = |p: &Pending, r: Result<Tid>| *p.result.lock().unwrap() = Some(r);
    if let Some(why) = &w.poisoned {
        for p in batch {
            answer(p, Err(Error::ReadOnly(why.clone())));
        }
        return Vec::new();
    }
    let Some(seg) = w.seg.clone() else {
        for p in batch {
            answer(p, Err(Error::ReadOnly("the storage has no active segment (read-only open)".into())));
        }
        return Vec::new();
    };
    let form = seg.header.record_form();
    let start = w.end;
    let mut buf = Vec::new();
    let mut pos = start;
    let mut written: Vec<(usize, Written)> = Vec::new();
    // oid -> (offset, tid) of records earlier in this batch (kept only while a later
    // transaction of the batch can read it).
    let mut in_batch: HashMap<Oid, (u64, Tid)> = HashMap::new();
    {
        let v = inner.view.read().unwrap();
        'txns: for (i, p) in batch.iter().enumerate() {
            // One lookup per oid gives both the conflict check and the prev pointer.
            let mut recs = Vec::with_capacity(p.writes.len());
            for (oid, data) in &p.writes {
                let (latest, prev) = match in_batch.get(oid) {
                    Some(&(off, t)) => (Some(t), off),
                    None => match newest_record(&v, *oid, p.base) {
                        Ok(x) => x,
                        Err(e) => {
                            answer(p, Err(e));
                            continue 'txns;
                        }
                    },
                };
                if let Some(t) = latest.filter(|t| *t > p.base) {
                    inner.conflicts.fetch_add(1, Ordering::Relaxed);
                    answer(p, Err(Error::Conflict { oid: *oid, tid: t }));
                    continue 'txns;
                }
                recs.push(RecordToWrite { oid: *oid, prev, data: data.as_deref() });
            }
            let tid = match p.tid {
                None => Tid::next_after(w.last_tid),
                Some(t) if t > w.last_tid => t,
                Some(t) => {
                    let last = w.last_tid;
                    answer(
                        p,
                        Err(Error::invalid(format!("tid {t} is not after the last tid {last}; tids must increase"))),
                    );
                    continue 'txns;
                }
            };
            let (pad, len) = place(pos, encoded_txn_len(&p.meta, &recs, form), w.alignment);
            if pad > 0 {
                let (head, tail) = encode_padding(pad);
                buf.extend_from_slice(&head);
                buf.resize((pos + pad - start) as usize - 8, 0);
                buf.extend_from_slice(&tail);
            }
            let offset = pos + pad;
            let rels = encode_txn(&mut buf, len, tid, w.synced, &p.meta, &recs, form);
            let entries: Vec<(Oid, Entry)> =
                recs.iter().zip(rels).map(|(r, rel)| (r.oid, Entry { offset: offset + rel, tid })).collect();
            let later = i + 1 < batch.len();
            for (oid, e) in &entries {
                if later {
                    in_batch.insert(*oid, (e.offset, tid));
                }
                inner.next_oid.note_used(*oid);
            }
            w.last_tid = tid;
            pos = offset + len;
            written.push((i, Written { tid, offset, entries }));
        }
    }
    if written.is_empty() {
        return Vec::new();
    }
    let file = &seg.file;
    preallocate(w, &**file, pos, inner.opts.preallocate);
    let mut res = file.write_all_at(&buf, start);
    if res.is_ok() && !vote {
        for (_, wr) in &written {
            res = file.write_all_at(&MARK_TXN, wr.offset);
            if res.is_err() {
                break;
            }
        }
    }
    let wrote = res.is_ok();
    if wrote && (inner.opts.sync || vote) {
        res = file.sync();
    }
    if let Err(e) = res {
        // Take the batch back. If that fails too, or the sync failed (the kernel may
        // have dropped dirty pages), refuse further writes rather than guess.
        let undone = file.set_len(start).and_then(|_| file.sync()).is_ok();
        w.allocated = start;
        if !undone || wrote {
            w.poisoned = Some(failed(&format!("{}: {e}", seg.path.display())));
        }
        w.last_tid = inner.view.read().unwrap().last_tid.max(written.last().map_or(Tid::ZERO, |x| x.1.tid));
        for (i, _) in &written {
            // One copy per transaction of the batch; keep the OS error number (ENOSPC, EIO).
            let copy = match e.raw_os_error() {
                Some(n) => std::io::Error::from_raw_os_error(n),
                None => std::io::Error::new(e.kind(), e.to_string()),
            };
            answer(&batch[*i], Err(Error::io(&seg.path, "commit to", copy)));
        }
        return Vec::new();
    }
    w.end = pos;
    if inner.opts.sync || vote {
        w.synced = pos;
    }
    for (i, wr) in &written {
        answer(&batch[*i], Ok(wr.tid));
    }
    let written: Vec<Written> = written.into_iter().map(|(_, wr)| wr).collect();
    if vote {
        return written;
    }
    publish(inner, w, written);
    Vec::new()
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
    let target = need.max(w.allocated + chunk).div_ceil(4096) * 4096;
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
fn publish(inner: &Inner, w: &Writer, written: Vec<Written>) {
    let mut v = inner.view.write().unwrap();
    let n = written.len() as u64;
    let a = v.active.as_mut().expect("a writable storage has an active segment");
    let mut last = None;
    let events = inner.subscribers.events(|| {
        let ev =
            |wr: &Written| crate::views::CommitEvent { tid: wr.tid, oids: wr.entries.iter().map(|e| e.0).collect() };
        written.iter().map(ev).collect()
    });
    for wr in written {
        note_txn(&mut a.stats, wr.tid, wr.entries.len());
        a.index.extend(wr.entries);
        last = Some(wr.tid);
    }
    // Publishing happens only while nothing is voted, so the writer's end is all final.
    debug_assert!(w.voted.is_none());
    a.end = w.end;
    if let Some(t) = last {
        v.last_tid = t;
    }
    drop(v);
    inner.commits.fetch_add(n, Ordering::Relaxed);
    inner.subscribers.notify(events);
}

/// Rotate when the active segment has grown past the configured size.
/// Whether it rotated.
fn maybe_rotate(inner: &Inner, w: &mut MutexGuard<'_, Writer>) -> bool {
    let limit = inner.opts.rotate_size;
    if limit > 0 && w.end >= limit && w.voted.is_none() && w.poisoned.is_none() {
        match rotate_locked(inner, w) {
            Ok(_) => return true,
            Err(e) => log::error!("automatic rotation failed: {e}"),
        }
    }
    false
}

/// Seal the active segment (index + trailer), start the next one, swap the in-memory
/// index for the mapped one. Each step is durable before the next; recovery finishes a
/// rotation interrupted after sealing and drops an unfinished seal.
pub(crate) fn rotate_locked(inner: &Inner, w: &mut MutexGuard<'_, Writer>) -> Result<SegmentName> {
    if let Some(why) = &w.poisoned {
        return Err(Error::ReadOnly(why.clone()));
    }
    if w.voted.is_some() {
        return Err(Error::Busy("a voted transaction is pending; rotate after it finishes".into()));
    }
    let Some(seg) = w.seg.clone() else { return Err(Error::ReadOnly("the storage is open read-only".into())) };
    let (entries, stats) = {
        let v = inner.view.read().unwrap();
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
    let new_seg = match SegmentFile::create(&*inner.opts.vfs, &inner.dir, header) {
        Ok(s) => Arc::new(s),
        Err(e) => return Err(fail(w, e)),
    };
    let parts = match SegmentFile::open(&*inner.opts.vfs, &seg.path, false).and_then(PastSegment::open) {
        Ok(p) => p,
        Err(e) => return Err(fail(w, e)),
    };
    {
        let mut v = inner.view.write().unwrap();
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

impl Storage {
    /// Seal the active segment and start a new one; returns the new active segment.
    pub fn rotate(&self) -> Result<SegmentName> {
        if self.inner.opts.read_only {
            return Err(Error::ReadOnly("the storage is open read-only".into()));
        }
        let inner = &self.inner;
        let mut w = inner.writer.lock().unwrap();
        while w.voted.is_some() {
            w = inner.writer_cv.wait(w).unwrap();
        }
        let name = rotate_locked(inner, &mut w)?;
        drop(w);
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

    /// Make every commit durable (after bulk loads with `sync: false`).
    pub fn sync(&self) -> Result<()> {
        let mut w = self.inner.writer.lock().unwrap();
        if let Some(seg) = w.seg.clone() {
            seg.file.sync().map_err(|e| Error::io(&seg.path, "sync", e))?;
            w.synced = w.end;
        }
        Ok(())
    }
}
