//! Bad input and hostile surroundings must not lose, hide or misreport data (issue 10):
//! segment paths compared as files, the oid space's end, stray files named like
//! segments, an unwritable archive, a full disk while preallocating, and a read-only
//! open that ignores an unreadable tail. (A full disk on a real small file system is in
//! `enospc.rs`: it spawns `mount`, and a process forked meanwhile would hold the writer
//! lock of a storage another test here reopens.)

use filestorage2::merge::Policy;
use filestorage2::{Error, Oid, Options, SegmentName, Storage, Tid};
use std::path::{Path, PathBuf};

mod common;
use common::simple::{checked, commit, data, within};

/// Every file below `dir` with its bytes (to show that a refused operation changed nothing).
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else if p.file_name().is_some_and(|n| n != "LOCK") {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// A storage with two past segments and an active one: oid 1 in every segment.
fn three_segments(dir: &Path) -> Storage {
    let s = Storage::create(dir, Options::default()).unwrap();
    commit(&s, &[(1, b"one"), (2, b"two")]);
    s.rotate().unwrap();
    commit(&s, &[(1, b"uno")]);
    s.rotate().unwrap();
    commit(&s, &[(1, b"eins"), (3, b"three")]);
    s
}

const SEG1: SegmentName = SegmentName { first: 1, last: 1 };

#[test]
fn a_move_onto_itself_is_refused_under_any_spelling_and_changes_nothing() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        let s = three_segments(&db);
        std::os::unix::fs::symlink(&db, t.path().join("link")).unwrap();
        let before = tree(&db);
        for spelling in [db.clone(), t.path().join("link"), db.join("..").join("db"), t.path().join("link/.")] {
            let r = s.move_segment(SEG1, &spelling);
            assert!(matches!(&r, Err(Error::Invalid(m)) if m.contains("already lives in")), "{spelling:?}: {r:?}");
        }
        assert_eq!(tree(&db), before, "a refused move changes nothing");
        assert_eq!(s.history(Oid(1)).unwrap().len(), 3);
        drop(s);
        let s = Storage::open(&db, Options::default()).unwrap();
        assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
        assert_eq!(data(&s, 2), Some(b"two".to_vec()));
        drop(s);
        checked(&db);
    })
}

#[test]
fn a_segment_moved_out_and_back_through_another_spelling_keeps_its_only_copy() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        let away = t.path().join("away");
        let s = three_segments(&db);
        let to = s.move_segment(SEG1, &away).unwrap();
        assert_eq!(to, away.join("seg-000001.fs2"));
        // Back, naming the storage directory through a symbolic link.
        std::os::unix::fs::symlink(&db, t.path().join("link")).unwrap();
        let back = s.move_segment(SEG1, &t.path().join("link")).unwrap();
        assert_eq!(back, db.join("seg-000001.fs2"), "the canonical path");
        assert_eq!(s.segments().unwrap()[1].prev.as_deref(), Some("seg-000001.fs2"));
        assert!(!to.exists());
        drop(s);
        let s = Storage::open(&db, Options::default()).unwrap();
        assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
        assert!(db.join("seg-000001.fs2").exists());
        assert_eq!(data(&s, 2), Some(b"two".to_vec()));
        drop(s);
        checked(&db);
    })
}

/// A chain whose reference spells the directory's own file another way (as the old code
/// could write it): the next writable open must not take the file for a stale copy.
#[test]
fn a_reference_that_spells_the_same_file_differently_is_not_a_stale_copy() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        let away = t.path().join("away");
        let s = three_segments(&db);
        s.move_segment(SEG1, &away).unwrap();
        drop(s);
        // The file comes home by hand and `away` becomes another name of the storage
        // directory: the reference `<away>/seg-000001.fs2` now names `db/seg-000001.fs2`.
        std::fs::rename(away.join("seg-000001.fs2"), db.join("seg-000001.fs2")).unwrap();
        std::fs::remove_dir(&away).unwrap();
        std::os::unix::fs::symlink(&db, &away).unwrap();
        let s = Storage::open(&db, Options::default()).unwrap();
        assert!(db.join("seg-000001.fs2").exists(), "the only copy is kept: {:?}", s.open_warnings());
        assert_eq!(data(&s, 2), Some(b"two".to_vec()));
        commit(&s, &[(4, b"four")]);
        drop(s);
        let s = Storage::open(&db, Options::read_only()).unwrap();
        assert_eq!(s.history(Oid(1)).unwrap().len(), 3);
    })
}

