//! Segment files: creating, reading records, scanning, sealing, and opening past
//! segments. Knows the byte layout (via `format`) but nothing of transactions in flight.

use crate::error::{Error, Result};
use crate::format::{
    encode_index, le64, DataHeader, Header, RecordForm, Trailer, TxnHeader, HEADER_SIZE, MARK_INDEX, MARK_PAD,
    MARK_TXN, MIN_PADDING, TRAILER_SIZE, TXN_HEADER,
};
use crate::index::{map_sealed, SealedBytes, SortedIndex};
use crate::types::{Oid, Tid};
use crate::vfs::{VFile, Vfs};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use crate::format::DecodedTxn;

mod past;
mod scan;

pub(crate) use past::{read_trailer, read_trailer_at, seal, seal_with, PastSegment, SealStats};
pub(crate) use scan::{Scanner, Step};

/// Every record (transaction, padding, index) starts with its 4-byte marker and 8-byte
/// length: what a scan reads first to know what comes and how far it goes.
const RECORD_HEAD: u64 = 12;

/// An open segment file and its header.
pub(crate) struct SegmentFile {
    pub path: PathBuf,
    /// The header as read at open (`prev` may since have been rewritten: see `prev()`).
    pub header: Header,
    pub file: Arc<dyn VFile>,
    /// The header slot in force now (`prev`, `generation`, `sealed_len`).
    slot: std::sync::Mutex<Header>,
    /// The header on disk is damaged; `header` was reconstructed (see `recovery`), and
    /// `fs2 check --repair --salvage` writes it back.
    pub header_damaged: bool,
    /// Opened for reading: the file's length that goes with `header` (see `open`).
    opened_len: Option<u64>,
}

/// Read and decode the header of a segment file.
fn read_header(file: &dyn VFile, path: &Path) -> Result<Header> {
    let len = file.len().map_err(|e| Error::io(path, "stat segment", e))?;
    if len < HEADER_SIZE as u64 {
        return Err(Error::corrupted(path, 0, format!("file is {len} bytes, shorter than a segment header")));
    }
    let mut buf = vec![0u8; HEADER_SIZE];
    file.read_exact_at(&mut buf, 0).map_err(|e| Error::io(path, "read header of", e))?;
    Header::from_bytes(&buf, path)
}

impl SegmentFile {
    /// Open a segment file. Opened for reading only, it keeps the file's length as of its
    /// header (see `effective_len`).
    pub fn open(vfs: &dyn Vfs, path: &Path, write: bool) -> Result<SegmentFile> {
        let file = vfs.open(path, write).map_err(|e| Error::io(path, "open segment", e))?;
        // A header and a length that belong together, though a writer in another process
        // may rewrite the header's slot (a merge) and append (a semi-sequential merge)
        // meanwhile: the header, then the length, then the header again, until the header
        // did not change around the length. A slot naming a sealed length S is written only
        // after S bytes are durable, so the length read after it is >= S; a slot without one
        // still in force after the length was read means no append had begun before it.
        let mut attempts = 0;
        let (header, len) = loop {
            let before = read_header(&*file, path)?;
            let len = file.len().map_err(|e| Error::io(path, "stat segment", e))?;
            let after = read_header(&*file, path)?;
            attempts += 1;
            if before == after || attempts == 100 {
                break (after, len);
            }
        };
        if path.file_name().and_then(|n| n.to_str()) != Some(&header.name.file_name()) {
            return Err(Error::corrupted(
                path,
                0,
                format!("the header names this segment {}, not its file name", header.name),
            ));
        }
        let mut seg = SegmentFile::new(path.to_path_buf(), header, file);
        if !write {
            seg.opened_len = Some(len);
        }
        Ok(seg)
    }

    pub(crate) fn new(path: PathBuf, header: Header, file: Arc<dyn VFile>) -> SegmentFile {
        let slot = std::sync::Mutex::new(header.clone());
        SegmentFile { path, header, file, slot, header_damaged: false, opened_len: None }
    }

    /// The previous segment's reference as it is now.
    pub fn prev(&self) -> Option<String> {
        self.slot.lock().unwrap().prev.clone()
    }

