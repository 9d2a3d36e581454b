//! Concurrency (TARGETS.md R7): the bank-transfer invariant.
//!
//! `ACCOUNTS` objects hold balances. Writer threads move random amounts between two
//! random accounts, reading both through their transaction's snapshot, and retry on
//! conflicts; some transfers use `vote` + `finish`, some are voted and then aborted on
//! purpose. Reader threads check, again and again, that the balances of one snapshot add
//! up to the initial total, reading through `Transaction::load`, `load_at`,
//! `load_before` and `list`, and also at older snapshots (time travel). Another thread
//! rotates meanwhile. At the end: the total is unchanged, every acknowledged transfer is
//! in the transaction log exactly as it was made, replaying the log gives the stored
//! balances and keeps the total after every transaction, and all of it again after a
//! reopen.
//!
//! Environment: `FS2_BANK_TRANSFERS=N` sets the number of transfers of the large run
//! (default 20 000; R7 asks for 100 000 and more).

mod common;
use common::bank::*;
use filestorage2::vfs::{CrashMode, RealVfs, SimVfs, VFile, Vfs};
use filestorage2::{Options, Storage, Tid};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A file system that counts data syncs (to see group commit share them).
struct CountingVfs {
    syncs: Arc<AtomicU64>,
}

struct CountingFile {
    f: Arc<dyn VFile>,
    syncs: Arc<AtomicU64>,
}

impl VFile for CountingFile {
    fn sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.f.sync()
    }
    crate::vfile_passthrough!(f: read_exact_at, write_all_at, len, set_len, os_file);
}

impl Vfs for CountingVfs {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(CountingFile { f: RealVfs.open(path, write)?, syncs: self.syncs.clone() }))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(CountingFile { f: RealVfs.create_new(path)?, syncs: self.syncs.clone() }))
    }
    crate::real_vfs_passthrough!();
}

struct Run {
    writers: usize,
    readers: usize,
    transfers: u64,
    /// Manual rotations spread over the run.
    rotations: u64,
}

/// What a run did.
#[derive(Debug, Default)]
struct Outcome {
    setup_tid: Tid,
    /// The writers' transfers, the readers' snapshots.
    bank: Tally,
    rotations: u64,
    /// Rotations made while the writers were running.
    concurrent_rotations: u64,
    elapsed: Duration,
}

fn writer(s: &Storage, seed: u64, next: &AtomicU64, run: &Run, out: &Mutex<Outcome>) {
    let m = transfers(seed, || next.fetch_add(1, Ordering::Relaxed) < run.transfers, || (s.begin(), ()));
    out.lock().unwrap().bank.add_writer(m);
}

/// Check snapshots until `done` (nothing is merged, so every older snapshot is kept).
fn reader(s: &Storage, seed: u64, done: &AtomicBool, out: &Mutex<Outcome>) {
    let read = read_snapshots(s, seed, done, || (s.begin(), ()), |_| Some(()));
    out.lock().unwrap().bank.add_reader(read);
}

/// Run the bank on `s` (already set up) and return what happened. A run that does not
/// finish within `limit` (a hang: a deadlock or a lost wake-up) ends the test process.
fn run_bank(s: &Storage, run: &Run, setup_tid: Tid) -> Outcome {
    let limit = Duration::from_secs(300 + run.transfers / 200);
    let finished = watchdog(limit, "bank run");
    let out = Mutex::new(Outcome { setup_tid, ..Outcome::default() });
    let next = AtomicU64::new(0);
    let writers_left = AtomicU64::new(run.writers as u64);
    let done = AtomicBool::new(false);
    let started = Instant::now();
    thread::scope(|sc| {
        for w in 0..run.writers {
            let (next, out, done, writers_left) = (&next, &out, &done, &writers_left);
            sc.spawn(move || {
                // Count this writer out even if it panics, so the others stop.
                let _exit = WriterExit { left: writers_left, done };
                writer(s, 1000 + w as u64, next, run, out);
            });
        }
        for r in 0..run.readers {
            let (done, out) = (&done, &out);
            sc.spawn(move || reader(s, 2000 + r as u64, done, out));
        }
        let (done, next, out) = (&done, &next, &out);
        sc.spawn(move || {
            let step = (run.transfers / (run.rotations + 1)).max(1);
            let mut at = step;
            let mut rotations = 0;
            let mut during = 0;
            while rotations < run.rotations {
                let finished = done.load(Ordering::Acquire);
                if finished || next.load(Ordering::Relaxed) >= at {
                    s.rotate().unwrap();
                    rotations += 1;
                    during += !finished as u64;
                    at += step;
                } else {
                    thread::sleep(Duration::from_micros(200));
                }
            }
            let mut o = out.lock().unwrap();
            o.rotations = rotations;
            o.concurrent_rotations = during;
        });
    });
    let _ = finished.send(());
    let mut o = out.into_inner().unwrap();
    o.elapsed = started.elapsed();
    o
}

