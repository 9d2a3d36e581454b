//! Merge (pack) of past segments: current state kept, history inside the merged range
//! dropped, deletions kept only while something older may hold the oid, chain switched,
//! inputs archived, storage reopens and checks clean. Requests while a merge runs are
//! busy (and commits, reads, rotations go on); refused requests change nothing; merges
//! next to moved segments, into a configured archive, of more segments than one merge
//! takes. (Crashes and faults during merges: `merge_crash.rs`; random sequences with
//! merges: `model.rs`; merges during the bank test: `merge_concurrency.rs`.)

mod common;

use filestorage2::merge::Policy;
use filestorage2::vfs::{RealVfs, VFile, Vfs};
use filestorage2::{Error, Oid, Options, SegmentName, Storage, Tid};
use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

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

// ---------------------------------------------------------------------------------------
// Requests while a merge runs, and requests that must change nothing.

/// A file system that can hold the writes of a merge's output (`*.fs2.tmp`) until told to
/// go on, so that a test can act while a merge is surely running.
struct HoldVfs {
    hold: Arc<Hold>,
}

#[derive(Default)]
struct Hold {
    /// (holding, a merge write is waiting)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Hold {
    fn wait_until_held(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.1 {
            s = self.cv.wait(s).unwrap();
        }
    }
    fn release(&self) {
        self.state.lock().unwrap().0 = false;
        self.cv.notify_all();
    }
}

struct HoldFile {
    f: Arc<dyn VFile>,
    hold: Option<Arc<Hold>>,
}

impl VFile for HoldFile {
    crate::vfile_passthrough!(f: read_exact_at);
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if let Some(h) = &self.hold {
            let mut s = h.state.lock().unwrap();
            s.1 = true;
            h.cv.notify_all();
            while s.0 {
                s = h.cv.wait(s).unwrap();
            }
        }
        self.f.write_all_at(buf, off)
    }
    crate::vfile_passthrough!(f: sync, len, set_len, os_file);
}

impl Vfs for HoldVfs {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(HoldFile { f: RealVfs.open(path, write)?, hold: None }))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        // A merge writes `seg-FFFFFF-LLLLLL.fs2.tmp` (a rotation `seg-NNNNNN.fs2.tmp`).
        let name = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".tmp"));
        let merge_output = name.and_then(SegmentName::from_file_name).is_some_and(|n| n.first < n.last);
        let hold = merge_output.then(|| self.hold.clone());
        Ok(Arc::new(HoldFile { f: RealVfs.create_new(path)?, hold }))
    }
    crate::real_vfs_passthrough!();
}

