//! P7: merge throughput and memory in a fresh process (`<exe> bench --merge-probe DIR`)
//! next to a plain copy of the same files, and commit latency during a background merge.

use super::report::{
    fmt_bps, fmt_bytes, fmt_count, fmt_kib, fmt_ns, fmt_num, fmt_ratio, median_f64, percentile, sorted, splitmix, Row,
};
use super::system::{child_failed, cpu_ticks, kv_line, proc_status_kib, run_child, USER_HZ};
use super::workload::{object_data, timed_commits};
use super::{
    Bench, Oids, BULK_TXN, LATENCY_WARMUP, MERGE_DEADLINE, MERGE_PAIRS, MERGE_ROUNDS, MERGE_SEGMENTS, SAMPLE_EVERY,
    SEED, TXN_OBJECTS, ZODB_PACK_BPS, ZODB_PACK_RPS,
};
use filestorage2::merge::{MergeReport, Policy, Strategy};
use filestorage2::{Error, Oid, Options, Result, SegmentState, Storage};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

impl Bench<'_> {
    /// P7: merge throughput and memory in a fresh process at a quarter and at the full
    /// `--merge-objects`, next to a plain copy of the same files; then commit latency
    /// during a background merge of the full size.
    pub(super) fn merge(&mut self) -> Result<()> {
        let a = self.args;
        let n = a.merge_objects;
        let mut first: Option<(u64, MergeProbe)> = None;
        let mut full: Option<(PathBuf, f64)> = None;
        let mut notes = Vec::new();
        for m in [n / 4, n] {
            let dir = self.root.join(format!("merge-{m}"));
            let built = build_merge_input(&dir, m, a.size)?;
            // The reference: copy the same input files. The copy (with the rest of the
            // storage, untimed) is a second storage of the same data for the latency test.
            let copy = self.root.join(format!("merge-{m}-copy"));
            eprintln!("bench: P7: copying the {} of input segments (reference)", fmt_bytes(built.bytes));
            let cp = copy_storage(&dir, &copy, &built.inputs)?;
            eprintln!("bench: P7: merging {} objects in a fresh process", fmt_count(m));
            let pr = run_merge_probe(&dir, "--merge-probe")?;
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, "remove", e))?;
            let secs = pr.merge_ns as f64 / 1e9;
            if m == n {
                // The same input, merged semi-sequentially into the newest segment.
                let adir = self.root.join(format!("merge-{m}-append"));
                copy_storage(&copy, &adir, &[])?;
                eprintln!("bench: P7: append-merging {} objects in a fresh process", fmt_count(m));
                let pa = run_merge_probe(&adir, "--merge-append-probe")?;
                std::fs::remove_dir_all(&adir).map_err(|e| Error::io(&adir, "remove", e))?;
                let asecs = pa.merge_ns as f64 / 1e9;
                self.rows.push(Row {
                    id: "P7".into(),
                    workload: format!("  same, --append target-end: {} → newest (fresh process)", pa.inputs - 1),
                    measured: format!(
                        "{:.2} s, wrote {} (heap peak {})",
                        asecs,
                        fmt_bytes(pa.bytes_out),
                        fmt_kib(pa.anon_peak_kib)
                    ),
                    reference: format!("copy merge {:.2} s, wrote {}", secs, fmt_bytes(pr.bytes_out)),
                    ratio: fmt_ratio(secs / asecs),
                    target: "-".into(),
                    met: None,
                });
            }
            if m == n {
                full = Some((copy, secs));
            } else {
                std::fs::remove_dir_all(&copy).map_err(|e| Error::io(&copy, "remove", e))?;
            }
            let (bps, rps) = (pr.bytes_in as f64 / secs, pr.records_in as f64 / secs);
            let cp_bps = built.bytes as f64 / cp.as_secs_f64();
            self.rows.push(Row {
                id: "P7".into(),
                workload: format!(
                    "merge All (fresh process), {} × {} B objects written twice, {} past segs",
                    fmt_count(m),
                    a.size,
                    pr.inputs
                ),
                measured: format!("{} = {} rec/s ({:.2} s)", fmt_bps(bps), fmt_num(rps), secs),
                reference: format!("cp {} ({:.2} s)", fmt_bps(cp_bps), cp.as_secs_f64()),
                ratio: fmt_ratio(bps / cp_bps),
                target: format!(
                    "≥ 10× ZODB pack: {}, {} rec/s",
                    fmt_bps(10.0 * ZODB_PACK_BPS),
                    fmt_num(10.0 * ZODB_PACK_RPS)
                ),
                met: Some(bps >= 10.0 * ZODB_PACK_BPS && rps >= 10.0 * ZODB_PACK_RPS),
            });
            let (reference, ratio, met) = match &first {
                None => (format!("heap before merge {}", fmt_kib(pr.anon_open_kib)), "-".to_string(), None),
                Some((q, f)) => {
                    let r = pr.anon_peak_kib as f64 / f.anon_peak_kib as f64;
                    (format!("{}: heap peak {}", fmt_count(*q), fmt_kib(f.anon_peak_kib)), fmt_ratio(r), Some(r <= 1.5))
                }
            };
            self.rows.push(Row {
                id: "P7".into(),
                workload: format!("  merge memory (fresh process), {} objects", fmt_count(m)),
                measured: format!("heap peak {} (VmHWM {})", fmt_kib(pr.anon_peak_kib), fmt_kib(pr.hwm_kib)),
                reference,
                ratio,
                target: "heap peak flat (≤ 1.5×)".into(),
                met,
            });
            notes.push(format!(
                "P7 {}: input {} ({} records, {} txns; built in {:.2} s), output {} ({} records); merge {:.2} s, \
                 cp {:.2} s; merge CPU user {:.2} s + sys {:.2} s, final sync of the output {}; RSS after open {} \
                 (heap {}); {} memory samples{}",
                fmt_count(m),
                fmt_bytes(pr.bytes_in),
                fmt_num(pr.records_in as f64),
                fmt_num(pr.transactions_in as f64),
                built.load.as_secs_f64(),
                fmt_bytes(pr.bytes_out),
                fmt_num(pr.records_out as f64),
                secs,
                cp.as_secs_f64(),
                pr.user_ms as f64 / 1e3,
                pr.sys_ms as f64 / 1e3,
                fmt_ns(pr.sync_ns as f64),
                fmt_kib(pr.rss_open_kib),
                fmt_kib(pr.anon_open_kib),
                pr.samples,
                if pr.hwm_reset { "" } else { "; VmHWM could not be reset after open (it includes the open)" }
            ));
            first.get_or_insert((m, pr));
        }
        self.notes.push(format!(
            "P7: each object is written twice, in two of {MERGE_SEGMENTS} past segments chosen pseudo-randomly \
             (each segment holds half of the objects, in oid order, transactions of {BULK_TXN}; 50% of the records \
             are garbage); the merge (Policy::All) runs in a fresh process (`bench --merge-probe`), page cache warm; \
             throughput = bytes (records) of the input files / merge time; cp = read + write (1 MiB buffers) + \
             fsync of each input file on the same disk, warm; ZODB not run: its pack figure is the orientation \
             measured on this machine kind (55 MB, 360k records in 3 s)"
        ));
        self.notes.push(format!(
            "P7 memory: heap = RssAnon (heap, stacks), the highest of samples taken every {} ms during the merge; \
             VmHWM = peak VmRSS during the merge (reset after open via /proc/self/clear_refs), which also counts \
             the mapped input pages the merge reads and its mapped work table (clean file pages, not heap): it \
             grows with the input bytes by design",
            SAMPLE_EVERY.as_millis()
        ));
        self.notes.extend(notes);
        if let Some((dir, idle_secs)) = full {
            self.merge_latency(&dir, n, idle_secs)?;
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, "remove", e))?;
        }
        Ok(())
    }

    /// P7 under load, in `MERGE_ROUNDS` rounds, each on a fresh copy of the input in
    /// `src`: one durable writer timed per commit, idle, then while a background merge of
    /// all past segments runs (until it finishes), then idle again. Pooled percentiles.
    pub(super) fn merge_latency(&mut self, src: &Path, n: u64, idle_merge_secs: f64) -> Result<()> {
        let a = self.args;
        let per = (a.commits / (2 * MERGE_ROUNDS)).max(1);
        let (mut idle, mut during) = (Vec::new(), Vec::new());
        let (mut rounds, mut secs, mut idle_rates, mut during_rates) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut all_finished = true;
        let mut report = None;
        // All copies first, all removals at the end: a copy's writes or a removal's
        // discards would otherwise slow the fsyncs of the idle phase that follows.
        let dirs: Vec<PathBuf> = (0..MERGE_ROUNDS).map(|r| self.root.join(format!("merge-latency-{r}"))).collect();
        for dir in &dirs {
            copy_storage(src, dir, &[])?;
        }
        for (r, dir) in dirs.iter().enumerate() {
            let s = Storage::open(dir, Options::default())?;
            let (mut k, mut i_lat, mut d_lat) = (0u64, Vec::new(), Vec::new());
            timed_commits(&s, &mut k, a.size, &mut Vec::new(), |c| c < LATENCY_WARMUP)?;
            let t = Instant::now();
            timed_commits(&s, &mut k, a.size, &mut i_lat, |c| c < per)?;
            idle_rates.push(per as f64 / t.elapsed().as_secs_f64());
            let h = s.start_merge(&Policy::All)?.ok_or_else(|| Error::invalid("bench: P7: nothing to merge"))?;
            let t = Instant::now();
            timed_commits(&s, &mut k, a.size, &mut d_lat, |_| !h.is_finished() && t.elapsed() < MERGE_DEADLINE)?;
            let writing = t.elapsed();
            all_finished &= h.is_finished();
            let rep = h.wait()?;
            during_rates.push(d_lat.len() as f64 / writing.as_secs_f64());
            timed_commits(&s, &mut k, a.size, &mut i_lat, |c| c < per)?;
            drop(s);
            secs.push(rep.seconds);
            let (i99, d99) = (sorted(&i_lat), sorted(&d_lat));
            let (i99, d99) = (percentile(&i99, 99.0), percentile(&d99, 99.0));
            eprintln!(
                "bench: P7: round {}/{MERGE_ROUNDS}: merge under a writer {:.2} s, {} commits meanwhile; p99 idle {}, \
                 during {}",
                r + 1,
                rep.seconds,
                d_lat.len(),
                fmt_ns(i99 as f64),
                fmt_ns(d99 as f64)
            );
            rounds.push(format!(
                "{}/{} ({}; final sync {})",
                fmt_ns(d99 as f64),
                fmt_ns(i99 as f64),
                d_lat.len(),
                fmt_ns(rep.counts.sync_ns as f64)
            ));
            idle.extend(i_lat);
            during.extend(d_lat);
            report = Some(rep);
        }
        for dir in &dirs {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, "remove", e))?;
        }
        let report: MergeReport = report.ok_or_else(|| Error::invalid("bench: P7: no latency round ran"))?;
        idle.sort_unstable();
        during.sort_unstable();
        let (i50, i99) = (percentile(&idle, 50.0), percentile(&idle, 99.0));
        let (d50, d99) = (percentile(&during, 50.0), percentile(&during, 99.0));
        let r = d99 as f64 / i99 as f64;
        self.rows.push(Row {
            id: "P7".into(),
            workload: format!(
                "commit during a merge of {}, 1 writer, {TXN_OBJECTS} × {} B, durable",
                fmt_count(n),
                a.size
            ),
            measured: format!("p50 {}, p99 {}", fmt_ns(d50 as f64), fmt_ns(d99 as f64)),
            reference: format!("idle p50 {}, p99 {}", fmt_ns(i50 as f64), fmt_ns(i99 as f64)),
            ratio: fmt_ratio(r),
            target: "p99 ≤ 2× idle".into(),
            met: Some(r <= 2.0 && !during.is_empty()),
        });
        let merge_secs = median_f64(&secs);
        self.rows.push(Row {
            id: "P7".into(),
            workload: format!("  the merge of {} under that steady writer", fmt_count(n)),
            measured: if all_finished {
                format!("finished in {merge_secs:.2} s, {} commits meanwhile", during.len() / MERGE_ROUNDS as usize)
            } else {
                format!("not finished after {} s", MERGE_DEADLINE.as_secs())
            },
            reference: format!("idle merge {idle_merge_secs:.2} s"),
            ratio: fmt_ratio(merge_secs / idle_merge_secs),
            target: "finishes (never chases the writer)".into(),
            met: Some(all_finished),
        });
        self.notes.push(format!(
            "P7 latency: {MERGE_ROUNDS} rounds, each on a fresh copy of the full-size P7 input: {LATENCY_WARMUP} \
             untimed commits, {per} idle, as many as fit during a background merge (start_merge), {per} idle \
             again; each commit timed from begin to commit's return; percentiles pooled over the rounds ({} idle, \
             {} during); p99 during/idle per round: {}; max idle {}, during {}; commit rate idle {} tx/s, during \
             the merge {} tx/s (medians); each merge read {} ({} records) and wrote {}; merge time = median of \
             the rounds, the idle one is the fresh-process one",
            idle.len(),
            during.len(),
            rounds.join(", "),
            fmt_ns(idle.last().copied().unwrap_or(0) as f64),
            fmt_ns(during.last().copied().unwrap_or(0) as f64),
            fmt_num(median_f64(&idle_rates)),
            fmt_num(median_f64(&during_rates)),
            fmt_bytes(report.counts.bytes_in),
            fmt_num(report.counts.records_in as f64),
            fmt_bytes(report.counts.bytes_out)
        ));
        Ok(())
    }
}

