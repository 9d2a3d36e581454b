//! What the mount guarantees (README "What the mount guarantees"), each through a real
//! mount with real tools: read-your-writes across processes, owner-only staging, who may
//! read and write, failed writes, concurrent writers, what copy tools see, and following
//! commits.

mod common;

use common::mount::{available, TestMount};
use filestorage2::fuse::MountOptions;
use filestorage2::{Oid, Options, Storage, Tid};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn storage(dir: &std::path::Path) -> Storage {
    let s = Storage::create(dir, Options { sync: false, ..Options::default() }).unwrap();
    let mut t = s.begin();
    t.store(Oid(1), b"0").unwrap();
    t.commit().unwrap();
    s
}

/// Once `echo commit > ctl` has returned, a read of `head/<oid>` by the same or another
/// process shows that commit (the kernel's cached name of the old revision is dropped
/// before the commit answers).
#[test]
fn a_returned_commit_is_seen_by_every_later_read() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = TestMount::new(storage(&dir.path().join("s")));
    // A reader in another process keeps head/<oid> cached all along.
    let mut reader = std::process::Command::new("sh")
        .args(["-c", "while :; do cat head/0000000000000001 >/dev/null 2>&1; done"])
        .current_dir(&m.root)
        .spawn()
        .unwrap();
    // Python: the read follows the commit's answer within microseconds.
    let script = r#"
import os
bad = 0
def put(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
def head():
    with open("head/0000000000000001", "rb") as f:
        return f.read()
for i in range(1, 601):
    os.mkdir(f"txn/s{i}")
    bad += head() != str(i - 1).encode()
    put(f"txn/s{i}/0000000000000001", str(i).encode())
    put(f"txn/s{i}/ctl", b"commit")
    os.rmdir(f"txn/s{i}")
    bad += head() != str(i).encode()
print(bad)
"#;
    let out = m.run(&["python3", "-c", script]);
    let _ = reader.kill();
    let _ = reader.wait();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "stale reads of head/ after a commit");
    assert_eq!(m.storage.load(Oid(1)).unwrap().unwrap().1, b"600");
}

/// A write that fails (here EFBIG) ends the transaction: `ctl` reads `error ...` and
/// `commit` refuses, so a truncated object is never committed.
#[test]
fn a_failed_write_fails_the_transaction() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = MountOptions { max_object_size: 1000, ..MountOptions::default() };
    let m = TestMount::with(storage(&dir.path().join("s")), &opts);
    let out = m.sh("mkdir txn/t
         head -c 1001 /dev/zero > txn/t/0000000000000002 2>/dev/null && echo wrote
         cat txn/t/ctl
         echo commit > txn/t/ctl 2>/dev/null && echo committed
         rmdir txn/t
         true");
    assert!(!out.contains("wrote") && !out.contains("committed"), "{out}");
    assert!(out.starts_with("error write failed: "), "{out}");
    assert!(out.contains("File too large"), "{out}");
    assert!(m.storage.load(Oid(2)).unwrap().is_none(), "nothing of it is committed");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// Staged data is the owner's only (0700 directories, 0600 files) even under umask 000;
/// `fs2 init` into an existing open directory tightens it, and refuses one that belongs
/// to someone else while others may write to it.
#[test]
fn staging_is_owner_only_whatever_the_umask() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("s");
    std::fs::create_dir(&sdir).unwrap();
    std::fs::set_permissions(&sdir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fs2 = env!("CARGO_BIN_EXE_fs2");
    let out = std::process::Command::new(fs2).arg("init").arg(&sdir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&sdir), 0o700, "init tightened the existing directory");
    // Someone else's world-writable directory is refused.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let out = std::process::Command::new(fs2).arg("init").arg(&theirs).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("others can write"), "{out:?}");

    // SAFETY: umask only sets the process's file creation mask.
    let old = unsafe { libc::umask(0) };
    let m = TestMount::new(Storage::open(&sdir, Options { sync: false, ..Options::default() }).unwrap());
    // A small object is staged in memory, a large one (past 1 MiB) spills to a file
    // without a name: nobody else can open either.
    m.sh("mkdir txn/t; echo forged-or-not > txn/t/0000000000000005; cp txn/t/0000000000000005 /dev/null; \
          head -c 3000000 /dev/zero > txn/t/0000000000000006");
    // SAFETY: as above: restores the mask.
    unsafe { libc::umask(old) };
    let staging = sdir.join(".staging");
    assert_eq!(mode(&staging), 0o700);
    let names: Vec<_> = std::fs::read_dir(&staging).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(names.is_empty(), "staged data has no names: {names:?}");
    m.sh("echo commit > txn/t/ctl");
    assert_eq!(m.run(&["stat", "-c", "%s", "head/0000000000000006"]).stdout, b"3000000\n");
}

