//! External garbage collection through a real mount: `contrib/mount-gc.sh` lists the
//! objects of the transaction's snapshot, decides what is unreachable, and deletes it in
//! one transaction with `rm txn/NAME/<oid>` and `echo commit > ctl`.

mod common;

use common::mount::{available, TestMount};
use filestorage2::{Oid, Options, Storage};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/mount-gc.sh");

/// Root 0 → 1 → 2 (and 2 → 1, a cycle among live objects); 3 → 4 unreachable; 5 ↔ 6 an
/// unreachable cycle.
fn storage(dir: &std::path::Path) -> Storage {
    let s = Storage::create(dir, Options { sync: false, ..Options::default() }).unwrap();
    let r = |o: u64| format!("<oid {o:016x}>");
    let objects: Vec<(u64, String)> = vec![
        (0, format!("root {}", r(1))),
        (1, format!("a {}", r(2))),
        (2, format!("b {} and some bytes", r(1))),
        (3, format!("lost {}", r(4))),
        (4, "leaf".into()),
        (5, format!("cycle {}", r(6))),
        (6, format!("cycle {}", r(5))),
    ];
    let mut t = s.begin();
    for (o, d) in &objects {
        t.store(Oid(*o), d.as_bytes()).unwrap();
    }
    t.commit().unwrap();
    s
}

#[test]
fn mount_gc_deletes_unreachable_objects_in_one_transaction() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = storage(dir.path());
    let m = TestMount::new(s.clone());
    let mp = m.root.display().to_string();
    let before = s.last_tid();

    let dry = String::from_utf8(m.ok(&["bash", SCRIPT, &mp, "--dry-run"])).unwrap();
    assert!(dry.contains("3 live, 4 garbage"), "{dry}");
    assert!(dry.ends_with("0000000000000003\n0000000000000004\n0000000000000005\n0000000000000006\n"), "{dry}");
    assert_eq!(s.last_tid(), before, "a dry run commits nothing");
    assert_eq!(m.sh("ls txn"), "new\n", "and leaves no transaction");

    let out = String::from_utf8(m.ok(&["bash", SCRIPT, &mp])).unwrap();
    let tid = s.last_tid();
    assert!(out.contains(&format!("committed {tid}")), "{out}");
    for o in 0..=2 {
        assert!(s.load(Oid(o)).unwrap().is_some(), "{o} is live");
    }
    for o in 3..=6 {
        assert!(s.load(Oid(o)).unwrap().is_none(), "{o} was garbage");
    }
    let t = s.transaction(tid).unwrap().unwrap();
    assert_eq!(t.records.len(), 4, "one transaction holds every deletion");
    assert!(t.records.iter().all(|r| r.deleted));
    assert_eq!(t.meta.user, b"mount-gc");
    assert_eq!(m.sh("ls head | tr '\\n' ' '"), "0000000000000000 0000000000000001 0000000000000002 at ");
    assert_eq!(m.sh("ls txn"), "new\n");

    // Nothing left to collect: no transaction.
    let out = String::from_utf8(m.ok(&["bash", SCRIPT, &mp])).unwrap();
    assert!(out.contains("0 garbage"), "{out}");
    assert_eq!(s.last_tid(), tid);
    m.unmount();
}
