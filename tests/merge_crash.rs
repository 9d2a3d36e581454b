//! Crash and fault tests of merges (TARGETS.md R5 for merge; R6 for a disk that fills or
//! fails during a merge).
//!
//! - `crash_at_every_sync_point_of_*`: a storage with several past segments (history,
//!   deletions of objects an older segment holds, objects created and deleted inside the
//!   merged range, empty objects, an empty segment, a transaction that ends up without
//!   records) is built on the simulated disk; then a scenario of merges (with commits and
//!   rotations before and after, or commits running while a background merge runs) is
//!   cut at every sync point, and the disk a power cut leaves (durable only, all written,
//!   torn sectors) is opened. It must show exactly the state before the interrupted step
//!   or exactly the state after it (for a merge: the old chain with all its history, or
//!   the merged chain), never a mix; every acknowledged commit; a chain whose files are
//!   where they belong (inputs archived only once replaced, no merge result outside the
//!   chain). A read-only open of the image reads the same, `check` finds nothing, a
//!   second open repairs nothing, and the storage takes commits and merges again.
//! - `enospc_*` / `eio_*`: a failing write or sync under a merge (a wrapper `Vfs`): the
//!   merge fails with a clear error, the storage reads the old chain and takes commits, a
//!   later merge succeeds, and reopens show one state or the other.
//!
//! Every transaction writes values that name it (`txn7/oid3/...`); a visible state is
//! compared with a model: the exact transactions, in order, with exactly their records.
//! A merge of the model keeps, of the records in the merged range, each oid's newest,
//! and drops a deletion (with the object's other records in the range) unless an older
//! segment holds the oid; transactions left without records go, except the newest of the
//! range (it keeps the last tid). An append merge of a source segment into the next one
//! is a merge of the source's range alone; as of the target's end it also drops the
//! source's records of oids the target holds.
//!
//! `cargo test --test merge_crash -- --nocapture` prints what the crash images showed.

mod common;
use common::fault::Faulty;
use common::model::{check_chain, dump, Expected, Queries};
use common::workload::*;
use filestorage2::merge::{choose, MergeReport, Policy, Strategy};
use filestorage2::vfs::{CrashMode, SimVfs, Vfs};
use filestorage2::{AsOf, Error, Oid, Options, SegmentName, SegmentState, Storage, Tid};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// The model: transactions whose values name them, and what every read must answer.

/// The model after a merge of the segments holding the transactions with
/// `lo <= tid <= hi` (the segments older than the merge hold exactly the tids below `lo`).
/// `superseded_until`: an append merge as of the target's end, whose last tid this is:
/// the range's records of oids written in `(hi, superseded_until]` go.
fn merge_model(m: &Model, lo: Tid, hi: Tid, superseded_until: Option<Tid>) -> Model {
    let inside = |t: Tid| lo <= t && t <= hi;
    let superseded = |oid: &u64| {
        superseded_until.is_some_and(|u| m.iter().any(|(t, x)| hi < *t && *t <= u && x.writes.contains_key(oid)))
    };
    // Per oid, the tid of its newest record in the range, if that record stays.
    let mut newest: BTreeMap<u64, (Tid, bool)> = BTreeMap::new();
    for (t, x) in m.iter().filter(|(t, _)| inside(*t)) {
        for (oid, d) in &x.writes {
            newest.insert(*oid, (*t, d.is_none()));
        }
    }
    let older = |oid: u64| m.iter().any(|(t, x)| *t < lo && x.writes.contains_key(&oid));
    let keep: BTreeMap<u64, Tid> = newest
        .into_iter()
        .filter(|(oid, (_, del))| (!del || older(*oid)) && !superseded(oid))
        .map(|(o, (t, _))| (o, t))
        .collect();
    let mut out = Model::new();
    for (t, x) in m {
        if !inside(*t) {
            out.push((*t, x.clone()));
            continue;
        }
        let writes: Writes =
            x.writes.iter().filter(|(o, _)| keep.get(o) == Some(t)).map(|(o, d)| (*o, d.clone())).collect();
        if !writes.is_empty() || *t == hi {
            out.push((*t, Txn { writes, ..x.clone() }));
        }
    }
    out
}

/// The storage holds exactly `model` (asked at every tid and just before each), and
/// every read succeeds.
fn check_model(s: &Storage, model: &Model, ctx: &str) {
    common::model::check_model(s, model, true, ctx)
}

/// The questions of `check_model`.
fn queries(model: &Model) -> Queries {
    common::model::queries(model, true)
}

// ---------------------------------------------------------------------------------------
// The storage to merge, and the scenarios.

fn sim_opts(v: &SimVfs) -> Options {
    // Small preallocation chunks: zero tails get crash coverage without big images.
    Options { vfs: Arc::new(v.clone()), alignment: 4096, rotate_size: 0, preallocate: 8192, ..Default::default() }
}

