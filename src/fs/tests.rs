//! The fs layer without the kernel: names, attributes, contents, listings and
//! refusals, compared with the engine's answers.

use super::*;
use crate::listing::PAGE;
use crate::{Oid, Options, SegmentName};
use std::sync::atomic::Ordering;

struct Fixture {
    _dir: tempfile::TempDir,
    fs: Fs,
    tids: Vec<Tid>,
}

/// Three transactions in a past segment, two in the active one; oid 3 deleted.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(dir.path(), Options { sync: false, ..Options::default() }).unwrap();
    let mut tids = Vec::new();
    let mut commit = |stores: &[(u64, &[u8])], deletes: &[u64]| {
        let mut t = s.begin();
        for (o, d) in stores {
            t.store(Oid(*o), d).unwrap();
        }
        for o in deletes {
            t.delete(Oid(*o)).unwrap();
        }
        t.set_user(b"tester");
        t.set_description(b"a \"test\"\n");
        tids.push(t.commit().unwrap());
    };
    commit(&[(1, b"one"), (2, b"two"), (3, b"three")], &[]);
    commit(&[(2, b"TWO")], &[]);
    commit(&[(1, b"ONE!")], &[]);
    s.rotate().unwrap();
    commit(&[], &[3]);
    commit(&[(4, b"four")], &[]);
    Fixture { _dir: dir, fs: Fs::new(s), tids }
}

fn path(fs: &Fs, p: &str) -> FsResult<Entry> {
    let mut ino = Ino::ROOT;
    let mut last = None;
    for part in p.split('/').filter(|x| !x.is_empty()) {
        let e = fs.lookup(ino, part)?;
        ino = e.attr.ino;
        last = Some(e);
    }
    Ok(last.expect("a non-empty path"))
}

fn cat(fs: &Fs, p: &str) -> FsResult<Vec<u8>> {
    let e = path(fs, p)?;
    let o = fs.open(e.attr.ino, false)?;
    let mut out = Vec::new();
    loop {
        let b = fs.read(o.fh, out.len() as u64, 3)?;
        if b.is_empty() {
            break;
        }
        assert!(b.len() <= 3, "never more than asked");
        out.extend(b);
    }
    fs.release(o.fh);
    Ok(out)
}

/// Names of a directory, read in calls that take at most `per_call` entries each.
fn ls(fs: &Fs, p: &str, per_call: usize, plus: bool) -> Vec<String> {
    let ino = if p.is_empty() { Ino::ROOT } else { path(fs, p).unwrap().attr.ino };
    let fh = fs.opendir(ino).unwrap();
    let mut names = Vec::new();
    let mut offset = 0;
    loop {
        let mut got = Vec::new();
        fs.readdir(ino, fh, offset, plus, &mut |e| {
            if got.len() == per_call {
                return true;
            }
            assert_eq!(e.entry.is_some(), plus);
            got.push((e.cookie, e.name.clone()));
            false
        })
        .unwrap();
        if got.is_empty() {
            break;
        }
        offset = got.last().unwrap().0;
        names.extend(got.into_iter().map(|g| g.1));
    }
    fs.releasedir(fh);
    names.retain(|n| n != "." && n != "..");
    names
}

fn errno(r: FsResult<impl std::fmt::Debug>) -> i32 {
    r.expect_err("should be refused").errno
}

