//! The ZODB directories without the kernel: `classes/`, `refs/`, `gc`.

use super::*;

/// A protocol-3 ZODB record of class `module.Name` whose state is a list of references:
/// (oid, weak).
pub(crate) fn zrec(module: &str, name: &str, refs: &[(u64, bool)]) -> Vec<u8> {
    let mut d = format!("\x03c{module}\n{name}\nq\x00.").into_bytes();
    d.insert(0, 0x80);
    d.extend_from_slice(b"\x80\x03]q\x01(");
    for &(o, weak) in refs {
        if weak {
            d.extend_from_slice(b"(X\x01\x00\x00\x00wC\x08");
            d.extend_from_slice(&o.to_be_bytes());
            d.extend_from_slice(b"\x85lQ");
        } else {
            d.extend_from_slice(b"C\x08");
            d.extend_from_slice(&o.to_be_bytes());
            d.extend_from_slice(b"h\x00\x86Q");
        }
    }
    d.extend_from_slice(b"e.");
    d
}

/// Root 0 (PersistentMapping) -> 1, 2 (OOBTree) and weakly 5; 1 -> 3 (OOBucket);
/// 4 (PersistentMapping) and 5 (OOBucket) are garbage; 6 is not a ZODB record.
fn zodb_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(dir.path(), Options { sync: false, ..Options::default() }).unwrap();
    let pm = |refs: &[(u64, bool)]| zrec("persistent.mapping", "PersistentMapping", refs);
    let mut t = s.begin();
    t.store(Oid(0), &pm(&[(1, false), (2, false), (5, true), (1, false)])).unwrap();
    t.store(Oid(1), &zrec("BTrees.OOBTree", "OOBTree", &[(3, false)])).unwrap();
    t.store(Oid(2), &zrec("BTrees.OOBTree", "OOBTree", &[])).unwrap();
    t.store(Oid(3), &zrec("BTrees.OOBTree", "OOBucket", &[])).unwrap();
    t.store(Oid(4), &pm(&[(2, false)])).unwrap();
    t.store(Oid(5), &zrec("BTrees.OOBTree", "OOBucket", &[])).unwrap();
    t.store(Oid(6), b"plain text").unwrap();
    let tid = t.commit().unwrap();
    Fixture { _dir: dir, fs: Fs::new(s), tids: vec![tid] }
}

fn text(fs: &Fs, p: &str) -> String {
    String::from_utf8(cat(fs, p).unwrap()).unwrap()
}

#[test]
fn classes_list_live_objects_by_class_and_follow_head() {
    let f = zodb_fixture();
    let fs = &f.fs;
    // Lookup-only in the root: tree walks (find, cp -r) never enter them.
    let root = ls(fs, "", 100, true);
    assert!(!root.contains(&"classes".to_string()) && !root.contains(&"refs".to_string()), "{root:?}");
    let classes = ["persistent.mapping.PersistentMapping", "BTrees.OOBTree.OOBTree", "BTrees.OOBTree.OOBucket"];
    let mut want: Vec<&str> = vec!["at", "index"];
    want.extend(classes);
    want.push("(not-zodb)");
    for plus in [false, true] {
        assert_eq!(ls(fs, "classes", 1, plus), want, "ids in first-seen order (oid order of the scan)");
    }
    assert_eq!(text(fs, "classes/at"), format!("{}\n", f.tids[0]));
    assert_eq!(ls(fs, "classes/BTrees.OOBTree.OOBTree", 1, true), ["0000000000000001", "0000000000000002"]);
    assert_eq!(ls(fs, "classes/(not-zodb)", 10, false), ["0000000000000006"]);
    // The directory size is the count; an entry is the object (head/'s inode).
    assert_eq!(path(fs, "classes/BTrees.OOBTree.OOBucket").unwrap().attr.size, 2);
    let a = path(fs, "classes/BTrees.OOBTree.OOBTree/0000000000000002").unwrap();
    assert_eq!(a.attr.ino, path(fs, "head/0000000000000002").unwrap().attr.ino);
    assert_eq!(
        cat(fs, "classes/BTrees.OOBTree.OOBTree/0000000000000002").unwrap(),
        cat(fs, "head/0000000000000002").unwrap()
    );
    assert_eq!(errno(path(fs, "classes/BTrees.OOBTree.OOBTree/0000000000000003")), libc::ENOENT, "another class");
    assert_eq!(errno(path(fs, "classes/no.Such")), libc::ENOENT);
    let index = text(fs, "classes/index");
    let lines: Vec<&str> = index.lines().collect();
    assert_eq!(lines.len(), 4, "{index}");
    let pm = lines.iter().find(|l| l.ends_with(" persistent.mapping.PersistentMapping")).unwrap();
    let n = fs.storage().load(Oid(0)).unwrap().unwrap().1.len() + fs.storage().load(Oid(4)).unwrap().unwrap().1.len();
    assert_eq!(*pm, format!("2 {n} persistent.mapping.PersistentMapping"));
    assert!(lines.contains(&"1 10 (not-zodb)"), "{index}");
    assert_eq!(path(fs, "classes/index").unwrap().attr.size, index.len() as u64, "true size");
    // Cached per head: no rebuild without a commit, one after it.
    let builds = fs.zviews.builds.load(Ordering::Relaxed);
    ls(fs, "classes", 100, true);
    assert_eq!(fs.zviews.builds.load(Ordering::Relaxed), builds);
    let mut t = fs.storage().begin();
    t.delete(Oid(2)).unwrap();
    t.store(Oid(7), &zrec("BTrees.OOBTree", "OOBTree", &[])).unwrap();
    t.delete(Oid(6)).unwrap();
    let tid = t.commit().unwrap();
    assert_eq!(ls(fs, "classes/BTrees.OOBTree.OOBTree", 100, false), ["0000000000000001", "0000000000000007"]);
    assert_eq!(fs.zviews.builds.load(Ordering::Relaxed), builds + 1);
    assert_eq!(text(fs, "classes/at"), format!("{tid}\n"));
    assert!(!ls(fs, "classes", 100, false).contains(&"(not-zodb)".to_string()), "no such object any more");
    assert_eq!(errno(path(fs, "classes/(not-zodb)")), libc::ENOENT);
}

