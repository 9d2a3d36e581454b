//! P5/P6: open time and RSS in a fresh process (`<exe> bench --open-probe DIR`), clean
//! and after a crash with a full active segment.

use super::report::{fmt_bytes, fmt_count, fmt_kib, fmt_ns, fmt_ratio, percentile, Rng, Row};
use super::system::{child_failed, kv_line, proc_status_kib, run_child};
use super::workload::{build, object_data};
use super::{Bench, Oids, BULK_TXN, CRASH_FILL, REOPENS, SEED};
use filestorage2::{Error, Oid, Options, Result, SegmentState, Storage, Tid};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

impl Bench<'_> {
    /// P5/P6: open time and RSS in a fresh process, at two sizes, dense and random oids;
    /// P5 also after a crash with a full active segment.
    pub(super) fn open_and_memory(&mut self, sizes: [u64; 2], p5: bool, p6: bool) -> Result<()> {
        let a = self.args;
        let (mut rows5, mut rows6) = (Vec::new(), Vec::new());
        for kind in [Oids::Dense, Oids::Random] {
            let mut first: Option<(u64, Probe)> = None;
            for n in sizes {
                if first.as_ref().is_some_and(|(m, _)| *m == n) {
                    continue;
                }
                let dir = match self.built.remove(&(kind, n)) {
                    Some(d) => d,
                    None => {
                        let dir = self.root.join(format!("open-{}-{n}", kind.name()));
                        build(&dir, kind, n, a.size)?;
                        dir
                    }
                };
                eprintln!("bench: P5/P6: probing the open of {} {} oids", fmt_count(n), kind.name());
                let pr = run_probe(&dir)?;
                let what = format!("{} {} oids, {} past segs", fmt_count(n), kind.name(), pr.segments);
                let (ref5, ratio5, ref6, ratio6, flat5, flat6) = match &first {
                    None => (
                        "-".to_string(),
                        "-".to_string(),
                        format!("before open {}", fmt_kib(pr.rss_before_kib)),
                        "-".to_string(),
                        true,
                        true,
                    ),
                    Some((m, f)) => {
                        let r5 = pr.open_ns as f64 / f.open_ns as f64;
                        let r6 = pr.rss_open_kib as f64 / f.rss_open_kib as f64;
                        (
                            format!("{}: {}", fmt_count(*m), fmt_ns(f.open_ns as f64)),
                            fmt_ratio(r5),
                            format!("{}: {}", fmt_count(*m), fmt_kib(f.rss_open_kib)),
                            fmt_ratio(r6),
                            r5 <= 2.0,
                            r6 <= 1.5,
                        )
                    }
                };
                rows5.push(Row {
                    id: "P5".into(),
                    workload: format!("open (fresh process), {what}"),
                    measured: format!(
                        "{} (reopen p50 {})",
                        fmt_ns(pr.open_ns as f64),
                        fmt_ns(pr.reopen_median_ns as f64)
                    ),
                    reference: ref5,
                    ratio: ratio5,
                    target: "≤ 10 ms, flat (≤ 2×)".into(),
                    met: Some(pr.open_ns <= 10_000_000 && flat5),
                });
                rows6.push(Row {
                    id: "P6".into(),
                    workload: format!("RSS right after open, {what}"),
                    measured: format!(
                        "{} (after loads {}, heap {})",
                        fmt_kib(pr.rss_open_kib),
                        fmt_kib(pr.rss_kib),
                        fmt_kib(pr.rss_anon_kib)
                    ),
                    reference: ref6,
                    ratio: ratio6,
                    target: "≤ 64 MiB, flat (≤ 1.5×)".into(),
                    met: Some(pr.rss_open_kib <= 64 * 1024 && flat6),
                });
                if p5 && kind == Oids::Dense && n == sizes[1] {
                    rows5.push(self.crash_open(&dir, n, &pr)?);
                }
                std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, "remove", e))?;
                first.get_or_insert((n, pr));
            }
        }
        if p5 {
            self.rows.extend(rows5);
            self.notes.push(format!(
                "P5: the first open in a fresh process (warm page cache), read-write, {} reopens for the p50; \
                 open cost is O(segments), plus a scan of the active segment",
                REOPENS
            ));
        }
        if p6 {
            self.rows.extend(rows6);
            self.notes.push(
                "P6: VmRSS of the probe process right after Storage::open (the target); `after loads` = after \
                 100 listed loads and 20 random-oid loads; `heap` = anonymous memory (heap and stacks). Mapped segment pages a load touches count \
                 as RSS (clean page cache, not heap): the kernel may map a whole 2 MiB page-cache folio at a touch \
                 (FilePmdMapped in /proc/PID/smaps), so RSS grows with the segments touched"
                    .into(),
            );
        }
        Ok(())
    }

    /// Fill the active segment of the storage in `dir` with unsynced updates, drop the
    /// writer without a sync (what a crashed process leaves: the page cache keeps the
    /// bytes), then probe. There is no clean-shutdown state, so a clean close of the same
    /// storage would take the same path: every open scans the active segment.
    pub(super) fn crash_open(&mut self, dir: &Path, n: u64, clean: &Probe) -> Result<Row> {
        let a = self.args;
        let rotate = Options::default().rotate_size;
        let fill = rotate / CRASH_FILL.1 * CRASH_FILL.0;
        eprintln!("bench: P5: filling the active segment to {} without sync (crash)", fmt_bytes(fill));
        let s = Storage::open(dir, Options { sync: false, ..Options::default() })?;
        let mut rng = Rng(SEED ^ 0xc4a5);
        let mut buf = Vec::new();
        loop {
            let active = s.segments()?.last().filter(|x| x.state == SegmentState::Active).map_or(0, |x| x.bytes);
            if active >= fill {
                break;
            }
            let mut t = s.begin();
            for _ in 0..BULK_TXN {
                let oid = Oids::Dense.oid(rng.below(n));
                object_data(oid, a.size, &mut buf);
                t.store(Oid(oid), &buf)?;
            }
            t.commit()?;
        }
        drop(s);
        let pr = run_probe(dir)?;
        let r = pr.open_ns as f64 / clean.open_ns as f64;
        Ok(Row {
            id: "P5".into(),
            workload: format!(
                "open after a crash: {} dense + {} unsynced active segment",
                fmt_count(n),
                fmt_bytes(pr.active_bytes)
            ),
            measured: format!("{} (reopen p50 {})", fmt_ns(pr.open_ns as f64), fmt_ns(pr.reopen_median_ns as f64)),
            reference: format!("clean {}", fmt_ns(clean.open_ns as f64)),
            ratio: fmt_ratio(r),
            target: "≤ 10 ms".into(),
            met: Some(pr.open_ns <= 10_000_000),
        })
    }
}

