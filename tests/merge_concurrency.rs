//! Merges during the bank-transfer test (TARGETS.md R7: readers during merges).
//!
//! `ACCOUNTS` objects hold balances. Writer threads move random amounts between two
//! accounts (one-step commits, vote + finish, votes aborted on purpose), retrying on
//! conflicts. Reader threads check again and again that the balances of one snapshot add
//! up to the initial total, through every read path, also at older snapshots. A rotator
//! rotates, and a merger starts merges in a loop (`Policy::All`, `KeepAtMost`, `Named`
//! runs) while another one runs: `Error::Busy` is expected and counted.
//!
//! A merge drops the history inside its range, so a snapshot inside a merged range is not
//! readable any more (as after a ZODB pack): the merger only merges segments whose
//! transactions are all at or before the oldest snapshot in use (a "pack time"), and
//! snapshots register themselves (under the same lock) before they read. With that, every
//! snapshot read must be exact, and no read may fail.
//!
//! At the end: the total is unchanged; the retained transactions are acknowledged
//! transfers with exactly the records they wrote (minus those a merge dropped); every
//! transaction after the last merged range is there whole; time travel after it gives
//! the replayed balances; all of it again after a reopen, and `check` is clean.
//!
//! Environment: `FS2_BANK_TRANSFERS=N` sets the number of transfers (default 20 000).

mod common;
use common::bank::*;
use common::Rng;
use filestorage2::merge::{MergeHandle, Policy};
use filestorage2::vfs::{CrashMode, SimVfs};
use filestorage2::{Error, Oid, Options, SegmentName, SegmentState, Storage, Tid, Transaction};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Snapshots in use, and the pack time.

#[derive(Default)]
struct Pins {
    /// Snapshot tids in use (with their number of users).
    live: BTreeMap<Tid, usize>,
    /// Every merge started so far merged only transactions with tids ≤ this.
    horizon: Tid,
}

/// The snapshots in use. Rotations and merge starts hold the lock too, so that the
/// merger sees the chain and the snapshots at one moment.
#[derive(Default)]
struct Gate(Mutex<Pins>);

/// A registered snapshot; unregistered when dropped.
struct Pin<'a> {
    gate: &'a Gate,
    tid: Tid,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut p = self.gate.lock();
        let n = p.live.get_mut(&self.tid).expect("registered");
        *n -= 1;
        if *n == 0 {
            p.live.remove(&self.tid);
        }
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Pins> {
        self.0.lock().unwrap()
    }
    /// Begin a transaction whose snapshot no merge will drop while it lives.
    fn begin<'a>(&'a self, s: &Storage) -> (Transaction, Pin<'a>) {
        let mut p = self.lock();
        let t = s.begin();
        assert!(t.base() >= p.horizon, "a new snapshot is never inside a merged range");
        let tid = t.base();
        *p.live.entry(tid).or_default() += 1;
        (t, Pin { gate: self, tid })
    }
    /// Pin an older snapshot if no merge has dropped it yet.
    fn pin_old<'a>(&'a self, tid: Tid) -> Option<Pin<'a>> {
        let mut p = self.lock();
        if tid < p.horizon {
            return None;
        }
        *p.live.entry(tid).or_default() += 1;
        Some(Pin { gate: self, tid })
    }
}

// ---------------------------------------------------------------------------------------
// The threads.

#[derive(Debug, Default)]
struct Outcome {
    setup_tid: Tid,
    /// The writers' transfers, the readers' snapshots.
    bank: Tally,
    rotations: u64,
    merges_started: u64,
    merges_done: u64,
    /// Merges that finished while the writers were running.
    merges_during: u64,
    busy: u64,
    /// Named merges refused because the merge running meanwhile replaced the segments.
    stale: u64,
    /// Merges started when every past segment was free to merge.
    free_turns: u64,
    by_policy: BTreeMap<&'static str, u64>,
    segments_merged: u64,
    /// The pack time at the end: history before it may be gone.
    horizon: Tid,
    elapsed: Duration,
}

