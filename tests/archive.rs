//! Archival by copying segment directories, end to end (issue 14): real `cp -r`, `cp -a`,
//! `tar` and `rsync -a` through a real mount, browsing the copies as they are (as another
//! user), `fs2 backup` of a live mounted storage, `fs2 restore`, and restores compared
//! object by object and revision by revision.

mod common;

use common::mount::{available, TestMount};
use filestorage2::fuse::MountOptions;
use filestorage2::merge::{Policy, Strategy};
use filestorage2::{AsOf, Oid, Options, SegmentName, Storage, Tid};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FS2: &str = env!("CARGO_BIN_EXE_fs2");

/// `fs2 args` under `timeout 60`, as root, or as uid 65534 with `nobody`.
fn fs2(nobody: bool, args: &[&str]) -> Output {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", "60"]);
    if nobody {
        c.args(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]);
    }
    let out = c.arg(FS2).args(args).env("RUST_LOG", "warn").output().expect("run fs2");
    assert_ne!(out.status.code(), Some(124), "fs2 {args:?} timed out");
    out
}

fn ok(nobody: bool, args: &[&str]) -> String {
    let out = fs2(nobody, args);
    assert!(out.status.success(), "fs2 {args:?}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Every retained revision of every object: oid -> [(tid, data or deleted)].
type Revisions = BTreeMap<Oid, Vec<(Tid, Option<Vec<u8>>)>>;

fn revisions(s: &Storage, upto: Tid) -> Revisions {
    let mut out = Revisions::new();
    let mut oid = Oid(0);
    while let Some(last) = s.max_oid() {
        if oid > last {
            break;
        }
        let mut revs = Vec::new();
        for r in s.history(oid).unwrap().into_iter().filter(|r| r.tid <= upto) {
            let data = s.revision(oid, r.tid).unwrap().unwrap().data;
            assert_eq!(data.is_none(), r.deleted);
            revs.push((r.tid, data));
        }
        if !revs.is_empty() {
            out.insert(oid, revs);
        }
        oid = Oid(oid.0 + 1);
    }
    out
}

/// A storage of `segments` segments (the last active), 40 objects written per segment
/// with distinct data, some deleted.
fn build(dir: &Path, segments: u64) -> Storage {
    let s = Storage::create(dir, Options { sync: false, ..Options::default() }).unwrap();
    for seg in 0..segments {
        for t in 0..2u64 {
            let mut txn = s.begin();
            for o in 0..40u64 {
                txn.store(
                    Oid(o + 1),
                    format!("segment {seg} txn {t} object {o} {}", "x".repeat(o as usize)).as_bytes(),
                )
                .unwrap();
            }
            if seg == 2 && t == 1 {
                txn.delete(Oid(7)).unwrap();
            }
            txn.commit().unwrap();
        }
        if seg + 1 < segments {
            s.rotate().unwrap();
        }
    }
    s
}

/// Names, sizes and modification times under `dir`: what opening must not change.
fn tree(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        out.push((e.path(), m.len(), m.modified().unwrap()));
        if m.is_dir() {
            out.extend(tree(&e.path()));
        }
    }
    out.sort();
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A temporary directory others may enter (the tests run commands as uid 65534).
fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn chown_nobody(dir: &Path) {
    let st = Command::new("chown").args(["-R", "65534:65534", p(dir)]).status().unwrap();
    assert!(st.success());
}

/// `cp -r`, `cp -a`, `tar` and `rsync -a` of `segments/<name>/` give the segment file
/// under its own name and `info`, with their true sizes: nothing per object.
#[test]
fn copy_tools_copy_a_segment_directory_as_the_segment_and_its_info() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = build(&dir.path().join("s"), 3);
    let m = TestMount::new(s.clone());
    let o = tempfile::tempdir().unwrap();
    let o = o.path();
    m.sh(&format!(
        "cp -r segments/seg-000002 {o}/r && cp -a segments/seg-000002 {o}/a && mkdir {o}/t {o}/y && \
         tar cf - -C segments seg-000002 | tar xf - -C {o}/t && rsync -a segments/seg-000002 {o}/y/",
        o = p(o)
    ));
    let seg = s.segments().unwrap()[1].clone();
    let bytes = std::fs::read(&seg.path).unwrap();
    let info = std::fs::read_to_string(m.path("segments/seg-000002/info")).unwrap();
    assert!(info.contains(&format!("sealed_length: {}\n", bytes.len())), "{info}");
    assert!(info.contains("previous: seg-000001.fs2\n") && info.contains("storage_id: "), "{info}");
    let crc = crc32c::crc32c(&bytes[4096..]);
    assert!(info.contains(&format!("data_crc32c: {crc:08x}\n")), "{info}");
    for copy in ["r", "a", "t/seg-000002", "y/seg-000002"] {
        let d = o.join(copy);
        assert_eq!(names(&d), ["info", "seg-000002.fs2"], "{copy}");
        assert_eq!(std::fs::read(d.join("seg-000002.fs2")).unwrap(), bytes, "{copy}");
        assert_eq!(std::fs::read_to_string(d.join("info")).unwrap(), info, "{copy}");
    }
    // Still there by name: the records, txns, and the old name of the file.
    assert_eq!(std::fs::read(m.path("segments/seg-000002/data")).unwrap(), bytes);
    assert!(std::fs::read(m.path("segments/seg-000002/0000000000000001")).unwrap().starts_with(b"segment 1 txn 1"));
    assert_eq!(std::fs::read_to_string(m.path("segments/seg-000002/txns")).unwrap().lines().count(), 2);
    let du = m.sh(&format!("du -sb {}/a | cut -f1", p(o)));
    assert!(du.trim().parse::<usize>().unwrap() < bytes.len() + 8192, "{du}");
}

/// Copies taken through the mount before and after a merge, owned by another user:
/// browsed as they are (a middle segment alone too) without a write, verified, refused
/// while they do not form a chain, completed with the mount's archive/, restored by
/// that user into a storage they can write to, and compared revision by revision.
#[test]
fn copies_are_browsed_verified_and_restored_by_another_user() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("s");
    let s = build(&sdir, 5);
    let m = TestMount::new(s.clone());
    let base = open_tempdir();
    let o = base.path();
    // Everything, as of now (the active segment too).
    m.sh(&format!("cp -a segments {}/all && cp -a segments/seg-000004 {}/pre4", p(o), p(o)));
    let at_copy = s.last_tid();
    let before = revisions(&s, Tid::MAX);
    // A merge, then commits.
    s.merge(&Policy::Named(vec![SegmentName::single(2), SegmentName::single(3)])).unwrap();
    let mut t = s.begin();
    t.store(Oid(3), b"after the merge").unwrap();
    t.commit().unwrap();
    assert_eq!(names(&m.path("archive")), ["seg-000002", "seg-000003"]);
    assert_eq!(names(&m.path("archive/seg-000002")), ["info", "seg-000002.fs2"]);
    let ainfo = std::fs::read_to_string(m.path("archive/seg-000002/info")).unwrap();
    assert!(ainfo.contains("state: archived\n") && ainfo.contains("data_crc32c: "), "{ainfo}");
    // After the merge: the merged segment and the active one, beside the old seg-000004.
    m.sh(&format!(
        "mkdir {o}/mix && cp -a segments/seg-000001 segments/seg-000002-000003 segments/seg-000005 {o}/mix/ && \
         cp -a {o}/pre4 {o}/mix/seg-000004 && mkdir {o}/post && cp -a segments/seg-000004 {o}/post/",
        o = p(o)
    ));
    chown_nobody(o);
    let all = o.join("all");
    let untouched = tree(o);

    // Browsing the copies as they are, as uid 65534.
    let info = ok(true, &["info", p(&all)]);
    assert!(info.contains("archive:") && info.contains("segments:     5"), "{info}");
    let middle = all.join("seg-000003");
    let info = ok(true, &["info", p(&middle)]);
    assert!(info.contains("older segments not present: the history starts at seg-000003"), "{info}");
    let ls = ok(true, &["ls", p(&middle)]);
    assert_eq!(ls.lines().count(), 39, "seg-000003 holds 40 objects, one deleted: {ls}");
    let hist = ok(true, &["history", p(&middle), "0000000000000001"]);
    assert_eq!(hist.lines().count(), 2, "only the revisions in this segment: {hist}");
    let (t_old, _) = before[&Oid(1)][1].clone();
    let cat = fs2(true, &["cat", p(&all), "0000000000000001", "--at", &t_old.to_string()]);
    assert_eq!(cat.stdout, before[&Oid(1)][1].1.clone().unwrap());
    let dump = ok(true, &["dump", p(&all)]);
    assert!(dump.contains(&at_copy.to_string()), "{dump}");
    assert!(ok(true, &["check", p(&all)]).contains("ok"));
    assert!(ok(true, &["check", p(&middle)]).contains("ok"));
    // Never written: no lock, no recovery, no new segment; writable opens refused.
    let refused = fs2(false, &["commit", p(&all), "new=/dev/null"]);
    assert!(!refused.status.success() && text(&refused.stderr).contains("is an archive"), "{refused:?}");
    let refused = fs2(false, &["init", p(&all)]);
    assert!(!refused.status.success() && text(&refused.stderr).contains("copied segment directories"));
    // Mounted read-only as they are (fs2 mount --read-only opens them so).
    let ro = MountOptions { read_only: true, ..MountOptions::default() };
    let am = TestMount::with(filestorage2::backup::open_read_only(&all).unwrap(), &ro);
    assert_eq!(std::fs::read(am.path("head/0000000000000001")).unwrap(), before[&Oid(1)][0].1.clone().unwrap());
    assert_eq!(names(&am.path("segments")).len(), 5);
    am.unmount();
    let am = TestMount::with(filestorage2::backup::open_read_only(&middle).unwrap(), &ro);
    assert_eq!(am.sh("ls head | wc -l").trim(), "40", "at and the 39 live objects seg-000003 holds");
    am.unmount();
    assert_eq!(tree(o), untouched, "opening the copies changed them");

    // The pre-merge seg-000004 beside the merged segment: no chain, and the message says
    // what is missing and what is there instead.
    let mix = o.join("mix");
    let bad = fs2(true, &["restore", "--check", p(&mix)]);
    let msg = text(&bad.stderr);
    assert!(!bad.status.success(), "{msg}");
    assert!(msg.contains("seg-000003.fs2 is not present") && msg.contains("seg-000002-000003.fs2"), "{msg}");
    // The merged-away segments from the mount's archive/ complete it.
    m.sh(&format!("cp -a archive {}/arch", p(o)));
    chown_nobody(&o.join("arch"));
    let good = ok(true, &["restore", "--check", p(&mix), p(&o.join("arch"))]);
    assert!(good.contains("unused:") && good.contains("seg-000002-000003"), "{good}");

    // Two copies of seg-000004: the newer (relinked to the merged segment, absent here)
    // is left for the older one, whose predecessors are all present.
    let picked = ok(true, &["restore", "--check", p(&all), p(&o.join("post"))]);
    assert!(picked.contains(&format!("unused:    {}/post/seg-000004/seg-000004.fs2 (another copy", p(o))), "{picked}");
    assert!(picked.contains("chain:     seg-000004") && picked.contains("ok"), "{picked}");
    // Restore as uid 65534 from copies it does not own (mode 0444): a storage it writes to.
    let target = o.join("restored");
    let out = ok(true, &["restore", p(&all), p(&target)]);
    assert!(out.contains("restored into"), "{out}");
    assert_eq!(
        tree(o)
            .into_iter()
            .filter(|(f, ..)| !f.starts_with(&target) && !f.starts_with(o.join("arch")))
            .collect::<Vec<_>>(),
        untouched
    );
    let r = Storage::open(&target, Options::read_only()).unwrap();
    assert_eq!(r.last_tid(), at_copy);
    assert_eq!(revisions(&r, Tid::MAX), before, "the restore holds every revision the copy did");
    drop(r);
    std::fs::write(o.join("v"), b"written by nobody").unwrap();
    std::fs::set_permissions(o.join("v"), std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(true, &["commit", p(&target), &format!("0000000000000001={}", p(&o.join("v")))]);
    assert!(ok(true, &["check", p(&target)]).contains("ok"));
    drop(m);
}

/// `fs2 backup` of a live, mounted storage, while commits go on; commits, a merge, an
/// incremental backup (copies only what changed); the restore equals the live storage
/// object by object, revision by revision.
#[test]
fn incremental_backups_of_a_live_mounted_storage_restore_every_revision() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("s");
    let s = build(&sdir, 5);
    let m = TestMount::new(s.clone());
    let b = tempfile::tempdir().unwrap();
    let bk = b.path().join("backup");
    let first = ok(false, &["backup", p(&sdir), p(&bk)]);
    assert_eq!(first.matches("copied:").count(), 5, "{first}");
    for d in ["seg-000001", "seg-000005"] {
        assert_eq!(names(&bk.join(d)), [format!("{d}.fs2")]);
    }
    // Commits (one rotation), a merge of the two oldest past segments, commits meanwhile.
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..200u64 {
                let mut t = s.begin();
                t.store(Oid(100 + i % 7), format!("live {i}").as_bytes()).unwrap();
                t.commit().unwrap();
                if i == 50 {
                    s.rotate().unwrap();
                }
            }
        })
    };
    s.merge(&Policy::Named(vec![SegmentName::single(1), SegmentName::single(2)])).unwrap();
    // Backed up while the writer commits.
    let second = ok(false, &["backup", p(&sdir), p(&bk)]);
    writer.join().unwrap();
    assert!(second.contains("unchanged: seg-000004"), "an unchanged past segment is not copied: {second}");
    assert!(second.contains("copied:    seg-000003 (4096 bytes)"), "a relinked one: its header only: {second}");
    assert!(second.contains("copied:    seg-000001-000002"), "{second}");
    assert!(second.contains("kept:") && second.contains("seg-000001"), "{second}");
    // An append merge: seg-000003's records go behind seg-000004's end, which is then
    // brought up to date by appending (its bytes before are unchanged).
    let four = std::fs::metadata(bk.join("seg-000004/seg-000004.fs2")).unwrap().len();
    s.merge_with(&Policy::Named(vec![SegmentName::single(3), SegmentName::single(4)]), Strategy::Append(AsOf::Source))
        .unwrap();
    let third = ok(false, &["backup", p(&sdir), p(&bk)]);
    assert!(third.contains("unchanged: seg-000001-000002"), "{third}");
    let grown = std::fs::metadata(bk.join("seg-000004/seg-000004.fs2")).unwrap().len();
    assert!(third.contains(&format!("copied:    seg-000004 ({} bytes)", grown - four + 4096)), "{third}");
    assert!(ok(false, &["restore", "--check", p(&bk)]).contains("ok"));
    let target = b.path().join("restored");
    ok(false, &["restore", p(&bk), p(&target)]);
    let r = Storage::open(&target, Options::read_only()).unwrap();
    let upto = r.last_tid();
    assert_eq!(upto, s.last_tid(), "the last backup was taken after the last commit");
    assert_eq!(revisions(&r, Tid::MAX), revisions(&s, upto));
    drop(r);
    // Straight from the live storage directory (its writer holds the lock) and archive/.
    let direct = b.path().join("direct");
    ok(false, &["restore", p(&sdir), p(&sdir.join("archive")), p(&direct)]);
    let r = Storage::open(&direct, Options::read_only()).unwrap();
    assert_eq!(revisions(&r, Tid::MAX), revisions(&s, r.last_tid()));
    assert_eq!(r.last_tid(), s.last_tid());
    drop(r);
    drop(m);
}