#[test]
fn root_head_and_at_show_the_engine_state() {
    let f = fixture();
    let fs = &f.fs;
    let last = *f.tids.last().unwrap();
    let root = ["README", "archive", "gc", "head", "history", "merge", "segments", "stats", "transactions", "txn"];
    assert_eq!(ls(fs, "", 100, true), root);
    assert_eq!(cat(fs, "head/at").unwrap(), format!("{last}\n").as_bytes());
    assert_eq!(ls(fs, "head", 100, true), ["at", "0000000000000001", "0000000000000002", "0000000000000004"]);
    for o in [1u64, 2, 4] {
        let want = fs.storage().load(Oid(o)).unwrap().unwrap();
        let p = format!("head/{}", Oid(o));
        assert_eq!(cat(fs, &p).unwrap(), want.1);
        let e = path(fs, &p).unwrap();
        assert_eq!(e.attr.size, want.1.len() as u64);
        assert_eq!(e.attr.mtime, tid_time(want.0, UNIX_EPOCH));
        assert_eq!(e.entry_ttl, SHORT_TTL, "head names change on commit");
        assert_eq!(e.attr_ttl, LONG_TTL, "a revision never changes");
    }
    assert_eq!(errno(path(fs, "head/0000000000000003")), libc::ENOENT, "deleted");
    let at = format!("@{}", f.tids[1]);
    assert_eq!(cat(fs, &format!("{at}/at")).unwrap(), format!("{}\n", f.tids[1]).as_bytes());
    assert_eq!(ls(fs, &at, 2, false), ["at", "0000000000000001", "0000000000000002", "0000000000000003"]);
    assert_eq!(cat(fs, &format!("{at}/0000000000000001")).unwrap(), b"one");
    assert_eq!(cat(fs, &format!("{at}/0000000000000002")).unwrap(), b"TWO");
    // The same revision has one inode wherever it is reached.
    let a = path(fs, &format!("{at}/0000000000000002")).unwrap().attr.ino;
    let b = path(fs, &format!("history/0000000000000002/{}", f.tids[1])).unwrap().attr.ino;
    assert_eq!(a, b);
    // An ISO time resolves to the state at that time.
    let iso = format!("@{}", f.tids[1].iso8601());
    let t: Tid = String::from_utf8(cat(fs, &format!("{iso}/at")).unwrap()).unwrap().trim().parse().unwrap();
    assert!((t.to_unix() - f.tids[1].to_unix()).abs() < 2e-6, "microsecond precision");
    let want = fs.storage().load_at(Oid(2), t).unwrap().unwrap().1;
    assert_eq!(cat(fs, &format!("{iso}/0000000000000002")).unwrap(), want);
}

#[test]
fn malformed_missing_and_out_of_range_names_are_enoent() {
    let f = fixture();
    let fs = &f.fs;
    let last = *f.tids.last().unwrap();
    for p in [
        "nothing",
        "head/1",
        "head/000000000000000A",
        "head/0x00000000000001",
        "head/00000000000000010",
        "head/0000000000000009",
        "@123",
        "@tomorrow",
        "history/0000000000000009",
        "history/0000000000000001/0000000000000001",
        "transactions/0000000000000001",
        "segments/seg-1",
        "segments/seg-000009",
        "segments/seg-000001/0000000000000004",
    ] {
        assert_eq!(errno(path(fs, p)), libc::ENOENT, "{p}");
    }
    assert_eq!(errno(path(fs, &format!("@{}", Tid(last.0 + 1)))), libc::ENOENT, "newer than head");
    assert_eq!(errno(path(fs, &format!("@{}", Tid(f.tids[0].0 - 1)))), libc::ENOENT, "older than retained");
    assert_eq!(errno(path(fs, "README/x")), libc::ENOTDIR);
}

