//! The index record that seals a past segment, and the fixed trailer that ends the file.
//!
//! ```text
//! [fs2i][len][block=256][count N] [N x (oid u64, offset u64), sorted by oid]
//! [ceil(N/256) x crc32c of each block of 256 entries] [zero pad to 8]
//! [oid filter: filter_blocks(N) x 32 B, trailer version 2] [trailer 128 B]
//! ```
//! Open reads only the trailer and checks the header and the block-CRC array against
//! the CRCs it holds; each block of entries is verified against its CRC the first time
//! a lookup touches it. So open is O(1) in entries and no unverified entry is ever used.

use super::filter::{filter_blocks, FilterBuilder, FILTER_BLOCK};
use super::{crc, crc_append, le32, le64, put, MARK_INDEX, MARK_TRAILER};
use crate::error::{Error, Result};
use crate::types::{AsOf, Oid, SegmentName, Tid};
use std::path::Path;

pub const INDEX_HEADER: usize = 24;
pub const INDEX_ENTRY: usize = 16;
/// Entries per CRC block.
pub const INDEX_BLOCK: u64 = 256;
pub const TRAILER_SIZE: usize = 128;
/// The trailer's layout version, written by seal and merge: 2 = an oid filter follows the
/// block CRCs and the trailer holds its CRC. Version 1 (no filter) is still read.
/// Independent of the segment format version (which says how records are laid out).
pub const TRAILER_VERSION: u32 = 2;
const OLDEST_TRAILER_VERSION: u32 = 1;

// Index header offsets (the marker is at 0).
const I_LEN: usize = 4;
const I_BLOCK: usize = 12;
const I_COUNT: usize = 16;

// Trailer offsets (the marker is at 0).
const R_VERSION: usize = 4;
const R_INDEX_OFFSET: usize = 8;
const R_COUNT: usize = 16;
const R_FIRST_TID: usize = 24;
const R_LAST_TID: usize = 32;
const R_TXN_COUNT: usize = 40;
const R_RECORD_COUNT: usize = 48;
const R_FIRST_OID: usize = 56;
const R_LAST_OID: usize = 64;
const R_FLAGS: usize = 72;
const R_HEADER_CRC: usize = 80;
const R_CRCS_CRC: usize = 84;
const R_BASE_LEN: usize = 88;
const R_SOURCE_FIRST: usize = 96;
const R_SOURCE_LAST: usize = 104;
/// CRC of bytes 0..112 (version 1), of bytes 0..112 and 116..120 (version 2).
const R_CRC: usize = 112;
/// Version 2: CRC of the oid filter. Version 1: reserved, 0.
const R_FILTER_CRC: usize = 116;
const R_LEN: usize = 120;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexHeader {
    pub len: u64,
    pub count: u64,
}

impl IndexHeader {
    /// Total length of an index record (through the trailer) for `count` entries, as
    /// this version writes it.
    pub fn record_len(count: u64) -> u64 {
        Self::record_len_of(count, TRAILER_VERSION)
    }
    /// Whether `len` is the length of an index record of `count` entries of any
    /// trailer version this version reads.
    pub fn is_record_len(count: u64, len: u64) -> bool {
        (OLDEST_TRAILER_VERSION..=TRAILER_VERSION).any(|v| Self::record_len_of(count, v) == len)
    }
    /// Total length of an index record of trailer version `version`.
    pub fn record_len_of(count: u64, version: u32) -> u64 {
        Self::filter_offset(count) + Self::filter_len(count, version) + TRAILER_SIZE as u64
    }
    /// Offset of the oid filter (the end of the padded block-CRC array), relative to the
    /// record start.
    pub fn filter_offset(count: u64) -> u64 {
        let blocks = count.div_ceil(INDEX_BLOCK);
        (INDEX_HEADER as u64 + count * INDEX_ENTRY as u64 + blocks * 4).div_ceil(8) * 8
    }
    /// Bytes of the oid filter (none before trailer version 2).
    pub fn filter_len(count: u64, version: u32) -> u64 {
        if version >= 2 {
            filter_blocks(count) * FILTER_BLOCK as u64
        } else {
            0
        }
    }
    /// Offset of the block-CRC array, relative to the record start.
    pub fn crcs_offset(count: u64) -> u64 {
        INDEX_HEADER as u64 + count * INDEX_ENTRY as u64
    }

