//! `fs2 bench`: the performance targets P1–P12 (README "Performance"), measured through the
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
//! - P7: merge (`Policy::All`) of 4 past segments holding `--merge-objects` objects,
//!   each written twice in two different segments (50% garbage, spread over the
//!   segments). Throughput and memory in a fresh process (`<exe> bench --merge-probe
//!   DIR`: open, merge, print `merge_ns=… anon_peak_kib=… hwm_kib=…`), at a quarter and
//!   at the full size; next to a plain copy (read + write + fsync) of the same input
//!   files. Then commit latency of one durable writer, idle and while a background merge
//!   (`start_merge`) of the same size runs, and whether that merge finishes meanwhile.
//! - P8–P10 (`bench/mounted.rs`): the mounted view (an in-process mount) against plain
//!   files with the same bytes on the same disk: cold and warm `cat`, warm `ls -l`, and
//!   `ls head | wc -l` with the daemon's RSS.

mod mounted;

use crate::merge::{MergeReport, Policy, Strategy};
use crate::{Error, Oid, Options, Result, SegmentState, Storage, Tid};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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
/// Targets (P1..P12) the bench knows (P11/P12: commits through the mount, reported next
/// to the engine API's).
const TARGETS: usize = 12;
/// Past segments of the P7 merge input; each object is in two of them.
const MERGE_SEGMENTS: usize = 4;
/// The 6 pairs of P7 segments an object can be written to (older first).
const MERGE_PAIRS: [(usize, usize); 6] = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
/// ZODB pack on this machine kind (the orientation in README "Performance"): 55 MB / 360k records in 3 s at best.
const ZODB_PACK_BPS: f64 = 55e6 / 3.0;
const ZODB_PACK_RPS: f64 = 360e3 / 3.0;
/// How often the merge probe samples its anonymous memory.
const SAMPLE_EVERY: Duration = Duration::from_millis(1);
/// Untimed durable commits before the P7 latency phases.
const LATENCY_WARMUP: u64 = 50;
/// Rounds of the P7 latency measurement (idle, during a merge, idle), pooled.
const MERGE_ROUNDS: u64 = 3;
/// A merge under the P7 writer that has not finished by then is reported as not finishing.
const MERGE_DEADLINE: Duration = Duration::from_secs(600);

/// Measure the performance targets P1–P12 (README "Performance") and print one table.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Where to create the bench storages (in a temporary directory removed at the end).
    /// Must be a real disk, not tmpfs: fsync costs matter. Default: $TMPDIR if set, else
    /// the current directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Durable commits for P1 (and the fsync limit); P2 runs 4× as many in all; P7 times
    /// as many idle commits for its latency reference.
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
    /// Objects merged for P7: each written twice, in 4 past segments (50% garbage); the
    /// merge memory is also measured at a quarter of it to show flatness, and the commit
    /// latency during a merge at this size.
    #[arg(long, default_value_t = 1_000_000)]
    pub merge_objects: u64,
    /// Object size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Small objects read with `cat` through the mount for P8/P9 (P10's directory holds
    /// --mount-dir-entries of them).
    #[arg(long, default_value_t = 1000)]
    pub mount_files: u64,
    /// Size of each of those objects in bytes.
    #[arg(long, default_value_t = 4096)]
    pub mount_file_size: usize,
    /// Entries of the directory listed with `ls -l` for P10.
    #[arg(long, default_value_t = 10_000)]
    pub mount_dir_entries: u64,
    /// Objects listed with `ls head | wc -l` for P10 (also run at a tenth of it).
    #[arg(long, default_value_t = 1_000_000)]
    pub mount_ls_objects: u64,
    /// Durable commits through the mount for P11 (shell loop) and P12 (a Rust client with
    /// std::fs calls; 8 such clients commit twice as many), and through the engine API and
    /// the peers, in 7 interleaved rounds.
    #[arg(long, default_value_t = 700)]
    pub mount_commits: u64,
    /// Run only these targets (comma-separated, e.g. `p1,p4`; p1..p12).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub only: Vec<String>,
    /// Internal: open the storage in DIR, print open time and RSS, exit.
    #[arg(long, hide = true, value_name = "DIR")]
    pub open_probe: Option<PathBuf>,
    /// Internal: open the storage in DIR, merge all its past segments, print the merge
    /// time and memory, exit.
    #[arg(long, hide = true, value_name = "DIR")]
    pub merge_probe: Option<PathBuf>,
    /// Internal: as --merge-probe, with an append merge (as of the target's end).
    #[arg(long, hide = true, value_name = "DIR")]
    pub merge_append_probe: Option<PathBuf>,
}

