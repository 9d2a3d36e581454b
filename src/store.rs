//! [`Storage`]: the engine's public face. Opening (with recovery), reads, history,
//! listing, transaction iteration and statistics live here (the read path under them in
//! `read.rs`); transactions are in
//! `txn.rs`, the chain and its writer (and the lock order) in `chain.rs`.

use crate::chain::{Chain, View};
use crate::error::{Error, Result};
use crate::format::{Header, TxnMeta, HEADER_SIZE, VERSION};
use crate::read::{current_tid, each_oid, live_at, walk};
use crate::recovery;
use crate::segment::{Scanner, SegmentFile, Step};
use crate::types::{Oid, SegmentName, Tid};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLockReadGuard};

pub use crate::chain::Options;
pub use crate::recovery::IgnoredTail;

/// The storage's shared state: the chain (and its writer) and what the open found.
pub(crate) struct Inner {
    pub chain: Chain,
    pub next_txn_id: AtomicU64,
    /// Problems recovery worked around at open (shown by `check`).
    pub warnings: Mutex<Vec<String>>,
    /// Damage found at open (reads work around it, writes are refused), and what the
    /// open's repairs may have lost (see `recovery::Opened`).
    pub damage: Vec<String>,
    pub losses: Vec<String>,
    /// Files named like segments that are not in the chain (see `Storage::strays`).
    pub strays: Mutex<Vec<PathBuf>>,
    pub ignored_tail: Option<IgnoredTail>,
    pub settings: Mutex<crate::settings::Settings>,
    /// Base tids of the transactions open now, with counts (a merge keeps deletions that
    /// one of them could still conflict with).
    pub open_bases: Mutex<BTreeMap<Tid, usize>>,
    /// The merge (or move) running now (at most one).
    pub merging: Mutex<Option<Arc<crate::merge::progress::MergeProgress>>>,
    _lock: Option<std::fs::File>,
}

/// A filestorage2 storage: a chain of segment files in a directory.
#[derive(Clone)]
pub struct Storage {
    pub(crate) inner: Arc<Inner>,
}

/// One retained revision of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    pub oid: Oid,
    pub tid: Tid,
    /// `None` for a deletion record.
    pub data: Option<Vec<u8>>,
    pub segment: SegmentName,
}

/// A revision without its data (history listings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionInfo {
    pub tid: Tid,
    pub size: u64,
    pub deleted: bool,
    pub segment: SegmentName,
}

/// ZODB `loadBefore`: the revision current just before a tid, and when it stopped being.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBefore {
    pub data: Vec<u8>,
    pub tid: Tid,
    /// The tid of the next revision (or deletion), if there is one.
    pub end: Option<Tid>,
}

/// A live object in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub oid: Oid,
    pub tid: Tid,
    pub size: u64,
}

/// A committed transaction with its records.
#[derive(Clone, Debug)]
pub struct TxnRecord {
    pub tid: Tid,
    pub segment: SegmentName,
    pub offset: u64,
    pub meta: TxnMeta,
    /// (oid, data) in the order written; `None` data = deletion.
    pub records: Vec<(Oid, Option<Vec<u8>>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentState {
    Active,
    Past,
}

/// What `info` shows of one segment.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    pub name: SegmentName,
    pub path: PathBuf,
    pub state: SegmentState,
    pub prev: Option<String>,
    pub bytes: u64,
    pub data_end: u64,
    pub first_tid: Option<Tid>,
    pub last_tid: Option<Tid>,
    pub transactions: u64,
    pub records: u64,
    pub index_entries: u64,
    /// Regions semi-sequential merges appended, newest data first: the history this
    /// segment retains beyond its own transactions.
    pub appended: Vec<AppendedInfo>,
}

/// A region a semi-sequential merge appended to a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendedInfo {
    /// The segment whose records it holds (now archived).
    pub source: SegmentName,
    /// `Source`: the source's newest record of every oid (time travel to the end of the
    /// source is exact); `Target`: only records still current at the end of this segment.
    pub as_of: crate::types::AsOf,
    pub first_tid: Option<Tid>,
    pub last_tid: Option<Tid>,
    pub transactions: u64,
    pub records: u64,
}