    /// The sealed length the header records now, if any (see `Header::sealed_len`).
    pub fn sealed_len(&self) -> Option<u64> {
        self.slot.lock().unwrap().sealed_len
    }

    /// Where the segment's bytes end: the sealed length, else the file's length (for a
    /// file opened for reading, its length as of the header, so that bytes a merge in
    /// another process appends later are not taken for the segment's own).
    pub fn effective_len(&self) -> Result<u64> {
        let len = match self.opened_len {
            Some(l) => l,
            None => self.len()?,
        };
        match self.sealed_len() {
            Some(s) if s > len => Err(Error::corrupted(
                &self.path,
                len,
                format!("the file is {len} bytes but its header says it ends at {s} (truncated?)"),
            )),
            Some(s) => Ok(s),
            None => Ok(len),
        }
    }

    /// After damage to the slot in force: use `prev` and the file's length (in memory).
    pub fn forget_sealed_len(&mut self, prev: Option<String>) {
        let slot = self.slot.get_mut().unwrap();
        slot.prev = prev.clone();
        self.header.prev = prev;
        self.ignore_sealed_len();
        self.header_damaged = true;
    }

    /// Read the segment to the file's length, not the recorded one (in memory; a
    /// segment cut short is read as far as it goes).
    pub fn ignore_sealed_len(&mut self) {
        self.slot.get_mut().unwrap().sealed_len = None;
        self.header.sealed_len = None;
    }

    /// Write a reconstructed header back (`header_damaged`): the fixed part in place,
    /// then the slot in force (`prev`, and `sealed_len` if given) as a new generation.
    pub fn rewrite_header(&self, vfs: &dyn Vfs, sealed_len: Option<u64>) -> Result<()> {
        let file = vfs.open(&self.path, true).map_err(|e| Error::io(&self.path, "open for header rewrite", e))?;
        let mut b = self.header.to_bytes()?;
        b.truncate(128);
        let io = |e| Error::io(&self.path, "rewrite the header of", e);
        file.write_all_at(&b, 0).map_err(io)?;
        file.write_all_at(&(HEADER_SIZE as u64).to_le_bytes(), HEADER_SIZE as u64 - 8).map_err(io)?;
        self.rewrite_slot_in(&*file, self.prev(), sealed_len)
    }

    /// Point this segment's header at a new previous segment, crash-atomically (the
    /// sealed length stays).
    pub fn rewrite_prev(&self, vfs: &dyn Vfs, prev: Option<String>) -> Result<()> {
        let sealed_len = self.sealed_len();
        self.rewrite_slot(vfs, prev, sealed_len)
    }

    /// Rewrite the header slot crash-atomically: the next generation goes into the slot
    /// not in use, then the file is synced. A torn write leaves the old slot in force.
    /// (`vfs` opens the file for writing if needed.)
    pub fn rewrite_slot(&self, vfs: &dyn Vfs, prev: Option<String>, sealed_len: Option<u64>) -> Result<()> {
        let file = vfs.open(&self.path, true).map_err(|e| Error::io(&self.path, "open for header rewrite", e))?;
        self.rewrite_slot_in(&*file, prev, sealed_len)
    }

    /// `rewrite_slot` through `file`, an open handle on this segment for writing.
    fn rewrite_slot_in(&self, file: &dyn VFile, prev: Option<String>, sealed_len: Option<u64>) -> Result<()> {
        let mut slot = self.slot.lock().unwrap();
        let next = Header { generation: slot.generation + 1, prev, sealed_len, ..self.header.clone() };
        let bytes = next.slot_bytes()?;
        let io = |e| Error::io(&self.path, "rewrite the header slot of", e);
        file.write_all_at(&bytes, Header::slot_offset(next.generation)).map_err(io)?;
        file.sync().map_err(|e| Error::io(&self.path, "sync", e))?;
        *slot = next;
        Ok(())
    }

