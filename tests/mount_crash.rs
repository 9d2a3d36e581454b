//! `kill -9` of the `fs2 mount` daemon while a shell commits through it in a loop: every
//! commit the shell saw succeed is in the storage after a remount, and no transaction is
//! partial.

mod common;

use common::mount::{available, is_mounted, start, Cleanup};
use filestorage2::{Oid, Options, Storage};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Commit `i` stores "i" in object i and in the shared object 0x1000 (two records: a
/// partial transaction would show one without the other).
const LOOP: &str = r#"
i=1
while [ $i -lt 100000 ]; do
  o=$(printf %016x $i)
  mkdir "$M/txn/c$i" || exit 0
  echo $i > "$M/txn/c$i/$o" || exit 0
  echo $i > "$M/txn/c$i/0000000000001000" || exit 0
  echo commit > "$M/txn/c$i/ctl" || exit 0
  echo $i >> "$ACKED"
  rmdir "$M/txn/c$i" || exit 0
  i=$((i + 1))
done
"#;

#[test]
fn kill_9_during_commits_loses_no_acknowledged_transaction() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (storage, mp, acked) = (d.path().join("s"), d.path().join("mnt"), d.path().join("acked"));
    let _c = Cleanup(&mp);
    for round in 0..3 {
        std::fs::write(&acked, b"").unwrap();
        let mut daemon = start(&storage, &mp, &["--init", "--force"]);
        let mut shell = Command::new("timeout")
            .args(["-k", "5", "60", "bash", "-c", LOOP])
            .env("M", &mp)
            .env("ACKED", &acked)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(400 + 300 * round));
        daemon.kill().unwrap(); // SIGKILL
        daemon.wait().unwrap();
        shell.wait().unwrap();
        filestorage2::fuse::lazy_unmount(&mp).unwrap();
        assert!(!is_mounted(&mp));

        let s = Storage::open(&storage, Options::default()).unwrap();
        let acks: Vec<u64> = std::fs::read_to_string(&acked).unwrap().lines().map(|l| l.parse().unwrap()).collect();
        assert!(!acks.is_empty(), "round {round}: the loop committed before the kill");
        for &i in &acks {
            let (_, d) = s.load(Oid(i)).unwrap().unwrap_or_else(|| panic!("acknowledged commit {i} is lost"));
            assert_eq!(d, format!("{i}\n").as_bytes());
        }
        // No partial transaction: every transaction holds both of its records.
        let shared: Vec<_> = s.history(Oid(0x1000)).unwrap();
        let mut objects = 0;
        for i in 1..100_000u64 {
            let Some((tid, d)) = s.load(Oid(i)).unwrap() else { break };
            objects += 1;
            let rev = shared.iter().find(|r| r.tid == tid).unwrap_or_else(|| panic!("commit {i} is partial"));
            assert_eq!(s.revision(Oid(0x1000), rev.tid).unwrap().unwrap().data.unwrap(), d);
        }
        assert!(objects >= acks.len(), "{objects} objects for {} acknowledged commits", acks.len());
        eprintln!("round {round}: {} acknowledged commits, {objects} in the storage", acks.len());
        drop(s);
        // The next round starts over on the same storage (objects are overwritten).
    }
    // A killed daemon leaves staged files behind; the next mount clears them.
    let daemon = start(&storage, &mp, &["--init", "--force"]);
    assert_eq!(std::fs::read_dir(storage.join(".staging")).unwrap().count(), 0);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let out = daemon.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!storage.join(".staging").exists(), "a clean unmount removes the staging area");
}