fn dir() -> PathBuf {
    PathBuf::from(SIM_DIR)
}

fn seg(n: u64) -> SegmentName {
    SegmentName::single(n)
}

/// Six past segments and an active one:
///
/// - seg 1: the first revisions of oids 1-6 (4 empty);
/// - seg 2: oid 2 deleted (seg 1 holds it), oid 7 created, a transaction (`txn3`) whose
///   records are all superseded by the end of seg 4;
/// - seg 3: oid 7 deleted (nothing before seg 2 holds it), oid 3 deleted, 9 empty;
/// - seg 4: oid 3 back, new revisions of 1 and 8, oid 10 created;
/// - seg 5: empty (two rotations in a row);
/// - seg 6: oid 10 deleted, 4 no longer empty, a record longer than the alignment;
/// - seg 7 (active): one transaction.
fn build(s: &Storage) -> Model {
    use W::*;
    let mut m = Model::new();
    commit(s, &mut m, txn(0, &[(1, S(10)), (2, S(1500)), (3, S(30)), (4, E), (5, S(40))]));
    commit(s, &mut m, txn(1, &[(1, S(2500)), (6, S(5))]));
    s.rotate().unwrap();
    commit(s, &mut m, txn(2, &[(1, S(60)), (2, D), (7, S(70))]));
    commit(s, &mut m, txn(3, &[(7, S(3000)), (8, S(90))]));
    s.rotate().unwrap();
    commit(s, &mut m, txn(4, &[(7, D), (8, S(100))]));
    commit(s, &mut m, txn(5, &[(3, D), (9, E)]));
    s.rotate().unwrap();
    commit(s, &mut m, txn(6, &[(8, S(1100)), (1, S(120))]));
    commit(s, &mut m, txn(7, &[(10, S(130)), (3, S(140))]));
    s.rotate().unwrap();
    s.rotate().unwrap();
    commit(s, &mut m, txn(8, &[(10, D), (4, S(5))]));
    commit(s, &mut m, txn(9, &[(11, S(5000)), (5, S(2))]));
    s.rotate().unwrap();
    commit(s, &mut m, txn(10, &[(1, S(7)), (12, E)]));
    m
}

#[derive(Clone)]
enum Step {
    Commit(Txn),
    Rotate,
    Merge(Policy),
    /// An append merge of a segment (the source) into the next one (the target).
    Append(SegmentName, SegmentName, AsOf),
    /// A background merge while this thread commits these transactions.
    MergeWhile(Policy, Vec<Txn>),
}

/// A merge about to run: its inputs, output and the tid range it merges.
#[derive(Clone, Debug)]
struct Planned {
    inputs: Vec<SegmentName>,
    output: SegmentName,
    /// First and last tid of the merged transactions (`None`: the inputs hold none).
    range: Option<(Tid, Tid)>,
    chain_before: Vec<SegmentName>,
    strategy: Strategy,
    /// Append merge: the target's last tid.
    target_last: Option<Tid>,
}

impl Planned {
    fn chain_after(&self) -> Vec<SegmentName> {
        let mut c = Vec::new();
        for n in &self.chain_before {
            if *n == self.inputs[0] {
                c.push(self.output);
            } else if !self.inputs.contains(n) || *n == self.output {
                c.push(*n);
            }
        }
        c.dedup();
        c
    }
    fn apply(&self, m: &Model) -> Model {
        let until = match self.strategy {
            Strategy::Append(AsOf::Target) => self.target_last,
            _ => None,
        };
        match self.range {
            Some((lo, hi)) => merge_model(m, lo, hi, until),
            None => m.clone(),
        }
    }
}

fn plan(s: &Storage, policy: &Policy) -> Planned {
    let stats = s.past_segment_stats().unwrap();
    let range = choose(&stats, policy).unwrap().expect("the scenario's merges have something to merge");
    let inputs: Vec<SegmentName> = stats[range].iter().map(|x| x.name).collect();
    let segs = s.segments().unwrap();
    let of = |f: fn(&filestorage2::SegmentInfo) -> Option<Tid>| {
        segs.iter().filter(|g| inputs.contains(&g.name)).filter_map(f).collect::<Vec<_>>()
    };
    let (firsts, lasts) = (of(|g| g.first_tid), of(|g| g.last_tid));
    let range = firsts.iter().min().map(|lo| (*lo, *lasts.iter().max().unwrap()));
    let output = SegmentName { first: inputs[0].first, last: inputs[inputs.len() - 1].last };
    let chain_before = segs.iter().map(|g| g.name).collect();
    Planned { inputs, output, range, chain_before, strategy: Strategy::Copy, target_last: None }
}