/// A P7 merge input: `MERGE_SEGMENTS` past segments and an empty active segment.
pub(super) struct MergeInput {
    /// Time of the load, the syncs and the rotations.
    pub(super) load: Duration,
    /// Bytes of the past segments.
    pub(super) bytes: u64,
    /// The past segment files.
    pub(super) inputs: Vec<PathBuf>,
}

/// The two P7 segments (older first) that object `i` is written to.
pub(super) fn merge_pair(i: u64) -> (usize, usize) {
    MERGE_PAIRS[(splitmix(i ^ SEED ^ 0x7777) % MERGE_PAIRS.len() as u64) as usize]
}

/// Build the P7 input in `dir`: objects `0..n` (dense oids), each written in the two
/// segments `merge_pair` names, one segment at a time in oid order (`sync: false`, one
/// sync and a rotation per segment).
pub(super) fn build_merge_input(dir: &Path, n: u64, size: usize) -> Result<MergeInput> {
    let s = Storage::create(dir, Options { sync: false, rotate_size: 0, ..Options::default() })?;
    let mut buf = Vec::new();
    let t = Instant::now();
    for seg in 0..MERGE_SEGMENTS {
        let mut oids = (0..n)
            .filter(|&i| {
                let (a, b) = merge_pair(i);
                a == seg || b == seg
            })
            .map(|i| Oids::Dense.oid(i))
            .peekable();
        while oids.peek().is_some() {
            let mut txn = s.begin();
            for oid in oids.by_ref().take(BULK_TXN as usize) {
                object_data(oid, size, &mut buf);
                txn.store(Oid(oid), &buf)?;
            }
            txn.commit()?;
        }
        s.sync()?;
        s.rotate()?;
        eprintln!(
            "bench: P7: built past segment {}/{MERGE_SEGMENTS} of {} objects ({:.1} s)",
            seg + 1,
            fmt_count(n),
            t.elapsed().as_secs_f64()
        );
    }
    let load = t.elapsed();
    let past: Vec<_> = s.segments()?.into_iter().filter(|x| x.state == SegmentState::Past).collect();
    if past.len() != MERGE_SEGMENTS {
        return Err(Error::invalid(format!(
            "bench: P7: expected {MERGE_SEGMENTS} past segments, the storage has {}",
            past.len()
        )));
    }
    Ok(MergeInput {
        load,
        bytes: past.iter().map(|x| x.bytes).sum(),
        inputs: past.into_iter().map(|x| x.path).collect(),
    })
}