/// Everything a client can read, for comparing a storage before and after a request.
fn everything(s: &Storage, oids: u64) -> String {
    let mut out = format!("last {:?} max {:?}\n", s.last_tid(), s.max_oid());
    for g in s.segments().unwrap() {
        out += &format!("{} {:?} {:?} {} {} {}\n", g.name, g.state, g.prev, g.bytes, g.transactions, g.records);
    }
    for t in s.transactions(Tid::ZERO, Tid::MAX) {
        let t = t.unwrap();
        out += &format!("{:?} {} {:?}\n", t.tid, t.segment, t.records);
    }
    for o in 0..oids {
        out += &format!("{o}: {:?} {:?}\n", s.load(Oid(o)).unwrap(), s.history(Oid(o)).unwrap());
    }
    out
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// While a merge surely runs (its output writes are held): a second request of any kind
/// is refused as busy, naming the running merge; commits, reads and a rotation go on.
/// Released, the merge completes, relinking the segment that became past meanwhile.
#[test]
fn a_request_while_a_merge_runs_is_busy_and_commits_reads_and_rotations_go_on() {
    let d = tempfile::tempdir().unwrap();
    let hold = Arc::new(Hold::default());
    let opts = Options { vfs: Arc::new(HoldVfs { hold: hold.clone() }), ..Options::default() };
    let s = Storage::create(d.path(), opts.clone()).unwrap();
    let mut tids = Vec::new();
    for i in 0..3u64 {
        tids.push(commit(&s, &[(1, Some(format!("v{i}").as_bytes())), (10 + i, Some(b"x"))]));
        s.rotate().unwrap();
    }
    commit(&s, &[(2, Some(b"in the active segment"))]);
    hold.state.lock().unwrap().0 = true;
    let h = s.start_merge(&Policy::All).unwrap().unwrap();
    hold.wait_until_held();
    let p = s.merge_progress().expect("a merge is running");
    assert_eq!(p.inputs, [SegmentName::single(1), SegmentName::single(2), SegmentName::single(3)]);
    assert!((0.0..1.0).contains(&p.fraction()));
    let busy = |r: Result<Option<filestorage2::merge::MergeReport>, Error>, what: &str| match r {
        Err(Error::Busy(m)) => assert!(m.contains("seg-000001") && m.contains("running"), "{what}: {m}"),
        other => panic!("{what} while a merge runs: expected Busy, got {other:?}"),
    };
    busy(s.start_merge(&Policy::All).map(|h| h.map(|_| unreachable!())), "start_merge");
    busy(s.merge(&Policy::KeepAtMost(1)), "merge");
    busy(s.merge(&Policy::Named(vec![SegmentName::single(2), SegmentName::single(3)])), "named merge");
    let elsewhere = tempfile::tempdir().unwrap();
    assert!(matches!(s.move_segment(SegmentName::single(1), elsewhere.path()), Err(Error::Busy(_))));
    // Reads (of every revision, the inputs' too), commits and a rotation go on.
    assert_eq!(s.load_at(Oid(1), tids[0]).unwrap(), Some((tids[0], b"v0".to_vec())));
    assert_eq!(s.history(Oid(1)).unwrap().len(), 3);
    let t4 = commit(&s, &[(1, Some(b"during"))]);
    assert_eq!(s.rotate().unwrap(), SegmentName::single(5), "seg-000004 becomes past, the merge's successor");
    let t5 = commit(&s, &[(3, Some(b"after the rotation"))]);
    assert!(s.merge_progress().is_some(), "still held");
    hold.release();
    let r = h.wait().unwrap();
    assert_eq!(r.output, SegmentName { first: 1, last: 3 });
    assert!(s.merge_progress().is_none());
    assert_eq!(names(&s), ["seg-000001-000003", "seg-000004", "seg-000005"]);
    let segs = s.segments().unwrap();
    assert_eq!(segs[1].prev.as_deref(), Some("seg-000001-000003.fs2"), "the successor names the merged segment");
    assert_eq!(s.history(Oid(1)).unwrap().iter().map(|r| r.tid).collect::<Vec<_>>(), vec![t4, tids[2]]);
    assert_eq!(s.load(Oid(3)).unwrap(), Some((t5, b"after the rotation".to_vec())));
    // Not busy any more: the next merge runs.
    s.merge(&Policy::All).unwrap().unwrap();
    assert_eq!(names(&s), ["seg-000001-000004", "seg-000005"]);
    drop(s);
    checked(d.path());
    let s = Storage::open(d.path(), opts).unwrap();
    assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
    assert_eq!(s.load(Oid(1)).unwrap(), Some((t4, b"during".to_vec())));
    assert_eq!(s.load(Oid(12)).unwrap(), Some((tids[2], b"x".to_vec())));
}

/// Refused merge requests change nothing: not the chain, not a file, not a read.
#[test]
fn refused_merges_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    for i in 0..4u64 {
        commit(&s, &[(1, Some(format!("v{i}").as_bytes())), (i + 2, None), (i + 10, Some(b""))]);
        s.rotate().unwrap();
    }
    commit(&s, &[(1, Some(b"active"))]);
    let seg = SegmentName::single;
    let named = |v: &[SegmentName]| Policy::Named(v.to_vec());
    let requests = |s: &Storage| {
        let expect_err = |p: Policy, invalid: bool| {
            let r = s.merge(&p);
            match (&r, invalid) {
                (Err(Error::Invalid(m)), true) | (Err(Error::NotFound(m)), false) => assert!(!m.is_empty()),
                _ => panic!("{p:?}: got {r:?}"),
            }
        };
        expect_err(named(&[seg(1), seg(3)]), true); // not adjacent
        expect_err(named(&[seg(1), seg(2), seg(4)]), true); // a gap
        expect_err(named(&[seg(2), seg(2)]), true); // the same twice
        expect_err(named(&[seg(2)]), true); // one
        expect_err(named(&[]), true);
        expect_err(named(&[seg(4), seg(5)]), false); // the active segment
        expect_err(named(&[seg(98), seg(99)]), false); // unknown
        expect_err(named(&[seg(3), SegmentName { first: 4, last: 5 }]), false);
        assert!(s.merge(&Policy::KeepAtMost(4)).unwrap().is_none(), "four past segments: nothing to do");
        assert!(s.merge(&Policy::KeepAtMost(9)).unwrap().is_none());
    };
    let before = (everything(&s, 20), files(d.path()));
    requests(&s);
    assert_eq!((everything(&s, 20), files(d.path())), before, "refused requests changed something");
    assert!(!d.path().join("archive").exists());
    // After a merge, its inputs are unknown names.
    s.merge(&named(&[seg(2), seg(3)])).unwrap().unwrap();
    let before = (everything(&s, 20), files(d.path()), files(&d.path().join("archive")));
    assert!(matches!(s.merge(&named(&[seg(1), seg(2)])), Err(Error::NotFound(_))), "seg-000002 was merged away");
    assert!(matches!(s.merge(&named(&[seg(3), seg(4)])), Err(Error::NotFound(_))));
    let merged = SegmentName { first: 2, last: 3 };
    assert!(matches!(s.merge(&named(&[seg(1), seg(4)])), Err(Error::Invalid(_))), "no longer adjacent");
    let after = (everything(&s, 20), files(d.path()), files(&d.path().join("archive")));
    assert_eq!(after, before, "refused requests changed something");
    // The merged segment merges again with its neighbours.
    s.merge(&named(&[seg(4), merged, seg(1)])).unwrap().unwrap();
    assert_eq!(names(&s), ["seg-000001-000004", "seg-000005"]);
    drop(s);
    checked(d.path());
}