#[test]
fn history_transactions_and_segments() {
    let f = fixture();
    let fs = &f.fs;
    let t = &f.tids;
    assert_eq!(
        ls(fs, "history", 1, true),
        ["0000000000000001", "0000000000000002", "0000000000000003", "0000000000000004"]
    );
    assert_eq!(ls(fs, "history/0000000000000003", 1, true), [t[0].to_string(), format!("{}.deleted", t[3])]);
    assert_eq!(cat(fs, &format!("history/0000000000000003/{}.deleted", t[3])).unwrap(), b"");
    assert_eq!(errno(path(fs, &format!("history/0000000000000003/{}", t[3]))), libc::ENOENT);
    let all: Vec<String> = t.iter().map(|x| x.to_string()).collect();
    assert_eq!(ls(fs, "transactions", 1, true), all);
    assert_eq!(ls(fs, "transactions", 2, false), all);
    assert_eq!(ls(fs, &format!("transactions/{}", t[3]), 10, true), ["info", "0000000000000003.deleted"]);
    let info = String::from_utf8(cat(fs, &format!("transactions/{}/info", t[0])).unwrap()).unwrap();
    assert!(info.contains(&format!("tid: {}\n", t[0])), "{info}");
    assert!(info.contains("user: tester\n") && info.contains("description: a \\\"test\\\"\\n\n"), "{info}");
    assert!(info.contains("objects: 3\n") && info.contains("segment: seg-000001\n"), "{info}");
    assert_eq!(cat(fs, &format!("transactions/{}/0000000000000002", t[1])).unwrap(), b"TWO");

    let segs = fs.storage().segments().unwrap();
    assert_eq!(ls(fs, "segments", 1, true), ["seg-000001", "seg-000002"]);
    // A segment directory lists its file and info only: the records and txns are
    // lookup-only, so that a copy of it is the archive unit.
    assert_eq!(ls(fs, "segments/seg-000001", 2, true), ["info", "seg-000001.fs2"]);
    assert_eq!(ls(fs, "segments/seg-000002", 10, true), ["info", "seg-000002.fs2"]);
    assert_eq!(cat(fs, "segments/seg-000001/0000000000000001").unwrap(), b"ONE!");
    assert_eq!(cat(fs, "segments/seg-000002/0000000000000003.deleted").unwrap(), b"");
    assert_eq!(cat(fs, "segments/seg-000001/seg-000001.fs2").unwrap(), std::fs::read(&segs[0].path).unwrap());
    assert_eq!(cat(fs, "segments/seg-000001/data").unwrap(), std::fs::read(&segs[0].path).unwrap());
    let txns = String::from_utf8(cat(fs, "segments/seg-000001/txns").unwrap()).unwrap();
    assert_eq!(txns.lines().count(), 3);
    assert!(txns.starts_with(&format!("{} 3 ", t[0])), "{txns}");
    let info = String::from_utf8(cat(fs, "segments/seg-000002/info").unwrap()).unwrap();
    assert!(info.contains("state: active\n") && info.contains("previous: seg-000001.fs2\n"), "{info}");
    assert!(info.contains("sealed_length: -\n") && info.contains("data_crc32c: -\n"), "{info}");
    let info = String::from_utf8(cat(fs, "segments/seg-000001/info").unwrap()).unwrap();
    let id = fs.storage().segment_bytes(segs[0].name).unwrap();
    let want = crate::backup::data_crc32c(|b, o| id.read_at(b, o), segs[0].bytes).unwrap();
    assert!(info.contains(&format!("sealed_length: {}\n", segs[0].bytes)), "{info}");
    assert!(info.contains(&format!("data_crc32c: {want:08x}\n")) && info.contains("storage_id: "), "{info}");
    let stats = String::from_utf8(cat(fs, "stats").unwrap()).unwrap();
    assert!(stats.contains("objects: 3\n") && stats.contains("segments: 2\n"), "{stats}");
}

#[test]
fn listings_page_through_the_engine_with_stable_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(dir.path(), Options { sync: false, ..Options::default() }).unwrap();
    let mut t = s.begin();
    for o in 0..(3 * PAGE as u64 + 7) {
        t.store(Oid(o * 3), &o.to_le_bytes()).unwrap();
    }
    t.commit().unwrap();
    let fs = Fs::new(s);
    let one_pass = ls(&fs, "head", usize::MAX, true);
    assert_eq!(one_pass.len(), 3 * PAGE + 8);
    assert_eq!(ls(&fs, "head", 5, true), one_pass);
    assert_eq!(ls(&fs, "head", 1, false), one_pass);
    // A resumed listing continues by key: an object created meanwhile at a larger oid
    // appears, one at a smaller oid does not shift anything.
    let head = path(&fs, "head").unwrap().attr.ino;
    let fh = fs.opendir(head).unwrap();
    let mut first = Vec::new();
    fs.readdir(head, fh, 0, false, &mut |e| {
        first.push((e.cookie, e.name.clone()));
        first.len() > 10
    })
    .unwrap();
    let mut t = fs.storage().begin();
    t.store(Oid(1), b"new small").unwrap();
    t.commit().unwrap();
    let mut rest = Vec::new();
    fs.readdir(head, fh, first.last().unwrap().0, false, &mut |e| {
        rest.push(e.name.clone());
        false
    })
    .unwrap();
    assert_eq!(rest[0], Oid(10 * 3 - 3 * 2).to_string());
    assert!(!rest.contains(&Oid(1).to_string()));
}