fn writer(s: &Storage, gate: &Gate, seed: u64, next: &AtomicU64, count: u64, out: &Mutex<Outcome>) {
    let m = transfers(seed, || next.fetch_add(1, Ordering::Relaxed) < count, || gate.begin(s));
    out.lock().unwrap().bank.add_writer(m);
}

/// Check snapshots until `done`, pinned so that no merge drops them while they are read.
fn reader(s: &Storage, gate: &Gate, seed: u64, done: &AtomicBool, out: &Mutex<Outcome>) {
    let read = read_snapshots(s, seed, done, || gate.begin(s), |old| gate.pin_old(old));
    out.lock().unwrap().bank.add_reader(read);
}

/// Start a merge the snapshots in use allow, if at least `min` past segments may be
/// merged (or try to, while one runs: `Busy`). `running`: a merge was running when the
/// chain was read, so it may have replaced the segments named since.
fn try_merge(
    s: &Storage,
    gate: &Gate,
    rng: &mut Rng,
    min: usize,
    running: bool,
    o: &mut Outcome,
) -> Option<MergeHandle> {
    let mut p = gate.lock();
    let watermark = p.live.keys().next().copied().unwrap_or_else(|| s.last_tid());
    let pasts: Vec<_> = s.segments().unwrap().into_iter().filter(|g| g.state == SegmentState::Past).collect();
    // The oldest past segments whose transactions are all at or before the watermark.
    let n = pasts.iter().take_while(|g| g.last_tid.is_none_or(|t| t <= watermark)).count();
    if n < min.max(2) {
        return None;
    }
    // Any run of the past segments is allowed: let the engine's policies choose (in turn
    // with a named run).
    let free = n == pasts.len();
    let turn = if free { o.free_turns } else { 2 };
    let (policy, name, hi) = if turn % 3 < 2 {
        let hi = pasts.iter().filter_map(|g| g.last_tid).max().unwrap_or(Tid::ZERO);
        match turn % 3 {
            0 => (Policy::All, "all", hi),
            _ => (Policy::KeepAtMost(1 + rng.below(3) as usize), "keep_at_most", hi),
        }
    } else {
        let start = rng.below(n as u64 - 1) as usize;
        let len = 2 + rng.below((n - start - 1) as u64) as usize;
        let run = &pasts[start..start + len];
        let hi = run.iter().filter_map(|g| g.last_tid).max().unwrap_or(Tid::ZERO);
        (Policy::Named(run.iter().map(|g| g.name).collect::<Vec<SegmentName>>()), "named", hi)
    };
    match s.start_merge(&policy) {
        Ok(Some(h)) => {
            o.free_turns += free as u64;
            p.horizon = p.horizon.max(hi);
            o.merges_started += 1;
            *o.by_policy.entry(name).or_default() += 1;
            o.segments_merged += h.progress.inputs.len() as u64;
            Some(h)
        }
        Ok(None) => None,
        Err(Error::Busy(m)) => {
            assert!(m.contains("running"), "a clear message: {m}");
            o.busy += 1;
            None
        }
        Err(Error::NotFound(_)) if running && name == "named" => {
            o.stale += 1;
            None
        }
        Err(e) => panic!("merge {policy:?}: {e}"),
    }
}

struct Run {
    writers: usize,
    readers: usize,
    transfers: u64,
}

