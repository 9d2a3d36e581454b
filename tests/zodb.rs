//! ZODB records against the real ZODB package: a Python script (tests/zodb/build_db.py,
//! interpreter from FS2_PYTHON, default python3) builds a database with ZODB and prints
//! every record with `referencesf` and `get_pickle_metadata`, and what
//! `FileStorage.pack(t, referencesf)` removes from a copy. The reader must agree on every
//! record; `fs2 gc` must delete exactly what ZODB's pack removes.
//!
//! Without an importable ZODB the tests print why and pass, unless FS2_REQUIRE_ZODB is
//! set (CI sets it, with FS2_PYTHON naming a venv with ZODB 6.x).

mod common;

use common::mount::{available, TestMount};
use filestorage2::fuse::MountOptions;
use filestorage2::zodb::gc::{collect, GcOptions};
use filestorage2::zodb::{read_record, Class};
use filestorage2::{Oid, Options, Storage};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Rec {
    oid: Option<Oid>,
    data: Vec<u8>,
    module: String,
    name: String,
    refs: Vec<Oid>,
}

struct Zodb {
    txns: Vec<Vec<Rec>>,
    extra: Vec<Rec>,
    gone: BTreeSet<Oid>,
    kept: u64,
}

fn python() -> String {
    std::env::var("FS2_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Run `python args` with a deadline; stdout, or Err(why).
fn run_python(args: &[&str], limit: Duration) -> Result<String, String> {
    let mut child = Command::new(python())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let stdout = reader.join().unwrap();
            let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
            return if st.success() { Ok(stdout) } else { Err(format!("{} {args:?} failed: {stderr}", python())) };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} {args:?} timed out", python()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The database built by ZODB, or `None` (after saying why) if ZODB is not available
/// and not required.
fn zodb_database(work: &std::path::Path) -> Option<Zodb> {
    if let Err(why) = run_python(&["-c", "import ZODB, BTrees, persistent"], Duration::from_secs(60)) {
        if std::env::var_os("FS2_REQUIRE_ZODB").is_some() {
            panic!("FS2_REQUIRE_ZODB is set but ZODB cannot be imported: {why}");
        }
        println!("SKIPPED: ZODB is not importable with {} ({why}); set FS2_PYTHON to a Python with ZODB 6", python());
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/zodb/build_db.py");
    let out = run_python(&[script, work.to_str().unwrap()], Duration::from_secs(300)).unwrap();
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    };
    let oid = |s: &str| Oid(u64::from_str_radix(s, 16).unwrap());
    let rec = |oid_: Option<Oid>, f: &[&str]| Rec {
        oid: oid_,
        data: hex(f[0]),
        module: f[1].into(),
        name: f[2].into(),
        refs: if f[3] == "-" { vec![] } else { f[3].split(',').map(oid).collect() },
    };
    let mut z = Zodb { txns: vec![], extra: vec![], gone: BTreeSet::new(), kept: 0 };
    for line in out.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "TXN" => z.txns.push(vec![]),
            "REC" => z.txns.last_mut().unwrap().push(rec(Some(oid(f[1])), &f[2..])),
            "EXTRA" => z.extra.push(rec(None, &f[1..])),
            "GONE" => {
                z.gone.insert(oid(f[1]));
            }
            "KEPT" => z.kept = f[1].parse().unwrap(),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    Some(z)
}

#[test]
fn reader_agrees_with_referencesf_and_get_pickle_metadata_on_every_record() {
    let t = tempfile::tempdir().unwrap();
    let Some(z) = zodb_database(t.path()) else { return };
    let all: Vec<&Rec> = z.txns.iter().flatten().chain(&z.extra).collect();
    let (mut weak, mut cross, mut with_class, mut plain) = (0, 0, 0, 0);
    let mut classes = BTreeSet::new();
    for r in &all {
        let got = read_record(&r.data).unwrap_or_else(|e| panic!("{:?}: {e}", r.oid));
        let Class::Named { module, name } = &got.class else { panic!("{:?}: {:?}", r.oid, got.class) };
        assert_eq!((module.as_str(), name.as_str()), (r.module.as_str(), r.name.as_str()), "{:?}", r.oid);
        let strong: Vec<Oid> = got.refs.iter().filter(|x| x.is_strong()).map(|x| x.oid).collect();
        assert_eq!(strong, r.refs, "references of {:?}", r.oid);
        for x in &got.refs {
            match &x.kind {
                filestorage2::zodb::RefKind::Weak { .. } => weak += 1,
                filestorage2::zodb::RefKind::CrossDatabase { .. } => cross += 1,
                filestorage2::zodb::RefKind::Strong if x.class.is_some() => with_class += 1,
                filestorage2::zodb::RefKind::Strong => plain += 1,
            }
        }
        classes.insert(got.class.to_string());
    }
    println!("{} records ({} Python 2 form), classes {classes:?}", all.len(), z.extra.len());
    println!("references: {with_class} (oid, class), {plain} oid only, {weak} weak, {cross} cross-database");
    assert!(all.len() > 400 && z.extra.len() == 6);
    assert!(weak >= 3 && cross >= 2 && with_class > 50 && plain > 5, "every reference form is covered");
    for c in
        ["BTrees.OOBTree.OOBucket", "BTrees.IOBTree.IOBucket", "persistent.list.PersistentList", "__main__.WithArgs"]
    {
        assert!(classes.contains(c), "{c} in {classes:?}");
    }
}

/// Copy the ZODB database's transactions into a new filestorage2 storage.
fn copy_into(z: &Zodb, dir: &std::path::Path) -> Storage {
    let s = Storage::create(dir, Options { sync: false, ..Options::default() }).unwrap();
    for txn in &z.txns {
        let mut t = s.begin();
        for r in txn {
            t.store(r.oid.unwrap(), &r.data).unwrap();
        }
        t.commit().unwrap();
    }
    s
}

#[test]
fn gc_deletes_what_zodb_pack_removes() {
    let t = tempfile::tempdir().unwrap();
    let Some(z) = zodb_database(t.path()) else { return };
    let s = copy_into(&z, &t.path().join("fs2"));
    let live_before = s.count_objects().unwrap();
    assert!(z.gone.len() >= 10, "the database has garbage: {:?}", z.gone);

    // The dry run through the command line lists the same set and deletes nothing.
    drop(s);
    let dir = t.path().join("fs2");
    let o = Command::new(env!("CARGO_BIN_EXE_fs2")).args(["gc", "--dry-run"]).arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed: BTreeSet<Oid> = String::from_utf8(o.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(listed, z.gone, "dry run lists what ZODB's pack removes");

    let s = Storage::open(&dir, Options::default()).unwrap();
    assert_eq!(s.count_objects().unwrap(), live_before);
    let mut deleted = BTreeSet::new();
    let report = collect(
        &s,
        GcOptions {
            dry_run: false,
            on_garbage: &mut |o| {
                deleted.insert(o);
            },
            progress: &mut |_, _, _| {},
            before_commit: &mut || {},
        },
    )
    .unwrap();
    assert_eq!(deleted, z.gone);
    assert!(report.tid.is_some());
    assert_eq!(s.count_objects().unwrap(), z.kept, "what is left is what ZODB's pack keeps");
    for o in &z.gone {
        assert!(s.load(*o).unwrap().is_none());
    }
    // The object only a weak reference points at went; the reference stays (dangling
    // weak references are normal in ZODB).
    let again = collect(
        &s,
        GcOptions { dry_run: false, on_garbage: &mut |_| {}, progress: &mut |_, _, _| {}, before_commit: &mut || {} },
    )
    .unwrap();
    assert_eq!((again.garbage, again.tid), (0, None));
}

/// The mount's ZODB views on a database written by ZODB: `ls classes/` is the histogram
/// of the live objects, `classes/<class>/` their oids, `refs/<oid>` the references
/// `referencesf` finds, `find` of the root never enters them, and `echo run > gc`
/// deletes what ZODB's pack removes (EROFS on a read-only mount).
#[test]
fn mount_shows_classes_and_refs_and_collects_garbage() {
    if !available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some(z) = zodb_database(t.path()) else { return };
    let dir = t.path().join("fs2");
    let s = copy_into(&z, &dir);
    // The live objects: the last record of each oid.
    let mut live: BTreeMap<Oid, &Rec> = BTreeMap::new();
    for r in z.txns.iter().flatten() {
        live.insert(r.oid.unwrap(), r);
    }
    let by_class = |live: &BTreeMap<Oid, &Rec>| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (o, r) in live {
            m.entry(format!("{}.{}", r.module, r.name)).or_default().push(o.to_string());
        }
        m
    };
    let lines = |s: String| -> Vec<String> { s.lines().map(String::from).collect() };
    let m = TestMount::new(s.clone());
    let want = by_class(&live);
    let mut classes = lines(m.sh("ls classes/"));
    classes.retain(|c| c != "at" && c != "index");
    assert_eq!(classes, want.keys().cloned().collect::<Vec<_>>());
    for (c, oids) in &want {
        assert_eq!(&lines(m.sh(&format!("ls classes/{c}/"))), oids, "{c}");
        // `ls -ld` shows the count as the directory's size.
        let size: u64 = m.sh(&format!("stat -c %s classes/{c}")).trim().parse().unwrap();
        assert_eq!(size, oids.len() as u64, "{c}");
    }
    let index = m.sh("cat classes/index");
    assert_eq!(index.lines().count(), want.len(), "{index}");
    for (o, r) in &live {
        let text = std::fs::read_to_string(m.path(&format!("refs/{o}"))).unwrap();
        let strong: Vec<Oid> = text.lines().filter(|l| !l.contains(' ')).map(|l| l.parse().unwrap()).collect();
        let mut want = r.refs.clone();
        let mut seen = BTreeSet::new();
        want.retain(|x| seen.insert(*x));
        assert_eq!(strong, want, "refs/{o}");
    }
    assert!(m.sh("ls refs/").is_empty(), "refs/ is lookup-only");
    // referrers/: the inverse of the strong references (weak ones marked).
    for o in live.keys().take(30) {
        let text = std::fs::read_to_string(m.path(&format!("referrers/{o}"))).unwrap();
        let got: Vec<Oid> = text.lines().filter(|l| !l.contains(' ')).map(|l| l.parse().unwrap()).collect();
        let want: Vec<Oid> = live.iter().filter(|(_, r)| r.refs.contains(o)).map(|(x, _)| *x).collect();
        assert_eq!(got, want, "referrers/{o}");
    }
    let walked = m.sh("find . | grep -c -e '^./classes' -e '^./refs' || true");
    assert_eq!(walked.trim(), "0", "find never enters classes/ or refs/");

    // gc through the mount: the dry run finds what ZODB's pack removes; run deletes it.
    m.sh("echo dry-run > gc");
    let dry = m.sh("cat gc");
    assert!(dry.contains(&format!(" garbage {} ", z.gone.len())), "{dry}");
    m.sh("echo run > gc");
    let done = m.sh("cat gc");
    assert!(done.starts_with("collected "), "{done}");
    for o in &z.gone {
        live.remove(o);
        assert!(!m.path(&format!("head/{o}")).exists(), "{o} was collected");
    }
    assert_eq!(s.count_objects().unwrap(), z.kept);
    let want = by_class(&live);
    for (c, oids) in &want {
        assert_eq!(&lines(m.sh(&format!("ls classes/{c}/"))), oids, "{c} after gc");
    }
    m.unmount();

    let ro = TestMount::with(s, &MountOptions { read_only: true, ..MountOptions::default() });
    let out = ro.run(&["sh", "-c", "echo run > gc"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only"), "{}", String::from_utf8_lossy(&out.stderr));
    ro.unmount();
}