/// Every record of the merged range goes (deletions of objects nothing older holds): the
/// merged segment keeps only the newest transaction, without records, so that the last
/// tid does not go back at the next open.
#[test]
fn a_merge_that_drops_everything_keeps_the_last_tid() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    commit(&s, &[(1, Some(b"a")), (2, Some(b"b"))]);
    s.rotate().unwrap();
    let mut t = s.begin();
    t.set_description(b"nothing");
    let empty = t.commit().unwrap();
    let last = commit(&s, &[(1, None), (2, None)]);
    s.rotate().unwrap();
    let r = s.merge(&Policy::All).unwrap().unwrap();
    assert_eq!((r.counts.records_out, r.counts.transactions_out, r.counts.deletions_dropped), (0, 1, 2));
    let check = |s: &Storage| {
        assert_eq!(s.last_tid(), last, "the last tid stays");
        let txns: Vec<_> = s.transactions(Tid::ZERO, Tid::MAX).map(|t| t.unwrap()).collect();
        assert_eq!(txns.iter().map(|t| (t.tid, t.records.len())).collect::<Vec<_>>(), vec![(last, 0)]);
        assert_ne!(empty, last);
        assert_eq!(s.count_objects().unwrap(), 0);
        assert_eq!(s.max_oid(), None);
        assert!(s.history(Oid(1)).unwrap().is_empty());
    };
    check(&s);
    drop(s);
    checked(d.path());
    let s = Storage::open(d.path(), Options::default()).unwrap();
    check(&s);
    let t = commit(&s, &[(3, Some(b"c"))]);
    assert!(t > last, "a new tid follows the last one");
}

/// More past segments than one merge takes (127): `Policy::All` merges the oldest 127,
/// and a second round merges the rest.
#[test]
fn a_merge_of_more_segments_than_one_merge_takes() {
    let sim = filestorage2::vfs::SimVfs::new();
    let opts = Options { vfs: Arc::new(sim), alignment: 4096, preallocate: 0, ..Options::default() };
    let dir = Path::new("/many");
    let s = Storage::create(dir, opts.clone()).unwrap();
    let mut last = Tid::ZERO;
    for i in 0..130u64 {
        last = commit(&s, &[(i % 7, Some(format!("v{i}").as_bytes())), (1000 + i, Some(b""))]);
        s.rotate().unwrap();
    }
    let r = s.merge(&Policy::All).unwrap().unwrap();
    assert_eq!(r.inputs.len(), 127);
    assert_eq!(r.inputs[0], SegmentName::single(1), "the oldest run first");
    assert_eq!(s.segments().unwrap().len(), 1 + 3 + 1);
    let r = s.merge(&Policy::All).unwrap().unwrap();
    assert_eq!(r.inputs.len(), 4);
    assert_eq!(s.segments().unwrap().len(), 2);
    assert_eq!(s.count_objects().unwrap(), 7 + 130);
    assert_eq!(s.load(Oid(129 % 7)).unwrap().unwrap().0, last);
    drop(s);
    let s = Storage::open(dir, opts).unwrap();
    assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
    assert_eq!(s.last_tid(), last);
}

