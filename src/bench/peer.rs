//! `fs2 bench-peer`: our half of the side-by-side comparison with ZODB's FileStorage
//! (`contrib/bench/zodb_compare.py`). Each workload runs in a fresh process, reads the
//! same payload bytes (real ZODB pickles written by the harness) and prints one JSON
//! object on stdout. The Python harness runs the same workload against ZODB through its
//! storage API, alternates the two and prints the table; this file only measures.
//!
//! Files shared with the harness:
//! - payload: `FS2PAYL1`, u64 LE count, then per record: the oid as 8 bytes big-endian
//!   (ZODB's `p64`), u32 LE length, the pickle;
//! - sample: u64 LE oids, the oids a load workload visits, in order.

use super::report::percentile;
use super::system::proc_status_kib;
use filestorage2::merge::Policy;
use filestorage2::{Error, Oid, Options, Result, Storage, Tid};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

const PAYLOAD_MAGIC: &[u8; 8] = b"FS2PAYL1";
/// Untimed durable commits of each writer before the timed ones.
const WARMUP_COMMITS: usize = 20;
/// How often the merge probe samples its anonymous memory.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// One workload of the ZODB comparison, measured through the engine's Rust API.
#[derive(clap::Args, Debug, Clone)]
pub struct PeerArgs {
    /// commit | bulk | build2 | loads | old | open | merge | merge-writer
    pub workload: String,
    /// The storage directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Payload file (records written by the harness).
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// Second payload (build2: the second revision of every object).
    #[arg(long)]
    pub payload2: Option<PathBuf>,
    /// Sample file (u64 LE oids) for loads and old.
    #[arg(long)]
    pub sample: Option<PathBuf>,
    /// commit: writer threads.
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// commit: timed commits in all; merge-writer: idle commits before the merge.
    #[arg(long, default_value_t = 1000)]
    pub commits: usize,
    /// Objects per transaction (commit, merge-writer: 10; bulk: 1000).
    #[arg(long, default_value_t = 10)]
    pub txn_objects: usize,
    /// commit: oids each writer cycles through.
    #[arg(long, default_value_t = 1000)]
    pub working_set: usize,
    /// merge-writer: commits per second of the steady writer.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// merge-writer: stop the writer after this many seconds of merging.
    #[arg(long, default_value_t = 60.0)]
    pub cap: f64,
}

/// Run one workload and print its JSON result.
pub fn run(a: &PeerArgs) -> Result<()> {
    let out = match a.workload.as_str() {
        "commit" => commit(a)?,
        "bulk" => bulk(a)?,
        "build2" => build2(a)?,
        "loads" => loads(a, false)?,
        "old" => loads(a, true)?,
        "open" => open(a)?,
        "merge" => merge(a)?,
        "merge-writer" => merge_writer(a)?,
        w => return Err(Error::invalid(format!("bench-peer: unknown workload {w:?}"))),
    };
    println!("{}", out.render());
    Ok(())
}

/// A flat JSON object of numbers.
#[derive(Default)]
struct Json(Vec<(&'static str, f64)>);

impl Json {
    fn put(&mut self, k: &'static str, v: impl Into<f64>) -> &mut Json {
        self.0.push((k, v.into()));
        self
    }
    fn render(&self) -> String {
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| if v.is_finite() { format!("\"{k}\": {v}") } else { format!("\"{k}\": null") })
            .collect();
        format!("{{{}}}", fields.join(", "))
    }
}

/// The payload records, in file order.
struct Payload {
    bytes: Vec<u8>,
    /// (oid, start, end) in `bytes`.
    recs: Vec<(Oid, usize, usize)>,
}

impl Payload {
    /// Read the first `limit` records (all if `None`).
    fn read(path: &Path, limit: Option<usize>) -> Result<Payload> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
        let bad = |what: &str| Error::invalid(format!("bench-peer: payload {}: {what}", path.display()));
        if bytes.len() < 16 || &bytes[..8] != PAYLOAD_MAGIC {
            return Err(bad("not a payload file"));
        }
        let count = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
        let n = limit.map_or(count, |l| l.min(count));
        let mut recs = Vec::with_capacity(n);
        let mut pos = 16;
        for _ in 0..n {
            let head = bytes.get(pos..pos + 12).ok_or_else(|| bad("truncated"))?;
            let oid = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
            let start = pos + 12;
            let end = start.checked_add(len).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("truncated"))?;
            recs.push((Oid(oid), start, end));
            pos = end;
        }
        Ok(Payload { bytes, recs })
    }
    fn get(&self, i: usize) -> (Oid, &[u8]) {
        let (o, s, e) = self.recs[i];
        (o, &self.bytes[s..e])
    }
    fn len(&self) -> usize {
        self.recs.len()
    }
}