#[test]
fn readdirplus_counts_lookups_only_for_taken_entries() {
    let f = fixture();
    let fs = &f.fs;
    let head = path(fs, "head").unwrap().attr.ino;
    let fh = fs.opendir(head).unwrap();
    let mut taken = Vec::new();
    fs.readdir(head, fh, 0, true, &mut |e| {
        if taken.len() == 4 {
            return true; // refuse the 5th entry
        }
        taken.push(e.clone());
        false
    })
    .unwrap();
    // ., .., at, oid 1 taken; oid 2 offered and refused.
    let one = taken[3].ino;
    assert_eq!(taken[3].name, "0000000000000001");
    let two = fs.storage().load(Oid(2)).unwrap().unwrap().0;
    assert_eq!(fs.inodes.lock().unwrap().peek(Node::Rev(Oid(2), two)), None, "a refused entry holds no inode");
    fs.forget(one, 1);
    assert_eq!(fs.node(one).unwrap_err().errno, libc::ESTALE, "forgotten after its one lookup");
}

#[test]
fn writes_are_refused_and_damage_is_eio() {
    let f = fixture();
    let fs = &f.fs;
    let e = path(fs, "head/0000000000000001").unwrap();
    assert_eq!(errno(fs.open(e.attr.ino, true)), libc::EROFS);
    // Damage a record in the sealed segment: reads fail with EIO, never wrong bytes.
    let segs = fs.storage().segments().unwrap();
    let mut bytes = std::fs::read(&segs[0].path).unwrap();
    let at = bytes.windows(4).position(|w| w == b"ONE!").unwrap();
    bytes[at] = b'X';
    std::fs::write(&segs[0].path, &bytes).unwrap();
    assert_eq!(errno(cat(fs, "segments/seg-000001/0000000000000001")), libc::EIO);
    assert_eq!(errno(cat(fs, "head/0000000000000001")), libc::EIO);
}

#[test]
fn every_refusal_and_unoffered_operation_has_its_errno() {
    let f = fixture();
    let fs = &f.fs;
    let head = path(fs, "head").unwrap().attr.ino;
    let rev = path(fs, "head/0000000000000001").unwrap().attr.ino;
    let set = |change: SetAttr| fs.setattr(rev, change);
    assert_eq!(errno(set(SetAttr { mode: Some(0o600), ..SetAttr::default() })), libc::EPERM, "chmod");
    assert_eq!(errno(set(SetAttr { uid: Some(0), ..SetAttr::default() })), libc::EPERM, "chown");
    assert_eq!(errno(set(SetAttr { gid: Some(0), ..SetAttr::default() })), libc::EPERM, "chgrp");
    assert_eq!(errno(set(SetAttr { size: Some(0), ..SetAttr::default() })), libc::EROFS, "truncate");
    assert_eq!(errno(set(SetAttr::default())), libc::EROFS, "touch");
    assert_eq!(errno(fs.access(rev, true)), libc::EROFS);
    fs.access(rev, false).unwrap();
    assert_eq!(errno(fs.mknod(head, "x")), libc::EROFS);
    assert_eq!(errno(fs.symlink(head, "x")), libc::EPERM);
    assert_eq!(errno(fs.link(head, "x")), libc::EPERM);
    assert_eq!(errno(fs.rename(head, "0000000000000001", head)), libc::EROFS);
    let e = fs.rename(head, "0000000000000001", Ino::ROOT).unwrap_err();
    assert_eq!(e.errno, libc::EXDEV, "mv copies instead");
    assert!(e.message.contains("head/0000000000000001"), "{e}");
    assert_eq!(errno(fs.fallocate(rev)), libc::EROFS);
    assert_eq!(not_offered(NotOffered::Ioctl).errno, libc::ENOTTY);
    assert_eq!(not_offered(NotOffered::Xattr).errno, libc::ENOSYS);
    assert_eq!(not_offered(NotOffered::CopyFileRange).errno, libc::ENOSYS);

    // In a transaction: times and sizes change a staged object, owners and modes never.
    let txn = path(fs, "txn").unwrap().attr.ino;
    fs.mkdir(txn, "t").unwrap();
    write_file(fs, "txn/t/0000000000000001", W, b"staged").unwrap();
    let obj = path(fs, "txn/t/0000000000000001").unwrap().attr.ino;
    assert_eq!(fs.setattr(obj, SetAttr::default()).unwrap().0.size, 6, "touch");
    assert_eq!(fs.setattr(obj, SetAttr { size: Some(2), ..SetAttr::default() }).unwrap().0.size, 2);
    assert_eq!(errno(fs.setattr(obj, SetAttr { mode: Some(0o600), ..SetAttr::default() })), libc::EPERM);
    fs.access(obj, true).unwrap();
    fs.shutdown();
}

