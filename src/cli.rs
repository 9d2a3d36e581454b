//! The `fs2` command line: a thin clap layer over the engine.

use clap::{Args, Parser, Subcommand};
use filestorage2::backup;
use filestorage2::check::check;
use filestorage2::merge::{Policy, Strategy};
use filestorage2::{AsOf, Error, Listed, Oid, Options, SegmentName, SegmentState, Storage, Tid};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const EXIT_CODES: &str = "Exit status: 0 success; 1 error; 2 bad usage; 3 no such object, revision or storage; \
4 conflict or busy (retry); 5 damaged data found (see `fs2 check`).\nSet RUST_LOG=info (or debug) for more detail.";

const DEMO_DIR: &str = "fs2-demo";

#[derive(Parser, Debug)]
#[command(name = "fs2", version, about = "filestorage2: a ZODB object store made of a chain of segment files",
          after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a new, empty storage in DIR.
    Init {
        /// The storage directory.
        dir: PathBuf,
        /// Records never span a multiple of this many bytes (a multiple of 4096).
        #[arg(long, default_value_t = 1 << 28)]
        alignment: u64,
        /// full: keep history until merged; minimal: merge past segments after every
        /// rotation so that only current revisions remain.
        #[arg(long, default_value = "full", value_parser = ["full", "minimal"])]
        retention: String,
    },
    /// Show the chain of segments, their tid ranges, sizes and counts.
    Info {
        /// The storage directory.
        dir: PathBuf,
        /// Skip counting live objects (which reads every index).
        #[arg(long)]
        no_count: bool,
    },
    /// Write an object's data to standard output.
    Cat {
        /// The storage directory.
        dir: PathBuf,
        /// The object id: 16 hex digits (e.g. 0000000000000001).
        oid: Oid,
        /// Show the object as of this tid (its newest revision with tid <= TID).
        #[arg(long)]
        at: Option<Tid>,
    },
    /// List every retained revision of an object, newest first.
    History {
        /// The storage directory.
        dir: PathBuf,
        /// The object id: 16 hex digits (e.g. 0000000000000001).
        oid: Oid,
    },
    /// List live objects: oid, size, tid of the current revision.
    Ls {
        /// The storage directory.
        dir: PathBuf,
        /// List the objects as of this tid.
        #[arg(long)]
        at: Option<Tid>,
    },
    /// Print the transaction log in human-readable form (like ZODB's fsdump).
    Dump {
        /// The storage directory.
        dir: PathBuf,
        /// Start at this tid (the oldest retained by default).
        #[arg(long)]
        from: Option<Tid>,
        /// Stop after this tid (the last by default).
        #[arg(long)]
        to: Option<Tid>,
    },
    /// Commit one transaction offline: store OID=FILE pairs (FILE "-" is stdin; OID
    /// "new" allocates a fresh oid) and delete --delete OIDs.
    Commit(CommitArgs),
    /// Seal the active segment and start a new one.
    Rotate {
        /// The storage directory.
        dir: PathBuf,
    },
    /// Merge (pack) adjacent past segments into one that keeps only each object's record
    /// current at the end of the merged range; the inputs move to DIR/archive/. With
    /// --append, the older segments' records are appended to the newest one instead.
    Merge(MergeArgs),
    /// Move a past segment to another directory (another file system) and relink the chain.
    MoveSegment {
        /// The storage directory.
        dir: PathBuf,
        #[arg(value_parser = parse_segment)]
        segment: SegmentName,
        /// The target directory (created if missing).
        to: PathBuf,
    },
    /// Show or set how much history the storage keeps: full (until merged) or minimal
    /// (past segments merged after every rotation).
    Retention {
        /// The storage directory.
        dir: PathBuf,
        #[arg(value_parser = ["full", "minimal"])]
        set: Option<String>,
    },
    /// Verify every checksum, the chain, and every index against its data.
    Check {
        /// The storage directory.
        dir: PathBuf,
        /// Truncate a torn tail of the active segment and rebuild lost indexes first.
        #[arg(long)]
        repair: bool,
        /// With --repair: move damaged transactions of the active segment aside (into
        /// `<segment>.damaged-<offset>` files), listing their tids and oids, so that the
        /// storage takes writes again. Exits 5 if anything was moved.
        #[arg(long, requires = "repair")]
        salvage: bool,
        /// Also read every current object as a ZODB record and report references to
        /// objects that do not exist (like ZODB's fsrefs); exit 5 if there are any.
        #[arg(long)]
        refs: bool,
    },
    /// Class histogram of the current objects of a ZODB database (like ZODB's analyze).
    Analyze { dir: PathBuf },
    /// What an object references, and which objects reference it (a scan of all).
    Refs { dir: PathBuf, oid: Oid },
    /// Delete the objects unreachable from the root object 0 by ZODB references (weak
    /// references keep nothing alive), in one transaction based on the snapshot walked.
    Gc {
        dir: PathBuf,
        /// List the garbage, delete nothing (opens the storage read-only).
        #[arg(long)]
        dry_run: bool,
    },
    /// Undo transaction TID: one new transaction (description `undo <tid>`) restoring
    /// each object it wrote to its state before it (deleting the objects it created).
    /// Refused, exit 4, naming the oid, if an object changed after TID; exit 1 if TID's
    /// history was merged (packed) away; exit 3 if there is no such transaction.
    Undo { dir: PathBuf, tid: Tid },
    /// Measure the engine and the mount against this machine's limits and plain files
    /// (P1-P12, README "Performance"); prints a table.
    Bench(crate::bench::BenchArgs),
    /// Mount a storage as a browsable tree (foreground; Ctrl-C or `fs2 umount` unmounts).
    /// Without arguments: builds the demo storage ./fs2-demo if missing, mounts it on ./fs2-mnt.
    Mount {
        #[arg(default_value = DEMO_DIR)]
        storage: PathBuf,
        #[arg(default_value = "fs2-mnt")]
        mountpoint: PathBuf,
        /// Open the storage read-only (a snapshot as of the mount; another process may write).
        #[arg(long)]
        read_only: bool,
        /// Let other users read the mount (default: only its owner). Writing (txn/, merge)
        /// stays with the owner unless --allow-other-write.
        #[arg(long)]
        allow_other: bool,
        /// With --allow-other: let other users write too (begin and commit transactions,
        /// merge).
        #[arg(long, requires = "allow_other")]
        allow_other_write: bool,
        /// Create an empty storage if STORAGE holds none.
        #[arg(long)]
        init: bool,
        /// Clean a stale mount left at MOUNTPOINT by a killed `fs2 mount`.
        #[arg(long)]
        force: bool,
        /// Abort a voted transaction (txn/NAME/ctl) that gets no commit or abort within
        /// this many seconds: a voted transaction locks its objects.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        vote_timeout: u64,
        /// Refuse staged objects larger than this many bytes (EFBIG).
        #[arg(long, default_value_t = 1 << 30, value_name = "BYTES")]
        max_object_size: u64,
    },
    /// Build a working storage in NEWDIR from copies: copied segment directories
    /// (`cp -a MNT/segments/<name>`), segment files, directories holding them (a backup,
    /// a storage's archive/). Verifies every checksum, the storage id and the chain links;
    /// never changes the sources. With --check: verify only (give sources only).
    #[command(override_usage = "fs2 restore SOURCE... NEWDIR\n       fs2 restore --check SOURCE...")]
    Restore {
        /// The sources, then the new storage directory (new or empty).
        #[arg(required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// Verify the sources form a whole chain and every checksum holds; write nothing.
        #[arg(long)]
        check: bool,
    },
    /// Copy the storage's chain into DEST/<segment>/<segment>.fs2, only what changed
    /// since the last backup there. Works on a live, mounted storage (a read-only
    /// snapshot: the active segment's committed transactions).
    Backup {
        /// The storage directory.
        dir: PathBuf,
        /// The backup directory (created if missing).
        dest: PathBuf,
    },
    /// Merged-away segments in DIR/archive/.
    Archive {
        #[command(subcommand)]
        cmd: ArchiveCmd,
    },
    /// Unmount a `fs2 mount` (for scripts).
    Umount {
        mountpoint: PathBuf,
        /// Detach now even if busy; the mount goes away when the last process leaves it.
        #[arg(long)]
        lazy: bool,
    },
    /// Internal: one workload of the ZODB comparison (contrib/bench/zodb_compare.py).
    #[command(hide = true)]
    BenchPeer(crate::bench::peer::PeerArgs),
    /// Build a demo storage with a few transactions (if DIR holds none) and show it.
    Demo {
        #[arg(default_value = DEMO_DIR)]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ArchiveCmd {
    /// Delete the merged-away segments in DIR/archive/ (copy them first if you want
    /// their history: `fs2 backup` or `cp -a MNT/archive/<name>`). A segment the chain
    /// uses is never deleted.
    Prune {
        /// The storage directory.
        dir: PathBuf,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["all", "policy", "segments"])))]
