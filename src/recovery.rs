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

use crate::error::{Error, Result};
use crate::format::{Header, IndexHeader, Trailer, HEADER_SIZE, TRAILER_SIZE};
use crate::segment::{read_trailer, seal, PastSegment, Scanner, SealStats, SegmentFile, Step};
use crate::store::{Active, Entry, Options, View};
use crate::types::{Oid, SegmentName, Tid};
use crate::vfs::Vfs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) struct Opened {
    pub view: View,
    pub alignment: u64,
    pub max_oid: Option<Oid>,
    pub warnings: Vec<String>,
    /// Damage that reads work around and writes must not build on (one line each).
    pub damage: Vec<String>,
    /// What this open's repairs may have lost (e.g. an index rebuilt for an old segment
    /// that may have been cut at a record boundary): `check --repair` reports it.
    pub losses: Vec<String>,
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
    dir: &Path,
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
    let template = match template {
        Some(t) => t.clone(),
        None => match in_dir
            .iter()
            .filter(|n| **n != name)
            .find_map(|n| SegmentFile::open(vfs, &dir.join(n.file_name()), false).ok())
        {
            Some(other) => other.header,
            None => return Err(e),
        },
    };
    let header = Header::from_slots(&b, &template, name).unwrap_or_else(|| Header {
        name,
        prev: prev_from_dir(in_dir, name),
        generation: 1,
        sealed_len: None,
        ..template
    });
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

pub(crate) fn open_chain(dir: &Path, opts: &Options) -> Result<Opened> {
    let vfs = &*opts.vfs;
    let writable = !opts.read_only;
    let names = vfs.list(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::NotFound(format!("{} does not exist; create a storage with `fs2 init`", dir.display()))
        }
        _ => Error::io(dir, "list", e),
    })?;
    let mut warnings = Vec::new();
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
    let in_dir: Vec<SegmentName> = names.iter().filter_map(|n| SegmentName::from_file_name(n)).collect();
    let head = in_dir.iter().max_by_key(|n| (n.last, n.first)).ok_or_else(|| {
        Error::NotFound(format!(
            "{} holds no segment files: not a filestorage2 storage; create one with `fs2 init`",
            dir.display()
        ))
    })?;

    // The chain, newest first.
    let mut chain: Vec<SegmentFile> = Vec::new();
    let mut damage = Vec::new();
    let mut losses = Vec::new();
    let mut path = dir.join(head.file_name());
    loop {
        let write = writable && chain.is_empty();
        let template = chain.last().map(|s| &s.header);
        let seg = match open_segment(vfs, &path, write, template, &in_dir, dir, &mut damage) {
            // The newer segment's current slot is damaged and the older slot names a
            // segment merged away since (item 9): the damage is that slot.
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && chain.last().is_some_and(slot_damaged) =>
            {
                let newer = chain.last_mut().expect("checked");
                let prev = prev_from_dir(&in_dir, newer.header.name);
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
    // A segment moved elsewhere whose old copy was not removed yet.
    for seg in chain.iter().filter(|s| s.path != dir.join(s.header.name.file_name())) {
        let stale = dir.join(seg.header.name.file_name());
        if writable && damage.is_empty() && in_dir.contains(&seg.header.name) {
            vfs.remove(&stale).map_err(|e| Error::io(&stale, "remove the old copy of a moved segment", e))?;
            vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?;
            warnings.push(format!("{}: moved to {}; removed the old copy", stale.display(), seg.path.display()));
        }
    }
    let chain_names: Vec<SegmentName> = chain.iter().map(|s| s.header.name).collect();
    let alignment = chain[0].header.alignment;

    let head = chain.remove(0);
    let mut sealed_head = None;
    let mut active = if read_trailer(&head).is_ok() {
        // A rotation sealed this segment and stopped before starting the next one.
        let next = Header {
            name: SegmentName::single(head.header.name.last + 1),
            prev: Some(head.header.name.file_name()),
            generation: 1,
            sealed_len: None,
            ..head.header.clone()
        };
        let made = if writable {
            warnings.push(format!("{}: finished an interrupted rotation", head.path.display()));
            // The seal may not have reached the disk: make the segment durable before the
            // chain goes on without it (a past segment is never truncated again).
            head.file.sync().map_err(|e| Error::io(&head.path, "sync", e))?;
            head.record_sealed_len(head.effective_len()?)?;
            Some(SegmentFile::create(vfs, dir, next)?)
        } else {
            None
        };
        sealed_head = Some(head);
        match made {
            Some(seg) => Some(scan_active(vfs, seg, writable, &mut warnings)?),
            None => None,
        }
    } else {
        Some(scan_active(vfs, head, writable, &mut warnings)?)
    };

    let mut pasts = Vec::new();
    for seg in sealed_head.into_iter().chain(chain) {
        pasts.extend(open_past(seg, opts, &mut warnings, &mut damage, &mut losses)?);
    }
    // Segments in the directory but not in the chain: leftovers of an interrupted merge.
    // Replaced: inside a chain segment's range, or appended to one (semi-sequential
    // merge). Unswitched: a merge result that never got into the chain.
    let appended: Vec<SegmentName> = pasts.iter().filter_map(|p| p.trailer.appended.map(|a| a.source)).collect();
    // With a damaged header the chain may have been guessed from the directory: move or
    // remove nothing then.
    let tidy = writable && damage.is_empty();
    for n in in_dir.iter().filter(|n| !chain_names.contains(n)) {
        let path = dir.join(n.file_name());
        let replaced = chain_names.iter().any(|c| c.first <= n.first && n.last <= c.last) || appended.contains(n);
        let unswitched = chain_names.iter().any(|c| n.first <= c.first && c.last <= n.last);
        if replaced && tidy {
            let archive = opts.archive_dir.clone().unwrap_or_else(|| dir.join("archive"));
            let to = crate::merge::move_to_archive(vfs, &archive, &path)?;
            warnings.push(format!("{}: merged away; moved to {}", path.display(), to.display()));
        } else if unswitched && tidy {
            vfs.remove(&path).map_err(|e| Error::io(&path, "remove unfinished merge result", e))?;
            vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?;
            warnings.push(format!("{}: a merge result never put in the chain; removed", path.display()));
        } else {
            warnings.push(format!("{}: not in the chain; ignored", path.display()));
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
    Ok(Opened { view: View { active, pasts, last_tid }, alignment, max_oid, warnings, damage, losses })
}

/// Whether `seg`'s header has a slot that does not verify.
fn slot_damaged(seg: &SegmentFile) -> bool {
    seg.read(0, HEADER_SIZE).is_ok_and(|b| Header::damaged_slot(&b))
}

/// Scan the active segment: rebuild its index, drop an unfinished tail (when writable).
pub(crate) fn scan_active(
    vfs: &dyn Vfs,
    seg: SegmentFile,
    writable: bool,
    warnings: &mut Vec<String>,
) -> Result<Active> {
    let len = seg.len()?;
    let mut sc = Scanner::new(&seg, HEADER_SIZE as u64, len);
    // In file order; collected into the map in bulk at the end (later records win).
    let mut entries: Vec<(Oid, Entry)> = Vec::new();
    let mut stats = SealStats::default();
    let mut damaged = Vec::new();
    let why = loop {
        match sc.next_step()? {
            Step::Txn { offset, txn, .. } => {
                let tid = txn.header.tid;
                if stats.txn_count > 0 && tid <= stats.last_tid {
                    return Err(Error::corrupted(&seg.path, offset, "transaction ids do not increase"));
                }
                entries.extend(txn.records.iter().map(|(rel, h)| (h.oid, Entry { offset: offset + rel, tid })));
                note_txn(&mut stats, tid, txn.records.len());
            }
            Step::Skip => {}
            Step::End => break None,
            Step::Index => break Some("an unfinished index from an interrupted rotation".to_string()),
            Step::Invalid(why) => {
                let at = sc.pos;
                if let Some(p) = sc.durable_evidence_after(at)? {
                    // Damage, not an unfinished write (the transaction at `p` was written
                    // after `at` was durable): contain it and go on after it.
                    let end = sc.resync(at, p)?;
                    let after = if stats.txn_count > 0 { stats.last_tid } else { Tid::ZERO };
                    let mut d = crate::damage::analyse(&seg.read(at, (end - at) as usize)?, at, after);
                    d.why = format!(
                        "{why}; this is damage, not an unfinished write (the transaction at offset {p} \
                         was written after it was durable)"
                    );
                    damaged.push(d);
                    sc.pos = end;
                    continue;
                }
                break Some(why);
            }
        }
    };
    let end = sc.pos;
    if let Some(why) = why {
        if writable {
            // A torn write and a damaged last transaction look alike: keep the bytes.
            let kept = keep_tail(vfs, &seg, end, len)?;
            seg.file.set_len(end).map_err(|e| Error::io(&seg.path, "truncate", e))?;
            warnings.push(format!(
                "{}: dropped an unfinished tail of {} bytes at offset {end} ({why}); the bytes are kept in {}",
                seg.path.display(),
                len - end,
                kept.display()
            ));
        } else {
            warnings.push(format!(
                "{}: unfinished tail of {} bytes at offset {end} ({why}); ignored (read-only)",
                seg.path.display(),
                len - end
            ));
        }
    }
    if writable {
        // What the scan kept may not be durable yet (a process that died before its sync,
        // or bulk commits without `Storage::sync`), and new commits will record it as
        // durable (`durable_end`): sync it, with the truncation if there was one.
        seg.file.sync().map_err(|e| Error::io(&seg.path, "sync", e))?;
    }
    // Sort by (oid, offset), keep the newest (last) entry per oid, build the map in bulk.
    entries.sort_unstable_by_key(|e| (e.0, e.1.offset));
    let mut newest: Vec<(Oid, Entry)> = Vec::with_capacity(entries.len());
    for e in entries {
        match newest.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => newest.push(e),
        }
    }
    let index: BTreeMap<Oid, Entry> = newest.into_iter().collect();
    Ok(Active { seg: Arc::new(seg), index, end, stats, damaged })
}

/// Copy `[end, len)` of `seg` to `<segment>.dropped-<end>` beside it, durably.
fn keep_tail(vfs: &dyn Vfs, seg: &SegmentFile, end: u64, len: u64) -> Result<PathBuf> {
    let path = PathBuf::from(format!("{}.dropped-{end}", seg.path.display()));
    let bytes = seg.read(end, (len - end) as usize)?;
    let _ = vfs.remove(&path);
    let f = vfs.create_new(&path).map_err(|e| Error::io(&path, "create", e))?;
    f.write_all_at(&bytes, 0).map_err(|e| Error::io(&path, "write", e))?;
    f.sync().map_err(|e| Error::io(&path, "sync", e))?;
    if let Some(dir) = path.parent() {
        vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?;
    }
    Ok(path)
}

pub(crate) fn note_txn(stats: &mut SealStats, tid: Tid, records: usize) {
    if stats.txn_count == 0 {
        stats.first_tid = tid;
    }
    stats.last_tid = tid;
    stats.txn_count += 1;
    stats.record_count += records as u64;
}

/// What a full scan of a sealed segment's data finds.
pub(crate) struct SealedScan {
    pub entries: Vec<(Oid, u64)>,
    pub stats: SealStats,
    pub data_end: u64,
    /// The data ended at the end of the file, with no index record at all: a segment
    /// cut at a record boundary looks like this.
    pub no_index: bool,
}

/// Scan the data of a sealed (or to-be-sealed) segment up to its index. Any invalid
/// record before the index is damage: past segments are never truncated.
pub(crate) fn scan_sealed(seg: &SegmentFile, mut progress: impl FnMut(u64, u64)) -> Result<SealedScan> {
    let len = seg.len()?;
    let mut sc = Scanner::new(seg, HEADER_SIZE as u64, len);
    let mut index = BTreeMap::new();
    let mut stats = SealStats::default();
    let no_index = loop {
        progress(sc.pos, len);
        match sc.next_step()? {
            Step::Txn { offset, txn, .. } => {
                let tid = txn.header.tid;
                if stats.txn_count > 0 && tid <= stats.last_tid {
                    return Err(Error::corrupted(&seg.path, offset, "transaction ids do not increase"));
                }
                for (rel, h) in &txn.records {
                    index.insert(h.oid, offset + rel);
                }
                note_txn(&mut stats, tid, txn.records.len());
            }
            Step::Skip => {}
            Step::End => break sc.pos == len,
            Step::Index => break false,
            Step::Invalid(why) => {
                // A damaged index marker looks like this too: accept it only if an
                // index for exactly these entries would end the file here.
                if len.checked_sub(sc.pos) == Some(IndexHeader::record_len(index.len() as u64)) {
                    break false;
                }
                return Err(Error::corrupted(&seg.path, sc.pos, why));
            }
        }
    };
    Ok(SealedScan { entries: index.into_iter().collect(), stats, data_end: sc.pos, no_index })
}

/// Open a past segment's parts; drop an unfinished append; rebuild the index from the
/// data if the index is lost and the rebuilt one provably covers all of the data.
fn open_past(
    seg: SegmentFile,
    opts: &Options,
    warnings: &mut Vec<String>,
    damage: &mut Vec<String>,
    losses: &mut Vec<String>,
) -> Result<Vec<Arc<PastSegment>>> {
    let path = seg.path.clone();
    let writable = !opts.read_only;
    let len = seg.len()?;
    let recorded = seg.sealed_len();
    if len < HEADER_SIZE as u64 {
        // Cut inside its header: nothing of its data is left.
        damage.push(format!(
            "{}: the segment was cut short inside its header ({len} bytes): all its transactions are lost \
             (restore the file from a copy, or `fs2 check --repair --salvage` re-seals it empty)",
            path.display()
        ));
        let mut seg = seg;
        seg.ignore_sealed_len();
        return Ok(vec![lost_part(Arc::new(seg), HEADER_SIZE as u64, None)?]);
    }
    if let Some(sealed) = recorded {
        // Bytes past the recorded length: an append that never switched the chain over.
        if len > sealed && writable {
            let f = opts.vfs.open(&path, true).map_err(|e| Error::io(&path, "open", e))?;
            f.set_len(sealed).map_err(|e| Error::io(&path, "truncate an unfinished append to", e))?;
            f.sync().map_err(|e| Error::io(&path, "sync", e))?;
            warnings.push(format!("{}: dropped {} bytes of an unfinished merge append", path.display(), len - sealed));
        }
        if len < sealed {
            // Serve what is left; reads that may need the lost transactions fail.
            let mut seg = seg;
            seg.ignore_sealed_len();
            let parts = rebuild_parts(Arc::new(seg), len, true)?;
            let last = parts.last().and_then(|p| p.lost_after).unwrap_or(Tid::ZERO);
            let msg = format!(
                "{}: the segment was cut short: the file is {len} bytes, its header records {sealed}; \
                 the transactions after {last} in the missing {} bytes are lost (restore the file from a copy, \
                 or `fs2 check --repair --salvage` re-seals it without them)",
                path.display(),
                sealed - len
            );
            damage.push(msg);
            return Ok(parts);
        }
    }
    match PastSegment::open(seg) {
        Ok(p) => Ok(p),
        Err(e) if e.is_corruption() => {
            let seg = SegmentFile::open(&*opts.vfs, &path, writable)?;
            let scan = scan_sealed(&seg, |_, _| {});
            // The rebuilt index covers the data only if it ends exactly where the segment
            // does: otherwise there are appended regions (or damage) after.
            let whole = match (&scan, recorded) {
                (Ok(scan), Some(sealed)) => {
                    scan.data_end + IndexHeader::record_len(scan.entries.len() as u64) == sealed
                }
                (Ok(_), None) => true,
                (Err(_), _) => false,
            };
            let scan = match scan {
                Ok(scan) if whole => scan,
                Err(e2) if recorded.is_none() => return Err(e2),
                _ => {
                    // Several regions (or damage the scan stopped at): rebuild every
                    // region's index in memory; writes are refused until it is restored.
                    let parts = rebuild_parts(Arc::new(seg), recorded.unwrap_or(len), false).map_err(|e2| {
                        Error::corrupted(
                            &path,
                            0,
                            format!("{e}; the index cannot be rebuilt from the data ({e2}): restore it from a copy"),
                        )
                    })?;
                    let msg = format!(
                        "{e}; using indexes rebuilt in memory from the data; the indexes of a segment with \
                         appended regions are not rewritten: restore the segment from a copy to write again"
                    );
                    damage.push(msg);
                    return Ok(parts);
                }
            };
            let lost_tail = if recorded.is_none() && scan.no_index {
                // A segment sealed before lengths were recorded, ending at a record
                // boundary without an index: it may have been cut there.
                format!(
                    "; the segment ends without an index and records no length (an older segment): \
                     if it was truncated, the transactions after {} are lost",
                    scan.stats.last_tid
                )
            } else {
                String::new()
            };
            if !lost_tail.is_empty() {
                losses.push(format!("{}: {}", path.display(), lost_tail.trim_start_matches("; ")));
            }
            if writable {
                seal(&seg, scan.data_end, &scan.entries, &scan.stats)?;
                warnings.push(format!("{e}; rebuilt the index from the segment data{lost_tail}"));
                PastSegment::open(SegmentFile::open(&*opts.vfs, &path, false)?)
            } else {
                warnings.push(format!(
                    "{e}; using an index rebuilt in memory (read-only; `fs2 check --repair` writes it){lost_tail}"
                ));
                let t = Trailer {
                    count: scan.entries.len() as u64,
                    first_oid: scan.entries.first().map_or(Oid(0), |e| e.0),
                    last_oid: scan.entries.last().map_or(Oid(0), |e| e.0),
                    ..scan.stats.trailer(scan.data_end)
                };
                Ok(vec![Arc::new(PastSegment::with_memory_index(Arc::new(seg), t, scan.entries)?)])
            }
        }
        Err(e) => Err(e),
    }
}

/// The parts of a sealed segment (its own data, then each appended region), rebuilt in
/// memory from the data when an index or trailer is damaged: each region's transactions
/// are scanned up to the index record that ends it; that record's end comes from its
/// length field, or else from the trailer that names it. `cut`: the file was cut short;
/// the region where it ends has no index: its part records what is lost (`lost_after`).
pub(crate) fn rebuild_parts(seg: Arc<SegmentFile>, len: u64, cut: bool) -> Result<Vec<Arc<PastSegment>>> {
    let mut parts = Vec::new();
    let mut base: Option<u64> = None;
    let align = seg.header.alignment;
    loop {
        let start = base.map_or(HEADER_SIZE as u64, |b| crate::segment::appended_start(b, align));
        let mut sc = Scanner::new(&seg, start, len);
        let mut index = BTreeMap::new();
        let mut stats = SealStats::default();
        loop {
            match sc.next_step()? {
                Step::Txn { offset, txn, .. } => {
                    for (rel, h) in &txn.records {
                        index.insert(h.oid, offset + rel);
                    }
                    note_txn(&mut stats, txn.header.tid, txn.records.len());
                }
                Step::Skip => {}
                // A damaged index marker reads as an invalid record: the trailer decides.
                Step::Index | Step::Invalid(_) | Step::End => break,
            }
        }
        let at = sc.pos;
        let end = match index_record_end(&seg, at, len)? {
            Some(end) => Some(end),
            None if cut => None,
            None => return Err(Error::corrupted(&seg.path, at, "no index record ends this region")),
        };
        let lost_after = end.is_none().then_some(if stats.txn_count > 0 { stats.last_tid } else { Tid::ZERO });
        let end = end.unwrap_or(len);
        let own = crate::segment::read_trailer_at(&seg, end).ok().filter(|t| t.index_offset == at);
        let entries: Vec<(Oid, u64)> = index.into_iter().collect();
        let t = Trailer {
            count: entries.len() as u64,
            first_oid: entries.first().map_or(Oid(0), |e| e.0),
            last_oid: entries.last().map_or(Oid(0), |e| e.0),
            // The region's source, if its trailer still says (else a placeholder).
            appended: base.map(|b| {
                let a = own.and_then(|t| t.appended);
                crate::format::Appended {
                    base_len: b,
                    source: a.map_or(seg.header.name, |a| a.source),
                    as_of: a.map_or(crate::types::AsOf::Source, |a| a.as_of),
                }
            }),
            ..stats.trailer(at)
        };
        let mut part = PastSegment::with_memory_index(seg.clone(), t, entries)?;
        part.lost_after = lost_after;
        parts.push(Arc::new(part));
        if end >= len {
            if cut {
                // Appended regions may have followed: older transactions, lost too.
                parts.push(lost_part(seg.clone(), len, Some(len))?);
            }
            return Ok(parts);
        }
        base = Some(end);
    }
}

/// Where the index record at `at` ends: by its length field if its last 8 bytes repeat
/// it, else at the first trailer after it that names `at` as its index offset.
fn index_record_end(seg: &SegmentFile, at: u64, len: u64) -> Result<Option<u64>> {
    if at + 12 <= len {
        let n = crate::format::le64(&seg.read(at + 4, 8)?, 0);
        if n >= TRAILER_SIZE as u64 && n.is_multiple_of(8) && at.checked_add(n).is_some_and(|e| e <= len) {
            // Its trailer: the repeated length, or the checksummed part naming `at`.
            let t = seg.read(at + n - TRAILER_SIZE as u64, TRAILER_SIZE)?;
            let names_at = t[..4] == crate::format::MARK_TRAILER
                && crate::format::le32(&t, 112) == crate::format::crc(&t[..112])
                && crate::format::le64(&t, 8) == at;
            if crate::format::le64(&t, TRAILER_SIZE - 8) == n || names_at {
                return Ok(Some(at + n));
            }
        }
    }
    let mut q = at + TRAILER_SIZE as u64;
    while q <= len {
        if seg.read(q - TRAILER_SIZE as u64, 4)? == crate::format::MARK_TRAILER {
            if let Ok(t) = crate::segment::read_trailer_at(seg, q) {
                if t.index_offset == at {
                    return Ok(Some(q));
                }
            }
        }
        q += 8;
    }
    Ok(None)
}

/// An empty part standing for lost data at `at`: every read that reaches it is an error
/// (`lost_after` = `Tid::ZERO` until `open_chain` knows the older segments: the lost
/// transactions are newer than theirs). `base`: the end of the region before it, if any.
fn lost_part(seg: Arc<SegmentFile>, at: u64, base: Option<u64>) -> Result<Arc<PastSegment>> {
    let start = base.map_or(at, |b| crate::segment::appended_start(b, seg.header.alignment));
    let t = Trailer {
        appended: base.map(|b| crate::format::Appended {
            base_len: b,
            source: seg.header.name,
            as_of: crate::types::AsOf::Source,
        }),
        ..SealStats::default().trailer(start)
    };
    let mut part = PastSegment::with_memory_index(seg, t, Vec::new())?;
    part.lost_after = Some(Tid::ZERO);
    Ok(Arc::new(part))
}