/// An append merge of `source` into `target` about to run.
fn plan_append(s: &Storage, source: SegmentName, target: SegmentName, as_of: AsOf) -> Planned {
    let mut p = plan(s, &Policy::Named(vec![source, target]));
    let segs = s.segments().unwrap();
    let of = |n: SegmentName| segs.iter().find(|g| g.name == n).unwrap().clone();
    let src = of(source);
    p.range = src.first_tid.map(|lo| (lo, src.last_tid.unwrap()));
    p.output = target;
    p.strategy = Strategy::Append(as_of);
    p.target_last = of(target).last_tid;
    p
}
fn check_report(r: &MergeReport, p: &Planned) {
    assert_eq!(r.inputs, p.inputs, "the merge took the planned inputs");
    assert_eq!(r.output, p.output);
}

/// What the step that stopped a run may have left: one state or the other.
#[derive(Clone, Debug)]
enum Pending {
    /// Nothing: the run finished, or its last merge crashed while archiving its inputs
    /// (after the switch: that merge reports success).
    None,
    /// A rotation that failed: recovery may finish it.
    Rotate,
    /// A commit that failed: it may be visible, whole.
    Commit(Txn),
    /// A merge that failed (or is unknown): the old chain or the merged one. With the
    /// transactions committed meanwhile that may be visible (a prefix holding the
    /// acknowledged ones).
    Merge(Planned, Vec<Txn>, usize),
}

struct Run {
    /// The model after the steps that finished.
    model: Model,
    /// The chain after the steps that finished.
    chain: Vec<SegmentName>,
    pending: Pending,
    finished: bool,
    /// Merges that finished (their outputs were in the chain).
    merged: Vec<Planned>,
}

fn run_steps(s: &Storage, built: &Model, steps: &[Step]) -> Run {
    let chain0 = s.segments().unwrap().iter().map(|g| g.name).collect();
    let mut r =
        Run { model: built.clone(), chain: chain0, pending: Pending::None, finished: false, merged: Vec::new() };
    for step in steps {
        match step {
            Step::Commit(t) => match stage(s, t).commit() {
                Ok(tid) => r.model.push((tid, t.clone())),
                Err(_) => {
                    r.pending = Pending::Commit(t.clone());
                    return r;
                }
            },
            Step::Rotate => {
                if s.rotate().is_err() {
                    r.pending = Pending::Rotate;
                    return r;
                }
            }
            Step::Merge(_) | Step::Append(..) => {
                let (p, policy, strategy) = match step {
                    Step::Merge(policy) => (plan(s, policy), policy.clone(), Strategy::Copy),
                    Step::Append(from, to, as_of) => {
                        (plan_append(s, *from, *to, *as_of), Policy::Named(vec![*from, *to]), Strategy::Append(*as_of))
                    }
                    _ => unreachable!(),
                };
                match s.merge_with(&policy, strategy) {
                    Ok(Some(rep)) => {
                        check_report(&rep, &p);
                        r.model = p.apply(&r.model);
                        r.merged.push(p);
                    }
                    Ok(None) => panic!("merge {policy:?}: nothing merged"),
                    Err(_) => {
                        r.pending = Pending::Merge(p, Vec::new(), 0);
                        return r;
                    }
                }
            }
            Step::MergeWhile(policy, txns) => {
                let p = plan(s, policy);
                let h = match s.start_merge(policy) {
                    Ok(h) => h.expect("something to merge"),
                    Err(_) => {
                        r.pending = Pending::Merge(p, Vec::new(), 0);
                        return r;
                    }
                };
                let mut acked = Vec::new();
                for t in txns {
                    match stage(s, t).commit() {
                        Ok(tid) => acked.push((tid, t.clone())),
                        Err(_) => break,
                    }
                }
                let res = h.wait();
                if let (Ok(rep), true) = (&res, acked.len() == txns.len()) {
                    check_report(rep, &p);
                    r.model = p.apply(&r.model);
                    r.model.extend(acked);
                    r.merged.push(p);
                } else {
                    // The commits went into the active segment: the merge does not
                    // change them, whichever chain survives.
                    let n = acked.len();
                    r.pending = Pending::Merge(p, txns.clone(), n);
                    return r;
                }
            }
        }
        r.chain = s.segments().unwrap().iter().map(|g| g.name).collect();
    }
    r.finished = true;
    r
}

/// Scenario: a named run in the middle (the successor is a past segment, an empty one).
fn scenario_middle() -> Vec<Step> {
    vec![Step::Merge(Policy::Named(vec![seg(2), seg(3), seg(4)]))]
}

/// Scenario: every past segment (deletions of everything older are dropped).
fn scenario_all() -> Vec<Step> {
    vec![Step::Merge(Policy::All)]
}

