//! Fault containment in the active segment: a committed transaction record that does not
//! verify, with valid transactions after it, is *damage* (not a torn tail; see
//! `recovery`). Open does not give up: it skips to the next valid record, serves the
//! rest, and answers the objects the damaged transaction may hold with a damage error.
//!
//! Which objects? Each data record carries the distance back to its transaction's start
//! and its own CRC, so the records of a damaged transaction are found by scanning its
//! bytes for headers whose distance field names their own position. The walk through
//! the transaction's records (by their lengths, from the header's data start when the
//! header verifies) then accounts for every record; one record that does not verify is
//! located exactly (its oid is corrected by trying the one-byte changes that make its
//! CRC match, and kept as written otherwise). If more than one record cannot be
//! accounted for, the oids are unknown and every object is suspect.

use crate::error::Error;
use crate::format::{crc, crc_append, le32, le64, RecordForm, MARK_PAD, TXN_FOOTER, TXN_HEADER};
use crate::types::{Oid, Tid};
use std::collections::BTreeSet;
use std::path::Path;

/// A damaged range `[start, end)` of the active segment: a committed transaction record
/// that does not verify (with any padding after it), up to the next valid record.
#[derive(Clone, Debug)]
pub struct DamagedRange {
    pub start: u64,
    pub end: u64,
    /// The tid of the last valid transaction before it (`Tid::ZERO` if none): the
    /// damaged transaction is newer, so reads as of this tid or before are unaffected.
    pub after: Tid,
    /// The damaged transaction's tid, if a verified part says (its header, or one of
    /// its data records: each has its own CRC).
    pub tid: Option<Tid>,
    /// The oids the damaged transaction may hold; `None`: unknown, every object is
    /// suspect.
    pub oids: Option<BTreeSet<Oid>>,
    /// Why the record did not verify, and why this is damage rather than a torn write.
    pub why: String,
}

impl DamagedRange {
    /// Whether `oid` may have a revision in this range.
    pub fn suspects(&self, oid: Oid) -> bool {
        self.oids.as_ref().is_none_or(|s| s.contains(&oid))
    }

    /// The error a read of a suspect object gets.
    pub fn error(&self, path: &Path, oid: Oid) -> Error {
        Error::corrupted(
            path,
            self.start,
            format!(
                "oid {oid} may have a revision in a damaged transaction (bytes {}..{}); \
                 `fs2 check --repair --salvage` moves it aside",
                self.start, self.end
            ),
        )
    }

    /// One line for reports: where, which tid, which oids.
    pub fn describe(&self, path: &Path) -> String {
        let tid = self.tid.map_or("unreadable".to_string(), |t| t.to_string());
        let oids = match &self.oids {
            Some(s) => s.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(" "),
            None => "unknown (every object is suspect)".to_string(),
        };
        format!(
            "{} at offset {}: damaged transaction ({} bytes), tid {tid}, oids {oids}",
            path.display(),
            self.start,
            self.end - self.start
        )
    }
}

/// Locate what the damaged bytes `b` (the range starting at file offset `start`, the
/// start of a record) held. `after`: the tid of the last valid transaction before it.
/// `form`: the segment's data-record form.
pub(crate) fn analyse(b: &[u8], start: u64, after: Tid, form: RecordForm) -> DamagedRange {
    let hl = form.header_len();
    let record_ok = |b: &[u8], p: usize| record_ok(b, p, form);
    let mut r = DamagedRange { start, end: start + b.len() as u64, after, tid: None, oids: None, why: String::new() };
    if b.len() >= 4 && b[..4] == MARK_PAD {
        // Never committed (padding, or a voted transaction not finished): nothing lost.
        r.oids = Some(BTreeSet::new());
        return r;
    }
    // The header, if it verifies: tid, data start, record count.
    let header = (b.len() >= TXN_HEADER)
        .then(|| {
            let meta = le16_sum(b);
            let data_start = TXN_HEADER + meta;
            (data_start <= b.len() && crc_append(crc(&b[12..40]), &b[TXN_HEADER..data_start]) == le32(b, 40))
                .then(|| (Tid(le64(b, 12)), data_start, le32(b, 36) as usize))
        })
        .flatten();
    // Data records found by their distance-back field; `true` if their CRC verifies.
    let found: Vec<(usize, bool)> = (TXN_HEADER..b.len().saturating_sub(hl - 1))
        .filter(|&p| le64(b, p + 32) == p as u64)
        .map(|p| (p, record_ok(b, p)))
        .collect();
    let tid = header.map(|h| h.0).or_else(|| found.iter().find(|f| f.1).map(|f| Tid(le64(b, f.0))));
    r.tid = tid;
    let mut oids = BTreeSet::new();
    let mut anomalies = 0;
    let next_valid = |after: usize| found.iter().find(|f| f.0 > after && f.1).map(|f| f.0);
    let body_end = b.len().saturating_sub(TXN_FOOTER);
    match header {
        Some((_, data_start, count)) => {
            let mut pos = data_start;
            for i in 0..count {
                if pos + hl > b.len() {
                    return r;
                }
                if record_ok(b, pos) {
                    oids.insert(Oid(le64(b, pos + 16)));
                    pos += hl + le64(b, pos + 8) as usize;
                    continue;
                }
                anomalies += 1;
                oids.extend(damaged_oids(b, pos, form));
                pos = match next_valid(pos) {
                    Some(n) => n,
                    None if i + 1 == count => body_end,
                    None => return r,
                };
            }
        }
        None => {
            // The header is damaged: every record must verify and follow the one before.
            let valid: Vec<usize> = found.iter().filter(|f| f.1).map(|f| f.0).collect();
            for w in valid.windows(2) {
                if w[0] + hl + le64(b, w[0] + 8) as usize != w[1] {
                    return r;
                }
            }
            if let Some(&last) = valid.last() {
                let end = last + hl + le64(b, last + 8) as usize;
                if b.get(end..body_end).is_none_or(|z| z.iter().any(|&x| x != 0)) {
                    return r;
                }
            }
            oids.extend(valid.iter().map(|&p| Oid(le64(b, p + 16))));
        }
    }
    if anomalies <= 1 {
        r.oids = Some(oids);
    }
    r
}

