//! `fs2 bench`: the performance targets P1–P6 of `TARGETS.md`, measured through the
//! public API next to the machine's own limits measured in the same run, printed as one
//! table (progress goes to stderr). Never a timed test: figures on shared machines are
//! noisy, so read the ratios, which compare things measured side by side.
//!
//! - `limit`: append 100 B + `fdatasync` on a plain file in the bench directory.
//! - P1/P2: durable commits (`Options::default()`) of 10 objects × `--size` B, from one
//!   writer and from `--writers` threads (group commit), in rounds interleaved with the
//!   fsync limit so that all three see the same disk weather; medians of the rounds.
//! - P3: bulk load (`sync: false`, transactions of 1000 objects, one `Storage::sync` at
//!   the end) next to a plain sequential write of the same number of bytes.
//! - P4: random current loads from one thread over objects in past segments (rotated with
//!   the default `rotate_size`, so several segments), warm, next to the same lookup done
//!   on plain mapped files (binary search in a sorted 16-byte index + copy of the data).
//! - P5/P6: open time and RSS in a fresh process: the bench re-executes its own binary as
//!   `<exe> bench --open-probe DIR`, which opens the storage read-write, does a few loads
//!   and prints `open_ns=… rss_kib=…`. That works from the `fs2` binary (and
//!   `examples/bench.rs`), not from inside a test harness.

use crate::{Error, Oid, Options, Result, SegmentState, Storage, Tid};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Rounds of the durable-commit measurements (fsync limit, P1, P2 interleaved).
const ROUNDS: u64 = 5;
/// Objects per durable transaction (P1, P2).
const TXN_OBJECTS: u64 = 10;
/// Oids each durable writer cycles through (first creates, then updates).
const WORKING_SET: u64 = 10_000;
/// P2 commits this many times `--commits` in all (it is faster than P1).
const P2_FACTOR: u64 = 4;
/// Objects per bulk-load transaction (P3).
const BULK_TXN: u64 = 1000;
/// Extra opens in the probe process, after the first, for a median.
const REOPENS: usize = 5;
/// The crash variant of P5 fills the active segment to this fraction of `rotate_size`.
const CRASH_FILL: (u64, u64) = (15, 16);
const SEED: u64 = 0x5eed_f500_2bec_0001;

/// Measure the performance targets P1–P6 (see TARGETS.md) and print one table.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Where to create the bench storages (in a temporary directory removed at the end).
    /// Must be a real disk, not tmpfs: fsync costs matter. Default: $TMPDIR if set, else
    /// the current directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Durable commits for P1 (and the fsync limit); P2 runs 4× as many in all.
    #[arg(long, default_value_t = 2000)]
    pub commits: u64,
    /// Writer threads for P2.
    #[arg(long, default_value_t = 8)]
    pub writers: u64,
    /// Objects bulk-loaded for P3 and loaded at random for P4.
    #[arg(long, default_value_t = 1_000_000)]
    pub objects: u64,
    /// Random loads timed for P4.
    #[arg(long, default_value_t = 200_000)]
    pub loads: u64,
    /// Objects in past segments for the open-time and RSS measurement (P5/P6), which also
    /// runs at a tenth of it to show flatness. The target figure is 10_000_000.
    #[arg(long, default_value_t = 1_000_000)]
    pub open_objects: u64,
    /// Object size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Run only these targets (comma-separated, e.g. `p1,p4`).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub only: Vec<String>,
    /// Internal: open the storage in DIR, print open time and RSS, exit.
    #[arg(long, hide = true, value_name = "DIR")]
    pub open_probe: Option<PathBuf>,
}

