//! The merge worker. Copy merge: adjacent past segments f1..fk in, one past segment out,
//! holding for each oid only the record current at the end of fk. Append merge (semi-
//! sequential): segment f1 in, its retained records appended to the next segment f2
//! behind f2's own data, with an index and trailer of their own. Memory stays flat: the
//! indexes are merged by streaming into a sorted work table in a temporary file (pass 1),
//! the inputs are copied in file order, which is tid order (pass 2), and the work table,
//! updated in place with the new offsets, is streamed out as the new index.

use super::policy::MAX_INPUTS;
use super::progress::MergeProgress;
use crate::durable::NewFile;
use crate::error::{Error, Result};
use crate::format::{
    encode_index_to, encode_padding, encode_txn, encoded_txn_len, Appended, Header, IndexHeader, RecordToWrite,
    Trailer, MARK_TXN, TRAILER_VERSION,
};
use crate::index::{ScratchMap, WorkTable};
use crate::segment::{place, PastSegment, Scanner, SealStats, SegmentFile, Step};
use crate::types::{AsOf, Oid, SegmentName};
use crate::vfs::{VFile, Vfs};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A work-table location before pass 2: tag bit, input number, offset in that input.
const OLD: u64 = 1 << 63;
const INPUT_SHIFT: u32 = 48;
/// The most inputs (segment parts) one merge reads.
const MAX_PARTS: usize = (1 << (63 - INPUT_SHIFT)) - 1;
const OFFSET_MASK: u64 = (1 << INPUT_SHIFT) - 1;

fn old_location(input: usize, offset: u64) -> u64 {
    OLD | ((input as u64) << INPUT_SHIFT) | offset
}

/// What a merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeCounts {
    pub records_in: u64,
    pub records_out: u64,
    /// Deletion records dropped with their object (nothing older holds the oid).
    pub deletions_dropped: u64,
    pub transactions_in: u64,
    pub transactions_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Nanoseconds in the output's final sync (a new segment's: with its rename and the
    /// directory sync), which the write-back in steps (`Sink`) keeps short.
    pub sync_ns: u64,
}

impl MergeCounts {
    /// Add the counts of another step of the same merge.
    pub fn add(&mut self, o: &MergeCounts) {
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.deletions_dropped += o.deletions_dropped;
        self.transactions_in += o.transactions_in;
        self.transactions_out += o.transactions_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.sync_ns += o.sync_ns;
    }
}

