//! A segment's transactions newest first, read backwards in windows (ZODB's `undoLog`):
//! the first items cost a window, not the segment. Record bounds come from `seek.rs`.

use std::sync::Arc;

use crate::error::Result;
use crate::seek::{record_start, SCAN};
use crate::segment::{Scanner, SegmentFile, Step};
use crate::store::Storage;
use crate::types::SegmentName;
use crate::views::{RevStat, TxnView};

/// One part of a segment to read backwards: its file and data range.
struct Part {
    seg: Arc<SegmentFile>,
    start: u64,
    end: u64,
}

/// The transactions of one segment, newest first (see [`Storage::transactions_newest_first`]).
pub struct NewestFirst {
    name: SegmentName,
    /// Parts still to read, the next one last.
    parts: Vec<Part>,
    /// The window read last, oldest first (popped from the end).
    window: Vec<TxnView>,
    /// Each transaction's records (oid, tid, size) or only its metadata.
    with_records: bool,
}

impl Storage {
    /// The committed transactions of segment `name`, newest first, read backwards in
    /// windows of about 64 KiB (doubling over a large transaction): the first items cost
    /// a window, not the segment. `NotFound` if the segment is not in the chain.
    /// `with_records`: fill [`TxnView::records`] (else it is empty).
    pub fn transactions_newest_first(&self, name: SegmentName, with_records: bool) -> Result<NewestFirst> {
        let v = self.view();
        let mut parts = Vec::new();
        if let Some(a) = v.active.as_ref().filter(|a| a.seg.header.name == name) {
            if a.damaged.is_empty() {
                parts.push(Part { seg: a.seg.clone(), start: crate::format::HEADER_SIZE as u64, end: a.end });
            } else {
                // Known damage: read it the way every scan does (one forward pass).
                let mut window = Vec::new();
                for t in self.segment_txn_summaries(name)? {
                    let t = self.transaction(t?.tid)?;
                    window.extend(t.map(|mut t| {
                        if !with_records {
                            t.records.clear();
                        }
                        t
                    }));
                }
                return Ok(NewestFirst { name, parts, window, with_records });
            }
        } else {
            let range = v.parts_of(name).ok_or_else(|| {
                crate::error::Error::NotFound(format!("segment {name} is not in the chain (merged away?)"))
            })?;
            // Parts are listed newest data first; the next to read goes last.
            for p in v.pasts[range].iter().rev() {
                parts.push(Part { seg: p.seg.clone(), start: p.data_start(), end: p.data_end() });
            }
        }
        Ok(NewestFirst { name, parts, window: Vec::new(), with_records })
    }
}

impl NewestFirst {
    /// Read the window that ends at the current end of the last part into `self.window`.
    fn fill(&mut self) -> Result<bool> {
        let Some(part) = self.parts.last_mut() else { return Ok(false) };
        if part.end <= part.start {
            self.parts.pop();
            return self.fill();
        }
        let mut width = SCAN;
        loop {
            let at = part.end.saturating_sub(width).max(part.start);
            let lo =
                if at == part.start { Some(part.start) } else { record_start(&part.seg, part.start, at, part.end) };
            if let Some(lo) = lo.filter(|&lo| lo < part.end) {
                let mut sc = Scanner::new(&part.seg, lo, part.end);
                let mut out = Vec::new();
                let clean = loop {
                    if sc.pos == part.end {
                        break true;
                    }
                    match sc.next_step()? {
                        Step::Txn { offset, txn, bytes } => {
                            out.push(view(self.name, offset, txn, bytes.len(), self.with_records))
                        }
                        Step::Skip => {}
                        // The data ends before the part does (zeros after it).
                        Step::End | Step::Index => break true,
                        Step::Invalid(why) => {
                            if lo == part.start {
                                return Err(crate::error::Error::corrupted(&part.seg.path, sc.pos, why));
                            }
                            break false;
                        }
                    }
                };
                // A window must end exactly where the newer one began (see the top).
                if clean {
                    part.end = lo;
                    self.window = out;
                    return Ok(true);
                }
            }
            if at == part.start {
                // Unreachable for a sound part: the scan from its start is trusted.
                part.end = part.start;
                return Ok(true);
            }
            width *= 2;
        }
    }
}

fn view(name: SegmentName, offset: u64, txn: crate::segment::DecodedTxn, len: usize, with_records: bool) -> TxnView {
    let tid = txn.header.tid;
    let records = if with_records {
        txn.records.iter().map(|(_, h)| RevStat { oid: h.oid, tid, size: h.data_len, deleted: h.is_delete() }).collect()
    } else {
        Vec::new()
    };
    TxnView { tid, segment: name, offset, bytes: len as u64, meta: txn.meta, records }
}

impl Iterator for NewestFirst {
    type Item = Result<TxnView>;
    fn next(&mut self) -> Option<Result<TxnView>> {
        loop {
            if let Some(t) = self.window.pop() {
                return Some(Ok(t));
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.parts.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}