#[test]
fn an_old_copy_that_differs_from_the_chains_is_kept_with_a_warning() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        let s = three_segments(&db);
        let to = s.move_segment(SEG1, &t.path().join("away")).unwrap();
        drop(s);
        // An "old copy" that is not the same bytes (here: one byte differs).
        let mut bytes = std::fs::read(&to).unwrap();
        bytes[4096 + 60] ^= 1;
        std::fs::write(db.join("seg-000001.fs2"), &bytes).unwrap();
        let s = Storage::open(&db, Options::default()).unwrap();
        let w = s.open_warnings().join("\n");
        assert!(w.contains("not a verified copy") && w.contains("kept"), "{w}");
        assert_eq!(std::fs::read(db.join("seg-000001.fs2")).unwrap(), bytes, "kept as it was");
        drop(s);
        // An identical one is removed (an interrupted move).
        std::fs::copy(&to, db.join("seg-000001.fs2")).unwrap();
        let s = Storage::open(&db, Options::default()).unwrap();
        assert!(s.open_warnings().iter().any(|w| w.contains("removed the old copy")), "{:?}", s.open_warnings());
        assert!(!db.join("seg-000001.fs2").exists() && to.exists());
        assert_eq!(data(&s, 2), Some(b"two".to_vec()));
    })
}

#[test]
fn the_oid_allocator_never_wraps_and_never_repeats() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::create(t.path(), Options::default()).unwrap();
        commit(&s, &[(u64::MAX - 1, b"a")]);
        assert_eq!(s.new_oid().unwrap(), Oid(u64::MAX));
        let exhausted = |r: Result<Oid, Error>| matches!(&r, Err(Error::Invalid(m)) if m.contains("exhausted"));
        assert!(exhausted(s.new_oid()));
        assert!(exhausted(s.new_oid()), "and stays so");
        assert!(exhausted(s.begin().new_oid()));
        drop(s);
        let s = Storage::open(t.path(), Options::default()).unwrap();
        // Oid MAX was only allocated, never stored: a reopen may hand it out once more.
        assert_eq!(s.new_oid().unwrap(), Oid(u64::MAX));
        commit(&s, &[(u64::MAX, b"b")]);
        assert!(exhausted(s.new_oid()));
        drop(s);
        for opts in [Options::default(), Options::read_only()] {
            let s = Storage::open(t.path(), opts).unwrap();
            assert!(exhausted(s.new_oid()), "across a reopen");
        }
        let s = Storage::open(t.path(), Options::default()).unwrap();
        assert_eq!(data(&s, u64::MAX), Some(b"b".to_vec()));
        assert_eq!(data(&s, 0), None, "never wrapped to the root");
    })
}

fn garbage(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 13) as u8 | 1).collect()
}