    pub fn to_bytes(&self) -> [u8; INDEX_HEADER] {
        let mut b = [0u8; INDEX_HEADER];
        put(&mut b, 0, &MARK_INDEX);
        put(&mut b, I_LEN, &self.len.to_le_bytes());
        put(&mut b, I_BLOCK, &(INDEX_BLOCK as u32).to_le_bytes());
        put(&mut b, I_COUNT, &self.count.to_le_bytes());
        b
    }
}

/// What a sealed segment holds, at the very end of its file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Trailer {
    pub version: u32,
    /// Offset of the index record = end of the transaction data.
    pub index_offset: u64,
    pub count: u64,
    pub first_tid: Tid,
    pub last_tid: Tid,
    pub txn_count: u64,
    pub record_count: u64,
    pub first_oid: Oid,
    pub last_oid: Oid,
    /// Set when this index covers a region appended by a semi-sequential merge.
    pub appended: Option<Appended>,
    pub header_crc: u32,
    pub crcs_crc: u32,
    /// CRC of the oid filter (trailer version 2).
    pub filter_crc: u32,
}

/// What an appended region holds: the records of segment `source` retained as of
/// `as_of`, written after `base_len`, the end of the file before the append (whose last
/// 128 bytes are the trailer of the region before this one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_len: u64,
    pub source: SegmentName,
    pub as_of: AsOf,
}

/// Trailer flags.
const APPENDED: u64 = 1;
const AS_OF_TARGET: u64 = 2;

impl Trailer {
    pub fn to_bytes(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        put(&mut b, 0, &MARK_TRAILER);
        put(&mut b, R_VERSION, &self.version.to_le_bytes());
        put(&mut b, R_INDEX_OFFSET, &self.index_offset.to_le_bytes());
        put(&mut b, R_COUNT, &self.count.to_le_bytes());
        put(&mut b, R_FIRST_TID, &self.first_tid.to_le_bytes());
        put(&mut b, R_LAST_TID, &self.last_tid.to_le_bytes());
        put(&mut b, R_TXN_COUNT, &self.txn_count.to_le_bytes());
        put(&mut b, R_RECORD_COUNT, &self.record_count.to_le_bytes());
        put(&mut b, R_FIRST_OID, &self.first_oid.to_le_bytes());
        put(&mut b, R_LAST_OID, &self.last_oid.to_le_bytes());
        if let Some(a) = &self.appended {
            let flags = APPENDED | if a.as_of == AsOf::Target { AS_OF_TARGET } else { 0 };
            put(&mut b, R_FLAGS, &flags.to_le_bytes());
            put(&mut b, R_BASE_LEN, &a.base_len.to_le_bytes());
            put(&mut b, R_SOURCE_FIRST, &a.source.first.to_le_bytes());
            put(&mut b, R_SOURCE_LAST, &a.source.last.to_le_bytes());
        }
        put(&mut b, R_HEADER_CRC, &self.header_crc.to_le_bytes());
        put(&mut b, R_CRCS_CRC, &self.crcs_crc.to_le_bytes());
        if self.version >= 2 {
            put(&mut b, R_FILTER_CRC, &self.filter_crc.to_le_bytes());
        }
        let c = Self::crc_of(&b, self.version);
        put(&mut b, R_CRC, &c.to_le_bytes());
        put(&mut b, R_LEN, &IndexHeader::record_len_of(self.count, self.version).to_le_bytes());
        b
    }

    /// Whether the trailer bytes `b` pass their CRC (as their version defines it).
    pub fn checksum_matches(b: &[u8; TRAILER_SIZE]) -> bool {
        le32(b, R_CRC) == Self::crc_of(b, le32(b, R_VERSION))
    }

    /// The trailer CRC: version 2 covers the filter CRC too (bytes 116..120).
    fn crc_of(b: &[u8; TRAILER_SIZE], version: u32) -> u32 {
        let c = crc(&b[..R_CRC]);
        if version >= 2 {
            crc_append(c, &b[R_FILTER_CRC..R_LEN])
        } else {
            c
        }
    }