    /// Record `len` as the sealed length in the header slot (through this segment's own
    /// handle, which must be writable), unless it is recorded already. Done after the
    /// trailer is durable, so a recorded length always ends in a trailer.
    pub fn record_sealed_len(&self, len: u64) -> Result<()> {
        if self.sealed_len() == Some(len) {
            return Ok(());
        }
        let prev = self.prev();
        self.rewrite_slot_in(&*self.file.clone(), prev, Some(len))
    }

    /// Create `dir/<name>.fs2` durably: written under a temporary name, synced, renamed,
    /// and the directory synced, so a file with a segment name always has a header.
    pub fn create(vfs: &dyn Vfs, dir: &Path, header: Header) -> Result<SegmentFile> {
        let path = dir.join(header.name.file_name());
        let bytes = header.to_bytes()?;
        if vfs.exists(&path) {
            // A stray file holds the name (the chain never does: new names are newer than
            // the head's): move it aside, never replace it.
            let to = crate::archive::move_aside(vfs, dir, &path)?;
            log::warn!("{}: not part of the chain; moved to {} to make room", path.display(), to.display());
        }
        let file = crate::durable::write_file(vfs, &path, &bytes)?;
        Ok(SegmentFile::new(path, header, file))
    }

    pub fn len(&self) -> Result<u64> {
        self.file.len().map_err(|e| Error::io(&self.path, "stat", e))
    }

    pub fn read(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, off).map_err(|e| Error::io(&self.path, "read", e))?;
        Ok(buf)
    }
}

/// A record whose header is verified; its data is verified when taken ([`RecordRef::data`]).
pub struct RecordRef<'a> {
    pub offset: u64,
    pub header: DataHeader,
    seg: &'a SegmentFile,
    /// The data where it is already at hand: read and verified with a V1 header, or the
    /// mapped bytes of a past segment (verified when taken).
    data: Option<Cow<'a, [u8]>>,
    verified: bool,
}

impl<'a> RecordRef<'a> {
    /// The record's data (empty for a deletion), checksum-verified: read only now when the
    /// header could be verified alone (format version 2).
    pub fn data(self) -> Result<Cow<'a, [u8]>> {
        let data = match self.data {
            Some(d) => d,
            None => {
                Cow::Owned(self.seg.read(self.offset + self.header.header_len() as u64, self.header.data_len as usize)?)
            }
        };
        if !self.verified {
            self.header.verify(&data, &self.seg.path, self.offset)?;
        }
        Ok(data)
    }
}

/// Read the header of the data record at `off`, which must lie in `[HEADER_SIZE,
/// data_end)` and belong to `oid`, and verify it: by its own CRC (version 2), or with its
/// data (version 1, whose one CRC covers both: the data is read now and kept).
pub(crate) fn read_record<'a>(
    bytes: Option<&'a [u8]>,
    seg: &'a SegmentFile,
    off: u64,
    data_end: u64,
    oid: Oid,
) -> Result<RecordRef<'a>> {
    let form = seg.header.record_form();
    let hlen = form.header_len();
    if off < HEADER_SIZE as u64 || off.checked_add(hlen as u64).is_none_or(|e| e > data_end) {
        return Err(Error::corrupted(&seg.path, off, format!("record offset of oid {oid} is outside the segment")));
    }
    let (header, data) = match bytes {
        Some(map) => {
            let hb =
                map.get(off as usize..).ok_or_else(|| Error::corrupted(&seg.path, off, "record outside the map"))?;
            let h = DataHeader::parse(hb, form, &seg.path, off)?;
            h.check_shape(&seg.path, off, data_end)?;
            (h, Some(Cow::Borrowed(&map[h.data_range(off)])))
        }
        None => {
            let h = DataHeader::parse(&seg.read(off, hlen)?, form, &seg.path, off)?;
            h.check_shape(&seg.path, off, data_end)?;
            let data = match h.checked_alone() {
                true => None,
                false => Some(Cow::Owned(seg.read(off + hlen as u64, h.data_len as usize)?)),
            };
            (h, data)
        }
    };
    let verified = !header.checked_alone();
    if verified {
        header.verify(data.as_deref().expect("read with a V1 header"), &seg.path, off)?;
    }
    if header.oid != oid {
        return Err(Error::corrupted(
            &seg.path,
            off,
            format!("index points at a record of oid {}, not {oid}", header.oid),
        ));
    }
    Ok(RecordRef { offset: off, header, seg, data, verified })
}

