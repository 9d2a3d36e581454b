//! The read side of the mounted tree through a real mount, driven with `ls`, `cat`,
//! `find`, `stat`, `diff`, `cp`, `grep` and `sh`, compared with the engine's answers.

mod common;

use common::mount::{available, TestMount};
use filestorage2::{Oid, Options, Storage, Tid};
use std::collections::BTreeMap;

/// Objects 1..=5 over three transactions in a past segment, then two in the active
/// one (object 3 deleted). Returns the storage and its tids.
fn storage(dir: &std::path::Path) -> (Storage, Vec<Tid>) {
    let s = Storage::create(dir, Options { sync: false, ..Options::default() }).unwrap();
    let mut tids = Vec::new();
    let mut commit = |stores: &[(u64, &[u8])], deletes: &[u64], who: &[u8]| {
        let mut t = s.begin();
        for (o, d) in stores {
            t.store(Oid(*o), d).unwrap();
        }
        for o in deletes {
            t.delete(Oid(*o)).unwrap();
        }
        t.set_user(who);
        tids.push(t.commit().unwrap());
    };
    commit(&[(1, b"hello, world\n"), (2, b"0"), (3, b"garbage"), (5, &[0u8, 1, 2, 255])], &[], b"alice");
    commit(&[(2, b"1")], &[], b"bob");
    commit(&[(2, b"2"), (1, b"hello again\n")], &[], b"bob");
    s.rotate().unwrap();
    commit(&[], &[3], b"gc");
    commit(&[(4, &vec![7u8; 20_000])], &[], b"carol");
    (s, tids)
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn tree_through_real_tools() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (s, tids) = storage(dir.path());
    let m = TestMount::new(s.clone());
    let last = *tids.last().unwrap();

    assert_eq!(
        lines(&m.sh("ls")),
        ["README", "archive", "gc", "head", "history", "merge", "segments", "stats", "transactions", "txn"]
    );
    assert!(m.sh("cat README").contains("head/"));
    assert_eq!(m.sh("cat head/at"), format!("{last}\n"));

    // head/: `ls -l` names and sizes, `cat` bytes, `stat` times = commit times.
    let mut engine = BTreeMap::new();
    for o in s.list(Oid(0), Tid::MAX, 100).unwrap() {
        engine.insert(o.oid.to_string(), (o.size, o.tid));
    }
    let ls = m.sh("ls -l head");
    let mut listed = BTreeMap::new();
    for l in ls.lines().filter(|l| l.starts_with('-')) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f[0].starts_with("-r--r--r--"), "{l}");
        listed.insert(f[8].to_string(), f[4].parse::<u64>().unwrap());
    }
    assert_eq!(listed.remove("at"), Some(17));
    assert_eq!(listed, engine.iter().map(|(k, v)| (k.clone(), v.0)).collect());
    for (name, (_, tid)) in &engine {
        let data = m.ok(&["cat", &format!("head/{name}")]);
        assert_eq!(data, s.load(name.parse().unwrap()).unwrap().unwrap().1, "{name}");
        let mtime: u64 = m.sh(&format!("stat -c %Y head/{name}")).trim().parse().unwrap();
        assert_eq!(mtime, tid.to_unix() as u64, "{name}");
    }
    assert!(!m.run(&["cat", "head/0000000000000003"]).status.success(), "deleted");
    assert_eq!(m.sh("grep -l hello head/*"), "head/0000000000000001\n");

    // @<tid>/ is lookup-only and shows the snapshot; a script can pin head's tid.
    assert!(!m.sh("ls -a").contains('@'));
    let at1 = format!("@{}", tids[1]);
    assert_eq!(m.sh(&format!("cat {at1}/0000000000000002 {at1}/0000000000000001")), "1hello, world\n");
    assert_eq!(lines(&m.sh(&format!("ls {at1}"))).len(), 5, "at + objects 1, 2, 3, 5");
    assert_eq!(m.sh("T=$(cat head/at); cat @$T/at"), format!("{last}\n"));
    // An ISO time (microsecond precision) names the state at that time.
    let iso = format!("@{}", tids[1].iso8601());
    let t: Tid = m.sh(&format!("cat '{iso}/at'")).trim().parse().unwrap();
    assert!((t.to_unix() - tids[1].to_unix()).abs() < 2e-6, "{t} vs {}", tids[1]);
    let want = s.load_at(Oid(2), t).unwrap().unwrap().1;
    assert_eq!(m.ok(&["cat", &format!("{iso}/0000000000000002")]), want);

    // history/ and transactions/: the same revision under both names.
    let hist = m.sh("ls history/0000000000000002");
    assert_eq!(lines(&hist), tids[..3].iter().map(|t| t.to_string()).collect::<Vec<_>>());
    assert_eq!(m.sh("ls history/0000000000000003"), format!("{}\n{}.deleted\n", tids[0], tids[3]));
    m.ok(&[
        "diff",
        &format!("history/0000000000000002/{}", tids[1]),
        &format!("transactions/{}/0000000000000002", tids[1]),
    ]);
    let info = m.sh(&format!("cat transactions/{}/info", tids[0]));
    assert!(info.contains("user: alice\n") && info.contains("objects: 4\n"), "{info}");
    assert_eq!(lines(&m.sh("ls transactions")), tids.iter().map(|t| t.to_string()).collect::<Vec<_>>());
    let mtime: u64 = m.sh(&format!("stat -c %Y transactions/{}", tids[2])).trim().parse().unwrap();
    assert_eq!(mtime, tids[2].to_unix() as u64);

    // find walks everything but @ (every file readable).
    let found = m.sh("find . -type f | sort");
    assert!(found.contains("./segments/seg-000001/seg-000001.fs2\n") && !found.contains('@'), "{found}");
    m.ok(&["sh", "-c", "find . -type f -exec cat {} + > /dev/null"]);

    // segments/: cp -r of a past segment gives the segment file byte for byte and its
    // info; the records and txns are there by name only.
    let segs = s.segments().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dst = out.path().join("copy");
    m.ok(&["cp", "-r", "segments/seg-000001", dst.to_str().unwrap()]);
    assert_eq!(std::fs::read(dst.join("seg-000001.fs2")).unwrap(), std::fs::read(&segs[0].path).unwrap());
    assert!(!dst.join("0000000000000001").exists() && !dst.join("txns").exists());
    assert_eq!(std::fs::read(m.path("segments/seg-000001/0000000000000001")).unwrap(), b"hello again\n");
    let txns = std::fs::read_to_string(m.path("segments/seg-000001/txns")).unwrap();
    assert_eq!(txns.lines().count(), 3, "{txns}");
    let info = std::fs::read_to_string(dst.join("info")).unwrap();
    assert!(info.contains("state: past\n"), "{info}");
    assert!(m.sh("cat segments/seg-000002/info").contains("state: active\n"));
    assert!(m.sh("cat stats").contains("objects: 4\n"));

    // statfs reports the disk holding the storage.
    let here = m.sh("stat -f -c '%b %S' .");
    let disk = String::from_utf8(
        std::process::Command::new("stat").args(["-f", "-c", "%b %S"]).arg(dir.path()).output().unwrap().stdout,
    )
    .unwrap();
    assert_eq!(here, disk);
    m.unmount();
}