/// Run the benchmark (or, with `--open-probe` / `--merge-probe`, the probe half of P5/P6 / P7).
pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(dir) = &args.open_probe {
        return probe(dir);
    }
    if let Some(dir) = &args.merge_probe {
        return merge_probe(dir, Strategy::Copy);
    }
    if let Some(dir) = &args.merge_append_probe {
        return merge_probe(dir, Strategy::Append(crate::types::AsOf::Target));
    }
    let sel = Selection::parse(&args.only)?;
    if args.commits == 0
        || args.writers == 0
        || args.objects == 0
        || args.loads == 0
        || args.open_objects < 10
        || args.merge_objects < 8
    {
        return Err(Error::invalid(
            "bench: --commits, --writers, --objects and --loads must be at least 1, --open-objects at least 10, \
             --merge-objects at least 8",
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
    println!("fs2 bench: {}; load average {}", machine_info(), load_average());
    println!(
        "dir {} ({}); --commits {} --writers {} --objects {} --loads {} --open-objects {} --merge-objects {} \
         --size {} --only {}",
        root.display(),
        fs.map_or("filesystem unknown".into(), |(t, src)| format!("{t} on {src}")),
        args.commits,
        args.writers,
        args.objects,
        args.loads,
        args.open_objects,
        args.merge_objects,
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
    println!("total bench time {:.1} s; load average at the end {}", started.elapsed().as_secs_f64(), load_average());
    drop(b);
    outcome?;
    tmp.close().map_err(|e| Error::io(&root, "remove", e))
}

// ---------------------------------------------------------------------------------------
// Selection of targets.

struct Selection([bool; TARGETS]);

impl Selection {
    fn parse(only: &[String]) -> Result<Selection> {
        if only.is_empty() {
            return Ok(Selection([true; TARGETS]));
        }
        let mut s = [false; TARGETS];
        for w in only.iter().map(|w| w.trim().to_ascii_lowercase()).filter(|w| !w.is_empty()) {
            match w.strip_prefix('p').and_then(|d| d.parse::<usize>().ok()) {
                Some(i @ 1..=TARGETS) => s[i - 1] = true,
                _ => {
                    return Err(Error::invalid(format!(
                        "bench: --only takes p1..p{TARGETS} (comma-separated), not {w:?}"
                    )))
                }
            }
        }
        Ok(Selection(s))
    }
    fn has(&self, i: usize) -> bool {
        self.0[i - 1]
    }
    fn names(&self) -> Vec<String> {
        (1..=TARGETS).filter(|i| self.has(*i)).map(|i| format!("p{i}")).collect()
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
        if sel.has(7) {
            self.merge()?;
        }
        if sel.has(8) || sel.has(9) || sel.has(10) {
            self.mounted(sel.has(8), sel.has(9), sel.has(10))?;
        }
        if sel.has(11) || sel.has(12) {
            self.mount_commits(sel.has(11), sel.has(12))?;
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
    /// P7: merge throughput and memory in a fresh process at a quarter and at the full
    /// `--merge-objects`, next to a plain copy of the same files; then commit latency
    /// during a background merge of the full size.
    fn merge(&mut self) -> Result<()> {
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
                 cp {:.2} s; merge CPU user {:.2} s + sys {:.2} s; RSS after open {} (heap {}); {} memory samples{}",
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
    fn merge_latency(&mut self, src: &Path, n: u64, idle_merge_secs: f64) -> Result<()> {
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
            rounds.push(format!("{}/{} ({})", fmt_ns(d99 as f64), fmt_ns(i99 as f64), d_lat.len()));
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

/// Durable commits of `TXN_OBJECTS` objects (cycling through the P1 working set), each
/// timed from `begin` to `commit`'s return into `lat`, while `more(commits so far)`; `k`
/// counts commits across calls, so the writer goes on where it stopped.
fn timed_commits(
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

/// A P7 merge input: `MERGE_SEGMENTS` past segments and an empty active segment.
struct MergeInput {
    /// Time of the load, the syncs and the rotations.
    load: Duration,
    /// Bytes of the past segments.
    bytes: u64,
    /// The past segment files.
    inputs: Vec<PathBuf>,
}

/// The two P7 segments (older first) that object `i` is written to.
fn merge_pair(i: u64) -> (usize, usize) {
    MERGE_PAIRS[(splitmix(i ^ SEED ^ 0x7777) % MERGE_PAIRS.len() as u64) as usize]
}

/// Build the P7 input in `dir`: objects `0..n` (dense oids), each written in the two
/// segments `merge_pair` names, one segment at a time in oid order (`sync: false`, one
/// sync and a rotation per segment).
fn build_merge_input(dir: &Path, n: u64, size: usize) -> Result<MergeInput> {
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
fn copy_storage(from: &Path, to: &Path, timed: &[PathBuf]) -> Result<Duration> {
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
fn copy_file(from: &Path, to: &Path) -> Result<()> {
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
    let (text, ok) = run_child("--open-probe", dir)?;
    match parse_probe(&text) {
        Some(p) if ok => Ok(p),
        _ => Err(child_failed("--open-probe", dir, &text, "P5/P6")),
    }
}

/// Run `<this exe> bench FLAG DIR`; its stdout and whether it succeeded.
fn run_child(flag: &str, dir: &Path) -> Result<(String, bool)> {
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("/proc/self/exe"), "locate", e))?;
    let out = Command::new(&exe)
        .arg("bench")
        .arg(flag)
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(&exe, "run", e))?;
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), out.status.success()))
}

fn child_failed(flag: &str, dir: &Path, out: &str, what: &str) -> Error {
    let exe = std::env::current_exe().unwrap_or_default();
    Error::invalid(format!(
        "bench: the probe `{} bench {flag} {}` failed (output {:?}); {what} need the fs2 binary: run \
         `cargo run --release -- bench`",
        exe.display(),
        dir.display(),
        out.trim()
    ))
}

/// The `key=value` pairs of the last line of `out` that contains `marker`.
fn kv_line<'a>(out: &'a str, marker: &str) -> Option<HashMap<&'a str, u64>> {
    let line = out.lines().rev().find(|l| l.contains(marker))?;
    Some(
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect(),
    )
}

/// Parse the probe's `key=value` line (the last line that has `open_ns=`).
fn parse_probe(out: &str) -> Option<Probe> {
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

// ---------------------------------------------------------------------------------------
// The merge probe (P7), run in a fresh process.

/// What the merge probe reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MergeProbe {
    merge_ns: u64,
    inputs: u64,
    bytes_in: u64,
    bytes_out: u64,
    records_in: u64,
    records_out: u64,
    transactions_in: u64,
    /// VmRSS and RssAnon right after open.
    rss_open_kib: u64,
    anon_open_kib: u64,
    /// The highest RssAnon sampled during the merge.
    anon_peak_kib: u64,
    /// VmHWM after the merge (reset after open if `hwm_reset`).
    hwm_kib: u64,
    hwm_reset: bool,
    samples: u64,
    /// CPU time of the probe process during the merge (all threads; 10 ms resolution).
    user_ms: u64,
    sys_ms: u64,
}

/// The child side: open `dir`, merge all past segments while a thread samples RssAnon,
/// report on stdout as `key=value` pairs.
fn merge_probe(dir: &Path, strategy: Strategy) -> Result<()> {
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
         samples={samples} user_ms={} sys_ms={}",
        report.inputs.len(),
        c.bytes_in,
        c.bytes_out,
        c.records_in,
        c.records_out,
        c.transactions_in,
        hwm_reset as u8,
        cpu.map_or(0, |c| c.0 * 1000 / USER_HZ),
        cpu.map_or(0, |c| c.1 * 1000 / USER_HZ),
    );
    Ok(())
}

/// The parent side: run `<this exe> bench --merge-probe DIR` and parse its report.
/// `flag`: `--merge-probe` or `--merge-append-probe`.
fn run_merge_probe(dir: &Path, flag: &str) -> Result<MergeProbe> {
    let (text, ok) = run_child(flag, dir)?;
    match parse_merge_probe(&text) {
        Some(p) if ok => Ok(p),
        _ => Err(child_failed(flag, dir, &text, "P7")),
    }
}

fn parse_merge_probe(out: &str) -> Option<MergeProbe> {
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
    })
}

