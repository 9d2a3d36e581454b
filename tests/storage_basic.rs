//! Integration tests of the storage API: store, load, history, reopen, rotate, conflicts,
//! two-phase commit, read-only opens.

mod common;
use filestorage2::{Error, Oid, Options, Storage, Tid};
use std::path::Path;

fn commit(s: &Storage, writes: &[(u64, Option<&[u8]>)]) -> Tid {
    let mut t = s.begin();
    for (oid, d) in writes {
        match d {
            Some(d) => t.store(Oid(*oid), d).unwrap(),
            None => t.delete(Oid(*oid)).unwrap(),
        }
    }
    t.commit().unwrap()
}

fn small(_dir: &Path) -> Options {
    Options { alignment: 4096, ..Options::default() }
}

#[test]
fn store_load_history_reopen() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), small(d.path())).unwrap();
    assert_eq!(s.last_tid(), Tid::ZERO);
    let t1 = commit(&s, &[(1, Some(b"one")), (2, Some(b""))]);
    let t2 = commit(&s, &[(1, Some(b"uno"))]);
    let t3 = commit(&s, &[(2, None)]);
    assert!(t1 < t2 && t2 < t3);
    let check = |s: &Storage| {
        assert_eq!(s.load(Oid(1)).unwrap(), Some((t2, b"uno".to_vec())));
        assert_eq!(s.load(Oid(2)).unwrap(), None, "deleted");
        assert_eq!(s.load_at(Oid(2), t2).unwrap(), Some((t1, b"".to_vec())), "empty is not deleted");
        assert_eq!(s.load_at(Oid(1), t1).unwrap(), Some((t1, b"one".to_vec())));
        assert_eq!(s.load_at(Oid(1), Tid(t1.0 - 1)).unwrap(), None);
        let h = s.history(Oid(2)).unwrap();
        assert_eq!(h.iter().map(|r| (r.tid, r.deleted)).collect::<Vec<_>>(), vec![(t3, true), (t1, false)]);
        let lb = s.load_before(Oid(1), t2).unwrap().unwrap();
        assert_eq!((lb.data.as_slice(), lb.tid, lb.end), (&b"one"[..], t1, Some(t2)));
        assert_eq!(s.current_tid(Oid(2)).unwrap(), Some(t3));
        assert_eq!(s.max_oid(), Some(Oid(2)));
        assert_eq!(s.last_tid(), t3);
        let live = s.list(Oid(0), Tid::MAX, 100).unwrap();
        assert_eq!(live.iter().map(|o| o.oid).collect::<Vec<_>>(), vec![Oid(1)]);
        let txns: Vec<_> = s.transactions(Tid::ZERO, Tid::MAX).map(|t| t.unwrap()).collect();
        assert_eq!(txns.iter().map(|t| t.tid).collect::<Vec<_>>(), vec![t1, t2, t3]);
    };
    check(&s);
    s.rotate().unwrap();
    check(&s);
    let t4 = commit(&s, &[(3, Some(b"three")), (1, Some(b"eins"))]);
    drop(s);
    let s = Storage::open(d.path(), small(d.path())).unwrap();
    assert_eq!(s.load(Oid(1)).unwrap(), Some((t4, b"eins".to_vec())));
    assert_eq!(s.history(Oid(1)).unwrap().len(), 3);
    assert!(s.new_oid().unwrap() > Oid(3));
    assert_eq!(s.segments().unwrap().len(), 2);
    assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
}

#[test]
fn conflicts_apply_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), small(d.path())).unwrap();
    commit(&s, &[(1, Some(b"a"))]);
    let mut a = s.begin();
    let mut b = s.begin();
    a.store(Oid(1), b"from a").unwrap();
    b.store(Oid(2), b"from b").unwrap();
    b.store(Oid(1), b"from b").unwrap();
    let ta = a.commit().unwrap();
    match b.commit() {
        Err(Error::Conflict { oid, tid }) => assert_eq!((oid, tid), (Oid(1), ta)),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.load(Oid(2)).unwrap(), None, "nothing of the conflicting transaction applied");
    // Two transactions creating the same client-chosen oid: one wins.
    let mut c = s.begin();
    let mut e = s.begin();
    c.store(Oid(99), b"c").unwrap();
    e.store(Oid(99), b"e").unwrap();
    c.commit().unwrap();
    assert!(matches!(e.commit(), Err(Error::Conflict { .. })));
}

