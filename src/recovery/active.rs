//! The active segment at open: scan it, find where its committed data ends, keep an
//! unfinished tail aside, and build its in-memory index.

use super::*;

/// Scan the active segment: rebuild its index, drop an unfinished tail (when writable).
/// Read-only, an unfinished tail is `unsettled`: a writer may be writing it right now.
pub(crate) fn scan_active(
    vfs: &dyn Vfs,
    seg: SegmentFile,
    writable: bool,
    warnings: &mut Vec<String>,
    unsettled: &mut Vec<String>,
    ignored: &mut Option<IgnoredTail>,
) -> Result<Active> {
    // Where the scan started over after finding evidence that a writer in another process
    // changed bytes it had read, and how often (bounded: each start-over is for a later
    // record of a writer that keeps committing).
    let mut reread_at = None;
    let mut restarts = 0;
    let (len, sc, why, entries, stats, damaged, committed_end) = 'scan: loop {
        let len = seg.len()?;
        let mut sc = Scanner::new(&seg, HEADER_SIZE as u64, len);
        // In file order; collected into the map in bulk at the end (later records win).
        let mut entries: Vec<(Oid, Entry)> = Vec::new();
        let mut stats = SealStats::default();
        let mut damaged = Vec::new();
        // The end of the last committed transaction.
        let mut committed_end = HEADER_SIZE as u64;
        let why = loop {
            match sc.next_step()? {
                Step::Txn { offset, txn, .. } => {
                    let tid = txn.header.tid;
                    if stats.txn_count > 0 && tid <= stats.last_tid {
                        return Err(Error::corrupted(&seg.path, offset, "transaction ids do not increase"));
                    }
                    entries.extend(txn.records.iter().map(|(rel, h)| (h.oid, Entry { offset: offset + rel, tid })));
                    stats.note_txn(tid, txn.records.len());
                    committed_end = sc.pos;
                }
                Step::Skip => {}
                Step::End => break None,
                Step::Index => break Some("an unfinished index from an interrupted rotation".to_string()),
                Step::Invalid(why) => {
                    let at = sc.pos;
                    if let Some(p) = sc.durable_evidence_after(at)? {
                        // A writer in another process may have written `at` after our first
                        // read of it and the later transaction before our second. Start the
                        // scan over: not only `at` may have changed since it was read, but
                        // also a voted record before it, read as padding and finished since
                        // (taking the transactions after it without it would be a snapshot
                        // with a hole). `at` cannot change after that later transaction was
                        // written (its bytes were durable then), so if it is still invalid
                        // on the next pass, it is damaged.
                        if reread_at != Some(at) && restarts < MAX_SCAN_RESTARTS {
                            reread_at = Some(at);
                            restarts += 1;
                            continue 'scan;
                        }
                        // Damage, not an unfinished write (the transaction at `p` was written
                        // after `at` was durable): contain it and go on after it.
                        let end = sc.resync(at, p)?;
                        let after = if stats.txn_count > 0 { stats.last_tid } else { Tid::ZERO };
                        let mut d = crate::damage::analyse(
                            &seg.read(at, (end - at) as usize)?,
                            at,
                            after,
                            seg.header.record_form(),
                        );
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
        break (len, sc, why, entries, stats, damaged, committed_end);
    };
    let end = sc.pos;
    if let Some(why) = why {
        if writable {
            // A torn write and a damaged last transaction look alike: keep the bytes.
            let kept = keep_tail(vfs, &seg, end, len)?;
            seg.file.set_len(end).map_err(|e| Error::io(&seg.path, "truncate", e))?;
            let kept = match kept {
                Some(p) => format!("the bytes are kept in {}", p.display()),
                None => "they were all zeros (preallocated space)".into(),
            };
            warnings.push(format!(
                "{}: dropped an unfinished tail of {} bytes at offset {end} ({why}); {kept}",
                seg.path.display(),
                len - end,
            ));
        } else {
            // Unsettled: a writer may be writing it right now (`open_snapshot` decides).
            let tail = IgnoredTail { segment: seg.path.clone(), offset: end, bytes: len - end, reason: why };
            unsettled.push(tail.to_string());
            *ignored = Some(tail);
        }
    }
    if writable {
        // What the scan kept may not be durable yet (a process that died before its sync,
        // or bulk commits without `Storage::sync`), and new commits will record it as
        // durable (`durable_end`): sync it, with the truncation if there was one.
        seg.file.sync().map_err(|e| Error::io(&seg.path, "sync", e))?;
    }
    let index: BTreeMap<Oid, Entry> = newest_per_oid(entries).into_iter().collect();
    // A read-only snapshot ends with its last committed transaction: a voted record after
    // it (read as padding) may be flipped to committed by its writer at any moment, and
    // what reads the snapshot again (`check`, `transactions`) must find what this scan found.
    let end = if writable { end } else { committed_end };
    Ok(Active { seg: Arc::new(seg), index, end, stats, damaged })
}

/// The newest entry of each oid, sorted by oid, from `entries` in file order (later
/// records win). A stable LSD radix sort by oid over the bytes in which the oids differ
/// (dense oids: two or three passes), not a comparison sort: this was the largest cost
/// of scanning a full active segment at open (P5 after a crash).
pub(super) fn newest_per_oid(mut entries: Vec<(Oid, Entry)>) -> Vec<(Oid, Entry)> {
    let (any, all) = entries.iter().fold((0u64, !0u64), |(o, a), e| (o | e.0 .0, a & e.0 .0));
    let varying = any & !all;
    let mut other: Vec<(Oid, Entry)> = Vec::with_capacity(entries.len());
    for shift in (0..64).step_by(8).filter(|s| (varying >> s) & 0xff != 0) {
        let digit = |e: &(Oid, Entry)| ((e.0 .0 >> shift) & 0xff) as usize;
        let mut start = [0usize; 256];
        for e in &entries {
            start[digit(e)] += 1;
        }
        let mut sum = 0;
        for c in start.iter_mut() {
            (*c, sum) = (sum, sum + *c);
        }
        other.clear();
        other.resize(entries.len(), entries.first().copied().unwrap_or((Oid(0), Entry { offset: 0, tid: Tid::ZERO })));
        // Stable: equal digits keep their order, so equal oids stay in file order.
        for e in &entries {
            let d = digit(e);
            other[start[d]] = *e;
            start[d] += 1;
        }
        std::mem::swap(&mut entries, &mut other);
    }
    let mut newest: Vec<(Oid, Entry)> = other;
    newest.clear();
    for e in entries {
        match newest.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => newest.push(e),
        }
    }
    newest
}

/// Copy the bytes of `[end, len)` of `seg` to `<segment>.dropped-<end>` beside it,
/// durably, without the zeros that end them (space preallocated ahead of the data is not
/// dropped data). `None` if there is nothing but zeros.
pub(super) fn keep_tail(vfs: &dyn Vfs, seg: &SegmentFile, end: u64, len: u64) -> Result<Option<PathBuf>> {
    let path = PathBuf::from(format!("{}.dropped-{end}", seg.path.display()));
    let mut bytes = seg.read(end, (len - end) as usize)?;
    let data = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if data == 0 {
        return Ok(None);
    }
    bytes.truncate(data);
    let _ = vfs.remove(&path);
    let f = vfs.create_new(&path).map_err(|e| Error::io(&path, "create", e))?;
    f.write_all_at(&bytes, 0).map_err(|e| Error::io(&path, "write", e))?;
    f.sync().map_err(|e| Error::io(&path, "sync", e))?;
    if let Some(dir) = path.parent() {
        vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?;
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The comparison sort `newest_per_oid` replaced: sort by (oid, offset), keep the last.
    fn by_sorting(mut entries: Vec<(Oid, Entry)>) -> Vec<(Oid, Entry)> {
        entries.sort_unstable_by_key(|e| (e.0, e.1.offset));
        let mut newest: Vec<(Oid, Entry)> = Vec::new();
        for e in entries {
            match newest.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => newest.push(e),
            }
        }
        newest
    }

    #[test]
    fn newest_per_oid_keeps_the_last_record_of_each_oid_sorted() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let oids: [Box<dyn Fn(u64) -> u64>; 4] = [
            Box::new(|r| r % 50),                    // dense, many updates
            Box::new(|r| r % 100_000),               // dense, few updates
            Box::new(|r| r),                         // random 64-bit
            Box::new(|r| (r % 3) << 56 | 0xff_0000), // differ in the top byte only
        ];
        for f in &oids {
            for n in [0usize, 1, 2, 1000, 20_000] {
                // File order: offsets increase.
                let entries: Vec<(Oid, Entry)> = (0..n)
                    .map(|i| (Oid(f(next())), Entry { offset: 100 + 8 * i as u64, tid: Tid(i as u64) }))
                    .collect();
                let got = newest_per_oid(entries.clone());
                let want = by_sorting(entries);
                let key = |v: &[(Oid, Entry)]| v.iter().map(|e| (e.0, e.1.offset, e.1.tid)).collect::<Vec<_>>();
                assert_eq!(key(&got), key(&want), "n {n}");
            }
        }
    }
}