/// User + description + extension lengths of a transaction header.
fn le16_sum(b: &[u8]) -> usize {
    crate::format::le16(b, 28) as usize + crate::format::le16(b, 30) as usize + le32(b, 32) as usize
}

/// Whether the data record at `p` of `b` verifies (its length fits and its CRCs match).
fn record_ok(b: &[u8], p: usize, form: RecordForm) -> bool {
    let hl = form.header_len();
    let Some(end) = (le64(b, p + 8) as usize).checked_add(p + hl).filter(|&e| e <= b.len()) else {
        return false;
    };
    match form {
        RecordForm::V1 => crc_append(crc(&b[p..p + 44]), &b[p + hl..end]) == le32(b, p + 44),
        RecordForm::V2 => header_ok(&b[p..p + hl]) && crc(&b[p + hl..end]) == le32(b, p + 44),
    }
}

/// Whether a version-2 data record header verifies by its own CRC.
fn header_ok(h: &[u8]) -> bool {
    crc(&h[..52]) == le32(h, 52) && le32(h, 48) == 0
}

/// The oid a data record that does not verify belongs to: the oid a one-byte change of
/// the oid field gives if that makes the CRC match (the damage is in the oid), else the
/// oid as written (the damage is elsewhere in the record).
fn damaged_oids(b: &[u8], p: usize, form: RecordForm) -> Vec<Oid> {
    let hl = form.header_len();
    let Some(h) = b.get(p..p + hl) else { return Vec::new() };
    let written = vec![Oid(le64(h, 16))];
    let mut out = Vec::new();
    let len = le64(h, 8) as usize;
    // What the header bytes before its CRC must give: V1, the record CRC with the data;
    // V2, the header's own CRC (when it matches, the damage is in the data).
    let (crc_at, data_crc) = match form {
        RecordForm::V1 => {
            let Some(data) = b.get(p + hl..(p + hl).saturating_add(len)) else { return written };
            (44, Some(crc(data)))
        }
        RecordForm::V2 if header_ok(h) => return written,
        RecordForm::V2 => (52, None),
    };
    let want = le32(h, crc_at);
    let matches = |head: &[u8]| match data_crc {
        Some(d) => crc32c::crc32c_combine(crc(head), d, len) == want,
        None => crc(head) == want,
    };
    let mut head = h[..crc_at].to_vec();
    for i in 16..24 {
        let orig = head[i];
        for v in 0..=255u8 {
            head[i] = v;
            if v != orig && matches(&head) {
                out.push(Oid(le64(&head, 16)));
            }
        }
        head[i] = orig;
    }
    if out.is_empty() {
        written
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{encode_txn, encoded_txn_len, RecordToWrite, TxnMeta, MARK_TXN};

    fn txn(records: &[(u64, &[u8])], form: RecordForm) -> Vec<u8> {
        let meta = TxnMeta { user: b"u".to_vec(), description: b"d".to_vec(), extension: Vec::new() };
        let recs: Vec<RecordToWrite> =
            records.iter().map(|(o, d)| RecordToWrite { oid: Oid(*o), prev: 0, data: Some(d) }).collect();
        let len = encoded_txn_len(&meta, &recs, form);
        let mut b = Vec::new();
        encode_txn(&mut b, len, Tid(7), 4096, &meta, &recs, form);
        b[..4].copy_from_slice(&MARK_TXN);
        b
    }

    /// Every single-byte change of a transaction record still names exactly its oids.
    #[test]
    fn every_one_byte_damage_locates_the_oids() {
        for form in [RecordForm::V1, RecordForm::V2] {
            let b = txn(&[(1, b"hello"), (0x1234, b""), (3, b"some longer data here")], form);
            let want: BTreeSet<Oid> = [1, 0x1234, 3].into_iter().map(Oid).collect();
            for i in 4..b.len() {
                for mask in [0xff, 0x01, 0x80] {
                    let mut d = b.clone();
                    d[i] ^= mask;
                    let r = analyse(&d, 4096, Tid(1), form);
                    let got = r.oids.unwrap_or_else(|| panic!("{form:?} byte {i} xor {mask:#x}: oids unknown"));
                    assert_eq!(want, got, "{form:?} byte {i} xor {mask:#x}");
                }
            }
        }
    }
}