/// `fs2 info` says what the archive holds; `fs2 archive prune` deletes merged-away
/// segments, never one the chain uses (moved into archive/ by move-segment).
#[test]
fn prune_deletes_merged_away_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("s");
    let s = build(&sdir, 5);
    s.merge(&Policy::Named(vec![SegmentName::single(2), SegmentName::single(3)])).unwrap();
    // The storage's archive/ reads as an archive too: a chain seg-000003 <- seg-000002.
    let info = ok(false, &["info", p(&sdir.join("archive"))]);
    assert!(info.contains("history starts at seg-000002") && info.contains("segments:     2"), "{info}");
    s.move_segment(SegmentName::single(1), &std::fs::canonicalize(&sdir).unwrap().join("archive")).unwrap();
    let want = revisions(&s, Tid::MAX);
    drop(s);
    let archived: u64 = ["seg-000002.fs2", "seg-000003.fs2"]
        .iter()
        .map(|n| std::fs::metadata(sdir.join("archive").join(n)).unwrap().len())
        .sum();
    let info = ok(false, &["info", p(&sdir)]);
    assert!(info.contains(&format!("{archived} bytes")), "{info}");
    let dry = ok(false, &["archive", "prune", "--dry-run", p(&sdir)]);
    assert_eq!(dry.matches("would delete").count(), 2, "{dry}");
    assert_eq!(names(&sdir.join("archive")).len(), 3);
    let done = ok(false, &["archive", "prune", p(&sdir)]);
    assert_eq!(done.matches("deleted").count(), 2, "{done}");
    assert_eq!(names(&sdir.join("archive")), ["seg-000001.fs2"], "the chain's segment stays");
    assert!(ok(false, &["check", p(&sdir)]).contains("ok"));
    assert_eq!(revisions(&Storage::open(&sdir, Options::read_only()).unwrap(), Tid::MAX), want);
}