#[command(override_usage = "fs2 merge DIR (--all | --policy [--keep K] | SEGMENT...) [--append AS_OF]")]
struct MergeArgs {
    /// The storage directory.
    dir: PathBuf,
    /// Merge every past segment into one.
    #[arg(long)]
    all: bool,
    /// Let the size-tiered policy choose: keep at most --keep past segments.
    #[arg(long)]
    policy: bool,
    /// With --policy: how many past segments to keep at most.
    #[arg(long, default_value_t = 4, requires = "policy")]
    keep: usize,
    /// Adjacent past segments to merge, as `fs2 info` names them.
    #[arg(value_parser = parse_segment, conflicts_with_all = ["all", "policy"])]
    segments: Vec<SegmentName>,
    /// Semi-sequential merge: append each older segment's retained records to the newest
    /// chosen segment (its own records are not copied). source-end: each source's newest
    /// record of every object (time travel to the end of each source stays exact);
    /// target-end: only records still current at the end of the newest segment.
    #[arg(long, value_name = "AS_OF")]
    append: Option<AppendAsOf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum AppendAsOf {
    SourceEnd,
    TargetEnd,
}

/// A segment name, with or without the `.fs2` suffix.
fn parse_segment(s: &str) -> Result<SegmentName, String> {
    s.strip_suffix(".fs2").unwrap_or(s).parse().map_err(|e: Error| e.to_string())
}

#[derive(Args, Debug)]
struct CommitArgs {
    /// The storage directory.
    dir: PathBuf,
    /// OID=FILE pairs.
    #[arg(value_name = "OID=FILE")]
    stores: Vec<String>,
    /// Delete this oid (repeatable).
    #[arg(long = "delete", value_name = "OID")]
    deletes: Vec<Oid>,
    /// The transaction's user name.
    #[arg(long, default_value = "")]
    user: String,
    /// The transaction's description.
    #[arg(long, default_value = "")]
    description: String,
    /// Extension bytes, stored as given.
    #[arg(long, default_value = "")]
    extension: String,
    /// Base the conflict check on this tid instead of the current one (for scripts that
    /// read first and want to detect concurrent changes).
    #[arg(long)]
    base: Option<Tid>,
}

/// An error with the exit status it maps to.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

/// The exit status of an engine error: 3 no such thing, 4 conflict or busy, 5 damage,
/// 1 any other error (2, bad usage, is decided before the engine is asked).
fn exit_code(e: &Error) -> i32 {
    match e {
        Error::NotFound(_) => 3,
        Error::Conflict { .. } | Error::Busy(_) => 4,
        Error::Corrupted { .. } | Error::Checksum { .. } => 5,
        _ => 1,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let hint =
            if e.is_corruption() { "; `fs2 check` on the storage tells what is damaged and what to do" } else { "" };
        Failure { code: exit_code(&e), message: format!("{e}{hint}") }
    }
}

fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

/// Open read-only. A tail of the active segment the open had to ignore is said on
/// stderr (one line; the exit status stays 0: see README "Exit status").
/// An archive (copied segments, see `backup`) opens read-only as it is; where its
/// history starts is said on stderr when older segments are missing.
fn open_ro(dir: &Path) -> Result<Storage, Failure> {
    let s = backup::open_read_only(dir)?;
    if let Some(t) = s.ignored_tail() {
        eprintln!("fs2: warning: {t}");
    }
    if let Some(note) = backup::history_note(&s)? {
        eprintln!("fs2: note: {note}");
    }
    Ok(s)
}

/// Open for writing; an archive is refused (it would be recovered and forked).
fn open_rw(dir: &Path) -> Result<Storage, Failure> {
    backup::refuse_writable(dir)?;
    Ok(Storage::open(dir, Options::default())?)
}

/// Progress on stderr for long work, only when stderr is a terminal.
struct Progress {
    what: &'static str,
    last: Instant,
    shown: bool,
    tty: bool,
}

impl Progress {
    fn new(what: &'static str) -> Progress {
        Progress { what, last: Instant::now(), shown: false, tty: std::io::stderr().is_terminal() }
    }
    /// Items done, of `total` if known (0: unknown).
    fn update_count(&mut self, done: u64, total: u64) {
        if !self.tty || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        self.shown = true;
        if total == 0 {
            eprint!("\r\x1b[K{}: {done}", self.what);
        } else {
            eprint!("\r\x1b[K{}: {:5.1}% ({done} of {total})", self.what, done as f64 * 100.0 / total as f64);
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if !self.tty || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        self.shown = true;
        let pct = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
        eprint!("\r{}: {pct:5.1}% ({} of {})", self.what, human(done), human(total));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}

pub fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Bytes as a Python-like literal: printable ASCII as is, the rest escaped.
fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string().replace('\'', "\\'")
}

fn tid_or_none(t: Option<Tid>) -> String {
    t.map_or("-".into(), |t| t.to_string())
}

impl Cli {
    /// Whether this runs the mount daemon.
    pub fn is_mount(&self) -> bool {
        matches!(self.cmd, Cmd::Mount { .. })
    }
}

/// Refuse `--at T` inside a merged (packed) range: the exact states there are gone.
fn packed(s: &Storage, at: Option<Tid>) -> Result<(), Failure> {
    let Some(t) = at else { return Ok(()) };
    match s.history_gaps()?.into_iter().find(|(lo, hi, _)| *lo < t && t < *hi) {
        Some((_, end, seg)) => Err(fail(
            3,
            format!("the history at {t} was packed: merged into {seg}, exact states from {end} on (see `fs2 info`)"),
        )),
        None => Ok(()),
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    let out = std::io::stdout();
    let mut out = out.lock();
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    match cli.cmd {
        Cmd::Init { dir, alignment, retention } => {
            if backup::holds_segments(&dir) {
                return Err(fail(
                    1,
                    format!(
                        "{} holds segment files or copied segment directories: not a place for a new storage \
                         (open it as it is, or `fs2 restore {} NEWDIR`)",
                        dir.display(),
                        dir.display()
                    ),
                ));
            }
            filestorage2::mount::owner_only_dir(&dir).map_err(|m| fail(1, m))?;
            let s = Storage::create(&dir, Options { alignment, ..Options::default() })?;
            s.set_retention(retention.parse()?)?;
            w(writeln!(out, "created storage {} (active segment {})", dir.display(), s.segments()?[0].name))?;
        }
        Cmd::Info { dir, no_count } => info(&mut out, &dir, !no_count)?,
        Cmd::Cat { dir, oid, at } => {
            let s = open_ro(&dir)?;
            packed(&s, at)?;
            let found = s.load_at(oid, at.unwrap_or(Tid::MAX))?;
            match found {
                Some((_, data)) => w(out.write_all(&data))?,
                None => {
                    let when = at.map_or(String::new(), |t| format!(" as of {t}"));
                    let why =
                        if s.current_tid(oid)?.is_some() { "was deleted or did not exist" } else { "does not exist" };
                    return Err(fail(3, format!("oid {oid} {why}{when}; `fs2 history` lists its revisions")));
                }
            }
        }
        Cmd::History { dir, oid } => {
            let s = open_ro(&dir)?;
            let h = s.history(oid)?;
            if h.is_empty() {
                return Err(fail(3, format!("oid {oid} has no retained revisions")));
            }
            for r in h {
                let size = if r.deleted { "deleted".to_string() } else { r.size.to_string() };
                w(writeln!(out, "{}  {}  {size:>10}  {}", r.tid, r.tid.iso8601(), r.segment))?;
            }
        }
        Cmd::Ls { dir, at } => {
            let s = open_ro(&dir)?;
            packed(&s, at)?;
            let at = at.unwrap_or(Tid::MAX);
            // Damaged objects (fault containment) are named on stderr and the rest is
            // listed; then exit 5.
            let mut damaged = 0usize;
            for o in s.objects(Oid(0), at) {
                match o? {
                    Listed::Live(o) => w(writeln!(out, "{}  {:>10}  {}", o.oid, o.size, o.tid))?,
                    Listed::Damaged(oid, e) => {
                        eprintln!("fs2: damaged: {oid}: {}", e.detail());
                        damaged += 1;
                    }
                }
            }
            // Objects only a damaged transaction holds are in no index: name them too.
            for d in s.damaged_transactions() {
                let oids = match &d.oids {
                    Some(o) => o.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(" "),
                    None => "unknown (any object may be affected)".into(),
                };
                eprintln!("fs2: damaged transaction at offset {} of the active segment; its objects: {oids}", d.start);
                damaged += 1;
            }
            if damaged > 0 {
                return Err(fail(5, format!("damaged objects are not listed; run `fs2 check {}`", dir.display())));
            }
        }
        Cmd::Dump { dir, from, to } => dump(&mut out, &dir, from, to)?,
        Cmd::Commit(a) => commit(&mut out, a)?,
        Cmd::Rotate { dir } => {
            let s = open_rw(&dir)?;
            let name = s.rotate()?;
            w(writeln!(out, "sealed the active segment; new active segment {name}"))?;
        }
        Cmd::Analyze { dir } => analyze(&mut out, &dir)?,
        Cmd::Refs { dir, oid } => refs(&mut out, &dir, oid)?,
        Cmd::Gc { dir, dry_run } => gc(&mut out, &dir, dry_run)?,
        Cmd::Undo { dir, tid } => undo(&mut out, &dir, tid)?,
        Cmd::Check { dir, repair, salvage, refs } => {
            // Everything on stdout, one line each: `salvaged: ...`, `repaired: ...`,
            // `problem: ...`, the counts, then `ok` or `damaged: ...`. An error that is not damage
            // (no storage there, no access) is one line on stderr, exit 3 or 1.
            // What the opens warn about is in the report (one line each): not again on
            // stderr, unless RUST_LOG asks for it.
            if std::env::var_os("RUST_LOG").is_none() {
                log::set_max_level(log::LevelFilter::Error);
            }
            let one_line = |x: &str| x.replace('\n', " ");
            if salvage {
                backup::refuse_writable(&dir)?;
            }
            let salvaged = match salvage {
                true => filestorage2::check::salvage(&dir, Options::default())
                    .map_err(|e| Failure { code: exit_code(&e), message: e.to_string() })?,
                false => Vec::new(),
            };
            for x in &salvaged {
                w(writeln!(out, "salvaged: {}", one_line(x)))?;
            }
            let mut p = Progress::new("check");
            // An archive is checked as it is (read-only; never repaired in place).
            // Copied segment directories are checked against their copied info too.
            let (cdir, copts, unusable) = if backup::is_archive(&dir) {
                if repair {
                    backup::refuse_writable(&dir)?;
                }
                let a = backup::Archive::with(std::slice::from_ref(&dir), true)?;
                if let Some((_, line)) = &a.plan.missing {
                    w(writeln!(out, "note: older segments not present: {line}"))?;
                }
                (a.dir, a.opts, a.unusable)
            } else {
                (dir.clone(), Options::default(), Vec::new())
            };
            let mut r = check(&cdir, repair, copts, &mut |d, t| p.update(d, t))
                .map_err(|e| Failure { code: exit_code(&e), message: e.to_string() })?;
            r.problems.extend(unusable);
            drop(p);
            for x in &r.repaired {
                w(writeln!(out, "repaired: {}", one_line(x)))?;
            }
            for x in &r.problems {
                w(writeln!(out, "problem: {}", one_line(x)))?;
            }
            w(writeln!(
                out,
                "checked {} segments, {} transactions, {} records, {}",
                r.segments,
                r.transactions,
                r.records,
                human(r.bytes)
            ))?;
            if !r.ok() {
                w(writeln!(out, "damaged: {} problem(s) in {}", r.problems.len(), dir.display()))?;
                return Err(fail(5, ""));
            }
            if refs {
                check_refs(&mut out, &dir)?;
            }
            if !salvaged.is_empty() {
                // The storage is whole again, but something was moved aside or lost.
                w(writeln!(
                    out,
                    "damaged: {} item(s) salvaged in {} (listed above); the storage takes writes again",
                    salvaged.len(),
                    dir.display()
                ))?;
                return Err(fail(5, ""));
            }
            w(writeln!(out, "ok"))?;
        }
        Cmd::Merge(a) => merge(&mut out, a)?,
        Cmd::MoveSegment { dir, segment, to } => {
            let to = std::path::absolute(&to).map_err(|e| fail(1, format!("{}: {e}", to.display())))?;
            let s = open_rw(&dir)?;
            let path = s.move_segment(segment, &to)?;
            w(writeln!(out, "moved {segment} to {}", path.display()))?;
        }
        Cmd::Retention { dir, set } => match set {
            Some(r) => {
                let s = open_rw(&dir)?;
                s.set_retention(r.parse()?)?;
                w(writeln!(out, "retention: {}", s.retention()))?;
            }
            None => w(writeln!(out, "retention: {}", open_ro(&dir)?.retention()))?,
        },
        Cmd::Demo { dir } => demo(&mut out, &dir)?,
        Cmd::Mount {
            storage,
            mountpoint,
            read_only,
            allow_other,
            allow_other_write,
            init,
            force,
            vote_timeout,
            max_object_size,
        } => {
            drop(out);
            let mopts = filestorage2::fuse::MountOptions {
                read_only,
                allow_other,
                allow_other_write,
                vote_timeout: std::time::Duration::from_secs(vote_timeout),
                max_object_size,
            };
            mount(&storage, &mountpoint, &mopts, init, force)?
        }
        Cmd::Restore { paths, check } => restore(&mut out, paths, check)?,
        Cmd::Backup { dir, dest } => {
            let r = backup::backup(&dir, &dest)?;
            for (n, bytes) in &r.copied {
                w(writeln!(out, "copied:    {n} ({bytes} bytes)"))?;
            }
            for n in &r.unchanged {
                w(writeln!(out, "unchanged: {n}"))?;
            }
            for p in &r.stale {
                w(writeln!(
                    out,
                    "kept:      {} (merged away since; older history, not needed to restore)",
                    p.display()
                ))?;
            }
            w(writeln!(out, "backed up {} to {} as of {}", dir.display(), dest.display(), r.last_tid))?;
        }
        Cmd::Archive { cmd: ArchiveCmd::Prune { dir, dry_run } } => {
            let gone = backup::prune_archive(&dir, dry_run)?;
            let total: u64 = gone.iter().map(|(_, n)| n).sum();
            for (p, n) in &gone {
                w(writeln!(out, "{} {} ({n} bytes)", if dry_run { "would delete" } else { "deleted" }, p.display()))?;
            }
            w(writeln!(
                out,
                "{} {} archived segment(s), {}",
                if dry_run { "would free" } else { "freed" },
                gone.len(),
                human(total)
            ))?;
        }
        Cmd::Umount { mountpoint, lazy } => {
            filestorage2::mount::umount(&mountpoint, lazy).map_err(|m| fail(1, m))?;
            w(writeln!(out, "unmounted {}", mountpoint.display()))?;
        }
        Cmd::Bench(args) => crate::bench::run(&args)?,
        Cmd::BenchPeer(args) => crate::bench::peer::run(&args)?,
    }
    Ok(())
}

fn info(out: &mut impl Write, dir: &Path, count: bool) -> Result<(), Failure> {
    // An archive: where its history starts, and the copies its chain does not use, are
    // lines of the output here.
    let (s, unused) = if backup::is_archive(dir) {
        let a = backup::Archive::new(&[dir.to_path_buf()])?;
        (a.open()?, a.plan.unused.into_iter().map(|(p, why)| format!("{} ({why})", p.display())).collect())
    } else {
        (Storage::open(dir, Options::read_only())?, Vec::new())
    };
    let segs = s.segments()?;
    let st = s.stats()?;
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    w(writeln!(out, "storage:      {}", dir.display()))?;
    if backup::is_archive(dir) {
        w(writeln!(out, "archive:      copied segments, opened read-only (`fs2 restore` makes a storage of them)"))?;
    }
    if let Some(note) = backup::history_note(&s)? {
        w(writeln!(out, "history:      {note}"))?;
    }
    for u in unused {
        w(writeln!(out, "not used:     {u}"))?;
    }
    for p in s.strays() {
        w(writeln!(
            out,
            "stray file:   {} (not in the chain; ignored; `fs2 check --repair` moves it aside)",
            p.display()
        ))?;
    }
    if let Some(t) = s.ignored_tail() {
        w(writeln!(
            out,
            "ignored tail: {} bytes at offset {} of {} ({})",
            t.bytes,
            t.offset,
            t.segment.display(),
            t.reason
        ))?;
    }
    w(writeln!(
        out,
        "last tid:     {} ({})",
        st.last_tid,
        if st.last_tid == Tid::ZERO { "empty".into() } else { st.last_tid.iso8601() }
    ))?;
    w(writeln!(out, "max oid:      {}", st.max_oid.map_or("-".into(), |o| o.to_string())))?;
    if count {
        w(writeln!(out, "objects:      {}", s.count_objects()?))?;
    }
    w(writeln!(out, "transactions: {}", st.transactions))?;
    w(writeln!(out, "records:      {}", st.records))?;
    w(writeln!(out, "bytes:        {} ({})", st.bytes, human(st.bytes)))?;
    w(writeln!(out, "retention:    {}", s.retention()))?;
    w(writeln!(out, "segments:     {} (oldest first)", segs.len()))?;
    w(writeln!(
        out,
        "  {:<18} {:<6} {:<16} {:<16} {:>8} {:>9} {:>12}  path",
        "name", "state", "first tid", "last tid", "txns", "records", "bytes"
    ))?;
    for g in &segs {
        w(writeln!(
            out,
            "  {:<18} {:<6} {:<16} {:<16} {:>8} {:>9} {:>12}  {}",
            g.name.to_string(),
            if g.state == SegmentState::Active { "active" } else { "past" },
            tid_or_none(g.first_tid),
            tid_or_none(g.last_tid),
            g.transactions,
            g.records,
            g.bytes,
            g.path.display()
        ))?;
        for a in &g.appended {
            let kept = match a.as_of {
                AsOf::Source => "as of its end: time travel to it is exact",
                AsOf::Target => "as current at this segment's end",
            };
            w(writeln!(
                out,
                "    + {:<14} appended {:<16} {:<16} {:>8} {:>9}  ({kept})",
                a.source.to_string(),
                tid_or_none(a.first_tid),
                tid_or_none(a.last_tid),
                a.transactions,
                a.records,
            ))?;
        }
    }
    let archive = dir.join("archive");
    let mut archived: Vec<(String, u64)> = std::fs::read_dir(&archive)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    SegmentName::from_file_name(&name)?;
                    // A chain segment moved there (move-segment) is not archived.
                    if segs.iter().any(|g| std::fs::canonicalize(&g.path).ok() == std::fs::canonicalize(e.path()).ok())
                    {
                        return None;
                    }
                    Some((name, e.metadata().ok()?.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    archived.sort();
    if !archived.is_empty() {
        let total: u64 = archived.iter().map(|(_, n)| n).sum();
        w(writeln!(
            out,
            "archived:     {} in {}, {total} bytes ({}) (merged away; each is a complete segment; \
             `fs2 archive prune` deletes them)",
            archived.len(),
            archive.display(),
            human(total)
        ))?;
        for (name, len) in archived {
            w(writeln!(out, "  {name:<24} {len:>12}"))?;
        }
    }
    Ok(())
}

fn restore(out: &mut impl Write, mut paths: Vec<PathBuf>, check_only: bool) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let target = match check_only {
        true => None,
        false if paths.len() >= 2 => paths.pop(),
        false => return Err(fail(2, "give one or more sources and the new storage directory (or --check)")),
    };
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Error);
    }
    let mut p = Progress::new("verify");
    let r = backup::restore(&paths, target.as_deref(), &mut |d, t| p.update(d, t))?;
    drop(p);
    for (name, piece, bytes) in &r.chain {
        w(writeln!(out, "chain:     {name} {bytes:>12}  {}", piece.display()))?;
    }
    for (piece, why) in &r.unused {
        w(writeln!(out, "unused:    {} ({why})", piece.display()))?;
    }
    for x in r.unusable.iter().chain(&r.notes) {
        w(writeln!(out, "note:      {x}"))?;
    }
    for x in &r.check.problems {
        w(writeln!(out, "problem:   {}", x.replace('\n', " ")))?;
    }
    w(writeln!(
        out,
        "verified {} segments, {} transactions, {} records, {}; last tid {}",
        r.check.segments,
        r.check.transactions,
        r.check.records,
        human(r.check.bytes),
        r.last_tid
    ))?;
    if !r.check.ok() {
        return Err(fail(5, format!("damaged: {} problem(s); nothing restored", r.check.problems.len())));
    }
    match (&target, r.restored) {
        (Some(t), true) => w(writeln!(out, "restored into {} (verified)", t.display())),
        _ => w(writeln!(out, "ok")),
    }
}

fn merge(out: &mut impl Write, a: MergeArgs) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let policy = if a.all {
        Policy::All
    } else if a.policy {
        Policy::KeepAtMost(a.keep)
    } else {
        Policy::Named(a.segments)
    };
    let strategy = match a.append {
        None => Strategy::Copy,
        Some(AppendAsOf::SourceEnd) => Strategy::Append(AsOf::Source),
        Some(AppendAsOf::TargetEnd) => Strategy::Append(AsOf::Target),
    };
    let s = open_rw(&a.dir)?;
    let Some(h) = s.start_merge_with(&policy, strategy)? else {
        let n = s.past_segment_stats()?.len();
        return w(writeln!(out, "nothing to merge ({n} past segments)"));
    };
    let mut p = Progress::new("merge");
    while !h.is_finished() {
        let pr = &h.progress;
        p.update(pr.bytes_done.load(Ordering::Relaxed), pr.bytes_total.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(p);
    let r = h.wait()?;
    let c = &r.counts;
    let names: Vec<String> = r.inputs.iter().map(|n| n.to_string()).collect();
    w(writeln!(out, "merged {} into {} in {:.2} s", names.join(" "), r.output, r.seconds))?;
    if let Strategy::Append(as_of) = strategy {
        let how = match as_of {
            AsOf::Source => "each source's newest records",
            AsOf::Target => "records current at the target's end",
        };
        w(writeln!(out, "  appended:     {how} to {}, whose own records stay in place", r.output))?;
        w(writeln!(out, "  bytes:        {} in the sources, {} appended", human(c.bytes_in), human(c.bytes_out)))?;
    } else {
        w(writeln!(out, "  bytes:        {} before, {} after", human(c.bytes_in), human(c.bytes_out)))?;
    }
    w(writeln!(
        out,
        "  records:      {} before, {} after ({} dropped; {} deletions dropped with their objects)",
        c.records_in,
        c.records_out,
        c.records_in - c.records_out,
        c.deletions_dropped
    ))?;
    w(writeln!(out, "  transactions: {} before, {} after", c.transactions_in, c.transactions_out))?;
    for p in &r.archived {
        w(writeln!(out, "  archived:     {}", p.display()))?;
    }
    Ok(())
}

fn dump(out: &mut impl Write, dir: &Path, from: Option<Tid>, to: Option<Tid>) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = open_ro(dir)?;
    let total: u64 = s.segments()?.iter().map(|g| g.data_end).sum();
    let mut done = 0;
    let mut p = Progress::new("dump");
    let mut reader = filestorage2::zodb::Reader::new();
    let mut damaged = 0;
    for (i, t) in s.transactions(from.unwrap_or(Tid::ZERO), to.unwrap_or(Tid::MAX)).enumerate() {
        // A damaged transaction (fault containment) is named on stderr; the dump goes on
        // after it and exits 5. Any other error ends it.
        let t = match t {
            Ok(t) => t,
            Err(e) if e.is_corruption() => {
                drop(std::mem::replace(&mut p, Progress::new("dump")));
                eprintln!("fs2: {e}");
                damaged += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        done += t.records.iter().map(|r| 48 + r.1.as_ref().map_or(0, |d| d.len() as u64)).sum::<u64>();
        p.update(done, total);
        w(writeln!(
            out,
            "Trans #{i:05} tid={} time={} segment={} offset={}",
            t.tid,
            t.tid.iso8601(),
            t.segment,
            t.offset
        ))?;
        let ext = if t.meta.extension.is_empty() {
            String::new()
        } else {
            format!(" extension='{}'", escape(&t.meta.extension))
        };
        w(writeln!(out, "    user='{}' description='{}'{ext}", escape(&t.meta.user), escape(&t.meta.description)))?;
        for (j, (oid, data)) in t.records.iter().enumerate() {
            match data {
                Some(d) => {
                    let class =
                        reader.read(d).map_or_else(|_| "? (not a ZODB record)".to_string(), |(c, _)| c.to_string());
                    w(writeln!(out, "  data #{j:05} oid={oid} size={} class={class}", d.len()))?
                }
                None => w(writeln!(out, "  data #{j:05} oid={oid} deleted"))?,
            }
        }
    }
    if damaged > 0 {
        return Err(fail(5, format!("{damaged} damaged transaction(s) not shown; run `fs2 check {}`", dir.display())));
    }
    Ok(())
}

fn commit(out: &mut impl Write, a: CommitArgs) -> Result<(), Failure> {
    if a.stores.is_empty() && a.deletes.is_empty() {
        return Err(fail(2, "nothing to commit: give OID=FILE pairs and/or --delete OID"));
    }
    // Read every input before touching the storage: bad input changes nothing.
    let mut stores = Vec::new();
    for pair in &a.stores {
        let (oid, file) =
            pair.split_once('=').ok_or_else(|| fail(2, format!("{pair:?}: expected OID=FILE (or new=FILE)")))?;
        let oid = if oid == "new" { None } else { Some(oid.parse::<Oid>().map_err(|e| fail(2, e.to_string()))?) };
        let data = if file == "-" {
            let mut d = Vec::new();
            std::io::stdin().read_to_end(&mut d).map_err(|e| fail(1, format!("reading stdin: {e}")))?;
            d
        } else {
            std::fs::read(file).map_err(|e| fail(1, format!("reading {file}: {e}")))?
        };
        stores.push((oid, data));
    }
    let s = open_rw(&a.dir)?;
    let mut t = s.begin();
    if let Some(b) = a.base {
        if b > s.last_tid() {
            return Err(fail(2, format!("--base {b} is newer than the last transaction {}", s.last_tid())));
        }
        t = filestorage2::Transaction::at(&s, b);
    }
    t.set_user(a.user.as_bytes());
    t.set_description(a.description.as_bytes());
    t.set_extension(a.extension.as_bytes());
    // Chosen oids first, so that "new" never allocates one of them.
    for (oid, data) in &stores {
        if let Some(oid) = oid {
            t.store(*oid, data)?;
        }
    }
    let mut allocated = Vec::new();
    for (_, data) in stores.iter().filter(|(oid, _)| oid.is_none()) {
        let o = s.new_oid()?;
        allocated.push(o);
        t.store(o, data)?;
    }
    for oid in &a.deletes {
        t.delete(*oid)?;
    }
    let tid = t.commit()?;
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    for o in allocated {
        w(writeln!(out, "new oid {o}"))?;
    }
    w(writeln!(out, "committed {tid}"))?;
    Ok(())
}

fn mount(
    storage: &Path,
    mp: &Path,
    mopts: &filestorage2::fuse::MountOptions,
    init: bool,
    force: bool,
) -> Result<(), Failure> {
    let read_only = mopts.read_only;
    let empty = !storage.exists() || std::fs::read_dir(storage).map(|mut d| d.next().is_none()).unwrap_or(false);
    if empty && storage == Path::new(DEMO_DIR) {
        build_demo(storage)?;
        println!("created the demo storage {} (6 transactions in 2 segments)", storage.display());
    } else if empty && init {
        filestorage2::mount::owner_only_dir(storage).map_err(|m| fail(1, m))?;
        Storage::create(storage, Options::default())?;
        println!("created an empty storage in {}", storage.display());
    } else if empty {
        return Err(fail(3, format!("no storage in {}: create one with --init (or `fs2 init`)", storage.display())));
    }
    filestorage2::mount::prepare_mountpoint(mp, force).map_err(|m| fail(1, m))?;
    let s = if read_only { backup::open_read_only(storage)? } else { open_rw(storage)? };
    let m = mp.display();
    let fs2 = std::env::args().next().unwrap_or_else(|| "fs2".into());
    // Hints that work on this storage: objects only if it has some, writes only if writable.
    let mut hints = format!("  ls {m}\n  cat {m}/head/at\n  ls -l {m}/head\n");
    if let Some(o) = s.list(Oid(0), Tid::MAX, 1)?.first() {
        hints += &format!("  cat {m}/head/{}\n  ls {m}/history/{}\n  cat {m}/transactions/*/info\n", o.oid, o.oid);
        hints += &format!("  T=$(cat {m}/head/at); ls -l {m}/@$T       # one snapshot, pinned\n");
    }
    hints += &format!("  cp -a {m}/segments/seg-000001 /tmp/    # a segment and its info: a backup\n");
    if !read_only {
        hints += &format!(
            "  mkdir {m}/txn/t; echo hello > {m}/txn/t/0000000000000009; echo commit > {m}/txn/t/ctl\n  \
             cat {m}/head/0000000000000009\n"
        );
    }
    hints += &format!("  cat {m}/README                # the tree and how writing works");
    filestorage2::mount::run(s, mp, mopts, || {
        println!(
            "mounted {} at {m} ({}); Ctrl-C or `{fs2} umount {m}` unmounts.\nTry, in another terminal:\n{hints}",
            storage.display(),
            if read_only { "read-only snapshot" } else { "writable: mkdir txn/NAME to begin a transaction" }
        );
    })
    .map_err(|msg| fail(1, msg))?;
    println!("unmounted {m}");
    Ok(())
}

/// Create the demo storage in `dir`: six transactions in two segments.
fn build_demo(dir: &Path) -> Result<(), Failure> {
    let s = Storage::create(dir, Options::default())?;
    let mut t = s.begin();
    t.set_user(b"demo");
    t.set_description(b"initial objects");
    t.store(Oid(0), b"root: {'greeting': <oid 0000000000000001>, 'counter': <oid 0000000000000002>}")?;
    t.store(Oid(1), b"hello, world\n")?;
    t.store(Oid(2), b"0")?;
    t.commit()?;
    for i in 1..=3 {
        let mut t = s.begin();
        t.set_user(b"demo");
        t.set_description(format!("increment counter to {i}").as_bytes());
        t.store(Oid(2), i.to_string().as_bytes())?;
        t.commit()?;
    }
    s.rotate()?;
    let mut t = s.begin();
    t.set_user(b"gc");
    t.set_description(b"store oid 3, soon unreachable");
    t.store(Oid(3), b"garbage")?;
    t.commit()?;
    let mut t = s.begin();
    t.set_user(b"gc");
    t.set_description(b"external garbage collector: delete unreachable oid 3");
    t.delete(Oid(3))?;
    t.commit()?;
    Ok(())
}

fn demo(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let fresh = !dir.exists() || std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
    if fresh {
        build_demo(dir)?;
        w(writeln!(out, "created demo storage {} with 6 transactions in 2 segments\n", dir.display()))?;
    }
    w(writeln!(out, "$ fs2 info {}", dir.display()))?;
    info(out, dir, true)?;
    w(writeln!(out, "\n$ fs2 dump {}", dir.display()))?;
    dump(out, dir, None, None)?;
    let d = dir.display();
    w(writeln!(
        out,
        "\nTry:\n  fs2 ls {d}\n  fs2 cat {d} 0000000000000001\n  fs2 history {d} 0000000000000002\n  \
         echo new > /tmp/x && fs2 commit {d} 0000000000000001=/tmp/x --user me\n  fs2 check {d}\n  \
         fs2 mount {d} fs2-mnt    # browse it as files; Ctrl-C unmounts\n\
         (fs2 is target/release/fs2; or use `cargo run --release -- <command>`)"
    ))?;
    Ok(())
}

/// Progress of a ZODB scan on stderr (a terminal only).
fn phase_progress(p: &mut Progress) -> impl FnMut(filestorage2::zodb::gc::Phase, u64, u64) + '_ {
    move |ph, done, total| {
        p.what = match ph {
            filestorage2::zodb::gc::Phase::Scan => "reading objects",
            filestorage2::zodb::gc::Phase::Mark => "marking reachable objects",
        };
        p.update_count(done, total)
    }
}

fn analyze(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = open_ro(dir)?;
    let mut p = Progress::new("reading objects");
    let hist = filestorage2::zodb::scan::class_histogram(&s, Tid::MAX, &mut |n| p.update_count(n, 0))?;
    drop(p);
    let (count, bytes) = hist.iter().fold((0, 0), |a, c| (a.0 + c.count, a.1 + c.bytes));
    w(writeln!(out, "current objects as of {}: {count}, {bytes} bytes", s.last_tid()))?;
    w(writeln!(out, "{:<50} {:>10} {:>6} {:>14} {:>6} {:>10}", "Class Name", "Count", "%", "Bytes", "%", "Avg"))?;
    let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 };
    for c in &hist {
        w(writeln!(
            out,
            "{:<50} {:>10} {:>5.1}% {:>14} {:>5.1}% {:>10}",
            c.class,
            c.count,
            pct(c.count, count),
            c.bytes,
            pct(c.bytes, bytes),
            c.bytes / c.count.max(1)
        ))?;
    }
    Ok(())
}

fn refs(out: &mut impl Write, dir: &Path, oid: Oid) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = open_ro(dir)?;
    let at = s.last_tid();
    let Some((tid, data)) = s.load_at(oid, at)? else {
        return Err(fail(3, format!("oid {oid} does not exist (or is deleted); `fs2 history` lists its revisions")));
    };
    match filestorage2::zodb::read_record(&data) {
        Ok(r) => {
            w(writeln!(out, "{oid} class={} tid={tid}", r.class))?;
            w(writeln!(out, "references ({}):", r.refs.len()))?;
            for x in &r.refs {
                let gone = if s.load_at(x.oid, at)?.is_none() && x.is_strong() { " MISSING" } else { "" };
                w(writeln!(out, "  {x}{gone}"))?;
            }
        }
        Err(e) => w(writeln!(out, "{oid} tid={tid}: {e}"))?,
    }
    let mut p = Progress::new("reading objects");
    let from = filestorage2::zodb::scan::referrers(&s, oid, at, &mut |n| p.update_count(n, 0))?;
    drop(p);
    w(writeln!(out, "referenced by ({}):", from.len()))?;
    for (o, r) in &from {
        let kind = r.to_string();
        let kind = kind.strip_prefix(&oid.to_string()).unwrap_or("");
        w(writeln!(out, "  {o}{kind}"))?;
    }
    Ok(())
}

fn check_refs(out: &mut impl Write, dir: &Path) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = open_ro(dir)?;
    let mut p = Progress::new("reading objects");
    // Problems as found (at most 1000 lines shown; all counted).
    let lines = std::cell::RefCell::new(Vec::new());
    let note = |l: String| {
        let mut v = lines.borrow_mut();
        if v.len() < 1000 {
            v.push(l);
        }
    };
    let r = filestorage2::zodb::scan::dangling(
        &s,
        s.last_tid(),
        &mut phase_progress(&mut p),
        &mut |from, to| note(format!("problem: dangling reference: oid {from} references {to}, which does not exist")),
        &mut |oid, why| note(format!("problem: not a ZODB record: oid {oid}: {why}")),
    )?;
    drop(p);
    for l in lines.borrow().iter() {
        w(writeln!(out, "{l}"))?;
    }
    w(writeln!(
        out,
        "references: {} objects, {} references, {} dangling, {} not ZODB records",
        r.objects, r.references, r.dangling, r.unreadable
    ))?;
    if r.dangling > 0 || r.unreadable > 0 {
        w(writeln!(out, "damaged: {} problem(s) in {}", r.dangling + r.unreadable, dir.display()))?;
        return Err(fail(5, ""));
    }
    Ok(())
}