/// Copy the storage in `from` to `to`: the files `timed` first, timed (read + write in
/// 1 MiB buffers + fsync of each, then of the directory), then every other plain file,
/// untimed. Returns the time of the timed part.
pub(super) fn copy_storage(from: &Path, to: &Path, timed: &[PathBuf]) -> Result<Duration> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, "create directory", e))?;
    let t = Instant::now();
    for p in timed {
        copy_file(p, &to.join(p.file_name().unwrap_or_default()))?;
    }
    File::open(to).and_then(|d| d.sync_all()).map_err(|e| Error::io(to, "sync directory", e))?;
    let dt = t.elapsed();
    for e in std::fs::read_dir(from).map_err(|e| Error::io(from, "list", e))? {
        let e = e.map_err(|e| Error::io(from, "list", e))?;
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && !timed.iter().any(|p| p.file_name() == Some(&e.file_name())) {
            copy_file(&e.path(), &to.join(e.file_name()))?;
        }
    }
    Ok(dt)
}

/// What `cp` does without reflinks or in-kernel copies: read, write, fsync.
pub(super) fn copy_file(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut r = File::open(from).map_err(|e| Error::io(from, "open", e))?;
    let mut w =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(to).map_err(|e| Error::io(to, "create", e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = r.read(&mut buf).map_err(|e| Error::io(from, "read", e))?;
        if k == 0 {
            break;
        }
        w.write_all(&buf[..k]).map_err(|e| Error::io(to, "write", e))?;
    }
    w.sync_all().map_err(|e| Error::io(to, "sync", e))
}

/// What the merge probe reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MergeProbe {
    pub(super) merge_ns: u64,
    pub(super) inputs: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) records_in: u64,
    pub(super) records_out: u64,
    pub(super) transactions_in: u64,
    /// VmRSS and RssAnon right after open.
    pub(super) rss_open_kib: u64,
    pub(super) anon_open_kib: u64,
    /// The highest RssAnon sampled during the merge.
    pub(super) anon_peak_kib: u64,
    /// VmHWM after the merge (reset after open if `hwm_reset`).
    pub(super) hwm_kib: u64,
    pub(super) hwm_reset: bool,
    pub(super) samples: u64,
    /// CPU time of the probe process during the merge (all threads; 10 ms resolution).
    pub(super) user_ms: u64,
    pub(super) sys_ms: u64,
    /// The merge's final sync of its output.
    pub(super) sync_ns: u64,
}