#[test]
fn statfs_reports_the_real_disk() {
    let f = fixture();
    let st = f.fs.statfs().unwrap();
    assert!(st.blocks > 0 && st.bsize > 0 && st.namelen > 0);
}

#[test]
fn snapshots_inside_merged_history_are_enoent() {
    let f = fixture();
    let fs = &f.fs;
    let s = fs.storage();
    s.rotate().unwrap();
    let mut t = s.begin();
    t.store(Oid(2), b"late").unwrap();
    let late = t.commit().unwrap();
    s.merge(&crate::merge::Policy::All).unwrap();
    let merged = s.segments().unwrap()[0].clone();
    assert!(merged.name.first < merged.name.last, "{}", merged.name);
    let end = merged.last_tid.unwrap();
    for inside in [f.tids[0], f.tids[1], Tid(end.0 - 1)] {
        assert_eq!(errno(path(fs, &format!("@{inside}"))), libc::ENOENT, "{inside}");
    }
    assert_eq!(cat(fs, &format!("@{end}/0000000000000002")).unwrap(), b"TWO");
    assert_eq!(cat(fs, &format!("@{late}/0000000000000002")).unwrap(), b"late");
}

#[test]
fn immutable_files_keep_the_page_cache_and_status_files_bypass_it() {
    let f = fixture();
    let fs = &f.fs;
    let open = |p: &str| {
        let o = fs.open(path(fs, p).unwrap().attr.ino, false).unwrap();
        fs.release(o.fh);
        (o.keep_cache, o.direct_io)
    };
    let keep = (true, false);
    let direct = (false, true);
    assert_eq!(open("head/0000000000000001"), keep);
    assert_eq!(open(&format!("history/0000000000000003/{}.deleted", f.tids[3])), keep);
    assert_eq!(open(&format!("transactions/{}/info", f.tids[0])), keep);
    assert_eq!(open("segments/seg-000001/data"), keep, "a sealed segment never changes");
    assert_eq!(open("segments/seg-000002/data"), direct, "the active segment grows");
    for p in ["head/at", "stats", "segments/seg-000001/info", "segments/seg-000001/txns"] {
        assert_eq!(open(p), direct, "{p}");
    }
    let (attr, ttl) = fs.getattr(path(fs, "head/at").unwrap().attr.ino).unwrap();
    assert_eq!((attr.size, ttl), (17, SHORT_TTL));
    let rev = path(fs, "head/0000000000000004").unwrap().attr.ino;
    assert_eq!(fs.getattr(rev).unwrap().1, LONG_TTL);
}

/// A segment with an appended region (semi-sequential merge): its listings, per-oid
/// files and `info` cover the region; states inside the source's range are gone, the
/// state at the source's end is exact.
#[test]
fn segments_with_appended_regions() {
    let f = fixture();
    let fs = &f.fs;
    let s = fs.storage();
    s.rotate().unwrap(); // seg 2 (tids 3, 4) is past now; seg 3 is active
    let names = |n: u64| crate::SegmentName::single(n);
    let append = crate::merge::Strategy::Append(crate::AsOf::Source);
    s.merge_with(&crate::merge::Policy::Named(vec![names(1), names(2)]), append).unwrap().unwrap();
    assert_eq!(ls(fs, "segments", 1, false), ["seg-000002", "seg-000003"]);
    let txns = String::from_utf8(cat(fs, "segments/seg-000002/txns").unwrap()).unwrap();
    let listed: Vec<&str> = txns.lines().map(|l| l.split(' ').next().unwrap()).collect();
    let want: Vec<String> = f.tids.iter().map(|t| t.to_string()).collect();
    assert_eq!(listed, want, "seg 1's transactions (each keeps a newest record), then seg 2's");
    assert_eq!(txns.lines().next().unwrap().split(' ').nth(1), Some("1"), "of the first, only oid 3 is left");
    assert_eq!(cat(fs, "segments/seg-000002/0000000000000001").unwrap(), b"ONE!", "from the appended region");
    assert_eq!(cat(fs, "segments/seg-000002/0000000000000004").unwrap(), b"four");
    let info = String::from_utf8(cat(fs, "segments/seg-000002/info").unwrap()).unwrap();
    assert!(info.contains("appended: seg-000001 as of source-end"), "{info}");
    assert_eq!(errno(path(fs, &format!("@{}", f.tids[1]))), libc::ENOENT, "inside seg 1's range");
    assert_eq!(cat(fs, &format!("@{}/0000000000000002", f.tids[2])).unwrap(), b"TWO", "seg 1's end");
    assert_eq!(cat(fs, &format!("@{}/0000000000000003", f.tids[2])).unwrap(), b"three");
    let data = cat(fs, "segments/seg-000002/data").unwrap();
    let g = &s.segments().unwrap()[0];
    assert_eq!(data, std::fs::read(&g.path).unwrap(), "data is the file, appended region included");
}