fn run_bank(s: &Storage, run: &Run, setup_tid: Tid) -> Outcome {
    let limit = Duration::from_secs(300 + run.transfers / 200);
    let finished = watchdog(limit, "bank run with merges");
    let gate = Gate::default();
    let out = Mutex::new(Outcome { setup_tid, ..Outcome::default() });
    let next = AtomicU64::new(0);
    let writers_left = AtomicU64::new(run.writers as u64);
    let done = AtomicBool::new(false);
    let started = Instant::now();
    thread::scope(|sc| {
        for w in 0..run.writers {
            let (next, out, done, writers_left, gate) = (&next, &out, &done, &writers_left, &gate);
            sc.spawn(move || {
                let _exit = WriterExit { left: writers_left, done };
                writer(s, gate, 1000 + w as u64, next, run.transfers, out);
            });
        }
        for r in 0..run.readers {
            let (done, out, gate) = (&done, &out, &gate);
            sc.spawn(move || reader(s, gate, 2000 + r as u64, done, out));
        }
        let (done, next, out, gate) = (&done, &next, &out, &gate);
        // The rotator: a rotation every few hundred transfers.
        sc.spawn(move || {
            let mut rotations = 0;
            let mut at = 0;
            while !done.load(Ordering::Acquire) {
                if next.load(Ordering::Relaxed) >= at {
                    let _p = gate.lock();
                    s.rotate().unwrap();
                    rotations += 1;
                    at += 150;
                } else {
                    thread::sleep(Duration::from_micros(200));
                }
            }
            out.lock().unwrap().rotations = rotations;
        });
        // The merger: starts merges in a loop; one runs at a time.
        sc.spawn(move || {
            let mut rng = Rng(7);
            let mut o = Outcome::default();
            let mut running: Option<MergeHandle> = None;
            let mut target = 2;
            loop {
                let finished = done.load(Ordering::Acquire);
                if running.as_ref().is_some_and(|h| h.is_finished() || finished) {
                    let r = running.take().unwrap().wait().unwrap_or_else(|e| panic!("a merge failed: {e}"));
                    assert!(r.counts.records_out <= r.counts.records_in);
                    o.merges_done += 1;
                    o.merges_during += !finished as u64;
                }
                if finished {
                    break;
                }
                // Let a few segments pile up before the next merge (long runs), but keep
                // asking while one runs.
                let min = if running.is_some() { 2 } else { target };
                if let Some(h) = try_merge(s, gate, &mut rng, min, running.is_some(), &mut o) {
                    if let Some(old) = running.replace(h) {
                        // Accepted because the previous merge is over (its thread may
                        // not have exited yet): it succeeded.
                        old.wait().unwrap_or_else(|e| panic!("a merge failed: {e}"));
                        o.merges_done += 1;
                        o.merges_during += 1;
                    }
                    target = 2 + rng.below(6) as usize;
                }
                thread::sleep(Duration::from_micros(500));
            }
            let mut out = out.lock().unwrap();
            out.merges_started = o.merges_started;
            out.merges_done = o.merges_done;
            out.merges_during = o.merges_during;
            out.busy = o.busy;
            out.stale = o.stale;
            out.by_policy = o.by_policy;
            out.segments_merged = o.segments_merged;
            out.horizon = gate.lock().horizon;
        });
    });
    let _ = finished.send(());
    let mut o = out.into_inner().unwrap();
    o.elapsed = started.elapsed();
    o
}

/// The records of a transaction: (oid, data; `None` for a deletion).
type Records = Vec<(Oid, Option<Vec<u8>>)>;

