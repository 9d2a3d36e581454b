//! Storages written in format version 1 (data records with one CRC over header and data)
//! stay readable and writable: their segments keep their form, new segments (rotation,
//! copy merges) are version 2 (data records with a header CRC of their own).
//! `tests/fixtures/v1-storage` was written by fs2 before version 2: objects 1..5 over
//! three segments (two sealed), object 2 deleted.

mod common;

use common::simple::{checked, commit, data, within};
use filestorage2::merge::{Policy, Strategy};
use filestorage2::{AsOf, Oid, Options, SegmentName, SegmentState, Storage};
use std::path::{Path, PathBuf};

fn fixture() -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-storage");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

/// The format version in a segment file's header.
fn version(path: &Path) -> u32 {
    let b = std::fs::read(path).unwrap();
    u32::from_le_bytes(b[12..16].try_into().unwrap())
}

fn segment_versions(s: &Storage) -> Vec<(SegmentName, u32)> {
    s.segments().unwrap().iter().map(|i| (i.name, version(&i.path))).collect()
}

fn path_of(s: &Storage, name: SegmentName) -> PathBuf {
    s.segments().unwrap().into_iter().find(|i| i.name == name).unwrap().path
}

fn expect_objects(s: &Storage) {
    assert_eq!(data(s, 1).as_deref(), Some(&b"one, third"[..]));
    assert_eq!(data(s, 2), None, "deleted");
    assert_eq!(data(s, 3).as_deref(), Some(&b"three"[..]));
    assert_eq!(data(s, 4).as_deref(), Some(&b"one again"[..]));
    assert_eq!(data(s, 5).as_deref(), Some(&b"three"[..]));
}

#[test]
fn a_version_1_storage_reads_writes_and_merges_into_version_2() {
    within(120, || {
        let dir = fixture();
        checked(dir.path());
        let s = Storage::open(dir.path(), Options::default()).unwrap();
        assert_eq!(segment_versions(&s).iter().map(|v| v.1).collect::<Vec<_>>(), vec![1, 1, 1]);
        expect_objects(&s);
        let h = s.history(Oid(1)).unwrap();
        assert_eq!(h.iter().map(|r| r.size).collect::<Vec<_>>(), vec![10, 9, 3]);
        assert_eq!(s.current_tid(Oid(1)).unwrap(), Some(h[0].tid));
        let st = s.stat_at(Oid(1), h[1].tid).unwrap().unwrap();
        assert_eq!((st.tid, st.size, st.deleted), (h[1].tid, 9, false));
        assert!(s.stat_at(Oid(2), h[0].tid).unwrap().unwrap().deleted);
        assert_eq!(s.load_before(Oid(1), h[0].tid).unwrap().unwrap().data, b"one again");

        // The version-1 active segment takes new records in its own form.
        commit(&s, &[(6, b"six"), (1, b"one, fourth")]);
        drop(s);
        checked(dir.path());
        let s = Storage::open(dir.path(), Options::default()).unwrap();
        assert_eq!(data(&s, 6).as_deref(), Some(&b"six"[..]));
        assert_eq!(s.history(Oid(1)).unwrap().len(), 4);
        assert_eq!(version(&path_of(&s, SegmentName::single(3))), 1);

        // A rotation starts a version-2 segment; histories run through both forms.
        s.rotate().unwrap();
        commit(&s, &[(1, b"one, third")]);
        assert_eq!(segment_versions(&s).last().unwrap().1, 2);
        assert_eq!(s.history(Oid(1)).unwrap().len(), 5);
        expect_objects(&s);
        checked(dir.path());

        // An append merge into a version-1 segment writes that segment's form.
        let seg = SegmentName::single;
        s.merge_with(&Policy::Named(vec![seg(1), seg(2)]), Strategy::Append(AsOf::Source)).unwrap().unwrap();
        assert_eq!(segment_versions(&s).iter().map(|v| v.1).collect::<Vec<_>>(), vec![1, 1, 2]);
        expect_objects(&s);
        checked(dir.path());

        // A copy merge writes the current form.
        s.merge(&Policy::All).unwrap().unwrap();
        assert_eq!(segment_versions(&s).iter().map(|v| v.1).collect::<Vec<_>>(), vec![2, 2]);
        expect_objects(&s);
        assert_eq!(data(&s, 6).as_deref(), Some(&b"six"[..]));
        drop(s);
        checked(dir.path());
        let s = Storage::open(dir.path(), Options::default()).unwrap();
        expect_objects(&s);
    });
}

/// A damaged fixed header is rebuilt from the next segment's, but the record form comes
/// from the segment's own records: a version-1 segment beside version-2 ones reads exactly.
#[test]
fn a_damaged_header_of_a_version_1_segment_beside_version_2_ones() {
    within(60, || {
        let dir = fixture();
        let s = Storage::open(dir.path(), Options::default()).unwrap();
        s.rotate().unwrap();
        commit(&s, &[(7, b"seven")]);
        assert_eq!(segment_versions(&s).iter().map(|v| v.1).collect::<Vec<_>>(), vec![1, 1, 1, 2]);
        drop(s);
        let path = dir.path().join(SegmentName::single(3).file_name());
        let mut b = std::fs::read(&path).unwrap();
        b[70] ^= 0xff; // reserved, under the fixed part's CRC
        std::fs::write(&path, &b).unwrap();
        let s = Storage::open(dir.path(), Options::read_only()).unwrap();
        assert!(!s.open_warnings().is_empty(), "the damaged header is reported");
        expect_objects(&s);
        assert_eq!(data(&s, 7).as_deref(), Some(&b"seven"[..]));
        assert_eq!(s.history(Oid(3)).unwrap().len(), 2);
    });
}

/// The trailer layout version of a sealed segment file (bytes 4..8 of its last 128).
fn trailer_version(path: &Path) -> u32 {
    let b = std::fs::read(path).unwrap();
    let t = &b[b.len() - 128..];
    u32::from_le_bytes(t[4..8].try_into().unwrap())
}

/// Sealed segments written before the oid filter (trailer version 1) open and answer
/// hits and misses; a rotation seals the next segment with trailer version 2 (a filter).
#[test]
fn segments_sealed_before_the_oid_filter_are_read_and_new_seals_carry_one() {
    within(60, || {
        let dir = fixture();
        let s = Storage::open(dir.path(), Options::default()).unwrap();
        let sealed: Vec<_> = s.segments().unwrap().into_iter().filter(|i| i.state == SegmentState::Past).collect();
        assert_eq!(sealed.len(), 2);
        assert!(sealed.iter().all(|i| trailer_version(&i.path) == 1));
        expect_objects(&s);
        assert_eq!(data(&s, 6), None);
        assert_eq!(data(&s, u64::MAX), None);
        s.rotate().unwrap();
        let newest = s.segments().unwrap().into_iter().rfind(|i| i.state == SegmentState::Past).unwrap();
        assert_eq!(trailer_version(&newest.path), 2);
        expect_objects(&s);
        drop(s);
        let s = Storage::open(dir.path(), Options::read_only()).unwrap();
        expect_objects(&s);
    })
}
