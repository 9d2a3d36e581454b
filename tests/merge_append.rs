//! Semi-sequential (append) merges on a real disk: a segment's retained records are
//! appended to the next segment, whose own records stay where they are. Both variants
//! (as of the source's end: time travel to it stays exact; as of the target's end: only
//! what is current there), runs folded into their newest segment, readers that mapped
//! the target before the append, copy merges and moves of segments with appended regions,
//! `check`, reopen, and the CLI. (Crashes at every sync point of append merges:
//! `merge_crash.rs`; random sequences: `model.rs`.)

use filestorage2::merge::{Policy, Strategy};
use filestorage2::{AsOf, Oid, Options, SegmentName, Storage, Tid};
use std::path::Path;
use std::process::Command;

fn commit(s: &Storage, writes: &[(u64, Option<&[u8]>)]) -> Tid {
    let mut t = s.begin();
    t.set_description(b"append test");
    for (oid, d) in writes {
        match d {
            Some(d) => t.store(Oid(*oid), d).unwrap(),
            None => t.delete(Oid(*oid)).unwrap(),
        }
    }
    t.commit().unwrap()
}

fn seg(n: u64) -> SegmentName {
    SegmentName::single(n)
}

fn names(s: &Storage) -> Vec<String> {
    s.segments().unwrap().iter().map(|g| g.name.to_string()).collect()
}