/// Run the benchmark (or, with `--open-probe`, the probe half of P5/P6).
pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(dir) = &args.open_probe {
        return probe(dir);
    }
    let sel = Selection::parse(&args.only)?;
    if args.commits == 0 || args.writers == 0 || args.objects == 0 || args.loads == 0 || args.open_objects < 10 {
        return Err(Error::invalid(
            "bench: --commits, --writers, --objects and --loads must be at least 1, --open-objects at least 10",
        ));
    }
    let base = args.dir.clone().unwrap_or_else(|| std::env::var_os("TMPDIR").map_or(PathBuf::from("."), PathBuf::from));
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, "create directory", e))?;
    let tmp = tempfile::Builder::new()
        .prefix("fs2-bench-")
        .tempdir_in(&base)
        .map_err(|e| Error::io(&base, "create a temporary directory in", e))?;
    let root = tmp.path().canonicalize().map_err(|e| Error::io(tmp.path(), "resolve", e))?;
    let started = Instant::now();

    let fs = std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|m| fs_type_of(&m, &root));
    if let Some((ty, _)) = &fs {
        if ty == "tmpfs" || ty == "ramfs" {
            eprintln!(
                "bench: warning: {} is on {ty}: fsync costs nothing there; use --dir on a real disk",
                root.display()
            );
        }
    }
    println!("fs2 bench: {}", machine_info());
    println!(
        "dir {} ({}); --commits {} --writers {} --objects {} --loads {} --open-objects {} --size {} --only {}",
        root.display(),
        fs.map_or("filesystem unknown".into(), |(t, src)| format!("{t} on {src}")),
        args.commits,
        args.writers,
        args.objects,
        args.loads,
        args.open_objects,
        args.size,
        sel.names().join(",")
    );

    let mut b = Bench { args, root: root.clone(), rows: Vec::new(), notes: Vec::new(), built: HashMap::new() };
    let outcome = b.all(&sel);
    if let Err(e) = &outcome {
        eprintln!("bench: stopped by an error; the table has what was measured before it: {e}");
    }
    println!();
    print!("{}", render(&b.rows));
    if !b.notes.is_empty() {
        println!();
        for n in &b.notes {
            println!("note: {n}");
        }
    }
    println!("total bench time {:.1} s", started.elapsed().as_secs_f64());
    drop(b);
    outcome?;
    tmp.close().map_err(|e| Error::io(&root, "remove", e))
}

// ---------------------------------------------------------------------------------------
// Selection of targets.

struct Selection([bool; 6]);

impl Selection {
    fn parse(only: &[String]) -> Result<Selection> {
        if only.is_empty() {
            return Ok(Selection([true; 6]));
        }
        let mut s = [false; 6];
        for w in only.iter().map(|w| w.trim().to_ascii_lowercase()).filter(|w| !w.is_empty()) {
            match w.strip_prefix('p').and_then(|d| d.parse::<usize>().ok()) {
                Some(i @ 1..=6) => s[i - 1] = true,
                _ => return Err(Error::invalid(format!("bench: --only takes p1..p6 (comma-separated), not {w:?}"))),
            }
        }
        Ok(Selection(s))
    }
    fn has(&self, i: usize) -> bool {
        self.0[i - 1]
    }
    fn names(&self) -> Vec<String> {
        (1..=6).filter(|i| self.has(*i)).map(|i| format!("p{i}")).collect()
    }
}

// ---------------------------------------------------------------------------------------
// The workloads.

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Oids {
    /// 1, 2, 3, ... (what a ZODB storage allocates).
    Dense,
    /// Distinct pseudo-random 64-bit oids (client-chosen ids).
    Random,
}

impl Oids {
    /// The `i`th oid of a storage of this kind (a bijection of `i`, so never repeated).
    fn oid(self, i: u64) -> u64 {
        match self {
            Oids::Dense => i + 1,
            Oids::Random => splitmix(i ^ SEED),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Oids::Dense => "dense",
            Oids::Random => "random",
        }
    }
}

struct Bench<'a> {
    args: &'a BenchArgs,
    root: PathBuf,
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Storages bulk-loaded and rotated (all objects in past segments), kept for reuse.
    built: HashMap<(Oids, u64), PathBuf>,
}

