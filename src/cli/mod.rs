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

mod archive;
mod daemon;
mod inspect;
mod output;
mod write;
mod zodb;

use archive::*;
use daemon::*;
use inspect::*;
use output::*;
use write::*;
use zodb::*;

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
    s.strip_suffix(".fs2").unwrap_or(s).parse().map_err(|e: filestorage2::ParseError| e.to_string())
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
        Cmd::Ls { dir, at } => ls(&mut out, &dir, at)?,
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
        Cmd::Check { dir, repair, salvage, refs } => check_cmd(&mut out, &dir, repair, salvage, refs)?,
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
