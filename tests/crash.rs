//! Crash and fault tests (STYLE.md test pyramid item 4; TARGETS.md R1, R3, R4, R5 for
//! rotation, R6).
//!
//! - `crash_at_every_sync_point_*`: a workload of one-step commits, two-phase commits,
//!   aborts after vote, explicit and automatic rotations runs on the simulated disk and
//!   is cut at every sync point; the disk a power cut leaves (durable only, all written,
//!   torn sectors) must open to a prefix of the attempted transactions that holds every
//!   acknowledged one, take new commits, and open the same way twice.
//! - `truncation_at_every_byte_*`: the active segment cut at every byte of its last
//!   transaction (and of a voted, unfinished one) opens to the state before it.
//! - `flipped_bytes_*`: every byte of every segment file xor-ed; open and read
//!   everything: an error or the right data, never wrong bytes, never a panic, and the
//!   open never fails (damage is contained; the blast radius: `tests/damage.rs`).
//! - `enospc_*` / `eio_*`: a failing `write` or `sync` under the engine (a wrapper `Vfs`):
//!   a clear error, nothing committed lost, writes resume (after a reopen for EIO).
//! - `reopen_after_*`: what recovery keeps (names, unsynced tails, an unsynced seal) is
//!   made durable before new commits build on it.
//!
//! `cargo test --test crash -- --nocapture` prints how the damaged copies fared.
//!
//! Every transaction writes values that name it (`txn7/oid3/...`), so a visible state is
//! checked against a model: the exact transactions, in order, with exactly their data.

mod common;
use common::fault::Faulty;
use common::model::*;
use common::segment_files;
use common::workload::*;
use filestorage2::vfs::{CrashMode, SimVfs, VFile};
use filestorage2::{Error, Options, SegmentState, Storage, Tid};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// 1. Crash at every sync point (R1; R5 for rotation).

/// Small enough that the workload rotates automatically a few times.
const ROTATE_SIZE: u64 = 4096 + 2048;

fn sim_opts(v: &SimVfs, rotate_size: u64) -> Options {
    // Small preallocation chunks: zero tails get crash coverage without big images.
    Options { vfs: Arc::new(v.clone()), alignment: 4096, rotate_size, preallocate: 8192, ..Default::default() }
}

enum Step {
    Commit(Txn),
    TwoPhase(Txn),
    VoteAbort(Txn),
    /// Vote `held`, commit each of `beside` in one step (their syncs and an automatic
    /// rotation happen while `held` is voted and unfinished), then finish `held` (or
    /// abort it with `finish: false`).
    Around {
        held: Txn,
        beside: Vec<Txn>,
        finish: bool,
    },
    Rotate,
}

fn crash_workload() -> Vec<Step> {
    use W::*;
    vec![
        Step::Commit(txn(0, &[(1, S(10)), (2, S(0)), (3, S(50))])),
        Step::Commit(txn(1, &[(1, S(20)), (2, E), (4, S(300))])),
        Step::TwoPhase(txn(2, &[(3, D), (5, S(5))])),
        Step::VoteAbort(txn(3, &[(1, S(7)), (6, S(400))])),
        Step::Commit(txn(4, &[(6, S(30)), (1, S(900))])),
        Step::Rotate,
        Step::Commit(txn(5, &[(2, D), (7, E), (8, S(100))])),
        Step::Commit(txn(6, &[(2, S(3)), (3, S(600))])),
        Step::TwoPhase(txn(7, &[(9, S(1200)), (1, D)])),
        Step::Commit(txn(8, &[(10, S(800)), (4, E)])),
        Step::VoteAbort(txn(9, &[(10, S(5))])),
        Step::Commit(txn(10, &[(11, S(1500))])),
        Step::Rotate,
        Step::Commit(txn(11, &[(1, S(1)), (12, S(2))])),
        Step::TwoPhase(txn(12, &[(12, D), (13, E)])),
        Step::Commit(txn(13, &[(14, S(700)), (5, D)])),
        Step::Commit(txn(14, &[(14, S(3000)), (3, E), (15, S(2500))])),
        Step::VoteAbort(txn(15, &[(1, S(5))])),
        Step::Commit(txn(16, &[(16, S(40))])),
        Step::Around {
            held: txn(17, &[(17, S(900)), (2, D)]),
            beside: vec![txn(18, &[(18, S(2000))]), txn(19, &[(1, S(9)), (19, E)])],
            finish: true,
        },
        Step::Around {
            held: txn(20, &[(20, S(50)), (3, S(4))]),
            beside: vec![txn(21, &[(21, S(3500))])],
            finish: false,
        },
        Step::Around {
            held: txn(22, &[(22, S(4000))]),
            beside: vec![txn(23, &[(23, S(10))]), txn(24, &[(24, S(3000))])],
            finish: true,
        },
        Step::Commit(txn(25, &[(25, S(25))])),
    ]
}

/// What a run of the workload did before it stopped.
struct Run {
    created: bool,
    /// Transactions whose commit or finish was called, in order: any prefix of these
    /// may be visible after a crash (aborted and never-finished votes are not here).
    attempted: Vec<Txn>,
    /// Tids of the acknowledged ones (a prefix of `attempted`).
    acked: Vec<Tid>,
    /// Segments after the last successful step.
    segments: usize,
    finished: bool,
}