/// The child side: open `dir`, merge all past segments while a thread samples RssAnon,
/// report on stdout as `key=value` pairs.
pub(super) fn merge_probe(dir: &Path, strategy: Strategy) -> Result<()> {
    let s = Storage::open(dir, Options::default())?;
    let rss_open = proc_status_kib("VmRSS").unwrap_or(0);
    let anon_open = proc_status_kib("RssAnon").unwrap_or(0);
    // Writing 5 resets VmHWM to the current RSS (Linux ≥ 4.0).
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let stop = AtomicBool::new(false);
    let (user0, sys0) = cpu_ticks().unwrap_or((0, 0));
    let (merged, merge_ns, (anon_peak, samples)) = std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let (mut peak, mut samples) = (0u64, 0u64);
            loop {
                let last = stop.load(Ordering::Relaxed);
                if let Some(k) = proc_status_kib("RssAnon") {
                    peak = peak.max(k);
                    samples += 1;
                }
                if last {
                    return (peak, samples);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        let t = Instant::now();
        let merged = s.merge_with(&Policy::All, strategy);
        let ns = t.elapsed().as_nanos() as u64;
        stop.store(true, Ordering::Relaxed);
        (merged, ns, sampler.join().unwrap_or((0, 0)))
    });
    let cpu = cpu_ticks().map(|(u, s)| (u - user0, s - sys0));
    let report = merged?.ok_or_else(|| Error::invalid("bench: merge probe: nothing to merge"))?;
    let hwm = proc_status_kib("VmHWM").unwrap_or(0);
    let c = &report.counts;
    println!(
        "merge_ns={merge_ns} inputs={} bytes_in={} bytes_out={} records_in={} records_out={} transactions_in={} \
         rss_open_kib={rss_open} anon_open_kib={anon_open} anon_peak_kib={anon_peak} hwm_kib={hwm} hwm_reset={} \
         samples={samples} user_ms={} sys_ms={} sync_ns={}",
        report.inputs.len(),
        c.bytes_in,
        c.bytes_out,
        c.records_in,
        c.records_out,
        c.transactions_in,
        hwm_reset as u8,
        cpu.map_or(0, |c| c.0 * 1000 / USER_HZ),
        cpu.map_or(0, |c| c.1 * 1000 / USER_HZ),
        c.sync_ns,
    );
    Ok(())
}

