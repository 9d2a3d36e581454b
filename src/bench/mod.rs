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
//!   on plain mapped files (binary search in a sorted 16-byte index + copy of the data);
//!   and random 64-bit oids over 20 past segments with the oid filters on and off
//!   (`filter.rs`).
//! - P5/P6: open time and RSS in a fresh process: the bench re-executes its own binary as
//!   `<exe> bench --open-probe DIR`, which opens the storage read-write, does a few loads
//!   and prints `open_ns=… rss_kib=…`. That works from the `fs2` binary, not from inside a
//!   test harness.
//! - P7: merge (`Policy::All`) of 4 past segments holding `--merge-objects` objects,
//!   each written twice in two different segments (50% garbage, spread over the
//!   segments). Throughput and memory in a fresh process (`<exe> bench --merge-probe
//!   DIR`: open, merge, print `merge_ns=… anon_peak_kib=… hwm_kib=…`), at a quarter and
//!   at the full size; next to a plain copy (read + write + fsync) of the same input
//!   files. Then commit latency of one durable writer, idle and while a background merge
//!   (`start_merge`) of the same size runs, and whether that merge finishes meanwhile.
//! - P8–P10 (`mounted.rs`): the mounted view (an in-process mount) against plain
//!   files with the same bytes on the same disk: cold and warm `cat`, warm `ls -l`, and
//!   `ls head | wc -l` with the daemon's RSS.
//!
//! The benchmarks are modules of the `fs2` binary, not of the library: they measure the
//! engine through its public API (and the mount through `filestorage2::fuse`). One file a
//! part: the targets (`durable.rs` P1–P4, `open.rs` P5/P6, `merge.rs` P7, `mounted.rs`
//! P8–P12), what they run (`workload.rs`), the process and machine (`system.rs`), the
//! numbers and the table (`report.rs`); `peer.rs` is `fs2 bench-peer`.

mod durable;
mod filter;
mod merge;
mod mounted;
mod open;
pub mod peer;
mod report;
mod system;
#[cfg(test)]
mod tests;
mod workload;

use filestorage2::merge::Strategy;
use filestorage2::{Error, Result};
use merge::merge_probe;
use open::probe;
use report::{render, splitmix, Row};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use system::{fs_type_of, load_average, machine_info};

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
        return merge_probe(dir, Strategy::Append(filestorage2::AsOf::Target));
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
        if sel.has(4) {
            self.loads_over_many_segments()?;
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
}
