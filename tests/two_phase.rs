//! Two-phase commit (DESIGN.md, "Two-phase commit"): per-object locks at vote, tids at
//! finish, finishes sharing fsyncs with each other and with one-step commits, at most one
//! fsync per transaction, and a caller-chosen tid taking the commit order at vote.

mod common;

use filestorage2::vfs::{RealVfs, VFile, Vfs};
use filestorage2::{Error, Oid, Options, Storage, Tid, Transaction};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

/// How long a blocked call is given to show that it waits.
const BLOCKED: Duration = Duration::from_millis(300);
/// Upper bound for anything that should finish.
const DONE: Duration = Duration::from_secs(30);

fn staged(s: &Storage, oids: &[u64], data: &[u8]) -> Transaction {
    let mut t = s.begin();
    for o in oids {
        t.store(Oid(*o), data).unwrap();
    }
    t
}

/// Run `f` on a thread; its result arrives on the returned channel.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

fn storage() -> (tempfile::TempDir, Storage) {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::create(d.path(), Options { alignment: 4096, ..Options::default() }).unwrap();
    (d, s)
}

#[test]
fn disjoint_votes_do_not_wait_and_tids_are_chosen_at_finish() {
    let (_d, s) = storage();
    let mut a = staged(&s, &[1, 2], b"a");
    a.vote().unwrap();
    assert_eq!(a.tid(), None, "no tid before finish");
    // Another transaction on other oids votes and finishes while `a` is voted.
    let s2 = s.clone();
    let b = spawn(move || {
        let mut b = staged(&s2, &[3], b"b");
        b.vote()?;
        b.finish()
    })
    .recv_timeout(DONE)
    .expect("a vote on other oids does not wait for a voted transaction")
    .unwrap();
    // A one-step commit on other oids neither.
    let s3 = s.clone();
    let c = spawn(move || staged(&s3, &[4], b"c").commit()).recv_timeout(DONE).unwrap().unwrap();
    assert!(b < c);
    assert_eq!(s.load(Oid(1)).unwrap(), None, "voted, not visible");
    let ta = a.finish().unwrap();
    assert!(ta > c, "the tid is chosen at finish: {ta} after {c}");
    assert_eq!(s.last_tid(), ta);
    assert_eq!(s.load(Oid(2)).unwrap(), Some((ta, b"a".to_vec())));
    let tids: Vec<Tid> = s.transactions(Tid::ZERO, Tid::MAX).map(|t| t.unwrap().tid).collect();
    assert_eq!(tids, vec![b, c, ta], "file order is tid order");
}

#[test]
fn a_vote_on_a_locked_oid_waits_then_conflicts_or_goes_through() {
    for finish in [true, false] {
        let (_d, s) = storage();
        let base = staged(&s, &[1], b"0").commit().unwrap();
        let mut a = staged(&s, &[1, 2], b"a");
        a.vote().unwrap();
        let s2 = s.clone();
        let b = spawn(move || {
            let mut b = s2.begin();
            b.store(Oid(1), b"b").unwrap();
            b.store(Oid(9), b"b").unwrap();
            b.vote().and_then(|_| b.finish())
        });
        assert!(b.recv_timeout(BLOCKED).is_err(), "a vote on a locked oid waits");
        // A one-step commit of a locked oid waits too.
        let s3 = s.clone();
        let c = spawn(move || {
            let mut c = s3.begin();
            c.store(Oid(2), b"c").unwrap();
            c.commit()
        });
        assert!(c.recv_timeout(BLOCKED).is_err(), "a one-step commit of a locked oid waits");
        if finish {
            let ta = a.finish().unwrap();
            match b.recv_timeout(DONE).unwrap() {
                Err(Error::Conflict { oid, tid }) => assert_eq!((oid, tid), (Oid(1), ta)),
                other => panic!("after the holder finished: a conflict, got {other:?}"),
            }
            assert!(matches!(c.recv_timeout(DONE).unwrap(), Err(Error::Conflict { .. })));
            assert_eq!(s.load(Oid(1)).unwrap(), Some((ta, b"a".to_vec())));
        } else {
            a.abort();
            let tb = b.recv_timeout(DONE).unwrap().unwrap();
            let tc = c.recv_timeout(DONE).unwrap().unwrap();
            assert!(tb > base && tc > base);
            assert_eq!(s.load(Oid(1)).unwrap(), Some((tb, b"b".to_vec())));
            assert_eq!(s.load(Oid(2)).unwrap(), Some((tc, b"c".to_vec())));
        }
    }
}

