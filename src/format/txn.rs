//! Transaction records (`TTTT`, or `PPPP` while being written), the data records inside
//! them, and padding records.

use super::{crc, crc_append, le16, le32, le64, put, MARK_PAD, MARK_TXN};
use crate::error::{Error, Result};
use crate::types::{Oid, Tid};
use std::path::Path;

pub const TXN_HEADER: usize = 48;
pub const TXN_FOOTER: usize = 16;
/// The data-record header of the current format (version 2); see [`RecordForm`].
pub const DATA_HEADER: usize = 56;
/// The data-record header of format version 1.
pub const DATA_HEADER_V1: usize = 48;
/// The smallest padding record: marker, length, trailing length, rounded to 8.
pub const MIN_PADDING: u64 = 24;

/// Data-record flag: this record deletes the object (distinct from empty data).
pub const FLAG_DELETE: u32 = 1;

// Transaction header offsets (the marker is at 0).
const T_LEN: usize = 4;
const T_TID: usize = 12;
const T_DURABLE_END: usize = 20;
const T_USER_LEN: usize = 28;
const T_DESC_LEN: usize = 30;
const T_EXT_LEN: usize = 32;
const T_COUNT: usize = 36;
const T_HEADER_CRC: usize = 40;
// Footer offsets, from the end of the record.
const F_CRC: usize = TXN_FOOTER;
const F_RESERVED: usize = 12;
const F_LEN: usize = 8;

// Data-record header offsets.
const D_TID: usize = 0;
const D_LEN: usize = 8;
const D_OID: usize = 16;
const D_PREV: usize = 24;
const D_TXN_OFFSET: usize = 32;
const D_FLAGS: usize = 40;
/// Version 1: CRC of bytes 0..44 and the data. Version 2: CRC of the data alone.
const D_CRC: usize = 44;
/// Version 2: reserved (0), then the CRC of bytes 0..52.
const D_RESERVED: usize = 48;
const D_HEADER_CRC: usize = 52;

/// The layout of the data records of a segment, fixed by its header's format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordForm {
    /// Version 1: a 48-byte header; one CRC covers the header and the data, so nothing
    /// of a record is trusted before all of it is read.
    V1,
    /// Version 2: a 56-byte header with its own CRC, and a CRC of the data alone: a
    /// reader that needs a tid or a size reads and checks 56 bytes.
    V2,
}

impl RecordForm {
    /// The form new segments are written in.
    pub const CURRENT: RecordForm = RecordForm::V2;

    /// The form of a segment whose header says format `version` (1 or 2; the header
    /// refuses others).
    pub fn of_version(version: u32) -> RecordForm {
        if version == 1 {
            RecordForm::V1
        } else {
            RecordForm::V2
        }
    }

    pub const fn header_len(self) -> usize {
        match self {
            RecordForm::V1 => DATA_HEADER_V1,
            RecordForm::V2 => DATA_HEADER,
        }
    }
}

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
            len: le64(b, T_LEN),
            tid: Tid(le64(b, T_TID)),
            durable_end: le64(b, T_DURABLE_END),
            user_len: le16(b, T_USER_LEN),
            desc_len: le16(b, T_DESC_LEN),
            ext_len: le32(b, T_EXT_LEN),
            count: le32(b, T_COUNT),
            header_crc: le32(b, T_HEADER_CRC),
        })
    }

    pub fn meta_len(&self) -> u64 {
        self.user_len as u64 + self.desc_len as u64 + self.ext_len as u64
    }
}

/// The fixed header before each object's data (`RecordForm::header_len` bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub form: RecordForm,
    pub tid: Tid,
    pub data_len: u64,
    pub oid: Oid,
    /// File offset of this oid's previous record in this segment; 0 = no earlier record
    /// anywhere; 1 = the previous record is in an earlier segment.
    pub prev: u64,
    /// Distance back from this record to the start of its transaction record.
    pub txn_offset: u64,
    pub flags: u32,
    /// V1: CRC32C of bytes 0..44 of this header followed by the data. V2: CRC32C of the
    /// data.
    pub crc: u32,
    /// V2: CRC32C of bytes 0..52 of this header (V1 has none: 0).
    pub header_crc: u32,
}

impl DataHeader {
    pub fn header_len(&self) -> usize {
        self.form.header_len()
    }

    pub fn is_delete(&self) -> bool {
        self.flags & FLAG_DELETE != 0
    }