#[test]
fn refused_operations_have_the_documented_errno() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (s, tids) = storage(dir.path());
    let m = TestMount::new(s.clone());
    let probe = |op: &str, a: &str, b: Option<&str>| m.probe(op, a, b);
    let obj = "head/0000000000000001";
    let newer = format!("@{}", Tid(tids.last().unwrap().0 + 1));
    let older = format!("@{}", Tid(tids[0].0 - 1));
    let cases: Vec<(&str, &str, Option<&str>, &str)> = vec![
        ("stat", "head/1", None, "ENOENT"),
        ("stat", "head/000000000000000A", None, "ENOENT"),
        ("stat", "head/0x000000000000001", None, "ENOENT"),
        ("stat", "head/0000000000000099", None, "ENOENT"),
        ("stat", "nothing", None, "ENOENT"),
        ("stat", &newer, None, "ENOENT"),
        ("stat", &older, None, "ENOENT"),
        ("stat", "@yesterday", None, "ENOENT"),
        ("listdir", "transactions/0000000000000001", None, "ENOENT"),
        ("stat", "segments/seg-1", None, "ENOENT"),
        ("excl", "head/0000000000000099", None, "EROFS"),
        ("excl", "newfile", None, "EROFS"),
        ("write", obj, None, "EROFS"),
        ("append", obj, None, "EROFS"),
        ("write", "head/at", None, "EROFS"),
        ("truncate", obj, None, "EROFS"),
        ("mkdir", "head/x", None, "EROFS"),
        ("mkdir", "newdir", None, "EROFS"),
        ("unlink", obj, None, "EROFS"),
        ("rmdir", "head", None, "EROFS"),
        ("utime", obj, None, "EROFS"),
        ("chmod", obj, None, "EPERM"),
        ("chown", obj, None, "EPERM"),
        ("link", obj, Some("head/0000000000000077"), "EPERM"),
        ("symlink", "head/0000000000000077", Some("x"), "EPERM"),
        ("rename", obj, Some("history/0000000000000077"), "EXDEV"),
        ("rename", obj, Some("head/0000000000000077"), "EROFS"),
        ("read", obj, None, "OK"),
    ];
    for (op, a, b, want) in cases {
        assert_eq!(probe(op, a, b), want, "{op} {a} {b:?}");
    }
    // Nothing changed.
    assert_eq!(m.sh("cat head/0000000000000001"), "hello again\n");
    assert_eq!(s.last_tid(), *tids.last().unwrap());

    // A damaged record reads as EIO, never as wrong bytes.
    let seg = &s.segments().unwrap()[0];
    let mut bytes = std::fs::read(&seg.path).unwrap();
    let at = bytes.windows(7).position(|w| w == b"garbage").unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&seg.path, &bytes).unwrap();
    let p = format!("history/0000000000000003/{}", tids[0]);
    assert_eq!(probe("read", &p, None), "EIO");
    m.unmount();
}