impl Bench<'_> {
    /// Every selected workload, in order; the rows accumulate in `self`.
    fn all(&mut self, sel: &Selection) -> Result<()> {
        if sel.has(1) || sel.has(2) {
            self.durable(sel.has(2))?;
        }
        if sel.has(3) || sel.has(4) {
            self.bulk_and_loads(sel.has(3), sel.has(4))?;
        }
        // Keep only what P5/P6 will open again.
        let a = self.args;
        let open_sizes = [(a.open_objects / 10).max(1), a.open_objects];
        let keep_for_open = sel.has(5) || sel.has(6);
        self.built.retain(|(_, n), dir| {
            let keep = keep_for_open && open_sizes.contains(n);
            if !keep {
                let _ = std::fs::remove_dir_all(dir);
            }
            keep
        });
        if keep_for_open {
            self.open_and_memory(open_sizes, sel.has(5), sel.has(6))?;
        }
        Ok(())
    }

    /// The fsync limit, P1 and P2, interleaved in rounds.
    fn durable(&mut self, with_p2: bool) -> Result<()> {
        let a = self.args;
        let per_round = (a.commits / ROUNDS).max(1);
        let p2_per_writer = (P2_FACTOR * a.commits / ROUNDS / a.writers).max(1);
        let s1 = Storage::create(&self.root.join("p1"), Options::default())?;
        let s2 = if with_p2 { Some(Storage::create(&self.root.join("p2"), Options::default())?) } else { None };
        // Warm up (untimed), and learn how many bytes one transaction appends.
        let warm = 20;
        let before = s1.stats()?.bytes;
        durable_commits(&s1, 1, warm, ROUNDS, a.size)?;
        let txn_bytes = ((s1.stats()?.bytes - before) / warm) as usize;
        if let Some(s2) = &s2 {
            durable_commits(s2, a.writers, 2, ROUNDS, a.size)?;
        }
        let (mut limit, mut limit_txn, mut one, mut many) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let rate = |dt: Duration, n: u64| n as f64 / dt.as_secs_f64();
            limit.push(rate(fsync_loop(&self.root, per_round, a.size)?, per_round));
            limit_txn.push(rate(fsync_loop(&self.root, per_round, txn_bytes)?, per_round));
            one.push(rate(durable_commits(&s1, 1, per_round, r, a.size)?, per_round));
            let mut line = format!(
                "bench: round {}/{ROUNDS}: fsync limit {}/s ({txn_bytes} B: {}/s), 1 writer {} tx/s",
                r + 1,
                fmt_num(limit[r as usize]),
                fmt_num(limit_txn[r as usize]),
                fmt_num(one[r as usize])
            );
            if let Some(s2) = &s2 {
                many.push(rate(durable_commits(s2, a.writers, p2_per_writer, r, a.size)?, p2_per_writer * a.writers));
                line += &format!(", {} writers {} tx/s", a.writers, fmt_num(many[r as usize]));
            }
            eprintln!("{line}");
        }
        let (limit, limit_txn, one) = (median_f64(&limit), median_f64(&limit_txn), median_f64(&one));
        let limit_row = |bytes: usize, rate: f64, what: &str| Row {
            id: "limit".into(),
            workload: format!("plain file: append {bytes} B + fdatasync{what}"),
            measured: format!("{}/s", fmt_num(rate)),
            reference: "-".into(),
            ratio: "-".into(),
            target: "the machine's fsync limit".into(),
            met: None,
        };
        self.rows.push(limit_row(a.size, limit, " (same disk)"));
        self.rows.push(limit_row(txn_bytes, limit_txn, " (= one P1 txn)"));
        self.rows.push(Row {
            id: "P1".into(),
            workload: format!("durable commits, 1 writer, {TXN_OBJECTS} objects × {} B", a.size),
            measured: format!("{} tx/s", fmt_num(one)),
            reference: format!("fsync limit {}/s", fmt_num(limit)),
            ratio: fmt_ratio(one / limit),
            target: "≥ 0.8× fsync limit".into(),
            met: Some(one / limit >= 0.8),
        });
        self.rows.push(Row {
            id: "P1".into(),
            workload: format!("  same, against appends of {txn_bytes} B"),
            measured: format!("{} tx/s", fmt_num(one)),
            reference: format!("{txn_bytes} B limit {}/s", fmt_num(limit_txn)),
            ratio: fmt_ratio(one / limit_txn),
            target: "(engine overhead beyond the bytes)".into(),
            met: None,
        });
        if with_p2 {
            let many = median_f64(&many);
            self.rows.push(Row {
                id: "P2".into(),
                workload: format!("durable commits, {} writers (group commit)", a.writers),
                measured: format!("{} tx/s", fmt_num(many)),
                reference: format!("1 writer {} tx/s", fmt_num(one)),
                ratio: fmt_ratio(many / one),
                target: "≥ 3× our 1-writer rate".into(),
                met: Some(many / one >= 3.0),
            });
            self.rows.push(Row {
                id: "P2".into(),
                workload: format!("  same, against the fsync limit ({} writers)", a.writers),
                measured: format!("{} tx/s", fmt_num(many)),
                reference: format!("fsync limit {}/s", fmt_num(limit)),
                ratio: fmt_ratio(many / limit),
                target: "≥ 5× ZODB (~1,900 tx/s: ~9,500)".into(),
                met: None,
            });
        }
        self.notes.push(format!(
            "P1/P2: median of {ROUNDS} interleaved rounds ({per_round} fsyncs of each size, {per_round} 1-writer \
             commits, {} {}-writer commits each, after an untimed warm-up); each writer cycles through its own \
             {WORKING_SET} oids (creates, then updates); one P1 transaction appends {txn_bytes} B",
            p2_per_writer * a.writers,
            a.writers
        ));
        Ok(())
    }

    /// P3 (bulk load, dense; and random oids when P4 runs too) and P4 (random loads).
    fn bulk_and_loads(&mut self, p3: bool, p4: bool) -> Result<()> {
        let a = self.args;
        let kinds: &[Oids] = if p4 { &[Oids::Dense, Oids::Random] } else { &[Oids::Dense] };
        let timer = timer_overhead_ns();
        for &kind in kinds {
            let dir = self.root.join(format!("bulk-{}-{}", kind.name(), a.objects));
            let (s, built) = build(&dir, kind, a.objects, a.size)?;
            if p3 {
                let seq = seq_write(&self.root, built.bytes)?;
                let objs = a.objects as f64 / built.load.as_secs_f64();
                let bps = built.bytes as f64 / built.load.as_secs_f64();
                let seq_bps = built.bytes as f64 / seq.as_secs_f64();
                self.rows.push(Row {
                    id: "P3".into(),
                    workload: format!(
                        "bulk load {} × {} B, {} oids, txns of {BULK_TXN}, sync at end",
                        fmt_count(a.objects),
                        a.size,
                        kind.name()
                    ),
                    measured: format!("{} obj/s = {}", fmt_num(objs), fmt_bps(bps)),
                    reference: format!("seq write {}", fmt_bps(seq_bps)),
                    ratio: fmt_ratio(bps / seq_bps),
                    target: "≥ 20× ZODB obj/s (ZODB not run)".into(),
                    met: None,
                });
                self.notes.push(format!(
                    "P3 {}: {} in {} segments, {:.2} s; the final rotate (seal) took {}; the seq-write reference \
                     writes the same {} in 1 MiB writes + one fdatasync",
                    kind.name(),
                    fmt_bytes(built.bytes),
                    built.segments,
                    built.load.as_secs_f64(),
                    fmt_ns(built.rotate.as_nanos() as f64),
                    fmt_bytes(built.bytes),
                ));
            }
            if p4 {
                self.random_loads(&s, kind, &built, timer)?;
            }
            drop(s);
            self.built.insert((kind, a.objects), dir);
        }
        Ok(())
    }

    fn random_loads(&mut self, s: &Storage, kind: Oids, built: &Built, timer: u64) -> Result<()> {
        let a = self.args;
        let n = a.objects;
        // Warm: every object once, verifying its bytes.
        eprintln!("bench: P4 {}: warming (loading all {} objects)", kind.name(), fmt_count(n));
        let mut want = Vec::new();
        for i in 0..n {
            let oid = kind.oid(i);
            object_data(oid, a.size, &mut want);
            match s.load(Oid(oid))? {
                Some((_, d)) if d == want => {}
                other => {
                    return Err(Error::invalid(format!(
                        "bench: oid {} read back wrong: {:?} bytes",
                        Oid(oid),
                        other.map(|(_, d)| d.len())
                    )))
                }
            }
        }
        let mut rng = Rng(SEED ^ 0x4444);
        // Two different samples: one for the mean, one timed per load (so that the timed
        // pass does not find the first pass's cache lines).
        let sample: Vec<u64> = (0..2 * a.loads).map(|_| kind.oid(rng.below(n))).collect();
        eprintln!("bench: P4 {}: timing {} random loads", kind.name(), fmt_count(a.loads));
        let ours = measure_loads(&sample, |o| match s.load(Oid(o))? {
            Some((_, d)) => Ok(d.len()),
            None => Err(Error::invalid(format!("bench: oid {} vanished", Oid(o)))),
        })?;
        // The reference: the same lookups on plain mapped files.
        let plain = PlainFiles::build(&self.root.join(format!("plain-{}", kind.name())), kind, n, a.size)?;
        for i in 0..n {
            black_box(plain.load(kind.oid(i)));
        }
        let theirs = measure_loads(&sample, |o| {
            plain.load(o).map(|d| d.len()).ok_or_else(|| Error::invalid("bench: plain lookup missed"))
        })?;
        plain.remove();
        self.rows.push(Row {
            id: "P4".into(),
            workload: format!(
                "random load, {} {} oids in {} past segs, warm, 1 thread",
                fmt_count(n),
                kind.name(),
                built.segments
            ),
            measured: format!("p50 {}, p99 {}", fmt_ns(ours.median as f64), fmt_ns(ours.p99 as f64)),
            reference: format!("plain mmap p50 {}, p99 {}", fmt_ns(theirs.median as f64), fmt_ns(theirs.p99 as f64)),
            ratio: fmt_ratio(ours.median as f64 / theirs.median as f64),
            target: "p50 ≤ 1 µs (≥ 8× ZODB's 7.7 µs)".into(),
            met: Some(ours.median <= 1000),
        });
        self.notes.push(format!(
            "P4 {}: {} loads (another {} for the mean), each timed with Instant (timer overhead ~{timer} ns, included); mean without the \
             per-load timer: ours {}, plain {}; plain = binary search in a mapped sorted 16-byte index + copy of \
             the {} B from a mapped data file, no checksum",
            kind.name(),
            fmt_count(a.loads),
            fmt_count(a.loads),
            fmt_ns(ours.mean),
            fmt_ns(theirs.mean),
            a.size
        ));
        Ok(())
    }

    /// P5/P6: open time and RSS in a fresh process, at two sizes, dense and random oids;
    /// P5 also after a crash with a full active segment.
    fn open_and_memory(&mut self, sizes: [u64; 2], p5: bool, p6: bool) -> Result<()> {
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
    fn crash_open(&mut self, dir: &Path, n: u64, clean: &Probe) -> Result<Row> {
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

/// Durable commits of `TXN_OBJECTS` objects from `writers` threads, `per_writer` each;
/// `round` picks where in its working set each writer continues. Returns the wall time.
fn durable_commits(s: &Storage, writers: u64, per_writer: u64, round: u64, size: usize) -> Result<Duration> {
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

/// The machine's fsync limit: `n` × (append `bytes` + fdatasync) on a fresh plain file.
fn fsync_loop(root: &Path, n: u64, bytes: usize) -> Result<Duration> {
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
fn seq_write(root: &Path, bytes: u64) -> Result<Duration> {
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
struct Built {
    /// Time of the load including the final `Storage::sync` (not the final rotate).
    load: Duration,
    rotate: Duration,
    /// Bytes of all segments.
    bytes: u64,
    /// Past segments after the final rotate.
    segments: usize,
}

/// Bulk-load `n` objects (`sync: false`, default rotate size), sync, rotate so that all
/// of them are in past segments. Returns the open storage.
fn build(dir: &Path, kind: Oids, n: u64, size: usize) -> Result<(Storage, Built)> {
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
fn object_data(oid: u64, size: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&oid.to_le_bytes());
    buf.extend((8..size.max(8)).map(|k| (oid as u8).wrapping_add(k as u8)));
    buf.truncate(size);
}

/// Latencies of one pass of loads.
struct Latency {
    /// Mean of an untimed pass (total / count), without the per-load timer.
    mean: f64,
    median: u64,
    p99: u64,
}

/// Run `load` over the first half of `sample` for the mean, then over the second half
/// timing each call.
fn measure_loads(sample: &[u64], mut load: impl FnMut(u64) -> Result<usize>) -> Result<Latency> {
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
fn timer_overhead_ns() -> u64 {
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
struct PlainFiles {
    dir: PathBuf,
    index: memmap2::Mmap,
    data: memmap2::Mmap,
    size: usize,
}

impl PlainFiles {
    fn build(dir: &Path, kind: Oids, n: u64, size: usize) -> Result<PlainFiles> {
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

    fn load(&self, oid: u64) -> Option<Vec<u8>> {
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

    fn remove(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }
}

// ---------------------------------------------------------------------------------------
// The open probe (P5/P6), run in a fresh process.

/// What the probe reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    open_ns: u64,
    reopen_median_ns: u64,
    /// After open and a few loads.
    rss_kib: u64,
    /// Right after open, before any load.
    rss_open_kib: u64,
    rss_anon_kib: u64,
    rss_before_kib: u64,
    /// Past segments.
    segments: u64,
    active_bytes: u64,
}

/// The child side: open `dir`, load a little, report on stdout as `key=value` pairs.
fn probe(dir: &Path) -> Result<()> {
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
fn run_probe(dir: &Path) -> Result<Probe> {
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("/proc/self/exe"), "locate", e))?;
    let out = Command::new(&exe)
        .arg("bench")
        .arg("--open-probe")
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(&exe, "run", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_probe(&text) {
        Some(p) if out.status.success() => Ok(p),
        _ => Err(Error::invalid(format!(
            "bench: the open probe `{} bench --open-probe {}` failed ({}; output {:?}); P5/P6 need the fs2 \
             binary: run `cargo run --release -- bench`",
            exe.display(),
            dir.display(),
            out.status,
            text.trim()
        ))),
    }
}

/// Parse the probe's `key=value` line (the last line that has `open_ns=`).
fn parse_probe(out: &str) -> Option<Probe> {
    let line = out.lines().rev().find(|l| l.contains("open_ns="))?;
    let kv: HashMap<&str, u64> = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
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

/// A `kB` field of /proc/self/status.
fn proc_status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field_kib(&s, field)
}

fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Machine information.

fn machine_info() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "cpu unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| status_field_kib(&m, "MemTotal"));
    let kernel = std::fs::read_to_string("/proc/version")
        .ok()
        .and_then(|v| v.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    format!("{cpus} CPUs ({model}), {} RAM, Linux {kernel}", mem.map_or("?".into(), fmt_kib))
}

/// The filesystem type and source of the mount holding `path`, from /proc/self/mountinfo.
fn fs_type_of(mountinfo: &str, path: &Path) -> Option<(String, String)> {
    let mut best: Option<(usize, String, String)> = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let Some(mount) = pre.split_whitespace().nth(4) else { continue };
        let mount = mount.replace("\\040", " ");
        let mut post = post.split_whitespace();
        let Some(ty) = post.next() else { continue };
        let (ty, src) = (ty.to_string(), post.next().unwrap_or("?").to_string());
        let len = Path::new(&mount).components().count();
        if path.starts_with(&mount) && best.as_ref().is_none_or(|b| len >= b.0) {
            best = Some((len, ty, src));
        }
    }
    best.map(|(_, t, s)| (t, s))
}

// ---------------------------------------------------------------------------------------
// Small pure helpers: randomness, statistics, formatting, the table.

/// The splitmix64 finalizer: a bijection of u64.
fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix(self.0)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// Nearest-rank percentile of a sorted slice (0 for an empty one).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median (mean of the two middle values for an even count; 0 for none).
fn median_f64(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// 1234567.8 → "1,234,568".
fn fmt_num(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An object count as a short label: 1000000 → "1M", 100000 → "100k".
fn fmt_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn fmt_ns(ns: f64) -> String {
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{:.2} µs", ns / 1e3),
        ns if ns < 1e9 => format!("{:.2} ms", ns / 1e6),
        ns => format!("{:.2} s", ns / 1e9),
    }
}

fn fmt_bytes(b: u64) -> String {
    match b as f64 {
        x if x < 1024.0 * 1024.0 => format!("{:.1} KiB", x / 1024.0),
        x if x < 1024.0 * 1024.0 * 1024.0 => format!("{:.1} MiB", x / (1024.0 * 1024.0)),
        x => format!("{:.2} GiB", x / (1024.0 * 1024.0 * 1024.0)),
    }
}

fn fmt_kib(k: u64) -> String {
    fmt_bytes(k * 1024)
}

fn fmt_bps(bps: f64) -> String {
    format!("{}/s", fmt_bytes(bps as u64))
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "-".into()
    }
}

/// One line of the result table.
struct Row {
    id: String,
    workload: String,
    measured: String,
    reference: String,
    ratio: String,
    target: String,
    /// Whether the target is met, where this run can tell.
    met: Option<bool>,
}

fn render(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            vec![
                r.id.clone(),
                r.workload.clone(),
                r.measured.clone(),
                r.reference.clone(),
                r.ratio.clone(),
                r.target.clone(),
                met.to_string(),
            ]
        })
        .collect();
    format_table(&["id", "workload", "measured", "reference (same run)", "ratio", "target", "met"], &cells)
}

/// Left-aligned columns two spaces apart, a rule under the header, no trailing spaces.
fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            s.extend(std::iter::repeat_n(' ', width[i].saturating_sub(c.chars().count())));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    out += &line(&mut rule.iter().map(String::as_str));
    for r in rows {
        out += &line(&mut r.iter().take(width.len()).map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[1, 2, 3], 50.0), 2);
        assert_eq!(median_f64(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f64(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median_f64(&[]), 0.0);
    }

    #[test]
    fn table_columns_align_without_trailing_spaces() {
        let rows = vec![
            vec!["P1".to_string(), "µs wide".to_string(), "x".to_string()],
            vec!["limit".into(), "a".into(), "".into()],
        ];
        let t = format_table(&["id", "what", "z"], &rows);
        assert_eq!(t, "id     what     z\n-----  -------  -\nP1     µs wide  x\nlimit  a\n");
    }

    #[test]
    fn numbers_format_for_people() {
        assert_eq!(fmt_num(1234567.4), "1,234,567");
        assert_eq!(fmt_num(999.0), "999");
        assert_eq!(fmt_num(1000.0), "1,000");
        assert_eq!(fmt_count(1_000_000), "1M");
        assert_eq!(fmt_count(100_000), "100k");
        assert_eq!(fmt_count(1234), "1234");
        assert_eq!(fmt_ns(850.0), "850 ns");
        assert_eq!(fmt_ns(1250.0), "1.25 µs");
        assert_eq!(fmt_ns(4.5e6), "4.50 ms");
        assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
        assert_eq!(fmt_ratio(0.876), "0.88×");
    }

    #[test]
    fn probe_report_parses() {
        let out = "noise\nopen_ns=1200 reopen_median_ns=900 rss_kib=5000 rss_anon_kib=1000 rss_before_kib=2000 \
                   segments=4 active_bytes=4096 loaded=100 warnings=0\n";
        let p = parse_probe(out).unwrap();
        assert_eq!((p.open_ns, p.reopen_median_ns, p.rss_kib, p.segments, p.active_bytes), (1200, 900, 5000, 4, 4096));
        assert!(parse_probe("open_ns=x").is_none());
        assert!(parse_probe("").is_none());
    }

    #[test]
    fn status_fields_and_mounts_parse() {
        let st = "Name:\tfs2\nVmRSS:\t    5124 kB\nRssAnon:\t  1000 kB\n";
        assert_eq!(status_field_kib(st, "VmRSS"), Some(5124));
        assert_eq!(status_field_kib(st, "RssAnon"), Some(1000));
        assert_eq!(status_field_kib(st, "VmHWM"), None);
        let mi = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                  30 22 0:26 / /tmp rw - tmpfs tmpfs rw\n";
        assert_eq!(fs_type_of(mi, Path::new("/work/x")), Some(("ext4".into(), "/dev/vda".into())));
        assert_eq!(fs_type_of(mi, Path::new("/tmp/x")), Some(("tmpfs".into(), "tmpfs".into())));
    }

    #[test]
    fn oids_and_data_are_deterministic() {
        let r: std::collections::HashSet<u64> = (0..10_000).map(|i| Oids::Random.oid(i)).collect();
        assert_eq!(r.len(), 10_000, "random oids never repeat");
        assert_eq!(Oids::Dense.oid(0), 1);
        let mut b = Vec::new();
        object_data(258, 10, &mut b);
        assert_eq!(b, [2, 1, 0, 0, 0, 0, 0, 0, 10, 11]);
        object_data(1, 4, &mut b);
        assert_eq!(b, [1, 0, 0, 0]);
        let mut rng = Rng(1);
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
