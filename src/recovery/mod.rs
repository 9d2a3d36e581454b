//! Open-time recovery: walk the chain from the newest segment, finish an interrupted
//! rotation, scan the active segment (dropping an unfinished tail), and open each past
//! segment cheaply (rebuilding a lost index from its data, with a warning).
//!
//! Torn tail or damage? A commit writes its batch, then syncs; a crash can leave any
//! subset of the un-synced batch on disk, so an invalid record may be followed by valid
//! ones that were never acknowledged. Each transaction records `durable_end`, the offset
//! below which everything was synced when it was written. An invalid record at `X` is a
//! torn tail unless some valid transaction after it has `durable_end > X`: then `X` was
//! acknowledged and is damaged, and open refuses rather than drop committed data.
//!
//! Read-only opens repair nothing and may run beside a writer in another process:
//! `open_snapshot` tells the writer's work in progress from a crash's leftovers.

use crate::archive::{archive_dir, move_to_archive, STRAY_DIR};
use crate::chain::{Active, Entry, Options, View};
use crate::error::{Error, Result};
use crate::format::{Header, IndexHeader, Trailer, HEADER_SIZE, TRAILER_SIZE};
use crate::segment::{read_trailer, seal, PastSegment, Scanner, SealStats, SegmentFile, Step};
use crate::types::{Oid, SegmentName, Tid};
use crate::vfs::Vfs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod active;
mod past;

use active::*;
use past::*;
pub(crate) struct Opened {
    pub view: View,
    pub alignment: u64,
    pub max_oid: Option<Oid>,
    pub warnings: Vec<String>,
    /// Read-only opens: what a live writer in another process passes through (a write or
    /// a seal in progress at the end of the active segment, the files of a merge in
    /// progress, a file being created); a leftover of a crash when no writer holds the
    /// lock (see `open_snapshot`).
    pub unsettled: Vec<String>,
    /// Files in the directory named like segments that are not part of the chain.
    pub strays: Vec<PathBuf>,
    /// The unreadable tail of the active segment a read-only open ignored.
    pub ignored_tail: Option<IgnoredTail>,
    /// Damage that reads work around and writes must not build on (one line each).
    pub damage: Vec<String>,
    /// What this open's repairs may have lost (e.g. an index rebuilt for an old segment
    /// that may have been cut at a record boundary): `check --repair` reports it.
    pub losses: Vec<String>,
}

/// An unreadable tail of the active segment that a read-only open ignored. A writer's
/// unfinished commit (a crash, or a commit in flight beside this reader) and damage to
/// the last transaction look alike (DESIGN.md, "Torn tail or damage"): reads answer as
/// of the transactions before it, and this says that they do. A writable open drops
/// such a tail (keeping its bytes in a `.dropped-<offset>` file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredTail {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

impl std::fmt::Display for IgnoredTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: ignored {} unreadable bytes at offset {} ({}): an unfinished commit or a damaged last \
             transaction; reads answer as of the transactions before it (read-only)",
            self.segment.display(),
            self.bytes,
            self.offset,
            self.reason
        )
    }
}

pub(crate) fn not_a_directory(dir: &Path) -> Error {
    Error::NotFound(format!("{} is not a directory, so not a storage; create one with `fs2 init`", dir.display()))
}

/// The segment a chain segment's damaged header slot should have named: the newest
/// segment in the directory older than `name`.
fn prev_from_dir(in_dir: &[SegmentName], name: SegmentName) -> Option<String> {
    in_dir.iter().filter(|n| n.last < name.first).max_by_key(|n| n.last).map(|n| n.file_name())
}

