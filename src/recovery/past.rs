//! Past segments at open: open each cheaply through its index, or rebuild a lost or
//! damaged index from the data (with a warning).

use super::*;

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
                stats.note_txn(tid, txn.records.len());
            }
            Step::Skip => {}
            Step::End => break sc.pos == len,
            Step::Index => break false,
            Step::Invalid(why) => {
                // A damaged index marker looks like this too: accept it only if an
                // index for exactly these entries would end the file here.
                if len.checked_sub(sc.pos).is_some_and(|l| IndexHeader::is_record_len(index.len() as u64, l)) {
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
pub(super) fn open_past(
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
                (Ok(scan), Some(sealed)) => sealed
                    .checked_sub(scan.data_end)
                    .is_some_and(|l| IndexHeader::is_record_len(scan.entries.len() as u64, l)),
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
                    stats.note_txn(txn.header.tid, txn.records.len());
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
pub(super) fn index_record_end(seg: &SegmentFile, at: u64, len: u64) -> Result<Option<u64>> {
    if at + 12 <= len {
        let n = crate::format::le64(&seg.read(at + 4, 8)?, 0);
        if n >= TRAILER_SIZE as u64 && n.is_multiple_of(8) && at.checked_add(n).is_some_and(|e| e <= len) {
            // Its trailer: the repeated length, or the checksummed part naming `at`.
            let t = seg.read(at + n - TRAILER_SIZE as u64, TRAILER_SIZE)?;
            let names_at = t[..4] == crate::format::MARK_TRAILER
                && Trailer::checksum_matches(t[..].try_into().expect("sized"))
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
pub(super) fn lost_part(seg: Arc<SegmentFile>, at: u64, base: Option<u64>) -> Result<Arc<PastSegment>> {
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