/// `sh -c script` as uid/gid 65534 (nobody) in the mount's root; prints what it printed.
fn as_nobody(m: &TestMount, script: &str) -> String {
    let out = m.run(&["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// With `--allow-other` another user reads but cannot write (the kernel checks the modes
/// the tree shows); `--allow-other-write` lets them write; without `--allow-other` they
/// cannot even read.
#[test]
fn other_users_read_and_only_the_owner_writes() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir.path().join("s"));
    let opts = MountOptions { allow_other: true, ..MountOptions::default() };
    let m = TestMount::with(s.clone(), &opts);
    m.sh("mkdir txn/t; echo mine > txn/t/0000000000000001");
    let out = as_nobody(
        &m,
        "cat head/0000000000000001; echo
         ls -ld txn head/0000000000000001 | cut -c1-10
         mkdir txn/x 2>/dev/null || echo mkdir refused
         { echo forged > txn/t/0000000000000001; } 2>/dev/null || echo overwrite refused
         { echo commit > txn/t/ctl; } 2>/dev/null || echo commit refused
         sh -c 'exec 3<>txn/new' 2>/dev/null || echo clone refused
         { echo all > merge; } 2>/dev/null || echo merge refused",
    );
    assert_eq!(
        out,
        "0\n-r--r--r--\ndrwxr-xr-x\nmkdir refused\noverwrite refused\ncommit refused\nclone refused\nmerge refused\n"
    );
    assert_eq!(m.sh("cat txn/t/0000000000000001; echo commit > txn/t/ctl; cat head/0000000000000001"), "mine\nmine\n");
    drop(m);

    let opts = MountOptions { allow_other: true, allow_other_write: true, ..MountOptions::default() };
    let m = TestMount::with(s.clone(), &opts);
    let out =
        as_nobody(&m, "mkdir txn/x && echo theirs > txn/x/0000000000000001 && echo commit > txn/x/ctl && echo ok");
    assert_eq!(out, "ok\n");
    assert_eq!(s.load(Oid(1)).unwrap().unwrap().1, b"theirs\n");
    drop(m);

    let m = TestMount::new(s);
    let out = as_nobody(&m, "cat head/0000000000000001 2>/dev/null || echo read refused");
    assert_eq!(out, "read refused\n");
}

/// Two-phase commit through two clone descriptors: the voted transaction's commit is
/// answered at once, although another descriptor's commit waits for its vote (each open
/// of `txn/new` is its own file, so the kernel does not queue one write behind the
/// other).
#[test]
fn clone_descriptors_commit_independently() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir.path().join("s"));
    let opts = MountOptions { vote_timeout: std::time::Duration::from_secs(25), ..MountOptions::default() };
    let m = TestMount::with(s.clone(), &opts);
    let out = m.run(&[
        "bash",
        "-c",
        "exec 3<>txn/new; read a <&3
         echo A > txn/$a/0000000000000001
         echo vote >&3
         ( exec 4<>txn/new; read b <&4; echo B > txn/$b/0000000000000001
           { echo commit >&4; } 2>/dev/null && echo B won || echo B lost ) &
         sleep 0.5
         start=$(date +%s%N)
         echo commit >&3 && echo A committed
         echo $(( ($(date +%s%N) - start) / 1000000 )) >&2
         wait",
    ]);
    let ms: u64 = String::from_utf8_lossy(&out.stderr).trim().parse().expect("the script's time");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["A committed", "B lost"]);
    assert!(ms < 5000, "the voted commit waited {ms} ms behind the other descriptor's commit");
    assert_eq!(s.load(Oid(1)).unwrap().unwrap().1, b"A\n");
}