/// Scenario: commits before and after merges; the active segment is the successor; a
/// merged segment is merged again.
fn scenario_commits() -> Vec<Step> {
    use W::*;
    vec![
        Step::Commit(txn(20, &[(1, S(20)), (13, S(3))])),
        Step::Merge(Policy::Named(vec![seg(6), seg(5)])),
        Step::Commit(txn(21, &[(4, D), (14, E)])),
        Step::Rotate,
        Step::Commit(txn(22, &[(2, S(2)), (13, D)])),
        Step::Merge(Policy::KeepAtMost(2)),
        Step::Commit(txn(23, &[(3, S(1)), (15, S(1800))])),
        Step::Merge(Policy::All),
        Step::Commit(txn(24, &[(1, D)])),
    ]
}

/// Scenario: append merges, as of the source's end and of the target's, a second region
/// appended to the same target, a copy merge of a segment with appended regions, an
/// append into the result that reaches the oldest segment.
fn scenario_append() -> Vec<Step> {
    use W::*;
    vec![
        Step::Append(seg(3), seg(4), AsOf::Source),
        Step::Commit(txn(40, &[(3, S(40)), (19, E)])),
        Step::Append(seg(2), seg(4), AsOf::Target),
        Step::Merge(Policy::Named(vec![seg(4), seg(5)])),
        Step::Append(seg(1), SegmentName { first: 4, last: 5 }, AsOf::Source),
    ]
}

/// Scenario: commits while a background merge runs.
fn scenario_concurrent() -> Vec<Step> {
    use W::*;
    let during = vec![txn(30, &[(1, S(30)), (16, S(16))]), txn(31, &[(2, S(31)), (16, D)]), txn(32, &[(17, E)])];
    vec![Step::MergeWhile(Policy::All, during), Step::Commit(txn(33, &[(18, S(18))]))]
}

/// How the crash images of a scenario fared.
#[derive(Default, Debug)]
struct Tally {
    sync_points: u64,
    images: u64,
    old_chain: u64,
    new_chain: u64,
    unacked_commit_visible: u64,
    /// Crashes after a merge switched the chain, while it archived its inputs.
    archiving_interrupted: u64,
    repaired: u64,
}

/// The chain and state a crash image opened to must be one of the candidates; returns
/// the model it holds.
fn recovered(s: &Storage, r: &Run, ctx: &str, tally: &mut Tally) -> Model {
    let txns = visible(s, ctx);
    let chain = s.segments().unwrap().iter().map(|g| g.name).collect::<Vec<_>>();
    // The transactions of `t` after the `model`, as many as are visible (at least `acked`).
    let mut plus = |model: &Model, extra: &[Txn], acked: usize| -> Model {
        let mut m = model.clone();
        let more = txns.len().checked_sub(model.len()).unwrap_or_else(|| panic!("{ctx}: transactions lost"));
        assert!(
            more >= acked && more <= extra.len(),
            "{ctx}: {more} of {} commits visible, {acked} acked",
            extra.len()
        );
        for (rec, t) in txns[model.len()..].iter().zip(extra) {
            assert_eq!(record_v(rec), model_v(rec.tid, t), "{ctx}: a commit is partly visible or not the next");
            m.push((rec.tid, t.clone()));
        }
        if more > acked {
            tally.unacked_commit_visible += 1;
        }
        m
    };
    let m = match &r.pending {
        Pending::None => {
            assert_eq!(chain, r.chain, "{ctx}: the chain");
            assert!(!r.merged.is_empty(), "{ctx}: only a merge reports success after a crash");
            tally.archiving_interrupted += 1;
            r.model.clone()
        }
        Pending::Rotate => {
            let n = r.chain.len();
            assert!(chain.len() == n || chain.len() == n + 1, "{ctx}: chain {chain:?}");
            assert_eq!(chain[..n], r.chain[..], "{ctx}: the chain before the rotation");
            r.model.clone()
        }
        Pending::Commit(t) => plus(&r.model, std::slice::from_ref(t), 0),
        Pending::Merge(p, during, acked) => {
            let (base, want_chain) = if chain == p.chain_after() {
                tally.new_chain += 1;
                (p.apply(&r.model), p.chain_after())
            } else {
                tally.old_chain += 1;
                (r.model.clone(), p.chain_before.clone())
            };
            assert_eq!(chain, want_chain, "{ctx}: the chain is the old one or the merged one, never a mix");
            plus(&base, during, *acked)
        }
    };
    // Time travel to the tids a merge dropped too.
    let (a, b) = (queries(&r.model), queries(&m));
    let mut tids = [a.tids, b.tids].concat();
    tids.sort();
    tids.dedup();
    let q = Queries { oids: if a.oids.len() > b.oids.len() { a.oids } else { b.oids }, tids, light: false };
    Expected::asking(&m, q).check(s, ctx);
    m
}