/// Merges with segments moved to another directory: a moved input is archived like the
/// others; a merged segment whose predecessor was moved keeps naming it by its path.
/// The moved segments live on another file system (tmpfs): archiving them copies.
#[test]
fn merges_of_and_next_to_moved_segments() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    assert_ne!(dev(d.path()), dev(elsewhere.path()), "/dev/shm must be another file system than the temp dir");
    let s = Storage::create(d.path(), Options::default()).unwrap();
    let mut tids = Vec::new();
    for i in 0..5u64 {
        tids.push(commit(&s, &[(1, Some(format!("v{i}").as_bytes())), (10 + i, Some(b"x"))]));
        s.rotate().unwrap();
    }
    let seg = SegmentName::single;
    let moved1 = s.move_segment(seg(1), elsewhere.path()).unwrap();
    let moved3 = s.move_segment(seg(3), elsewhere.path()).unwrap();
    // seg 3 (moved) and seg 4: the output goes to the storage directory.
    let r = s.merge(&Policy::Named(vec![seg(3), seg(4)])).unwrap().unwrap();
    assert!(!moved3.exists(), "the moved input left its directory");
    assert!(d.path().join("archive/seg-000003.fs2").exists(), "and went to the archive: {:?}", r.archived);
    assert!(d.path().join("seg-000003-000004.fs2").exists());
    // seg 2 names seg 1 by its path; merging seg 2 with seg 3-4 keeps that reference.
    s.merge(&Policy::Named(vec![seg(2), SegmentName { first: 3, last: 4 }])).unwrap().unwrap();
    let segs = s.segments().unwrap();
    assert_eq!(segs[0].path, moved1);
    assert_eq!(segs[1].name, SegmentName { first: 2, last: 4 });
    assert_eq!(segs[1].prev.as_deref(), Some(moved1.to_str().unwrap()));
    let state = everything(&s, 20);
    assert_eq!(s.history(Oid(1)).unwrap().iter().map(|r| r.tid).collect::<Vec<_>>(), vec![tids[4], tids[3], tids[0]]);
    drop(s);
    checked(d.path());
    let s = Storage::open(d.path(), Options::default()).unwrap();
    assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
    assert_eq!(everything(&s, 20), state);
    // Everything, the moved first segment too.
    s.merge(&Policy::All).unwrap().unwrap();
    assert!(!moved1.exists());
    assert_eq!(s.history(Oid(1)).unwrap().iter().map(|r| r.tid).collect::<Vec<_>>(), vec![tids[4]]);
    drop(s);
    checked(d.path());
}

/// `Options::archive_dir`: replaced segments go there, at merge time and when recovery
/// finishes an interrupted merge.
#[test]
fn replaced_segments_go_to_the_configured_archive_directory() {
    let d = tempfile::tempdir().unwrap();
    let archive = tempfile::tempdir().unwrap();
    let opts = Options { archive_dir: Some(archive.path().join("old")), ..Options::default() };
    let s = Storage::create(d.path(), opts.clone()).unwrap();
    for i in 0..4u64 {
        commit(&s, &[(i, Some(b"v"))]);
        s.rotate().unwrap();
    }
    let r = s.merge(&Policy::Named(vec![SegmentName::single(1), SegmentName::single(2)])).unwrap().unwrap();
    assert_eq!(r.archived, [archive.path().join("old/seg-000001.fs2"), archive.path().join("old/seg-000002.fs2")]);
    assert!(!d.path().join("archive").exists());
    // An interrupted merge whose switch happened: an input still in the directory.
    s.merge(&Policy::Named(vec![SegmentName::single(3), SegmentName::single(4)])).unwrap().unwrap();
    drop(s);
    std::fs::copy(archive.path().join("old/seg-000004.fs2"), d.path().join("seg-000004.fs2")).unwrap();
    std::fs::remove_file(archive.path().join("old/seg-000004.fs2")).unwrap();
    let s = Storage::open(d.path(), opts).unwrap();
    assert_eq!(s.open_warnings().len(), 1, "{:?}", s.open_warnings());
    assert!(archive.path().join("old/seg-000004.fs2").exists());
    assert!(!d.path().join("seg-000004.fs2").exists());
    assert_eq!(s.count_objects().unwrap(), 4);
    drop(s);
    checked(d.path());
}

/// A transaction that began before a deletion must still conflict with it after a merge:
/// the merge keeps the deletion while such a transaction is open, and drops it after.
#[test]
fn a_deletion_an_open_transaction_could_conflict_with_survives_the_merge() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options::default()).unwrap();
    commit(&s, &[(5, Some(b"garbage"))]);
    s.rotate().unwrap();
    let mut stale = s.begin();
    let t2 = commit(&s, &[(5, None)]);
    s.rotate().unwrap();
    let r = s.merge(&Policy::All).unwrap().unwrap();
    assert_eq!(r.counts.deletions_dropped, 0, "an open transaction began before the deletion");
    stale.store(Oid(5), b"resurrected").unwrap();
    match stale.commit() {
        Err(Error::Conflict { oid, tid }) => assert_eq!((oid, tid), (Oid(5), t2)),
        other => panic!("the stale transaction must conflict with the deletion: {other:?}"),
    }
    assert_eq!(s.load(Oid(5)).unwrap(), None);
    // With no such transaction open, the next merge drops the deletion and the object.
    commit(&s, &[(6, Some(b"x"))]);
    s.rotate().unwrap();
    let r = s.merge(&Policy::All).unwrap().unwrap();
    assert_eq!(r.counts.deletions_dropped, 1);
    assert!(s.history(Oid(5)).unwrap().is_empty());
}
