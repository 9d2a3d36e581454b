//! What the targets run: durable commit loops, bulk-loaded storages, timed loads, and the
//! machine's own limits measured beside them (fsync loop, sequential write, plain files).

use super::report::{fmt_count, fmt_num, percentile};
use super::{Oids, BULK_TXN, TXN_OBJECTS, WORKING_SET};
use filestorage2::{Error, Oid, Options, Result, SegmentState, Storage};
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Durable commits of `TXN_OBJECTS` objects from `writers` threads, `per_writer` each;
/// `round` picks where in its working set each writer continues. Returns the wall time.
pub(super) fn durable_commits(s: &Storage, writers: u64, per_writer: u64, round: u64, size: usize) -> Result<Duration> {
    let work = |w: u64| -> Result<()> {
        let mut buf = Vec::new();
        for k in round * per_writer..(round + 1) * per_writer {
            let mut t = s.begin();
            for j in 0..TXN_OBJECTS {
                let oid = 1 + w * WORKING_SET + (k * TXN_OBJECTS + j) % WORKING_SET;
                object_data(oid, size, &mut buf);
                t.store(Oid(oid), &buf)?;
            }
            t.commit()?;
        }
        Ok(())
    };
    if writers == 1 {
        let t = Instant::now();
        work(0)?;
        return Ok(t.elapsed());
    }
    let start = Barrier::new(writers as usize + 1);
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (start, work) = (&start, &work);
                sc.spawn(move || {
                    start.wait();
                    work(w)
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        for h in handles {
            h.join().map_err(|_| Error::invalid("bench: a writer thread panicked"))??;
        }
        Ok(t.elapsed())
    })
}

/// Durable commits of `TXN_OBJECTS` objects (cycling through the P1 working set), each
/// timed from `begin` to `commit`'s return into `lat`, while `more(commits so far)`; `k`
/// counts commits across calls, so the writer goes on where it stopped.
pub(super) fn timed_commits(
    s: &Storage,
    k: &mut u64,
    size: usize,
    lat: &mut Vec<u64>,
    mut more: impl FnMut(u64) -> bool,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut c = 0;
    while more(c) {
        let t = Instant::now();
        let mut txn = s.begin();
        for j in 0..TXN_OBJECTS {
            let oid = 1 + (*k * TXN_OBJECTS + j) % WORKING_SET;
            object_data(oid, size, &mut buf);
            txn.store(Oid(oid), &buf)?;
        }
        txn.commit()?;
        lat.push(t.elapsed().as_nanos() as u64);
        *k += 1;
        c += 1;
    }
    Ok(())
}

/// The machine's fsync limit: `n` × (append `bytes` + fdatasync) on a fresh plain file.
pub(super) fn fsync_loop(root: &Path, n: u64, bytes: usize) -> Result<Duration> {
    let path = root.join("fsync-limit.dat");
    let io = |e| Error::io(&path, "write", e);
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&path).map_err(io)?;
    let buf = vec![0xa5u8; bytes];
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&buf).map_err(io)?;
        f.sync_data().map_err(io)?;
    }
    let dt = t.elapsed();
    drop(f);
    std::fs::remove_file(&path).map_err(io)?;
    Ok(dt)
}

/// Sequential-write reference: `bytes` in 1 MiB writes + one fdatasync.
pub(super) fn seq_write(root: &Path, bytes: u64) -> Result<Duration> {
    let path = root.join("seq-write.dat");
    let io = |e| Error::io(&path, "write", e);
    let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&path).map_err(io)?;
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..k]).map_err(io)?;
        left -= k as u64;
    }
    f.sync_data().map_err(io)?;
    let dt = t.elapsed();
    drop(f);
    std::fs::remove_file(&path).map_err(io)?;
    Ok(dt)
}

/// A bulk-loaded storage.
pub(super) struct Built {
    /// Time of the load including the final `Storage::sync` (not the final rotate).
    pub(super) load: Duration,
    pub(super) rotate: Duration,
    /// Bytes of all segments.
    pub(super) bytes: u64,
    /// Past segments after the final rotate.
    pub(super) segments: usize,
}