fn checked(dir: &Path) {
    let r = filestorage2::check::check(dir, false, Options::default(), &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
}

fn load_at(s: &Storage, oid: u64, at: Tid) -> Option<Vec<u8>> {
    s.load_at(Oid(oid), at).unwrap().map(|(_, d)| d)
}

fn tids(s: &Storage, oid: u64) -> Vec<Tid> {
    s.history(Oid(oid)).unwrap().iter().map(|r| r.tid).collect()
}

/// Three past segments and an active one:
/// - seg 1: oids 1, 2, 3 (t1); oid 1 again (t2);
/// - seg 2: oid 1 (t3), oid 2 deleted (t3), oid 4 created (t3); oid 4 again (t4);
/// - seg 3: oid 1 (t5), oid 5 (t5);
/// - seg 4 (active): oid 3 (t6).
struct Built {
    t: Vec<Tid>,
}

fn build(s: &Storage) -> Built {
    let t1 = commit(s, &[(1, Some(b"a1")), (2, Some(b"b1")), (3, Some(b"c1"))]);
    let t2 = commit(s, &[(1, Some(b"a2"))]);
    s.rotate().unwrap();
    let t3 = commit(s, &[(1, Some(b"a3")), (2, None), (4, Some(b"d3"))]);
    let t4 = commit(s, &[(4, Some(b"d4"))]);
    s.rotate().unwrap();
    let t5 = commit(s, &[(1, Some(b"a5")), (5, Some(b""))]);
    s.rotate().unwrap();
    let t6 = commit(s, &[(3, Some(b"c6"))]);
    Built { t: vec![Tid::ZERO, t1, t2, t3, t4, t5, t6] }
}

/// A storage on a real disk with `build`'s segments.
fn fresh() -> (tempfile::TempDir, Storage, Built) {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    let b = build(&s);
    (d, s, b)
}

/// Close `s`, `check` the storage, reopen it (nothing to repair) with the same state.
fn reopened(s: Storage, dir: &Path, b: &Built) -> Storage {
    drop(s);
    checked(dir);
    let s = Storage::open(dir, Options::default()).unwrap();
    assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
    current_state(&s, b);
    s
}

fn current_state(s: &Storage, b: &Built) {
    let t = &b.t;
    assert_eq!(s.load(Oid(1)).unwrap(), Some((t[5], b"a5".to_vec())));
    assert_eq!(s.load(Oid(2)).unwrap(), None);
    assert_eq!(s.load(Oid(3)).unwrap(), Some((t[6], b"c6".to_vec())));
    assert_eq!(s.load(Oid(4)).unwrap(), Some((t[4], b"d4".to_vec())));
    assert_eq!(s.load(Oid(5)).unwrap(), Some((t[5], Vec::new())));
    assert_eq!(s.last_tid(), t[6]);
}

#[test]
fn append_as_of_the_source_end_keeps_time_travel_to_it_exact() {
    let (d, s, b) = fresh();
    let t = &b.t;
    let r = s.merge_with(&Policy::Named(vec![seg(2), seg(3)]), Strategy::Append(AsOf::Source)).unwrap().unwrap();
    assert_eq!(r.output, seg(3));
    assert_eq!(r.counts.records_in, 4);
    assert_eq!(r.counts.records_out, 3, "oid 1 (a3), oid 2's deletion (seg 1 holds it), oid 4 (d4)");
    assert_eq!(names(&s), ["seg-000001", "seg-000003", "seg-000004"]);
    let check = |s: &Storage| {
        current_state(s, &b);
        // As of the end of seg 2 (t4): exact.
        assert_eq!(load_at(s, 1, t[4]), Some(b"a3".to_vec()));
        assert_eq!(load_at(s, 2, t[4]), None, "deleted at t3");
        assert_eq!(load_at(s, 4, t[4]), Some(b"d4".to_vec()));
        assert_eq!(load_at(s, 4, t[3]), None, "d3 was superseded inside seg 2: not retained");
        assert_eq!(load_at(s, 1, t[2]), Some(b"a2".to_vec()), "seg 1 untouched");
        assert_eq!(tids(s, 1), [t[5], t[3], t[2], t[1]]);
        assert_eq!(tids(s, 4), [t[4]]);
        assert!(s.history(Oid(2)).unwrap()[0].deleted);
        let txns: Vec<Tid> = s.transactions(Tid::ZERO, Tid::MAX).map(|x| x.unwrap().tid).collect();
        assert_eq!(txns, [t[1], t[2], t[3], t[4], t[5], t[6]], "in tid order across the appended region");
        let g = &s.segments().unwrap()[1];
        assert_eq!(g.appended.len(), 1);
        assert_eq!(g.appended[0].source, seg(2));
        assert_eq!(g.appended[0].as_of, AsOf::Source);
        assert_eq!((g.first_tid, g.last_tid), (Some(t[3]), Some(t[5])));
        assert_eq!(g.prev.as_deref(), Some("seg-000001.fs2"));
    };
    check(&s);
    assert_eq!(s.history_gaps().unwrap(), [(t[2], t[4], seg(3))], "states inside seg 2's range are not exact");
    assert!(d.path().join("archive/seg-000002.fs2").exists());
    let s = reopened(s, d.path(), &b);
    check(&s);
    let ro = Storage::open(d.path(), Options::read_only()).unwrap();
    check(&ro);
}

#[test]
fn append_as_of_the_target_end_drops_what_the_target_supersedes() {
    let (d, s, b) = fresh();
    let t = &b.t;
    let r = s.merge_with(&Policy::Named(vec![seg(2), seg(3)]), Strategy::Append(AsOf::Target)).unwrap().unwrap();
    assert_eq!(r.counts.records_out, 2, "oid 1 goes (seg 3 holds it); oid 2's deletion and oid 4 stay");
    current_state(&s, &b);
    assert_eq!(tids(&s, 1), [t[5], t[2], t[1]], "a3 is gone");
    assert_eq!(load_at(&s, 1, t[4]), Some(b"a2".to_vec()), "as of t4, the newest retained revision");
    assert_eq!(load_at(&s, 4, t[4]), Some(b"d4".to_vec()));
    assert_eq!(s.segments().unwrap()[1].appended[0].as_of, AsOf::Target);
    assert_eq!(s.history_gaps().unwrap(), [(t[2], t[5], seg(3))], "exact again from seg 3's end");
    reopened(s, d.path(), &b);
}

#[test]
fn a_run_folds_into_its_newest_segment_and_the_oldest_source_drops_dead_deletions() {
    let (d, s, b) = fresh();
    let t = &b.t;
    let r = s.merge_with(&Policy::All, Strategy::Append(AsOf::Source)).unwrap().unwrap();
    assert_eq!(r.output, seg(3));
    assert_eq!(r.archived.len(), 2);
    assert_eq!(names(&s), ["seg-000003", "seg-000004"]);
    current_state(&s, &b);
    // seg 2 went first (as of its end), then seg 1 (as of its end: a2, b1, c1).
    assert_eq!(tids(&s, 1), [t[5], t[3], t[2]]);
    assert_eq!(tids(&s, 2), [t[3], t[1]], "the deletion stays while seg 1's record does");
    let g = &s.segments().unwrap()[0];
    let sources: Vec<SegmentName> = g.appended.iter().map(|a| a.source).collect();
    assert_eq!(sources, [seg(2), seg(1)], "newest data first");
    assert_eq!(g.prev, None);
    // A second round: nothing older than seg 3 is left, so a copy merge of seg 3 and
    // the next segment drops oid 2 with its deletion.
    s.rotate().unwrap();
    let r = s.merge(&Policy::All).unwrap().unwrap();
    assert_eq!(r.output, SegmentName { first: 3, last: 4 });
    assert_eq!(r.counts.deletions_dropped, 1);
    current_state(&s, &b);
    assert!(s.history(Oid(2)).unwrap().is_empty());
    assert_eq!(tids(&s, 1), [t[5]]);
    drop(s);
    checked(d.path());
}

#[test]
fn readers_that_mapped_the_target_before_the_append_read_on() {
    let (d, s, b) = fresh();
    let t = &b.t;
    let everything = |s: &Storage| {
        let mut out = Vec::new();
        for oid in 1..=5 {
            out.push(format!("{:?}", s.history(Oid(oid)).unwrap()));
            for at in &t[1..] {
                out.push(format!("{:?}", s.load_at(Oid(oid), *at).unwrap()));
            }
        }
        let txns: Vec<Tid> = s.transactions(Tid::ZERO, Tid::MAX).map(|x| x.unwrap().tid).collect();
        out.push(format!("{txns:?}"));
        out
    };
    let ro = Storage::open(d.path(), Options::read_only()).unwrap();
    let before = everything(&ro);
    let mut iter = ro.transactions(Tid::ZERO, Tid::MAX);
    let first = iter.next().unwrap().unwrap().tid;
    s.merge_with(&Policy::All, Strategy::Append(AsOf::Target)).unwrap().unwrap();
    assert_eq!(everything(&ro), before, "the read-only open still reads its snapshot of the old chain");
    let rest: Vec<Tid> = iter.map(|x| x.unwrap().tid).collect();
    assert_eq!([vec![first], rest].concat(), t[1..].to_vec(), "an iteration begun before the merge goes on");
    let again = Storage::open(d.path(), Options::read_only()).unwrap();
    current_state(&again, &b);
}

#[test]
fn segments_with_appended_regions_move_copy_and_merge_whole() {
    let d = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    let b = build(&s);
    s.merge_with(&Policy::Named(vec![seg(1), seg(2)]), Strategy::Append(AsOf::Source)).unwrap().unwrap();
    let g = s.segments().unwrap().into_iter().find(|g| g.name == seg(2)).unwrap();
    assert_eq!(std::fs::metadata(&g.path).unwrap().len(), g.bytes);
    // A copy of the file is a complete, self-describing segment.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&g.path, copy.path().join("seg-000002.fs2")).unwrap();
    let lone = Storage::open(copy.path(), Options::read_only()).unwrap();
    assert_eq!(lone.segments().unwrap()[0].appended[0].source, seg(1));
    assert_eq!(lone.load(Oid(4)).unwrap(), Some((b.t[4], b"d4".to_vec())));
    let moved = s.move_segment(seg(2), elsewhere.path()).unwrap();
    assert_eq!(std::fs::metadata(&moved).unwrap().len(), g.bytes);
    current_state(&s, &b);
    // Append into a moved segment, then copy-merge it with its neighbour.
    s.merge_with(&Policy::Named(vec![seg(2), seg(3)]), Strategy::Append(AsOf::Target)).unwrap().unwrap();
    current_state(&s, &b);
    s.rotate().unwrap();
    s.merge(&Policy::All).unwrap().unwrap();
    current_state(&s, &b);
    reopened(s, d.path(), &b);
}

#[test]
fn refused_append_merges_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    build(&s);
    let before = std::fs::read(d.path().join("seg-000003.fs2")).unwrap();
    let append = Strategy::Append(AsOf::Source);
    assert!(s.merge_with(&Policy::Named(vec![seg(1), seg(3)]), append).is_err(), "not adjacent");
    assert!(s.merge_with(&Policy::Named(vec![seg(3), seg(4)]), append).is_err(), "seg 4 is active");
    assert!(s.merge_with(&Policy::Named(vec![seg(3)]), append).is_err(), "one segment");
    assert_eq!(std::fs::read(d.path().join("seg-000003.fs2")).unwrap(), before);
    assert_eq!(names(&s), ["seg-000001", "seg-000002", "seg-000003", "seg-000004"]);
}

#[test]
fn the_cli_appends_and_info_shows_the_retained_history() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    build(&s);
    drop(s);
    let fs2 = env!("CARGO_BIN_EXE_fs2");
    let out = Command::new(fs2)
        .args(["merge", d.path().to_str().unwrap(), "seg-000001", "seg-000002", "--append", "source-end"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("merged seg-000001 seg-000002 into seg-000002"), "{text}");
    assert!(text.contains("appended:"), "{text}");
    let out = Command::new(fs2).args(["info", d.path().to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("+ seg-000001     appended"), "{text}");
    assert!(text.contains("time travel to it is exact"), "{text}");
    let out = Command::new(fs2).args(["merge", d.path().to_str().unwrap(), "--all", "--append", "sideways"]).output();
    assert_eq!(out.unwrap().status.code(), Some(2), "an unknown variant is a usage error");
}
