//! Transaction records (`TTTT`, or `PPPP` while being written), the data records inside
//! them, and padding records.

use super::{crc, crc_append, le16, le32, le64, put, MARK_PAD, MARK_TXN};
use crate::error::{Error, Result};
use crate::types::{Oid, Tid};
use std::path::Path;

pub const TXN_HEADER: usize = 48;
pub const TXN_FOOTER: usize = 16;
pub const DATA_HEADER: usize = 48;
/// The smallest padding record: marker, length, trailing length, rounded to 8.
pub const MIN_PADDING: u64 = 24;

/// Data-record flag: this record deletes the object (distinct from empty data).
pub const FLAG_DELETE: u32 = 1;

/// User, description and extension of a transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnMeta {
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    pub extension: Vec<u8>,
}

impl TxnMeta {
    fn len(&self) -> usize {
        self.user.len() + self.description.len() + self.extension.len()
    }
    pub fn validate(&self) -> Result<()> {
        if self.user.len() > u16::MAX as usize || self.description.len() > u16::MAX as usize {
            return Err(Error::invalid("user and description are limited to 65535 bytes each"));
        }
        if self.extension.len() > u32::MAX as usize {
            return Err(Error::invalid("extension is limited to 4 GiB"));
        }
        Ok(())
    }
}

/// The fixed 48 bytes at the start of a transaction record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnHeader {
    /// `true` for `TTTT`, `false` for `PPPP` (scribble: not (yet) a transaction).
    pub committed: bool,
    pub len: u64,
    pub tid: Tid,
    /// Every byte of the file below this offset was durable when this record was written.
    pub durable_end: u64,
    pub user_len: u16,
    pub desc_len: u16,
    pub ext_len: u32,
    pub count: u32,
    pub header_crc: u32,
}

impl TxnHeader {
    /// Decode the marker and the lengths. `Ok(None)` for a padding record whose length
    /// is not followed by transaction fields (callers use `len` from `padding_len`).
    pub fn from_bytes(b: &[u8; TXN_HEADER]) -> Option<TxnHeader> {
        let committed = match [b[0], b[1], b[2], b[3]] {
            MARK_TXN => true,
            MARK_PAD => false,
            _ => return None,
        };
        Some(TxnHeader {
            committed,
            len: le64(b, 4),
            tid: Tid(le64(b, 12)),
            durable_end: le64(b, 20),
            user_len: le16(b, 28),
            desc_len: le16(b, 30),
            ext_len: le32(b, 32),
            count: le32(b, 36),
            header_crc: le32(b, 40),
        })
    }

    pub fn meta_len(&self) -> u64 {
        self.user_len as u64 + self.desc_len as u64 + self.ext_len as u64
    }
}

/// The fixed 48 bytes before each object's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub tid: Tid,
    pub data_len: u64,
    pub oid: Oid,
    /// File offset of this oid's previous record in this segment; 0 = no earlier record
    /// anywhere; 1 = the previous record is in an earlier segment.
    pub prev: u64,
    /// Distance back from this record to the start of its transaction record.
    pub txn_offset: u64,
    pub flags: u32,
    /// CRC32C of bytes 0..44 of this header followed by the data.
    pub crc: u32,
}

impl DataHeader {
    pub fn is_delete(&self) -> bool {
        self.flags & FLAG_DELETE != 0
    }

    pub fn to_bytes(self) -> [u8; DATA_HEADER] {
        let mut b = [0u8; DATA_HEADER];
        put(&mut b, 0, &self.tid.to_le_bytes());
        put(&mut b, 8, &self.data_len.to_le_bytes());
        put(&mut b, 16, &self.oid.to_le_bytes());
        put(&mut b, 24, &self.prev.to_le_bytes());
        put(&mut b, 32, &self.txn_offset.to_le_bytes());
        put(&mut b, 40, &self.flags.to_le_bytes());
        put(&mut b, 44, &self.crc.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; DATA_HEADER]) -> DataHeader {
        DataHeader {
            tid: Tid(le64(b, 0)),
            data_len: le64(b, 8),
            oid: Oid(le64(b, 16)),
            prev: le64(b, 24),
            txn_offset: le64(b, 32),
            flags: le32(b, 40),
            crc: le32(b, 44),
        }
    }