/// A second merge command while one runs is refused with EBUSY at once (it does not
/// wait for the first in the kernel).
#[test]
fn a_second_merge_is_busy_not_queued() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(&dir.path().join("s"));
    let big = vec![7u8; 16 << 20];
    for i in 0..6u64 {
        let mut t = s.begin();
        t.store(Oid(10 + i), &big).unwrap();
        t.commit().unwrap();
        s.rotate().unwrap();
    }
    let m = TestMount::new(s.clone());
    let out = m.run(&[
        "bash",
        "-c",
        "{ echo all > merge; } 2>/dev/null && echo first merged &
         until grep -q running merge; do :; done
         { echo all > merge; } 2>&1 | grep -o 'Device or resource busy'
         wait",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Device or resource busy\nfirst merged\n");
}

/// A chain of `n` past segments (two transactions each) and an active one.
fn chain(dir: &Path, n: u64) -> Storage {
    let s = Storage::create(dir, Options { sync: false, ..Options::default() }).unwrap();
    for i in 0..n + 1 {
        for j in 0..2u64 {
            let mut t = s.begin();
            t.set_description(format!("segment {i} transaction {j}").as_bytes());
            t.store(Oid(1 + j), format!("{i}.{j}").repeat(100).as_bytes()).unwrap();
            t.store(Oid(10 + i), b"x").unwrap();
            t.commit().unwrap();
        }
        if i < n {
            s.rotate().unwrap();
        }
    }
    s
}