fn run(w: WriteDone) -> FsResult<u32> {
    match w {
        WriteDone::Now(n) => Ok(n),
        WriteDone::Later(job) => job(),
    }
}

fn write_file(fs: &Fs, p: &str, mode: OpenMode, data: &[u8]) -> FsResult<u32> {
    let o = fs.open_with(path(fs, p)?.attr.ino, mode)?;
    let r = fs.write(o.fh, 0, data).and_then(run);
    fs.release(o.fh);
    r
}

const W: OpenMode = OpenMode { write: true, truncate: true, append: false };

#[test]
fn txn_area_stages_commits_and_refuses() {
    let f = fixture();
    let fs = &f.fs;
    let last = *f.tids.last().unwrap();
    let txn = path(fs, "txn").unwrap().attr.ino;
    assert_eq!(errno(fs.mkdir(txn, "a/b")), libc::EINVAL);
    assert_eq!(errno(fs.mkdir(txn, "new")), libc::EINVAL);
    assert_eq!(errno(fs.mkdir(Ino::ROOT, "x")), libc::EROFS);
    fs.mkdir(txn, "t1").unwrap();
    assert_eq!(errno(fs.mkdir(txn, "t1")), libc::EEXIST);
    assert_eq!(ls(fs, "txn", 100, true), ["new", "t1"]);
    assert_eq!(cat(fs, "txn/t1/ctl").unwrap(), format!("open {last}\n").as_bytes());
    // Read-through, then staged writes, a new object, a deletion.
    assert_eq!(cat(fs, "txn/t1/0000000000000001").unwrap(), b"ONE!");
    write_file(fs, "txn/t1/0000000000000001", W, b"uno").unwrap();
    let t1 = path(fs, "txn/t1").unwrap().attr.ino;
    let new_oid: u64 =
        u64::from_str_radix(std::str::from_utf8(&cat(fs, "txn/t1/new-oid").unwrap()).unwrap().trim(), 16).unwrap();
    assert!(new_oid > 4);
    let name = format!("{:016x}", new_oid);
    assert_eq!(errno(fs.create(t1, "0000000000000002", true, false)), libc::EEXIST);
    assert_eq!(errno(fs.create(t1, "2", false, false)), libc::ENOENT);
    let (_, o) = fs.create(t1, &name, true, false).unwrap();
    assert_eq!(run(fs.write(o.fh, 0, b"fresh").unwrap()).unwrap(), 5);
    fs.release(o.fh);
    fs.unlink(t1, "0000000000000002").unwrap();
    assert_eq!(errno(fs.unlink(t1, "ctl")), libc::EPERM);
    assert_eq!(errno(path(fs, "txn/t1/0000000000000002")), libc::ENOENT);
    fs.truncate(path(fs, &format!("txn/t1/{name}")).unwrap().attr.ino, 3).unwrap();
    assert_eq!(ls(fs, "txn/t1", 100, true), ["ctl", "info", "new-oid", "0000000000000001", &name]);
    write_file(fs, "txn/t1/info", W, b"user alice\ndescription gc\n").unwrap();
    assert_eq!(errno(write_file(fs, "txn/t1/ctl", W, b"bogus\n")), libc::EINVAL);
    assert_eq!(cat(fs, "head/0000000000000001").unwrap(), b"ONE!", "nothing visible before commit");
    write_file(fs, "txn/t1/ctl", W, b"commit\n").unwrap();
    let tid = fs.storage().last_tid();
    assert_eq!(cat(fs, "txn/t1/ctl").unwrap(), format!("committed {tid}\n").as_bytes());
    assert_eq!(cat(fs, "head/0000000000000001").unwrap(), b"uno");
    assert_eq!(cat(fs, &format!("head/{name}")).unwrap(), b"fre");
    assert_eq!(errno(path(fs, "head/0000000000000002")), libc::ENOENT);
    assert_eq!(fs.storage().transaction(tid).unwrap().unwrap().meta.user, b"alice");
    fs.rmdir(txn, "t1").unwrap();
    assert_eq!(errno(path(fs, "txn/t1")), libc::ENOENT);

    // A conflict: ESTALE, ctl says which, nothing applied.
    fs.mkdir(txn, "a").unwrap();
    fs.mkdir(txn, "b").unwrap();
    write_file(fs, "txn/a/0000000000000004", W, b"A").unwrap();
    write_file(fs, "txn/b/0000000000000004", W, b"B").unwrap();
    write_file(fs, "txn/b/0000000000000001", W, b"B").unwrap();
    write_file(fs, "txn/a/ctl", W, b"commit").unwrap();
    let won = fs.storage().last_tid();
    assert_eq!(errno(write_file(fs, "txn/b/ctl", W, b"commit")), libc::ESTALE);
    assert_eq!(cat(fs, "txn/b/ctl").unwrap(), format!("conflict 0000000000000004 {won}\n").as_bytes());
    assert_eq!(cat(fs, "head/0000000000000001").unwrap(), b"uno");

    // The clone file: its transaction ends (aborted) when the descriptor closes.
    let clone = fs.open_with(path(fs, "txn/new").unwrap().attr.ino, OpenMode { write: true, ..OpenMode::default() });
    let clone = clone.unwrap();
    let n = String::from_utf8(fs.read(clone.fh, 0, 100).unwrap()).unwrap();
    let n = n.trim();
    write_file(fs, &format!("txn/{n}/0000000000000001"), W, b"never").unwrap();
    fs.release(clone.fh);
    assert_eq!(errno(path(fs, &format!("txn/{n}"))), libc::ENOENT);
    assert_eq!(cat(fs, "head/0000000000000001").unwrap(), b"uno");
    fs.shutdown();
}

