//! Model-based test (STYLE.md "Test pyramid", level 3): random sequences of operations
//! are applied both to a storage and to a reference model made of `BTreeMap`s, and every
//! observable of the storage is compared with the model after every step.
//!
//! Operations: begin up to three concurrent transactions (each with its own snapshot);
//! store, delete, unstage, set metadata and read inside them; commit, abort, vote+finish,
//! vote+abort; rotate; merge (all past segments, a random adjacent run by name, or
//! "keep at most k"; copying, or appending to the run's newest segment as of each
//! source's end or of the target's end); reopen with other options (sync on/off, automatic rotation);
//! sync; and a read-only open that is compared like the writer.
//!
//! A merge changes the model as the engine documents it: the current state stays exactly
//! the same; of the records in the merged range only each oid's newest is retained, and a
//! deletion only while an older segment still holds the oid (otherwise the object's
//! records in the range vanish with it); transactions left without records vanish,
//! except the newest of the range (so the last tid stays what it was, also after a
//! reopen). An append merge folds the run into its newest segment one source at a time,
//! newest first; each step is a merge of the source's range alone, and as of the
//! target's end it also drops the source's records of oids the target holds. Oids come
//! from a small
//! range so that conflicts are frequent; data sizes run from empty to larger than the
//! 4096-byte alignment, so padding and over-long records both happen.
//!
//! A failure prints the seed, the configuration, the operation log and a shrunk operation
//! list that still fails, ready to paste into a named regression test (end of the file).
//!
//! Environment:
//! - `FS2_MODEL_SEEDS=N`: run N seeds per randomized test instead of the default.
//! - `FS2_MODEL_SEED=S`: run only seed S (replay a reported failure).
//! - `FS2_MODEL_STEPS=N`: operations per seed.

mod common;
use common::Rng;
use filestorage2::merge::{MergeReport, Policy, SegmentStat, Strategy};
use filestorage2::vfs::{SimVfs, Vfs};
use filestorage2::{
    AsOf, Error, LoadBefore, ObjectInfo, Oid, Options, Revision, SegmentName, SegmentState, Storage, Tid, Transaction,
    TxnMeta, TxnRecord,
};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Res<T = ()> = Result<T, String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($fmt:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!("{}:\n   storage: {:?}\n   model:   {:?}", format!($($fmt)+), got, want));
        }
    }};
}

/// An engine result, or the error as a message naming what was attempted.
fn ok<T>(r: filestorage2::Result<T>, what: std::fmt::Arguments<'_>) -> Res<T> {
    r.map_err(|e| format!("{what}: unexpected error: {e}"))
}

// ---------------------------------------------------------------------------------------
// Randomness: splitmix64, seeded, reproducible.

/// `len` pseudo-random bytes determined by `seed`.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A data size: often tiny, sometimes empty, sometimes larger than a 4096 alignment.
fn gen_len(r: &mut Rng) -> usize {
    match r.below(20) {
        0..=1 => 0,
        2..=9 => 1 + r.pick(16),
        10..=15 => 16 + r.pick(600),
        16..=18 => 600 + r.pick(3000),
        _ => 3000 + r.pick(7000),
    }
}

// ---------------------------------------------------------------------------------------
// Configuration and operations.

/// Oids `0..RANGE` are the ones random stores and deletes pick from.
const RANGE: u64 = 10;
/// Transactions open at once.
const SLOTS: usize = 3;
/// (sync, rotate_size) of the options a session opens with. Rotation after every commit
/// (any size below the 4096-byte header), every few commits, and never.
const SESSIONS: [(bool, u64); 6] =
    [(true, 0), (false, 0), (false, 4000), (false, 12_000), (true, 40_000), (false, 64 << 20)];

#[derive(Clone, Copy, Debug)]
struct Config {
    /// Real files in a temporary directory, or the simulated disk.
    real: bool,
    /// Alignment the storage is created with (a property of its segments).
    alignment: u64,
    /// Index into `SESSIONS` of the first session.
    session: usize,
}

fn config(seed: u64, real: bool) -> Config {
    let mut r = Rng(seed ^ 0x5EED_C0FF_EE00_0001);
    Config { real, alignment: [4096, 4096, 8192, 1 << 28][r.pick(4)], session: r.pick(SESSIONS.len()) }
}

/// One step. `t` names a transaction slot; an operation on an empty slot does nothing,
/// so that any sub-list of a failing list can be replayed while shrinking.
#[derive(Clone, Debug)]
#[allow(dead_code)] // every variant is generated; regression tests name a few
enum Op {
    Begin,
    Store {
        t: usize,
        oid: u64,
        len: usize,
        seed: u64,
    },
    /// Store under an oid from `new_oid` (storage's or the transaction's).
    StoreNew {
        t: usize,
        len: usize,
        seed: u64,
        via_txn: bool,
    },
    Delete {
        t: usize,
        oid: u64,
    },
    Unstage {
        t: usize,
        oid: u64,
    },
    Meta {
        t: usize,
        seed: u64,
    },
    /// Transaction-local reads of every oid.
    Reads {
        t: usize,
    },
    Commit {
        t: usize,
    },
    Abort {
        t: usize,
    },
    VoteFinish {
        t: usize,
    },
    VoteAbort {
        t: usize,
    },
    Rotate,
    /// `how` 0: `Policy::All`; 1: `Policy::Named` of the adjacent run of past segments
    /// picked by `at` and `len`; 2: `Policy::KeepAtMost(1 + len % 4)`. `strategy` 0: copy;
    /// 1: append as of each source's end; 2: append as of the target's end.
    Merge {
        how: u8,
        at: usize,
        len: usize,
        strategy: u8,
    },
    Reopen {
        session: usize,
    },
    ReadOnlyCheck,
    Sync,
}

/// Weights of rotations and merges among the operations (the rest are fixed).
#[derive(Clone, Copy, Debug)]
struct Mix {
    rotate: u64,
    merge: u64,
}

const MIX: Mix = Mix { rotate: 3, merge: 3 };
/// Many short segments, merged often.
const MERGE_HEAVY: Mix = Mix { rotate: 12, merge: 10 };