/// Open a chain segment; a damaged header costs only the header: its fixed part comes
/// from another segment of the storage, its previous-segment reference from a slot that
/// verifies (or else from the directory), and the damage is reported.
fn open_segment(
    vfs: &dyn Vfs,
    path: &Path,
    write: bool,
    template: Option<&Header>,
    in_dir: &[SegmentName],
    damage: &mut Vec<String>,
) -> Result<SegmentFile> {
    let e = match SegmentFile::open(vfs, path, write) {
        Ok(seg) => return Ok(seg),
        Err(e) if e.is_corruption() => e,
        Err(e) => return Err(e),
    };
    let name = path.file_name().and_then(|n| n.to_str()).and_then(SegmentName::from_file_name);
    let file = vfs.open(path, write).map_err(|e| Error::io(path, "open segment", e))?;
    // What is left of the header (a file cut inside it reads as zeros beyond its end).
    let mut b = vec![0u8; HEADER_SIZE];
    let have = file.len().map_err(|e| Error::io(path, "stat segment", e))?.min(HEADER_SIZE as u64) as usize;
    let (Some(name), Ok(())) = (name, file.read_exact_at(&mut b[..have], 0)) else { return Err(e) };
    let Some(template) = template.cloned() else { return Err(e) };
    let mut header = Header::from_slots(&b, &template, name).unwrap_or_else(|| Header {
        name,
        prev: prev_from_dir(in_dir, name),
        generation: 1,
        sealed_len: None,
        ..template
    });
    // The lost version fixes the form of the records: segments of both versions share
    // a storage after an upgrade, so ask the first transaction rather than the template.
    if let Some(v) = crate::segment::probe_version(&*file, path) {
        header.version = v;
    }
    damage.push(format!(
        "{e}; the header is damaged: read with the storage's settings and previous segment {}; \
         `fs2 check --repair --salvage` writes it back",
        header.prev.as_deref().unwrap_or("(none)")
    ));
    let mut seg = SegmentFile::new(path.to_path_buf(), header, file);
    seg.header_damaged = true;
    Ok(seg)
}

