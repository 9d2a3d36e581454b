//! Merge (pack) of past segments: current state kept, history inside the merged range
//! dropped, deletions kept only while something older may hold the oid, chain switched,
//! inputs archived, storage reopens and checks clean.

use filestorage2::merge::Policy;
use filestorage2::{Error, Oid, Options, SegmentName, Storage, Tid};

fn commit(s: &Storage, writes: &[(u64, Option<&[u8]>)]) -> Tid {
    let mut t = s.begin();
    t.set_description(b"merge test");
    for (oid, d) in writes {
        match d {
            Some(d) => t.store(Oid(*oid), d).unwrap(),
            None => t.delete(Oid(*oid)).unwrap(),
        }
    }
    t.commit().unwrap()
}

fn names(s: &Storage) -> Vec<String> {
    s.segments().unwrap().iter().map(|g| g.name.to_string()).collect()
}

fn checked(dir: &std::path::Path) {
    let r = filestorage2::check::check(dir, false, Options::default(), &mut |_, _| {}).unwrap();
    assert!(r.ok(), "{:?}", r.problems);
}

#[test]
fn merge_all_keeps_current_state_and_drops_history_and_dead_deletions() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    let t1 = commit(&s, &[(1, Some(b"a1")), (2, Some(b"b1")), (3, Some(b"c1"))]);
    s.rotate().unwrap();
    commit(&s, &[(1, Some(b"a2")), (2, None)]);
    s.rotate().unwrap();
    let t3 = commit(&s, &[(1, Some(b"a3")), (4, Some(b""))]);
    s.rotate().unwrap();
    let t4 = commit(&s, &[(3, Some(b"c4"))]); // in the active segment
    assert_eq!(names(&s), ["seg-000001", "seg-000002", "seg-000003", "seg-000004"]);

    let r = s.merge(&Policy::All).unwrap().unwrap();
    assert_eq!(r.output.to_string(), "seg-000001-000003");
    assert_eq!(r.counts.deletions_dropped, 1, "oid 2's deletion reached the oldest segment");
    assert_eq!(r.archived.len(), 3);
    assert_eq!(names(&s), ["seg-000001-000003", "seg-000004"]);
    let check_state = |s: &Storage| {
        assert_eq!(s.load(Oid(1)).unwrap(), Some((t3, b"a3".to_vec())));
        assert_eq!(s.load(Oid(2)).unwrap(), None);
        assert!(s.history(Oid(2)).unwrap().is_empty(), "the object is gone with its deletion");
        assert_eq!(s.load(Oid(3)).unwrap(), Some((t4, b"c4".to_vec())));
        assert_eq!(s.load_at(Oid(3), t3).unwrap(), Some((t1, b"c1".to_vec())), "c1 was current at the end");
        assert_eq!(s.load(Oid(4)).unwrap(), Some((t3, Vec::new())));
        assert_eq!(s.history(Oid(1)).unwrap().iter().map(|r| r.tid).collect::<Vec<_>>(), vec![t3]);
        let txns: Vec<_> = s.transactions(Tid::ZERO, Tid::MAX).map(|t| t.unwrap()).collect();
        assert_eq!(txns.iter().map(|t| t.tid).collect::<Vec<_>>(), vec![t1, t3, t4], "empty transactions vanish");
        assert_eq!(txns[0].meta.description, b"merge test", "metadata is kept");
        assert_eq!(txns[0].records.len(), 1, "only c1 is left of the first transaction");
    };
    check_state(&s);
    let t5 = commit(&s, &[(1, Some(b"a5"))]);
    drop(s);
    checked(d.path());
    let s = Storage::open(d.path(), Options::default()).unwrap();
    assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
    assert_eq!(s.load(Oid(1)).unwrap(), Some((t5, b"a5".to_vec())));
    assert!(d.path().join("archive/seg-000002.fs2").exists());
    assert!(!d.path().join("seg-000002.fs2").exists());
}

#[test]
fn a_deletion_survives_while_an_older_segment_holds_the_object() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    commit(&s, &[(7, Some(b"old"))]);
    s.rotate().unwrap();
    commit(&s, &[(7, None), (8, Some(b"x"))]);
    s.rotate().unwrap();
    commit(&s, &[(8, Some(b"y"))]);
    s.rotate().unwrap();
    let seg = |n: u64| SegmentName::single(n);
    let r = s.merge(&Policy::Named(vec![seg(2), seg(3)])).unwrap().unwrap();
    assert_eq!(r.counts.deletions_dropped, 0);
    assert_eq!(s.load(Oid(7)).unwrap(), None, "seg-000001 still holds oid 7: the deletion must stay");
    assert_eq!(names(&s), ["seg-000001", "seg-000002-000003", "seg-000004"]);
    drop(s);
    checked(d.path());
    let s = Storage::open(d.path(), Options::default()).unwrap();
    assert_eq!(s.load(Oid(7)).unwrap(), None);
    assert_eq!(s.load(Oid(8)).unwrap().unwrap().1, b"y");
    // Merging everything now drops the object and its deletion.
    s.merge(&Policy::All).unwrap().unwrap();
    assert!(s.history(Oid(7)).unwrap().is_empty());
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    for i in 0..3 {
        commit(&s, &[(i, Some(b"v"))]);
        s.rotate().unwrap();
    }
    let before = names(&s);
    let seg = |n: u64| SegmentName::single(n);
    assert!(s.merge(&Policy::Named(vec![seg(1), seg(3)])).is_err(), "not adjacent");
    assert!(matches!(s.merge(&Policy::Named(vec![seg(3), seg(4)])), Err(Error::NotFound(_))), "active");
    assert!(s.merge(&Policy::Named(vec![seg(1)])).is_err());
    assert_eq!(names(&s), before);
    assert!(s.merge(&Policy::KeepAtMost(5)).unwrap().is_none(), "nothing to do");
    let ro = Storage::open(d.path(), Options::read_only()).unwrap();
    assert!(matches!(ro.merge(&Policy::All), Err(Error::ReadOnly(_))));
}

