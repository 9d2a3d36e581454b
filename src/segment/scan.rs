//! Scanning a segment's records in file order: transactions, padding, the index, and
//! where the data ends (a torn or damaged record, a zero tail).

use super::*;

/// One step of a scan.
pub(crate) enum Step<'a> {
    /// A committed transaction (`TTTT`), verified, with its record bytes.
    Txn { offset: u64, txn: DecodedTxn, bytes: &'a [u8] },
    /// Padding, or a voted-then-aborted (or never finished) transaction.
    Skip,
    /// The index record of a sealed segment starts here: the data ends.
    Index,
    /// Clean end of the data: end of file, or only zeros (preallocated space) after.
    End,
    /// Not a valid record: a torn tail, or corruption (the caller decides).
    Invalid(String),
}

/// Walks the records of a segment from the header on, reading in large chunks.
pub(crate) struct Scanner {
    file: Arc<dyn VFile>,
    path: PathBuf,
    pub pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_at: u64,
    verify_data: bool,
    form: RecordForm,
    /// Known damaged ranges `[start, end)` (fault containment) that iterations step over.
    skips: Vec<(u64, u64)>,
}

const CHUNK: usize = 1 << 20;

impl Scanner {
    /// Scan `[from, end)` of `seg`.
    pub fn new(seg: &SegmentFile, from: u64, end: u64) -> Scanner {
        Scanner {
            file: seg.file.clone(),
            path: seg.path.clone(),
            pos: from,
            end,
            buf: Vec::new(),
            buf_at: 0,
            verify_data: false,
            form: seg.header.record_form(),
            skips: Vec::new(),
        }
    }

    /// The same scan, stepping over the known damaged ranges `skips` (see `skip_damaged`).
    pub fn skipping(self, skips: Vec<(u64, u64)>) -> Scanner {
        Scanner { skips, ..self }
    }

    /// At the start of a known damaged range: go on after it, and say which it was.
    pub fn skip_damaged(&mut self) -> Option<(u64, u64)> {
        let r = self.skips.iter().copied().find(|r| r.0 == self.pos)?;
        self.pos = r.1;
        Some(r)
    }

    /// A scanner that also verifies each data record's own CRC (for `check`).
    pub fn verifying(seg: &SegmentFile, from: u64, end: u64) -> Scanner {
        Scanner { verify_data: true, ..Scanner::new(seg, from, end) }
    }