fn run_workload(sim: &SimVfs, steps: &[Step]) -> Run {
    let mut r = Run { created: false, attempted: Vec::new(), acked: Vec::new(), segments: 0, finished: false };
    let Ok(s) = Storage::create(Path::new(SIM_DIR), sim_opts(sim, ROTATE_SIZE)) else { return r };
    r.created = true;
    r.segments = 1;
    for step in steps {
        let ok = match step {
            Step::Commit(t) => {
                r.attempted.push(t.clone());
                stage(&s, t).commit().map(|tid| r.acked.push(tid)).is_ok()
            }
            Step::TwoPhase(t) => {
                let mut x = stage(&s, t);
                x.vote().is_ok() && {
                    r.attempted.push(t.clone());
                    x.finish().map(|tid| r.acked.push(tid)).is_ok()
                }
            }
            Step::VoteAbort(t) => {
                let mut x = stage(&s, t);
                let ok = x.vote().is_ok();
                x.abort();
                ok
            }
            Step::Around { held, beside, finish } => {
                let mut x = stage(&s, held);
                x.vote().is_ok()
                    && beside.iter().all(|t| {
                        r.attempted.push(t.clone());
                        stage(&s, t).commit().map(|tid| r.acked.push(tid)).is_ok()
                    })
                    && if *finish {
                        // The tid is chosen at finish: after the ones committed beside.
                        r.attempted.push(held.clone());
                        x.finish().map(|tid| r.acked.push(tid)).is_ok()
                    } else {
                        x.abort();
                        true
                    }
            }
            Step::Rotate => s.rotate().is_ok(),
        };
        if !ok {
            return r;
        }
        r.segments = s.segments().unwrap().len();
    }
    r.finished = true;
    r
}

/// Run the workload once without a crash (counting its sync points), then once per sync
/// point crashing there, and hand every crash image to `f`.
fn for_each_crash(mut f: impl FnMut(u64, CrashMode, &Run, &SimVfs)) -> u64 {
    let steps = crash_workload();
    let sim = SimVfs::new();
    let base = run_workload(&sim, &steps);
    assert!(base.finished && base.created, "the workload runs without a crash");
    let total = sim.syncs();
    assert!(base.segments >= 5, "the workload rotates twice by hand and more automatically: {}", base.segments);
    for k in 0..=total {
        let sim = SimVfs::new();
        sim.crash_at_sync(k);
        let run = run_workload(&sim, &steps);
        if k < total {
            assert!(!run.finished, "crash at sync {k} of {total}: the workload should have stopped at an error");
        } else {
            assert!(run.finished && run.acked.len() == base.acked.len());
        }
        for mode in crash_modes() {
            f(k, mode, &run, &sim.crash(mode));
        }
    }
    total
}

/// Check that the visible transactions are a prefix of the attempted ones that holds every
/// acknowledged one, each complete; return them as a model.
fn recovered_model(s: &Storage, r: &Run, ctx: &str) -> Model {
    let txns = visible(s, ctx);
    assert!(
        txns.len() >= r.acked.len(),
        "{ctx}: acknowledged transactions lost: {} visible, {} acknowledged",
        txns.len(),
        r.acked.len()
    );
    assert!(txns.len() <= r.attempted.len(), "{ctx}: more transactions than attempted");
    let mut model = Model::new();
    for (j, rec) in txns.iter().enumerate() {
        let want = &r.attempted[j];
        assert_eq!(record_v(rec), model_v(rec.tid, want), "{ctx}: visible transaction {j} is not attempt {j}");
        if let Some(&tid) = r.acked.get(j) {
            assert_eq!(rec.tid, tid, "{ctx}: acknowledged tid of transaction {j}");
        }
        if j > 0 {
            assert!(rec.tid > txns[j - 1].tid, "{ctx}: tids increase");
        }
        model.push((rec.tid, want.clone()));
    }
    model
}

#[test]
fn crash_at_every_sync_point_keeps_acknowledged_and_hides_partial() {
    let t0 = Instant::now();
    let dir = Path::new(SIM_DIR);
    let (mut opened, mut lost_create, mut unacked_visible) = (0, 0, 0);
    let total = for_each_crash(|k, mode, r, img| {
        let ctx = format!("crash at sync {k} ({mode:?})");
        let s = match Storage::open(dir, sim_opts(img, ROTATE_SIZE)) {
            Ok(s) => s,
            Err(e) => {
                assert!(!r.created, "{ctx}: open failed although create was acknowledged: {e}");
                assert!(matches!(e, Error::NotFound(_)), "{ctx}: a crash during create leaves no storage: {e}");
                lost_create += 1;
                return;
            }
        };
        opened += 1;
        let mut model = recovered_model(&s, r, &ctx);
        unacked_visible += model.len() - r.acked.len();
        check_model(&s, &model, true, &ctx);
        let n = check_chain(&s, model.len(), &ctx).len();
        if r.created {
            // R5: the old chain or the new one (a rotation sealed before the crash is
            // finished by recovery), never a mix.
            assert!(n == r.segments || n == r.segments + 1, "{ctx}: {n} segments, {} before the crash", r.segments);
        }
        // Writable after recovery, and what it acknowledges survives a power cut.
        let extra = txn(99, &[(1, W::S(3)), (50, W::E), (2, W::D)]);
        commit(&s, &mut model, extra);
        check_model(&s, &model, false, &ctx);
        drop(s);
        let after = img.crash(CrashMode::DurableOnly);
        let s = Storage::open(dir, sim_opts(&after, ROTATE_SIZE)).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        check_model(&s, &model, false, &ctx);
        check_chain(&s, model.len(), &ctx);
    });
    println!(
        "crash at every sync point: {total} sync points x {} modes: {opened} images opened, {lost_create} lost \
         the unacknowledged create, {unacked_visible} unacknowledged transactions survived whole; {:?}",
        crash_modes().len(),
        t0.elapsed()
    );
    assert!(opened > 0 && unacked_visible > 0, "the crash modes exercise both outcomes");
}

/// A summary of a storage to compare opens: every read, and the chain.
fn snapshot(s: &Storage, q: &Queries) -> (String, String) {
    let segs = s.segments().map(|v| {
        v.iter().map(|g| format!("{} {:?} {:?} {}", g.name, g.state, g.prev, g.transactions)).collect::<Vec<_>>()
    });
    (format!("{:?}", dump(s, q)), format!("{segs:?}"))
}

