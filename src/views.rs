//! Read views over the engine for browsing tools (the mounted tree): one transaction by
//! tid, per-segment record listings and lookups, transaction summaries in chain or
//! segment order, raw segment bytes, and commit notifications. Everything here is read
//! only and streams: no call loads a whole index or segment into memory.

use crate::chain::View;
use crate::error::{Error, Result};
use crate::format::{Header, TxnMeta, HEADER_SIZE};
use crate::read::walk;
use crate::segment::{read_record, Scanner};
use crate::store::{ChainScan, SegmentState};
use crate::types::{Oid, SegmentName, Tid};
use crate::vfs::VFile;
use crate::Storage;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

pub use crate::chain::CommitEvent;

/// A retained revision without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevStat {
    pub oid: Oid,
    pub tid: Tid,
    pub size: u64,
    pub deleted: bool,
}

/// A committed transaction as stored: where, how long, its metadata and its records.
#[derive(Clone, Debug)]
pub struct TxnView {
    pub tid: Tid,
    pub segment: SegmentName,
    pub offset: u64,
    /// Length of the transaction record in the segment file.
    pub bytes: u64,
    pub meta: TxnMeta,
    /// The records in the order written (each oid once).
    pub records: Vec<RevStat>,
}

/// One transaction in a listing: tid, where, record count and record length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnSummary {
    pub tid: Tid,
    pub segment: SegmentName,
    pub objects: u64,
    pub bytes: u64,
}

/// The bytes of one segment file, readable while the handle lives even if a merge has
/// since removed the segment from the chain (the open file stays valid).
#[derive(Clone)]
pub struct SegmentBytes {
    pub name: SegmentName,
    pub path: PathBuf,
    pub state: SegmentState,
    file: Arc<dyn VFile>,
    /// A past segment: its header and sealed length as of the call, a consistent image
    /// (a merge may later rewrite the header's slots or append past the sealed length;
    /// the bytes below it never change).
    sealed: Option<(Vec<u8>, u64)>,
}

impl SegmentBytes {
    /// The length: fixed for a past segment, the file's length now for the active one.
    pub fn file_len(&self) -> Result<u64> {
        match &self.sealed {
            Some((_, len)) => Ok(*len),
            None => self.file.len().map_err(|e| Error::io(&self.path, "stat", e)),
        }
    }

    /// A sealed segment file outside the chain (a merged-away one in the archive),
    /// read-only up to its sealed length.
    pub fn open_sealed(vfs: &dyn crate::vfs::Vfs, path: &std::path::Path) -> Result<SegmentBytes> {
        let seg = crate::segment::SegmentFile::open(vfs, path, false)?;
        let len = seg.effective_len()?;
        let header = seg.read(0, HEADER_SIZE)?;
        let (name, path, file) = (seg.header.name, seg.path.clone(), seg.file.clone());
        Ok(SegmentBytes { name, path, state: SegmentState::Past, file, sealed: Some((header, len)) })
    }

    /// Read into `buf` at `off`; returns the bytes read (0 at the end).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<usize> {
        let len = self.file_len()?;
        let n = (len.saturating_sub(off)).min(buf.len() as u64) as usize;
        if n > 0 {
            self.file.read_exact_at(&mut buf[..n], off).map_err(|e| Error::io(&self.path, "read", e))?;
            if let Some((header, _)) = &self.sealed {
                // The header as captured, not as a merge may have rewritten it since.
                let h = header.len().saturating_sub(off as usize).min(n);
                if h > 0 {
                    buf[..h].copy_from_slice(&header[off as usize..off as usize + h]);
                }
            }
        }
        Ok(n)
    }
}

/// Transaction summaries in tid order, read lazily segment by segment.
pub struct TxnSummaries {
    scan: ChainScan,
    from: Tid,
}

impl Iterator for TxnSummaries {
    type Item = Result<TxnSummary>;
    fn next(&mut self) -> Option<Result<TxnSummary>> {
        self.scan.next_txn(self.from, Tid::MAX, |segment, _, txn, bytes| TxnSummary {
            tid: txn.header.tid,
            segment,
            objects: txn.records.len() as u64,
            bytes: bytes.len() as u64,
        })
    }
}