/// The parent side: run `<this exe> bench --merge-probe DIR` and parse its report.
/// `flag`: `--merge-probe` or `--merge-append-probe`.
pub(super) fn run_merge_probe(dir: &Path, flag: &str) -> Result<MergeProbe> {
    let (text, ok) = run_child(flag, dir)?;
    match parse_merge_probe(&text) {
        Some(p) if ok => Ok(p),
        _ => Err(child_failed(flag, dir, &text, "P7")),
    }
}

pub(super) fn parse_merge_probe(out: &str) -> Option<MergeProbe> {
    let kv = kv_line(out, "merge_ns=")?;
    let get = |k: &str| kv.get(k).copied();
    Some(MergeProbe {
        merge_ns: get("merge_ns")?.max(1),
        inputs: get("inputs")?,
        bytes_in: get("bytes_in")?,
        bytes_out: get("bytes_out")?,
        records_in: get("records_in")?,
        records_out: get("records_out")?,
        transactions_in: get("transactions_in").unwrap_or(0),
        rss_open_kib: get("rss_open_kib").unwrap_or(0),
        anon_open_kib: get("anon_open_kib").unwrap_or(0),
        anon_peak_kib: get("anon_peak_kib")?,
        hwm_kib: get("hwm_kib").unwrap_or(0),
        hwm_reset: get("hwm_reset") == Some(1),
        samples: get("samples").unwrap_or(0),
        user_ms: get("user_ms").unwrap_or(0),
        sys_ms: get("sys_ms").unwrap_or(0),
        sync_ns: get("sync_ns").unwrap_or(0),
    })
}
