//! Writing through a real mount with shell commands only: transactions in `txn/`
//! (mkdir and the clone file), staged files (create, overwrite, `>>`, `dd seek=`,
//! truncate, rm), two-phase commit, conflicts, the vote timeout, killed scripts,
//! merges, and the errno of every refusal. Compared with the engine's answers.

mod common;

use common::mount::{available, TestMount};
use filestorage2::fuse::MountOptions;
use filestorage2::{Oid, Options, Storage, Tid};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Objects 1..=3 in a past segment, object 4 in the active one.
fn storage(dir: &std::path::Path) -> Storage {
    let s = Storage::create(dir, Options { sync: false, ..Options::default() }).unwrap();
    let mut t = s.begin();
    t.store(Oid(1), b"one\n").unwrap();
    t.store(Oid(2), b"two\n").unwrap();
    t.store(Oid(3), b"three\n").unwrap();
    t.commit().unwrap();
    s.rotate().unwrap();
    let mut t = s.begin();
    t.store(Oid(4), b"four\n").unwrap();
    t.commit().unwrap();
    s
}

fn data(s: &Storage, o: u64) -> Option<Vec<u8>> {
    s.load(Oid(o)).unwrap().map(|(_, d)| d)
}

#[test]
fn load_change_delete_and_inspect_with_the_shell() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let base = s.last_tid();
    let m = TestMount::new(s.clone());
    let out = m.sh("set -e
         mkdir txn/t
         cat txn/t/ctl
         cat txn/t/0000000000000001
         echo new > txn/t/0000000000000001
         echo more >> txn/t/0000000000000001
         printf XY | dd of=txn/t/0000000000000001 bs=1 seek=2 conv=notrunc status=none
         cat txn/t/0000000000000001
         printf 0123456789 > txn/t/0000000000000003
         truncate -s 4 txn/t/0000000000000003
         O=$(cat txn/t/new-oid)
         echo hello > txn/t/$O
         rm txn/t/0000000000000002
         test ! -e txn/t/0000000000000002
         echo 'user alice' > txn/t/info
         echo 'description from the shell' >> txn/t/info
         ls txn/t | tr '\\n' ' '; echo
         cat head/0000000000000001
         echo commit > txn/t/ctl
         cat txn/t/ctl
         cat head/0000000000000001 head/0000000000000003 head/$O
         test ! -e head/0000000000000002
         rmdir txn/t
         test ! -e txn/t
         echo $O");
    let lines: Vec<&str> = out.lines().collect();
    let new_oid: Oid = lines.last().unwrap().parse().unwrap();
    let tid = s.last_tid();
    assert_eq!(lines[0], format!("open {base}"));
    assert_eq!(lines[1], "one");
    assert_eq!(lines[2], "neXYmore", "overwrite, >>, dd seek=");
    assert_eq!(lines[3], format!("0000000000000001 0000000000000003 {new_oid} ctl info new-oid "));
    assert_eq!(lines[4], "one", "nothing visible before commit");
    assert_eq!(lines[5], format!("committed {tid}"));
    assert_eq!(&lines[6..9], ["neXYmore", "0123hello", &new_oid.to_string()]);
    assert_eq!(data(&s, 1).unwrap(), b"neXYmore\n");
    assert_eq!(data(&s, 3).unwrap(), b"0123");
    assert_eq!(data(&s, new_oid.0).unwrap(), b"hello\n");
    assert_eq!(data(&s, 2), None);
    let t = s.transaction(tid).unwrap().unwrap();
    assert_eq!((t.meta.user.as_slice(), t.meta.description.as_slice()), (&b"alice"[..], &b"from the shell"[..]));
    assert_eq!(t.records.len(), 4);
    assert!(m.sh("cat transactions/*/info").contains("user: alice"));

    // The clone file: a transaction per open descriptor, committed through it.
    let out = m.sh("set -e
         exec 3<>txn/new
         read n <&3
         echo clone > txn/$n/0000000000000004
         echo commit >&3
         cat txn/$n/ctl
         exec 3>&-
         cat head/0000000000000004
         # The kernel sends the close (release) asynchronously: the name goes shortly after.
         for i in $(seq 50); do test -e txn/$n || break; sleep 0.1; done
         test ! -e txn/$n");
    assert_eq!(out, format!("committed {}\nclone\n", s.last_tid()));
    assert_eq!(m.sh("ls txn"), "new\n", "no transaction is left behind");
    m.unmount();
    assert!(!dir.path().join(".staging").exists(), "unmount removes the staging area");
}

#[test]
fn every_refusal_has_its_errno() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let opts = MountOptions { max_object_size: 100, ..MountOptions::default() };
    let m = TestMount::with(s.clone(), &opts);
    m.sh("mkdir txn/t txn/f txn/g");
    let long = format!("txn/{}", "x".repeat(65));
    let (x100, x101) = ("x".repeat(100), "x".repeat(101));
    let cases: Vec<(&str, &str, Option<&str>, &str)> = vec![
        ("mkdir", "txn/t", None, "EEXIST"),
        ("mkdir", "txn/a b", None, "EINVAL"),
        ("mkdir", "txn/new", None, "EEXIST"),
        ("mkdir", &long, None, "EINVAL"),
        ("mkdir", "txn/t/sub", None, "EPERM"),
        ("mkdir", "head/x", None, "EROFS"),
        ("excl", "txn/t/0000000000000001", None, "EEXIST"),
        ("excl", "txn/t/0000000000000009", None, "OK"),
        ("create", "txn/t/notanoid", None, "ENOENT"),
        ("create", "txn/t/000000000000000A", None, "ENOENT"),
        ("stat", "txn/t/0000000000000077", None, "ENOENT"),
        ("stat", "txn/nosuch", None, "ENOENT"),
        ("put", "txn/t/ctl", Some("bogus"), "EINVAL"),
        ("put", "txn/t/info", Some("colour blue"), "EINVAL"),
        ("put", "txn/t/0000000000000005", Some(&x101), "ENOENT"),
        ("create", "txn/t/0000000000000005", None, "OK"),
        // A failed write ends its transaction (it refuses changes after).
        ("create", "txn/f/0000000000000005", None, "OK"),
        ("put", "txn/f/0000000000000005", Some(&x101), "EFBIG"),
        ("create", "txn/f/0000000000000005", None, "EINVAL"),
        ("create", "txn/g/0000000000000005", None, "OK"),
        ("truncate", "txn/g/0000000000000005", Some("101"), "EFBIG"),
        ("put", "txn/t/0000000000000005", Some(&x100), "OK"),
        ("unlink", "txn/t/ctl", None, "EPERM"),
        ("unlink", "txn/t/0000000000000077", None, "ENOENT"),
        ("chmod", "txn/t/0000000000000005", None, "EPERM"),
        ("rename", "txn/t/0000000000000005", Some("txn/t/0000000000000006"), "EROFS"),
        ("put", "head/0000000000000001", Some("x"), "EROFS"),
        ("put", "merge", Some("everything"), "EINVAL"),
        ("put", "merge", Some("seg-000009"), "ENOENT"),
        ("put", "txn/new", Some("bogus"), "EINVAL"),
        ("rmdir", "txn/new", None, "ENOTDIR"),
    ];
    for (op, a, b, want) in cases {
        assert_eq!(m.probe(op, a, b), want, "{op} {a} {b:?}");
    }
    m.sh("echo commit > txn/t/ctl");
    assert_eq!(data(&s, 5).unwrap(), "x".repeat(100).as_bytes());
    assert_eq!(data(&s, 9).unwrap(), b"");
    // An ended transaction refuses changes; a second abort of an aborted one is fine.
    assert_eq!(m.probe("put", "txn/t/0000000000000005", Some("y")), "EINVAL");
    assert_eq!(m.probe("put", "txn/t/ctl", Some("abort")), "EINVAL", "a committed transaction");
    m.sh("mkdir txn/u; echo abort > txn/u/ctl; echo abort > txn/u/ctl; rmdir txn/u t 2>/dev/null || true");
    m.unmount();

    // A read-only mount: no txn/, merge refused.
    let ro = TestMount::with(s.clone(), &MountOptions { read_only: true, ..MountOptions::default() });
    assert!(!ro.sh("ls").contains("txn"));
    assert_eq!(ro.probe("stat", "txn", None), "ENOENT");
    assert_eq!(ro.probe("put", "merge", Some("all")), "EROFS");
    ro.unmount();
}