/// The files of the storage directory are where the chain says: no merge result outside
/// the chain, no unfinished file, every replaced input in the archive.
fn check_files(v: &SimVfs, chain: &[SegmentName], merged: &[&Planned], ctx: &str) {
    let mut names = v.list(Path::new(SIM_DIR)).unwrap();
    names.retain(|n| n.contains(".fs2") && !n.contains(".dropped-"));
    names.sort();
    let mut want: Vec<String> = chain.iter().map(|n| n.file_name()).collect();
    want.sort();
    assert_eq!(names, want, "{ctx}: the segment files in the directory are the chain's");
    for p in merged.iter().filter(|p| chain.contains(&p.output)) {
        for n in p.inputs.iter().filter(|n| !chain.contains(n)) {
            assert!(v.exists(&dir().join("archive").join(n.file_name())), "{ctx}: {n} is archived");
        }
    }
}

/// Run `steps` on a copy of `built` once per sync point, crashing there, and check every
/// crash image in every mode.
fn crash_sweep(name: &str, steps: &[Step]) -> Tally {
    let t0 = Instant::now();
    let base = SimVfs::new();
    let s = Storage::create(&dir(), sim_opts(&base)).unwrap();
    let built = build(&s);
    drop(s);
    let mut tally = Tally::default();
    for k in 0.. {
        let sim = base.crash(CrashMode::DurableOnly);
        let s = Storage::open(&dir(), sim_opts(&sim)).unwrap();
        assert!(s.open_warnings().is_empty());
        sim.crash_at_sync(k);
        let mut r = run_steps(&s, &built, steps);
        drop(s);
        tally.sync_points = k + 1;
        // A merge whose archiving failed reports success: did the disk crash?
        let crashed = sim.list(&dir()).is_err();
        r.finished &= !crashed;
        if !crashed {
            assert!(r.finished, "{name}: a step failed at sync {k} without a crash");
            // The last run went through without reaching its crash point: check it too.
            let merged: Vec<&Planned> = r.merged.iter().collect();
            let s = Storage::open(&dir(), sim_opts(&sim.crash(CrashMode::DurableOnly))).unwrap();
            assert!(s.open_warnings().is_empty(), "{name}: {:?}", s.open_warnings());
            check_model(&s, &r.model, &format!("{name}: finished"));
            let chain = check_chain(&s, r.model.len(), name);
            check_files(&sim, &chain, &merged, name);
            break;
        }
        for mode in crash_modes() {
            let img = sim.crash(mode);
            check_image(&img, &r, &format!("{name}: crash at sync {k} ({mode:?})"), &mut tally);
        }
    }
    eprintln!("{name}: {tally:?}; {:.1} s", t0.elapsed().as_secs_f64());
    tally
}

fn check_image(img: &SimVfs, r: &Run, ctx: &str, tally: &mut Tally) {
    tally.images += 1;
    // A read-only open repairs nothing and reads the same as the writer after recovery.
    let ro = Storage::open(&dir(), Options { read_only: true, ..sim_opts(img) })
        .unwrap_or_else(|e| panic!("{ctx}: read-only open: {e}"));
    let s = Storage::open(&dir(), sim_opts(img)).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
    tally.repaired += !s.open_warnings().is_empty() as u64;
    let mut model = recovered(&s, r, ctx, tally);
    let q = queries(&model);
    let first = format!("{:?}", dump(&s, &q));
    assert_eq!(format!("{:?}", dump(&ro, &q)), first, "{ctx}: the read-only open reads the same");
    drop(ro);
    let chain = check_chain(&s, model.len(), ctx);
    for g in s.segments().unwrap().iter().filter(|g| g.state == SegmentState::Past) {
        let len = img.open(&g.path, false).unwrap().len().unwrap();
        assert_eq!(len, g.bytes, "{ctx}: {} ends where it is sealed (an unfinished append is cut off)", g.name);
    }
    let mut merged: Vec<&Planned> = r.merged.iter().collect();
    if let Pending::Merge(p, ..) = &r.pending {
        merged.push(p);
    }
    check_files(img, &chain, &merged, ctx);
    drop(s);
    let report = filestorage2::check::check(&dir(), false, sim_opts(img), &mut |_, _| {}).unwrap();
    assert!(report.ok(), "{ctx}: check: {:?}", report.problems);
    // A second open repairs nothing and reads the same.
    let s = Storage::open(&dir(), sim_opts(img)).unwrap_or_else(|e| panic!("{ctx}: second open: {e}"));
    assert!(s.open_warnings().is_empty(), "{ctx}: second open repaired again: {:?}", s.open_warnings());
    assert_eq!(format!("{:?}", dump(&s, &q)), first, "{ctx}: second open");
    // Writable: a commit, a rotation and a merge of everything, which survive a power cut.
    commit(&s, &mut model, txn(99, &[(1, W::S(3)), (50, W::E), (2, W::D)]));
    s.rotate().unwrap_or_else(|e| panic!("{ctx}: rotate after recovery: {e}"));
    let p = plan(&s, &Policy::All);
    let rep = s.merge(&Policy::All).unwrap_or_else(|e| panic!("{ctx}: merge after recovery: {e}"));
    check_report(&rep.expect("a merge"), &p);
    let model = p.apply(&model);
    check_model(&s, &model, ctx);
    drop(s);
    let after = img.crash(CrashMode::DurableOnly);
    let s = Storage::open(&dir(), sim_opts(&after)).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    assert!(s.open_warnings().is_empty(), "{ctx}: open after the merge: {:?}", s.open_warnings());
    check_model(&s, &model, &format!("{ctx}, then a commit and a merge"));
    check_chain(&s, model.len(), ctx);
}