#[test]
fn two_phase_commit_holds_until_finish() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), small(d.path())).unwrap();
    let mut t = s.begin();
    t.store(Oid(5), b"voted").unwrap();
    t.vote().unwrap();
    assert_eq!(s.load(Oid(5)).unwrap(), None, "voted is not visible");
    let s2 = s.clone();
    let h = std::thread::spawn(move || {
        let mut o = s2.begin();
        o.store(Oid(5), b"other").unwrap();
        o.commit()
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    let tid = t.finish().unwrap();
    assert_eq!(s.load(Oid(5)).unwrap(), Some((tid, b"voted".to_vec())));
    // The other transaction began before the finish: it conflicts (or, if it began
    // after, it commits on top); either way the voted one was not overridden unseen.
    match h.join().unwrap() {
        Err(Error::Conflict { oid, .. }) => assert_eq!(oid, Oid(5)),
        Ok(t2) => assert!(t2 > tid),
        Err(e) => panic!("{e}"),
    }
    // Abort after vote leaves nothing, and the storage reopens cleanly.
    let mut t = s.begin();
    t.store(Oid(6), b"x").unwrap();
    t.vote().unwrap();
    t.abort();
    commit(&s, &[(7, Some(b"after"))]);
    drop(s);
    let s = Storage::open(d.path(), Options::default()).unwrap();
    assert_eq!(s.load(Oid(6)).unwrap(), None);
    assert!(s.load(Oid(7)).unwrap().is_some());
}

#[test]
fn read_only_opens_while_a_writer_commits() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), small(d.path())).unwrap();
    let t1 = commit(&s, &[(1, Some(b"v1"))]);
    assert!(matches!(Storage::open(d.path(), Options::default()), Err(Error::Busy(_))), "one writer");
    let r = Storage::open(d.path(), Options::read_only()).unwrap();
    commit(&s, &[(1, Some(b"v2"))]);
    assert_eq!(r.load(Oid(1)).unwrap(), Some((t1, b"v1".to_vec())), "a read-only open is a snapshot");
    assert!(matches!(r.begin().commit(), Err(Error::ReadOnly(_))));
    s.rotate().unwrap();
    let t3 = commit(&s, &[(1, Some(b"v3"))]);
    let r2 = Storage::open(d.path(), Options::read_only()).unwrap();
    assert_eq!(r2.load(Oid(1)).unwrap(), Some((t3, b"v3".to_vec())));
    assert_eq!(r.load(Oid(1)).unwrap(), Some((t1, b"v1".to_vec())), "old readers keep working");
}

#[test]
fn automatic_rotation_and_alignment_padding() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options { alignment: 4096, rotate_size: 64 << 10, sync: false, ..Options::default() };
    let s = Storage::create(d.path(), opts.clone()).unwrap();
    let mut last = Tid::ZERO;
    for i in 0..400u64 {
        let data = vec![i as u8; (i as usize * 37) % 3000];
        last = commit(&s, &[(i % 50, Some(&data))]);
    }
    assert!(s.segments().unwrap().len() > 3, "rotated automatically");
    s.sync().unwrap();
    drop(s);
    let s = Storage::open(d.path(), opts).unwrap();
    assert_eq!(s.last_tid(), last);
    for i in 350..400u64 {
        let data = vec![i as u8; (i as usize * 37) % 3000];
        assert_eq!(s.load(Oid(i % 50)).unwrap().unwrap().1, data);
    }
    assert_eq!(s.history(Oid(0)).unwrap().len(), 8);
    assert_eq!(s.transactions(Tid::ZERO, Tid::MAX).count(), 400);
}