    /// Decode the last `TRAILER_SIZE` bytes of a file of length `file_len`.
    pub fn from_bytes(b: &[u8; TRAILER_SIZE], path: &Path, file_len: u64) -> Result<Trailer> {
        let at = file_len.saturating_sub(TRAILER_SIZE as u64);
        if b[..4] != MARK_TRAILER {
            return Err(Error::corrupted(path, at, "no segment trailer (the segment is not sealed)"));
        }
        let version = le32(b, R_VERSION);
        if !(OLDEST_TRAILER_VERSION..=TRAILER_VERSION).contains(&version) {
            // A later trailer layout is not supported; a damaged version field is damage.
            if [1, 2].iter().any(|&v| le32(b, R_CRC) == Self::crc_of(b, v)) {
                let why = format!("trailer format version {version} is not supported (a newer fs2 wrote it)");
                return Err(Error::corrupted(path, at, why));
            }
            return Err(Error::checksum(path, at, "segment trailer"));
        }
        if le32(b, R_CRC) != Self::crc_of(b, version) {
            return Err(Error::checksum(path, at, "segment trailer"));
        }
        let flags = le64(b, R_FLAGS);
        let appended = (flags & APPENDED != 0).then(|| Appended {
            base_len: le64(b, R_BASE_LEN),
            source: SegmentName { first: le64(b, R_SOURCE_FIRST), last: le64(b, R_SOURCE_LAST) },
            as_of: if flags & AS_OF_TARGET != 0 { AsOf::Target } else { AsOf::Source },
        });
        let t = Trailer {
            version: le32(b, R_VERSION),
            index_offset: le64(b, R_INDEX_OFFSET),
            count: le64(b, R_COUNT),
            first_tid: Tid(le64(b, R_FIRST_TID)),
            last_tid: Tid(le64(b, R_LAST_TID)),
            txn_count: le64(b, R_TXN_COUNT),
            record_count: le64(b, R_RECORD_COUNT),
            first_oid: Oid(le64(b, R_FIRST_OID)),
            last_oid: Oid(le64(b, R_LAST_OID)),
            appended,
            header_crc: le32(b, R_HEADER_CRC),
            crcs_crc: le32(b, R_CRCS_CRC),
            filter_crc: if version >= 2 { le32(b, R_FILTER_CRC) } else { 0 },
        };
        let len = le64(b, R_LEN);
        let data_start = t.appended.map_or(super::HEADER_SIZE as u64, |a| a.base_len);
        let appended_ok = match &t.appended {
            None => flags == 0 && b[R_BASE_LEN..R_CRC].iter().all(|&x| x == 0),
            Some(a) => {
                flags & !(APPENDED | AS_OF_TARGET) == 0
                    && a.base_len >= (super::HEADER_SIZE + TRAILER_SIZE) as u64
                    && a.base_len % 8 == 0
                    && a.source.first >= 1
                    && a.source.first <= a.source.last
            }
        };
        let plausible = t.count <= file_len / INDEX_ENTRY as u64
            && len == IndexHeader::record_len_of(t.count, version)
            && t.index_offset.checked_add(len) == Some(file_len)
            && t.index_offset >= data_start
            && appended_ok
            && (version >= 2 || b[R_FILTER_CRC..R_LEN].iter().all(|&x| x == 0))
            && t.first_tid <= t.last_tid
            && t.first_oid <= t.last_oid;
        if !plausible {
            return Err(Error::corrupted(path, at, "segment trailer does not match the file"));
        }
        Ok(t)
    }

    /// Check the index header bytes (at `index_offset`) against this trailer.
    pub fn check_index_header(&self, b: &[u8; INDEX_HEADER], path: &Path) -> Result<()> {
        let want =
            IndexHeader { len: IndexHeader::record_len_of(self.count, self.version), count: self.count }.to_bytes();
        if crc(b) != self.header_crc || *b != want {
            return Err(Error::checksum(path, self.index_offset, "index header"));
        }
        Ok(())
    }
}

/// Encode a whole index record for sorted, unique `entries` (oid, record offset).
pub fn encode_index(entries: &[(Oid, u64)], trailer: Trailer) -> Vec<u8> {
    let count = entries.len() as u64;
    let mut out = Vec::with_capacity(IndexHeader::record_len(count) as usize);
    let sink = |b: &[u8]| -> Result<()> {
        out.extend_from_slice(b);
        Ok(())
    };
    let mut filter = vec![0u8; IndexHeader::filter_len(count, TRAILER_VERSION) as usize];
    encode_index_to(entries.iter().map(|e| Ok(*e)), count, trailer, &mut filter, sink).expect("in memory");
    out
}

