//! Finding a transaction inside a segment without reading the segment from its start:
//! tid-seeked scans (`transactions(from, to)`, `transaction(tid)`, ZEO's
//! `iterator(start)`), and the record bounds the newest-first reads of `newest.rs` use.
//!
//! There is no tid index (that would be a format change). Transaction records are
//! 8-aligned, verified by their CRCs, and in tid order within a segment part, so a
//! bisection over byte offsets finds them: at an offset, the first verified transaction
//! record at or after it (`Scanner::resync`) and its tid say on which side `from` is.
//! Each probe reads from the offset up to the next record start (at most one
//! transaction), so a seek reads O(log(size / SCAN) × transaction size + SCAN) bytes.
//!
//! A probe can be fooled only by a payload that embeds a whole valid transaction record
//! (bytes and CRCs) at an 8-aligned offset. So nothing found by a probe is trusted
//! alone: the scan from the chosen start must reach the wanted transaction (or the end)
//! through valid records, else the part is scanned from its start as before; a window
//! read backwards must end exactly where the newer window began, else it widens.

use crate::chain::Active;
use crate::segment::{Scanner, SegmentFile, Step};
use crate::types::Tid;

/// Below this many bytes a plain scan is cheaper than more probes.
pub(crate) const SCAN: u64 = 64 << 10;

/// The smallest record (a padding record): `resync(at)` looks from `at + MIN` on.
const MIN: u64 = crate::format::MIN_PADDING;

/// A scanner over `[start, end)` of `seg`, moved forward as far as it can be without
/// passing a committed transaction with tid ≥ `from` (never past damage: see the top).
pub(crate) fn seeked(seg: &SegmentFile, start: u64, end: u64, from: Tid) -> Scanner {
    let mut sc = Scanner::new(seg, start, end);
    if let Some(at) = seek_offset(seg, start, end, from) {
        sc.pos = at;
    }
    sc
}

impl Active {
    /// The active segment's scan from `from` on (see [`seeked`]); a segment with known
    /// damaged transactions is scanned from its start.
    pub(crate) fn scanner_from(&self, from: Tid) -> Scanner {
        let mut sc = self.scanner();
        if self.damaged.is_empty() {
            if let Some(at) = seek_offset(&self.seg, sc.pos, self.end, from) {
                sc.pos = at;
            }
        }
        sc
    }
}

/// The first committed transaction starting at or after `at` (before `end`): its
/// offset and tid; `Ok(None)` at the end; `Err(())` on anything invalid.
fn first_txn(seg: &SegmentFile, at: u64, end: u64) -> std::result::Result<Option<(u64, Tid)>, ()> {
    let mut sc = Scanner::new(seg, at, end);
    loop {
        match sc.next_step() {
            Ok(Step::Txn { offset, txn, .. }) => return Ok(Some((offset, txn.header.tid))),
            Ok(Step::Skip) => {}
            Ok(Step::End | Step::Index) => return Ok(None),
            Ok(Step::Invalid(_)) | Err(_) => return Err(()),
        }
    }
}

/// The first verified record start at or after `at` and before `limit` (`limit` if none).
pub(crate) fn record_start(seg: &SegmentFile, start: u64, at: u64, limit: u64) -> Option<u64> {
    if at <= start {
        return Some(start);
    }
    let at = (at + 7) & !7;
    Scanner::new(seg, start, limit).resync(at.checked_sub(MIN)?, limit).ok()
}