#[test]
fn stray_files_named_like_segments_are_ignored_and_moved_aside_by_repair() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        let s = Storage::create(&db, Options::default()).unwrap();
        commit(&s, &[(1, b"one")]);
        s.rotate().unwrap();
        commit(&s, &[(1, b"uno")]);
        drop(s);
        // Another storage's segment (a valid header, another storage id), newer by name.
        let other = t.path().join("other");
        let o = Storage::create(&other, Options::default()).unwrap();
        for _ in 0..4 {
            o.rotate().unwrap();
        }
        drop(o);
        let strays: [(&str, Vec<u8>); 3] = [
            ("seg-000009.fs2", garbage(5000)),
            ("seg-000003.fs2", Vec::new()),
            ("seg-000005.fs2", std::fs::read(other.join("seg-000005.fs2")).unwrap()),
        ];
        for (n, b) in &strays {
            std::fs::write(db.join(n), b).unwrap();
        }
        for opts in [Options::read_only(), Options::default()] {
            let s = Storage::open(&db, opts).unwrap();
            assert_eq!(data(&s, 1), Some(b"uno".to_vec()));
            assert_eq!(s.strays().len(), 3, "{:?}", s.strays());
            assert!(s.open_warnings().iter().filter(|w| w.contains("not part of this storage's chain")).count() == 3);
        }
        let s = Storage::open(&db, Options::default()).unwrap();
        commit(&s, &[(2, b"two")]);
        drop(s);
        let r = filestorage2::check::check(&db, false, Options::default(), &mut |_, _| {}).unwrap();
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        let r = filestorage2::check::check(&db, true, Options::default(), &mut |_, _| {}).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.repaired.iter().filter(|x| x.contains("moved aside")).count(), 3, "{:?}", r.repaired);
        for (n, b) in &strays {
            assert!(!db.join(n).exists());
            assert_eq!(&std::fs::read(db.join("stray").join(n)).unwrap(), b, "moved, never changed");
        }
        checked(&db);
        let s = Storage::open(&db, Options::default()).unwrap();
        assert!(s.strays().is_empty() && s.open_warnings().is_empty(), "{:?}", s.open_warnings());
        assert_eq!(data(&s, 2), Some(b"two".to_vec()));
    })
}

#[test]
fn a_rotation_onto_a_strays_name_moves_the_stray_aside() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::create(t.path(), Options::default()).unwrap();
        commit(&s, &[(1, b"one")]);
        drop(s);
        std::fs::write(t.path().join("seg-000002.fs2"), garbage(100)).unwrap();
        let s = Storage::open(t.path(), Options::default()).unwrap();
        assert_eq!(s.rotate().unwrap(), SegmentName::single(2));
        assert_eq!(std::fs::read(t.path().join("stray/seg-000002.fs2")).unwrap(), garbage(100));
        commit(&s, &[(1, b"uno")]);
        // The stray's old path is the active segment now: repair must not move it.
        assert!(s.move_strays_aside().unwrap().is_empty());
        drop(s);
        checked(t.path());
        assert_eq!(data(&Storage::open(t.path(), Options::read_only()).unwrap(), 1), Some(b"uno".to_vec()));
    })
}

/// Damage is not a stray: the active segment with a broken header, after a sealed one,
/// is reported, not skipped (skipping it would hide its transactions).
#[test]
fn the_active_segment_with_a_damaged_header_is_damage_not_a_stray() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::create(t.path(), Options::default()).unwrap();
        commit(&s, &[(1, b"one")]);
        s.rotate().unwrap();
        commit(&s, &[(1, b"uno")]);
        drop(s);
        let active = t.path().join("seg-000002.fs2");
        let mut b = std::fs::read(&active).unwrap();
        b[0] ^= 0xff;
        std::fs::write(&active, &b).unwrap();
        // Contained (issue 10 item 4): the header is rebuilt from the sealed segment's,
        // the damage reported, and the active segment's transactions served.
        for opts in [Options::read_only(), Options::default()] {
            let s = Storage::open(t.path(), opts).unwrap();
            let damage = s.open_damage().join("\n");
            assert!(damage.contains("seg-000002.fs2") && damage.contains("header is damaged"), "{damage}");
            assert!(s.strays().is_empty(), "{:?}", s.strays());
            assert_eq!(data(&s, 1), Some(b"uno".to_vec()), "the damaged active segment was skipped");
        }
        assert_eq!(std::fs::read(&active).unwrap(), b, "left as it was");
    })
}