#[test]
fn crash_at_every_sync_point_open_is_idempotent() {
    let t0 = Instant::now();
    let dir = Path::new(SIM_DIR);
    let mut cases = 0;
    for_each_crash(|k, mode, r, img| {
        let ctx = format!("crash at sync {k} ({mode:?})");
        let ro = Storage::open(dir, Options { read_only: true, ..sim_opts(img, ROTATE_SIZE) });
        let s = match Storage::open(dir, sim_opts(img, ROTATE_SIZE)) {
            Ok(s) => s,
            Err(e) => {
                assert!(!r.created, "{ctx}: {e}");
                assert!(ro.is_err(), "{ctx}: the read-only open agrees that there is no storage");
                return;
            }
        };
        cases += 1;
        let model = recovered_model(&s, r, &ctx);
        let q = queries(&model, false);
        let first = snapshot(&s, &q);
        // A read-only open of the crash image (which repairs nothing) reads the same.
        let ro = ro.unwrap_or_else(|e| panic!("{ctx}: read-only open: {e}"));
        assert_eq!(snapshot(&ro, &q).0, first.0, "{ctx}: read-only open of the crash image");
        drop(ro);
        drop(s);
        let s = Storage::open(dir, sim_opts(img, ROTATE_SIZE)).unwrap_or_else(|e| panic!("{ctx}: second open: {e}"));
        assert!(s.open_warnings().is_empty(), "{ctx}: second open repaired again: {:?}", s.open_warnings());
        assert_eq!(snapshot(&s, &q), first, "{ctx}: second open");
        drop(s);
        // The repairs of the first open were durable.
        let cut = img.crash(CrashMode::DurableOnly);
        let s = Storage::open(dir, sim_opts(&cut, ROTATE_SIZE)).unwrap_or_else(|e| panic!("{ctx}: third open: {e}"));
        assert!(s.open_warnings().is_empty(), "{ctx}: open after a power cut: {:?}", s.open_warnings());
        assert_eq!(snapshot(&s, &q), first, "{ctx}: open after a power cut following recovery");
    });
    println!("idempotent recovery: {cases} crash images; {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------
// 2. Truncation at every byte of the last transaction (R3).

/// Where a storage lives: the simulated disk (at `SIM_DIR`) or a real directory.
enum Disk {
    Sim(SimVfs),
    Real(PathBuf),
}

/// A temporary directory for real-file sweeps, on tmpfs where there is one: these tests
/// exercise the real file system code (and memory maps), not the disk, and every writable
/// open syncs.
fn fast_tempdir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap()),
        false => tempfile::tempdir().unwrap(),
    }
}

fn real_opts() -> Options {
    // No preallocation: the sweeps reason about exact file lengths.
    Options { alignment: 4096, preallocate: 0, ..Default::default() }
}

impl Disk {
    fn opts(&self) -> Options {
        match self {
            // No preallocation: the sweeps reason about exact file lengths.
            Disk::Sim(v) => Options { preallocate: 0, ..sim_opts(v, 0) },
            Disk::Real(_) => real_opts(),
        }
    }
    fn ro_opts(&self) -> Options {
        Options { read_only: true, ..self.opts() }
    }
    fn dir(&self) -> PathBuf {
        match self {
            Disk::Sim(_) => PathBuf::from(SIM_DIR),
            Disk::Real(p) => p.clone(),
        }
    }
    fn open(&self, name: &str, write: bool) -> Arc<dyn VFile> {
        self.opts().vfs.open(&self.dir().join(name), write).unwrap()
    }
    /// A copy of the segment files (into `scratch` for real files, whose segment files
    /// are replaced).
    fn copy(&self, scratch: &Path) -> Disk {
        match self {
            Disk::Sim(v) => Disk::Sim(v.crash(CrashMode::AllWritten)),
            Disk::Real(from) => {
                for p in segment_files(scratch) {
                    std::fs::remove_file(p).unwrap();
                }
                for p in segment_files(from) {
                    std::fs::copy(&p, scratch.join(p.file_name().unwrap())).unwrap();
                }
                Disk::Real(scratch.to_path_buf())
            }
        }
    }
    fn len(&self, name: &str) -> u64 {
        self.open(name, false).len().unwrap()
    }
    fn set_len(&self, name: &str, len: u64) {
        self.open(name, true).set_len(len).unwrap()
    }
    fn xor(&self, name: &str, off: u64, mask: u8) {
        let f = self.open(name, true);
        let mut b = [0u8];
        f.read_exact_at(&mut b, off).unwrap();
        f.write_all_at(&[b[0] ^ mask], off).unwrap();
    }
}

/// Cut a copy of `src`'s active segment to `len`; a read-only open must show exactly
/// `model`. With `rw`, so must a read-write open, after whose repair a second open repairs
/// nothing; with `write`, the repaired storage also takes a commit.
fn check_truncated(
    src: &Disk,
    scratch: &Path,
    active: &str,
    len: u64,
    model: &(Model, Expected),
    rw: bool,
    write: bool,
) {
    let (model, exp) = model;
    let ctx = format!("{active} cut at {len}");
    let disk = src.copy(scratch);
    disk.set_len(active, len);
    let dir = disk.dir();
    let s = Storage::open(&dir, disk.ro_opts()).unwrap_or_else(|e| panic!("{ctx}: read-only open: {e}"));
    exp.check(&s, &format!("{ctx}, read-only"));
    drop(s);
    if !rw {
        return;
    }
    let s = Storage::open(&dir, disk.opts()).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
    exp.check(&s, &ctx);
    drop(s);
    let s = Storage::open(&dir, disk.opts()).unwrap_or_else(|e| panic!("{ctx}: second open: {e}"));
    assert!(s.open_warnings().is_empty(), "{ctx}: second open: {:?}", s.open_warnings());
    exp.check(&s, &ctx);
    if write {
        let mut m = model.clone();
        commit(&s, &mut m, txn(77, &[(1, W::S(9)), (90, W::E)]));
        drop(s);
        let s = Storage::open(&dir, disk.opts()).unwrap_or_else(|e| panic!("{ctx}: reopen after commit: {e}"));
        check_model(&s, &m, false, &format!("{ctx}, after a new commit"));
    }
}