/// Start `script` in the mount's root without waiting.
fn spawn_sh(m: &TestMount, script: &str) -> std::process::Child {
    // bash, not dash: dash reports every failed write as "I/O error".
    Command::new("timeout")
        .args(["-k", "5", "60", "bash", "-c", script])
        .current_dir(&m.root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn conflicting_processes_one_wins_and_the_loser_applies_nothing() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let m = TestMount::new(s.clone());
    for round in 0..5 {
        // Both stage against the same base, then commit at the same time.
        m.sh(&format!(
            "set -e; for p in a b; do mkdir txn/${{p}}{round}; echo $p > txn/${{p}}{round}/0000000000000001; \
             echo $p > txn/${{p}}{round}/00000000000001${{p}}{round}; done"
        ));
        let kids: Vec<_> =
            ["a", "b"].iter().map(|p| spawn_sh(&m, &format!("echo commit > txn/{p}{round}/ctl && echo won"))).collect();
        let outs: Vec<_> = kids.into_iter().map(|k| k.wait_with_output().unwrap()).collect();
        let won: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
        assert_eq!(won.len(), 1, "exactly one wins: {outs:?}");
        let (w, l) = (["a", "b"][won[0]], ["a", "b"][1 - won[0]]);
        let err = String::from_utf8_lossy(&outs[1 - won[0]].stderr).to_string();
        assert!(err.contains("Stale file handle"), "the loser gets ESTALE: {err}");
        let ctl = m.sh(&format!("cat txn/{l}{round}/ctl"));
        assert!(ctl.starts_with(&format!("conflict 0000000000000001 {}", s.last_tid())), "{ctl}");
        assert_eq!(data(&s, 1).unwrap(), format!("{w}\n").as_bytes());
        let mine = |p: &str| u64::from_str_radix(&format!("00000000000001{p}{round}"), 16).unwrap();
        assert_eq!(data(&s, mine(w)).unwrap(), format!("{w}\n").as_bytes());
        assert_eq!(data(&s, mine(l)), None, "nothing of the loser is applied");
        m.sh(&format!("rmdir txn/a{round} txn/b{round}"));
    }
    m.unmount();
}

#[test]
fn vote_holds_commits_of_its_objects_until_commit_abort_or_timeout() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let opts = MountOptions { vote_timeout: Duration::from_secs(2), ..MountOptions::default() };
    let m = TestMount::with(s.clone(), &opts);
    m.sh("mkdir txn/v; echo voted > txn/v/0000000000000001; echo vote > txn/v/ctl; cat txn/v/ctl");
    assert_eq!(m.sh("cat txn/v/ctl"), "voted\n");
    assert_eq!(m.probe("put", "txn/v/0000000000000001", Some("x")), "EBUSY", "a voted transaction is fixed");
    // A commit of other objects goes on; one of the voted object waits, then conflicts.
    m.sh("mkdir txn/w && echo w > txn/w/0000000000000002 && echo commit > txn/w/ctl");
    assert_eq!(data(&s, 2).unwrap(), b"w\n", "a commit of other objects does not wait for the vote");
    let same = spawn_sh(&m, "mkdir txn/u && echo u > txn/u/0000000000000001 && echo commit > txn/u/ctl");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(data(&s, 1).unwrap(), b"one\n", "a commit of the voted object waits while the vote stands");
    // Reads and other requests go on meanwhile.
    assert_eq!(m.sh("cat head/0000000000000001 txn/v/ctl"), "one\nvoted\n");
    m.sh("echo commit > txn/v/ctl");
    assert!(!same.wait_with_output().unwrap().status.success(), "it conflicts once the vote committed");
    assert!(m.sh("cat txn/u/ctl").starts_with("conflict 0000000000000001"), "{}", m.sh("cat txn/u/ctl"));
    assert_eq!(data(&s, 1).unwrap(), b"voted\n");
    assert_eq!(data(&s, 2).unwrap(), b"w\n");

    // Vote then abort: nothing applied, the lock released.
    m.sh("mkdir txn/x; echo x > txn/x/0000000000000003; echo vote > txn/x/ctl; echo abort > txn/x/ctl");
    assert_eq!(m.sh("cat txn/x/ctl"), "aborted\n");
    assert_eq!(data(&s, 3).unwrap(), b"three\n");

    // An abandoned vote is aborted after --vote-timeout; a commit of its object
    // meanwhile waits, then goes through.
    m.sh("mkdir txn/y; echo y > txn/y/0000000000000003; echo vote > txn/y/ctl");
    let start = Instant::now();
    m.sh("mkdir txn/z; echo z > txn/z/0000000000000003; echo commit > txn/z/ctl");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1500), "the commit waited for the timeout: {waited:?}");
    assert!(m.sh("cat txn/y/ctl").starts_with("error vote timed out"));
    assert_eq!(data(&s, 3).unwrap(), b"z\n");
    m.unmount();
}