#[test]
fn head_follows_commits_at_once() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = storage(dir.path());
    let m = TestMount::new(s.clone());
    let p = m.path("head/0000000000000002");
    assert_eq!(std::fs::read(&p).unwrap(), b"2");
    for i in 3..8u32 {
        let mut t = s.begin();
        t.store(Oid(2), i.to_string().as_bytes()).unwrap();
        t.store(Oid(100 + i as u64), b"new").unwrap();
        t.delete(Oid(1)).ok();
        let tid = t.commit().unwrap();
        // The entry TTL is 1 s: seeing the new data well within it shows the
        // notifier invalidated the cached name.
        let start = std::time::Instant::now();
        while std::fs::read(&p).unwrap() != i.to_string().as_bytes() {
            assert!(start.elapsed() < std::time::Duration::from_millis(700), "head/ still shows the old revision");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(std::fs::read_to_string(m.path("head/at")).unwrap(), format!("{tid}\n"));
        assert!(m.path(&format!("head/{}", Oid(100 + i as u64))).exists(), "a new object shows at once");
        assert!(!m.path("head/0000000000000001").exists(), "a deleted object is gone");
    }
    m.unmount();
}

#[test]
fn pinned_snapshot_is_consistent_under_commits_and_rotations() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(dir.path(), Options { sync: false, ..Options::default() }).unwrap();
    // Ten accounts whose balances always sum to 1000.
    let mut t = s.begin();
    for a in 0..10u64 {
        t.store(Oid(a), b"100").unwrap();
    }
    t.commit().unwrap();
    let m = TestMount::new(s.clone());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = common::Rng(7);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (a, b) = (Oid(rng.below(10)), Oid(rng.below(10)));
                let mut t = s.begin();
                let va: u64 = String::from_utf8(t.load(a).unwrap().unwrap()).unwrap().parse().unwrap();
                let vb: u64 = String::from_utf8(t.load(b).unwrap().unwrap()).unwrap().parse().unwrap();
                if a != b && va > 0 {
                    t.store(a, (va - 1).to_string().as_bytes()).unwrap();
                    t.store(b, (vb + 1).to_string().as_bytes()).unwrap();
                    t.commit().unwrap();
                }
                n += 1;
                if n.is_multiple_of(50) {
                    s.rotate().unwrap();
                }
            }
            n
        })
    };
    let script = r#"
        T=$(cat head/at)
        a=$(cat @$T/* | md5sum)
        sleep 0.05
        b=$(cat @$T/* | md5sum)
        [ "$a" = "$b" ] || { echo "snapshot changed"; exit 1; }
        sum=0; for f in @$T/0*; do sum=$((sum + $(cat $f))); done
        echo "$T $sum"
    "#;
    for _ in 0..15 {
        let out = m.sh(script);
        let (t, sum) = out.trim().split_once(' ').unwrap();
        assert_eq!(sum, "1000", "balances of one snapshot always sum to 1000");
        let t: Tid = t.parse().unwrap();
        // Same bytes as the engine as of that tid.
        for a in 0..10u64 {
            let want = s.load_at(Oid(a), t).unwrap().unwrap().1;
            assert_eq!(std::fs::read(m.path(&format!("@{t}/{}", Oid(a)))).unwrap(), want);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = writer.join().unwrap();
    assert!(commits > 10, "the writer ran ({commits} transfers)");
    assert!(s.segments().unwrap().len() > 2, "rotations happened underneath");
    m.unmount();
}

#[test]
fn large_directories_stream() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(dir.path(), Options { sync: false, ..Options::default() }).unwrap();
    let mut t = s.begin();
    for o in 0..5000u64 {
        t.store(Oid(o * 7), &o.to_le_bytes()).unwrap();
    }
    t.commit().unwrap();
    s.rotate().unwrap();
    let m = TestMount::new(s.clone());
    assert_eq!(m.sh("ls head | wc -l").trim(), "5001");
    assert_eq!(m.sh("ls -l head | grep -c ' 8 '").trim(), "5000");
    assert_eq!(m.sh("find history -mindepth 1 -maxdepth 1 | wc -l").trim(), "5000");
    assert_eq!(m.sh("ls segments/seg-000001 | wc -l").trim(), "2", "records are lookup-only");
    assert_eq!(m.sh("cat segments/seg-000001/0000000000000007 | wc -c").trim(), "8");
    let names = m.sh("ls -f head | grep -v '^[.a]'");
    let want: Vec<String> = (0..5000u64).map(|o| Oid(o * 7).to_string()).collect();
    assert_eq!(lines(&names), want, "listed in oid order, each once");
    m.unmount();
}

#[test]
fn huge_directories_list_without_holding_an_inode_per_entry() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(dir.path(), Options { sync: false, ..Options::default() }).unwrap();
    let n = 100_000;
    let mut t = s.begin();
    for o in 0..n {
        t.store(Oid(o), &o.to_le_bytes()).unwrap();
    }
    t.commit().unwrap();
    let m = TestMount::new(s.clone());
    assert_eq!(m.sh("ls head | wc -l").trim(), (n + 1).to_string());
    assert_eq!(m.sh("ls head | sort -u | wc -l").trim(), (n + 1).to_string());
    let stats = m.sh("cat stats");
    let inodes: u64 = stats.lines().find_map(|l| l.strip_prefix("inodes: ")).unwrap().parse().unwrap();
    assert!(inodes < 10_000, "{inodes} inodes after ls: names were listed without inodes");
    // Names past the budget still stat and read (looked up one by one).
    let last = Oid(n - 1).to_string();
    assert_eq!(m.ok(&["cat", &format!("head/{last}")]), (n - 1).to_le_bytes());
    assert_eq!(m.sh("ls -l head | grep -c '^-r--r--r-- 1 .* 8 '").trim(), n.to_string());
    m.unmount();
}

#[test]
fn merged_away_segments_vanish_but_open_files_stay_readable() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (s, tids) = storage(dir.path());
    s.rotate().unwrap(); // two past segments now
    let before = std::fs::read(&s.segments().unwrap()[0].path).unwrap();
    let m = TestMount::new(s.clone());
    let mut held = std::fs::File::open(m.path("segments/seg-000001/data")).unwrap();
    s.merge(&filestorage2::merge::Policy::All).unwrap();
    // The open file still reads the old segment, byte for byte.
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut held, &mut got).unwrap();
    assert_eq!(got, before);
    drop(held);
    assert!(!m.sh("ls segments").contains("seg-000001\n"), "the chain changed");
    let start = std::time::Instant::now();
    while m.path("segments/seg-000001").exists() {
        assert!(start.elapsed() < std::time::Duration::from_secs(3), "a merged-away segment is ENOENT");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // History inside the merged range is gone; head and the end of the range are exact.
    let gone = format!("@{}", tids[1]);
    assert!(!m.path(&gone).exists());
    assert_eq!(m.sh("cat head/0000000000000002"), "2");
    m.unmount();
}