/// Stream an index record for `count` sorted, unique entries to `sink` in order, with
/// memory bounded by a chunk and the block CRCs (4 bytes per 256 entries); the oid
/// filter is built in `filter`, zeroed bytes of `IndexHeader::filter_len(count,
/// TRAILER_VERSION)` that the caller provides (a merge maps them from a scratch file, so
/// its heap stays flat). Returns the trailer written.
pub fn encode_index_to(
    entries: impl Iterator<Item = Result<(Oid, u64)>>,
    count: u64,
    mut trailer: Trailer,
    filter: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<Trailer> {
    if filter.len() as u64 != IndexHeader::filter_len(count, TRAILER_VERSION) {
        return Err(Error::invalid("oid filter buffer of the wrong size"));
    }
    let len = IndexHeader::record_len(count);
    let header = IndexHeader { len, count }.to_bytes();
    sink(&header)?;
    let mut crcs = Vec::with_capacity(count.div_ceil(INDEX_BLOCK) as usize * 4);
    let mut chunk = Vec::with_capacity(INDEX_BLOCK as usize * INDEX_ENTRY);
    let mut builder = FilterBuilder { bytes: filter };
    let mut n = 0u64;
    let mut last: Option<Oid> = None;
    for e in entries {
        let (oid, off) = e?;
        if last.is_some_and(|l| l >= oid) {
            return Err(Error::invalid("index entries must be sorted by oid and unique"));
        }
        if last.is_none() {
            trailer.first_oid = oid;
        }
        last = Some(oid);
        builder.insert(oid);
        chunk.extend_from_slice(&oid.to_le_bytes());
        chunk.extend_from_slice(&off.to_le_bytes());
        n += 1;
        if chunk.len() == INDEX_BLOCK as usize * INDEX_ENTRY {
            crcs.extend_from_slice(&crc(&chunk).to_le_bytes());
            sink(&chunk)?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        crcs.extend_from_slice(&crc(&chunk).to_le_bytes());
        sink(&chunk)?;
    }
    if n != count {
        return Err(Error::invalid(format!("index has {n} entries, {count} announced")));
    }
    sink(&crcs)?;
    let used = INDEX_HEADER as u64 + count * INDEX_ENTRY as u64 + crcs.len() as u64;
    sink(&vec![0u8; (IndexHeader::filter_offset(count) - used) as usize])?;
    let filter = builder.bytes;
    sink(filter)?;
    trailer.count = count;
    trailer.version = TRAILER_VERSION;
    trailer.filter_crc = crc(filter);
    trailer.header_crc = crc(&header);
    trailer.crcs_crc = crc(&crcs);
    if let Some(l) = last {
        trailer.last_oid = l;
    }
    sink(&trailer.to_bytes())?;
    Ok(trailer)
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    fn sample() -> Vec<u8> {
        let t = Trailer {
            index_offset: 4096,
            first_tid: Tid(5),
            last_tid: Tid(6),
            txn_count: 2,
            record_count: 3,
            ..Default::default()
        };
        encode_index(&[(Oid(1), 4144), (Oid(3), 4300)], t)
    }

    #[test]
    fn known_bytes() {
        let b = sample();
        assert_eq!(b.len(), 224);
        assert_eq!(hex(&b[..24]), concat!("66733269", "e000000000000000", "00010000", "0200000000000000"));
        assert_eq!(hex(&b[24..40]), "01000000000000003010000000000000");
        assert_eq!(hex(&b[56..60]), format!("{:08x}", crc(&b[24..56]).swap_bytes()));
        assert_eq!(hex(&b[60..64]), "00000000", "pad to 8");
        // The filter: one 32-byte block (2 entries × 10 bits), 8 u32 words, one bit set
        // per word per oid (see filter.rs): 1 or 2 bits per word.
        let filter = &b[64..96];
        assert_eq!(filter, &super::super::filter::build(2, [Oid(1), Oid(3)])[..]);
        assert!((0..8).all(|w| (1..=2).contains(&le32(filter, w * 4).count_ones())));
        assert_eq!(
            hex(filter),
            "8001000000004400000018000000420001002000004800001000800000001400",
            "the filter (pinned: the hash is part of the format)"
        );
        assert!(super::super::may_contain(filter, Oid(1)) && super::super::may_contain(filter, Oid(3)));
        let t = &b[96..];
        assert_eq!(
            hex(&t[..72]),
            concat!(
                "66733274",         // "fs2t"
                "02000000",         // version
                "0010000000000000", // index offset 4096
                "0200000000000000", // entries
                "0500000000000000", // first tid
                "0600000000000000", // last tid
                "0200000000000000", // transactions
                "0300000000000000", // data records
                "0100000000000000", // first oid
                "0300000000000000", // last oid
            )
        );
        assert_eq!(hex(&t[116..120]), format!("{:08x}", crc(filter).swap_bytes()), "filter CRC");
        let mut c = crc(&t[..112]);
        c = crc_append(c, &t[116..120]);
        assert_eq!(hex(&t[112..116]), format!("{:08x}", c.swap_bytes()), "trailer CRC covers the filter CRC");
        assert_eq!(hex(&t[120..]), "e000000000000000");
        let tr = Trailer::from_bytes(t.try_into().unwrap(), Path::new("x"), 4096 + 224).unwrap();
        assert_eq!((tr.count, tr.version, tr.filter_crc), (2, 2, crc(filter)));
        tr.check_index_header(b[..24].try_into().unwrap(), Path::new("x")).unwrap();
    }

    /// A version-1 index record (before the oid filter): no filter, the trailer CRC over
    /// bytes 0..112, bytes 116..120 zero. Still read.
    #[test]
    fn known_bytes_of_a_version_1_record_still_read() {
        let v2 = sample();
        let mut h = v2[..24].to_vec();
        h[4..12].copy_from_slice(&192u64.to_le_bytes());
        let mut t: [u8; 128] = v2[96..].try_into().unwrap();
        t[4..8].copy_from_slice(&1u32.to_le_bytes());
        t[80..84].copy_from_slice(&crc(&h).to_le_bytes());
        t[116..120].fill(0);
        let c = crc(&t[..112]);
        t[112..116].copy_from_slice(&c.to_le_bytes());
        t[120..].copy_from_slice(&192u64.to_le_bytes());
        let tr = Trailer::from_bytes(&t, Path::new("x"), 4096 + 192).unwrap();
        assert_eq!((tr.version, tr.count, tr.filter_crc), (1, 2, 0));
        tr.check_index_header(h[..].try_into().unwrap(), Path::new("x")).unwrap();
        assert_eq!(tr.to_bytes(), t, "a version-1 trailer re-encodes to its bytes");
        assert!(IndexHeader::is_record_len(2, 192) && IndexHeader::is_record_len(2, 224));
        // A version-1 trailer with a non-zero reserved field is damage.
        let mut bad = t;
        bad[117] = 1;
        assert!(Trailer::from_bytes(&bad, Path::new("x"), 4096 + 192).is_err());
        // A later version is refused with a clear message.
        let mut later = t;
        later[4..8].copy_from_slice(&3u32.to_le_bytes());
        let c = crc(&later[..112]);
        later[112..116].copy_from_slice(&c.to_le_bytes());
        let e = Trailer::from_bytes(&later, Path::new("x"), 4096 + 192).unwrap_err();
        assert!(e.to_string().contains("version 3 is not supported"), "{e}");
    }

    #[test]
    fn known_bytes_of_an_appended_region_trailer() {
        let appended = Appended { base_len: 8192, source: SegmentName { first: 3, last: 4 }, as_of: AsOf::Target };
        let t = Trailer { index_offset: 8192 + 64, appended: Some(appended), ..Default::default() };
        let b = encode_index(&[(Oid(1), 8192 + 48)], t);
        let t = &b[b.len() - 128..];
        assert_eq!(hex(&t[72..80]), "0300000000000000", "flags: appended, as of the target's end");
        assert_eq!(
            hex(&t[88..112]),
            concat!("0020000000000000", "0300000000000000", "0400000000000000"),
            "base length, source first and last sequence numbers"
        );
        let len = 8192 + 64 + b.len() as u64;
        let tr = Trailer::from_bytes(t.try_into().unwrap(), Path::new("x"), len).unwrap();
        assert_eq!(tr.appended, Some(appended));
        // An appended region cannot start inside the header, nor its index before it.
        let mut bad = tr.clone();
        bad.appended = Some(Appended { base_len: 4096, ..appended });
        assert!(Trailer::from_bytes(&bad.to_bytes(), Path::new("x"), len).is_err());
        let mut bad = tr.clone();
        bad.appended = Some(Appended { base_len: 8192 + 72, ..appended });
        assert!(Trailer::from_bytes(&bad.to_bytes(), Path::new("x"), len).is_err());
        // Unknown flags are refused.
        let mut raw = tr.to_bytes();
        raw[72] |= 8;
        let c = crc(&raw[..112]);
        raw[112..116].copy_from_slice(&c.to_le_bytes());
        assert!(Trailer::from_bytes(&raw, Path::new("x"), len).is_err());
    }

    #[test]
    fn every_flipped_trailer_or_header_byte_is_detected() {
        let good = sample();
        for i in (0..24).chain(96..224) {
            let mut b = good.clone();
            b[i] ^= 0x10;
            let res = Trailer::from_bytes(b[96..].try_into().unwrap(), Path::new("x"), 4096 + 224)
                .and_then(|t| t.check_index_header(b[..24].try_into().unwrap(), Path::new("x")));
            assert!(res.is_err(), "byte {i}");
        }
    }
}