/// Everything that must hold after the run, on `s` (the running storage or a reopen).
fn check_end(s: &Storage, o: &Outcome, what: &str) {
    let last = *o.bank.made.keys().next_back().unwrap_or(&o.setup_tid);
    assert_eq!(s.last_tid(), last, "{what}: last tid is the last acknowledged transfer");
    let now = balances_at(s, Tid::MAX);
    assert_eq!(now.iter().sum::<u64>(), TOTAL, "{what}: total after the run");
    let txns: Vec<_> = s.transactions(Tid::ZERO, Tid::MAX).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        txns.len() as u64,
        1 + o.bank.made.len() as u64,
        "{what}: transactions = setup + acknowledged transfers"
    );
    assert_eq!(txns[0].tid, o.setup_tid, "{what}: the setup comes first");
    let mut bal = vec![INITIAL; ACCOUNTS as usize];
    for w in txns.windows(2) {
        assert!(w[0].tid < w[1].tid, "{what}: tids increase in the log");
    }
    for t in &txns[1..] {
        let tr =
            o.bank.made.get(&t.tid).unwrap_or_else(|| panic!("{what}: {:?} in the log was never acknowledged", t.tid));
        assert_eq!(t.meta.description, tr.describe().as_bytes(), "{what}: description of {:?}", t.tid);
        let mut recs = t.records.clone();
        recs.sort_by_key(|r| r.0);
        let mut want = vec![
            (account(tr.from), Some(enc(tr.from, bal[tr.from as usize] - tr.amount))),
            (account(tr.to), Some(enc(tr.to, bal[tr.to as usize] + tr.amount))),
        ];
        want.sort_by_key(|r| r.0);
        assert_eq!(recs, want, "{what}: {:?} ({tr:?}) is not based on the balances before it", t.tid);
        bal[tr.from as usize] -= tr.amount;
        bal[tr.to as usize] += tr.amount;
        assert_eq!(bal.iter().sum::<u64>(), TOTAL, "{what}: total after {:?}", t.tid);
    }
    assert_eq!(bal, now, "{what}: replaying the log gives the stored balances");
    // Spot-check time travel on the finished storage at about 50 points of the log.
    let every = (txns.len() / 50).max(1);
    let mut replay = vec![INITIAL; ACCOUNTS as usize];
    for (n, t) in txns[1..].iter().enumerate() {
        let tr = o.bank.made[&t.tid];
        replay[tr.from as usize] -= tr.amount;
        replay[tr.to as usize] += tr.amount;
        if n % every == 0 {
            assert_eq!(balances_at(s, t.tid), replay, "{what}: balances as of {:?}", t.tid);
        }
    }
}

fn report(name: &str, o: &Outcome, s: &Storage) {
    let st = s.stats().unwrap();
    eprintln!(
        "{name}: {} transfers in {:.2} s ({:.0}/s), {} two-phase, {} aborted votes, {} conflicts, \
         {} snapshots checked, {} time travels, {} manual rotations ({} during the transfers), {} segments",
        o.bank.made.len(),
        o.elapsed.as_secs_f64(),
        o.bank.made.len() as f64 / o.elapsed.as_secs_f64(),
        o.bank.two_phase,
        o.bank.aborted_votes,
        o.bank.conflicts,
        o.bank.snapshots,
        o.bank.time_travels,
        o.rotations,
        o.concurrent_rotations,
        st.segments
    );
}