#[test]
fn a_failed_vote_releases_its_locks_and_space() {
    let (_d, s) = storage();
    let mut old = staged(&s, &[1], b"old");
    staged(&s, &[1], b"new").commit().unwrap();
    old.store(Oid(2), b"x").unwrap();
    assert!(matches!(old.vote(), Err(Error::Conflict { oid: Oid(1), .. })));
    // Still open with its writes (ZODB aborts it); its locks are free.
    assert_eq!(old.staged(Oid(2)), Some(Some(&b"x"[..])));
    let s2 = s.clone();
    spawn(move || staged(&s2, &[1, 2], b"next").commit()).recv_timeout(DONE).expect("locks released").unwrap();
    drop(old);
    // No reservation left behind: a rotation does not wait.
    let s3 = s.clone();
    spawn(move || s3.rotate()).recv_timeout(DONE).expect("rotation does not wait").unwrap();
}

#[test]
fn a_set_tid_takes_the_commit_order_at_vote() {
    let (_d, s) = storage();
    let t0 = staged(&s, &[1], b"0").commit().unwrap();
    let fixed = Tid(t0.0 + 1000);
    let mut a = staged(&s, &[1], b"a");
    a.set_tid(fixed).unwrap();
    a.vote().unwrap();
    assert_eq!(a.tid(), Some(fixed), "a chosen tid is known at vote");
    // Others (on other oids) vote, but no batch is written before `a` finishes.
    let s2 = s.clone();
    let b = spawn(move || staged(&s2, &[2], b"b").commit());
    assert!(b.recv_timeout(BLOCKED).is_err(), "commits wait for the transaction holding the commit order");
    // A second chosen tid waits for the order at its vote.
    let s3 = s.clone();
    let c = spawn(move || {
        let mut c = staged(&s3, &[3], b"c");
        c.set_tid(Tid(fixed.0 + (1 << 40))).unwrap();
        c.vote().and_then(|_| c.finish())
    });
    assert!(c.recv_timeout(BLOCKED).is_err());
    assert_eq!(a.finish().unwrap(), fixed);
    let tb = b.recv_timeout(DONE).unwrap().unwrap();
    let tc = c.recv_timeout(DONE).unwrap().unwrap();
    assert!(tb > fixed, "the next tids follow the chosen one");
    assert_eq!(tc, Tid(fixed.0 + (1 << 40)));
    // A chosen tid that is not after the last is refused at vote, and releases all.
    let mut d = staged(&s, &[4], b"d");
    d.set_tid(fixed).unwrap();
    assert!(matches!(d.vote(), Err(Error::Invalid(_))));
    drop(d);
    staged(&s, &[4], b"e").commit().unwrap();
}

#[test]
fn a_voted_transaction_delays_a_rotation_until_it_finishes() {
    let (_d, s) = storage();
    staged(&s, &[1], b"0").commit().unwrap();
    let mut a = staged(&s, &[2], b"a");
    a.vote().unwrap();
    let s2 = s.clone();
    let r = spawn(move || s2.rotate());
    assert!(r.recv_timeout(BLOCKED).is_err(), "the rotation waits for the voted transaction");
    let ta = a.finish().unwrap();
    r.recv_timeout(DONE).unwrap().unwrap();
    assert_eq!(s.load(Oid(2)).unwrap(), Some((ta, b"a".to_vec())));
    assert_eq!(s.segments().unwrap().len(), 2);
}

/// Counts data syncs of segment files.
struct Counting(Arc<AtomicU64>);
struct CountingFile(Arc<dyn VFile>, Arc<AtomicU64>);

impl VFile for CountingFile {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, off)
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.0.write_all_at(buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.sync()
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn os_file(&self) -> Option<&File> {
        self.0.os_file()
    }
}

impl Vfs for Counting {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(CountingFile(RealVfs.open(path, write)?, self.0.clone())))
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(CountingFile(RealVfs.create_new(path)?, self.0.clone())))
    }
    crate::real_vfs_passthrough!();
}