/// Every file of `a` has the same bytes as the file of the same name in `b`; `a` holds
/// `files` files.
fn same_tree(a: &Path, b: &Path, files: usize) {
    let mut n = 0;
    for e in walk(a) {
        let rel = e.strip_prefix(a).unwrap();
        assert!(std::fs::read(&e).unwrap() == std::fs::read(b.join(rel)).unwrap(), "{} differs", rel.display());
        n += 1;
    }
    assert_eq!(n, files, "files in {}", a.display());
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Whether `tool` is installed; without it the test says so and skips, except where
/// real-mount tests are required (`.ci/run` installs the tools).
fn have(tool: &str) -> bool {
    let ok = std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
    if !ok.status.success() {
        assert!(std::env::var_os("FS2_REQUIRE_FUSE").is_none(), "{tool} is missing (.ci/run installs it)");
        eprintln!("SKIPPED: {tool} is not installed (apt-get install {tool})");
    }
    ok.status.success()
}

/// `stat` reports every generated file's true size, so `cp -a`, `tar` and `rsync -a` of
/// `segments/` copy real bytes.
#[test]
fn copy_tools_see_true_sizes() {
    if !available() || !have("rsync") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = chain(&dir.path().join("s"), 1);
    let m = TestMount::new(s.clone());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = out.display();
    // What cat reads, as the reference (cat reads to EOF whatever the size says).
    m.sh(&format!(
        "set -e; mkdir {o}/cat; cd segments; for d in *; do mkdir {o}/cat/$d; for f in $d/*; do cat $f > {o}/cat/$f; done; done"
    ));
    m.sh(&format!(
        "set -e; cp -a segments {o}/cp; mkdir {o}/tar; tar cf - segments | tar xf - -C {o}/tar
         rsync -a segments/ {o}/rsync/"
    ));
    let files = walk(&out.join("cat")).len();
    assert_eq!(files, 2 * 2, "the file and info of two segments");
    same_tree(&out.join("cat"), &out.join("cp"), files);
    same_tree(&out.join("cat"), &out.join("tar/segments"), files);
    same_tree(&out.join("cat"), &out.join("rsync"), files);
    let seg = s.segments().unwrap();
    assert_eq!(
        std::fs::read(&seg[0].path).unwrap(),
        std::fs::read(out.join("cp").join(seg[0].name.to_string()).join(seg[0].name.file_name())).unwrap()
    );
    assert_eq!(m.sh("stat -c %s stats | grep -cx 0 || true"), "0\n", "stats has a size");
}

/// After a merge rewrote a segment's header, `segments/<name>/data` read through the
/// mount is the file as it is now (the kernel's cached pages were dropped), and a chain
/// copied through the mount passes `fs2 check`.
#[test]
fn segment_data_is_fresh_after_a_merge() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = chain(&dir.path().join("s"), 3);
    let m = TestMount::new(s.clone());
    let names: Vec<String> = s.segments().unwrap().iter().map(|i| i.name.to_string()).collect();
    // Cache every segment file in the kernel, then merge the two oldest.
    m.sh("cat segments/*/data > /dev/null");
    m.sh(&format!("echo {} {} > merge", names[0], names[1]));
    let out = dir.path().join("copy");
    std::fs::create_dir(&out).unwrap();
    for i in s.segments().unwrap() {
        let file = out.join(i.path.file_name().unwrap());
        m.sh(&format!("cp segments/{}/data {}", i.name, file.display()));
        let same = std::fs::read(&i.path).unwrap() == std::fs::read(&file).unwrap();
        assert!(same, "{} through the mount differs from the file", i.name);
    }
    drop(m);
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_fs2")).arg("check").arg(&out).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

/// `tail -f` of the active segment's `txns` follows commits (the file grows, it is never
/// "truncated").
#[test]
fn tail_follows_the_active_txns() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = chain(&dir.path().join("s"), 0);
    let m = TestMount::new(s.clone());
    let active = s.segments().unwrap().last().unwrap().name.to_string();
    let (to, te) = (dir.path().join("tail.out"), dir.path().join("tail.err"));
    let ctl = m.sh(&format!(
        "tail -n 1 -f segments/{active}/txns > {} 2> {} &
         sleep 1.5
         for i in 1 2; do mkdir txn/t$i; echo $i > txn/t$i/0000000000000005; echo commit > txn/t$i/ctl; done
         sleep 2.5; kill $!; cat txn/t1/ctl txn/t2/ctl",
        to.display(),
        te.display()
    ));
    let tids: Vec<&str> = ctl.lines().map(|l| l.strip_prefix("committed ").unwrap()).collect();
    let followed = std::fs::read_to_string(&to).unwrap();
    let lines: Vec<&str> = followed.lines().collect();
    assert_eq!(lines.len(), 3, "the last line, then one per commit: {followed}");
    for (l, t) in lines[1..].iter().zip(&tids) {
        assert!(l.starts_with(&format!("{t} 1 ")), "{l} for {t}");
    }
    assert_eq!(std::fs::read_to_string(&te).unwrap(), "", "tail complained");
}