#[test]
fn a_bad_data_crc_under_a_good_transaction_crc_is_refused_by_load_and_check() {
    use common::bytes::DATA_HEADER;
    // The data record's data CRC (under its header CRC), a data byte, the header CRC.
    for flip in [44, DATA_HEADER + 3, 52] {
        bad_record_under_a_good_transaction_crc(flip);
    }
}

fn bad_record_under_a_good_transaction_crc(flip: usize) {
    use common::bytes::{crc, DATA_HEADER, TXN_FOOTER, TXN_HEADER};
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options { preallocate: 0, ..Options::default() }).unwrap();
    commit(&s, &[(1, Some(b"precious"))]);
    drop(s);
    let path = d.path().join("seg-000001.fs2");
    let mut b = std::fs::read(&path).unwrap();
    let txn = 4096;
    let rec = txn + TXN_HEADER; // no user, description or extension
    assert_eq!(&b[rec + DATA_HEADER..rec + DATA_HEADER + 8], b"precious");
    b[rec + flip] ^= 1;
    let n = b.len() - txn;
    let whole = crc(&b[txn + 4..txn + n - TXN_FOOTER]);
    b[txn + n - TXN_FOOTER..txn + n - TXN_FOOTER + 4].copy_from_slice(&whole.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let s = Storage::open(d.path(), Options::read_only()).unwrap();
    assert!(matches!(s.load(Oid(1)), Err(Error::Checksum { .. })), "flip {flip}: never wrong bytes");
    if flip != DATA_HEADER + 3 {
        // The header is wrong: no answer that needs it either.
        assert!(matches!(s.stat_at(Oid(1), Tid::MAX), Err(Error::Checksum { .. })), "flip {flip}");
        assert!(matches!(s.history(Oid(1)), Err(Error::Checksum { .. })), "flip {flip}");
    }
    drop(s);
    let r = filestorage2::check::check(d.path(), false, Options::default(), &mut |_, _| {}).unwrap();
    assert!(!r.ok() && r.problems.iter().any(|p| p.contains("checksum")), "flip {flip}: {:?}", r.problems);
}

/// Restore (copying a ZODB storage with its tids): a caller-chosen tid is used as given
/// when it is after the last tid, in one step and in two-phase commit, and refused (with
/// nothing written) otherwise.
#[test]
fn caller_chosen_tid() {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), small(d.path())).unwrap();
    let mut t = s.begin();
    t.store(Oid(1), b"a").unwrap();
    t.set_tid(Tid(0x0300_0000_0000_0001)).unwrap();
    assert_eq!(t.commit().unwrap(), Tid(0x0300_0000_0000_0001));
    let mut t = s.begin();
    t.store(Oid(1), b"b").unwrap();
    t.set_tid(Tid(0x0300_0000_0000_0005)).unwrap();
    t.vote().unwrap();
    assert_eq!(t.tid(), Some(Tid(0x0300_0000_0000_0005)));
    assert_eq!(t.finish().unwrap(), Tid(0x0300_0000_0000_0005));
    for bad in [0x0300_0000_0000_0005, 0x0300_0000_0000_0002] {
        let mut t = s.begin();
        t.store(Oid(2), b"c").unwrap();
        t.set_tid(Tid(bad)).unwrap();
        assert!(matches!(t.vote(), Err(Error::Invalid(_))), "tid {bad:x} is not after the last");
    }
    assert_eq!(s.last_tid(), Tid(0x0300_0000_0000_0005));
    assert_eq!(s.load(Oid(2)).unwrap(), None);
    // The next ordinary commit continues after it.
    let t3 = commit(&s, &[(2, Some(b"d"))]);
    assert!(t3 > Tid(0x0300_0000_0000_0005));
    drop(s);
    let s = Storage::open(d.path(), small(d.path())).unwrap();
    assert_eq!(s.load(Oid(1)).unwrap(), Some((Tid(0x0300_0000_0000_0005), b"b".to_vec())));
}