/// Build a storage (a past segment; an active one whose last transaction follows a
/// padding record), then cut its active segment at every byte of the last transaction,
/// and of a voted one after it. `rw(len)`: also open read-write at that length.
fn truncation_sweep(disk: &Disk, rw: impl Fn(u64) -> bool) -> (u64, u64) {
    let scratch = fast_tempdir();
    let dir = disk.dir();
    let s = Storage::create(&dir, disk.opts()).unwrap();
    let mut model = Model::new();
    commit(&s, &mut model, txn(0, &[(1, W::S(100)), (2, W::E), (3, W::S(200))]));
    commit(&s, &mut model, txn(1, &[(1, W::D), (4, W::S(50))]));
    s.rotate().unwrap();
    commit(&s, &mut model, txn(2, &[(2, W::S(10)), (5, W::S(2500))]));
    commit(&s, &mut model, txn(3, &[(3, W::D), (6, W::E)]));
    let active = s.segments().unwrap().last().unwrap().name.file_name();
    let before = disk.len(&active);
    let model_before = (model.clone(), Expected::new(&model, false));
    // Too long for what is left of its 4096-byte block: it follows a padding record.
    commit(&s, &mut model, txn(4, &[(1, W::S(1200)), (2, W::D), (6, W::S(400)), (7, W::E)]));
    let after = disk.len(&active);
    let last_at = visible(&s, "").last().unwrap().offset;
    assert!(last_at > before && last_at.is_multiple_of(4096), "the last transaction follows a padding record");
    let model_after = (model.clone(), Expected::new(&model, false));
    let marks = [before, before + 12, last_at - 8, last_at, last_at + 12, last_at + 48, after - 8, after - 1];
    for len in before..after {
        let rw = rw(len) || marks.contains(&len);
        check_truncated(disk, scratch.path(), &active, len, &model_before, rw, rw && len % 4 == 0);
    }
    check_truncated(disk, scratch.path(), &active, after, &model_after, true, true);

    // A voted transaction writes no record, only the zeros of the space it reserves: a
    // disk image taken while it is voted opens to the state before it, at any length.
    let v = txn(5, &[(8, W::S(3000)), (1, W::S(5))]);
    let mut x = stage(&s, &v);
    x.vote().unwrap();
    let snap = fast_tempdir();
    let voted = disk.copy(snap.path());
    let after_vote = disk.len(&active);
    assert!(after_vote > after, "the vote reserved space beyond the preallocated chunk");
    let step = ((after_vote - after) / 64).max(1);
    let mut lens: Vec<u64> = (after..=after_vote).step_by(step as usize).collect();
    lens.push(after_vote);
    for &len in &lens {
        check_truncated(&voted, scratch.path(), &active, len, &model_after, true, len % 4 == 0);
    }
    let tid = x.finish().unwrap();
    model.push((tid, v));
    drop(s);
    let s = Storage::open(&dir, disk.opts()).unwrap();
    assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
    check_model(&s, &model, true, "after finish");
    (after - before + 1, lens.len() as u64)
}

#[test]
fn truncation_at_every_byte_of_the_last_transaction_simulated() {
    let t0 = Instant::now();
    let (a, b) = truncation_sweep(&Disk::Sim(SimVfs::new()), |_| true);
    println!(
        "truncation (simulated disk): {a} lengths of the last transaction (padding + record), {b} of a voted one, \
         read-only and read-write; {:?}",
        t0.elapsed()
    );
}