/// The format version (of those read) in whose data-record form the segment's first
/// record, a transaction, verifies; `None` when that does not tell (no transaction
/// there, damage, or both forms verify: a transaction without data records).
pub(crate) fn probe_version(file: &dyn VFile, path: &Path) -> Option<u32> {
    let at = HEADER_SIZE as u64;
    let mut head = [0u8; 12];
    file.read_exact_at(&mut head, at).ok()?;
    let len = le64(&head, 4);
    if len > 1 << 30 || at.checked_add(len)? > file.len().ok()? {
        return None;
    }
    let mut b = vec![0u8; len as usize];
    file.read_exact_at(&mut b, at).ok()?;
    let ok = |v: u32| TxnHeader::decode(&b, path, at, RecordForm::of_version(v)).is_ok();
    match (ok(crate::format::VERSION), ok(crate::format::OLDEST_VERSION)) {
        (true, false) => Some(crate::format::VERSION),
        (false, true) => Some(crate::format::OLDEST_VERSION),
        _ => None,
    }
}

// -----------------------------------------------------------------------------------
// Placement under the alignment rule.

/// Where a record of `len` bytes goes when the file ends at `pos`: `(padding, len)`.
/// Records never span a multiple of `align` unless longer than `align`; a record that
/// does not fit after `pos` starts at the next boundary, behind a padding record. The
/// record is lengthened so that the gap it leaves before the next boundary is 0 or at
/// least `MIN_PADDING` (the smallest padding record), keeping the rule satisfiable.
pub(crate) fn place(pos: u64, len: u64, align: u64) -> (u64, u64) {
    let boundary = |p: u64| (p / align + 1) * align;
    let pad = if !pos.is_multiple_of(align) && pos + len > boundary(pos) { boundary(pos) - pos } else { 0 };
    let start = pos + pad;
    let end = start + len;
    let gap = if end.is_multiple_of(align) { 0 } else { boundary(end) - end };
    let extra = if gap > 0 && gap < MIN_PADDING { gap } else { 0 };
    (pad, len + extra)
}

/// Where the records of a region appended at `base_len` start: there, or at the next
/// alignment boundary if the gap to it is too small for a padding record (see `place`).
pub(crate) fn appended_start(base_len: u64, align: u64) -> u64 {
    let gap = (align - base_len % align) % align;
    if gap > 0 && gap < MIN_PADDING {
        base_len + gap
    } else {
        base_len
    }
}

// -----------------------------------------------------------------------------------
// Scanning.

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_keeps_records_inside_alignment_blocks() {
        let a = 4096;
        assert_eq!(place(4096, 104, a), (0, 104));
        let (pad, len) = place(4096 + 4000, 200, a);
        assert_eq!(pad, 96);
        assert_eq!(len, 200);
        // A record that would leave a gap of 8 or 16 is lengthened to the boundary.
        assert_eq!(place(4096, 4096 - 16, a), (0, 4096));
        assert_eq!(place(4096, 4096 - 24, a), (0, 4096 - 24));
        // Larger than the alignment: starts on a boundary, ends on one or leaves ≥ 24.
        let (pad, len) = place(4096 + 8, 3 * 4096 + 8, a);
        assert_eq!(pad, 4096 - 8);
        assert_eq!(len, 3 * 4096 + 8);
        // Every position the invariant allows: the gap to the next boundary is 0 or ≥ 24.
        for pos in (4096..3 * 4096).step_by(8).filter(|p| (a - p % a) % a == 0 || (a - p % a) >= MIN_PADDING) {
            for l in (24..9000).step_by(8) {
                let (pad, len) = place(pos, l, a);
                let start = pos + pad;
                assert!(pad == 0 || pad >= MIN_PADDING);
                if len <= a {
                    assert_eq!(start / a, (start + len - 1) / a, "pos {pos} len {l}");
                }
                let gap = (a - (start + len) % a) % a;
                assert!(gap == 0 || gap >= MIN_PADDING);
            }
        }
    }
}