#[test]
fn a_killed_script_never_leaves_a_partial_transaction() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let m = TestMount::new(s.clone());
    let before = s.last_tid();
    // A clone-file transaction dies with its descriptor.
    let mut k = spawn_sh(
        &m,
        "exec 3<>txn/new; read n <&3; echo $n; for i in 1 2 3; do echo killed > txn/$n/000000000000000$i; done; \
         sleep 30",
    );
    let mut n = String::new();
    let start = Instant::now();
    while m.sh("ls txn").lines().count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    for l in m.sh("ls txn").lines().filter(|l| *l != "new") {
        n = l.to_string();
    }
    // SAFETY: kill(2) on the process group of our own child: `timeout` makes its own
    // group, holding bash and its sleep.
    unsafe { libc::kill(-(k.id() as i32), libc::SIGKILL) };
    let _ = k.wait();
    let start = Instant::now();
    while m.path(&format!("txn/{n}")).exists() {
        assert!(start.elapsed() < Duration::from_secs(40), "the clone transaction outlived its descriptor");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A mkdir transaction of a killed script stays open, unapplied, until rmdir.
    let mut k = spawn_sh(&m, "mkdir txn/k; echo killed > txn/k/0000000000000001; kill -9 $$");
    let _ = k.wait();
    assert!(m.sh("cat txn/k/ctl").starts_with("open"));
    m.sh("rmdir txn/k");
    assert_eq!(s.last_tid(), before, "nothing was committed");
    for o in 1..=3 {
        assert_ne!(data(&s, o).unwrap(), b"killed\n");
    }
    m.unmount();
}