#[test]
fn an_unwritable_archive_refuses_the_merge_and_never_blocks_opening() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        let s = three_segments(&db);
        // `archive` is a regular file: no one, root included, can create files in it.
        std::fs::write(db.join("archive"), b"not a directory").unwrap();
        let before = tree(&db);
        let r = s.merge(&Policy::All);
        assert!(matches!(&r, Err(e) if e.to_string().contains("archive")), "{r:?}");
        assert_eq!(tree(&db), before, "nothing merged, nothing written");
        assert_eq!(s.segments().unwrap().len(), 3);
        commit(&s, &[(5, b"five")]);
        drop(s);
        std::fs::remove_file(db.join("archive")).unwrap();
        let s = Storage::open(&db, Options::default()).unwrap();
        s.merge(&Policy::All).unwrap().unwrap();
        drop(s);
        // A merged-away input left in place (a crash before archiving), and the archive
        // unusable by then: the storage opens, warns, and archives it later.
        let archived = db.join("archive/seg-000001.fs2");
        std::fs::rename(&archived, db.join("seg-000001.fs2")).unwrap();
        std::fs::remove_dir_all(db.join("archive")).unwrap();
        std::fs::write(db.join("archive"), b"not a directory").unwrap();
        let s = Storage::open(&db, Options::default()).unwrap();
        let w = s.open_warnings().join("\n");
        assert!(w.contains("could not move it to the archive"), "{w}");
        assert_eq!(data(&s, 2), Some(b"two".to_vec()));
        commit(&s, &[(6, b"six")]);
        drop(s);
        assert!(Storage::open(&db, Options::read_only()).is_ok());
        std::fs::remove_file(db.join("archive")).unwrap();
        let s = Storage::open(&db, Options::default()).unwrap();
        assert!(s.open_warnings().iter().any(|w| w.contains("merged away; moved to")), "{:?}", s.open_warnings());
        assert!(archived.exists() && !db.join("seg-000001.fs2").exists());
        drop(s);
        checked(&db);
    })
}

/// The active segment's path and where its data ends (before preallocated zeros).
fn active_and_end(dir: &Path) -> (PathBuf, u64) {
    let s = Storage::open(dir, Options::read_only()).unwrap();
    let a = s.segments().unwrap().pop().unwrap();
    (a.path, a.data_end)
}

#[test]
fn a_dropped_tail_keeps_its_bytes_but_not_the_preallocated_zeros() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::create(t.path(), Options::default()).unwrap();
        commit(&s, &[(1, b"one")]);
        commit(&s, &[(1, b"two")]);
        drop(s);
        let (active, end) = active_and_end(t.path());
        let len = std::fs::metadata(&active).unwrap().len();
        assert!(len >= end + (1 << 20), "the writer preallocated zeros ahead");
        // A torn write inside the preallocated space: 60 bytes, then zeros to the end.
        let head = std::fs::read(&active).unwrap()[4096..4096 + 64].to_vec();
        let torn: Vec<u8> = head.iter().map(|b| b | 1).take(60).collect();
        let f = std::fs::OpenOptions::new().write(true).open(&active).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &torn, end).unwrap();
        drop(f);
        let s = Storage::open(t.path(), Options::default()).unwrap();
        assert!(s.open_warnings().iter().any(|w| w.contains("dropped an unfinished tail")), "{:?}", s.open_warnings());
        let kept = PathBuf::from(format!("{}.dropped-{end}", active.display()));
        assert_eq!(std::fs::read(&kept).unwrap(), torn, "the torn bytes, without the zeros after them");
        assert_eq!(data(&s, 1), Some(b"two".to_vec()));
    })
}

/// The mount's `stats` file, through the file-system layer (no kernel needed).
fn mounted_stats(s: &Storage) -> String {
    use filestorage2::fs::{Fs, Ino};
    let fs = Fs::new(s.clone());
    let e = fs.lookup(Ino::ROOT, "stats").unwrap();
    let o = fs.open(e.attr.ino, false).unwrap();
    String::from_utf8(fs.read(o.fh, 0, 1 << 16).unwrap()).unwrap()
}