/// A single segment file, a directory of segment files and a moved segment's absolute
/// link: read as they are; restore rewrites the link to a file name.
#[test]
fn segment_files_restore_with_links_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("s");
    let s = build(&sdir, 3);
    let elsewhere = dir.path().join("elsewhere");
    s.move_segment(SegmentName::single(1), &elsewhere).unwrap();
    let want = revisions(&s, Tid::MAX);
    drop(s);
    let lone = sdir.join("seg-000002.fs2");
    let ls = ok(false, &["ls", p(&lone)]);
    assert_eq!(ls.lines().count(), 40, "{ls}");
    let flat = dir.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for f in [elsewhere.join("seg-000001.fs2"), sdir.join("seg-000002.fs2"), sdir.join("seg-000003.fs2")] {
        std::fs::copy(&f, flat.join(f.file_name().unwrap())).unwrap();
    }
    let target = dir.path().join("r");
    ok(false, &["restore", p(&flat), p(&target)]);
    let r = Storage::open(&target, Options::default()).unwrap();
    assert_eq!(r.segments().unwrap()[1].prev.as_deref(), Some("seg-000001.fs2"));
    assert_eq!(revisions(&r, Tid::MAX), want);
    // A copied segment directory whose info disagrees with its file is left out, said.
    let copied = dir.path().join("copied");
    for (i, f) in
        [elsewhere.join("seg-000001.fs2"), sdir.join("seg-000002.fs2"), sdir.join("seg-000003.fs2")].iter().enumerate()
    {
        let d = copied.join(format!("seg-00000{}", i + 1));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(f, d.join(f.file_name().unwrap())).unwrap();
        let len = std::fs::metadata(f).unwrap().len();
        let crc = crc32c::crc32c(&std::fs::read(f).unwrap()[4096..]) ^ u32::from(i == 0);
        std::fs::write(
            d.join("info"),
            format!("name: seg-00000{}\nsealed_length: {len}\ndata_crc32c: {crc:08x}\n", i + 1),
        )
        .unwrap();
    }
    let bad = fs2(false, &["restore", "--check", p(&copied)]);
    let msg = text(&bad.stderr);
    assert!(!bad.status.success() && msg.contains("seg-000001.fs2 is not present"), "{msg}");
    assert!(msg.contains("left out") && msg.contains("a damaged copy"), "{msg}");
    let checked = fs2(false, &["check", p(&copied)]);
    assert_eq!(checked.status.code(), Some(5), "{checked:?}");
    assert!(text(&checked.stdout).contains("problem: ") && text(&checked.stdout).contains("a damaged copy"));
    // A backup goes neither into the storage nor beside another storage's copies.
    let inside = fs2(false, &["backup", p(&sdir), p(&sdir.join("bk"))]);
    assert!(!inside.status.success() && text(&inside.stderr).contains("outside the storage"), "{inside:?}");
    assert!(!sdir.join("bk").exists());
    let other = dir.path().join("other");
    build(&other, 1);
    let mixed = fs2(false, &["backup", p(&other), p(&flat)]);
    assert!(!mixed.status.success() && text(&mixed.stderr).contains("another storage"), "{mixed:?}");
    // Not into a directory that holds something.
    let again = fs2(false, &["restore", p(&flat), p(&target)]);
    assert!(!again.status.success() && text(&again.stderr).contains("not empty"), "{again:?}");
}