#[test]
fn merge_through_the_mount() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    for i in 0..3u8 {
        let mut t = s.begin();
        t.store(Oid(10 + i as u64), &[i; 100]).unwrap();
        t.commit().unwrap();
        s.rotate().unwrap();
    }
    let m = TestMount::new(s.clone());
    assert_eq!(m.sh("cat merge"), "idle\n");
    assert_eq!(m.sh("ls segments | tr '\\n' ' '"), "seg-000001 seg-000002 seg-000003 seg-000004 seg-000005 ");
    // A file open on a segment that a merge removes keeps reading.
    let mut held = std::fs::File::open(m.path("segments/seg-000001/data")).unwrap();
    let want = std::fs::read(m.path("segments/seg-000001/data")).unwrap();
    m.sh("echo seg-000001 seg-000002 > merge");
    assert!(m.sh("cat merge").starts_with("merged seg-000001 seg-000002 into seg-000001-000002"));
    assert_eq!(m.sh("ls segments | tr '\\n' ' '"), "seg-000001-000002 seg-000003 seg-000004 seg-000005 ");
    assert_eq!(m.probe("stat", "segments/seg-000001", None), "ENOENT");
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut held, &mut got).unwrap();
    assert_eq!(got, want);
    m.sh("echo seg-000003 seg-000004 --append target-end > merge");
    assert!(m.sh("cat merge").starts_with("merged seg-000003 seg-000004 into seg-000004"));
    m.sh("echo all > merge");
    assert_eq!(m.sh("ls segments | tr '\\n' ' '"), "seg-000001-000004 seg-000005 ");
    m.sh("echo policy > merge");
    assert_eq!(m.sh("cat merge"), "nothing to merge\n");
    for o in 1..=4u64 {
        assert_eq!(m.ok(&["cat", &format!("head/{}", Oid(o))]), data(&s, o).unwrap());
    }
    assert_eq!(m.ok(&["cat", "head/000000000000000c"]), vec![2u8; 100]);
    assert_eq!(s.segments().unwrap().len(), 2);
    let _ = Tid::ZERO;
    m.unmount();
}