/// Where a scan of `[start, end)` for tids ≥ `from` may begin, or None (from `start`).
fn seek_offset(seg: &SegmentFile, start: u64, end: u64, from: Tid) -> Option<u64> {
    // Nothing to skip when the part's first transaction is already wanted.
    if end - start <= SCAN || !matches!(first_txn(seg, start, end), Ok(Some((_, t))) if t < from) {
        return None;
    }
    // lo: a record start, every transaction before it has tid < from.
    // hi: the first transaction starting at or after hi has tid ≥ from (or there is none).
    let (mut lo, mut hi) = (start, end);
    while hi - lo > SCAN {
        let mid = lo + (hi - lo) / 2;
        let p = record_start(seg, start, mid, hi)?;
        match first_txn(seg, p, end).ok()? {
            Some((q, tid)) if q < hi && tid < from => lo = p,
            _ => hi = mid,
        }
    }
    if lo == start {
        return None;
    }
    // Trust `lo` only if valid records lead from it to the wanted transaction.
    let mut sc = Scanner::new(seg, lo, end);
    loop {
        match sc.next_step() {
            Ok(Step::Txn { txn, .. }) if txn.header.tid >= from => return Some(lo),
            Ok(Step::Txn { .. } | Step::Skip) => {}
            Ok(Step::End | Step::Index) => return Some(lo),
            Ok(Step::Invalid(_)) | Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Options;
    use crate::store::Storage;
    use crate::types::Oid;

    /// `n` transactions of two records of about 300 bytes; with `phantoms`, every 7th
    /// stores the bytes of an earlier whole transaction record (a valid `TTTT` record,
    /// CRCs and all, 8-aligned inside the payload) to mislead probes.
    fn fill(s: &Storage, n: u64, phantoms: bool) -> Vec<Tid> {
        let mut tids = Vec::new();
        let mut copy: Option<Vec<u8>> = None;
        for i in 0..n {
            let mut t = s.begin();
            t.store(Oid(i % 500), &vec![(i % 251) as u8; 300]).unwrap();
            match &copy {
                Some(c) if phantoms && i % 7 == 0 => t.store(Oid(1000 + i), c).unwrap(),
                _ => t.store(Oid(1000 + i), format!("object {i}").as_bytes()).unwrap(),
            }
            tids.push(t.commit().unwrap());
            if copy.is_none() && i == 3 {
                let v = s.view();
                let a = v.active.as_ref().unwrap();
                let (off, len) = (crate::format::HEADER_SIZE as u64, a.end - crate::format::HEADER_SIZE as u64);
                let mut b = vec![0u8; len as usize];
                a.seg.file.read_exact_at(&mut b, off).unwrap();
                let n = u64::from_le_bytes(b[4..12].try_into().unwrap()) as usize;
                copy = Some(b[..n].to_vec());
            }
        }
        tids
    }

    fn tids_from(s: &Storage, from: Tid) -> Vec<Tid> {
        s.transactions(from, Tid::MAX).map(|t| t.unwrap().tid).collect()
    }

    fn check(s: &Storage, tids: &[Tid]) {
        for k in (0..tids.len()).step_by(97).chain([tids.len() - 1]) {
            for from in [tids[k], Tid(tids[k].0 - 1), Tid(tids[k].0 + 1)] {
                let want: Vec<Tid> = tids.iter().copied().filter(|&t| t >= from).collect();
                assert_eq!(tids_from(s, from), want, "from {from}");
            }
            assert_eq!(s.transaction(tids[k]).unwrap().unwrap().tid, tids[k]);
        }
        assert_eq!(tids_from(s, Tid::ZERO), tids);
        assert!(tids_from(s, Tid(tids.last().unwrap().0 + 1)).is_empty());
        // Newest first, segment by segment, equals the forward order reversed.
        let mut back = Vec::new();
        for seg in s.segments().unwrap().iter().rev() {
            for t in s.transactions_newest_first(seg.name, true).unwrap() {
                let t = t.unwrap();
                assert_eq!(t.records.len(), 2);
                back.push(t.tid);
            }
        }
        back.reverse();
        assert_eq!(back, tids);
    }

    /// Where a seek to each tid starts, against the offset of that transaction.
    fn seek_distances(seg: &SegmentFile, start: u64, end: u64) -> Vec<u64> {
        let mut sc = Scanner::new(seg, start, end);
        let mut at = Vec::new();
        loop {
            match sc.next_step().unwrap() {
                Step::Txn { offset, txn, .. } => at.push((offset, txn.header.tid)),
                Step::Skip => {}
                _ => break,
            }
        }
        at.iter().step_by(50).map(|&(off, tid)| off - seek_offset(seg, start, end, tid).unwrap_or(start)).collect()
    }

    #[test]
    fn seeks_land_near_the_transaction_and_scans_agree() {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::create(d.path(), Options { sync: false, ..Options::default() }).unwrap();
        let tids = fill(&s, 3000, false);
        let (seg, end) = {
            let v = s.view();
            let a = v.active.as_ref().unwrap();
            (a.seg.clone(), a.end)
        };
        assert!(end > 1 << 20, "a segment of {end} bytes");
        let far = seek_distances(&seg, crate::format::HEADER_SIZE as u64, end);
        assert!(far.iter().all(|&d| d <= SCAN), "seeks stopped short: {far:?}");
        check(&s, &tids);
        // Sealed: the same through the past segment's part.
        s.rotate().unwrap();
        let more = fill(&s, 300, false);
        let all: Vec<Tid> = tids.iter().chain(&more).copied().collect();
        check(&s, &all);
        let v = s.view();
        let p = &v.pasts[0];
        let far = seek_distances(&p.seg, p.data_start(), p.data_end());
        assert!(far.iter().all(|&d| d <= SCAN), "seeks stopped short: {far:?}");
    }

    #[test]
    fn payloads_that_embed_a_transaction_record_do_not_mislead_scans() {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::create(d.path(), Options { sync: false, ..Options::default() }).unwrap();
        let tids = fill(&s, 2500, true);
        check(&s, &tids);
        s.rotate().unwrap();
        check(&s, &tids);
    }
}