/// Where the segment a header's `prev` names lives.
pub(crate) fn resolve(dir: &Path, prev: &str) -> PathBuf {
    let p = Path::new(prev);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// What a file named like a segment holds, judged by its header alone.
enum Probe {
    /// A segment header (CRC verified) whose name matches the file name.
    Segment(Header),
    /// Not a segment: shorter than a header, or a header that does not decode.
    NotSegment { why: String, len: u64 },
}

fn probe(vfs: &dyn Vfs, path: &Path) -> Result<Probe> {
    match SegmentFile::open(vfs, path, false) {
        Ok(seg) => Ok(Probe::Segment(seg.header)),
        Err(e) if e.is_corruption() => {
            let len = vfs.open(path, false).and_then(|f| f.len()).map_err(|e| Error::io(path, "stat", e))?;
            Ok(Probe::NotSegment { why: e.detail(), len })
        }
        // Unreadable: a chain segment like that fails the chain walk with this error; a
        // file outside the chain is a stray. (A file that vanished is a race with a writer:
        // the caller retries.)
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            // Length unknown: it may be the head (see `choose_head`).
            Ok(Probe::NotSegment { why: format!("unreadable: {source}"), len: u64::MAX })
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn open_chain(dir: &Path, opts: &Options) -> Result<Opened> {
    let vfs = &*opts.vfs;
    let writable = !opts.read_only;
    let names = vfs.list(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::NotFound(format!("{} does not exist; create a storage with `fs2 init`", dir.display()))
        }
        std::io::ErrorKind::NotADirectory => not_a_directory(dir),
        _ => Error::io(dir, "list", e),
    })?;
    let mut warnings = Vec::new();
    let mut unsettled = Vec::new();
    if writable {
        for n in names.iter().filter(|n| n.ends_with(".fs2.tmp")) {
            let p = dir.join(n);
            vfs.remove(&p).map_err(|e| Error::io(&p, "remove unfinished", e))?;
            warnings.push(format!("{}: removed an unfinished new segment", p.display()));
        }
        // A name seen here may not be durable yet (a crash or a failed sync between a
        // rename and its directory sync): make it durable before commits go into it.
        vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?;
    }
    let mut in_dir: Vec<SegmentName> = names.iter().filter_map(|n| SegmentName::from_file_name(n)).collect();
    // Newest first.
    in_dir.sort_by_key(|n| std::cmp::Reverse((n.last, n.first)));
    if in_dir.is_empty() {
        return Err(Error::NotFound(format!(
            "{} holds no segment files: not a filestorage2 storage; create one with `fs2 init`",
            dir.display()
        )));
    }
    let mut probes = Vec::with_capacity(in_dir.len());
    for n in &in_dir {
        probes.push(probe(vfs, &dir.join(n.file_name()))?);
    }
    let head = choose_head(vfs, dir, &in_dir, &probes)?;
    // For damaged headers: the storage's settings (from its newest valid segment header),
    // and the files that may be its segments (not strays: a valid header of this storage,
    // or a header-sized file whose header does not decode, which may be damage).
    let ours = storage_id_of(&probes);
    let settings = probes.iter().find_map(|p| match p {
        Probe::Segment(h) if Some(h.storage_id) == ours => Some(h.clone()),
        _ => None,
    });
    let candidates: Vec<SegmentName> = in_dir
        .iter()
        .zip(&probes)
        .filter(|(_, p)| match p {
            Probe::Segment(h) => Some(h.storage_id) == ours,
            Probe::NotSegment { len, .. } => *len >= HEADER_SIZE as u64,
        })
        .map(|(n, _)| *n)
        .collect();

    // The chain, newest first.
    let mut chain: Vec<SegmentFile> = Vec::new();
    let mut damage = Vec::new();
    let mut losses = Vec::new();
    let mut path = dir.join(head.file_name());
    loop {
        let write = writable && chain.is_empty();
        let template = chain.last().map(|s| &s.header).or(settings.as_ref());
        let seg = match open_segment(vfs, &path, write, template, &candidates, &mut damage) {
            // The newer segment's current slot is damaged and the older slot names a
            // segment merged away since (item 9): the damage is that slot.
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && chain.last().is_some_and(slot_damaged) =>
            {
                let newer = chain.last_mut().expect("checked");
                let prev = prev_from_dir(&candidates, newer.header.name);
                damage.push(format!(
                    "{}: the current header slot is damaged and the other one names {}, which is gone \
                     (merged away); read with previous segment {} instead; `fs2 check --repair --salvage` \
                     rewrites the slot",
                    newer.path.display(),
                    path.display(),
                    prev.as_deref().unwrap_or("(none)")
                ));
                newer.forget_sealed_len(prev.clone());
                match prev {
                    Some(p) => {
                        path = resolve(dir, &p);
                        continue;
                    }
                    None => break,
                }
            }
            // An archive of some segments only: its history starts at the oldest one present.
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && vfs.partial_chain() && !chain.is_empty() =>
            {
                log::info!("{}: not present; the history starts after it", path.display());
                break;
            }
            other => other?,
        };
        if let Some(newer) = chain.last() {
            if seg.header.storage_id != newer.header.storage_id {
                return Err(Error::corrupted(&path, 0, "this segment belongs to another storage (storage id differs)"));
            }
            if seg.header.name.last >= newer.header.name.first {
                return Err(Error::corrupted(
                    &newer.path,
                    0,
                    "the previous-segment reference does not go back in the chain",
                ));
            }
        }
        let prev = seg.header.prev.clone();
        chain.push(seg);
        match prev {
            None => break,
            Some(p) => path = resolve(dir, &p),
        }
    }
    let storage_id = chain[0].header.storage_id;
    // A segment moved elsewhere whose old copy in the directory was not removed yet.
    // Compared as files (device and inode), never as path text; removed only when it is
    // a verified copy of what the chain holds.
    // (Read-only opens leave it alone, as they leave everything.)
    // With damage found the chain may have been guessed: nothing is removed then.
    for seg in chain.iter().filter(|_| writable && damage.is_empty()) {
        let old = dir.join(seg.header.name.file_name());
        if !in_dir.contains(&seg.header.name) || vfs.same_file(&seg.path, &old) {
            continue;
        }
        match same_segment(vfs, seg, &old) {
            Ok(()) => {
                vfs.remove(&old).map_err(|e| Error::io(&old, "remove the old copy of a moved segment", e))?;
                vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?;
                warnings.push(format!(
                    "{}: moved to {}; removed the old copy (verified identical)",
                    old.display(),
                    seg.path.display()
                ));
            }
            Err(why) => warnings.push(format!(
                "{}: the chain holds this segment at {}, and this file is not a verified copy of it ({why}); \
                 kept: compare the two and remove one by hand",
                old.display(),
                seg.path.display()
            )),
        }
    }
    let mut chain_names: Vec<SegmentName> = chain.iter().map(|s| s.header.name).collect();
    // Files a chain header links to are never strays, even if they cannot be opened:
    // a damaged chain segment is damage.
    let linked: Vec<PathBuf> = chain.iter().filter_map(|s| s.header.prev.as_deref().map(|p| resolve(dir, p))).collect();
    let alignment = chain[0].header.alignment;

    let head = chain.remove(0);
    let mut sealed_head = None;
    let mut ignored_tail = None;
    let mut active = if read_trailer(&head).is_ok() {
        // A rotation sealed this segment and stopped before starting the next one.
        let next = head.header.successor();
        let made = if writable {
            warnings.push(format!("{}: finished an interrupted rotation", head.path.display()));
            // The seal may not have reached the disk: make the segment durable before the
            // chain goes on without it (a past segment is never truncated again).
            head.file.sync().map_err(|e| Error::io(&head.path, "sync", e))?;
            head.record_sealed_len(head.effective_len()?)?;
            chain_names.push(next.name);
            Some(SegmentFile::create(vfs, dir, next)?)
        } else {
            None
        };
        sealed_head = Some(head);
        match made {
            Some(seg) => Some(scan_active(vfs, seg, writable, &mut warnings, &mut unsettled, &mut ignored_tail)?),
            None => None,
        }
    } else {
        Some(scan_active(vfs, head, writable, &mut warnings, &mut unsettled, &mut ignored_tail)?)
    };

    let mut pasts = Vec::new();
    for seg in sealed_head.into_iter().chain(chain) {
        pasts.extend(open_past(seg, opts, &mut warnings, &mut damage, &mut losses)?);
    }
    // Files named like segments that are not in the chain. Of this storage: leftovers of
    // an interrupted merge. Replaced: inside a chain segment's range, or appended to one
    // (semi-sequential merge). Unswitched: a merge result that never got into the chain.
    // Anything else (not a segment, another storage's, not linked) is a stray: ignored
    // and never deleted; `fs2 check --repair` moves it aside.
    let appended: Vec<SegmentName> = pasts.iter().filter_map(|p| p.trailer.appended.map(|a| a.source)).collect();
    // With a damaged header the chain may have been guessed from the directory: move or
    // remove nothing then.
    let tidy = writable && damage.is_empty();
    let mut strays = Vec::new();
    let mut chain_synced = false;
    for (n, pr) in in_dir.iter().zip(&probes).filter(|(n, _)| !chain_names.contains(n)) {
        let path = dir.join(n.file_name());
        if linked.iter().any(|l| *l == path || vfs.same_file(l, &path)) {
            continue;
        }
        let stray =
            |why: String, strays: &mut Vec<PathBuf>, warnings: &mut Vec<String>, unsettled: &mut Vec<String>| {
                let line = format!(
                    "{}: not part of this storage's chain ({why}); ignored (`fs2 check --repair` moves it to {})",
                    path.display(),
                    dir.join(STRAY_DIR).display()
                );
                // Read-only, it may be a file a writer is creating right now.
                if writable {
                    warnings.push(line)
                } else {
                    unsettled.push(line)
                }
                strays.push(path.clone());
            };
        match pr {
            Probe::NotSegment { why, .. } => {
                stray(format!("not a segment: {why}"), &mut strays, &mut warnings, &mut unsettled)
            }
            Probe::Segment(h) if h.storage_id != storage_id => {
                stray("a segment of another storage".into(), &mut strays, &mut warnings, &mut unsettled)
            }
            Probe::Segment(_) => {
                let replaced =
                    chain_names.iter().any(|c| c.first <= n.first && n.last <= c.last) || appended.contains(n);
                let unswitched = chain_names.iter().any(|c| n.first <= c.first && c.last <= n.last);
                if replaced && tidy {
                    // The chain that replaced it may not be durable yet (a merge whose
                    // switch failed to sync, then this open read the written slot): make
                    // it durable before the replaced file leaves, or a power cut could
                    // bring back the old chain without its file.
                    if !chain_synced {
                        sync_chain(active.as_ref(), &pasts)?;
                        chain_synced = true;
                    }
                    // Not in the chain any more: archiving it may wait for the next open.
                    let archive = archive_dir(dir, opts.archive_dir.as_deref());
                    match move_to_archive(vfs, &archive, &path) {
                        Ok(to) => warnings.push(format!("{}: merged away; moved to {}", path.display(), to.display())),
                        Err(e) => warnings.push(format!(
                            "{}: merged away, but could not move it to the archive ({e}); kept in place \
                             (the next writable open retries)",
                            path.display()
                        )),
                    }
                } else if unswitched && !replaced && tidy {
                    // Derived from segments the chain still holds: nothing is lost.
                    vfs.remove(&path).map_err(|e| Error::io(&path, "remove unfinished merge result", e))?;
                    vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?;
                    warnings.push(format!("{}: a merge result never put in the chain; removed", path.display()));
                } else if (replaced || unswitched) && writable {
                    // Damage found: the chain may have been guessed; tidied once it is repaired.
                    warnings.push(format!(
                        "{}: a merge's segment outside the chain; kept while the storage is damaged",
                        path.display()
                    ));
                } else if replaced || unswitched {
                    // Read-only: a merge in progress, or interrupted (the next writable open ends it).
                    unsettled.push(format!("{}: a merge's segment outside the chain; ignored", path.display()));
                } else {
                    stray("not linked from the chain".into(), &mut strays, &mut warnings, &mut unsettled);
                }
            }
        }
    }
    // Lost data (see `lost_part`) is newer than every older segment's transactions.
    for i in 0..pasts.len() {
        if pasts[i].lost_after == Some(Tid::ZERO) && pasts[i].trailer.txn_count == 0 {
            let older = pasts[i + 1..].iter().find(|p| p.trailer.txn_count > 0).map(|p| p.trailer.last_tid);
            if let Some(p) = Arc::get_mut(&mut pasts[i]) {
                p.lost_after = Some(older.unwrap_or(Tid::ZERO));
            }
        }
    }
    for w in pasts.windows(2) {
        let (newer, older) = (&w[0].trailer, &w[1].trailer);
        if newer.txn_count > 0 && older.txn_count > 0 && newer.first_tid <= older.last_tid {
            return Err(Error::corrupted(&w[0].seg.path, 0, "transaction ids overlap the previous segment's"));
        }
    }
    let past_last = pasts.iter().find(|p| p.trailer.txn_count > 0).map(|p| p.trailer.last_tid);
    let active_last = active.as_ref().filter(|a| a.stats.txn_count > 0).map(|a| a.stats.last_tid);
    if let (Some(a), Some(p)) = (active.as_ref().filter(|a| a.stats.txn_count > 0), past_last) {
        if a.stats.first_tid <= p {
            return Err(Error::corrupted(&a.seg.path, 0, "transaction ids overlap the previous segment's"));
        }
    }
    let last_tid = active_last.or(past_last).unwrap_or(Tid::ZERO);
    // A damaged transaction first in the active segment is newer than the past ones.
    if let (Some(a), Some(p)) = (active.as_mut(), past_last) {
        for d in &mut a.damaged {
            d.after = d.after.max(p);
        }
    }
    let max_oid = active
        .as_ref()
        .and_then(|a| a.max_oid())
        .max(pasts.iter().filter(|p| p.index.len() > 0).map(|p| p.trailer.last_oid).max());
    if let Some(a) = &active {
        damage.extend(a.damaged.iter().map(|d| {
            format!(
                "{}; {}; the objects it may hold answer with an error, writes are refused; \
                 `fs2 check --repair --salvage` moves it aside",
                d.describe(&a.seg.path),
                d.why
            )
        }));
    }
    warnings.extend(damage.iter().cloned());
    Ok(Opened {
        view: View { active, pasts, last_tid },
        alignment,
        max_oid,
        warnings,
        damage,
        losses,
        unsettled,
        strays,
        ignored_tail,
    })
}

/// Whether `seg`'s header has a slot that does not verify.
fn slot_damaged(seg: &SegmentFile) -> bool {
    seg.read(0, HEADER_SIZE).is_ok_and(|b| Header::damaged_slot(&b))
}

/// How many times at most a read-only open starts over before it reports what it found.
const SNAPSHOT_ATTEMPTS: u32 = 10;

/// Open read-only, beside a writer that may be working in another process right now.
///
/// The chain is read from the newest segment back, one header at a time, while the writer
/// may append, seal, rotate, and switch and archive merged segments. Each of those leaves
/// the files in a state a reader can recognise and that does not last: a record being
/// written, a file shorter than when its length was read, a predecessor already moved to
/// the archive, a merge's files outside the chain. Then:
/// - if everything read was whole and only its end is unsettled (a write or seal in
///   progress, a merge's files outside the chain) and a writer holds the lock, the
///   snapshot stands: it is a consistent prefix, and the rest is the writer's business;
/// - otherwise the open starts over from the directory listing. What is reported (an
///   error, or the unsettled state as a warning) is only what two attempts in a row found
///   alike, the second begun after no writer held the lock: only a writer changes the
///   files, so that is what they hold, a crash's leftover or damage.
pub(crate) fn open_snapshot(dir: &Path, opts: &Options) -> Result<Opened> {
    let mut quiet_since: Option<String> = None;
    // The damage the previous attempt found: damage repeats, a race does not.
    let mut damage_before: Option<Vec<String>> = None;
    for attempt in 1..=SNAPSHOT_ATTEMPTS {
        let r = open_chain(dir, opts);
        let found = match &r {
            Ok(o) if o.unsettled.is_empty() && o.damage.is_empty() => return r,
            Ok(o) => o.unsettled.iter().chain(&o.damage).cloned().collect::<Vec<_>>().join("\n"),
            Err(e) if !may_be_a_race(e) => return r,
            Err(e) => e.to_string(),
        };
        // Damage (contained: the open succeeded) found alike by two attempts in a row is
        // reported, writer or not; once found, it is not looked for again.
        let damage_settled = match &r {
            Ok(o) => o.damage.is_empty() || damage_before.as_ref() == Some(&o.damage),
            Err(_) => false,
        };
        damage_before = r.as_ref().ok().map(|o| o.damage.clone());
        let writer = opts.vfs.writer_active(dir);
        match r {
            Ok(mut o) if writer && damage_settled => {
                // The writer's business (a commit in flight is not an ignored tail).
                o.unsettled.clear();
                o.ignored_tail = None;
                return Ok(o);
            }
            Ok(mut o) if quiet_since.as_ref() == Some(&found) || attempt == SNAPSHOT_ATTEMPTS => {
                o.warnings.append(&mut o.unsettled);
                return Ok(o);
            }
            Err(e) if quiet_since.as_ref() == Some(&found) || attempt == SNAPSHOT_ATTEMPTS => return Err(e),
            _ => log::debug!("read-only open of {}: {found}; starting over", dir.display()),
        }
        if writer {
            quiet_since = None;
            std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(5)));
        } else {
            quiet_since = Some(found);
        }
    }
    unreachable!("the last attempt returns")
}