/// Unmounts a file system the test mounted, however the test ends.
struct TmpFs(std::path::PathBuf);

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Disk full: the commit fails with ENOSPC, nothing of the transaction is applied, and the
/// storage stays usable through the same mount.
#[test]
fn a_full_disk_fails_the_commit_with_enospc_and_the_storage_stays_usable() {
    if !available() {
        return;
    }
    let small = tempfile::tempdir().unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "fs2-enospc"]).arg(small.path()).status();
    assert!(ok.is_ok_and(|s| s.success()), "mount a 24 MiB tmpfs (the tests run as root)");
    let _tmpfs = TmpFs(small.path().to_path_buf());
    let dir = small.path().join("storage");
    let s = storage(&dir);
    let before = s.last_tid();
    let m = TestMount::new(s.clone());
    // 14 MiB staged (on the same file system), then the commit needs 14 MiB more.
    let out = m.sh("mkdir txn/big
         head -c 14680064 /dev/zero > txn/big/0000000000000009
         echo changed > txn/big/0000000000000001
         python3 -c 'import errno, os, sys
fd = os.open(\"txn/big/ctl\", os.O_WRONLY | os.O_TRUNC)
try:
    os.write(fd, b\"commit\")
    print(\"OK\")
except OSError as e:
    print(errno.errorcode[e.errno])'
         cat txn/big/ctl");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"ENOSPC"), "{out}");
    assert!(lines.get(1).is_some_and(|l| l.starts_with("error") || l.starts_with("aborted")), "{out}");
    assert_eq!(s.last_tid(), before, "nothing was committed");
    assert_eq!(data(&s, 9), None);
    assert_eq!(data(&s, 1), Some(b"one\n".to_vec()));
    // The storage stays usable: free the staged bytes, commit something small.
    let out = m.sh("rmdir txn/big
         mkdir txn/small
         echo small > txn/small/0000000000000005
         echo commit > txn/small/ctl
         cat txn/small/ctl");
    assert!(out.starts_with("committed "), "{out}");
    assert_eq!(data(&s, 5), Some(b"small\n".to_vec()));
    assert_eq!(m.ok(&["cat", "head/0000000000000005"]), b"small\n");
    m.unmount();
    drop(s);
    let s = Storage::open(&dir, Options::default()).unwrap();
    assert_eq!(data(&s, 5), Some(b"small\n".to_vec()));
    assert_eq!(data(&s, 9), None);
}