#[test]
fn read_only_tree_hides_txn_and_refuses_merge() {
    let f = fixture();
    let fs = Fs::with_options(f.fs.storage().clone(), MountOptions { read_only: true, ..MountOptions::default() });
    assert!(!ls(&fs, "", 100, true).contains(&"txn".to_string()));
    assert_eq!(errno(path(&fs, "txn")), libc::ENOENT);
    assert_eq!(errno(write_file(&fs, "merge", W, b"all")), libc::EROFS);
    assert_eq!(cat(&fs, "merge").unwrap(), b"idle\n");
}

#[test]
fn others_may_write_only_with_allow_other_and_allow_other_write() {
    let f = fixture();
    let perms = |allow_other: bool, allow_other_write: bool| {
        let opts = MountOptions { allow_other, allow_other_write, ..MountOptions::default() };
        let fs = Fs::with_options(f.fs.storage().clone(), opts);
        let perm = |p: &str| path(&fs, p).unwrap().attr.perm;
        (perm("merge"), perm("txn"), perm("head/0000000000000001"))
    };
    assert_eq!(perms(false, false), (0o644, 0o755, 0o444));
    assert_eq!(perms(false, true), (0o644, 0o755, 0o444), "allow_other_write alone lets nobody else in");
    assert_eq!(perms(true, false), (0o644, 0o755, 0o444));
    assert_eq!(perms(true, true), (0o666, 0o777, 0o444));
}

