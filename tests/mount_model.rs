//! Differential test: random sequences of staged operations (write, append, write at an
//! offset, truncate, delete, read back) and commit or abort, applied through a real
//! mount with plain file calls and to a second storage through the engine API with a
//! model of what is staged; the results are compared after every transaction.

mod common;

use common::mount::{available, TestMount};
use common::Rng;
use filestorage2::{Oid, Options, Storage, Tid};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};

const OIDS: u64 = 8;

fn create(dir: &std::path::Path) -> Storage {
    let s = Storage::create(dir, Options { sync: false, ..Options::default() }).unwrap();
    let mut t = s.begin();
    for o in 1..=4u64 {
        t.store(Oid(o), format!("initial {o}\n").as_bytes()).unwrap();
    }
    t.commit().unwrap();
    s
}

/// The engine side's view of one transaction: staged data (`None` = deleted) over the base.
struct Model<'a> {
    s: &'a Storage,
    staged: BTreeMap<u64, Option<Vec<u8>>>,
}

impl Model<'_> {
    fn current(&self, o: u64) -> Option<Vec<u8>> {
        match self.staged.get(&o) {
            Some(d) => d.clone(),
            None => self.s.load(Oid(o)).unwrap().map(|(_, d)| d),
        }
    }
    fn in_base(&self, o: u64) -> bool {
        self.s.load(Oid(o)).unwrap().is_some()
    }
}

fn compare(m: &TestMount, a: &Storage, b: &Storage, ctx: &str) {
    let mut listed: Vec<String> = std::fs::read_dir(m.path("head"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "at")
        .collect();
    listed.sort();
    let want: Vec<String> = b.list(Oid(0), Tid::MAX, 100).unwrap().iter().map(|o| o.oid.to_string()).collect();
    assert_eq!(listed, want, "{ctx}: head/ listing");
    for o in 1..=OIDS {
        let want = b.load(Oid(o)).unwrap().map(|(_, d)| d);
        assert_eq!(a.load(Oid(o)).unwrap().map(|(_, d)| d), want, "{ctx}: engine of the mounted storage, oid {o}");
        let got = std::fs::read(m.path(&format!("head/{}", Oid(o)))).ok();
        assert_eq!(got, want, "{ctx}: head/{o} through the mount");
    }
}

#[test]
fn random_operations_through_the_mount_match_the_engine() {
    if !available() {
        return;
    }
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (create(da.path()), create(db.path()));
    let m = TestMount::new(a.clone());
    for seed in [1u64, 2, 3] {
        let mut rng = Rng(seed);
        for k in 0..25 {
            let ctx = format!("seed {seed} txn {k}");
            let name = format!("d{seed}-{k}");
            let dir = m.path(&format!("txn/{name}"));
            std::fs::create_dir(&dir).unwrap();
            let mut model = Model { s: &b, staged: BTreeMap::new() };
            for step in 0..1 + rng.below(6) {
                let o = 1 + rng.below(OIDS);
                let p = dir.join(Oid(o).to_string());
                let ctx = format!("{ctx} step {step} oid {o}");
                let fill = vec![b'a' + rng.below(26) as u8; 1 + rng.pick(3000)];
                let cur = model.current(o);
                match rng.below(6) {
                    0 => {
                        std::fs::write(&p, &fill).unwrap();
                        model.staged.insert(o, Some(fill));
                    }
                    1 => {
                        let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&p).unwrap();
                        f.write_all(&fill).unwrap();
                        let mut d = cur.unwrap_or_default();
                        d.extend_from_slice(&fill);
                        model.staged.insert(o, Some(d));
                    }
                    2 => {
                        let mut d = cur.unwrap_or_default();
                        let at = rng.below(d.len() as u64 + 3) as usize;
                        let mut f =
                            std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&p).unwrap();
                        f.seek(SeekFrom::Start(at as u64)).unwrap();
                        f.write_all(&fill).unwrap();
                        d.resize(d.len().max(at + fill.len()), 0);
                        d[at..at + fill.len()].copy_from_slice(&fill);
                        model.staged.insert(o, Some(d));
                    }
                    3 => {
                        let mut d = cur.unwrap_or_default();
                        let n = rng.below(d.len() as u64 + 10) as usize;
                        let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&p).unwrap();
                        f.set_len(n as u64).unwrap();
                        d.resize(n, 0);
                        model.staged.insert(o, Some(d));
                    }
                    4 if cur.is_some() => {
                        std::fs::remove_file(&p).unwrap();
                        if model.in_base(o) {
                            model.staged.insert(o, None);
                        } else {
                            model.staged.remove(&o);
                        }
                    }
                    _ => {
                        let got = std::fs::File::open(&p).ok().map(|mut f| {
                            let mut v = Vec::new();
                            f.read_to_end(&mut v).unwrap();
                            v
                        });
                        assert_eq!(got, cur, "{ctx}: reading back what is staged");
                    }
                }
            }
            if rng.below(5) == 0 {
                std::fs::remove_dir(&dir).unwrap();
                compare(&m, &a, &b, &format!("{ctx} (aborted)"));
                continue;
            }
            std::fs::write(dir.join("ctl"), b"commit\n").unwrap();
            let mut t = b.begin();
            for (o, d) in &model.staged {
                match d {
                    Some(d) => t.store(Oid(*o), d).unwrap(),
                    None => t.delete(Oid(*o)).unwrap(),
                }
            }
            t.commit().unwrap();
            let ctl = std::fs::read_to_string(dir.join("ctl")).unwrap();
            assert_eq!(ctl, format!("committed {}\n", a.last_tid()), "{ctx}");
            std::fs::remove_dir(&dir).unwrap();
            compare(&m, &a, &b, &ctx);
        }
    }
    m.unmount();
}