/// Everything that must hold after the run, on `s` (the running storage or a reopen).
fn check_end(s: &Storage, o: &Outcome, what: &str) {
    let last = *o.bank.made.keys().next_back().unwrap_or(&o.setup_tid);
    assert_eq!(s.last_tid(), last, "{what}: last tid is the last acknowledged transfer");
    let now = balances_at(s, Tid::MAX);
    assert_eq!(now.iter().sum::<u64>(), TOTAL, "{what}: total after the run");
    // Replay every acknowledged transfer: the values each one wrote, and the balances
    // after it.
    let mut bal = vec![INITIAL; ACCOUNTS as usize];
    let mut wrote: BTreeMap<Tid, Records> = BTreeMap::new();
    let mut after: BTreeMap<Tid, Vec<u64>> = BTreeMap::new();
    wrote.insert(o.setup_tid, (0..ACCOUNTS).map(|i| (account(i), Some(enc(i, INITIAL)))).collect());
    after.insert(o.setup_tid, bal.clone());
    for (tid, tr) in &o.bank.made {
        bal[tr.from as usize] -= tr.amount;
        bal[tr.to as usize] += tr.amount;
        let mut w = vec![
            (account(tr.from), Some(enc(tr.from, bal[tr.from as usize]))),
            (account(tr.to), Some(enc(tr.to, bal[tr.to as usize]))),
        ];
        w.sort_by_key(|r| r.0);
        wrote.insert(*tid, w);
        after.insert(*tid, bal.clone());
    }
    assert_eq!(bal, now, "{what}: replaying the acknowledged transfers gives the stored balances");
    // The retained log: acknowledged transactions, each with a subset of what it wrote;
    // everything after the pack time whole.
    let txns: Vec<_> = s.transactions(Tid::ZERO, Tid::MAX).collect::<Result<_, _>>().unwrap();
    let mut newest: BTreeMap<Oid, Tid> = BTreeMap::new();
    for w in txns.windows(2) {
        assert!(w[0].tid < w[1].tid, "{what}: tids increase in the log");
    }
    for t in &txns {
        let w = wrote.get(&t.tid).unwrap_or_else(|| panic!("{what}: {:?} in the log was never acknowledged", t.tid));
        if t.tid != o.setup_tid {
            assert_eq!(t.meta.description, o.bank.made[&t.tid].describe().as_bytes(), "{what}: description");
        }
        assert!(t.records.iter().all(|r| w.contains(r)), "{what}: {:?} holds records it did not write", t.tid);
        if t.tid > o.horizon {
            assert_eq!(&t.records, w, "{what}: {:?} after the pack time is whole", t.tid);
        }
        for (oid, _) in &t.records {
            newest.insert(*oid, t.tid);
        }
    }
    let after_horizon = wrote.keys().filter(|t| **t > o.horizon).count();
    assert_eq!(
        txns.iter().filter(|t| t.tid > o.horizon).count(),
        after_horizon,
        "{what}: transactions after the pack time"
    );
    // Each account's newest retained record is its current one.
    for i in 0..ACCOUNTS {
        let (tid, _) = s.load(account(i)).unwrap().unwrap();
        assert_eq!(newest.get(&account(i)), Some(&tid), "{what}: account {i}'s current record is in the log");
    }
    // Time travel at about 50 points after the pack time.
    let points: Vec<&Tid> = after.keys().filter(|t| **t >= o.horizon).collect();
    for t in points.iter().step_by((points.len() / 50).max(1)) {
        assert_eq!(&balances_at(s, **t), &after[*t], "{what}: balances as of {t:?}");
    }
}

fn report(name: &str, o: &Outcome, s: &Storage) {
    eprintln!(
        "{name}: {} transfers in {:.2} s, {} two-phase, {} aborted votes, {} conflicts, {} snapshots, \
         {} time travels, {} rotations, {} merges started ({:?}; {} segments in), {} finished during the \
         transfers, {} busy refusals, {} segments at the end",
        o.bank.made.len(),
        o.elapsed.as_secs_f64(),
        o.bank.two_phase,
        o.bank.aborted_votes,
        o.bank.conflicts,
        o.bank.snapshots,
        o.bank.time_travels,
        o.rotations,
        o.merges_started,
        o.by_policy,
        o.segments_merged,
        o.merges_during,
        o.busy,
        s.segments().unwrap().len()
    );
}