/// Errors a read-only open can meet because a writer changed the files while it read
/// them: a file gone (archived or moved), a file shorter than read before, bytes that do
/// not decode (read half-written). Real damage repeats on every attempt.
fn may_be_a_race(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => {
            matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof)
        }
        e => e.is_corruption(),
    }
}

/// Sync every file of the chain (its header slots included).
fn sync_chain(active: Option<&Active>, pasts: &[Arc<PastSegment>]) -> Result<()> {
    let files = active.map(|a| &a.seg).into_iter().chain(pasts.iter().map(|p| &p.seg));
    let mut last: Option<&Arc<SegmentFile>> = None;
    for seg in files {
        if last.is_some_and(|l| Arc::ptr_eq(l, seg)) {
            continue;
        }
        seg.file.sync().map_err(|e| Error::io(&seg.path, "sync", e))?;
        last = Some(seg);
    }
    Ok(())
}

/// The storage id most segment files in the directory carry (on a tie, the oldest
/// file's); `None` if no file has a valid header.
fn storage_id_of(probes: &[Probe]) -> Option<u128> {
    let mut ids: Vec<(u128, usize, usize)> = Vec::new(); // (id, count, position of the oldest)
    for (i, p) in probes.iter().enumerate() {
        if let Probe::Segment(h) = p {
            match ids.iter_mut().find(|e| e.0 == h.storage_id) {
                Some(e) => (e.1, e.2) = (e.1 + 1, i),
                None => ids.push((h.storage_id, 1, i)),
            }
        }
    }
    ids.iter().max_by_key(|e| (e.1, e.2)).map(|e| e.0)
}