/// Real files (past segments memory-mapped): read-only opens at every byte, read-write
/// ones every 7 bytes and at the record boundaries (the simulated sweep does every byte).
#[test]
fn truncation_at_every_byte_of_the_last_transaction_real_files() {
    let t0 = Instant::now();
    let d = fast_tempdir();
    let (a, b) = truncation_sweep(&Disk::Real(d.path().to_path_buf()), |len| len % 7 == 0);
    println!("truncation (real files): {a} + {b} lengths; {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------
// 3. Flipped bytes (R4).

/// A segment file to damage.
struct Target {
    name: String,
    len: u64,
    /// Past segments: where the index record starts, and where its block CRCs end (the
    /// bytes from there to the trailer are zero padding that nothing reads).
    index: Option<(u64, u64)>,
    /// The active segment: where its last transaction starts (damage from there on is
    /// indistinguishable from a torn write, and may drop that transaction).
    last_txn: Option<u64>,
}

struct FlipSetup {
    full: Expected,
    /// The model without the last transaction, asked the same questions.
    minus_last: Expected,
    targets: Vec<Target>,
}

/// Two past segments and an active one, with deletions, empty objects, a two-phase
/// commit and aborted votes (which leave no record) among the transactions.
fn build_flip_storage(disk: &Disk) -> FlipSetup {
    use W::*;
    let s = Storage::create(&disk.dir(), disk.opts()).unwrap();
    let mut model = Model::new();
    commit(&s, &mut model, txn(0, &[(1, S(20)), (2, E), (3, S(40))]));
    commit(&s, &mut model, txn(1, &[(1, S(30)), (4, S(10)), (2, D)]));
    s.rotate().unwrap();
    commit(&s, &mut model, txn(2, &[(2, S(5)), (5, S(60)), (1, S(8))]));
    stage(&s, &txn(50, &[(6, S(10))])).vote().unwrap();
    commit(&s, &mut model, txn(3, &[(3, D), (6, E)]));
    s.rotate().unwrap();
    commit(&s, &mut model, txn(4, &[(1, S(12)), (7, S(25))]));
    let t5 = txn(5, &[(4, D), (8, S(15))]);
    let mut x = stage(&s, &t5);
    x.vote().unwrap();
    model.push((x.finish().unwrap(), t5));
    stage(&s, &txn(51, &[(1, S(3))])).vote().unwrap();
    commit(&s, &mut model, txn(6, &[(2, S(20)), (5, S(0))]));
    let last = visible(&s, "").last().unwrap().offset;
    let mut targets = Vec::new();
    for g in s.segments().unwrap() {
        let name = g.name.file_name();
        let len = disk.len(&name);
        let index = (g.state == SegmentState::Past).then(|| {
            let n = g.index_entries;
            (g.data_end, g.data_end + 24 + 16 * n + 4 * n.div_ceil(256))
        });
        let last_txn = (g.state == SegmentState::Active).then_some(last);
        targets.push(Target { name, len, index, last_txn });
    }
    assert_eq!(targets.len(), 3);
    let full = Expected::asking(&model, Queries { light: true, ..queries(&model, false) });
    let minus_last = Expected::asking(&model[..model.len() - 1].to_vec(), full.q.clone());
    FlipSetup { full, minus_last, targets }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Found {
    /// `Storage::open` refused.
    OpenError,
    /// Opened; some reads failed, every value read was right.
    ReadError,
    /// Opened; every read gave the right data.
    Correct,
    /// Opened without the last transaction (the damage looked like a torn write).
    DroppedLast,
}

/// Open the damaged storage and read everything. `Err` = wrong data.
fn read_damaged(disk: &Disk, ro: bool, setup: &FlipSetup, may_drop: bool) -> Result<(Found, Vec<String>), String> {
    let opts = if ro { disk.ro_opts() } else { disk.opts() };
    let s = match Storage::open(&disk.dir(), opts) {
        Ok(s) => s,
        Err(_) => return Ok((Found::OpenError, Vec::new())),
    };
    let d = dump(&s, &setup.full.q);
    let found = match compare(&d, &setup.full.answers) {
        Ok(o) if o.errors == 0 => Found::Correct,
        Ok(_) => Found::ReadError,
        Err(wrong) if may_drop => match compare(&d, &setup.minus_last.answers) {
            Ok(o) if o.errors == 0 => Found::DroppedLast,
            Ok(_) => Found::ReadError,
            Err(_) => return Err(wrong),
        },
        Err(wrong) => return Err(wrong),
    };
    Ok((found, s.open_warnings()))
}

/// Run `f` on every item, on every core.
fn par_for<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                f(item);
            });
        }
    });
}

/// Damage a copy of `disk` at every chosen byte (xor `mask`), open it read-write and
/// read-only, read everything. `strict`: the index of a past segment is only a cache of
/// its data: damage there must be repaired (rebuilt), giving the right data.
fn flip_sweep(disk: &Disk, setup: &FlipSetup, only_past_data: bool, strict: bool, bits: bool) {
    let mut cases = Vec::new();
    for (i, t) in setup.targets.iter().enumerate() {
        if only_past_data && t.index.is_none() {
            continue;
        }
        let from = if only_past_data { 4096 } else { 0 };
        for off in from..t.len {
            cases.push((i, off, 0xffu8));
            // A single bit too, except in the unused zero bytes of the header.
            let used_header = !(256..4088).contains(&off) || (2108..2140).contains(&off);
            if bits && (off >= 4096 || used_header) {
                cases.push((i, off, 1u8 << (off % 8)));
            }
        }
    }
    let stats: Mutex<BTreeMap<(&str, &str, Found), usize>> = Mutex::default();
    let failures: Mutex<Vec<String>> = Mutex::default();
    let rebuilt = AtomicUsize::new(0);
    let scratch: Vec<tempfile::TempDir> = (0..8).map(|_| fast_tempdir()).collect();
    let slot = AtomicUsize::new(0);
    thread_local!(static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) });
    par_for(&cases, |&(i, off, mask)| {
        let t = &setup.targets[i];
        let my = SLOT.with(|c| {
            let v = c.get().unwrap_or_else(|| slot.fetch_add(1, Ordering::Relaxed));
            c.set(Some(v));
            v
        });
        let region = match (t.index, t.last_txn) {
            _ if off < 4096 => "header",
            (Some((at, _)), _) if off >= at => "past index+trailer",
            (Some(_), _) => "past data",
            (_, Some(at)) if off >= at => "active last txn",
            _ => "active data",
        };
        let may_drop = t.last_txn.is_some_and(|at| off >= at);
        for ro in [false, true] {
            let mode = if ro { "read-only" } else { "read-write" };
            let ctx = format!("{} offset {off} xor {mask:#04x} ({region}), {mode}", t.name);
            let res = catch_unwind(AssertUnwindSafe(|| {
                let copy = disk.copy(scratch[my].path());
                copy.xor(&t.name, off, mask);
                read_damaged(&copy, ro, setup, may_drop)
            }));
            let fail = |m: String| failures.lock().unwrap().push(m);
            match res {
                Err(p) => {
                    let msg = p.downcast_ref::<String>().cloned().or(p.downcast_ref::<&str>().map(|s| s.to_string()));
                    fail(format!("{ctx}: PANIC {msg:?}"));
                }
                Ok(Err(wrong)) => fail(format!("{ctx}: WRONG DATA: {wrong}")),
                Ok(Ok((found, warnings))) => {
                    *stats.lock().unwrap().entry((region, mode, found)).or_default() += 1;
                    if let (true, Some((_, crcs_end))) = (strict, t.index.filter(|(at, _)| off >= *at)) {
                        if found != Found::Correct {
                            fail(format!("{ctx}: index damage must be rebuilt from the data, got {found:?}"));
                        } else if warnings.iter().any(|w| w.contains("rebuilt")) {
                            rebuilt.fetch_add(1, Ordering::Relaxed);
                        } else if off < crcs_end || off >= t.len - 128 {
                            fail(format!("{ctx}: damaged index used without a warning: {warnings:?}"));
                        }
                    }
                }
            }
        }
    });
    let stats = stats.into_inner().unwrap();
    let mut by_found: BTreeMap<Found, usize> = BTreeMap::new();
    for ((region, mode, found), n) in &stats {
        println!("  {region:>20} {mode:>10}: {n:6} {found:?}");
        *by_found.entry(*found).or_default() += n;
    }
    println!(
        "  {} damaged copies opened ({} xor patterns); outcomes {by_found:?}; {} index rebuilds",
        cases.len() * 2,
        cases.len(),
        rebuilt.load(Ordering::Relaxed)
    );
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} bad outcomes, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    // Fault containment (issue 10): one damaged byte never takes the whole storage down.
    assert_eq!(by_found.get(&Found::OpenError), None, "a damaged byte made the open fail");
    assert!(by_found.get(&Found::ReadError).is_some_and(|&n| n > 0), "damage is detected at read");
}

