//! Sealing a segment (its index and trailer) and opening sealed ones (past segments).

use super::*;

/// Statistics a sealed segment's trailer carries.
#[derive(Clone, Debug, Default)]
pub(crate) struct SealStats {
    pub first_tid: Tid,
    pub last_tid: Tid,
    pub txn_count: u64,
    pub record_count: u64,
}

impl SealStats {
    /// Count one more transaction (tids come in increasing order).
    pub fn note_txn(&mut self, tid: Tid, records: usize) {
        if self.txn_count == 0 {
            self.first_tid = tid;
        }
        self.last_tid = tid;
        self.txn_count += 1;
        self.record_count += records as u64;
    }

    /// A trailer for data ending at `data_end` with these stats (the index fields are
    /// filled in when the index is encoded).
    pub fn trailer(&self, data_end: u64) -> Trailer {
        Trailer {
            index_offset: data_end,
            first_tid: self.first_tid,
            last_tid: self.last_tid,
            txn_count: self.txn_count,
            record_count: self.record_count,
            ..Default::default()
        }
    }
}

/// Write the index record and trailer at `data_end` and sync, then record the sealed
/// length in the header slot (so that a truncation of the past segment is detected).
/// `entries` sorted by oid.
pub(crate) fn seal(seg: &SegmentFile, data_end: u64, entries: &[(Oid, u64)], stats: &SealStats) -> Result<Trailer> {
    seal_with(seg, entries, stats.trailer(data_end))
}

/// `seal` with a given trailer (e.g. of an appended region); the data ends at its index
/// offset, and anything after is cut off.
pub(crate) fn seal_with(seg: &SegmentFile, entries: &[(Oid, u64)], trailer: Trailer) -> Result<Trailer> {
    let data_end = trailer.index_offset;
    let bytes = encode_index(entries, trailer);
    let io = |e| Error::io(&seg.path, "write index of", e);
    seg.file.set_len(data_end).map_err(io)?;
    seg.file.write_all_at(&bytes, data_end).map_err(io)?;
    seg.file.sync().map_err(|e| Error::io(&seg.path, "sync", e))?;
    let end = data_end + bytes.len() as u64;
    let t: &[u8; TRAILER_SIZE] = bytes[bytes.len() - TRAILER_SIZE..].try_into().expect("sized");
    let t = Trailer::from_bytes(t, &seg.path, end)?;
    seg.record_sealed_len(end)?;
    Ok(t)
}

/// Read the trailer of `seg`, if it is sealed: the one that ends its sealed length.
pub(crate) fn read_trailer(seg: &SegmentFile) -> Result<Trailer> {
    read_trailer_at(seg, seg.effective_len()?)
}

/// Read the trailer that ends at `end`.
pub(crate) fn read_trailer_at(seg: &SegmentFile, end: u64) -> Result<Trailer> {
    if end < (HEADER_SIZE + TRAILER_SIZE) as u64 {
        return Err(Error::corrupted(&seg.path, end, "no segment trailer (the segment is not sealed)"));
    }
    let b = seg.read(end - TRAILER_SIZE as u64, TRAILER_SIZE)?;
    Trailer::from_bytes(b.as_slice().try_into().expect("sized"), &seg.path, end)
}

/// One indexed region of a sealed segment: its own transactions (the first part), or a
/// region a semi-sequential merge appended. The view lists a segment's parts newest data
/// first, like segments: the segment's own records, then each appended region in the
/// order it was appended (each holds older transactions than the one before).
pub(crate) struct PastSegment {
    pub seg: Arc<SegmentFile>,
    /// This part's trailer.
    pub trailer: Trailer,
    bytes: Arc<SealedBytes>,
    pub index: SortedIndex,
    /// Set when the segment was cut short inside this part: the transactions after this
    /// tid are lost, so a read that may need one of them is an error (see `walk`).
    pub lost_after: Option<Tid>,
}

impl PastSegment {
    /// Open a sealed segment's parts, newest data first: O(1) in its size per part
    /// (trailer, index header, block CRCs).
    pub fn open(seg: SegmentFile) -> Result<Vec<Arc<PastSegment>>> {
        let len = seg.effective_len()?;
        let bytes = Arc::new(match map_sealed(&*seg.file, len) {
            Some(m) => SealedBytes::Mapped(m),
            None => SealedBytes::File,
        });
        let seg = Arc::new(seg);
        let mut parts = Vec::new();
        let mut end = len;
        loop {
            let trailer = read_trailer_at(&seg, end)?;
            let index = SortedIndex::open(&bytes, &*seg.file, &seg.path, &trailer)?;
            let appended = trailer.appended;
            parts.push(Arc::new(PastSegment {
                seg: seg.clone(),
                trailer,
                bytes: bytes.clone(),
                index,
                lost_after: None,
            }));
            match appended {
                Some(a) => end = a.base_len,
                None => break,
            }
        }
        // Read from the end, the parts came oldest data first.
        parts.reverse();
        Ok(parts)
    }