/// The scan range `[start, end)` of every chain segment, oldest first, that may hold
/// transactions with tid ≥ `from` (and ≤ `to`).
fn scan_ranges(v: &View, from: Tid, to: Tid) -> Vec<(SegmentName, Scanner)> {
    let mut out = Vec::new();
    for p in v.pasts.iter().rev() {
        let t = &p.trailer;
        if t.txn_count > 0 && t.last_tid >= from && t.first_tid <= to {
            out.push((p.seg.header.name, crate::seek::seeked(&p.seg, p.data_start(), p.data_end(), from)));
        }
    }
    if let Some(a) = &v.active {
        if a.stats.txn_count > 0 && a.stats.last_tid >= from && a.stats.first_tid <= to {
            out.push((a.seg.header.name, a.scanner_from(from)));
        }
    }
    out
}

impl Storage {
    /// Receive a [`CommitEvent`] for every commit published from now on (sent after
    /// the commit is visible; never blocks the committer). Dropping the receiver
    /// unsubscribes.
    pub fn subscribe(&self) -> Receiver<CommitEvent> {
        let (tx, rx) = channel();
        self.inner.chain.subscribers.add(tx);
        rx
    }

    /// The tid ranges (both ends excluded) in which a view as of a tid would not be
    /// exact, because a merge kept only the states at their ends: inside a copy-merged
    /// segment's own range; inside an appended region kept as of its source's end; from
    /// the start of a region kept as of the target's end to the target's end. With the
    /// segment that holds the range. Oldest first.
    pub fn history_gaps(&self) -> Result<Vec<(Tid, Tid, SegmentName)>> {
        let mut gaps = Vec::new();
        let mut prev = Tid::ZERO;
        for seg in self.segments()? {
            let end = seg.last_tid.unwrap_or(prev);
            for a in seg.appended.iter().rev() {
                let Some(last) = a.last_tid else { continue };
                let upto = if a.as_of == crate::types::AsOf::Source { last } else { end };
                gaps.push((prev, upto, seg.name));
                prev = last;
            }
            if seg.name.first < seg.name.last {
                gaps.push((prev, end, seg.name));
            }
            prev = prev.max(end);
        }
        gaps.retain(|(lo, hi, _)| lo < hi);
        Ok(gaps)
    }

    /// The tid of the oldest retained transaction, if any (time travel before it is
    /// not possible).
    pub fn first_tid(&self) -> Option<Tid> {
        let v = self.view();
        let past = v.pasts.iter().rev().find(|p| p.trailer.txn_count > 0).map(|p| p.trailer.first_tid);
        past.or_else(|| v.active.as_ref().filter(|a| a.stats.txn_count > 0).map(|a| a.stats.first_tid))
    }

    /// `oid`'s newest retained record with tid ≤ `at` (a deletion counts), without data.
    pub fn stat_at(&self, oid: Oid, at: Tid) -> Result<Option<RevStat>> {
        let mut out = None;
        walk(&self.view(), oid, at, |r| {
            if r.header.tid > at {
                return Ok(true);
            }
            out = Some(RevStat { oid, tid: r.header.tid, size: r.header.data_len, deleted: r.header.is_delete() });
            Ok(false)
        })?;
        Ok(out)
    }

    /// Oids that have any retained record (live or deleted) with oid ≥ `start`, in oid
    /// order, at most `limit`. Streams like [`Storage::list`].
    pub fn list_oids(&self, start: Oid, limit: usize) -> Result<Vec<Oid>> {
        let mut out = Vec::new();
        if limit > 0 {
            crate::read::each_oid(&self.view(), start, |oid| {
                out.push(oid);
                Ok(out.len() < limit)
            })?;
        }
        Ok(out)
    }

    /// The committed transaction `tid`, if it is retained. Scans the one segment whose
    /// tid range holds it (O(segment size)): callers that repeat lookups should cache.
    pub fn transaction(&self, tid: Tid) -> Result<Option<TxnView>> {
        let mut segs = scan_ranges(&self.view(), tid, tid);
        segs.reverse();
        let found = ChainScan::new(segs).next_txn(tid, tid, |segment, offset, txn, bytes| {
            let records = txn
                .records
                .iter()
                .map(|(_, h)| RevStat { oid: h.oid, tid, size: h.data_len, deleted: h.is_delete() })
                .collect();
            TxnView { tid, segment, offset, bytes: bytes.len() as u64, meta: txn.meta, records }
        });
        found.transpose()
    }

    /// Summaries of the retained transactions with tid ≥ `from`, in tid order.
    pub fn txn_summaries(&self, from: Tid) -> TxnSummaries {
        let mut segs = scan_ranges(&self.view(), from, Tid::MAX);
        segs.reverse();
        TxnSummaries { scan: ChainScan::new(segs), from }
    }