    /// The checksum this header and `data` should carry.
    pub fn compute_crc(&self, data: &[u8]) -> u32 {
        crc_append(crc(&self.to_bytes()[..44]), data)
    }

    /// Check the fields that do not need the data; `at` is this record's file offset.
    pub fn check_shape(&self, path: &Path, at: u64, data_end: u64) -> Result<()> {
        let ok_flags = self.flags & !FLAG_DELETE == 0 && !(self.is_delete() && self.data_len != 0);
        let end = (at + DATA_HEADER as u64).checked_add(self.data_len);
        if !ok_flags || end.is_none_or(|e| e > data_end) || self.txn_offset > at || self.prev >= at {
            return Err(Error::corrupted(path, at, "bad data record header"));
        }
        Ok(())
    }

    /// Verify `data` against the record's checksum.
    pub fn verify(&self, data: &[u8], path: &Path, at: u64) -> Result<()> {
        if data.len() as u64 != self.data_len || self.compute_crc(data) != self.crc {
            return Err(Error::checksum(path, at, "data record"));
        }
        Ok(())
    }
}

/// One object of a transaction being encoded.
pub struct RecordToWrite<'a> {
    pub oid: Oid,
    pub prev: u64,
    /// `None` = delete the object.
    pub data: Option<&'a [u8]>,
}

