//! The read views used by the mount: commit notifications, transactions by tid,
//! per-segment listings, raw segment bytes.

use filestorage2::{Oid, Options, SegmentState, Storage, Tid};

fn storage() -> (tempfile::TempDir, Storage) {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options { sync: false, ..Options::default() }).unwrap();
    (d, s)
}

fn commit(s: &Storage, stores: &[(u64, &[u8])], deletes: &[u64]) -> Tid {
    let mut t = s.begin();
    for (o, d) in stores {
        t.store(Oid(*o), d).unwrap();
    }
    for o in deletes {
        t.delete(Oid(*o)).unwrap();
    }
    t.set_user(b"u");
    t.commit().unwrap()
}

#[test]
fn subscribers_hear_every_commit_with_its_oids() {
    let (_d, s) = storage();
    let rx = s.subscribe();
    let t1 = commit(&s, &[(1, b"a"), (2, b"b")], &[]);
    let t2 = commit(&s, &[], &[1]);
    let e1 = rx.recv().unwrap();
    let e2 = rx.recv().unwrap();
    assert_eq!((e1.tid, e1.oids.clone()), (t1, vec![Oid(1), Oid(2)]));
    assert_eq!((e2.tid, e2.oids.clone()), (t2, vec![Oid(1)]));
    drop(rx);
    commit(&s, &[(3, b"c")], &[]); // a dropped receiver is forgotten, not an error
}

#[test]
fn transaction_by_tid_in_past_and_active_segments() {
    let (_d, s) = storage();
    let t1 = commit(&s, &[(1, b"one"), (2, b"two")], &[]);
    s.rotate().unwrap();
    let t2 = commit(&s, &[(2, b"TWO")], &[1]);
    let x = s.transaction(t1).unwrap().unwrap();
    assert_eq!(x.records.len(), 2);
    assert_eq!(x.records[1].size, 3);
    assert_eq!(x.meta.user, b"u");
    let segs = s.segments().unwrap();
    assert_eq!(x.segment, segs[0].name);
    let y = s.transaction(t2).unwrap().unwrap();
    assert_eq!(y.segment, segs[1].name);
    assert!(y.records.iter().any(|r| r.oid == Oid(1) && r.deleted));
    assert!(s.transaction(Tid(t2.0 + 1)).unwrap().is_none());
    assert!(s.transaction(Tid(t1.0 - 1)).unwrap().is_none());
    assert_eq!(s.first_tid(), Some(t1));
    let all: Vec<_> = s.txn_summaries(Tid::ZERO).map(|r| r.unwrap().tid).collect();
    assert_eq!(all, vec![t1, t2]);
    let later: Vec<_> = s.txn_summaries(Tid(t1.0 + 1)).map(|r| r.unwrap().tid).collect();
    assert_eq!(later, vec![t2]);
    let seg0: Vec<_> = s.segment_txn_summaries(segs[0].name).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(seg0.len(), 1);
    assert_eq!((seg0[0].tid, seg0[0].objects, seg0[0].bytes), (t1, 2, x.bytes));
}

#[test]
fn segment_records_bytes_and_oid_listing() {
    let (_d, s) = storage();
    let t1 = commit(&s, &[(5, b"five"), (7, b"seven")], &[]);
    let t2 = commit(&s, &[(5, b"FIVE!")], &[]);
    s.rotate().unwrap();
    let t3 = commit(&s, &[(9, b"nine")], &[7]);
    let segs = s.segments().unwrap();
    let recs = s.segment_records(segs[0].name, Oid(0), 10).unwrap();
    assert_eq!(recs.iter().map(|r| (r.oid, r.tid, r.size)).collect::<Vec<_>>(), vec![(Oid(5), t2, 5), (Oid(7), t1, 5)]);
    let recs = s.segment_records(segs[1].name, Oid(0), 10).unwrap();
    assert_eq!(recs.iter().map(|r| (r.oid, r.deleted)).collect::<Vec<_>>(), vec![(Oid(7), true), (Oid(9), false)]);
    assert_eq!(s.segment_record(segs[0].name, Oid(7)).unwrap().unwrap().tid, t1);
    assert!(s.segment_record(segs[0].name, Oid(9)).unwrap().is_none());
    assert_eq!(s.list_oids(Oid(0), 10).unwrap(), vec![Oid(5), Oid(7), Oid(9)]);
    assert_eq!(s.list_oids(Oid(6), 1).unwrap(), vec![Oid(7)]);
    let st = s.stat_at(Oid(7), t3).unwrap().unwrap();
    assert!(st.deleted);
    assert_eq!(s.stat_at(Oid(7), t2).unwrap().unwrap().tid, t1);
    let b = s.segment_bytes(segs[0].name).unwrap();
    assert_eq!(b.state, SegmentState::Past);
    let len = b.file_len().unwrap();
    let mut buf = vec![0u8; len as usize + 10];
    assert_eq!(b.read_at(&mut buf, 0).unwrap() as u64, len);
    assert_eq!(&buf[..len as usize], std::fs::read(&segs[0].path).unwrap());
    assert!(s.segment_bytes(filestorage2::SegmentName::single(99)).is_err());
}