/// Unmounts whatever is left at the path when the test ends, even on failure.
struct Cleanup<'a>(&'a Path);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if common::mount::is_mounted(self.0) {
            let _ = filestorage2::fuse::lazy_unmount(self.0);
        }
    }
}

/// `fs2 mount --read-only` of a directory of copied segment files serves it; a writable
/// mount of it is refused.
#[test]
fn fs2_mount_read_only_serves_an_archive() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (storage, copies, mp) = (d.path().join("s"), d.path().join("copies"), d.path().join("mnt"));
    let _c = Cleanup(&mp);
    ok(false, &["demo", p(&storage)]);
    std::fs::create_dir(&copies).unwrap();
    for e in std::fs::read_dir(&storage).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".fs2") {
            std::fs::copy(e.path(), copies.join(e.file_name())).unwrap();
        }
    }
    let refused = fs2(false, &["mount", p(&copies), p(&mp)]);
    assert!(!refused.status.success() && text(&refused.stderr).contains("is an archive"), "{refused:?}");
    let mut child = Command::new(FS2)
        .args(["mount", "--read-only", p(&copies), p(&mp)])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !common::mount::is_mounted(&mp) || std::fs::read_dir(mp.join("head")).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("fs2 mount exited with {st}: {}", text(&child.wait_with_output().unwrap().stderr));
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "fs2 mount did not mount");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(mp.join("head/0000000000000001")).unwrap(), b"hello, world\n");
    ok(false, &["umount", p(&mp)]);
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("fs2 mount did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(names(&copies).len(), 2, "nothing written beside the copies");
}