/// Clock ticks per second of /proc times (fixed by the kernel ABI).
const USER_HZ: u64 = 100;

/// User and system CPU time of this process so far (all threads, live and exited), in
/// clock ticks, from /proc/self/stat.
fn cpu_ticks() -> Option<(u64, u64)> {
    stat_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Fields 14 and 15 (utime, stime) of a /proc/PID/stat line; the name (field 2) may hold
/// spaces and parentheses, so count from the last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    Some((rest.next()?.parse().ok()?, rest.next()?.parse().ok()?))
}

/// A `kB` field of /proc/self/status.
pub(crate) fn proc_status_kib(field: &str) -> Option<u64> {
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

/// The 1-minute load average (other work on a shared machine skews every figure).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
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

/// A sorted copy.
fn sorted(v: &[u64]) -> Vec<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

/// Nearest-rank percentile of a sorted slice (0 for an empty one).
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
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
    fn merge_probe_report_parses() {
        let out = "noise\nmerge_ns=2000000000 inputs=4 bytes_in=300 bytes_out=150 records_in=20 records_out=10 \
                   transactions_in=2 rss_open_kib=5 anon_open_kib=1 anon_peak_kib=3 hwm_kib=400 hwm_reset=1 samples=9\n";
        let p = parse_merge_probe(out).unwrap();
        assert_eq!((p.merge_ns, p.inputs, p.bytes_in, p.records_out), (2_000_000_000, 4, 300, 10));
        assert_eq!((p.anon_peak_kib, p.hwm_kib, p.hwm_reset, p.samples), (3, 400, true, 9));
        assert!(parse_merge_probe("merge_ns=1 inputs=4").is_none());
        let stat = "4242 (fs2 (x) y) R 1 4242 4242 0 -1 4194304 500 0 0 0 137 42 0 0 20 0 3 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some((137, 42)));
        assert_eq!(stat_cpu_ticks("1 (a) R 1"), None);
        assert!(parse_merge_probe("open_ns=1 rss_kib=2").is_none());
    }

    #[test]
    fn selection_takes_p1_to_p12() {
        let all = Selection::parse(&[]).unwrap();
        assert_eq!(all.names(), ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10", "p11", "p12"]);
        let some = Selection::parse(&["P10".into(), " p2 ".into()]).unwrap();
        assert_eq!(some.names(), ["p2", "p10"]);
        assert!(Selection::parse(&["p13".into()]).is_err());
        assert!(Selection::parse(&["p0".into()]).is_err());
        assert!(Selection::parse(&["x".into()]).is_err());
    }

    #[test]
    fn merge_layout_is_half_garbage_in_every_segment() {
        let n = 60_000;
        let mut per_seg = [0u64; MERGE_SEGMENTS];
        for i in 0..n {
            let (a, b) = merge_pair(i);
            assert!(a < b && b < MERGE_SEGMENTS);
            per_seg[a] += 1;
            per_seg[b] += 1;
        }
        // Each segment is in 3 of the 6 pairs: it holds about half of the objects.
        for c in per_seg {
            assert!((c as f64 / n as f64 - 0.5).abs() < 0.02, "{per_seg:?}");
        }
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