/// Bulk-load `n` objects (`sync: false`, default rotate size), sync, rotate so that all
/// of them are in past segments. Returns the open storage.
pub(super) fn build(dir: &Path, kind: Oids, n: u64, size: usize) -> Result<(Storage, Built)> {
    let s = Storage::create(dir, Options { sync: false, ..Options::default() })?;
    let mut buf = Vec::new();
    let step = (n / 10).max(1);
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let mut txn = s.begin();
        let end = (i + BULK_TXN).min(n);
        for j in i..end {
            let oid = kind.oid(j);
            object_data(oid, size, &mut buf);
            txn.store(Oid(oid), &buf)?;
        }
        txn.commit()?;
        if end / step != i / step && end < n {
            let secs = t.elapsed().as_secs_f64();
            eprintln!(
                "bench: bulk load {} {} oids: {}% ({} obj/s)",
                fmt_count(n),
                kind.name(),
                end * 100 / n,
                fmt_num(end as f64 / secs)
            );
        }
        i = end;
    }
    s.sync()?;
    let load = t.elapsed();
    let t = Instant::now();
    s.rotate()?;
    let rotate = t.elapsed();
    let st = s.stats()?;
    let segments = s.segments()?.iter().filter(|x| x.state == SegmentState::Past).count();
    Ok((s, Built { load, rotate, bytes: st.bytes, segments }))
}

/// The bytes of object `oid`: its oid, then a pattern (so that loads can be verified).
pub(super) fn object_data(oid: u64, size: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&oid.to_le_bytes());
    buf.extend((8..size.max(8)).map(|k| (oid as u8).wrapping_add(k as u8)));
    buf.truncate(size);
}

/// Latencies of one pass of loads.
pub(super) struct Latency {
    /// Mean of an untimed pass (total / count), without the per-load timer.
    pub(super) mean: f64,
    pub(super) median: u64,
    pub(super) p99: u64,
}

/// Run `load` over the first half of `sample` for the mean, then over the second half
/// timing each call.
pub(super) fn measure_loads(sample: &[u64], mut load: impl FnMut(u64) -> Result<usize>) -> Result<Latency> {
    let (first, second) = sample.split_at(sample.len() / 2);
    let t = Instant::now();
    for &o in first {
        black_box(load(black_box(o))?);
    }
    let mean = t.elapsed().as_nanos() as f64 / first.len().max(1) as f64;
    let mut lat = Vec::with_capacity(second.len());
    for &o in second {
        let t = Instant::now();
        black_box(load(black_box(o))?);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    Ok(Latency { mean, median: percentile(&lat, 50.0), p99: percentile(&lat, 99.0) })
}

/// Median cost of reading the clock twice (what a per-load timing adds).
pub(super) fn timer_overhead_ns() -> u64 {
    let mut v: Vec<u64> = (0..10_000)
        .map(|_| {
            let t = Instant::now();
            black_box(t.elapsed().as_nanos() as u64)
        })
        .collect();
    v.sort_unstable();
    percentile(&v, 50.0)
}

/// The P4 reference: a sorted index of (oid, offset) and the data, in plain mapped files.
pub(super) struct PlainFiles {
    pub(super) dir: PathBuf,
    pub(super) index: memmap2::Mmap,
    pub(super) data: memmap2::Mmap,
    pub(super) size: usize,
}

impl PlainFiles {
    pub(super) fn build(dir: &Path, kind: Oids, n: u64, size: usize) -> Result<PlainFiles> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
        let mut entries: Vec<(u64, u64)> = (0..n).map(|i| (kind.oid(i), i * size as u64)).collect();
        entries.sort_unstable();
        let write = |name: &str, fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>| -> Result<File> {
            let path = dir.join(name);
            let io = |e| Error::io(&path, "write", e);
            let f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path).map_err(io)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &f);
            fill(&mut w).map_err(io)?;
            w.flush().map_err(io)?;
            drop(w);
            Ok(f)
        };
        let fi = write("index", &mut |w| {
            for (o, off) in &entries {
                w.write_all(&o.to_le_bytes())?;
                w.write_all(&off.to_le_bytes())?;
            }
            Ok(())
        })?;
        drop(entries);
        let mut buf = Vec::new();
        let fd = write("data", &mut |w| {
            for i in 0..n {
                object_data(kind.oid(i), size, &mut buf);
                w.write_all(&buf)?;
            }
            Ok(())
        })?;
        let map = |f: &File, name: &str| {
            // SAFETY: the bench created these files in its own private directory and
            // neither truncates nor writes them while they are mapped.
            unsafe { memmap2::Mmap::map(f) }.map_err(|e| Error::io(&dir.join(name), "map", e))
        };
        Ok(PlainFiles { dir: dir.to_path_buf(), index: map(&fi, "index")?, data: map(&fd, "data")?, size })
    }

    pub(super) fn load(&self, oid: u64) -> Option<Vec<u8>> {
        let key = |i: usize| u64::from_le_bytes(self.index[i * 16..i * 16 + 8].try_into().expect("8 bytes"));
        let (mut lo, mut hi) = (0, self.index.len() / 16);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key(mid) < oid {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo < self.index.len() / 16 && key(lo) == oid {
            let off = u64::from_le_bytes(self.index[lo * 16 + 8..lo * 16 + 16].try_into().expect("8 bytes")) as usize;
            return Some(self.data[off..off + self.size].to_vec());
        }
        None
    }

    pub(super) fn remove(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }
}