/// The newest segment of the chain. Files that are not segments of this storage (no
/// valid header, another storage id) are skipped: a stray file must not take the storage
/// offline. The storage id is the one most segment files in the directory carry (on a
/// tie, the oldest file's). One exception keeps damage from passing for a stray: a file
/// without a valid header named as the successor of a sealed newest segment may be the
/// active segment with a damaged header; it stays the head, and opening it reports it.
fn choose_head(vfs: &dyn Vfs, dir: &Path, in_dir: &[SegmentName], probes: &[Probe]) -> Result<SegmentName> {
    let Some(ours) = storage_id_of(probes) else {
        // Nothing here has a valid header: open the newest file to report why.
        return Ok(in_dir[0]);
    };
    let (i, newest) = probes
        .iter()
        .enumerate()
        .find(|(_, p)| matches!(p, Probe::Segment(h) if h.storage_id == ours))
        .map(|(i, _)| (i, in_dir[i]))
        .expect("found above");
    let successor = SegmentName::single(newest.last + 1);
    let damaged_successor = in_dir[..i]
        .iter()
        .zip(&probes[..i])
        .any(|(n, p)| *n == successor && matches!(p, Probe::NotSegment { len, .. } if *len >= HEADER_SIZE as u64));
    if damaged_successor {
        let seg = SegmentFile::open(vfs, &dir.join(newest.file_name()), false)?;
        if read_trailer(&seg).is_ok() {
            return Ok(successor);
        }
    }
    Ok(newest)
}