/// Storage-wide counters.
#[derive(Clone, Debug)]
pub struct Stats {
    pub last_tid: Tid,
    pub max_oid: Option<Oid>,
    pub segments: usize,
    pub bytes: u64,
    pub transactions: u64,
    pub records: u64,
    pub commits: u64,
    pub conflicts: u64,
}

fn random_id() -> u128 {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    u128::from_le_bytes(b) ^ t ^ ((std::process::id() as u128) << 64)
}

impl Storage {
    /// Create a new, empty storage in `dir` (created if missing; must hold no segments).
    pub fn create(dir: &Path, opts: Options) -> Result<Storage> {
        let vfs = opts.vfs.clone();
        vfs.create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
        let existing = vfs.list(dir).map_err(|e| Error::io(dir, "list", e))?;
        if existing.iter().any(|n| SegmentName::from_file_name(n).is_some()) {
            return Err(Error::invalid(format!("{} already holds a storage; open it instead", dir.display())));
        }
        let alignment = opts.alignment;
        if alignment < HEADER_SIZE as u64 || !alignment.is_multiple_of(HEADER_SIZE as u64) {
            return Err(Error::invalid(format!("alignment must be a multiple of {HEADER_SIZE}")));
        }
        let header = Header {
            version: VERSION,
            flags: 0,
            alignment,
            storage_id: random_id(),
            name: SegmentName::single(1),
            prev: None,
            generation: 1,
            sealed_len: None,
        };
        SegmentFile::create(&*vfs, dir, header)?;
        Storage::open(dir, opts)
    }

