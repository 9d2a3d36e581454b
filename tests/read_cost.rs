//! What reads cost on large objects: the measurement behind "reads check what they need,
//! once" (DESIGN.md). Ignored (timings, not assertions); run with
//! `cargo test --release --test read_cost -- --ignored --nocapture`. Prints one table.

mod common;

use common::mount::{available, TestMount};
use filestorage2::vfs::{RealVfs, VFile, Vfs};
use filestorage2::{Oid, Options, Storage};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Counts the bytes read through `pread` (the active segment; past segments are mapped).
struct Counting(Arc<AtomicU64>);
struct CountingFile(Arc<dyn VFile>, Arc<AtomicU64>);

impl VFile for CountingFile {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.1.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.0.read_exact_at(buf, off)
    }
    fn write_all_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, off)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.0.sync()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn os_file(&self) -> Option<&std::fs::File> {
        self.0.os_file()
    }
}

impl Vfs for Counting {
    fn open(&self, path: &Path, write: bool) -> std::io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(CountingFile(RealVfs.open(path, write)?, self.0.clone())))
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(CountingFile(RealVfs.create_new(path)?, self.0.clone())))
    }
    crate::real_vfs_passthrough!();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn commit(s: &Storage, writes: &[(u64, &[u8])]) {
    let mut t = s.begin();
    for (o, d) in writes {
        t.store(Oid(*o), d).unwrap();
    }
    t.commit().unwrap();
}

/// A commit that changes object 1 while its newest record (of `size` bytes) is in a past
/// segment committed to after the transaction began: the conflict check must learn that
/// record's tid. Median over rounds; the commit itself does not sync.
fn conflict_check(size: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { sync: false, preallocate: 0, ..Options::default() };
    let s = Storage::create(dir.path(), opts).unwrap();
    let big = vec![7u8; size];
    let times = (0..30)
        .map(|i| {
            commit(&s, &[(1, &big)]);
            let mut t = s.begin();
            commit(&s, &[(2, format!("{i}").as_bytes())]);
            s.rotate().unwrap();
            t.store(Oid(1), b"small").unwrap();
            let start = Instant::now();
            t.commit().unwrap();
            start.elapsed()
        })
        .collect();
    median(times)
}

/// `stat_at` of object 1 of `size` bytes in a past segment (mapped), median of 1000.
fn stat(size: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(dir.path(), Options { sync: false, ..Options::default() }).unwrap();
    commit(&s, &[(1, &vec![3u8; size])]);
    s.rotate().unwrap();
    let times = (0..1000)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(s.stat_at(Oid(1), filestorage2::Tid::MAX).unwrap().unwrap().size, size as u64);
            start.elapsed()
        })
        .collect();
    median(times)
}

/// `history` of object 1 with `revs` revisions of `size` bytes in the active segment.
fn history(revs: usize, size: usize) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let opts = Options { sync: false, rotate_size: 0, vfs: Arc::new(Counting(n.clone())), ..Options::default() };
    let s = Storage::create(dir.path(), opts).unwrap();
    for i in 0..revs {
        commit(&s, &[(1, &vec![i as u8; size])]);
    }
    let mut times = Vec::new();
    let mut read = 0;
    for _ in 0..5 {
        let before = n.load(Ordering::Relaxed);
        let start = Instant::now();
        assert_eq!(s.history(Oid(1)).unwrap().len(), revs);
        times.push(start.elapsed());
        read = n.load(Ordering::Relaxed) - before;
    }
    (median(times), read)
}

/// `ls -l head/` through a fresh mount over `count` objects of `size` bytes in a past
/// segment; median of 5 mounts.
fn ls_l(count: u64, size: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::create(dir.path(), Options { sync: false, ..Options::default() }).unwrap();
    for o in 0..count {
        commit(&s, &[(o, &vec![o as u8; size])]);
    }
    s.rotate().unwrap();
    let times = (0..5)
        .map(|_| {
            let m = TestMount::new(s.clone());
            let start = Instant::now();
            let out = m.sh("ls -l head/ | wc -l");
            let t = start.elapsed();
            assert_eq!(out.trim(), (count + 2).to_string(), "the objects, `at`, `watch`... and the total line");
            m.unmount();
            t
        })
        .collect();
    median(times)
}

/// `cat head/<oid>` of one object of `size` bytes in the active segment through a fresh
/// mount: time, and bytes read from the segment file per object byte.
fn cat(size: usize) -> (Duration, f64) {
    let dir = tempfile::tempdir().unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let opts = Options { sync: false, vfs: Arc::new(Counting(n.clone())), ..Options::default() };
    let s = Storage::create(dir.path(), opts).unwrap();
    commit(&s, &[(1, &vec![1u8; size])]);
    let mut times = Vec::new();
    let mut ratio = 0.0;
    for _ in 0..5 {
        let m = TestMount::new(s.clone());
        let before = n.load(Ordering::Relaxed);
        let start = Instant::now();
        let out = m.sh(&format!("cat head/{} | wc -c", Oid(1)));
        times.push(start.elapsed());
        ratio = (n.load(Ordering::Relaxed) - before) as f64 / size as f64;
        assert_eq!(out.trim(), size.to_string());
        m.unmount();
    }
    (median(times), ratio)
}

#[test]
#[ignore]
fn read_cost_table() {
    println!("| workload | measured |");
    println!("|---|---|");
    let (small, large) = (conflict_check(100), conflict_check(MIB));
    println!("| commit on top of a 100 B object in a past segment (conflict check reads it) | {small:.1?} |");
    println!("| commit on top of a 1 MiB object in a past segment | {large:.1?} |");
    println!("| `stat_at` of a 1 MiB object in a past segment | {:.1?} |", stat(MIB));
    let (t, read) = history(100, MIB);
    println!("| `history` of a 1 MiB object with 100 revisions (active segment) | {t:.1?}, {} KiB read |", read >> 10);
    if !available() {
        return;
    }
    println!("| `ls -l head/` of 100 × 1 MiB objects in a past segment (fresh mount) | {:.1?} |", ls_l(100, MIB));
    println!("| `ls -l head/` of 100 × 100 B objects in a past segment (fresh mount) | {:.1?} |", ls_l(100, 100));
    let (t, ratio) = cat(MIB);
    println!("| `cat` of a 1 MiB object in the active segment (fresh mount) | {t:.1?}, read {ratio:.2}× its size |");
}