/// Whether the file at `other` is a verified copy of chain segment `seg`: the same
/// storage id, name and sealed length, and the same bytes up to that length. Runs only
/// when a moved segment's old copy is found (an interrupted move), so reading both
/// files whole is acceptable. `Err` says how they differ.
fn same_segment(vfs: &dyn Vfs, seg: &SegmentFile, other: &Path) -> std::result::Result<(), String> {
    let o = SegmentFile::open(vfs, other, false).map_err(|e| e.to_string())?;
    if o.header.storage_id != seg.header.storage_id || o.header.name != seg.header.name {
        return Err("another storage's or another segment's header".into());
    }
    let len = seg.effective_len().map_err(|e| e.to_string())?;
    let olen = o.effective_len().map_err(|e| e.to_string())?;
    if len != olen {
        return Err(format!("{olen} bytes, the chain's copy has {len}"));
    }
    read_trailer(seg).map_err(|e| format!("the chain's copy is not sealed: {e}"))?;
    // The header slots may differ (the chain's copy may have been relinked since): compare
    // the fixed header and everything after the slots.
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(1 << 20) as usize;
        let (mut a, mut b) = (seg.read(at, n).map_err(|e| e.to_string())?, o.read(at, n).map_err(|e| e.to_string())?);
        if at == 0 {
            let slots = Header::slot_offset(1) as usize..HEADER_SIZE - 8;
            a[slots.clone()].fill(0);
            b[slots].fill(0);
        }
        if a != b {
            return Err("its bytes differ".into());
        }
        at += n as u64;
    }
    Ok(())
}

/// How many times at most a scan of the active segment starts over (see `scan_active`).
const MAX_SCAN_RESTARTS: u32 = 100;