fn gc(out: &mut impl Write, dir: &Path, dry_run: bool) -> Result<(), Failure> {
    let w = |r: std::io::Result<()>| r.map_err(|e| fail(1, format!("writing output: {e}")));
    let s = if dry_run { open_ro(dir)? } else { open_rw(dir)? };
    let mut p = Progress::new("reading objects");
    let mut listed = Vec::new();
    let mut io_err = None;
    let report = filestorage2::zodb::gc::collect(
        &s,
        filestorage2::zodb::gc::GcOptions {
            dry_run,
            on_garbage: &mut |oid| {
                if dry_run {
                    if let Err(e) = writeln!(out, "{oid}") {
                        io_err.get_or_insert(e);
                    }
                } else {
                    listed.push(oid);
                }
            },
            progress: &mut phase_progress(&mut p),
            before_commit: &mut || {},
        },
    )?;
    drop(p);
    if let Some(e) = io_err {
        return Err(fail(1, format!("writing output: {e}")));
    }
    let summary = format!(
        "{} objects as of {}: {} reachable, {} garbage{}",
        report.objects,
        report.base,
        report.reachable,
        report.garbage,
        if report.unreadable_garbage > 0 {
            format!(" ({} of them not ZODB records)", report.unreadable_garbage)
        } else {
            String::new()
        }
    );
    match report.tid {
        Some(tid) => w(writeln!(out, "{summary}; deleted in transaction {tid}"))?,
        None if dry_run => eprintln!("{summary} (dry run: nothing deleted)"),
        None => w(writeln!(out, "{summary}; nothing to delete"))?,
    }
    Ok(())
}

fn undo(out: &mut impl Write, dir: &Path, tid: Tid) -> Result<(), Failure> {
    let s = open_rw(dir)?;
    let mut t = s.begin();
    let oids = t.undo(tid).map_err(|e| match e {
        Error::Conflict { oid, tid: newer } => fail(
            4,
            format!("cannot undo {tid}: object {oid} was changed after it (by transaction {newer}); nothing written"),
        ),
        e => e.into(),
    })?;
    t.set_user(b"fs2 undo");
    t.set_description(format!("undo {tid}").as_bytes());
    let new = t.commit()?;
    writeln!(out, "undid {tid}: {} objects restored in transaction {new}", oids.len())
        .map_err(|e| fail(1, format!("writing output: {e}")))
}