#[test]
fn a_read_only_open_says_when_it_ignores_an_unreadable_tail() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::create(t.path(), Options::default()).unwrap();
        let t1 = commit(&s, &[(1, b"one")]);
        commit(&s, &[(1, b"two")]);
        drop(s);
        let (active, _) = active_and_end(t.path());
        // Cut the last transaction in half: a torn write, or damage; they look alike.
        let s = Storage::open(t.path(), Options::read_only()).unwrap();
        let last = s.transactions(Tid::ZERO, Tid::MAX).last().unwrap().unwrap();
        assert!(s.ignored_tail().is_none());
        assert!(mounted_stats(&s).contains("ignored_tail: -\n"));
        drop(s);
        let f = std::fs::OpenOptions::new().write(true).open(&active).unwrap();
        f.set_len(last.offset + 40).unwrap();
        drop(f);
        let s = Storage::open(t.path(), Options::read_only()).unwrap();
        let tail = s.ignored_tail().expect("the ignored tail is part of the result").clone();
        let stats = mounted_stats(&s);
        let line = format!("ignored_tail: 40 bytes at {}:{}\n", active.display(), last.offset);
        assert!(stats.contains(&line), "the mount's stats file shows it: {stats}");
        assert_eq!((tail.segment.clone(), tail.offset, tail.bytes), (active.clone(), last.offset, 40));
        assert!(tail.to_string().contains("ignored 40 unreadable bytes"), "{tail}");
        assert_eq!(s.load(Oid(1)).unwrap(), Some((t1, b"one".to_vec())), "reads answer as of before it");
        drop(s);
        let s = Storage::open(t.path(), Options::default()).unwrap();
        assert!(s.ignored_tail().is_none(), "a writable open drops the tail instead");
        drop(s);
        assert!(Storage::open(t.path(), Options::read_only()).unwrap().ignored_tail().is_none());
    })
}

/// A past segment in the middle of the chain with a damaged header is damage, not a
/// stray: `check --repair` reports it and leaves it in place (moving it aside would cut
/// the chain), `--salvage` writes the header back, and then the storage checks ok.
#[test]
fn a_past_segment_with_a_damaged_header_is_damage_never_moved_aside() {
    within(60, || {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::create(t.path(), Options::default()).unwrap();
        commit(&s, &[(1, b"one")]);
        s.rotate().unwrap();
        commit(&s, &[(2, b"two")]);
        s.rotate().unwrap();
        commit(&s, &[(3, b"three")]);
        drop(s);
        let middle = t.path().join("seg-000002.fs2");
        let mut b = std::fs::read(&middle).unwrap();
        b[20] ^= 0xff; // the fixed part of the header
        std::fs::write(&middle, &b).unwrap();
        let s = Storage::open(t.path(), Options::read_only()).unwrap();
        assert!(s.strays().is_empty(), "{:?}", s.strays());
        assert!(s.open_damage().iter().any(|d| d.contains("seg-000002.fs2")), "{:?}", s.open_damage());
        for (o, v) in [(1, "one"), (2, "two"), (3, "three")] {
            assert_eq!(data(&s, o), Some(v.as_bytes().to_vec()));
        }
        drop(s);
        let r = filestorage2::check::check(t.path(), true, Options::default(), &mut |_, _| {}).unwrap();
        assert!(!r.ok() && r.problems.iter().any(|p| p.contains("seg-000002.fs2")), "{:?}", r.problems);
        assert!(r.repaired.iter().all(|l| !l.contains("moved aside")), "{:?}", r.repaired);
        assert_eq!(std::fs::read(&middle).unwrap(), b, "left in place, as it was");
        assert!(!t.path().join("stray").exists());
        let said = filestorage2::check::salvage(t.path(), Options::default()).unwrap();
        assert!(said.iter().any(|l| l.contains("rewrote the damaged header")), "{said:?}");
        checked(t.path());
        assert_eq!(data(&Storage::open(t.path(), Options::default()).unwrap(), 2), Some(b"two".to_vec()));
    })
}