    /// Summaries of the transactions of one segment, in tid order (`NotFound` if the
    /// segment is not in the chain).
    pub fn segment_txn_summaries(&self, name: SegmentName) -> Result<TxnSummaries> {
        let v = self.view();
        let segs = if let Some(a) = v.active.as_ref().filter(|a| a.seg.header.name == name) {
            vec![(name, a.scanner())]
        } else {
            // A segment's parts are listed newest data first: the next to read goes last.
            let parts = v.parts_of(name).ok_or_else(|| no_segment(name))?;
            v.pasts[parts].iter().map(|p| (name, Scanner::new(&p.seg, p.data_start(), p.data_end()))).collect()
        };
        Ok(TxnSummaries { scan: ChainScan::new(segs), from: Tid::ZERO })
    }

    /// The bytes of segment `name` (`NotFound` if it is not in the chain).
    pub fn segment_bytes(&self, name: SegmentName) -> Result<SegmentBytes> {
        let v = self.view();
        if let Some(a) = v.active.as_ref().filter(|a| a.seg.header.name == name) {
            let (path, file) = (a.seg.path.clone(), a.seg.file.clone());
            return Ok(SegmentBytes { name, path, state: SegmentState::Active, file, sealed: None });
        }
        let p = v.pasts.iter().find(|p| p.seg.header.name == name).ok_or_else(|| no_segment(name))?;
        let mut header = vec![0u8; HEADER_SIZE];
        p.seg.file.read_exact_at(&mut header, 0).map_err(|e| Error::io(&p.seg.path, "read header of", e))?;
        // The sealed length this header records (else the file's): read after the header,
        // so the two agree (an append grows the file before its header says so).
        let len = match Header::from_bytes(&header, &p.seg.path)?.sealed_len {
            Some(len) => len,
            None => p.seg.len()?,
        };
        let (path, file) = (p.seg.path.clone(), p.seg.file.clone());
        Ok(SegmentBytes { name, path, state: SegmentState::Past, file, sealed: Some((header, len)) })
    }

    /// The newest record of each oid ≥ `start` in segment `name`, in oid order, at most
    /// `limit` (reads each record's header; past segments are mapped).
    pub fn segment_records(&self, name: SegmentName, start: Oid, limit: usize) -> Result<Vec<RevStat>> {
        let v = self.view();
        let mut out = Vec::new();
        if let Some(a) = v.active.as_ref().filter(|a| a.seg.header.name == name) {
            for (oid, e) in a.index.range(start..).take(limit) {
                let r = read_record(None, &a.seg, e.offset, a.end, *oid)?;
                out.push(RevStat { oid: *oid, tid: e.tid, size: r.header.data_len, deleted: r.header.is_delete() });
            }
            return Ok(out);
        }
        // The segment's parts, newest data first: an oid's newest record is in the first
        // part that holds it.
        let parts = &v.pasts[v.parts_of(name).ok_or_else(|| no_segment(name))?];
        let mut cursors = Vec::with_capacity(parts.len());
        for p in parts {
            cursors.push(p.lower_bound(start)?);
        }
        while out.len() < limit {
            let mut next: Option<(Oid, usize)> = None;
            for (k, (p, &i)) in parts.iter().zip(&cursors).enumerate() {
                if i < p.index.len() {
                    let o = p.entry(i)?.0;
                    if next.is_none_or(|(n, _)| o < n) {
                        next = Some((o, k));
                    }
                }
            }
            let Some((oid, k)) = next else { break };
            let (p, off) = (&parts[k], parts[k].entry(cursors[k])?.1);
            let h = p.record_header(off)?;
            if h.oid != oid {
                return Err(Error::corrupted(&p.seg.path, off, format!("index entry for oid {oid} points elsewhere")));
            }
            out.push(RevStat { oid, tid: h.tid, size: h.data_len, deleted: h.is_delete() });
            for (p, i) in parts.iter().zip(cursors.iter_mut()) {
                if *i < p.index.len() && p.entry(*i)?.0 == oid {
                    *i += 1;
                }
            }
        }
        Ok(out)
    }

    /// The newest record of `oid` in segment `name`, if it holds one.
    pub fn segment_record(&self, name: SegmentName, oid: Oid) -> Result<Option<RevStat>> {
        Ok(self.segment_records(name, oid, 1)?.into_iter().find(|r| r.oid == oid))
    }
}

fn no_segment(name: SegmentName) -> Error {
    Error::NotFound(format!("segment {name} is not in the chain (merged away?); `fs2 info` lists the chain"))
}