/// Length of the encoded transaction record, a multiple of 8 (before alignment padding).
pub fn encoded_txn_len(meta: &TxnMeta, records: &[RecordToWrite<'_>]) -> u64 {
    let body: u64 = records.iter().map(|r| DATA_HEADER as u64 + r.data.map_or(0, |d| d.len() as u64)).sum();
    (TXN_HEADER as u64 + meta.len() as u64 + body + TXN_FOOTER as u64).div_ceil(8) * 8
}

/// Append a transaction record of length `len` (≥ `encoded_txn_len`, multiple of 8) to
/// `out`, marked `PPPP` (the commit flips it to `TTTT`). Returns the offsets of the data
/// records relative to the start of the record.
pub fn encode_txn(
    out: &mut Vec<u8>,
    len: u64,
    tid: Tid,
    durable_end: u64,
    meta: &TxnMeta,
    records: &[RecordToWrite<'_>],
) -> Vec<u64> {
    debug_assert!(len >= encoded_txn_len(meta, records) && len.is_multiple_of(8));
    let start = out.len();
    let mut h = [0u8; TXN_HEADER];
    put(&mut h, 0, &MARK_PAD);
    put(&mut h, 4, &len.to_le_bytes());
    put(&mut h, 12, &tid.to_le_bytes());
    put(&mut h, 20, &durable_end.to_le_bytes());
    put(&mut h, 28, &(meta.user.len() as u16).to_le_bytes());
    put(&mut h, 30, &(meta.description.len() as u16).to_le_bytes());
    put(&mut h, 32, &(meta.extension.len() as u32).to_le_bytes());
    put(&mut h, 36, &(records.len() as u32).to_le_bytes());
    let hc = crc_append(crc_append(crc_append(crc(&h[12..40]), &meta.user), &meta.description), &meta.extension);
    put(&mut h, 40, &hc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&meta.user);
    out.extend_from_slice(&meta.description);
    out.extend_from_slice(&meta.extension);
    let mut offsets = Vec::with_capacity(records.len());
    for r in records {
        let rel = (out.len() - start) as u64;
        let data = r.data.unwrap_or(&[]);
        let mut dh = DataHeader {
            tid,
            data_len: data.len() as u64,
            oid: r.oid,
            prev: r.prev,
            txn_offset: rel,
            flags: if r.data.is_none() { FLAG_DELETE } else { 0 },
            crc: 0,
        };
        dh.crc = dh.compute_crc(data);
        out.extend_from_slice(&dh.to_bytes());
        out.extend_from_slice(data);
        offsets.push(rel);
    }
    out.resize(start + len as usize - TXN_FOOTER, 0);
    let c = crc(&out[start + 4..]);
    out.extend_from_slice(&c.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    offsets
}

/// The bytes of a padding record of length `len` that must be written: its marker and
/// length, and its trailing length. The bytes between are never read.
pub fn encode_padding(len: u64) -> ([u8; 12], [u8; 8]) {
    debug_assert!(len >= MIN_PADDING && len.is_multiple_of(8));
    let mut head = [0u8; 12];
    put(&mut head, 0, &MARK_PAD);
    put(&mut head, 4, &len.to_le_bytes());
    (head, len.to_le_bytes())
}

/// A transaction record decoded from a buffer holding exactly the record.
#[derive(Clone, Debug)]
pub struct DecodedTxn {
    pub header: TxnHeader,
    pub meta: TxnMeta,
    /// (offset of the data record relative to the transaction start, header).
    pub records: Vec<(u64, DataHeader)>,
}

impl TxnHeader {
    /// Fully validate a `TTTT` or voted `PPPP` transaction record held in `b` (the whole
    /// record) that starts at file offset `at`: whole-record CRC, header CRC, every data
    /// record's bounds and CRC.
    #[cfg(test)]
    pub fn decode(b: &[u8], path: &Path, at: u64) -> Result<DecodedTxn> {
        TxnHeader::decode_with(b, path, at, true)
    }

    /// [`TxnHeader::decode`]; `verify_data: false` skips the data records' own CRCs, which
    /// cover bytes the whole-record CRC already covers (loads verify them on their own).
    pub fn decode_with(b: &[u8], path: &Path, at: u64, verify_data: bool) -> Result<DecodedTxn> {
        let bad = |what: &str| Error::corrupted(path, at, format!("transaction record: {what}"));
        let head: &[u8; TXN_HEADER] =
            b.get(..TXN_HEADER).and_then(|s| s.try_into().ok()).ok_or_else(|| bad("short"))?;
        let h = TxnHeader::from_bytes(head).ok_or_else(|| bad("bad marker"))?;
        let len = b.len();
        if h.len != len as u64
            || !len.is_multiple_of(8)
            || len < TXN_HEADER + TXN_FOOTER
            || le64(b, len - 8) != h.len
            || le32(b, len - 12) != 0
        {
            return Err(bad("bad length"));
        }
        if le32(b, len - TXN_FOOTER) != crc(&b[4..len - TXN_FOOTER]) {
            return Err(Error::checksum(path, at, "transaction record"));
        }
        let meta_end = TXN_HEADER as u64 + h.meta_len();
        if meta_end > (len - TXN_FOOTER) as u64 {
            return Err(bad("metadata longer than the record"));
        }
        let (u, d) = (TXN_HEADER + h.user_len as usize, TXN_HEADER + h.user_len as usize + h.desc_len as usize);
        let meta = TxnMeta {
            user: b[TXN_HEADER..u].to_vec(),
            description: b[u..d].to_vec(),
            extension: b[d..meta_end as usize].to_vec(),
        };
        let hc = crc_append(crc(&b[12..40]), &b[TXN_HEADER..meta_end as usize]);
        if hc != h.header_crc {
            return Err(Error::checksum(path, at, "transaction header"));
        }
        let mut records = Vec::with_capacity(h.count.min(1 << 16) as usize);
        let mut pos = meta_end;
        let body_end = (len - TXN_FOOTER) as u64;
        for _ in 0..h.count {
            let hb: &[u8; DATA_HEADER] = b
                .get(pos as usize..pos as usize + DATA_HEADER)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| bad("data record past the end"))?;
            let dh = DataHeader::from_bytes(hb);
            dh.check_shape(path, at + pos, at + body_end)?;
            if dh.tid != h.tid || dh.txn_offset != pos {
                return Err(Error::corrupted(path, at + pos, "data record does not belong to its transaction"));
            }
            if verify_data {
                let data = &b[pos as usize + DATA_HEADER..(pos + DATA_HEADER as u64 + dh.data_len) as usize];
                dh.verify(data, path, at + pos)?;
            }
            records.push((pos, dh));
            pos += DATA_HEADER as u64 + dh.data_len;
        }
        if b[pos as usize..body_end as usize].iter().any(|&x| x != 0) {
            return Err(bad("non-zero bytes after the last data record"));
        }
        Ok(DecodedTxn { header: h, meta, records })
    }
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    fn sample() -> Vec<u8> {
        let meta = TxnMeta { user: b"u".to_vec(), description: b"d".to_vec(), extension: vec![] };
        let recs = [
            RecordToWrite { oid: Oid(1), prev: 0, data: Some(b"hi") },
            RecordToWrite { oid: Oid(2), prev: 1, data: None },
        ];
        let len = encoded_txn_len(&meta, &recs);
        let mut out = Vec::new();
        let offs = encode_txn(&mut out, len, Tid(0x0102), 4096, &meta, &recs);
        assert_eq!(offs, vec![50, 100]);
        out
    }

    #[test]
    fn known_bytes() {
        let b = sample();
        assert_eq!(b.len(), 168);
        assert_eq!(
            hex(&b[..48]),
            concat!(
                "50505050",         // PPPP until committed
                "a800000000000000", // length 168
                "0201000000000000", // tid
                "0010000000000000", // durable_end 4096
                "0100",             // user length
                "0100",             // description length
                "00000000",         // extension length
                "02000000",         // record count
            )
            .to_string()
                + &hex(&b[40..44])
                + "00000000"
        );
        assert_eq!(&b[48..50], b"ud");
        assert_eq!(
            hex(&b[50..94]),
            concat!(
                "0201000000000000", // tid
                "0200000000000000", // data length
                "0100000000000000", // oid
                "0000000000000000", // prev: none
                "3200000000000000", // back to txn start: 50
                "00000000",         // flags
            )
        );
        assert_eq!(&b[98..100], b"hi");
        assert_eq!(
            hex(&b[100..144]),
            concat!(
                "0201000000000000", // tid
                "0000000000000000", // data length 0
                "0200000000000000", // oid
                "0100000000000000", // prev: in an earlier segment
                "6400000000000000", // back to txn start: 100
                "01000000",         // flags: deletion
            )
        );
        assert_eq!(hex(&b[148..152]), "00000000", "zero padding to a multiple of 8");
        assert_eq!(hex(&b[156..160]), "00000000");
        assert_eq!(hex(&b[160..]), "a800000000000000");
        let d = TxnHeader::decode(&b, Path::new("x"), 4096).unwrap();
        assert!(!d.header.committed);
        assert_eq!(d.meta.user, b"u");
        assert_eq!(d.records.len(), 2);
        assert!(d.records[1].1.is_delete());
        assert_eq!(d.records[1].1.prev, 1);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let good = sample();
        for i in 4..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = good.clone();
                b[i] ^= bit;
                assert!(TxnHeader::decode(&b, Path::new("x"), 4096).is_err(), "byte {i} bit {bit}");
            }
        }
        // The marker is outside the CRC (it flips at commit) but must be TTTT or PPPP.
        let mut b = good.clone();
        b[0] = b'X';
        assert!(TxnHeader::decode(&b, Path::new("x"), 4096).is_err());
        b[..4].copy_from_slice(&MARK_TXN);
        assert!(TxnHeader::decode(&b, Path::new("x"), 4096).unwrap().header.committed);
    }

    #[test]
    fn every_truncation_is_detected() {
        let good = sample();
        for cut in 0..good.len() {
            assert!(TxnHeader::decode(&good[..cut], Path::new("x"), 4096).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn data_header_known_bytes_and_crc() {
        let mut h = DataHeader { tid: Tid(7), data_len: 0, oid: Oid(9), prev: 0, txn_offset: 48, flags: 0, crc: 0 };
        h.crc = h.compute_crc(b"");
        assert!(h.verify(b"", Path::new("x"), 100).is_ok());
        assert!(h.verify(b"x", Path::new("x"), 100).is_err());
        let del = DataHeader { flags: FLAG_DELETE, ..h };
        // Empty data and deletion are distinct: the flag is under the checksum.
        assert_ne!(del.compute_crc(b""), h.crc);
        assert_eq!(DataHeader::from_bytes(&h.to_bytes()), h);
    }
}