    /// Open the storage in `dir`, recovering from a crash if needed (see `recovery`).
    pub fn open(dir: &Path, opts: Options) -> Result<Storage> {
        // One canonical form of the storage path: segment paths derived from it are
        // compared as identities (a relative and an absolute spelling are one directory).
        let dir = &opts.vfs.canonicalize(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("{} does not exist; create a storage with `fs2 init`", dir.display()))
            }
            _ => Error::io(dir, "resolve the path of", e),
        })?;
        let lock = if opts.read_only {
            None
        } else {
            opts.vfs.lock(dir).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotADirectory => recovery::not_a_directory(dir),
                std::io::ErrorKind::WouldBlock => Error::Busy(format!(
                    "{} is open for writing by another process (a mount or a writer); stop it, or open read-only",
                    dir.display()
                )),
                std::io::ErrorKind::NotFound => {
                    Error::NotFound(format!("{} does not exist; create a storage with `fs2 init`", dir.display()))
                }
                _ => Error::io(dir, "lock", e),
            })?
        };
        let opened =
            if opts.read_only { recovery::open_snapshot(dir, &opts)? } else { recovery::open_chain(dir, &opts)? };
        let tail = opened.ignored_tail.as_ref().map(|t| t.to_string());
        for w in &opened.warnings {
            // An ignored tail is part of the result (`ignored_tail`): its reader says it.
            if Some(w) == tail.as_ref() {
                log::info!("{w}");
            } else {
                log::warn!("{w}");
            }
        }
        let settings = crate::settings::Settings::load(&*opts.vfs, dir)?;
        let chain = Chain::new(dir.to_path_buf(), opts, opened.view, opened.alignment, &opened.damage, opened.max_oid);
        let inner = Inner {
            chain,
            next_txn_id: AtomicU64::new(1),
            warnings: Mutex::new(opened.warnings),
            damage: opened.damage,
            losses: opened.losses,
            strays: Mutex::new(opened.strays),
            ignored_tail: opened.ignored_tail,
            merging: Mutex::new(None),
            open_bases: Mutex::new(BTreeMap::new()),
            settings: Mutex::new(settings),
            _lock: lock,
        };
        Ok(Storage { inner: Arc::new(inner) })
    }

    /// How much history this storage keeps (see `settings`).
    pub fn retention(&self) -> crate::settings::Retention {
        self.inner.settings.lock().unwrap().retention
    }

    /// Change and save the retention policy.
    pub fn set_retention(&self, r: crate::settings::Retention) -> Result<()> {
        if self.inner.chain.opts.read_only {
            return Err(Error::ReadOnly("the storage is open read-only".into()));
        }
        let mut s = self.inner.settings.lock().unwrap();
        let new = crate::settings::Settings { retention: r };
        new.save(&*self.inner.chain.opts.vfs, &self.inner.chain.dir)?;
        *s = new;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.inner.chain.dir
    }

    pub fn is_read_only(&self) -> bool {
        self.inner.chain.opts.read_only
    }

    /// Problems that recovery worked around when this storage was opened.
    pub fn open_warnings(&self) -> Vec<String> {
        self.inner.warnings.lock().unwrap().clone()
    }

    /// Damage found at open that reads work around (the damaged objects answer
    /// `Error::Corrupted`) and that makes writes refused; one line each, naming the file
    /// and offset. Damaged transactions of the active segment are in `open_warnings`.
    pub fn open_damage(&self) -> Vec<String> {
        self.inner.damage.clone()
    }

    /// The damaged transactions of the active segment that reads work around (fault
    /// containment): their byte ranges and the oids they may hold.
    pub fn damaged_transactions(&self) -> Vec<crate::damage::DamagedRange> {
        self.view().active.as_ref().map(|a| a.damaged.clone()).unwrap_or_default()
    }

    /// What the repairs of this (writable) open may have lost, e.g. transactions of an
    /// old segment without a recorded length that was cut at a record boundary.
    pub fn open_losses(&self) -> Vec<String> {
        self.inner.losses.clone()
    }

    /// The unreadable tail of the active segment this (read-only) open ignored, if any.
    pub fn ignored_tail(&self) -> Option<&IgnoredTail> {
        self.inner.ignored_tail.as_ref()
    }

    /// Files in the storage directory named like segments that are not part of its chain
    /// (not a segment, another storage's, not linked): ignored at open, never deleted.
    pub fn strays(&self) -> Vec<PathBuf> {
        self.inner.strays.lock().unwrap().clone()
    }

    /// Move the stray files into `<dir>/stray/` (a name taken there gets a `.N` suffix).
    /// Returns (from, to) for each. Needs the writer.
    pub fn move_strays_aside(&self) -> Result<Vec<(PathBuf, PathBuf)>> {
        if self.inner.chain.opts.read_only {
            return Err(Error::ReadOnly("the storage is open read-only".into()));
        }
        let vfs = &*self.inner.chain.opts.vfs;
        let mut strays = self.inner.strays.lock().unwrap();
        let mut moved = Vec::new();
        while let Some(p) = strays.pop() {
            // A rotation since the open may have moved it aside and reused its name.
            let v = self.view();
            let chain = v.active.iter().map(|a| &a.seg.path).chain(v.pasts.iter().map(|p| &p.seg.path));
            if !vfs.exists(&p) || chain.into_iter().any(|c| vfs.same_file(c, &p)) {
                continue;
            }
            drop(v);
            let to = crate::archive::move_aside(vfs, &self.inner.chain.dir, &p)?;
            moved.push((p, to));
        }
        Ok(moved)
    }

    /// The tid of the newest committed transaction (`Tid::ZERO` for an empty storage).
    pub fn last_tid(&self) -> Tid {
        self.view().last_tid
    }

    /// Allocate a fresh oid: larger than every oid stored, and than every oid staged or
    /// allocated since this storage was opened. (An oid allocated but never stored may be
    /// handed out again after a reopen, as in ZODB.) Never wraps: once the largest oid
    /// (`ffffffffffffffff`) is in use, every allocation fails.
    pub fn new_oid(&self) -> Result<Oid> {
        self.inner.chain.next_oid.allocate()
    }

    /// The largest oid in use (stored in any retained record), if any.
    pub fn max_oid(&self) -> Option<Oid> {
        let v = self.view();
        let a = v.active.as_ref().and_then(|a| a.max_oid());
        let p = v.pasts.iter().filter(|p| p.index.len() > 0).map(|p| p.trailer.last_oid).max();
        a.max(p)
    }

    pub(crate) fn view(&self) -> RwLockReadGuard<'_, View> {
        self.inner.chain.read()
    }

    /// The current data of `oid`; `None` if it does not exist or was deleted.
    pub fn load(&self, oid: Oid) -> Result<Option<(Tid, Vec<u8>)>> {
        self.load_at(oid, Tid::MAX)
    }

    /// The data of `oid` as of `at`: its newest retained revision with tid ≤ `at`.
    pub fn load_at(&self, oid: Oid, at: Tid) -> Result<Option<(Tid, Vec<u8>)>> {
        live_at(&self.view(), oid, at, |r| Ok((r.header.tid, r.data()?.into_owned())))
    }

    /// ZODB `loadBefore(oid, tid)`: the revision current just before `before`.
    pub fn load_before(&self, oid: Oid, before: Tid) -> Result<Option<LoadBefore>> {
        let v = self.view();
        let mut out = None;
        let mut end = None;
        walk(&v, oid, Tid(before.0.saturating_sub(1)), |r| {
            if r.header.tid < before {
                if !r.header.is_delete() {
                    out = Some(LoadBefore { tid: r.header.tid, end, data: r.data()?.into_owned() });
                }
                return Ok(false);
            }
            end = Some(r.header.tid);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The tid of `oid`'s newest record (a deletion counts), if it has one.
    pub fn current_tid(&self, oid: Oid) -> Result<Option<Tid>> {
        current_tid(&self.view(), oid)
    }

    /// Every retained revision of `oid`, newest first, including deletions.
    pub fn history(&self, oid: Oid) -> Result<Vec<RevisionInfo>> {
        let v = self.view();
        let mut out = Vec::new();
        walk(&v, oid, Tid::MAX, |r| {
            out.push(RevisionInfo {
                tid: r.header.tid,
                size: r.header.data_len,
                deleted: r.header.is_delete(),
                segment: r.segment,
            });
            Ok(true)
        })?;
        Ok(out)
    }

    /// One retained revision of `oid` written by transaction `tid` exactly.
    pub fn revision(&self, oid: Oid, tid: Tid) -> Result<Option<Revision>> {
        let v = self.view();
        let mut out = None;
        walk(&v, oid, tid, |r| {
            let go = r.header.tid > tid;
            if r.header.tid == tid {
                let segment = r.segment;
                let data = if r.header.is_delete() { None } else { Some(r.data()?.into_owned()) };
                out = Some(Revision { oid, tid, data, segment });
            }
            Ok(go)
        })?;
        Ok(out)
    }

    /// One page of [`Storage::list`] that goes on past damage (fault containment): where a
    /// damaged object is in the way, the page is read object by object and the damaged
    /// ones are returned apart, with their errors, instead of failing the page. Also the
    /// oid to go on from (`None` at the end).
    #[allow(clippy::type_complexity)]
    pub(crate) fn list_contained(
        &self,
        start: Oid,
        at: Tid,
        limit: usize,
    ) -> Result<(Vec<ObjectInfo>, Vec<(Oid, Error)>, Option<Oid>)> {
        let next = |last: Option<Oid>, full: bool| last.filter(|l| full && l.0 < u64::MAX).map(|l| Oid(l.0 + 1));
        match self.list(start, at, limit) {
            Ok(page) => {
                let n = next(page.last().map(|o| o.oid), page.len() == limit);
                Ok((page, Vec::new(), n))
            }
            Err(e) if e.is_corruption() => {
                let oids = self.list_oids(start, limit)?;
                let (mut page, mut damaged) = (Vec::with_capacity(oids.len()), Vec::new());
                for &oid in &oids {
                    match self.stat_at(oid, at) {
                        Ok(Some(r)) if !r.deleted => page.push(ObjectInfo { oid, tid: r.tid, size: r.size }),
                        Ok(_) => {}
                        Err(e) if e.is_corruption() => damaged.push((oid, e)),
                        Err(e) => return Err(e),
                    }
                }
                Ok((page, damaged, next(oids.last().copied(), oids.len() == limit)))
            }
            Err(e) => Err(e),
        }
    }

    /// Live objects with oid ≥ `start`, in oid order, at most `limit`, as of `at`
    /// (`Tid::MAX` = current). Streams: cost is O(limit × segments), not O(objects).
    pub fn list(&self, start: Oid, at: Tid, limit: usize) -> Result<Vec<ObjectInfo>> {
        let v = self.view();
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        each_oid(&v, start, |oid| {
            out.extend(live_at(&v, oid, at, |r| Ok(ObjectInfo { oid, tid: r.header.tid, size: r.header.data_len }))?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Call `f(oid, tid, data)` for the live objects with oid ≥ `start` as of `at`, in oid
    /// order, visiting at most `limit` oids; returns the oid to continue from (`None` at
    /// the end). Holds the read view for one call only, so a scan of every object in
    /// chunks never blocks commits for long.
    pub fn scan_live(
        &self,
        start: Oid,
        at: Tid,
        limit: usize,
        mut f: impl FnMut(Oid, Tid, &[u8]) -> Result<()>,
    ) -> Result<Option<Oid>> {
        let v = self.view();
        let (mut n, mut next) = (0, None);
        each_oid(&v, start, |oid| {
            if n == limit {
                next = Some(oid);
                return Ok(false);
            }
            n += 1;
            walk(&v, oid, at, |r| {
                if r.header.tid > at {
                    return Ok(true);
                }
                if !r.header.is_delete() {
                    let tid = r.header.tid;
                    f(oid, tid, &r.data()?)?;
                }
                Ok(false)
            })?;
            Ok(true)
        })?;
        Ok(next)
    }

    /// Number of live objects (walks every index: O(objects)).
    pub fn count_objects(&self) -> Result<u64> {
        let mut n = 0;
        for o in self.objects(Oid(0), Tid::MAX) {
            match o? {
                crate::Listed::Live(_) => n += 1,
                crate::Listed::Damaged(_, e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Committed transactions with `from ≤ tid ≤ to`, oldest first, read lazily.
    pub fn transactions(&self, from: Tid, to: Tid) -> TxnIter {
        let v = self.view();
        let mut segs = Vec::new();
        for p in v.pasts.iter().rev() {
            if p.trailer.txn_count > 0 && p.trailer.last_tid >= from && p.trailer.first_tid <= to {
                segs.push((p.seg.header.name, crate::seek::seeked(&p.seg, p.data_start(), p.data_end(), from)));
            }
        }
        if let Some(a) = &v.active {
            segs.push((a.seg.header.name, a.scanner_from(from)));
        }
        segs.reverse();
        TxnIter { scan: ChainScan::new(segs), from, to }
    }

    /// The segments of the chain, oldest first.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>> {
        let v = self.view();
        let mut out = Vec::new();
        for parts in v.files().rev() {
            let own = &parts[0];
            let with_txns = || parts.iter().map(|p| &p.trailer).filter(|t| t.txn_count > 0);
            out.push(SegmentInfo {
                name: own.seg.header.name,
                path: own.seg.path.clone(),
                state: SegmentState::Past,
                prev: own.seg.prev(),
                bytes: own.seg.effective_len()?,
                data_end: own.data_end(),
                first_tid: with_txns().map(|t| t.first_tid).min(),
                last_tid: with_txns().map(|t| t.last_tid).max(),
                transactions: parts.iter().map(|p| p.trailer.txn_count).sum(),
                records: parts.iter().map(|p| p.trailer.record_count).sum(),
                index_entries: parts.iter().map(|p| p.trailer.count).sum(),
                appended: parts[1..]
                    .iter()
                    .filter_map(|p| {
                        let a = p.trailer.appended?;
                        let t = &p.trailer;
                        let some = t.txn_count > 0;
                        Some(AppendedInfo {
                            source: a.source,
                            as_of: a.as_of,
                            first_tid: some.then_some(t.first_tid),
                            last_tid: some.then_some(t.last_tid),
                            transactions: t.txn_count,
                            records: t.record_count,
                        })
                    })
                    .collect(),
            });
        }
        if let Some(a) = &v.active {
            let some = a.stats.txn_count > 0;
            out.push(SegmentInfo {
                name: a.seg.header.name,
                path: a.seg.path.clone(),
                state: SegmentState::Active,
                prev: a.seg.prev(),
                bytes: a.end,
                data_end: a.end,
                first_tid: some.then_some(a.stats.first_tid),
                last_tid: some.then_some(a.stats.last_tid),
                transactions: a.stats.txn_count,
                records: a.stats.record_count,
                index_entries: a.index.len() as u64,
                appended: Vec::new(),
            });
        }
        Ok(out)
    }

    pub fn stats(&self) -> Result<Stats> {
        let segs = self.segments()?;
        Ok(Stats {
            last_tid: self.last_tid(),
            max_oid: self.max_oid(),
            segments: segs.len(),
            bytes: segs.iter().map(|s| s.bytes).sum(),
            transactions: segs.iter().map(|s| s.transactions).sum(),
            records: segs.iter().map(|s| s.records).sum(),
            commits: self.inner.chain.commits.load(Ordering::Relaxed),
            conflicts: self.inner.chain.conflicts.load(Ordering::Relaxed),
        })
    }
}

/// The committed transactions of a list of segment scans, in file order.
pub(crate) struct ChainScan {
    /// Remaining segments, the next one last.
    segs: Vec<(SegmentName, Scanner)>,
    done: bool,
}

impl ChainScan {
    pub fn new(segs: Vec<(SegmentName, Scanner)>) -> ChainScan {
        ChainScan { segs, done: false }
    }

    /// `f(segment, offset, transaction, record bytes)` of the next committed transaction
    /// with `from ≤ tid ≤ to`; `None` at the end (or past `to`). Damage is one error item:
    /// a damaged transaction known at open is stepped over, other damage costs the rest of
    /// its segment (part); an I/O error ends the scan.
    pub fn next_txn<T>(
        &mut self,
        from: Tid,
        to: Tid,
        f: impl FnOnce(SegmentName, u64, crate::segment::DecodedTxn, &[u8]) -> T,
    ) -> Option<Result<T>> {
        while !self.done {
            let (name, sc) = self.segs.last_mut()?;
            let name = *name;
            let step = match sc.next_step() {
                Ok(s) => s,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            match step {
                Step::Txn { offset, txn, bytes } => {
                    if txn.header.tid > to {
                        self.done = true;
                        return None;
                    }
                    if txn.header.tid >= from {
                        return Some(Ok(f(name, offset, txn, bytes)));
                    }
                }
                Step::Skip => {}
                Step::End | Step::Index => {
                    self.segs.pop();
                }
                Step::Invalid(why) => {
                    let path = PathBuf::from(name.file_name());
                    // A damaged transaction found at open (fault containment) costs only
                    // itself: its error, then the transactions after it.
                    if let Some((start, end)) = sc.skip_damaged() {
                        let why = format!("damaged transaction (bytes {start}..{end}): {why}");
                        return Some(Err(Error::corrupted(&path, start, why)));
                    }
                    // Damage found by this scan costs the rest of this segment (part) only:
                    // the error, then the next one.
                    let e = Error::corrupted(&path, sc.pos, why);
                    self.segs.pop();
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Iterator over committed transactions (see [`Storage::transactions`]).
pub struct TxnIter {
    scan: ChainScan,
    from: Tid,
    to: Tid,
}

impl Iterator for TxnIter {
    type Item = Result<TxnRecord>;
    fn next(&mut self) -> Option<Result<TxnRecord>> {
        self.scan.next_txn(self.from, self.to, |segment, offset, txn, bytes| {
            let records = txn
                .records
                .iter()
                .map(|(rel, h)| (h.oid, (!h.is_delete()).then(|| bytes[h.data_range(*rel)].to_vec())))
                .collect();
            TxnRecord { tid: txn.header.tid, segment, offset, meta: txn.meta, records }
        })
    }
}