#[test]
fn crash_at_every_sync_point_of_a_merge_of_a_middle_run() {
    let t = crash_sweep("middle run", &scenario_middle());
    assert!(t.old_chain > 0 && t.new_chain > 0, "both outcomes happen: {t:?}");
}

#[test]
fn crash_at_every_sync_point_of_a_merge_of_all_past_segments() {
    let t = crash_sweep("all past segments", &scenario_all());
    assert!(t.old_chain > 0 && t.new_chain > 0, "both outcomes happen: {t:?}");
}

#[test]
fn crash_at_every_sync_point_of_merges_between_commits() {
    let t = crash_sweep("merges between commits", &scenario_commits());
    assert!(t.old_chain > 0 && t.new_chain > 0 && t.unacked_commit_visible > 0, "every outcome happens: {t:?}");
}

#[test]
fn crash_at_every_sync_point_of_append_merges() {
    let t = crash_sweep("append merges", &scenario_append());
    assert!(t.old_chain > 0 && t.new_chain > 0 && t.repaired > 0, "every outcome happens: {t:?}");
}

#[test]
fn crash_at_every_sync_point_of_a_merge_with_concurrent_commits() {
    let t = crash_sweep("merge with concurrent commits", &scenario_concurrent());
    assert!(t.old_chain > 0 && t.new_chain > 0, "both outcomes happen: {t:?}");
}

