//! The segment file header: 4096 bytes at offset 0.
//!
//! The fixed part (storage id, sequence numbers, alignment, version) is written once when
//! the file is created. The previous-segment reference lives in two slots with a
//! generation number and a CRC each; a rewrite goes to the slot not in use, so a torn
//! rewrite leaves the other slot, and the chain is either old or new, never a mix.

use super::{crc, crc_append, le16, le32, le64, put, MARK_HEADER};
use crate::error::{Error, Result};
use crate::types::SegmentName;
use std::path::Path;

pub const HEADER_SIZE: usize = 4096;
/// The format version new segments are written in (2: data records with a header CRC).
pub const VERSION: u32 = 2;
/// The oldest format version still read (and written into its own segments).
pub const OLDEST_VERSION: u32 = 1;

const FIXED: usize = 128;
const SLOT: usize = (HEADER_SIZE - 8 - FIXED) / 2; // 1980
const SLOT_HEAD: usize = 16;
/// The sealed length, when the slot's flags say it is there, ends the slot.
const SLOT_SEALED_LEN: usize = SLOT - 8;
/// Slot flag: the slot holds the segment's sealed length.
const SLOT_HAS_SEALED_LEN: u16 = 1;
/// The longest previous-segment path a slot holds.
pub const MAX_PREV_PATH: usize = SLOT_SEALED_LEN - SLOT_HEAD; // 1956

// Fixed-part offsets.
const O_LEN: usize = 4;
const O_VERSION: usize = 12;
const O_FLAGS: usize = 16;
const O_ALIGN: usize = 24;
const O_STORAGE: usize = 32;
const O_FIRST: usize = 48;
const O_LAST: usize = 56;
const O_CRC: usize = 120;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    /// Reserved for segment metadata (e.g. what history a merged segment retains).
    pub flags: u32,
    /// Records never span a multiple of this (see `segment::place`).
    pub alignment: u64,
    /// Random id shared by every segment of one storage.
    pub storage_id: u128,
    pub name: SegmentName,
    /// The previous segment's path (relative to the storage directory if it lives
    /// there), or `None` for the first segment.
    pub prev: Option<String>,
    /// Generation of the slot `prev` was read from (1 for a new file).
    pub generation: u64,
    /// Where the segment's data ends (its last trailer), once an append merge has
    /// written beyond its original end: bytes past it are an unfinished append and are
    /// ignored (and truncated by a writable open). `None`: the file's length.
    pub sealed_len: Option<u64>,
}

impl Header {
    /// The header of the segment a rotation starts after this one: the next number,
    /// linked back to this one, in the current format version, same storage and
    /// alignment. (Recovery finishing an interrupted rotation must make the same one.)
    pub fn successor(&self) -> Header {
        Header {
            name: SegmentName::single(self.name.last + 1),
            prev: Some(self.name.file_name()),
            generation: 1,
            sealed_len: None,
            version: VERSION,
            ..self.clone()
        }
    }

    /// How this segment's data records are laid out (its format version's form).
    pub fn record_form(&self) -> super::RecordForm {
        super::RecordForm::of_version(self.version)
    }

    fn fixed(&self) -> [u8; FIXED] {
        let mut b = [0u8; FIXED];
        put(&mut b, 0, &MARK_HEADER);
        put(&mut b, O_LEN, &(HEADER_SIZE as u64).to_le_bytes());
        put(&mut b, O_VERSION, &self.version.to_le_bytes());
        put(&mut b, O_FLAGS, &self.flags.to_le_bytes());
        put(&mut b, O_ALIGN, &self.alignment.to_le_bytes());
        put(&mut b, O_STORAGE, &self.storage_id.to_le_bytes());
        put(&mut b, O_FIRST, &self.name.first.to_le_bytes());
        put(&mut b, O_LAST, &self.name.last.to_le_bytes());
        let c = crc(&b[..O_CRC]);
        put(&mut b, O_CRC, &c.to_le_bytes());
        b
    }

    /// File offset of the slot that holds generation `g`.
    pub fn slot_offset(generation: u64) -> u64 {
        (FIXED + SLOT * ((generation.wrapping_sub(1) % 2) as usize)) as u64
    }