    /// A past segment whose index was lost, with an index rebuilt from its data in
    /// memory (read-only opens cannot write the rebuilt index back).
    pub fn with_memory_index(seg: Arc<SegmentFile>, trailer: Trailer, entries: Vec<(Oid, u64)>) -> Result<PastSegment> {
        let index = SortedIndex::memory(entries, &seg.path, trailer.index_offset)?;
        Ok(PastSegment { seg, trailer, bytes: Arc::new(SealedBytes::File), index, lost_after: None })
    }

    /// An error if a read wanting revisions up to `at` may need a lost transaction.
    pub fn check_lost(&self, oid: Oid, at: Tid) -> Result<()> {
        match self.lost_after {
            Some(t) if at > t => Err(Error::corrupted(
                &self.seg.path,
                self.data_end(),
                format!(
                    "oid {oid} may have a revision in the transactions after {t}, lost when the segment \
                     was cut short; `fs2 check --repair --salvage` re-seals the segment without them"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Where this part's transactions start.
    pub fn data_start(&self) -> u64 {
        self.trailer.appended.map_or(HEADER_SIZE as u64, |a| appended_start(a.base_len, self.seg.header.alignment))
    }

    /// Where this part's transactions end (its index record starts).
    pub fn data_end(&self) -> u64 {
        self.trailer.index_offset
    }

    fn map(&self) -> Option<&[u8]> {
        match &*self.bytes {
            SealedBytes::Mapped(m) => Some(m),
            SealedBytes::File => None,
        }
    }

    /// The offset of `oid`'s newest record in this segment.
    pub fn find(&self, oid: Oid) -> Result<Option<u64>> {
        if self.index.len() == 0
            || oid < self.trailer.first_oid
            || oid > self.trailer.last_oid
            || !self.index.may_contain(&self.bytes, &self.seg.path, oid)
        {
            return Ok(None);
        }
        self.index.find(&self.bytes, &self.seg.path, oid)
    }

    /// The header of the record at `off`, shape-checked; checksum-verified only where it
    /// has its own CRC (format version 2; the caller verifies the record later, e.g. by
    /// scanning its transaction).
    pub fn record_header(&self, off: u64) -> Result<DataHeader> {
        let end = self.data_end();
        let hlen = self.seg.header.record_form().header_len();
        if off < self.data_start() || off.checked_add(hlen as u64).is_none_or(|e| e > end) {
            return Err(Error::corrupted(&self.seg.path, off, "record offset outside the segment"));
        }
        let b = match self.map() {
            Some(m) => m.get(off as usize..off as usize + hlen).map(|s| s.to_vec()),
            None => Some(self.seg.read(off, hlen)?),
        }
        .ok_or_else(|| Error::corrupted(&self.seg.path, off, "record outside the map"))?;
        let h = DataHeader::parse(&b, self.seg.header.record_form(), &self.seg.path, off)?;
        h.check_shape(&self.seg.path, off, end)?;
        Ok(h)
    }

    pub fn record(&self, off: u64, oid: Oid) -> Result<RecordRef<'_>> {
        if off < self.data_start() {
            return Err(Error::corrupted(
                &self.seg.path,
                off,
                format!("record offset of oid {oid} is outside its region"),
            ));
        }
        read_record(self.map(), &self.seg, off, self.data_end(), oid)
    }

    /// For `check`: a problem with the oid filter of this part, given its index entries.
    pub fn check_filter(&self, entries: &[(Oid, u64)]) -> Option<String> {
        self.index.check_filter(&self.bytes, entries)
    }

    /// Entry `i` of the index.
    pub fn entry(&self, i: u64) -> Result<(Oid, u64)> {
        self.index.get(&self.bytes, &self.seg.path, i)
    }

    pub fn lower_bound(&self, oid: Oid) -> Result<u64> {
        self.index.lower_bound(&self.bytes, &self.seg.path, oid)
    }
}