/// The invariants every run must show in its counters.
fn check_outcome(s: &Storage, o: &Outcome, run: &Run) {
    assert_eq!(o.bank.made.len() as u64, run.transfers, "every transfer was acknowledged once");
    assert!(o.bank.snapshots > 0, "the readers checked no snapshot");
    assert_eq!(o.rotations, run.rotations, "manual rotations");
    assert!(o.bank.two_phase > 0 && o.bank.aborted_votes > 0, "two-phase commits and aborted votes happened: {o:?}");
    let st = s.stats().unwrap();
    assert_eq!(st.commits, 1 + run.transfers, "commits counted by the storage");
    assert_eq!(st.conflicts, o.bank.conflicts, "conflicts counted by the storage and seen by the writers");
    assert!(st.segments as u64 > run.rotations, "{} segments after {} rotations", st.segments, run.rotations);
}

fn transfers_from_env(default: u64) -> u64 {
    match std::env::var("FS2_BANK_TRANSFERS") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("FS2_BANK_TRANSFERS={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The large run: real files, no fsync per commit, automatic and manual rotation.
#[test]
fn bank_transfers_keep_the_total() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options { sync: false, alignment: 4096, rotate_size: 1 << 20, ..Options::default() };
    let s = Storage::create(d.path(), opts.clone()).unwrap();
    let setup_tid = setup(&s);
    let run = Run { writers: 6, readers: 3, transfers: transfers_from_env(20_000), rotations: 40 };
    let o = run_bank(&s, &run, setup_tid);
    report("bank (sync: false)", &o, &s);
    check_outcome(&s, &o, &run);
    assert!(o.bank.conflicts > 0, "six writers on twenty accounts conflict sometimes");
    check_end(&s, &o, "running storage");
    s.sync().unwrap();
    drop(s);
    let s = Storage::open(d.path(), opts).unwrap();
    assert_eq!(s.open_warnings(), Vec::<String>::new());
    check_end(&s, &o, "after reopen");
    let ro = Storage::open(d.path(), Options::read_only()).unwrap();
    check_end(&ro, &o, "read-only open");
}

/// Group commit with durability: real files with an fsync per batch. Concurrent
/// committers share syncs, and every acknowledged transfer is there after a reopen.
#[test]
fn bank_group_commit_with_fsync() {
    let d = tempfile::tempdir().unwrap();
    let syncs = Arc::new(AtomicU64::new(0));
    let opts = Options { sync: true, vfs: Arc::new(CountingVfs { syncs: syncs.clone() }), ..Options::default() };
    let s = Storage::create(d.path(), opts.clone()).unwrap();
    let setup_tid = setup(&s);
    let run = Run { writers: 6, readers: 2, transfers: 1000, rotations: 3 };
    let before = syncs.load(Ordering::Relaxed);
    let o = run_bank(&s, &run, setup_tid);
    let used = syncs.load(Ordering::Relaxed) - before;
    report("bank (sync: true)", &o, &s);
    check_outcome(&s, &o, &run);
    check_end(&s, &o, "running storage");
    // Without sharing: one sync per commit (one-step or two-phase: a vote does not sync,
    // nor does an aborted one), one per rotation (the seal; the new segment's syncs are
    // extra).
    let unshared = run.transfers + o.rotations;
    eprintln!("bank (sync: true): {used} syncs for {unshared} without group commit");
    assert!(used < unshared, "group commit shared no sync: {used} syncs, {unshared} without sharing");
    drop(s);
    let s = Storage::open(d.path(), opts).unwrap();
    assert_eq!(s.open_warnings(), Vec::<String>::new());
    check_end(&s, &o, "after reopen");
}

/// Durability under group commit, checked by a power cut: on the simulated disk, with
/// sync on, everything acknowledged survives a crash that keeps only synced bytes.
#[test]
fn bank_acknowledged_transfers_survive_a_power_cut() {
    let vfs = SimVfs::new();
    let dir = Path::new("/bank");
    let opts = Options {
        sync: true,
        alignment: 4096,
        rotate_size: 64 << 10,
        vfs: Arc::new(vfs.clone()),
        ..Options::default()
    };
    let s = Storage::create(dir, opts.clone()).unwrap();
    let setup_tid = setup(&s);
    let run = Run { writers: 6, readers: 2, transfers: 5_000, rotations: 10 };
    let o = run_bank(&s, &run, setup_tid);
    report("bank (simulated disk, sync: true)", &o, &s);
    check_outcome(&s, &o, &run);
    let after = vfs.crash(CrashMode::DurableOnly);
    drop(s);
    let s = Storage::open(dir, Options { vfs: Arc::new(after), ..opts }).unwrap();
    check_end(&s, &o, "after a power cut");
}