#[test]
fn merges_run_online_and_a_second_request_is_busy() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options { sync: false, ..Options::default() }).unwrap();
    let data = vec![9u8; 200];
    for seg in 0..4u64 {
        for t in 0..50u64 {
            let mut tx = s.begin();
            for i in 0..100u64 {
                tx.store(Oid((seg * 50 + t) * 100 + i), &data).unwrap();
            }
            tx.commit().unwrap();
        }
        s.rotate().unwrap();
    }
    let h = s.start_merge(&Policy::All).unwrap().unwrap();
    assert!(matches!(s.start_merge(&Policy::All), Err(Error::Busy(_))) || h.is_finished());
    // Commits and reads go on meanwhile.
    let mut last = Tid::ZERO;
    for i in 0..200u64 {
        last = commit(&s, &[(1_000_000 + i, Some(b"during"))]);
        assert_eq!(s.load(Oid(i * 7)).unwrap().unwrap().1, data);
    }
    let r = h.wait().unwrap();
    assert_eq!(r.counts.records_out, 20_000);
    assert!(s.merge_progress().is_none());
    assert_eq!(s.last_tid(), last);
    assert_eq!(s.count_objects().unwrap(), 20_200);
    drop(s);
    checked(d.path());
}

#[test]
fn move_segment_relinks_the_chain_and_recovery_removes_a_stale_copy() {
    let d = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    let t1 = commit(&s, &[(1, Some(b"one")), (2, Some(b"two"))]);
    s.rotate().unwrap();
    let t2 = commit(&s, &[(1, Some(b"uno"))]);
    s.rotate().unwrap();
    commit(&s, &[(3, Some(b"three"))]);
    let seg1 = SegmentName::single(1);
    assert!(s.move_segment(seg1, std::path::Path::new("relative")).is_err());
    let to = s.move_segment(seg1, elsewhere.path()).unwrap();
    assert_eq!(to, elsewhere.path().join("seg-000001.fs2"));
    assert!(!d.path().join("seg-000001.fs2").exists());
    assert_eq!(s.load_at(Oid(1), t1).unwrap(), Some((t1, b"one".to_vec())));
    let segs = s.segments().unwrap();
    assert_eq!(segs[0].path, to);
    assert_eq!(segs[1].prev.as_deref(), Some(to.to_str().unwrap()), "the successor names the new path");
    drop(s);
    checked(d.path());
    // A crash after the switch but before the old copy was removed: open removes it.
    std::fs::copy(&to, d.path().join("seg-000001.fs2")).unwrap();
    let s = Storage::open(d.path(), Options::default()).unwrap();
    assert!(s.open_warnings().iter().any(|w| w.contains("removed the old copy")), "{:?}", s.open_warnings());
    assert!(!d.path().join("seg-000001.fs2").exists());
    assert_eq!(s.load(Oid(2)).unwrap(), Some((t1, b"two".to_vec())));
    // And back home: the reference is a plain file name again.
    s.move_segment(seg1, d.path()).unwrap();
    assert_eq!(s.segments().unwrap()[1].prev.as_deref(), Some("seg-000001.fs2"));
    assert_eq!(s.history(Oid(1)).unwrap().iter().map(|r| r.tid).collect::<Vec<_>>(), vec![t2, t1]);
    drop(s);
    checked(d.path());
}

#[test]
fn minimal_retention_merges_after_each_rotation() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    s.set_retention(filestorage2::settings::Retention::Minimal).unwrap();
    for i in 0..4u64 {
        commit(&s, &[(1, Some(format!("v{i}").as_bytes())), (i + 10, Some(b"x"))]);
        s.rotate().unwrap();
        while s.merge_progress().is_some() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let past = s.segments().unwrap().iter().filter(|g| g.state == filestorage2::SegmentState::Past).count();
    assert_eq!(past, 1, "{:?}", names(&s));
    assert_eq!(s.history(Oid(1)).unwrap().len(), 1, "only the current revision is kept");
    drop(s);
    let s = Storage::open(d.path(), Options::default()).unwrap();
    assert_eq!(s.retention(), filestorage2::settings::Retention::Minimal, "the setting is the storage's");
}