    /// The bytes of the current form's header; a V1 header is the first 48.
    fn raw(&self) -> [u8; DATA_HEADER] {
        let mut b = [0u8; DATA_HEADER];
        put(&mut b, D_TID, &self.tid.to_le_bytes());
        put(&mut b, D_LEN, &self.data_len.to_le_bytes());
        put(&mut b, D_OID, &self.oid.to_le_bytes());
        put(&mut b, D_PREV, &self.prev.to_le_bytes());
        put(&mut b, D_TXN_OFFSET, &self.txn_offset.to_le_bytes());
        put(&mut b, D_FLAGS, &self.flags.to_le_bytes());
        put(&mut b, D_CRC, &self.crc.to_le_bytes());
        put(&mut b, D_HEADER_CRC, &self.header_crc.to_le_bytes());
        b
    }

    /// Append the header's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.raw()[..self.header_len()]);
    }

    /// Decode the header at the start of `b` (at least `form.header_len()` bytes) of a
    /// record at file offset `at`, checking a V2 header's own CRC (not its shape: see
    /// `check_shape`; not the data).
    pub fn parse(b: &[u8], form: RecordForm, path: &Path, at: u64) -> Result<DataHeader> {
        let h = DataHeader::decode(b, form).ok_or_else(|| Error::corrupted(path, at, "data record past the end"))?;
        let reserved = if form == RecordForm::V2 { le32(b, D_RESERVED) } else { 0 };
        if form == RecordForm::V2 && (h.header_crc != crc(&b[..D_HEADER_CRC]) || reserved != 0) {
            return Err(Error::checksum(path, at, "data record header"));
        }
        Ok(h)
    }

    /// [`DataHeader::parse`] without the header CRC check, for bytes another CRC covers
    /// (a transaction record verified whole); `None` if `b` is too short.
    pub fn decode(b: &[u8], form: RecordForm) -> Option<DataHeader> {
        let b = b.get(..form.header_len())?;
        Some(DataHeader {
            form,
            tid: Tid(le64(b, D_TID)),
            data_len: le64(b, D_LEN),
            oid: Oid(le64(b, D_OID)),
            prev: le64(b, D_PREV),
            txn_offset: le64(b, D_TXN_OFFSET),
            flags: le32(b, D_FLAGS),
            crc: le32(b, D_CRC),
            header_crc: if form == RecordForm::V2 { le32(b, D_HEADER_CRC) } else { 0 },
        })
    }

    /// Set the checksums for `data`.
    pub fn seal(&mut self, data: &[u8]) {
        match self.form {
            RecordForm::V1 => self.crc = crc_append(crc(&self.raw()[..D_CRC]), data),
            RecordForm::V2 => {
                self.crc = crc(data);
                self.header_crc = crc(&self.raw()[..D_HEADER_CRC]);
            }
        }
    }

    /// Whether `parse` verified this header on its own (V2); a V1 header is trusted only
    /// with its data (`verify`).
    pub fn checked_alone(&self) -> bool {
        self.form == RecordForm::V2
    }

    /// Where this record's data lies, for a record at `at` in a buffer.
    pub fn data_range(&self, at: u64) -> std::ops::Range<usize> {
        let s = at as usize + self.header_len();
        s..s + self.data_len as usize
    }

    /// Check the fields that do not need the data; `at` is this record's file offset.
    pub fn check_shape(&self, path: &Path, at: u64, data_end: u64) -> Result<()> {
        let ok_flags = self.flags & !FLAG_DELETE == 0 && !(self.is_delete() && self.data_len != 0);
        let end = (at + self.header_len() as u64).checked_add(self.data_len);
        if !ok_flags || end.is_none_or(|e| e > data_end) || self.txn_offset > at || self.prev >= at {
            return Err(Error::corrupted(path, at, "bad data record header"));
        }
        Ok(())
    }

    /// Verify `data` against the record's checksum (V1: with the header).
    pub fn verify(&self, data: &[u8], path: &Path, at: u64) -> Result<()> {
        let ok = data.len() as u64 == self.data_len
            && match self.form {
                RecordForm::V1 => crc_append(crc(&self.raw()[..D_CRC]), data) == self.crc,
                RecordForm::V2 => crc(data) == self.crc,
            };
        if !ok {
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

/// Length of the encoded transaction record, a multiple of 8 (before alignment padding),
/// with data records of `form`.
pub fn encoded_txn_len(meta: &TxnMeta, records: &[RecordToWrite<'_>], form: RecordForm) -> u64 {
    let body: u64 = records.iter().map(|r| form.header_len() as u64 + r.data.map_or(0, |d| d.len() as u64)).sum();
    (TXN_HEADER as u64 + meta.len() as u64 + body + TXN_FOOTER as u64).div_ceil(8) * 8
}

/// The header CRC of a transaction record: header bytes 12..40, then the metadata.
fn txn_header_crc(h: &[u8], meta: &[&[u8]]) -> u32 {
    meta.iter().fold(crc(&h[T_TID..T_HEADER_CRC]), |c, m| crc_append(c, m))
}

/// Append a transaction record of length `len` (≥ `encoded_txn_len`, multiple of 8) to
/// `out`, marked `PPPP` (the commit flips it to `TTTT`), with data records of `form` (the
/// segment's). Returns the offsets of the data records relative to the start of the record.
pub fn encode_txn(
    out: &mut Vec<u8>,
    len: u64,
    tid: Tid,
    durable_end: u64,
    meta: &TxnMeta,
    records: &[RecordToWrite<'_>],
    form: RecordForm,
) -> Vec<u64> {
    debug_assert!(len >= encoded_txn_len(meta, records, form) && len.is_multiple_of(8));
    let start = out.len();
    let mut h = [0u8; TXN_HEADER];
    put(&mut h, 0, &MARK_PAD);
    put(&mut h, T_LEN, &len.to_le_bytes());
    put(&mut h, T_TID, &tid.to_le_bytes());
    put(&mut h, T_DURABLE_END, &durable_end.to_le_bytes());
    put(&mut h, T_USER_LEN, &(meta.user.len() as u16).to_le_bytes());
    put(&mut h, T_DESC_LEN, &(meta.description.len() as u16).to_le_bytes());
    put(&mut h, T_EXT_LEN, &(meta.extension.len() as u32).to_le_bytes());
    put(&mut h, T_COUNT, &(records.len() as u32).to_le_bytes());
    let hc = txn_header_crc(&h, &[&meta.user, &meta.description, &meta.extension]);
    put(&mut h, T_HEADER_CRC, &hc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&meta.user);
    out.extend_from_slice(&meta.description);
    out.extend_from_slice(&meta.extension);
    let mut offsets = Vec::with_capacity(records.len());
    for r in records {
        let rel = (out.len() - start) as u64;
        let data = r.data.unwrap_or(&[]);
        let mut dh = DataHeader {
            form,
            tid,
            data_len: data.len() as u64,
            oid: r.oid,
            prev: r.prev,
            txn_offset: rel,
            flags: if r.data.is_none() { FLAG_DELETE } else { 0 },
            crc: 0,
            header_crc: 0,
        };
        dh.seal(data);
        dh.encode(out);
        out.extend_from_slice(data);
        offsets.push(rel);
    }
    out.resize(start + len as usize - TXN_FOOTER, 0);
    let c = crc(&out[start + T_LEN..]);
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
    put(&mut head, T_LEN, &len.to_le_bytes());
    (head, len.to_le_bytes())
}

/// A transaction record decoded from a buffer holding exactly the record.
#[derive(Clone, Debug)]
pub struct DecodedTxn {
    pub header: TxnHeader,
    pub meta: TxnMeta,
    /// (offset of the data record relative to the transaction start, header); its data
    /// is `bytes[header.data_range(offset)]`.
    pub records: Vec<(u64, DataHeader)>,
}

impl TxnHeader {
    /// Fully validate a `TTTT` or voted `PPPP` transaction record held in `b` (the whole
    /// record) that starts at file offset `at`, with data records of `form`: whole-record
    /// CRC, header CRC, every data record's bounds and CRCs.
    pub fn decode(b: &[u8], path: &Path, at: u64, form: RecordForm) -> Result<DecodedTxn> {
        TxnHeader::decode_with(b, path, at, true, form)
    }

    /// [`TxnHeader::decode`]; `verify_data: false` skips the data records' own CRCs,
    /// which cover bytes the whole-record CRC already covers (loads verify them on their
    /// own).
    pub fn decode_with(b: &[u8], path: &Path, at: u64, verify_data: bool, form: RecordForm) -> Result<DecodedTxn> {
        let bad = |what: &str| Error::corrupted(path, at, format!("transaction record: {what}"));
        let head: &[u8; TXN_HEADER] =
            b.get(..TXN_HEADER).and_then(|s| s.try_into().ok()).ok_or_else(|| bad("short"))?;
        let h = TxnHeader::from_bytes(head).ok_or_else(|| bad("bad marker"))?;
        let len = b.len();
        if h.len != len as u64
            || !len.is_multiple_of(8)
            || len < TXN_HEADER + TXN_FOOTER
            || le64(b, len - F_LEN) != h.len
            || le32(b, len - F_RESERVED) != 0
        {
            return Err(bad("bad length"));
        }
        if le32(b, len - F_CRC) != crc(&b[T_LEN..len - TXN_FOOTER]) {
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
        if txn_header_crc(b, &[&b[TXN_HEADER..meta_end as usize]]) != h.header_crc {
            return Err(Error::checksum(path, at, "transaction header"));
        }
        let mut records = Vec::with_capacity(h.count.min(1 << 16) as usize);
        let mut pos = meta_end;
        let body_end = (len - TXN_FOOTER) as u64;
        for _ in 0..h.count {
            let hb = b.get(pos as usize..body_end as usize).ok_or_else(|| bad("data record past the end"))?;
            // The record CRC covers the data records: their own CRCs are for reads that
            // take one record (and for `check`).
            let dh = match verify_data {
                true => DataHeader::parse(hb, form, path, at + pos)?,
                false => DataHeader::decode(hb, form).ok_or_else(|| bad("data record past the end"))?,
            };
            dh.check_shape(path, at + pos, at + body_end)?;
            if dh.tid != h.tid || dh.txn_offset != pos {
                return Err(Error::corrupted(path, at + pos, "data record does not belong to its transaction"));
            }
            if verify_data {
                dh.verify(&b[dh.data_range(pos)], path, at + pos)?;
            }
            records.push((pos, dh));
            pos += (dh.header_len() as u64) + dh.data_len;
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

    fn sample(form: RecordForm) -> Vec<u8> {
        let meta = TxnMeta { user: b"u".to_vec(), description: b"d".to_vec(), extension: vec![] };
        let recs = [
            RecordToWrite { oid: Oid(1), prev: 0, data: Some(b"hi") },
            RecordToWrite { oid: Oid(2), prev: 1, data: None },
        ];
        let len = encoded_txn_len(&meta, &recs, form);
        let mut out = Vec::new();
        let offs = encode_txn(&mut out, len, Tid(0x0102), 4096, &meta, &recs, form);
        let h = form.header_len() as u64;
        assert_eq!(offs, vec![50, 50 + h + 2]);
        out
    }

    fn txn_header_hex(b: &[u8], len: &str) -> String {
        "50505050".to_string() // PPPP until committed
            + len
            + concat!(
                "0201000000000000", // tid
                "0010000000000000", // durable_end 4096
                "0100",             // user length
                "0100",             // description length
                "00000000",         // extension length
                "02000000",         // record count
            )
            + &hex(&b[40..44])
            + "00000000"
    }

    #[test]
    fn known_bytes_v1() {
        let b = sample(RecordForm::V1);
        assert_eq!(b.len(), 168);
        assert_eq!(hex(&b[..48]), txn_header_hex(&b, "a800000000000000"), "length 168");
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
        assert_eq!(le32(&b, 94), crc_append(crc(&b[50..94]), b"hi"), "one CRC over header and data");
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
        assert_eq!(le32(&b, 152), crc(&b[4..152]));
        assert_eq!(hex(&b[156..160]), "00000000");
        assert_eq!(hex(&b[160..]), "a800000000000000");
        let d = TxnHeader::decode(&b, Path::new("x"), 4096, RecordForm::V1).unwrap();
        assert!(!d.header.committed);
        assert_eq!(d.meta.user, b"u");
        assert_eq!(d.records.len(), 2);
        assert!(d.records[1].1.is_delete());
        assert_eq!(d.records[1].1.prev, 1);
        assert_eq!(&b[d.records[0].1.data_range(d.records[0].0)], b"hi");
    }

    #[test]
    fn known_bytes_v2() {
        let b = sample(RecordForm::V2);
        assert_eq!(b.len(), 184);
        assert_eq!(hex(&b[..48]), txn_header_hex(&b, "b800000000000000"), "length 184");
        assert_eq!(&b[48..50], b"ud");
        assert_eq!(
            hex(&b[50..106]),
            concat!(
                "0201000000000000", // tid
                "0200000000000000", // data length
                "0100000000000000", // oid
                "0000000000000000", // prev: none
                "3200000000000000", // back to txn start: 50
                "00000000",         // flags
                "c2d99df5",         // CRC of the data "hi"
                "00000000",         // reserved
            )
            .to_string()
                + &hex(&crc(&b[50..102]).to_le_bytes()),
            "the header's own CRC covers its bytes 0..52"
        );
        assert_eq!(le32(&b, 94), crc(b"hi"));
        assert_eq!(&b[106..108], b"hi");
        assert_eq!(
            hex(&b[108..160]),
            concat!(
                "0201000000000000", // tid
                "0000000000000000", // data length 0
                "0200000000000000", // oid
                "0100000000000000", // prev: in an earlier segment
                "6c00000000000000", // back to txn start: 108
                "01000000",         // flags: deletion
                "00000000",         // CRC of no data
                "00000000",         // reserved
            )
        );
        assert_eq!(le32(&b, 160), crc(&b[108..160]));
        assert_eq!(hex(&b[164..168]), "00000000", "zero padding to a multiple of 8");
        assert_eq!(le32(&b, 168), crc(&b[4..168]));
        assert_eq!(hex(&b[172..176]), "00000000");
        assert_eq!(hex(&b[176..]), "b800000000000000");
        let d = TxnHeader::decode(&b, Path::new("x"), 4096, RecordForm::V2).unwrap();
        assert_eq!(d.records.len(), 2);
        assert!(d.records[1].1.is_delete());
        assert_eq!(&b[d.records[0].1.data_range(d.records[0].0)], b"hi");
        // Read as the other form, the record is refused.
        assert!(TxnHeader::decode(&b, Path::new("x"), 4096, RecordForm::V1).is_err());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        for form in [RecordForm::V1, RecordForm::V2] {
            let good = sample(form);
            for i in 4..good.len() {
                for bit in [0x01u8, 0x80] {
                    let mut b = good.clone();
                    b[i] ^= bit;
                    assert!(TxnHeader::decode(&b, Path::new("x"), 4096, form).is_err(), "{form:?} byte {i} bit {bit}");
                }
            }
            // The marker is outside the CRC (it flips at commit) but must be TTTT or PPPP.
            let mut b = good.clone();
            b[0] = b'X';
            assert!(TxnHeader::decode(&b, Path::new("x"), 4096, form).is_err());
            b[..4].copy_from_slice(&MARK_TXN);
            assert!(TxnHeader::decode(&b, Path::new("x"), 4096, form).unwrap().header.committed);
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        for form in [RecordForm::V1, RecordForm::V2] {
            let good = sample(form);
            for cut in 0..good.len() {
                assert!(TxnHeader::decode(&good[..cut], Path::new("x"), 4096, form).is_err(), "cut {cut}");
            }
        }
    }

    fn header(form: RecordForm, flags: u32, data: &[u8]) -> DataHeader {
        let mut h = DataHeader {
            form,
            tid: Tid(7),
            data_len: data.len() as u64,
            oid: Oid(9),
            prev: 0,
            txn_offset: 48,
            flags,
            crc: 0,
            header_crc: 0,
        };
        h.seal(data);
        h
    }

    #[test]
    fn data_header_crcs() {
        let p = Path::new("x");
        for form in [RecordForm::V1, RecordForm::V2] {
            let h = header(form, 0, b"");
            assert!(h.verify(b"", p, 100).is_ok());
            assert!(h.verify(b"x", p, 100).is_err());
            // Empty data and deletion are distinct: the flag is under the checksum.
            assert_ne!(header(form, FLAG_DELETE, b""), h);
            let mut b = Vec::new();
            h.encode(&mut b);
            assert_eq!(b.len(), form.header_len());
            assert_eq!(DataHeader::parse(&b, form, p, 100).unwrap(), h);
        }
    }

    #[test]
    fn a_v2_header_is_checked_alone() {
        let p = Path::new("x");
        let h = header(RecordForm::V2, 0, b"some data");
        assert!(h.checked_alone() && !header(RecordForm::V1, 0, b"").checked_alone());
        let mut good = Vec::new();
        h.encode(&mut good);
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x10;
            assert!(DataHeader::parse(&b, RecordForm::V2, p, 100).is_err(), "byte {i}");
        }
        assert!(DataHeader::parse(&good[..55], RecordForm::V2, p, 100).is_err(), "short");
        // The data is checked apart, when it is taken.
        assert!(h.verify(b"some data", p, 100).is_ok());
        assert!(h.verify(b"some dat4", p, 100).is_err());
    }
}