/// Does any of `parts` hold `oid`?
fn held_by(parts: &[Arc<PastSegment>], oid: Oid) -> Result<bool> {
    for p in parts {
        if p.find(oid)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Where a merge writes.
pub(crate) enum Output<'a> {
    /// A new segment file in the storage directory.
    New,
    /// Behind the sealed end of `target` (opened for writing), the segment after the
    /// inputs, whose parts are `parts`; `as_of` says which of the inputs' records stay.
    Append { target: &'a SegmentFile, parts: &'a [Arc<PastSegment>], as_of: AsOf },
}

/// What a merge wrote.
pub(crate) enum Written {
    /// The new segment file, durable and renamed into place but not yet in the chain.
    New(Box<SegmentFile>),
    /// The target's new sealed length: the appended bytes are durable, but in force only
    /// once the target's header records this length (the chain switch).
    Appended(u64),
}

/// Merge `inputs` (the parts of adjacent past segments, oldest first) as `output` says.
/// `older`: the parts of the segments older than the inputs, and `oldest_open`: the
/// oldest base tid of an open transaction; they decide whether a deletion must be kept.
pub(crate) fn merge(
    vfs: &dyn Vfs,
    dir: &Path,
    inputs: &[Arc<PastSegment>],
    older: &[Arc<PastSegment>],
    oldest_open: Option<crate::types::Tid>,
    output: Output<'_>,
    progress: &MergeProgress,
) -> Result<(Written, MergeCounts)> {
    let files = 1 + inputs.windows(2).filter(|w| !Arc::ptr_eq(&w[0].seg, &w[1].seg)).count();
    let enough = match output {
        Output::New => files >= 2,
        Output::Append { .. } => files == 1,
    };
    if inputs.is_empty() || !enough || files > MAX_INPUTS || inputs.len() > MAX_PARTS {
        return Err(Error::invalid(format!(
            "a merge takes 2 to {MAX_INPUTS} adjacent past segments, an append merge one into the next"
        )));
    }
    let mut counts = MergeCounts::default();
    for (i, p) in inputs.iter().enumerate() {
        counts.records_in += p.trailer.record_count;
        counts.transactions_in += p.trailer.txn_count;
        if i == 0 || !Arc::ptr_eq(&inputs[i - 1].seg, &p.seg) {
            counts.bytes_in += p.seg.effective_len()?;
        }
    }
    progress.bytes_total.fetch_add(inputs.iter().map(|p| p.data_end() - p.data_start()).sum(), Ordering::Relaxed);
    progress.records_total.fetch_add(counts.records_in, Ordering::Relaxed);
    // Append merge, as of the target's end: the target's records supersede the inputs'.
    let superseding = match output {
        Output::Append { parts, as_of: AsOf::Target, .. } => parts,
        _ => &[][..],
    };

    // Pass 1: stream-merge the indexes; keep each oid's newest record, unless it is a
    // deletion that nothing older needs to see.
    let work = tempfile::tempfile_in(dir)
        .or_else(|_| tempfile::tempfile())
        .map_err(|e| Error::io(dir, "create merge work file in", e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, work);
    let mut heap = BinaryHeap::new();
    let mut pos = vec![0u64; inputs.len()];
    for (i, p) in inputs.iter().enumerate() {
        if p.index.len() > 0 {
            heap.push(Reverse((p.entry(0)?.0, i)));
        }
    }
    let mut retained = 0u64;
    while let Some(Reverse((oid, _))) = heap.peek().copied() {
        let mut newest = None;
        while let Some(Reverse((o, i))) = heap.peek().copied() {
            if o != oid {
                break;
            }
            heap.pop();
            let off = inputs[i].entry(pos[i])?.1;
            if newest.is_none_or(|(n, _)| i > n) {
                newest = Some((i, off));
            }
            pos[i] += 1;
            if pos[i] < inputs[i].index.len() {
                heap.push(Reverse((inputs[i].entry(pos[i])?.0, i)));
            }
        }
        let (i, off) = newest.expect("one at least");
        if off > OFFSET_MASK {
            return Err(Error::corrupted(&inputs[i].seg.path, off, "record offset too large"));
        }
        if held_by(superseding, oid)? {
            continue;
        }
        let h = inputs[i].record_header(off)?;
        let conflicts_with_open = oldest_open.is_some_and(|b| h.tid > b);
        if h.is_delete() && !conflicts_with_open && !held_by(older, oid)? {
            counts.deletions_dropped += 1;
            continue;
        }
        w.write_all(&oid.to_le_bytes())
            .and_then(|_| w.write_all(&old_location(i, off).to_le_bytes()))
            .map_err(|e| Error::io(dir, "write merge work file in", e))?;
        retained += 1;
    }
    let work = w.into_inner().map_err(|e| Error::io(dir, "write merge work file in", e.into_error()))?;
    let mut table = WorkTable::map(work, retained).map_err(|e| Error::io(dir, "map merge work file in", e))?;

    // Pass 2: copy the retained records in file order, grouped by their transactions.
    // A transaction left without records goes, except the newest of the range: it keeps
    // the storage's last tid (read from the trailers at open) from going back.
    let newest_tid = inputs.iter().filter(|p| p.trailer.txn_count > 0).map(|p| p.trailer.last_tid).max();
    let first = &inputs[0].seg.header;
    // The inputs' sequence numbers: the new segment's name, or the appended region's source.
    let span = SegmentName { first: first.name.first, last: inputs[inputs.len() - 1].seg.header.name.last };
    let alignment = first.alignment;
    // A new segment is written under a temporary name (see `durable`); an append goes
    // behind the target's sealed length. Either is undone if the merge fails before the end.
    let new_file = match &output {
        Output::New => Some(NewFile::create(vfs, &dir.join(span.file_name()))?),
        Output::Append { .. } => None,
    };
    let (file, path, base_len, mut unfinished) = match (&output, &new_file) {
        (Output::Append { target, .. }, _) => {
            let base = target.effective_len()?;
            (target.file.clone(), target.path.clone(), base, Unfinished(Some(Undo::Truncate(&*target.file, base))))
        }
        (Output::New, Some(nf)) => (nf.file.clone(), nf.tmp().to_path_buf(), 0, Unfinished(None)),
        (Output::New, None) => unreachable!("created above"),
    };
    let (file, path) = (&*file, path.as_path());
    let mut sink =
        Sink { file, path, at: base_len, buf: Vec::with_capacity(2 << 20), started: base_len, waited: base_len };
    // Records take the output's form: the current one in a new segment, the target's in
    // an appended region (a segment's header version fixes the form of all its records).
    let form = match &output {
        Output::New => crate::format::RecordForm::CURRENT,
        Output::Append { target, .. } => target.header.record_form(),
    };
    let mut new_header = None;
    match &output {
        Output::New => {
            let header = Header {
                name: span,
                prev: inputs[0].seg.prev(),
                generation: 1,
                version: crate::format::VERSION,
                flags: 0,
                sealed_len: None,
                ..first.clone()
            };
            sink.put(&header.to_bytes()?)?;
            new_header = Some(header);
        }
        Output::Append { .. } => {
            let start = crate::segment::appended_start(base_len, alignment);
            sink.put(&vec![0u8; (start - base_len) as usize])?;
        }
    }
    let mut stats = SealStats::default();
    // Progress counts on from earlier steps of the same merge (an append merge of a run).
    let mut done_before = progress.bytes_done.load(Ordering::Relaxed);
    for (i, p) in inputs.iter().enumerate() {
        let mut sc = Scanner::new(&p.seg, p.data_start(), p.data_end());
        loop {
            let scanned = sc.pos;
            match sc.next_step()? {
                Step::Txn { offset, txn, bytes } => {
                    let (mut js, mut recs) = (Vec::new(), Vec::new());
                    for (rel, h) in &txn.records {
                        let Some(j) = table.find(h.oid) else { continue };
                        if table.get(j).1 != old_location(i, offset + rel) {
                            continue;
                        }
                        let data = (!h.is_delete()).then(|| &bytes[h.data_range(*rel)]);
                        let prev = if held_by(older, h.oid)? { 1 } else { 0 };
                        js.push(j);
                        recs.push(RecordToWrite { oid: h.oid, prev, data });
                    }
                    progress.records_done.fetch_add(txn.records.len() as u64, Ordering::Relaxed);
                    progress.bytes_done.store(done_before + scanned - p.data_start(), Ordering::Relaxed);
                    if recs.is_empty() && Some(txn.header.tid) != newest_tid {
                        continue;
                    }
                    let (pad, len) = place(sink.pos(), encoded_txn_len(&txn.meta, &recs, form), alignment);
                    if pad > 0 {
                        let (head, tail) = encode_padding(pad);
                        sink.put(&head)?;
                        sink.put(&vec![0u8; pad as usize - 20])?;
                        sink.put(&tail)?;
                    }
                    let at = sink.pos();
                    let mut rec = Vec::with_capacity(len as usize);
                    let rels = encode_txn(&mut rec, len, txn.header.tid, at, &txn.meta, &recs, form);
                    rec[..4].copy_from_slice(&MARK_TXN);
                    sink.put(&rec)?;
                    for (j, rel) in js.into_iter().zip(rels) {
                        table.set_location(j, at + rel);
                    }
                    stats.note_txn(txn.header.tid, recs.len());
                }
                Step::Skip => {}
                Step::End | Step::Index => break,
                Step::Invalid(why) => return Err(Error::corrupted(&p.seg.path, sc.pos, why)),
            }
        }
        done_before += p.data_end() - p.data_start();
    }
    let data_end = sink.pos();
    let appended = match &output {
        Output::New => None,
        Output::Append { as_of, .. } => Some(Appended { base_len, source: span, as_of: *as_of }),
    };

    // The work table now holds (oid, new offset), sorted: it is the new index.
    let trailer = Trailer { appended, ..stats.trailer(data_end) };
    let table = &table;
    let entries = (0..table.len()).map(|j| {
        let (oid, loc) = table.get(j);
        if loc & OLD != 0 {
            Err(Error::corrupted(&inputs[0].seg.path, 0, format!("merge: the record of oid {oid} was never copied")))
        } else {
            Ok((oid, loc))
        }
    });
    let scratch = tempfile::tempfile_in(dir)
        .or_else(|_| tempfile::tempfile())
        .map_err(|e| Error::io(dir, "create merge work file in", e))?;
    let filter_len = IndexHeader::filter_len(table.len(), TRAILER_VERSION);
    let mut filter = ScratchMap::new(scratch, filter_len).map_err(|e| Error::io(dir, "map merge work file in", e))?;
    encode_index_to(entries, table.len(), trailer, filter.bytes(), |b| sink.put(b))?;
    sink.flush()?;
    if let Some(h) = new_header {
        // The new segment records its exact length (see FORMAT.md, header slots).
        let slot = Header { sealed_len: Some(sink.pos()), ..h }.slot_bytes()?;
        file.write_all_at(&slot, Header::slot_offset(1)).map_err(|e| Error::io(path, "write", e))?;
    }
    counts.records_out = stats.record_count;
    counts.transactions_out = stats.txn_count;
    counts.bytes_out = sink.pos() - base_len;
    let syncing = std::time::Instant::now();
    let written = match new_file {
        Some(nf) => {
            let path = dir.join(span.file_name());
            // Renamed into place but outside the chain: removed if the merge fails now.
            unfinished.0 = Some(Undo::Remove(vfs, path.clone()));
            nf.install()?.drop_cache();
            Written::New(Box::new(SegmentFile::open(vfs, &path, false)?))
        }
        None => {
            file.sync().map_err(|e| Error::io(path, "sync", e))?;
            file.drop_cache();
            Written::Appended(sink.pos())
        }
    };
    counts.sync_ns = syncing.elapsed().as_nanos() as u64;
    unfinished.0 = None;
    progress.bytes_done.store(done_before, Ordering::Relaxed);
    Ok((written, counts))
}

/// Undoes the output of a merge that failed before it was complete (best effort: the
/// next open removes what is left).
struct Unfinished<'a>(Option<Undo<'a>>);

enum Undo<'a> {
    /// A new segment file: remove it.
    Remove(&'a dyn Vfs, std::path::PathBuf),
    /// An append: cut the target back to its sealed length (beyond every reader's map).
    Truncate(&'a dyn VFile, u64),
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        match &self.0 {
            Some(Undo::Remove(vfs, p)) => {
                let _ = vfs.remove(p);
            }
            Some(Undo::Truncate(f, len)) => {
                let _ = f.set_len(*len);
            }
            None => {}
        }
    }
}

/// Write-back step of a merge's output (`Sink`).
const WRITE_BACK_STEP: u64 = 8 << 20;

/// Sequential writes through a buffer, written back to the disk in steps as they go
/// (P7: one sync of the whole output at the end is a burst that stalls committers' syncs
/// queued behind it; in steps, the final sync finds little left to write).
struct Sink<'a> {
    file: &'a dyn VFile,
    path: &'a Path,
    /// File offset of the start of `buf`.
    at: u64,
    buf: Vec<u8>,
    /// Write-back was started for `[.., started)` and waited for over `[.., waited)`.
    started: u64,
    waited: u64,
}