    /// The bytes of the slot for this header's generation and `prev`.
    pub fn slot_bytes(&self) -> Result<Vec<u8>> {
        let path = self.prev.as_deref().unwrap_or("").as_bytes();
        if path.len() > MAX_PREV_PATH {
            return Err(Error::invalid(format!(
                "previous-segment path is {} bytes; at most {MAX_PREV_PATH} fit in a segment header",
                path.len()
            )));
        }
        let mut s = vec![0u8; SLOT];
        put(&mut s, 0, &self.generation.to_le_bytes());
        put(&mut s, 8, &(path.len() as u16).to_le_bytes());
        put(&mut s, SLOT_HEAD, path);
        let mut c = crc_append(crc(&s[..12]), path);
        if let Some(len) = self.sealed_len {
            put(&mut s, 10, &SLOT_HAS_SEALED_LEN.to_le_bytes());
            put(&mut s, SLOT_SEALED_LEN, &len.to_le_bytes());
            c = crc_append(crc_append(crc(&s[..12]), path), &s[SLOT_SEALED_LEN..]);
        }
        put(&mut s, 12, &c.to_le_bytes());
        Ok(s)
    }

    /// The whole 4096-byte header; only the slot of `generation` is filled.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut b = vec![0u8; HEADER_SIZE];
        put(&mut b, 0, &self.fixed());
        let off = Header::slot_offset(self.generation) as usize;
        put(&mut b, off, &self.slot_bytes()?);
        put(&mut b, HEADER_SIZE - 8, &(HEADER_SIZE as u64).to_le_bytes());
        Ok(b)
    }

    /// The slot in force: (generation, prev, sealed length), if a slot verifies.
    #[allow(clippy::type_complexity)]
    fn best_slot(b: &[u8]) -> Option<(u64, Option<String>, Option<u64>)> {
        let mut best: Option<(u64, Option<String>, Option<u64>)> = None;
        for i in 0..2 {
            let s = &b[FIXED + i * SLOT..FIXED + (i + 1) * SLOT];
            let generation = le64(s, 0);
            let len = le16(s, 8) as usize;
            let flags = le16(s, 10);
            if generation == 0
                || len > MAX_PREV_PATH
                || flags & !SLOT_HAS_SEALED_LEN != 0
                || Header::slot_offset(generation) as usize != FIXED + i * SLOT
            {
                continue;
            }
            let p = &s[SLOT_HEAD..SLOT_HEAD + len];
            let has_len = flags & SLOT_HAS_SEALED_LEN != 0;
            let mut c = crc_append(crc(&s[..12]), p);
            if has_len {
                c = crc_append(c, &s[SLOT_SEALED_LEN..]);
            }
            if le32(s, 12) != c {
                continue; // a torn rewrite: the other slot holds the truth
            }
            let Ok(p) = std::str::from_utf8(p) else { continue };
            if best.as_ref().is_none_or(|(g, _, _)| generation > *g) {
                let sealed_len = has_len.then(|| le64(s, SLOT_SEALED_LEN));
                best = Some((generation, (!p.is_empty()).then(|| p.to_string()), sealed_len));
            }
        }
        best
    }

    /// Whether a slot holds bytes that do not verify: a damaged (or torn) slot, not one
    /// never written (all zeros).
    pub fn damaged_slot(b: &[u8]) -> bool {
        (0..2).any(|i| {
            let s = &b[FIXED + i * SLOT..FIXED + (i + 1) * SLOT];
            s.iter().any(|&x| x != 0) && Header::best_slot_of(b, i).is_none()
        })
    }

    fn best_slot_of(b: &[u8], i: usize) -> Option<()> {
        let mut only = b[..HEADER_SIZE].to_vec();
        let other = 1 - i;
        only[FIXED + other * SLOT..FIXED + (other + 1) * SLOT].fill(0);
        Header::best_slot(&only).map(|_| ())
    }

    /// Decode a header whose fixed part is damaged: the slots as usual, the fixed fields
    /// from `template` (another segment of the same storage) and `name` (the file name).
    /// `None` if no slot verifies either.
    pub fn from_slots(b: &[u8], template: &Header, name: SegmentName) -> Option<Header> {
        let (generation, prev, sealed_len) = Header::best_slot(b.get(..HEADER_SIZE)?)?;
        Some(Header { name, prev, generation, sealed_len, ..template.clone() })
    }

    /// Decode and validate; `path` names the file in errors.
    pub fn from_bytes(b: &[u8], path: &Path) -> Result<Header> {
        if b.len() < HEADER_SIZE {
            return Err(Error::corrupted(path, 0, format!("file is {} bytes, shorter than a segment header", b.len())));
        }
        if b[0..4] != MARK_HEADER {
            return Err(Error::corrupted(path, 0, "not a filestorage2 segment (bad header marker)"));
        }
        if le64(b, O_LEN) != HEADER_SIZE as u64 || le64(b, HEADER_SIZE - 8) != HEADER_SIZE as u64 {
            return Err(Error::corrupted(path, O_LEN as u64, "bad header length"));
        }
        if le32(b, O_CRC) != crc(&b[..O_CRC]) {
            return Err(Error::checksum(path, 0, "segment header"));
        }
        let version = le32(b, O_VERSION);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(Error::corrupted(
                path,
                O_VERSION as u64,
                format!(
                    "format version {version} is not supported (this fs2 reads versions {OLDEST_VERSION} to \
                     {VERSION}); use a matching fs2"
                ),
            ));
        }
        let name = SegmentName { first: le64(b, O_FIRST), last: le64(b, O_LAST) };
        if name.first == 0 || name.first > name.last {
            return Err(Error::corrupted(path, O_FIRST as u64, "bad segment sequence numbers"));
        }
        let alignment = le64(b, O_ALIGN);
        if alignment < HEADER_SIZE as u64 || !alignment.is_multiple_of(HEADER_SIZE as u64) {
            return Err(Error::corrupted(path, O_ALIGN as u64, format!("bad alignment {alignment}")));
        }
        let best = Header::best_slot(b);
        let Some((generation, prev, sealed_len)) = best else {
            return Err(Error::checksum(path, FIXED as u64, "both previous-segment slots of the header"));
        };
        Ok(Header {
            version,
            flags: le32(b, O_FLAGS),
            alignment,
            storage_id: u128::from_le_bytes(b[O_STORAGE..O_STORAGE + 16].try_into().expect("16 bytes")),
            name,
            prev,
            generation,
            sealed_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    fn sample() -> Header {
        Header {
            version: VERSION,
            flags: 0,
            alignment: 1 << 28,
            storage_id: 0x0102030405060708090a0b0c0d0e0f10,
            name: SegmentName::single(2),
            prev: Some("seg-000001.fs2".into()),
            generation: 1,
            sealed_len: None,
        }
    }

    #[test]
    fn known_bytes() {
        let b = sample().to_bytes().unwrap();
        assert_eq!(b.len(), 4096);
        assert_eq!(
            hex(&b[..64]),
            concat!(
                "66733220",                         // marker "fs2 "
                "0010000000000000",                 // record length 4096
                "02000000",                         // version 2
                "00000000",                         // flags
                "00000000",                         // reserved
                "0000001000000000",                 // alignment 2^28
                "100f0e0d0c0b0a090807060504030201", // storage id
                "0200000000000000",                 // first sequence number
                "0200000000000000",                 // last sequence number
            )
        );
        assert_eq!(hex(&b[120..124]), format!("{:08x}", crc(&b[..120]).swap_bytes()));
        // Slot A: generation 1, path length 14, crc, path.
        assert_eq!(hex(&b[128..144]), format!("01000000000000000e000000{:08x}", le32(&b, 140).swap_bytes()));
        assert_eq!(&b[144..158], b"seg-000001.fs2");
        assert!(b[158..4088].iter().all(|&x| x == 0), "slot B and padding are zero");
        assert_eq!(hex(&b[4088..]), "0010000000000000");
        assert_eq!(Header::from_bytes(&b, Path::new("x")).unwrap(), sample());
    }

    #[test]
    fn every_flipped_byte_of_the_fixed_part_is_rejected() {
        let good = sample().to_bytes().unwrap();
        for i in (0..124).chain(4088..4096) {
            let mut b = good.clone();
            b[i] ^= 0x40;
            assert!(Header::from_bytes(&b, Path::new("x")).is_err(), "byte {i}");
        }
    }

    #[test]
    fn slot_rewrite_is_atomic() {
        let mut h = sample();
        let mut b = h.to_bytes().unwrap();
        h.generation = 2;
        h.prev = Some("seg-000001-000001.fs2".into());
        let slot = h.slot_bytes().unwrap();
        let off = Header::slot_offset(2) as usize;
        // Torn at every byte: the old reference or the new one, never anything else.
        for cut in 0..slot.len() {
            let mut t = b.clone();
            t[off..off + cut].copy_from_slice(&slot[..cut]);
            let got = Header::from_bytes(&t, Path::new("x")).unwrap();
            assert!(got == sample() || got == h, "cut {cut}");
        }
        put(&mut b, off, &slot);
        assert_eq!(Header::from_bytes(&b, Path::new("x")).unwrap(), h);
        // A flipped byte in the newer slot falls back to the older one.
        b[off + 20] ^= 1;
        assert_eq!(Header::from_bytes(&b, Path::new("x")).unwrap(), sample());
    }

    #[test]
    fn a_damaged_fixed_part_is_read_from_the_slots_and_a_template() {
        let good = sample().to_bytes().unwrap();
        let mut b = good.clone();
        b[40] ^= 0xff; // the storage id
        assert!(Header::from_bytes(&b, Path::new("x")).is_err());
        assert!(!Header::damaged_slot(&b), "the slots are intact");
        let template = Header { name: SegmentName::single(7), prev: None, ..sample() };
        assert_eq!(Header::from_slots(&b, &template, SegmentName::single(2)), Some(sample()));
        // A damaged slot is told from one never written (all zeros).
        assert!(!Header::damaged_slot(&good));
        let mut b = good.clone();
        b[128 + 3] ^= 1;
        assert!(Header::damaged_slot(&b));
        assert_eq!(Header::from_slots(&b, &template, SegmentName::single(2)), None, "no slot verifies");
    }

    #[test]
    fn slot_with_a_sealed_length() {
        let mut h = sample();
        h.generation = 2;
        h.prev = None;
        h.sealed_len = Some(0x0102_0304_0506);
        let s = h.slot_bytes().unwrap();
        // Generation 2, path length 0, flags 1 (sealed length present), crc; the sealed
        // length in the slot's last 8 bytes, covered by the crc.
        assert_eq!(hex(&s[..12]), "020000000000000000000100");
        assert_eq!(hex(&s[SLOT - 8..]), "0605040302010000");
        let c = crc_append(crc(&s[..12]), &s[SLOT - 8..]);
        assert_eq!(le32(&s, 12), c);
        let mut b = sample().to_bytes().unwrap();
        let off = Header::slot_offset(2) as usize;
        put(&mut b, off, &s);
        assert_eq!(Header::from_bytes(&b, Path::new("x")).unwrap(), h);
        // A flipped bit in the sealed length falls back to the other slot.
        b[off + SLOT - 3] ^= 4;
        assert_eq!(Header::from_bytes(&b, Path::new("x")).unwrap(), sample());
    }

    #[test]
    fn version_1_is_still_read() {
        let old = Header { version: 1, ..sample() };
        let h = Header::from_bytes(&old.to_bytes().unwrap(), Path::new("x")).unwrap();
        assert_eq!(h.record_form(), super::super::RecordForm::V1);
        assert_eq!(sample().record_form(), super::super::RecordForm::V2);
    }

    #[test]
    fn unknown_version_is_refused_clearly() {
        let mut h = sample();
        h.version = 9;
        let e = Header::from_bytes(&h.to_bytes().unwrap(), Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("format version 9 is not supported"), "{e}");
    }
}