/// Recovery finishes or undoes an interrupted merge (removes a result never put in the
/// chain, archives inputs already replaced); a crash at every sync point of that recovery
/// leaves a disk that opens to what an uninterrupted recovery shows.
#[test]
fn crash_at_every_sync_point_of_the_recovery_of_a_crashed_merge() {
    let t0 = Instant::now();
    let base = SimVfs::new();
    let s = Storage::create(&dir(), sim_opts(&base)).unwrap();
    let built = build(&s);
    drop(s);
    let (mut images, mut cases) = (0, 0);
    for steps in [scenario_middle(), scenario_all(), scenario_append()] {
        for k in 0.. {
            let sim = base.crash(CrashMode::DurableOnly);
            let s = Storage::open(&dir(), sim_opts(&sim)).unwrap();
            sim.crash_at_sync(k);
            let r = run_steps(&s, &built, &steps);
            drop(s);
            if sim.list(&dir()).is_ok() {
                break;
            }
            let q = queries(&r.model);
            for mode in [CrashMode::DurableOnly, CrashMode::AllWritten] {
                let img = sim.crash(mode);
                let ctx = format!("crash at sync {k} ({mode:?})");
                // What recovery without a crash shows, and its sync points.
                let clean = img.crash(CrashMode::DurableOnly);
                let s = Storage::open(&dir(), sim_opts(&clean)).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
                let syncs = clean.syncs();
                let want = (format!("{:?}", dump(&s, &q)), check_chain(&s, visible(&s, &ctx).len(), &ctx));
                drop(s);
                images += 1;
                for j in 0..syncs {
                    let again = img.crash(CrashMode::DurableOnly);
                    again.crash_at_sync(j);
                    assert!(Storage::open(&dir(), sim_opts(&again)).is_err(), "{ctx}: recovery crashes at sync {j}");
                    for mode2 in [CrashMode::DurableOnly, CrashMode::AllWritten, CrashMode::Torn(7)] {
                        let ctx = format!("{ctx}, recovery crashed at sync {j} ({mode2:?})");
                        let img2 = again.crash(mode2);
                        let s = Storage::open(&dir(), sim_opts(&img2)).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
                        let got = (format!("{:?}", dump(&s, &q)), check_chain(&s, visible(&s, &ctx).len(), &ctx));
                        assert!(got == want, "{ctx}: differs from an uninterrupted recovery");
                        drop(s);
                        let s = Storage::open(&dir(), sim_opts(&img2)).unwrap();
                        assert!(s.open_warnings().is_empty(), "{ctx}: second open: {:?}", s.open_warnings());
                        cases += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "recovery of crashed merges: {images} crash images, {cases} crashes during their recovery; {:?}",
        t0.elapsed()
    );
    assert!(cases > 0);
}

/// The merges of the scenarios merge what the test says (the model is not vacuous).
#[test]
fn the_scenario_merges_drop_what_they_should() {
    let sim = SimVfs::new();
    let s = Storage::create(&dir(), sim_opts(&sim)).unwrap();
    let built = build(&s);
    let p = plan(&s, &Policy::Named(vec![seg(2), seg(3), seg(4)]));
    let m = p.apply(&built);
    let descs = |m: &Model| m.iter().map(|(_, t)| String::from_utf8(t.desc.clone()).unwrap()).collect::<Vec<_>>();
    assert!(!descs(&m).contains(&"txn3".to_string()), "txn3 ends up without records");
    let rep = s.merge(&Policy::Named(vec![seg(4), seg(2), seg(3)])).unwrap().unwrap();
    check_report(&rep, &p);
    assert_eq!(rep.counts.deletions_dropped, 1, "oid 7's deletion (oid 2's stays: seg 1 holds it)");
    check_model(&s, &m, "after the merge");
    assert_eq!(s.load(Oid(2)).unwrap(), None);
    assert!(s.history(Oid(2)).unwrap()[0].deleted, "the deletion of oid 2 is kept");
    assert!(s.history(Oid(7)).unwrap().is_empty(), "oid 7 is gone");
    let all = plan(&s, &Policy::All);
    s.merge(&Policy::All).unwrap().unwrap();
    let m = all.apply(&m);
    check_model(&s, &m, "after merging all");
    assert!(s.history(Oid(2)).unwrap().is_empty(), "oid 2 is gone with its deletion");
    assert!(s.history(Oid(10)).unwrap().is_empty(), "oid 10 is gone with its deletion");
    assert_eq!(s.history(Oid(3)).unwrap().len(), 1, "oid 3: only its revision after the deletion");
}

// ---------------------------------------------------------------------------------------
// A disk that fills or fails during a merge.

/// On the simulated disk: the state survives a power cut now.
fn check_durable(disk: &Faulty, model: &Model, ctx: &str) {
    if let Some(s) = disk.after_power_cut(ctx) {
        check_model(&s, model, &format!("{ctx}, after a power cut"));
    }
}

/// An I/O error keeping the OS error number, whose message names a file.
fn assert_os_error(e: &Error, errno: i32, ctx: &str) {
    assert!(matches!(e, Error::Io { .. }), "{ctx}: an I/O error, got {e:?}");
    assert_eq!(e.raw_os_error(), Some(errno), "{ctx}: the OS error number is kept: {e:?}");
    let msg = e.to_string();
    assert!(msg.contains("seg-0000") || msg.contains("directory"), "{ctx}: the message names the file: {msg}");
}

/// The disk fills at the n-th write of a merge, for every n until the merge succeeds.
fn enospc_scenario(disk: Faulty) {
    let s = Storage::create(&disk.dir, disk.opts()).unwrap();
    let mut model = build(&s);
    // Large enough for the merge to write in several buffered pieces.
    let mut label = 40;
    for round in 0..3u64 {
        let ws: Vec<(u64, W)> = (0..40).map(|i| (100 + round * 40 + i, W::S(30_000))).collect();
        commit(&s, &mut model, txn(label, &ws));
        label += 1;
        s.rotate().unwrap();
    }
    let files = disk.files();
    let mut failures = 0;
    for n in 0.. {
        let ctx = format!("disk full at write {n} of a merge");
        let p = plan(&s, &Policy::All);
        disk.faults.disk_full_after(n);
        let r = s.merge(&Policy::All);
        disk.faults.space_returns();
        match r {
            Err(e) => {
                failures += 1;
                assert_os_error(&e, 28, &ctx);
                assert!(s.merge_progress().is_none(), "{ctx}: the failed merge is over");
                // The old chain, all of it, and nothing left behind that holds space.
                check_model(&s, &model, &ctx);
                assert_eq!(check_chain(&s, model.len(), &ctx), p.chain_before, "{ctx}");
                let left = disk.files();
                let extra: Vec<&String> = left.iter().filter(|f| !files.contains(f)).collect();
                assert!(
                    extra.iter().all(|f| **f == p.output.file_name()),
                    "{ctx}: an unfinished merge file is left: {extra:?}"
                );
                // Writes go on.
                commit(&s, &mut model, txn(label, &[(1, W::S(n as usize)), (60 + n as u64, W::E)]));
                label += 1;
                check_model(&s, &model, &ctx);
            }
            Ok(rep) => {
                let rep = rep.expect("a merge");
                check_report(&rep, &p);
                model = p.apply(&model);
                check_model(&s, &model, &ctx);
                break;
            }
        }
    }
    assert!(failures >= 3, "the merge wrote in several pieces: {failures} failures");
    commit(&s, &mut model, txn(label, &[(2, W::S(9))]));
    drop(s);
    let s = disk.open("the end");
    assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
    check_model(&s, &model, "the end");
    check_chain(&s, model.len(), "the end");
    drop(s);
    disk.check("the end");
    check_durable(&disk, &model, "the end");
}

#[test]
fn enospc_during_a_merge_fails_cleanly_and_a_later_merge_succeeds_real_files() {
    enospc_scenario(Faulty::real());
}

#[test]
fn enospc_during_a_merge_fails_cleanly_and_a_later_merge_succeeds_simulated() {
    enospc_scenario(Faulty::sim());
}

/// The n-th sync of a merge fails (EIO), for every n until the merge goes through: the
/// merge fails (or, once the chain is switched, only logs that it could not archive), the
/// storage reads on and takes commits, and a retry (in the same process, or after a
/// reopen that shows the old chain or the merged one) succeeds.
fn eio_scenario(make: fn() -> Faulty) {
    let policy = Policy::Named(vec![seg(2), seg(3), seg(4)]);
    let (mut failed, mut logged) = (0, 0);
    for n in 0.. {
        let ctx = format!("EIO at sync {n} of a merge");
        let disk = make();
        let s = Storage::create(&disk.dir, disk.opts()).unwrap();
        let mut model = build(&s);
        let p = plan(&s, &policy);
        disk.faults.eio_after(n, false);
        let r = s.merge(&policy);
        let fired = disk.faults.eio_fired();
        disk.faults.heal();
        let s = match r {
            Err(e) => {
                failed += 1;
                assert!(fired, "{ctx}: the merge failed without a fault: {e}");
                assert_os_error(&e, 5, &ctx);
                assert!(s.merge_progress().is_none(), "{ctx}: the failed merge is over");
                check_model(&s, &model, &ctx);
                assert_eq!(check_chain(&s, model.len(), &ctx), p.chain_before, "{ctx}: the old chain");
                commit(&s, &mut model, txn(70, &[(1, W::S(1)), (70, W::E)]));
                check_model(&s, &model, &ctx);
                let s = if n % 2 == 1 {
                    // Reopen first: the old chain, or the merged one if the switch
                    // reached the file before its sync failed.
                    drop(s);
                    let s = disk.open(&ctx);
                    let chain = s.segments().unwrap().iter().map(|g| g.name).collect::<Vec<_>>();
                    if chain.contains(&p.output) {
                        assert_eq!(chain, p.chain_after(), "{ctx}: reopened");
                        model = p.apply(&model);
                        check_model(&s, &model, &format!("{ctx}, reopened: merged"));
                        s
                    } else {
                        assert_eq!(chain, p.chain_before, "{ctx}: reopened");
                        check_model(&s, &model, &format!("{ctx}, reopened: old chain"));
                        s
                    }
                } else {
                    s
                };
                if !s.segments().unwrap().iter().any(|g| g.name == p.output) {
                    let rep = s.merge(&policy).unwrap_or_else(|e| panic!("{ctx}: retry: {e}"));
                    check_report(&rep.expect("a merge"), &p);
                    model = p.apply(&model);
                }
                s
            }
            Ok(rep) => {
                check_report(&rep.expect("a merge"), &p);
                logged += fired as u64;
                model = p.apply(&model);
                s
            }
        };
        check_model(&s, &model, &ctx);
        drop(s);
        let s = disk.open(&ctx);
        check_model(&s, &model, &format!("{ctx}, reopened"));
        assert_eq!(check_chain(&s, model.len(), &ctx), p.chain_after(), "{ctx}: the merged chain");
        drop(s);
        let s = disk.open(&ctx);
        assert!(s.open_warnings().is_empty(), "{ctx}: second open: {:?}", s.open_warnings());
        drop(s);
        disk.check(&ctx);
        check_durable(&disk, &model, &ctx);
        let mut left = disk.files();
        left.retain(|f| !p.chain_after().iter().any(|n| n.file_name() == *f));
        assert!(left.is_empty(), "{ctx}: files left over: {left:?}");
        if !fired {
            break;
        }
    }
    eprintln!("EIO during a merge: {failed} failed merges, {logged} merges that logged an archiving failure");
    assert!(failed >= 3 && logged >= 6, "the output, directory and successor syncs, then 2 per archived input");
}

#[test]
fn eio_during_a_merge_fails_cleanly_and_a_retry_succeeds_real_files() {
    eio_scenario(Faulty::real);
}

#[test]
fn eio_during_a_merge_fails_cleanly_and_a_retry_succeeds_simulated() {
    eio_scenario(Faulty::sim);
}