fn gen_op(r: &mut Rng, h: &Harness, mix: Mix) -> Op {
    let open: Vec<usize> = (0..SLOTS).filter(|i| h.slots[*i].is_some()).collect();
    let begin = if open.len() < SLOTS { [60, 35, 20, 0][open.len()] } else { 0 };
    let txn = if open.is_empty() { 0 } else { 100 };
    // (weight, kind) — the weights of transaction operations apply when one is open.
    let table = [(begin, 0), (txn, 1), (mix.rotate, 2), (1, 3), (1, 4), (1, 5), (mix.merge, 6)];
    let total: u64 = table.iter().map(|x| x.0).sum();
    let mut x = r.below(total);
    let kind = table
        .iter()
        .find(|(w, _)| {
            if x < *w {
                true
            } else {
                x -= w;
                false
            }
        })
        .unwrap()
        .1;
    match kind {
        0 => Op::Begin,
        2 => Op::Rotate,
        3 => Op::Reopen { session: r.pick(SESSIONS.len()) },
        4 => Op::ReadOnlyCheck,
        5 => Op::Sync,
        6 => Op::Merge { how: r.below(3) as u8, at: r.pick(8), len: r.pick(8), strategy: r.below(3) as u8 },
        _ => {
            let t = open[r.pick(open.len())];
            match r.below(100) {
                0..=39 => Op::Store { t, oid: r.below(RANGE), len: gen_len(r), seed: r.next() },
                40..=49 => Op::Delete { t, oid: r.below(RANGE) },
                50..=52 => {
                    let staged: Vec<u64> = h.slots[t].as_ref().map(|o| o.writes.keys().copied().collect()).unwrap();
                    let oid = if staged.is_empty() { r.below(RANGE) } else { staged[r.pick(staged.len())] };
                    Op::Unstage { t, oid }
                }
                53..=56 => Op::Meta { t, seed: r.next() },
                57..=61 => Op::Reads { t },
                62..=64 => Op::StoreNew { t, len: gen_len(r), seed: r.next(), via_txn: r.below(2) == 0 },
                65..=81 => Op::Commit { t },
                82..=85 => Op::Abort { t },
                86..=95 => Op::VoteFinish { t },
                _ => Op::VoteAbort { t },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The reference model.

type Writes = BTreeMap<u64, Option<Vec<u8>>>;
/// One revision: the tid that wrote it and its data (`None` = deletion).
type Rev = (Tid, Option<Vec<u8>>);

#[derive(Clone, Debug)]
struct MTxn {
    tid: Tid,
    meta: TxnMeta,
    /// In oid order (the order the engine writes them).
    records: Vec<(u64, Option<Vec<u8>>)>,
}

#[derive(Clone, Default)]
struct Model {
    /// oid -> every retained revision, oldest first; `None` = deletion.
    history: BTreeMap<u64, Vec<Rev>>,
    /// Committed transactions that kept records, oldest first.
    txns: Vec<MTxn>,
    /// The tid of the newest committed transaction (a merge may drop the transaction,
    /// never this).
    last: Tid,
}

/// What a merge of the model did (the engine's `MergeCounts` must agree).
#[derive(Debug, PartialEq, Eq)]
struct Merged {
    records_out: u64,
    transactions_out: u64,
    deletions_dropped: u64,
}

impl Model {
    fn last_tid(&self) -> Tid {
        self.last
    }
    fn hist(&self, oid: u64) -> &[Rev] {
        self.history.get(&oid).map_or(&[], |h| h.as_slice())
    }
    fn at(&self, oid: u64, at: Tid) -> Option<(Tid, Vec<u8>)> {
        let (t, d) = self.hist(oid).iter().rev().find(|(t, _)| *t <= at)?;
        d.clone().map(|d| (*t, d))
    }
    fn current_tid(&self, oid: u64) -> Option<Tid> {
        self.hist(oid).last().map(|e| e.0)
    }
    fn load_before(&self, oid: u64, before: Tid) -> Option<LoadBefore> {
        let h = self.hist(oid);
        let i = h.iter().rposition(|(t, _)| *t < before)?;
        let data = h[i].1.clone()?;
        Some(LoadBefore { data, tid: h[i].0, end: h.get(i + 1).map(|e| e.0) })
    }
    fn max_oid(&self) -> Option<Oid> {
        self.history.keys().next_back().map(|o| Oid(*o))
    }
    fn live_at(&self, at: Tid) -> Vec<ObjectInfo> {
        self.history
            .keys()
            .filter_map(|&oid| self.at(oid, at).map(|(tid, d)| ObjectInfo { oid: Oid(oid), tid, size: d.len() as u64 }))
            .collect()
    }
    fn records(&self) -> u64 {
        self.txns.iter().map(|t| t.records.len() as u64).sum()
    }
    /// The oids of `writes` changed by a transaction committed after `base`.
    fn conflicting(&self, base: Tid, writes: &Writes) -> Vec<u64> {
        writes.keys().copied().filter(|o| self.current_tid(*o).is_some_and(|t| t > base)).collect()
    }
    fn apply(&mut self, tid: Tid, meta: TxnMeta, writes: Writes) {
        for (oid, d) in &writes {
            self.history.entry(*oid).or_default().push((tid, d.clone()));
        }
        self.txns.push(MTxn { tid, meta, records: writes.into_iter().collect() });
        self.last = tid;
    }
    /// Merge the segments holding the transactions with `lo <= tid <= hi` (and nothing
    /// else: the segments older than the merge hold exactly the tids below `lo`).
    /// `oldest_open`: the oldest base of an open transaction (a deletion newer than it stays).
    /// `superseded_until`: an append as of the end of the target, whose last tid this is:
    /// the range's records of an oid written in `(hi, superseded_until]` go.
    fn merge(&mut self, lo: Tid, hi: Tid, oldest_open: Option<Tid>, superseded_until: Option<Tid>) -> Merged {
        let inside = |t: Tid| lo <= t && t <= hi;
        let mut dropped = 0;
        // Per oid: the newest record in the range survives, unless it is a deletion that
        // no older record and no open transaction needs (then the oid's records in the
        // range all go).
        let mut keep: BTreeMap<u64, Option<Tid>> = BTreeMap::new();
        for (oid, h) in &self.history {
            let Some((t, d)) = h.iter().rev().find(|(t, _)| inside(*t)) else { continue };
            if superseded_until.is_some_and(|u| h.iter().any(|(t, _)| hi < *t && *t <= u)) {
                keep.insert(*oid, None);
                continue;
            }
            let older = h.iter().any(|(t, _)| *t < lo);
            let open_conflict = oldest_open.is_some_and(|b| *t > b);
            if d.is_none() && !older && !open_conflict {
                dropped += 1;
                keep.insert(*oid, None);
            } else {
                keep.insert(*oid, Some(*t));
            }
        }
        for (oid, k) in &keep {
            let h = self.history.get_mut(oid).expect("an oid of the history");
            h.retain(|(t, _)| !inside(*t) || Some(*t) == *k);
            if h.is_empty() {
                self.history.remove(oid);
            }
        }
        let (mut records_out, mut transactions_out) = (0, 0);
        self.txns.retain_mut(|x| {
            if !inside(x.tid) {
                return true;
            }
            x.records.retain(|(oid, _)| keep.get(oid) == Some(&Some(x.tid)));
            records_out += x.records.len() as u64;
            // The newest transaction of the range stays even without records: it keeps
            // the last tid of a reopened storage.
            let stays = !x.records.is_empty() || x.tid == hi;
            transactions_out += stays as u64;
            stays
        });
        Merged { records_out, transactions_out, deletions_dropped: dropped }
    }
}

// ---------------------------------------------------------------------------------------
// The harness: a storage, its open transactions, and the model.

struct Open {
    txn: Transaction,
    base: Tid,
    writes: Writes,
    meta: TxnMeta,
}

struct Harness {
    cfg: Config,
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    vfs: SimVfs,
    storage: Option<Storage>,
    slots: Vec<Option<Open>>,
    model: Model,
    /// The largest oid compared (inclusive); grows with `new_oid`.
    top: u64,
    /// The last oid `new_oid` returned in this session.
    last_new_oid: Option<u64>,
    /// Commits and conflicts in this session (the storage's counters).
    commits: u64,
    conflicts: u64,
    /// Commits and conflicts over all sessions.
    total: (u64, u64),
    /// Segments the chain has at least (1 + manual rotations); exact if no session
    /// could rotate automatically.
    min_segments: usize,
    auto_rotation: bool,
    /// Merges done: (merges, segments merged, deletions dropped, transactions dropped,
    /// append merges).
    merges: (u64, u64, u64, u64, u64),
}

impl Harness {
    fn new(cfg: Config) -> Res<Harness> {
        let (tmp, dir) = if cfg.real {
            let t = tempfile::tempdir().map_err(|e| e.to_string())?;
            let d = t.path().join("s");
            (Some(t), d)
        } else {
            (None, PathBuf::from("/s"))
        };
        let mut h = Harness {
            cfg,
            _tmp: tmp,
            dir,
            vfs: SimVfs::new(),
            storage: None,
            slots: (0..SLOTS).map(|_| None).collect(),
            model: Model::default(),
            top: RANGE,
            last_new_oid: None,
            commits: 0,
            conflicts: 0,
            total: (0, 0),
            min_segments: 1,
            auto_rotation: false,
            merges: (0, 0, 0, 0, 0),
        };
        let opts = Options { alignment: cfg.alignment, ..h.options(cfg.session) };
        h.storage = Some(ok(Storage::create(&h.dir, opts), format_args!("create {cfg:?}"))?);
        Ok(h)
    }

    fn options(&mut self, session: usize) -> Options {
        let (sync, rotate_size) = SESSIONS[session % SESSIONS.len()];
        self.auto_rotation |= rotate_size > 0 && rotate_size < 1 << 20;
        let vfs: Arc<dyn filestorage2::vfs::Vfs> =
            if self.cfg.real { Arc::new(filestorage2::vfs::RealVfs) } else { Arc::new(self.vfs.clone()) };
        Options { sync, rotate_size, vfs, ..Options::default() }
    }

    fn s(&self) -> &Storage {
        self.storage.as_ref().expect("open")
    }

    fn check(&self) -> Res {
        let segs = (self.min_segments, !self.auto_rotation);
        compare(self.s(), &self.model, self.top, (self.commits, self.conflicts), segs)
    }

    /// Apply a commit's outcome to the model; `conflicts` are the oids the model expects
    /// to conflict.
    fn committed(&mut self, r: filestorage2::Result<Tid>, base: Tid, writes: Writes, meta: TxnMeta) -> Res {
        let conflicts = self.model.conflicting(base, &writes);
        match r {
            Ok(tid) if conflicts.is_empty() => {
                ensure!(tid > self.model.last_tid(), "tid {tid:?} does not follow {:?}", self.model.last_tid());
                self.model.apply(tid, meta, writes);
                self.commits += 1;
                self.total.0 += 1;
            }
            Err(Error::Conflict { oid, tid }) if !conflicts.is_empty() => {
                ensure!(conflicts.contains(&oid.0), "conflict names {oid:?}, the model expects one of {conflicts:?}");
                ensure_eq!(Some(tid), self.model.current_tid(oid.0), "tid named by the conflict on {oid:?}");
                self.conflicts += 1;
                self.total.1 += 1;
            }
            other => {
                return Err(format!(
                    "commit (base {base:?}): got {other:?}, the model expects conflicts on {conflicts:?}"
                ))
            }
        }
        Ok(())
    }

    /// After a successful vote: the transaction is durable but not visible, and frozen.
    fn check_voted(&self, o: &mut Open) -> Res {
        ensure_eq!(self.s().last_tid(), self.model.last_tid(), "last_tid while voted");
        for oid in o.writes.keys() {
            let got = ok(self.s().load(Oid(*oid)), format_args!("load {oid} while voted"))?;
            ensure_eq!(got, self.model.at(*oid, Tid::MAX), "voted data of oid {oid} must not be visible");
        }
        ensure!(
            matches!(o.txn.store(Oid(0), b"late"), Err(Error::Invalid(_))),
            "a voted transaction must refuse stores"
        );
        if let Some((&oid, d)) = o.writes.iter().next() {
            ensure_eq!(ok(o.txn.load(Oid(oid)), format_args!("txn load {oid}"))?, *d, "voted txn reads its writes");
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Res {
        let slot = |t: &usize| *t % SLOTS;
        match op {
            Op::Begin => {
                let Some(i) = self.slots.iter().position(|s| s.is_none()) else { return Ok(()) };
                let txn = self.s().begin();
                let base = self.model.last_tid();
                ensure_eq!(txn.base(), base, "base of a new transaction");
                self.slots[i] = Some(Open { txn, base, writes: Writes::new(), meta: TxnMeta::default() });
            }
            Op::Store { t, oid, len, seed } => {
                let Some(o) = self.slots[slot(t)].as_mut() else { return Ok(()) };
                let data = bytes(*seed, *len);
                ok(o.txn.store(Oid(*oid), &data), format_args!("store"))?;
                o.writes.insert(*oid, Some(data));
                self.top = self.top.max(*oid + 1);
            }
            Op::StoreNew { t, len, seed, via_txn } => {
                let Some(o) = self.slots[slot(t)].as_mut() else { return Ok(()) };
                let oid = if *via_txn { o.txn.new_oid() } else { self.storage.as_ref().unwrap().new_oid() }
                    .map_err(|e| format!("new_oid: {e}"))?;
                if let Some(m) = self.model.max_oid() {
                    ensure!(oid > m, "new_oid {oid:?} is not above the largest stored oid {m:?}");
                }
                if let Some(l) = self.last_new_oid {
                    ensure!(oid.0 > l, "new_oid {oid:?} is not above the previous one {l}");
                }
                self.last_new_oid = Some(oid.0);
                let data = bytes(*seed, *len);
                ok(o.txn.store(oid, &data), format_args!("store new"))?;
                o.writes.insert(oid.0, Some(data));
                self.top = self.top.max(oid.0 + 1);
            }
            Op::Delete { t, oid } => {
                let Some(o) = self.slots[slot(t)].as_mut() else { return Ok(()) };
                ok(o.txn.delete(Oid(*oid)), format_args!("delete"))?;
                o.writes.insert(*oid, None);
                self.top = self.top.max(*oid + 1);
            }
            Op::Unstage { t, oid } => {
                let Some(o) = self.slots[slot(t)].as_mut() else { return Ok(()) };
                ok(o.txn.unstage(Oid(*oid)), format_args!("unstage"))?;
                o.writes.remove(oid);
            }
            Op::Meta { t, seed } => {
                let Some(o) = self.slots[slot(t)].as_mut() else { return Ok(()) };
                let mut r = Rng(*seed);
                let (ul, dl) = (r.pick(12), r.pick(40));
                let el = if r.below(3) == 0 { 0 } else { r.pick(200) };
                let meta = TxnMeta {
                    user: bytes(r.next(), ul),
                    description: bytes(r.next(), dl),
                    extension: bytes(r.next(), el),
                };
                o.txn.set_user(&meta.user);
                o.txn.set_description(&meta.description);
                o.txn.set_extension(&meta.extension);
                o.meta = meta;
            }
            Op::Reads { t } => {
                let Some(o) = self.slots[slot(t)].as_ref() else { return Ok(()) };
                ensure_eq!(o.txn.base(), o.base, "transaction base");
                ensure_eq!(*o.txn.meta(), o.meta, "transaction metadata");
                ensure_eq!(
                    o.txn.staged_oids().map(|o| o.0).collect::<Vec<_>>(),
                    o.writes.keys().copied().collect::<Vec<_>>(),
                    "staged oids"
                );
                for oid in 0..=self.top {
                    let want = match o.writes.get(&oid) {
                        Some(d) => d.clone(),
                        None => self.model.at(oid, o.base).map(|x| x.1),
                    };
                    let got = ok(o.txn.load(Oid(oid)), format_args!("txn load {oid}"))?;
                    ensure_eq!(got, want, "transaction-local load of oid {oid} (base {:?})", o.base);
                    ensure_eq!(o.txn.staged(Oid(oid)), o.writes.get(&oid).map(|d| d.as_deref()), "staged {oid}");
                }
            }
            Op::Commit { t } => {
                let Some(o) = self.slots[slot(t)].take() else { return Ok(()) };
                let r = o.txn.commit();
                self.committed(r, o.base, o.writes, o.meta)?;
            }
            Op::Abort { t } => {
                let Some(o) = self.slots[slot(t)].take() else { return Ok(()) };
                o.txn.abort();
            }
            Op::VoteFinish { t } | Op::VoteAbort { t } => {
                let finish = matches!(op, Op::VoteFinish { .. });
                let Some(mut o) = self.slots[slot(t)].take() else { return Ok(()) };
                let conflicts = self.model.conflicting(o.base, &o.writes);
                match o.txn.vote() {
                    Ok(()) if conflicts.is_empty() => {
                        self.check_voted(&mut o)?;
                        if finish {
                            let r = o.txn.finish();
                            self.committed(r, o.base, o.writes, o.meta)?;
                        } else {
                            o.txn.abort();
                        }
                    }
                    Err(e @ Error::Conflict { .. }) if !conflicts.is_empty() => {
                        // Same rule as a one-step commit; the transaction stays open
                        // (unchanged) after a failed vote.
                        let (base, writes, meta) = (o.base, o.writes.clone(), o.meta.clone());
                        self.committed(Err(e), base, writes, meta)?;
                        if finish {
                            self.slots[slot(t)] = Some(o);
                        } else {
                            o.txn.abort();
                        }
                    }
                    other => return Err(format!("vote: got {other:?}, the model expects conflicts on {conflicts:?}")),
                }
            }
            Op::Rotate => {
                let name = ok(self.s().rotate(), format_args!("rotate"))?;
                self.min_segments += 1;
                let segs = ok(self.s().segments(), format_args!("segments"))?;
                let last = segs.last().expect("a chain has a segment");
                ensure_eq!(last.name, name, "rotate returns the new active segment");
                ensure!(last.state == SegmentState::Active && last.transactions == 0, "fresh active: {last:?}");
            }
            Op::Merge { how, at, len, strategy } => self.merge(*how, *at, *len, *strategy)?,
            Op::Reopen { session } => {
                for s in self.slots.iter_mut() {
                    *s = None;
                }
                self.storage = None;
                let opts = self.options(*session);
                let s = ok(Storage::open(&self.dir, opts), format_args!("reopen"))?;
                ensure_eq!(s.open_warnings(), Vec::<String>::new(), "warnings of a clean reopen");
                self.storage = Some(s);
                self.commits = 0;
                self.conflicts = 0;
                self.last_new_oid = None;
            }
            Op::ReadOnlyCheck => {
                let opts = Options { read_only: true, ..self.options(0) };
                let ro = ok(Storage::open(&self.dir, opts), format_args!("read-only open"))?;
                ensure!(ro.is_read_only(), "read-only open is read-only");
                ensure_eq!(ro.open_warnings(), Vec::<String>::new(), "warnings of a read-only open");
                compare(&ro, &self.model, self.top, (0, 0), (self.min_segments, !self.auto_rotation))
                    .map_err(|e| format!("read-only open: {e}"))?;
                let mut t = ro.begin();
                ok(t.store(Oid(1), b"x"), format_args!("stage on read-only"))?;
                ensure!(matches!(t.commit(), Err(Error::ReadOnly(_))), "commit on a read-only open");
                ensure!(matches!(ro.rotate(), Err(Error::ReadOnly(_))), "rotate on a read-only open");
            }
            Op::Sync => ok(self.s().sync(), format_args!("sync"))?,
        }
        Ok(())
    }
}

impl Harness {
    fn exists(&self, path: &Path) -> bool {
        if self.cfg.real {
            path.exists()
        } else {
            self.vfs.exists(path)
        }
    }

    /// Merge as `how` and `strategy` say (see `Op::Merge`); check the report, the files and
    /// `check`; apply the merge to the model.
    fn merge(&mut self, how: u8, at: usize, len: usize, strategy: u8) -> Res {
        let strategy = match strategy % 3 {
            0 => Strategy::Copy,
            1 => Strategy::Append(AsOf::Source),
            _ => Strategy::Append(AsOf::Target),
        };
        let s = self.s().clone();
        let stats = ok(s.past_segment_stats(), format_args!("past_segment_stats"))?;
        let n = stats.len();
        let all: Vec<SegmentName> = stats.iter().map(|x| x.name).collect();
        let (policy, want) = match how % 3 {
            0 => (Policy::All, (n >= 2).then(|| all.clone())),
            1 if n < 2 => {
                let r = s.merge_with(&Policy::Named(all), strategy);
                ensure!(matches!(r, Err(Error::Invalid(_))), "a named merge of {n} segments must be refused: {r:?}");
                return Ok(());
            }
            1 => {
                let start = at % (n - 1);
                let run = all[start..start + 2 + len % (n - start - 1)].to_vec();
                let mut names = run.clone();
                if at % 2 == 1 {
                    names.reverse(); // any order names the same run
                }
                (Policy::Named(names), Some(run))
            }
            _ => {
                let k = 1 + len % 4;
                (Policy::KeepAtMost(k), keep_at_most(&stats, k))
            }
        };
        // The segments whose records are merged (an append's sources; not its target) and
        // the tid ranges merged, one per step: a copy merges one range, an append one per
        // source, newest first (none for a segment without transactions), as of the end
        // of what the target holds by then (as of the target's end) or not superseded.
        let segs = ok(s.segments(), format_args!("segments"))?;
        let run: Vec<_> = segs.iter().filter(|g| want.as_ref().is_some_and(|w| w.contains(&g.name))).collect();
        let (sources, steps) = match strategy {
            Strategy::Copy => {
                let lo = run.iter().filter_map(|g| g.first_tid).min();
                let hi = run.iter().filter_map(|g| g.last_tid).max();
                (run.clone(), lo.zip(hi).map(|(lo, hi)| (lo, hi, None)).into_iter().collect())
            }
            Strategy::Append(as_of) => {
                let sources = run[..run.len().saturating_sub(1)].to_vec();
                let mut steps = Vec::new();
                for (i, g) in sources.iter().enumerate().rev() {
                    let target_last = run[i + 1..].iter().filter_map(|g| g.last_tid).max();
                    let until = if as_of == AsOf::Target { target_last } else { None };
                    steps.extend(g.first_tid.zip(g.last_tid).map(|(lo, hi)| (lo, hi, until)));
                }
                (sources, steps)
            }
        };
        let inputs = &sources;
        let sources: Vec<SegmentName> = sources.iter().map(|g| g.name).collect();
        let records_in: u64 = inputs.iter().map(|g| g.records).sum();
        let oldest_open = self.slots.iter().flatten().map(|o| o.base).min();
        let got = ok(s.merge_with(&policy, strategy), format_args!("merge {policy:?} {strategy:?}"))?;
        let (want, r): (Vec<SegmentName>, MergeReport) = match (want, got) {
            (None, None) => return Ok(()),
            (Some(w), Some(r)) => (w, r),
            (w, r) => return Err(format!("merge {policy:?} of {all:?}: expected a merge of {w:?}, got {r:?}")),
        };
        ensure_eq!(r.inputs, want, "merge {policy:?}: inputs");
        let output = match strategy {
            Strategy::Copy => SegmentName { first: want[0].first, last: want[want.len() - 1].last },
            Strategy::Append(_) => want[want.len() - 1],
        };
        ensure_eq!(r.output, output, "merge {policy:?}: output");
        ensure!(s.merge_progress().is_none(), "a finished merge is not running");
        let mut merged = Merged { records_out: 0, transactions_out: 0, deletions_dropped: 0 };
        for (lo, hi, until) in steps {
            let m = self.model.merge(lo, hi, oldest_open, until);
            merged.records_out += m.records_out;
            merged.transactions_out += m.transactions_out;
            merged.deletions_dropped += m.deletions_dropped;
        }
        let c = &r.counts;
        ensure_eq!(c.records_in, records_in, "merge {policy:?}: records in");
        let txns_in: u64 = inputs.iter().map(|g| g.transactions).sum();
        ensure_eq!(c.transactions_in, txns_in, "merge {policy:?}: transactions in");
        self.merges.0 += 1;
        self.merges.1 += want.len() as u64;
        self.merges.4 += matches!(strategy, Strategy::Append(_)) as u64;
        self.merges.2 += merged.deletions_dropped;
        self.merges.3 += txns_in - merged.transactions_out;
        ensure_eq!(
            Merged {
                records_out: c.records_out,
                transactions_out: c.transactions_out,
                deletions_dropped: c.deletions_dropped
            },
            merged,
            "merge {policy:?}: counts"
        );
        self.min_segments = self.min_segments.saturating_sub(want.len() - 1).max(1);
        let archive = self.dir.join("archive");
        ensure_eq!(r.archived.len(), sources.len(), "merge {policy:?}: archived");
        for name in &sources {
            let f = name.file_name();
            ensure!(!self.exists(&self.dir.join(&f)), "{f} is still in the storage directory");
            ensure!(self.exists(&archive.join(&f)), "{f} is not in the archive");
        }
        ensure!(self.exists(&self.dir.join(output.file_name())), "the merged segment exists");
        let opts = Options { read_only: true, ..self.options(0) };
        let report = ok(filestorage2::check::check(&self.dir, false, opts, &mut |_, _| {}), format_args!("check"))?;
        ensure!(report.ok(), "check after merge {policy:?} {strategy:?}: {:?}", report.problems);
        Ok(())
    }
}

/// The run `Policy::KeepAtMost(k)` merges, worked out here: the adjacent run that leaves
/// `k` past segments with the fewest bytes (the oldest such run on a tie).
fn keep_at_most(stats: &[SegmentStat], k: usize) -> Option<Vec<SegmentName>> {
    let n = stats.len();
    if n <= k {
        return None;
    }
    let run = n - k + 1;
    let mut best: Option<(u64, usize)> = None;
    for i in 0..=n - run {
        let bytes: u64 = stats[i..i + run].iter().map(|x| x.bytes).sum();
        if best.is_none_or(|(b, _)| bytes < b) {
            best = Some((bytes, i));
        }
    }
    let (_, i) = best.expect("a run");
    Some(stats[i..i + run].iter().map(|x| x.name).collect())
}

/// Compare every observable of `s` with the model.
fn compare(s: &Storage, m: &Model, top: u64, counters: (u64, u64), segs: (usize, bool)) -> Res {
    ensure_eq!(s.last_tid(), m.last_tid(), "last_tid");
    ensure_eq!(s.max_oid(), m.max_oid(), "max_oid");

    // Transactions, oldest first, with their metadata and records.
    let txns: Vec<TxnRecord> = ok(s.transactions(Tid::ZERO, Tid::MAX).collect(), format_args!("transactions"))?;
    let tids: Vec<Tid> = m.txns.iter().map(|t| t.tid).collect();
    ensure_eq!(txns.iter().map(|t| t.tid).collect::<Vec<_>>(), tids, "transaction tids");
    for (got, want) in txns.iter().zip(&m.txns) {
        ensure_eq!(got.meta, want.meta, "metadata of transaction {:?}", want.tid);
        let recs: Vec<(u64, Option<Vec<u8>>)> = got.records.iter().map(|(o, d)| (o.0, d.clone())).collect();
        ensure_eq!(recs, want.records, "records of transaction {:?}", want.tid);
    }
    let n = tids.len();
    for i in [0, n / 2, n.saturating_sub(1)].into_iter().filter(|_| n > 0) {
        let j = (i + 2).min(n - 1);
        let got: Vec<Tid> =
            ok(s.transactions(tids[i], tids[j]).map(|t| t.map(|t| t.tid)).collect(), format_args!("txns"))?;
        ensure_eq!(got, tids[i..=j].to_vec(), "transactions({:?}, {:?})", tids[i], tids[j]);
        let from = Tid(tids[i].0 + 1);
        let got: Vec<Tid> =
            ok(s.transactions(from, Tid::MAX).map(|t| t.map(|t| t.tid)).collect(), format_args!("txns"))?;
        ensure_eq!(got, tids[i + 1..].to_vec(), "transactions({from:?}, MAX)");
    }
    let seg_of: BTreeMap<Tid, SegmentName> = txns.iter().map(|t| (t.tid, t.segment)).collect();

    // Every oid: current state, history, time travel at and around every committed tid.
    for oid in 0..=top {
        let o = Oid(oid);
        let h = m.hist(oid);
        ensure_eq!(ok(s.load(o), format_args!("load {oid}"))?, m.at(oid, Tid::MAX), "load({oid})");
        ensure_eq!(ok(s.current_tid(o), format_args!("current_tid"))?, m.current_tid(oid), "current_tid({oid})");
        let hist = ok(s.history(o), format_args!("history {oid}"))?;
        let got: Vec<(Tid, bool, u64)> = hist.iter().map(|r| (r.tid, r.deleted, r.size)).collect();
        let want: Vec<(Tid, bool, u64)> =
            h.iter().rev().map(|(t, d)| (*t, d.is_none(), d.as_ref().map_or(0, |d| d.len() as u64))).collect();
        ensure_eq!(got, want, "history({oid}) as (tid, deleted, size), newest first");
        for r in &hist {
            ensure_eq!(Some(r.segment), seg_of.get(&r.tid).copied(), "segment of revision {:?} of oid {oid}", r.tid);
        }
        for (t, d) in h {
            let want = Revision { oid: o, tid: *t, data: d.clone(), segment: seg_of[t] };
            ensure_eq!(ok(s.revision(o, *t), format_args!("revision"))?, Some(want), "revision({oid}, {t:?})");
        }
        for &t in &tids {
            ensure_eq!(ok(s.load_at(o, t), format_args!("load_at"))?, m.at(oid, t), "load_at({oid}, {t:?})");
            let before = Tid(t.0 - 1);
            ensure_eq!(
                ok(s.load_at(o, before), format_args!("load_at"))?,
                m.at(oid, before),
                "load_at({oid}, {before:?})"
            );
            ensure_eq!(
                ok(s.load_before(o, t), format_args!("lb"))?,
                m.load_before(oid, t),
                "load_before({oid}, {t:?})"
            );
            let after = Tid(t.0 + 1);
            ensure_eq!(
                ok(s.load_before(o, after), format_args!("lb"))?,
                m.load_before(oid, after),
                "load_before({oid}, {after:?})"
            );
            if !h.iter().any(|(ht, _)| *ht == t) {
                ensure_eq!(
                    ok(s.revision(o, t), format_args!("revision"))?,
                    None,
                    "revision({oid}, {t:?}) of another txn"
                );
            }
        }
        ensure_eq!(
            ok(s.load_before(o, Tid::MAX), format_args!("lb"))?,
            m.load_before(oid, Tid::MAX),
            "load_before({oid}, MAX)"
        );
    }

    // Listings: now, paged, and as of every committed tid.
    let live = m.live_at(Tid::MAX);
    ensure_eq!(ok(s.list(Oid(0), Tid::MAX, usize::MAX), format_args!("list"))?, live, "list(0, MAX)");
    let mut paged = Vec::new();
    let mut start = Oid(0);
    loop {
        let page = ok(s.list(start, Tid::MAX, 3), format_args!("list page"))?;
        ensure!(page.len() <= 3, "a page of 3 holds {} objects", page.len());
        let Some(last) = page.last() else { break };
        start = Oid(last.oid.0 + 1);
        paged.extend(page);
    }
    ensure_eq!(paged, live, "list in pages of 3");
    ensure_eq!(ok(s.list(Oid(0), Tid::MAX, 0), format_args!("list"))?, vec![], "list with limit 0");
    ensure_eq!(ok(s.list(Oid(0), Tid::ZERO, usize::MAX), format_args!("list"))?, vec![], "list as of Tid::ZERO");
    for &t in &tids {
        ensure_eq!(ok(s.list(Oid(0), t, usize::MAX), format_args!("list"))?, m.live_at(t), "list(0, {t:?})");
    }
    ensure_eq!(ok(s.count_objects(), format_args!("count_objects"))?, live.len() as u64, "count_objects");

    // The chain.
    let chain = ok(s.segments(), format_args!("segments"))?;
    ensure!(!chain.is_empty(), "a storage has a segment");
    ensure_eq!(chain[0].prev, None, "the oldest segment has no previous");
    for w in chain.windows(2) {
        ensure!(w[0].name < w[1].name, "segment names increase: {} {}", w[0].name, w[1].name);
        ensure_eq!(w[1].prev, Some(w[0].name.file_name()), "previous of {}", w[1].name);
    }
    for (i, seg) in chain.iter().enumerate() {
        let state = if i + 1 == chain.len() { SegmentState::Active } else { SegmentState::Past };
        ensure_eq!(seg.state, state, "state of {}", seg.name);
        let in_seg: Vec<&TxnRecord> = txns.iter().filter(|t| t.segment == seg.name).collect();
        ensure_eq!(seg.transactions, in_seg.len() as u64, "transactions in {}", seg.name);
        ensure_eq!(seg.first_tid, in_seg.first().map(|t| t.tid), "first tid of {}", seg.name);
        ensure_eq!(seg.last_tid, in_seg.last().map(|t| t.tid), "last tid of {}", seg.name);
        let recs: u64 = in_seg.iter().map(|t| t.records.len() as u64).sum();
        ensure_eq!(seg.records, recs, "records in {}", seg.name);
    }
    let (min_segments, exact) = segs;
    ensure!(chain.len() >= min_segments, "{} segments, at least {min_segments} expected", chain.len());
    if exact {
        ensure_eq!(chain.len(), min_segments, "segments without automatic rotation");
    }
    let st = ok(s.stats(), format_args!("stats"))?;
    ensure_eq!(
        (st.last_tid, st.max_oid, st.segments, st.transactions, st.records),
        (m.last_tid(), m.max_oid(), chain.len(), n as u64, m.records()),
        "stats (last_tid, max_oid, segments, transactions, records)"
    );
    ensure_eq!((st.commits, st.conflicts), counters, "stats (commits, conflicts) of this session");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Running seeds and scripts, shrinking failures.

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => format!("panic: {s}"),
        Err(p) => match p.downcast::<&str>() {
            Ok(s) => format!("panic: {s}"),
            Err(_) => "panic".into(),
        },
    }
}

/// Apply `ops` to a fresh storage and model, comparing after every step.
fn run_script(cfg: Config, ops: &[Op]) -> Res {
    let r = catch_unwind(AssertUnwindSafe(|| -> Res {
        let mut h = Harness::new(cfg)?;
        h.check().map_err(|e| format!("fresh storage: {e}"))?;
        for (i, op) in ops.iter().enumerate() {
            h.apply(op).map_err(|e| format!("step {i} {op:?}: {e}"))?;
            h.check().map_err(|e| format!("after step {i} {op:?}: {e}"))?;
        }
        Ok(())
    }));
    r.unwrap_or_else(|p| Err(panic_message(p)))
}

/// Remove chunks, then single operations, while the script still fails.
fn shrink(cfg: Config, ops: &[Op]) -> (Vec<Op>, String) {
    let mut cur = ops.to_vec();
    let mut err = run_script(cfg, &cur).err().unwrap_or_else(|| "(did not fail again on replay)".into());
    let mut budget = 4000;
    let mut chunk = (cur.len() / 2).max(1);
    loop {
        let mut progress = false;
        let mut i = 0;
        while i < cur.len() && budget > 0 {
            budget -= 1;
            let mut cand = cur.clone();
            cand.drain(i..(i + chunk).min(cur.len()));
            match run_script(cfg, &cand) {
                Err(e) => {
                    cur = cand;
                    err = e;
                    progress = true;
                }
                Ok(()) => i += chunk,
            }
        }
        if budget == 0 || (chunk == 1 && !progress) {
            return (cur, err);
        }
        if !progress {
            chunk /= 2;
        }
    }
}

/// What the seeds of one test covered (printed with `--nocapture`).
#[derive(Default, Debug)]
struct Tally {
    seeds: u64,
    steps: u64,
    commits: u64,
    conflicts: u64,
    transactions: u64,
    segments: u64,
    /// Merges that merged, segments they took in, deletions and transactions they dropped.
    merges: u64,
    append_merges: u64,
    merged_segments: u64,
    deletions_dropped: u64,
    transactions_dropped: u64,
    ops: BTreeMap<&'static str, u64>,
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Begin => "begin",
        Op::Store { .. } => "store",
        Op::StoreNew { .. } => "store_new",
        Op::Delete { .. } => "delete",
        Op::Unstage { .. } => "unstage",
        Op::Meta { .. } => "meta",
        Op::Reads { .. } => "reads",
        Op::Commit { .. } => "commit",
        Op::Abort { .. } => "abort",
        Op::VoteFinish { .. } => "vote_finish",
        Op::VoteAbort { .. } => "vote_abort",
        Op::Rotate => "rotate",
        Op::Merge { .. } => "merge",
        Op::Reopen { .. } => "reopen",
        Op::ReadOnlyCheck => "read_only_check",
        Op::Sync => "sync",
    }
}

/// Generate and run one seed; on failure, panic with everything needed to replay it.
fn run_seed(test: &str, seed: u64, real: bool, steps: usize, mix: Mix, tally: &mut Tally) {
    let cfg = config(seed, real);
    let mut log: Vec<Op> = Vec::new();
    let r = catch_unwind(AssertUnwindSafe(|| -> Res {
        let mut rng = Rng(seed);
        let mut h = Harness::new(cfg)?;
        h.check().map_err(|e| format!("fresh storage: {e}"))?;
        for i in 0..steps {
            let op = gen_op(&mut rng, &h, mix);
            log.push(op.clone());
            h.apply(&op).map_err(|e| format!("step {i} {op:?}: {e}"))?;
            h.check().map_err(|e| format!("after step {i} {op:?}: {e}"))?;
            tally.steps += 1;
            *tally.ops.entry(op_name(&op)).or_default() += 1;
        }
        tally.seeds += 1;
        tally.commits += h.total.0;
        tally.conflicts += h.total.1;
        tally.transactions += h.model.txns.len() as u64;
        tally.segments += h.s().segments().map_err(|e| e.to_string())?.len() as u64;
        tally.merges += h.merges.0;
        tally.append_merges += h.merges.4;
        tally.merged_segments += h.merges.1;
        tally.deletions_dropped += h.merges.2;
        tally.transactions_dropped += h.merges.3;
        Ok(())
    }));
    let err = match r {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(p) => panic_message(p),
    };
    let full: String = log.iter().map(|op| format!("        {op:?},\n")).collect();
    let (small, small_err) = shrink(cfg, &log);
    let small_ops: String = small.iter().map(|op| format!("            {op:?},\n")).collect();
    panic!(
        "model test failed: seed {seed}, {cfg:?}\n\
         error: {err}\n\
         replay: FS2_MODEL_SEED={seed} FS2_MODEL_STEPS={steps} cargo test --test model {test}\n\
         operation log ({} ops):\n{full}\
         shrunk to {} ops (error: {small_err}); as a regression test:\n\
         \x20   use Op::*;\n\
         \x20   run_script(\n        {cfg:?},\n        &[\n{small_ops}        ],\n    )\n    .unwrap();\n",
        log.len(),
        small.len()
    );
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// Run `default_seeds` seeds from `first` (or what the environment asks for).
fn run_seeds(test: &str, first: u64, default_seeds: u64, default_steps: u64, real: bool, mix: Mix) {
    let steps = env_u64("FS2_MODEL_STEPS").unwrap_or(default_steps) as usize;
    let mut tally = Tally::default();
    let started = std::time::Instant::now();
    if let Some(seed) = env_u64("FS2_MODEL_SEED") {
        run_seed(test, seed, real, steps, mix, &mut tally);
    } else {
        let n = env_u64("FS2_MODEL_SEEDS").unwrap_or(default_seeds);
        for seed in first..first + n {
            run_seed(test, seed, real, steps, mix, &mut tally);
        }
    }
    eprintln!("{test}: {:.1} s, {tally:?}", started.elapsed().as_secs_f64());
    assert_eq!(tally.steps, tally.seeds * steps as u64, "every seed ran every step");
}

#[test]
fn model_simulated_disk() {
    run_seeds("model_simulated_disk", 0, 150, 80, false, MIX);
}

#[test]
fn model_real_files() {
    run_seeds("model_real_files", 1 << 32, 30, 80, true, MIX);
}

#[test]
fn model_long_sequences() {
    run_seeds("model_long_sequences", 2 << 32, 4, 400, false, MIX);
}

/// Many rotations and merges: merges of long runs, of runs holding empty segments, of
/// segments merged before, with transactions open across them.
#[test]
fn model_merge_heavy() {
    run_seeds("model_merge_heavy", 3 << 32, 100, 120, false, MERGE_HEAVY);
}

// ---------------------------------------------------------------------------------------
// The harness can fail: a model that differs from the storage in any one way is caught.

#[test]
fn harness_detects_a_wrong_model() {
    use Op::*;
    let cfg = Config { real: false, alignment: 4096, session: 1 };
    let mut h = Harness::new(cfg).unwrap();
    let script = [
        Begin,
        Store { t: 0, oid: 1, len: 5, seed: 1 },
        Store { t: 0, oid: 2, len: 0, seed: 2 },
        Meta { t: 0, seed: 3 },
        Commit { t: 0 },
        Begin,
        Delete { t: 0, oid: 2 },
        Store { t: 0, oid: 1, len: 5000, seed: 4 },
        VoteFinish { t: 0 },
        Rotate,
        Begin,
        Store { t: 0, oid: 3, len: 7, seed: 5 },
        Commit { t: 0 },
    ];
    for op in &script {
        h.apply(op).unwrap();
        h.check().unwrap();
    }
    let good = h.model.clone();
    type Tamper = fn(&mut Model);
    let tampers: [(&str, Tamper); 7] = [
        ("data byte", |m| m.history.get_mut(&1).unwrap()[0].1.as_mut().unwrap()[0] ^= 1),
        ("deletion undone", |m| m.history.get_mut(&2).unwrap()[1].1 = Some(vec![])),
        ("empty vs deleted", |m| m.history.get_mut(&2).unwrap()[0].1 = None),
        ("lost transaction", |m| {
            m.txns.pop();
            m.history.remove(&3);
        }),
        ("metadata", |m| m.txns[0].meta.user.push(b'x')),
        ("tid", |m| m.txns[1].tid = Tid(m.txns[1].tid.0 + 1)),
        ("extra revision", |m| m.history.get_mut(&3).unwrap().insert(0, (Tid(1), Some(b"x".to_vec())))),
    ];
    for (what, tamper) in tampers {
        h.model = good.clone();
        tamper(&mut h.model);
        assert!(h.check().is_err(), "the comparison missed a wrong model: {what}");
    }
    h.model = good;
    h.check().unwrap();
    h.commits += 1;
    assert!(h.check().is_err(), "the comparison missed a wrong commit counter");
}

// ---------------------------------------------------------------------------------------
// Named regression tests: shrunk failing sequences, kept.

/// Conflict detection stopped searching past segments at an empty one: a rotation with
/// nothing committed since the previous rotation seals a segment whose trailer says last
/// tid 0, and the search for a newer revision ended there, so a stale transaction
/// overwrote oid 7 without a conflict. (Found by `model_simulated_disk`; here session 2
/// rotates automatically after the commit, then `Rotate` seals the empty segment.)
#[test]
fn regression_conflict_behind_an_empty_past_segment() {
    use Op::*;
    run_script(
        Config { real: false, alignment: 8192, session: 2 },
        &[
            Begin,
            Begin,
            Store { t: 1, oid: 7, len: 1730, seed: 16727142101795638064 },
            Commit { t: 1 },
            Rotate,
            Store { t: 0, oid: 7, len: 670, seed: 8636891288809575083 },
            Commit { t: 0 },
        ],
    )
    .unwrap();
    // The same without automatic rotation: two rotations in a row.
    run_script(
        Config { real: true, alignment: 4096, session: 0 },
        &[
            Begin,
            Begin,
            Store { t: 1, oid: 3, len: 5, seed: 1 },
            Commit { t: 1 },
            Rotate,
            Rotate,
            Store { t: 0, oid: 3, len: 5, seed: 2 },
            VoteFinish { t: 0 },
        ],
    )
    .unwrap();
}

/// A merge dropped every transaction of its range that kept no record, the newest one
/// too: the running storage still said the old last tid, a reopened one an older tid (or
/// none), so the last tid went back and a new commit could reuse a tid clients had seen.
/// (Found by `model_simulated_disk` with merges: an empty commit, a rotation, a merge.)
/// The newest transaction of a merged range now stays, even without records.
#[test]
fn regression_a_merge_keeps_the_last_tid_across_a_reopen() {
    use Op::*;
    for last in [Commit { t: 0 }, Delete { t: 0, oid: 1 }] {
        let deletes = matches!(last, Delete { .. });
        let mut ops = vec![Begin, Store { t: 0, oid: 1, len: 5, seed: 1 }, Commit { t: 0 }, Rotate, Begin, last];
        if deletes {
            ops.push(Commit { t: 0 }); // a deletion of all there was: nothing is left
        }
        ops.extend([Rotate, Merge { how: 0, at: 0, len: 0, strategy: 0 }, Reopen { session: 0 }, ReadOnlyCheck]);
        run_script(Config { real: false, alignment: 4096, session: 0 }, &ops).unwrap();
    }
}