/// The invariants every run must show in its counters.
fn check_outcome(s: &Storage, o: &Outcome, run: &Run, setup_tid: Tid) {
    assert_eq!(o.bank.made.len() as u64, run.transfers, "every transfer was acknowledged once");
    assert!(o.bank.snapshots > 0 && o.bank.time_travels > 0, "the readers checked snapshots: {o:?}");
    assert!(o.bank.two_phase > 0 && o.bank.aborted_votes > 0 && o.bank.conflicts > 0, "{o:?}");
    assert_eq!(o.merges_done, o.merges_started, "every merge started finished");
    assert!(o.merges_during >= 5, "merges ran while the writers did: {o:?}");
    assert!(o.busy > 0, "merges were refused while one ran: {o:?}");
    assert!(o.by_policy.len() >= 2 && o.by_policy.contains_key("named"), "policies used: {:?}", o.by_policy);
    assert!(o.segments_merged > 2 * o.merges_started, "merges of more than two segments: {o:?}");
    assert!(o.horizon > setup_tid, "the merges dropped history");
    let st = s.stats().unwrap();
    assert_eq!(st.commits, 1 + run.transfers);
    assert_eq!(st.conflicts, o.bank.conflicts);
}

/// The large run: real files, no fsync per commit.
#[test]
fn bank_transfers_keep_the_total_while_merges_run() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options { sync: false, alignment: 4096, rotate_size: 0, ..Options::default() };
    let s = Storage::create(d.path(), opts.clone()).unwrap();
    let setup_tid = setup(&s);
    let transfers = std::env::var("FS2_BANK_TRANSFERS").map_or(20_000, |v| v.trim().parse().unwrap());
    let run = Run { writers: 6, readers: 3, transfers };
    let o = run_bank(&s, &run, setup_tid);
    report("bank with merges", &o, &s);
    check_outcome(&s, &o, &run, setup_tid);
    assert!(o.by_policy.len() == 3, "every policy was used: {:?}", o.by_policy);
    check_end(&s, &o, "running storage");
    s.sync().unwrap();
    drop(s);
    let s = Storage::open(d.path(), opts.clone()).unwrap();
    assert_eq!(s.open_warnings(), Vec::<String>::new());
    check_end(&s, &o, "after reopen");
    let ro = Storage::open(d.path(), Options::read_only()).unwrap();
    check_end(&ro, &o, "read-only open");
    drop(ro);
    drop(s);
    let r = filestorage2::check::check(d.path(), false, Options::default(), &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
    let archived = std::fs::read_dir(d.path().join("archive")).unwrap().count() as u64;
    assert_eq!(archived, o.segments_merged, "every merged segment is archived");
}

/// On the simulated disk with a sync per commit: after merges ran during the transfers,
/// a power cut keeps every acknowledged transfer (and the merged chain).
#[test]
fn bank_with_merges_survives_a_power_cut() {
    let vfs = SimVfs::new();
    let dir = std::path::Path::new("/bank");
    let opts =
        Options { sync: true, alignment: 4096, rotate_size: 0, vfs: Arc::new(vfs.clone()), ..Options::default() };
    let s = Storage::create(dir, opts.clone()).unwrap();
    let setup_tid = setup(&s);
    let run = Run { writers: 6, readers: 2, transfers: 10_000 };
    let o = run_bank(&s, &run, setup_tid);
    report("bank with merges (simulated disk, sync: true)", &o, &s);
    check_outcome(&s, &o, &run, setup_tid);
    let chain: Vec<SegmentName> = s.segments().unwrap().iter().map(|g| g.name).collect();
    let after = vfs.crash(CrashMode::DurableOnly);
    drop(s);
    let s = Storage::open(dir, Options { vfs: Arc::new(after.clone()), ..opts.clone() }).unwrap();
    assert_eq!(s.open_warnings(), Vec::<String>::new());
    assert_eq!(s.segments().unwrap().iter().map(|g| g.name).collect::<Vec<_>>(), chain, "the merged chain");
    check_end(&s, &o, "after a power cut");
    drop(s);
    let r = filestorage2::check::check(dir, false, Options { vfs: Arc::new(after), ..opts }, &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
}