impl Sink<'_> {
    fn pos(&self) -> u64 {
        self.at + self.buf.len() as u64
    }
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        self.file.write_all_at(&self.buf, self.at).map_err(|e| Error::io(self.path, "write", e))?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        if self.at - self.started >= WRITE_BACK_STEP {
            // Wait for the step before the last, start the last: one step in flight.
            self.file.write_back(self.waited, self.started, self.at - self.started);
            (self.waited, self.started) = (self.started, self.at);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the write-back calls; writes go nowhere.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, u64, u64)>>);

    impl VFile for Recorder {
        fn read_exact_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn sync(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn len(&self) -> std::io::Result<u64> {
            Ok(0)
        }
        fn set_len(&self, _: u64) -> std::io::Result<()> {
            Ok(())
        }
        fn write_back(&self, wait_off: u64, off: u64, len: u64) {
            self.0.lock().unwrap().push((wait_off, off, len));
        }
    }

    #[test]
    fn sink_writes_back_in_steps_one_in_flight() {
        let f = Recorder::default();
        let base = 4096;
        let mut sink = Sink { file: &f, path: Path::new("x"), at: base, buf: Vec::new(), started: base, waited: base };
        let chunk = vec![7u8; 1 << 20];
        let total = 3 * WRITE_BACK_STEP + (1 << 20);
        while sink.pos() < base + total {
            sink.put(&chunk).unwrap();
        }
        sink.flush().unwrap();
        let calls = f.0.lock().unwrap().clone();
        let s = WRITE_BACK_STEP;
        // Each step is started once, contiguous from the base, and waited for one step later.
        assert_eq!(calls, vec![(base, base, s), (base, base + s, s), (base + s, base + 2 * s, s)], "{calls:?}");
    }
}
