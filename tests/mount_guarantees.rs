//! What the mount guarantees (README "What the mount guarantees"), each through a real
//! mount with real tools: read-your-writes across processes, owner-only staging, who may
//! read and write, failed writes, concurrent writers, what copy tools see, and following
//! commits.

mod common;

use common::mount::{available, TestMount};
use filestorage2::{Oid, Options, Storage};

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