#[test]
fn one_fsync_per_two_phase_commit_at_most_and_concurrent_finishes_share() {
    let d = tempfile::tempdir().unwrap();
    let syncs = Arc::new(AtomicU64::new(0));
    let opts = Options { alignment: 4096, vfs: Arc::new(Counting(syncs.clone())), ..Options::default() };
    let s = Storage::create(d.path(), opts).unwrap();
    // One thread: exactly one sync per two-phase commit, none for a vote or an abort.
    let before = syncs.load(Ordering::SeqCst);
    for i in 0..20u64 {
        let mut t = staged(&s, &[i + 1], b"one");
        t.vote().unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), before + i, "a vote does not sync");
        t.finish().unwrap();
        let mut t = staged(&s, &[i + 1000], b"aborted");
        t.vote().unwrap();
        t.abort();
    }
    assert_eq!(syncs.load(Ordering::SeqCst) - before, 20);
    // Eight threads voting disjoint oids, then finishing together (and one-step commits
    // beside them): fewer syncs than commits.
    let (threads, rounds) = (8u64, 40u64);
    let barrier = Arc::new(Barrier::new(threads as usize));
    let before = syncs.load(Ordering::SeqCst);
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let (s, barrier) = (s.clone(), barrier.clone());
            thread::spawn(move || {
                let mut tids = Vec::new();
                for r in 0..rounds {
                    let oid = 10_000 + k * 1000 + r;
                    if k == 0 {
                        tids.push(staged(&s, &[oid], b"one-step").commit().unwrap());
                        barrier.wait();
                        continue;
                    }
                    let mut t = staged(&s, &[oid, 50_000 + k], b"two-phase");
                    t.vote().unwrap();
                    barrier.wait();
                    tids.push(t.finish().unwrap());
                }
                tids
            })
        })
        .collect();
    let mut tids: Vec<Tid> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let used = syncs.load(Ordering::SeqCst) - before;
    let commits = threads * rounds;
    eprintln!("{commits} commits ({} two-phase) with {used} fsyncs", (threads - 1) * rounds);
    assert!(used < commits, "concurrent finishes share fsyncs: {used} for {commits} commits");
    tids.sort();
    tids.dedup();
    assert_eq!(tids.len() as u64, commits, "distinct tids");
    let log: Vec<Tid> = s.transactions(Tid::ZERO, Tid::MAX).map(|t| t.unwrap().tid).collect();
    assert!(log.windows(2).all(|w| w[0] < w[1]), "tids increase in file order");
}

#[test]
fn finish_then_notifies_in_tid_order_and_notified_tid_waits_for_the_callbacks() {
    let (_d, s) = storage();
    let base = staged(&s, &[1], b"0").commit().unwrap();
    let (mut a, mut b) = (staged(&s, &[2], b"a"), staged(&s, &[3], b"b"));
    a.vote().unwrap();
    b.vote().unwrap();
    // A's notification blocks until released; B finishes after A and must wait for it.
    let (go_a, wait_a) = mpsc::channel::<()>();
    let ra = spawn(move || a.finish_then(move |tid| wait_a.recv_timeout(DONE).map(|_| tid)).unwrap());
    let t0 = std::time::Instant::now();
    while s.last_tid() == base {
        assert!(t0.elapsed() < DONE, "A is published");
        thread::sleep(Duration::from_millis(5));
    }
    let ta = s.last_tid();
    let s2 = s.clone();
    let notified = spawn(move || s2.notified_tid());
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = order.clone();
    let rb = spawn(move || b.finish_then(move |tid| o.lock().unwrap().push(tid)).unwrap());
    assert!(notified.recv_timeout(BLOCKED).is_err(), "notified_tid waits for A's callback");
    assert!(order.lock().unwrap().is_empty(), "B's notification waits for A's");
    go_a.send(()).unwrap();
    let (ta2, got) = ra.recv_timeout(DONE).unwrap();
    assert_eq!((ta2, got.unwrap()), (ta, ta));
    assert!(notified.recv_timeout(DONE).unwrap() >= ta);
    let (tb, ()) = rb.recv_timeout(DONE).unwrap();
    assert!(tb > ta);
    assert_eq!(*order.lock().unwrap(), vec![tb]);
    assert_eq!(s.notified_tid(), tb);
}