fn need<'a>(p: &'a Option<PathBuf>, flag: &str) -> Result<&'a Path> {
    p.as_deref().ok_or_else(|| Error::invalid(format!("bench-peer: this workload needs {flag}")))
}

fn read_sample(path: &Path) -> Result<Vec<Oid>> {
    let b = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    Ok(b.chunks_exact(8).map(|c| Oid(u64::from_le_bytes(c.try_into().expect("8 bytes")))).collect())
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Percentiles (ns) of a latency list under `prefix_p50`/`prefix_p99` keys.
fn put_latency(j: &mut Json, k50: &'static str, k99: &'static str, lat: &mut [u64]) {
    lat.sort_unstable();
    j.put(k50, percentile(lat, 50.0) as f64).put(k99, percentile(lat, 99.0) as f64);
}

/// Durable commits of `txn_objects` payload records from `writers` threads; each writer
/// cycles through its own `working_set` records. A fresh storage in `dir`.
fn commit(a: &PeerArgs) -> Result<Json> {
    let ws = a.working_set.max(a.txn_objects);
    let p = Payload::read(need(&a.payload, "--payload")?, Some(ws * a.writers))?;
    if p.len() < ws * a.writers {
        return Err(Error::invalid("bench-peer: payload smaller than writers × working set"));
    }
    let s = Storage::create(&a.dir, Options::default())?;
    let per_writer = (a.commits / a.writers).max(1);
    let work = |w: usize, from: usize, n: usize, lat: &mut Vec<u64>| -> Result<()> {
        for k in from..from + n {
            let t = Instant::now();
            let mut txn = s.begin();
            for j in 0..a.txn_objects {
                let (oid, data) = p.get(w * ws + (k * a.txn_objects + j) % ws);
                txn.store(oid, data)?;
            }
            txn.commit()?;
            lat.push(t.elapsed().as_nanos() as u64);
        }
        Ok(())
    };
    let start = Barrier::new(a.writers + 1);
    let (elapsed, mut lat) = std::thread::scope(|sc| -> Result<(Duration, Vec<u64>)> {
        let handles: Vec<_> = (0..a.writers)
            .map(|w| {
                let (start, work) = (&start, &work);
                sc.spawn(move || -> Result<Vec<u64>> {
                    work(w, 0, WARMUP_COMMITS, &mut Vec::new())?;
                    start.wait();
                    let mut lat = Vec::with_capacity(per_writer);
                    work(w, WARMUP_COMMITS, per_writer, &mut lat)?;
                    Ok(lat)
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| Error::invalid("bench-peer: a writer panicked"))??);
        }
        Ok((t.elapsed(), all))
    })?;
    let mut j = Json::default();
    j.put("commits", lat.len() as f64).put("seconds", elapsed.as_secs_f64());
    j.put("tx_per_s", lat.len() as f64 / elapsed.as_secs_f64());
    put_latency(&mut j, "p50_ns", "p99_ns", &mut lat);
    Ok(j)
}

/// Store every record of `p` in transactions of `txn` objects, no per-commit sync.
fn load_all(s: &Storage, p: &Payload, txn: usize) -> Result<()> {
    for chunk in (0..p.len()).collect::<Vec<_>>().chunks(txn.max(1)) {
        let mut t = s.begin();
        for &i in chunk {
            let (oid, data) = p.get(i);
            t.store(oid, data)?;
        }
        t.commit()?;
    }
    Ok(())
}

/// Bulk load of the payload into a fresh storage (`sync: false`), one sync at the end,
/// then a rotation so that every object is in a past segment; timed to the close.
fn bulk(a: &PeerArgs) -> Result<Json> {
    let p = Payload::read(need(&a.payload, "--payload")?, None)?;
    let t = Instant::now();
    let s = Storage::create(&a.dir, Options { sync: false, ..Options::default() })?;
    load_all(&s, &p, a.txn_objects)?;
    let loaded = t.elapsed().as_secs_f64();
    s.sync()?;
    let synced = t.elapsed().as_secs_f64();
    s.rotate()?;
    let bytes = s.stats()?.bytes;
    drop(s);
    let secs = t.elapsed().as_secs_f64();
    let mut j = Json::default();
    j.put("objects", p.len() as f64).put("seconds", secs).put("obj_per_s", p.len() as f64 / secs);
    j.put("bytes", bytes as f64).put("commit_seconds", loaded).put("sync_seconds", synced - loaded);
    j.put("seal_seconds", secs - synced);
    Ok(j)
}

/// Every object twice (the second revision from `--payload2`), 50% garbage, all in past
/// segments: the input of `old`, `merge` and `merge-writer`.
fn build2(a: &PeerArgs) -> Result<Json> {
    let p1 = Payload::read(need(&a.payload, "--payload")?, None)?;
    let p2 = Payload::read(need(&a.payload2, "--payload2")?, None)?;
    let t = Instant::now();
    let s = Storage::create(&a.dir, Options { sync: false, ..Options::default() })?;
    for p in [&p1, &p2] {
        load_all(&s, p, a.txn_objects)?;
        s.sync()?;
        s.rotate()?;
    }
    let bytes = s.stats()?.bytes;
    drop(s);
    let mut j = Json::default();
    j.put("seconds", t.elapsed().as_secs_f64()).put("bytes", bytes as f64);
    Ok(j)
}

/// Random current loads (`old`: `load_before` the current tid, i.e. the previous
/// revision) of the sample's oids: a warm pass over the whole sample, then a pass timing
/// each call, then an untimed pass for the mean.
fn loads(a: &PeerArgs, old: bool) -> Result<Json> {
    let sample = read_sample(need(&a.sample, "--sample")?)?;
    let s = Storage::open(&a.dir, Options::default())?;
    let missing = |o: Oid| Error::invalid(format!("bench-peer: oid {o} not found"));
    // Warm pass; for `old`, learn each oid's current tid (as the ZODB side does with load).
    let mut tids = Vec::with_capacity(sample.len());
    for &o in &sample {
        let (tid, _) = s.load(o)?.ok_or_else(|| missing(o))?;
        if old {
            s.load_before(o, tid)?.ok_or_else(|| missing(o))?;
        }
        tids.push(tid);
    }
    let one = |i: usize| -> Result<usize> {
        let o = sample[i];
        let len = if old {
            s.load_before(o, tids[i])?.map(|r| r.data.len())
        } else {
            s.load_at(o, Tid::MAX)?.map(|r| r.1.len())
        };
        len.ok_or_else(|| missing(o))
    };
    let mut lat = Vec::with_capacity(sample.len());
    for i in 0..sample.len() {
        let t = Instant::now();
        std::hint::black_box(one(i)?);
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let t = Instant::now();
    for i in 0..sample.len() {
        std::hint::black_box(one(i)?);
    }
    let mean = ns(t.elapsed()) / sample.len().max(1) as f64;
    let mut j = Json::default();
    let timed_mean = lat.iter().sum::<u64>() as f64 / lat.len().max(1) as f64;
    j.put("loads", sample.len() as f64).put("mean_ns", mean).put("timed_mean_ns", timed_mean);
    j.put("max_ns", lat.iter().max().copied().unwrap_or(0) as f64);
    put_latency(&mut j, "p50_ns", "p99_ns", &mut lat);
    Ok(j)
}

/// Open time and memory in this fresh process.
fn open(a: &PeerArgs) -> Result<Json> {
    let before = proc_status_kib("VmRSS").unwrap_or(0);
    let t = Instant::now();
    let s = Storage::open(&a.dir, Options::default())?;
    let open_ns = ns(t.elapsed());
    let rss = proc_status_kib("VmRSS").unwrap_or(0);
    let anon = proc_status_kib("RssAnon").unwrap_or(0);
    // One load, so that the open is not lazier than a usable storage.
    let first = s.list(Oid(0), Tid::MAX, 1)?;
    if let Some(o) = first.first() {
        s.load(o.oid)?;
    }
    let mut j = Json::default();
    j.put("open_ns", open_ns).put("rss_kib", rss as f64).put("rss_before_kib", before as f64);
    j.put("anon_kib", anon as f64).put("objects_listed", first.len() as f64);
    Ok(j)
}

/// Merge all past segments in this fresh process; time and memory.
fn merge(a: &PeerArgs) -> Result<Json> {
    let before = proc_status_kib("VmRSS").unwrap_or(0);
    let s = Storage::open(&a.dir, Options::default())?;
    // Writing 5 resets VmHWM to the current RSS (Linux >= 4.0): the peak is the merge's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let stop = AtomicBool::new(false);
    let (merged, secs, anon_peak) = std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let mut peak = 0u64;
            loop {
                let last = stop.load(Ordering::Relaxed);
                peak = peak.max(proc_status_kib("RssAnon").unwrap_or(0));
                if last {
                    return peak;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        let t = Instant::now();
        let merged = s.merge(&Policy::All);
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        (merged, secs, sampler.join().unwrap_or(0))
    });
    let report = merged?.ok_or_else(|| Error::invalid("bench-peer: nothing to merge"))?;
    let mut j = Json::default();
    j.put("seconds", secs).put("hwm_kib", proc_status_kib("VmHWM").unwrap_or(0) as f64);
    j.put("rss_before_kib", before as f64).put("anon_peak_kib", anon_peak as f64);
    j.put("bytes_in", report.counts.bytes_in as f64).put("bytes_out", report.counts.bytes_out as f64);
    j.put("records_in", report.counts.records_in as f64).put("records_out", report.counts.records_out as f64);
    Ok(j)
}

/// A steady durable writer (`rate` commits/s of `txn_objects` payload records): `commits`
/// idle, then while a background merge of all past segments runs (stopped after `cap`
/// seconds if the merge has not finished by then), then `commits` idle again.
fn merge_writer(a: &PeerArgs) -> Result<Json> {
    let ws = a.working_set.max(a.txn_objects);
    let p = Payload::read(need(&a.payload, "--payload")?, Some(ws))?;
    let s = Storage::open(&a.dir, Options::default())?;
    let period = Duration::from_secs_f64(1.0 / a.rate.max(1e-3));
    let mut k = 0usize;
    let mut next = Instant::now();
    let mut writer = |lat: &mut Vec<u64>, more: &mut dyn FnMut() -> bool| -> Result<()> {
        while more() {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next = Instant::now().max(next) + period;
            let t = Instant::now();
            let mut txn = s.begin();
            for j in 0..a.txn_objects {
                let (oid, data) = p.get((k * a.txn_objects + j) % p.len());
                txn.store(oid, data)?;
            }
            txn.commit()?;
            lat.push(t.elapsed().as_nanos() as u64);
            k += 1;
        }
        Ok(())
    };
    let (mut idle, mut during) = (Vec::new(), Vec::new());
    writer(&mut Vec::new(), &mut counter(WARMUP_COMMITS))?;
    writer(&mut idle, &mut counter(a.commits))?;
    let h = s.start_merge(&Policy::All)?.ok_or_else(|| Error::invalid("bench-peer: nothing to merge"))?;
    let t = Instant::now();
    let cap = Duration::from_secs_f64(a.cap);
    writer(&mut during, &mut || !h.is_finished() && t.elapsed() < cap)?;
    let finished = h.is_finished();
    let report = h.wait()?;
    let total = t.elapsed().as_secs_f64();
    writer(&mut idle, &mut counter(a.commits))?;
    let mut j = Json::default();
    j.put("merge_seconds", report.seconds).put("finished_under_writer", finished as u8);
    j.put("seconds_to_finish", total).put("commits_during", during.len() as f64);
    put_latency(&mut j, "idle_p50_ns", "idle_p99_ns", &mut idle);
    put_latency(&mut j, "during_p50_ns", "during_p99_ns", &mut during);
    Ok(j)
}

/// A `more` predicate that says yes `n` times.
fn counter(n: usize) -> impl FnMut() -> bool {
    let mut left = n;
    move || {
        let go = left > 0;
        left = left.saturating_sub(1);
        go
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_rejects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut b = PAYLOAD_MAGIC.to_vec();
        b.extend(2u64.to_le_bytes());
        for (oid, data) in [(1u64, &b"ab"[..]), (0x0102_0304_0506_0708, &b"xyz"[..])] {
            b.extend(oid.to_be_bytes());
            b.extend((data.len() as u32).to_le_bytes());
            b.extend(data);
        }
        std::fs::write(&path, &b).unwrap();
        let p = Payload::read(&path, None).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.get(1), (Oid(0x0102_0304_0506_0708), &b"xyz"[..]));
        assert_eq!(Payload::read(&path, Some(1)).unwrap().len(), 1);
        std::fs::write(&path, &b[..b.len() - 1]).unwrap();
        assert!(Payload::read(&path, None).is_err());
    }

    #[test]
    fn json_is_flat_numbers() {
        let mut j = Json::default();
        j.put("a", 1.5).put("b", f64::NAN);
        assert_eq!(j.render(), "{\"a\": 1.5, \"b\": null}");
    }

    #[test]
    fn counter_counts() {
        let mut c = counter(2);
        assert!(c() && c() && !c());
    }
}