    /// `len` bytes at `off` (within `end`), through the chunk buffer.
    fn bytes(&mut self, off: u64, len: u64) -> Result<Option<&[u8]>> {
        let Some(stop) = off.checked_add(len).filter(|&s| s <= self.end) else { return Ok(None) };
        let have = off >= self.buf_at && stop <= self.buf_at + self.buf.len() as u64;
        if !have {
            let n = (len as usize).max(CHUNK).min((self.end - off) as usize);
            self.buf.resize(n, 0);
            match self.file.read_exact_at(&mut self.buf, off) {
                Ok(()) => self.buf_at = off,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // The file got shorter since `end` was taken: a writer in another
                    // process sealed the active segment (cutting off preallocated zeros) or
                    // took back a failed write. The data ends where the file ends now.
                    self.buf.clear();
                    let now = self.file.len().map_err(|e| Error::io(&self.path, "stat", e))?;
                    if now >= self.end {
                        return Err(Error::io(&self.path, "read", e));
                    }
                    self.end = now;
                    return self.bytes(off, len);
                }
                Err(e) => return Err(Error::io(&self.path, "read", e)),
            }
        }
        let s = (off - self.buf_at) as usize;
        Ok(Some(&self.buf[s..s + len as usize]))
    }

    pub fn next_step(&mut self) -> Result<Step<'_>> {
        let pos = self.pos;
        if pos == self.end {
            return Ok(Step::End);
        }
        let path = self.path.clone();
        let Some(head) = self.bytes(pos, RECORD_HEAD)? else {
            return Ok(Step::Invalid("a record header runs past the end of the file".into()));
        };
        let marker = [head[0], head[1], head[2], head[3]];
        let len = le64(head, 4);
        if marker == MARK_INDEX {
            return Ok(Step::Index);
        }
        if marker != MARK_TXN && marker != MARK_PAD {
            if marker == [0; 4] && self.zeros_to_end(pos)? {
                return Ok(Step::End);
            }
            return Ok(Step::Invalid(format!("no record marker at offset {pos}")));
        }
        if len < MIN_PADDING || !len.is_multiple_of(8) || pos.checked_add(len).is_none_or(|e| e > self.end) {
            return Ok(Step::Invalid(format!("record at offset {pos} has a bad length or runs past the end")));
        }
        let Some(tail) = self.bytes(pos + len - 8, 8)? else { unreachable!("checked above") };
        if le64(tail, 0) != len {
            return Ok(Step::Invalid(format!("record at offset {pos}: trailing length does not match")));
        }
        if marker == MARK_PAD {
            self.pos = pos + len;
            return Ok(Step::Skip);
        }
        if len < (TXN_HEADER + crate::format::TXN_FOOTER) as u64 {
            return Ok(Step::Invalid(format!("transaction at offset {pos} is too short")));
        }
        let (verify_data, form) = (self.verify_data, self.form);
        let bytes = self.bytes(pos, len)?.expect("checked above");
        match TxnHeader::decode_with(bytes, &path, pos, verify_data, form) {
            Ok(txn) => {
                self.pos = pos + len;
                let s = (pos - self.buf_at) as usize;
                Ok(Step::Txn { offset: pos, txn, bytes: &self.buf[s..s + len as usize] })
            }
            // The caller names the file and the record's offset: only say what is wrong.
            Err(e) => Ok(Step::Invalid(match e.offset() {
                Some(at) if at != pos => format!("{} (at offset {at})", e.detail()),
                _ => e.detail(),
            })),
        }
    }

    /// Whether every byte from `pos` to the end is zero (preallocated, never written).
    fn zeros_to_end(&mut self, mut pos: u64) -> Result<bool> {
        while pos < self.end {
            let n = (self.end - pos).min(CHUNK as u64);
            if self.bytes(pos, n)?.is_some_and(|b| b.iter().any(|&x| x != 0)) {
                return Ok(false);
            }
            pos += n;
        }
        Ok(true)
    }

    /// After damage at `at`: the first offset after it (8-aligned, at most `limit`, where
    /// a valid transaction is known to start) at which a transaction record verifies
    /// (`TTTT`, or `PPPP` for one voted and never finished).
    pub fn resync(&mut self, at: u64, limit: u64) -> Result<u64> {
        let (path, form) = (self.path.clone(), self.form);
        let mut p = at + MIN_PADDING;
        while p < limit {
            let head = self.bytes(p, RECORD_HEAD)?.map(|h| ([h[0], h[1], h[2], h[3]], le64(h, 4)));
            if let Some((_, len)) = head.filter(|(m, _)| *m == MARK_TXN || *m == MARK_PAD) {
                let fits =
                    len >= MIN_PADDING && len.is_multiple_of(8) && p.checked_add(len).is_some_and(|e| e <= self.end);
                if fits {
                    let mut b = self.bytes(p, len)?.expect("fits").to_vec();
                    b[..4].copy_from_slice(&MARK_TXN);
                    if TxnHeader::decode_with(&b, &path, p, false, form).is_ok() {
                        return Ok(p);
                    }
                }
            }
            p += 8;
        }
        Ok(limit)
    }

    /// After an invalid record at `at`: is there a later valid transaction written after
    /// `at` had been made durable? Then `at` was acknowledged data that is now damaged,
    /// not a torn tail. Candidates are 8-aligned `TTTT` markers.
    pub fn durable_evidence_after(&mut self, at: u64) -> Result<Option<u64>> {
        let mut p = at + 8;
        while p + MIN_PADDING <= self.end {
            let found = matches!(self.bytes(p, 4)?, Some(m) if m == MARK_TXN);
            if found {
                let len = self.bytes(p + 4, 8)?.map(|b| le64(b, 0)).unwrap_or(0);
                if len >= MIN_PADDING && len % 8 == 0 && p.checked_add(len).is_some_and(|e| e <= self.end) {
                    let (path, form) = (self.path.clone(), self.form);
                    if let Some(b) = self.bytes(p, len)? {
                        if let Ok(t) = TxnHeader::decode_with(b, &path, p, false, form) {
                            if t.header.durable_end > at {
                                return Ok(Some(p));
                            }
                        }
                    }
                }
            }
            p += 8;
        }
        Ok(None)
    }
}

// -----------------------------------------------------------------------------------
// Sealing and past segments.