#[test]
fn refs_list_references_of_head_objects() {
    let f = zodb_fixture();
    let fs = &f.fs;
    assert_eq!(
        text(fs, "refs/0000000000000000"),
        "0000000000000001\n0000000000000002\n0000000000000005 weak\n",
        "pickle order, a repeated reference once, weak ones marked"
    );
    assert_eq!(text(fs, "refs/0000000000000003"), "");
    let e = path(fs, "refs/0000000000000000").unwrap();
    assert_eq!(e.attr.size, 56);
    assert_eq!(errno(path(fs, "refs/0000000000000006")), libc::ENOENT, "not a ZODB record: no guess");
    assert_eq!(errno(path(fs, "refs/0000000000000099")), libc::ENOENT);
    assert_eq!(errno(path(fs, "refs/1")), libc::ENOENT);
    assert!(ls(fs, "refs", 100, true).is_empty(), "lookup-only");
    assert_eq!(text(fs, "referrers/0000000000000002"), "0000000000000000\n0000000000000004\n");
    assert_eq!(text(fs, "referrers/0000000000000005"), "0000000000000000 weak\n");
    assert_eq!(text(fs, "referrers/0000000000000000"), "");
    assert_eq!(errno(path(fs, "referrers/0000000000000099")), libc::ENOENT);
    assert!(ls(fs, "referrers", 100, true).is_empty(), "lookup-only");
    // A new revision has new references (the name follows head).
    let mut t = fs.storage().begin();
    t.store(Oid(0), &zrec("persistent.mapping", "PersistentMapping", &[(4, false)])).unwrap();
    t.commit().unwrap();
    assert_eq!(text(fs, "refs/0000000000000000"), "0000000000000004\n");
}

#[test]
fn gc_node_runs_the_collector() {
    let f = zodb_fixture();
    let fs = &f.fs;
    assert_eq!(text(fs, "gc"), "idle\n");
    assert_eq!(errno(write_file(fs, "gc", W, b"everything")), libc::EINVAL);
    // 6 is not a ZODB record but unreachable: garbage like 4 and 5 (5 only weakly referenced).
    write_file(fs, "gc", W, b"dry-run\n").unwrap();
    let t = text(fs, "gc");
    assert!(
        t.starts_with("dry-run base ") && t.contains(" objects 7 reachable 4 garbage 3 unreadable_garbage 1 "),
        "{t}"
    );
    assert_eq!(fs.storage().count_objects().unwrap(), 7, "a dry run deletes nothing");
    write_file(fs, "gc", W, b"run").unwrap();
    let t = text(fs, "gc");
    assert!(t.starts_with("collected ") && t.contains(" garbage 3 "), "{t}");
    assert_eq!(
        ls(fs, "head", 100, false),
        ["at", "0000000000000000", "0000000000000001", "0000000000000002", "0000000000000003"]
    );
    // A collector running: EBUSY.
    fs.gc.claim().unwrap();
    assert_eq!(errno(write_file(fs, "gc", W, b"run")), libc::EBUSY);
    assert!(text(fs, "gc").starts_with("running "));
    // Read-only: EROFS.
    let ro = Fs::with_options(fs.storage().clone(), MountOptions { read_only: true, ..MountOptions::default() });
    assert_eq!(errno(write_file(&ro, "gc", W, b"run")), libc::EROFS);
}

#[test]
fn gc_node_conflicts_like_fs2_gc() {
    let f = zodb_fixture();
    let fs = &f.fs;
    // The storage has no root: refused, nothing deleted, the reason shown.
    let mut t = fs.storage().begin();
    t.delete(Oid(0)).unwrap();
    t.commit().unwrap();
    assert_eq!(errno(write_file(fs, "gc", W, b"run")), libc::EINVAL);
    assert!(text(fs, "gc").starts_with("error "), "{}", text(fs, "gc"));
    assert_eq!(fs.storage().count_objects().unwrap(), 6);
}