/// A read of `head/watch` blocks until the next commit and gives its tid: waiting for
/// commits without polling (and head/ shows that commit by then).
#[test]
fn head_watch_waits_for_commits() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let m = TestMount::new(storage(&dir.path().join("s")));
    let out = m.sh(
        "(exec 3<head/watch; read a <&3; echo $a > /dev/shm/fs2-watch.$$; read b <&3; echo $b >> /dev/shm/fs2-watch.$$) &
         sleep 0.5; cat /dev/shm/fs2-watch.$$ 2>/dev/null | wc -c
         for i in 1 2; do
           mkdir txn/t$i; echo $i > txn/t$i/0000000000000001; echo commit > txn/t$i/ctl
           # Wait until the watcher has seen this commit before the next one (commits
           # in between would be coalesced into one line).
           until [ $(cat /dev/shm/fs2-watch.$$ 2>/dev/null | wc -l) -ge $i ]; do sleep 0.05; done
         done
         wait
         cat /dev/shm/fs2-watch.$$; rm /dev/shm/fs2-watch.$$
         cat txn/t1/ctl txn/t2/ctl",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "nothing before a commit: {out}");
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(format!("committed {}", lines[1]), lines[3]);
    assert_eq!(format!("committed {}", lines[2]), lines[4]);
}

/// Small things users hit: `@<time>` after the last commit is head as of then, offsets
/// like `+00:00` work, the `time:` a transaction shows names its state; a miss is not an
/// error in `stats`; `fs2 info | head -1` ends quietly.
#[test]
fn times_stats_and_closed_pipes() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("s");
    let s = storage(&sdir);
    let mut t = s.begin();
    t.store(Oid(1), b"second").unwrap();
    let second = t.commit().unwrap();
    assert!(second > Tid::ZERO);
    let m = TestMount::new(s.clone());
    let out = m.sh(&format!(
        "T=$(sed -n 's/^time: //p' transactions/{second}/info); cat @$T/0000000000000001; echo
         P=$(echo $T | sed 's/Z$/+00:00/'); cat @$P/0000000000000001; echo
         sleep 2; N=$(date -u -d '-1 sec' +%Y-%m-%dT%H:%M:%SZ); cat @$N/0000000000000001; echo
         cat head/0000000000000077 2>/dev/null; grep -E '^(errors|not_found):' stats"
    ));
    assert_eq!(out, "second\nsecond\nsecond\nnot_found: 1\nerrors: 0\n");
    drop(m);
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            &format!(
                "{} info {} | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
                env!("CARGO_BIN_EXE_fs2"),
                sdir.display()
            ),
        ])
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(code == "0" || code == "141", "exit {code}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "quiet");
}

/// Concurrent clients move money between accounts through the mount, each reading the
/// balances from `head/` after beginning its transaction: no update is lost (reads are
/// never older than the transaction's base, so the conflict check covers them).
#[test]
fn concurrent_transfers_through_head_lose_nothing() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(&dir.path().join("s"), Options { sync: false, ..Options::default() }).unwrap();
    let mut t = s.begin();
    for a in 0..4u64 {
        t.store(Oid(0x100 + a), b"1000").unwrap();
    }
    t.commit().unwrap();
    let m = TestMount::new(s.clone());
    let client = r#"
import errno, os, random, sys
me = int(sys.argv[1]); rnd = random.Random(me); done = 0; n = 0
def put(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
while done < 40:
    n += 1
    t = f"txn/c{me}-{n}"
    os.mkdir(t)
    a, b = rnd.sample(range(4), 2)
    oa, ob = f"{0x100 + a:016x}", f"{0x100 + b:016x}"
    va = int(open(f"head/{oa}").read()); vb = int(open(f"head/{ob}").read())
    put(f"{t}/{oa}", str(va - 1).encode()); put(f"{t}/{ob}", str(vb + 1).encode())
    try:
        put(f"{t}/ctl", b"commit"); done += 1
    except OSError as e:
        assert e.errno == errno.ESTALE, e
    os.rmdir(t)
"#;
    let kids: Vec<_> = (0..4)
        .map(|i| {
            std::process::Command::new("timeout")
                .args(["-k", "5", "120", "python3", "-c", client, &i.to_string()])
                .current_dir(&m.root)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let total: i64 = (0..4u64)
        .map(|a| String::from_utf8(s.load(Oid(0x100 + a)).unwrap().unwrap().1).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 4000, "money was created or lost");
}