/// Every byte of every segment file, on the simulated disk (indexes read with `pread`).
#[test]
fn flipped_bytes_are_detected_or_harmless_simulated() {
    let t0 = Instant::now();
    let disk = Disk::Sim(SimVfs::new());
    let setup = build_flip_storage(&disk);
    println!("flipped bytes, simulated disk:");
    flip_sweep(&disk, &setup, false, true, true);
    println!("  {:?}", t0.elapsed());
}

/// Every byte after the header of the past segments, on real files: they are
/// memory-mapped and their index blocks verified lazily, so damage to index entries is an
/// error at read rather than a rebuild. (The rest reads as on the simulated disk.)
#[test]
fn flipped_bytes_are_detected_or_harmless_real_files() {
    let t0 = Instant::now();
    let d = fast_tempdir();
    let disk = Disk::Real(d.path().to_path_buf());
    let setup = build_flip_storage(&disk);
    println!("flipped bytes, real files:");
    flip_sweep(&disk, &setup, true, false, false);
    println!("  {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------
// 4. ENOSPC and EIO during commit (R6).

/// On the simulated disk: everything acknowledged survives a power cut now.
fn check_durable(disk: &Faulty, model: &Model, ctx: &str) {
    if let Some(s) = disk.after_power_cut(ctx) {
        check_model(&s, model, false, &format!("{ctx}, after a power cut"));
    }
}

/// An I/O error keeping the OS error number, whose message names the file (or the storage
/// directory) and says what went wrong.
fn assert_os_error(e: &Error, errno: i32, text: &str, ctx: &str) {
    let msg = e.to_string();
    assert!(matches!(e, Error::Io { .. }), "{ctx}: an I/O error, got {e:?}");
    assert_eq!(e.raw_os_error(), Some(errno), "{ctx}: the OS error number is kept: {e:?}");
    let names_path = msg.contains("/seg-0000") || msg.contains("sync directory");
    assert!(msg.contains(text) && names_path, "{ctx}: a clear message naming the file: {msg}");
}

/// The writer refuses every write until the storage is reopened.
fn assert_poisoned(s: &Storage, ctx: &str) {
    let refused = |what: &str, r: Result<(), Error>| match r {
        Err(Error::ReadOnly(m)) => assert!(m.contains("reopen"), "{ctx}: {what}: the message says what to do: {m}"),
        other => panic!("{ctx}: {what} after a failed sync must be refused as read-only, got {other:?}"),
    };
    refused("commit", stage(s, &txn(60, &[(1, W::S(1))])).commit().map(drop));
    refused("vote", stage(s, &txn(61, &[(1, W::S(1))])).vote());
    refused("rotate", s.rotate().map(drop));
}

fn enospc_scenario(disk: Faulty) {
    let f = disk.faults.clone();
    let s = Storage::create(&disk.dir, disk.opts()).unwrap();
    let mut model = Model::new();
    commit(&s, &mut model, txn(0, &[(1, W::S(100)), (2, W::E), (3, W::S(30))]));
    commit(&s, &mut model, txn(1, &[(1, W::S(10)), (3, W::D)]));
    let mut label = 10;
    let mut next = |ws: &[(u64, W)]| {
        label += 1;
        txn(label, ws)
    };
    // A one-step commit: the disk fills at its batch write (0) or its marker flip (1).
    for n in 0..2 {
        let ctx = format!("disk full at write {n} of a commit");
        let len = disk.active_len(&s);
        let data_end = s.segments().unwrap().last().unwrap().data_end;
        f.disk_full_after(n);
        let e = stage(&s, &next(&[(1, W::S(2000)), (4, W::S(5))])).commit().unwrap_err();
        assert_os_error(&e, 28, "No space left on device", &ctx);
        // Taken back to the data end (preallocated zeros beyond it may go too).
        assert_eq!(s.segments().unwrap().last().unwrap().data_end, data_end, "{ctx}");
        let now = disk.active_len(&s);
        assert!(now >= data_end && now <= len, "{ctx}: the partial write is taken back ({now} vs {len})");
        check_model(&s, &model, false, &ctx);
        // Still full: the same clean failure, not a poisoned writer.
        let e = stage(&s, &next(&[(5, W::S(5))])).commit().unwrap_err();
        assert_os_error(&e, 28, "No space left on device", &ctx);
        f.space_returns();
        commit(&s, &mut model, next(&[(1, W::S(20)), (4, W::E), (6, W::S(7))]));
        check_model(&s, &model, false, &ctx);
    }
    // A vote reserves its space (zeros ahead of the data): on a full disk, a vote that
    // needs more space than is allocated fails cleanly.
    let ctx = "disk full at a vote";
    f.disk_full(true);
    let mut x = stage(&s, &next(&[(7, W::S(20_000))]));
    assert_os_error(&x.vote().unwrap_err(), 28, "No space left on device", ctx);
    drop(x);
    check_model(&s, &model, false, ctx);
    f.disk_full(false);
    // Once voted, a full disk does not make the finish fail: one-step commits beside it
    // may not take its space, and its finish writes into the space it reserved.
    let ctx = "disk full after a vote";
    let t = next(&[(7, W::S(3000)), (2, W::D)]);
    let mut x = stage(&s, &t);
    x.vote().unwrap();
    f.disk_full(true);
    let big = stage(&s, &next(&[(20, W::S(30_000))])).commit().unwrap_err();
    assert_os_error(&big, 28, "No space left on device", ctx);
    check_model(&s, &model, false, ctx);
    model.push((x.finish().unwrap(), t));
    check_model(&s, &model, false, ctx);
    f.disk_full(false);
    commit(&s, &mut model, next(&[(20, W::S(30))]));
    check_model(&s, &model, false, ctx);
    // A finish whose write fails anyway (an I/O error: the fault fails any write): the
    // batch is taken back like a one-step commit's, nothing of it is visible, and writes
    // go on.
    let ctx = "a write fails at a finish";
    let t = next(&[(8, W::S(8)), (1, W::D)]);
    let mut x = stage(&s, &t);
    x.vote().unwrap();
    f.disk_full_after(0);
    assert_os_error(&x.finish().unwrap_err(), 28, "No space left on device", ctx);
    f.space_returns();
    check_model(&s, &model, false, ctx);
    commit(&s, &mut model, next(&[(8, W::S(80))]));
    drop(s);
    let s = disk.open(ctx);
    check_model(&s, &model, true, ctx);
    commit(&s, &mut model, next(&[(9, W::S(9))]));
    // A rotation: the disk fills while writing the index.
    let ctx = "disk full at a rotation";
    f.disk_full_after(0);
    assert_os_error(&s.rotate().unwrap_err(), 28, "No space left on device", ctx);
    f.space_returns();
    check_model(&s, &model, false, ctx);
    drop(s);
    let s = disk.open(ctx);
    check_model(&s, &model, true, ctx);
    assert_eq!(check_chain(&s, model.len(), ctx).len(), 1);
    s.rotate().unwrap();
    commit(&s, &mut model, next(&[(1, W::S(1)), (10, W::E)]));
    drop(s);
    let s = disk.open("the end");
    check_model(&s, &model, true, "the end");
    check_chain(&s, model.len(), "the end");
    check_durable(&disk, &model, "the end");
}

#[test]
fn enospc_during_commit_fails_cleanly_and_writes_resume_real_files() {
    enospc_scenario(Faulty::real());
}

#[test]
fn enospc_during_commit_fails_cleanly_and_writes_resume_simulated() {
    enospc_scenario(Faulty::sim());
}

fn eio_scenario(disk: Faulty) {
    let f = disk.faults.clone();
    let mut s = Storage::create(&disk.dir, disk.opts()).unwrap();
    let mut model = Model::new();
    commit(&s, &mut model, txn(0, &[(1, W::S(100)), (2, W::E), (3, W::S(30))]));
    commit(&s, &mut model, txn(1, &[(1, W::S(10)), (3, W::D)]));
    let mut label = 10;
    let mut next = |ws: &[(u64, W)]| {
        label += 1;
        txn(label, ws)
    };
    // A one-step commit whose sync fails once, or keeps failing (the undo fails too).
    for sticky in [false, true] {
        let ctx = format!("EIO at the sync of a commit (sticky: {sticky})");
        f.eio_after(0, sticky);
        let t = next(&[(1, W::S(50)), (4, W::S(5)), (2, W::D)]);
        let e = stage(&s, &t).commit().unwrap_err();
        assert_os_error(&e, 5, "Input/output error", &ctx);
        check_model(&s, &model, false, &ctx);
        assert_poisoned(&s, &ctx);
        check_model(&s, &model, false, &ctx);
        f.heal();
        drop(s);
        s = disk.open(&ctx);
        model = check_model_or_plus(&s, &model, Some(&t), &ctx);
        commit(&s, &mut model, next(&[(5, W::S(5))]));
        drop(s);
        s = disk.open(&ctx);
        check_model(&s, &model, false, &ctx);
    }
    // A vote does not sync. A voted transaction while a sync beside it fails: its
    // finish is refused (the storage is poisoned) and it is never visible.
    let ctx = "EIO at a sync while a transaction is voted";
    let mut x = stage(&s, &next(&[(6, W::S(6))]));
    x.vote().unwrap();
    f.eio_after(0, false);
    let t = next(&[(10, W::S(10))]);
    assert_os_error(&stage(&s, &t).commit().unwrap_err(), 5, "Input/output error", ctx);
    match x.finish() {
        Err(Error::ReadOnly(m)) => assert!(m.contains("reopen"), "{ctx}: {m}"),
        other => panic!("{ctx}: the finish after a failed sync must be refused, got {other:?}"),
    }
    assert_poisoned(&s, ctx);
    drop(s);
    let s = disk.open(ctx);
    model = check_model_or_plus(&s, &model, Some(&t), ctx);
    // A finish whose sync fails: the transaction is all there after a reopen, or absent.
    let ctx = "EIO at the sync of a finish";
    let t = next(&[(7, W::S(7)), (1, W::E)]);
    let mut x = stage(&s, &t);
    x.vote().unwrap();
    f.eio_after(0, false);
    assert_os_error(&x.finish().unwrap_err(), 5, "Input/output error", ctx);
    check_model(&s, &model, false, ctx);
    assert_poisoned(&s, ctx);
    drop(s);
    let s = disk.open(ctx);
    model = check_model_or_plus(&s, &model, Some(&t), ctx);
    commit(&s, &mut model, next(&[(8, W::S(8))]));
    drop(s);
    // A rotation whose n-th sync fails (seal, new segment file, directory).
    for n in 0..3 {
        let ctx = format!("EIO at sync {n} of a rotation");
        let s = disk.open(&ctx);
        let segments = check_chain(&s, model.len(), &ctx).len();
        f.eio_after(n, false);
        assert_os_error(&s.rotate().unwrap_err(), 5, "Input/output error", &ctx);
        check_model(&s, &model, false, &ctx);
        assert_poisoned(&s, &ctx);
        drop(s);
        let s = disk.open(&ctx);
        check_model(&s, &model, true, &ctx);
        let now = check_chain(&s, model.len(), &ctx).len();
        assert!(now == segments || now == segments + 1, "{ctx}: old chain or new chain");
        commit(&s, &mut model, next(&[(9, W::S(n as usize)), (1, W::S(1))]));
    }
    let s = disk.open("the end");
    check_model(&s, &model, true, "the end");
    check_chain(&s, model.len(), "the end");
    check_durable(&disk, &model, "the end");
}

#[test]
fn eio_on_sync_refuses_writes_until_reopen_real_files() {
    eio_scenario(Faulty::real());
}

#[test]
fn eio_on_sync_refuses_writes_until_reopen_simulated() {
    eio_scenario(Faulty::sim());
}

// ---------------------------------------------------------------------------------------
// 5. What recovery keeps, it makes durable before new commits build on it.

/// Open the power-cut image `cut` and check that it shows a prefix of `attempted` holding
/// the first `acked` of them.
fn check_prefix(cut: &SimVfs, attempted: &[Txn], acked: usize, ctx: &str) {
    let s = Storage::open(Path::new(SIM_DIR), sim_opts(cut, 0)).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
    let r = Run { created: true, attempted: attempted.to_vec(), acked: Vec::new(), segments: 0, finished: false };
    let model = recovered_model(&s, &r, ctx);
    assert!(model.len() >= acked, "{ctx}: acknowledged transactions lost: {} of {acked} visible", model.len());
    check_model(&s, &model, false, ctx);
}

/// A directory sync that fails during a rotation leaves the new segment's name in the
/// directory but not durable; the storage reopened after it commits into that segment.
#[test]
fn reopen_after_a_failed_directory_sync_makes_the_new_segment_durable() {
    let disk = Faulty::sim();
    let s = Storage::create(&disk.dir, disk.opts()).unwrap();
    let mut model = Model::new();
    commit(&s, &mut model, txn(0, &[(1, W::S(100))]));
    disk.faults.eio_after(3, false); // the seal, its recorded length, the new file, then the directory
    let e = s.rotate().unwrap_err();
    assert!(e.to_string().contains("sync directory"), "{e}");
    drop(s);
    let s = disk.open("reopen");
    commit(&s, &mut model, txn(1, &[(1, W::S(10)), (2, W::E)]));
    drop(s);
    let attempted: Vec<Txn> = model.iter().map(|m| m.1.clone()).collect();
    let sim = disk.sim.as_ref().unwrap();
    for mode in crash_modes() {
        check_prefix(&sim.crash(mode), &attempted, 2, &format!("power cut ({mode:?})"));
    }
}

/// Bulk commits (`sync: false`) end without `Storage::sync` (the process exits). The
/// reopened storage keeps them; a commit on top must not claim they are durable when
/// they are not: a power cut during its sync must leave a storage that opens.
#[test]
fn reopen_after_unsynced_commits_then_crash_during_the_next_commit() {
    let sim = SimVfs::new();
    let bulk = Options { sync: false, ..sim_opts(&sim, 0) };
    let s = Storage::create(Path::new(SIM_DIR), bulk.clone()).unwrap();
    let mut attempted = Vec::new();
    for i in 0..6 {
        let t = txn(i, &[(i as u64 % 3, W::S(700)), (10 + i as u64, W::E)]);
        stage(&s, &t).commit().unwrap();
        attempted.push(t);
    }
    drop(s);
    let s = Storage::open(Path::new(SIM_DIR), sim_opts(&sim, 0)).unwrap();
    assert_eq!(visible(&s, "").len(), 6, "the reopened storage keeps the bulk commits");
    sim.crash_at_sync(0);
    let t = txn(6, &[(1, W::S(2000)), (20, W::S(5))]);
    assert!(stage(&s, &t).commit().is_err(), "crashes at its sync");
    attempted.push(t);
    // Many torn images: the failure needs the new commit's sectors to land and some of the
    // bulk commits' not.
    let torn = (1..=256u64).map(|i| CrashMode::Torn(i.wrapping_mul(0x2545_f491_4f6c_dd1d)));
    for mode in [CrashMode::DurableOnly, CrashMode::AllWritten].into_iter().chain(torn) {
        check_prefix(&sim.crash(mode), &attempted, 0, &format!("crash during the commit after reopen ({mode:?})"));
    }
}

/// Bulk commits, then a rotation whose seal is written but not synced (its sync fails).
/// The reopened storage finishes the rotation: the sealed segment becomes a past segment
/// (never truncated again), so it must be durable before the chain goes on without it.
#[test]
fn reopen_after_an_unsynced_seal_makes_the_sealed_segment_durable() {
    let disk = Faulty::sim();
    let bulk = Options { sync: false, ..disk.opts() };
    let s = Storage::create(&disk.dir, bulk).unwrap();
    let mut attempted = Vec::new();
    for i in 0..6 {
        let t = txn(i, &[(i as u64 % 3, W::S(700)), (10 + i as u64, W::E)]);
        stage(&s, &t).commit().unwrap();
        attempted.push(t);
    }
    disk.faults.eio_after(0, false);
    assert!(s.rotate().is_err());
    drop(s);
    let s = disk.open("reopen");
    let t = txn(6, &[(1, W::S(20)), (20, W::S(5))]);
    stage(&s, &t).commit().unwrap();
    attempted.push(t);
    drop(s);
    let sim = disk.sim.as_ref().unwrap();
    for mode in crash_modes() {
        check_prefix(&sim.crash(mode), &attempted, 7, &format!("power cut ({mode:?})"));
    }
}