/// What the probe reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Probe {
    pub(super) open_ns: u64,
    pub(super) reopen_median_ns: u64,
    /// After open and a few loads.
    pub(super) rss_kib: u64,
    /// Right after open, before any load.
    pub(super) rss_open_kib: u64,
    pub(super) rss_anon_kib: u64,
    pub(super) rss_before_kib: u64,
    /// Past segments.
    pub(super) segments: u64,
    pub(super) active_bytes: u64,
}

/// The child side: open `dir`, load a little, report on stdout as `key=value` pairs.
pub(super) fn probe(dir: &Path) -> Result<()> {
    let rss_before = proc_status_kib("VmRSS").unwrap_or(0);
    let t = Instant::now();
    let s = Storage::open(dir, Options::default())?;
    let open_ns = t.elapsed().as_nanos() as u64;
    let rss_open = proc_status_kib("VmRSS").unwrap_or(0);
    // A few loads: the first objects in oid order, and a few random oids (misses, which
    // search every past segment whose oid range covers them).
    let mut loaded = 0u64;
    for o in s.list(Oid(0), Tid::MAX, 100)? {
        loaded += s.load(o.oid)?.is_some() as u64;
    }
    let mut rng = Rng(SEED ^ 0x9999);
    for _ in 0..20 {
        black_box(s.load(Oid(rng.next()))?);
    }
    let rss = proc_status_kib("VmRSS").unwrap_or(0);
    let anon = proc_status_kib("RssAnon").unwrap_or(0);
    let segs = s.segments()?;
    let active = segs.iter().find(|x| x.state == SegmentState::Active).map_or(0, |x| x.bytes);
    let past = segs.iter().filter(|x| x.state == SegmentState::Past).count();
    let warnings = s.open_warnings().len();
    drop(s);
    let mut again: Vec<u64> = (0..REOPENS)
        .map(|_| {
            let t = Instant::now();
            let s = Storage::open(dir, Options::default())?;
            let ns = t.elapsed().as_nanos() as u64;
            drop(s);
            Ok(ns)
        })
        .collect::<Result<_>>()?;
    again.sort_unstable();
    println!(
        "open_ns={open_ns} reopen_median_ns={} rss_kib={rss} rss_open_kib={rss_open} rss_anon_kib={anon} rss_before_kib={rss_before} \
         segments={past} active_bytes={active} loaded={loaded} warnings={warnings}",
        percentile(&again, 50.0),
    );
    Ok(())
}

/// The parent side: run `<this exe> bench --open-probe DIR` and parse its report.
pub(super) fn run_probe(dir: &Path) -> Result<Probe> {
    let (text, ok) = run_child("--open-probe", dir)?;
    match parse_probe(&text) {
        Some(p) if ok => Ok(p),
        _ => Err(child_failed("--open-probe", dir, &text, "P5/P6")),
    }
}

/// Parse the probe's `key=value` line (the last line that has `open_ns=`).
pub(super) fn parse_probe(out: &str) -> Option<Probe> {
    let kv = kv_line(out, "open_ns=")?;
    let get = |k: &str| kv.get(k).copied();
    Some(Probe {
        open_ns: get("open_ns")?,
        reopen_median_ns: get("reopen_median_ns").unwrap_or(0),
        rss_kib: get("rss_kib")?,
        rss_open_kib: get("rss_open_kib").unwrap_or(0),
        rss_anon_kib: get("rss_anon_kib").unwrap_or(0),
        rss_before_kib: get("rss_before_kib").unwrap_or(0),
        segments: get("segments").unwrap_or(0),
        active_bytes: get("active_bytes").unwrap_or(0),
    })
}