#[test]
fn merge_commands_parse_and_run() {
    use crate::merge::{Policy, Strategy};
    use crate::types::AsOf;
    assert_eq!(parse_merge(b"all\n").unwrap(), MergeCmd { policy: Policy::All, strategy: Strategy::Copy });
    assert_eq!(parse_merge(b"policy").unwrap().policy, Policy::KeepAtMost(4));
    assert_eq!(parse_merge(b"policy 2").unwrap().policy, Policy::KeepAtMost(2));
    let c = parse_merge(b"seg-000001 seg-000002 --append target-end").unwrap();
    assert_eq!(c.policy, Policy::Named(vec![SegmentName::single(1), SegmentName::single(2)]));
    assert_eq!(c.strategy, Strategy::Append(AsOf::Target));
    for bad in [&b""[..], b"everything", b"all --append", b"policy x", b"seg-1"] {
        assert_eq!(parse_merge(bad).unwrap_err().errno, libc::EINVAL, "{}", String::from_utf8_lossy(bad));
    }
    let f = fixture();
    let fs = &f.fs;
    fs.storage().rotate().unwrap();
    assert_eq!(errno(write_file(fs, "merge", W, b"seg-000009")), libc::ENOENT);
    write_file(fs, "merge", W, b"all").unwrap();
    let text = String::from_utf8(cat(fs, "merge").unwrap()).unwrap();
    assert!(text.starts_with("merged seg-000001 seg-000002 into "), "{text}");
    assert_eq!(fs.take_vanished().len(), 2, "a copy merge replaces both inputs by a new segment");

    // While a merge runs: `cat merge` shows it and another merge command is EBUSY.
    let s = fs.storage();
    for round in 0..2u64 {
        let mut t = s.begin();
        for i in 0..20_000u64 {
            t.store(Oid(100 + i), &[round as u8; 200]).unwrap();
        }
        t.commit().unwrap();
        s.rotate().unwrap();
    }
    let h = s.start_merge_with(&Policy::All, Strategy::Copy).unwrap().unwrap();
    let busy = write_file(fs, "merge", W, b"all");
    let shown = String::from_utf8(cat(fs, "merge").unwrap()).unwrap();
    let finished_first = h.is_finished();
    h.wait().unwrap();
    if !finished_first {
        assert_eq!(errno(busy), libc::EBUSY);
        assert!(shown.starts_with("running seg-000001-000002 seg-000003"), "{shown}");
    }
}

/// Fault containment on the mount: a damaged transaction of the active segment (not the
/// last) costs its objects only: `ls head` lists the others (a damaged object with an
/// older revision is left out, not listed with that revision), `cat` of a damaged one is
/// EIO, of the others their data.
#[test]
fn a_damaged_transaction_costs_its_objects_only() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { preallocate: 0, alignment: 4096, ..Options::default() };
    let s = Storage::create(dir.path(), opts.clone()).unwrap();
    let commit = |stores: &[(u64, &[u8])]| {
        let mut t = s.begin();
        for (o, d) in stores {
            t.store(Oid(*o), d).unwrap();
        }
        t.commit().unwrap()
    };
    commit(&[(1, b"one"), (5, b"five")]);
    s.rotate().unwrap();
    commit(&[(2, b"two"), (3, b"three"), (1, b"ONE")]);
    commit(&[(4, b"four")]);
    let at = s.transactions(Tid::ZERO, Tid::MAX).nth(1).unwrap().unwrap().offset;
    drop(s);
    let seg = dir.path().join("seg-000002.fs2");
    let mut b = std::fs::read(&seg).unwrap();
    b[at as usize + 100] ^= 0xff; // inside the data of oid 2
    std::fs::write(&seg, b).unwrap();
    let s = Storage::open(dir.path(), Options { read_only: true, ..opts }).unwrap();
    let fs = Fs::new(s);
    let mut all = vec!["at".to_string()];
    all.extend([4u64, 5].iter().map(|o| Oid(*o).to_string()));
    assert_eq!(ls(&fs, "head", 100, true), all);
    assert_eq!(ls(&fs, "head", 1, false), all);
    assert_eq!(errno(cat(&fs, "head/0000000000000002")), libc::EIO);
    assert_eq!(errno(cat(&fs, "head/0000000000000003")), libc::EIO);
    assert_eq!(errno(cat(&fs, "head/0000000000000001")), libc::EIO, "its older revision is not the answer");
    assert_eq!(cat(&fs, "head/0000000000000004").unwrap(), b"four");
    assert_eq!(cat(&fs, "head/0000000000000005").unwrap(), b"five");
    assert_eq!(ls(&fs, "transactions", 100, true).len(), 2, "the damaged transaction is left out, not the rest");
}

/// The ZODB directories (`classes/`, `refs/`, `referrers/`, `gc`).
mod zodb;
