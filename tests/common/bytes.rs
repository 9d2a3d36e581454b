//! The bytes of docs/FORMAT.md that tests damage or forge on purpose, written out from
//! the document: the codec is the crate's own (`pub(crate)`), and a test that reads the
//! bytes independently also checks that the document and the code agree.

/// Sizes of a transaction record's fixed parts (FORMAT.md "Transaction record").
pub const TXN_HEADER: usize = 48;
pub const TXN_FOOTER: usize = 16;
/// Size of a data record's header in format version 2 (FORMAT.md "Data record"; 48 in
/// version 1).
pub const DATA_HEADER: usize = 56;

/// Header slots: slot A at 128, slot B at 2108, 1980 bytes each.
const SLOT_A: usize = 128;
const SLOT: usize = 1980;
/// The path starts after generation (8), path length (2), flags (2) and CRC (4).
const SLOT_HEAD: usize = 16;
/// The sealed length: the slot's last 8 bytes, present when flag bit 0 is set.
const SLOT_SEALED_LEN: usize = SLOT - 8;

pub fn crc(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

/// File offset of the slot that holds generation `g` (A for odd, B for even).
pub fn slot_offset(generation: u64) -> u64 {
    (SLOT_A + SLOT * ((generation.wrapping_sub(1) % 2) as usize)) as u64
}

/// A segment header's slot in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub generation: u64,
    /// The previous segment's path (empty: none).
    pub prev: Vec<u8>,
    pub sealed_len: Option<u64>,
}

impl Slot {
    /// The valid slot (CRC matches, generation > 0, in its place) with the higher
    /// generation, of a segment file's first bytes `b`.
    pub fn in_force(b: &[u8]) -> Option<Slot> {
        let mut best: Option<Slot> = None;
        for i in 0..2 {
            let off = SLOT_A + i * SLOT;
            let s = &b[off..off + SLOT];
            let generation = u64::from_le_bytes(s[..8].try_into().unwrap());
            let len = u16::from_le_bytes([s[8], s[9]]) as usize;
            let flags = u16::from_le_bytes([s[10], s[11]]);
            if generation == 0 || slot_offset(generation) as usize != off || len > SLOT_SEALED_LEN - SLOT_HEAD {
                continue;
            }
            let slot = Slot {
                generation,
                prev: s[SLOT_HEAD..SLOT_HEAD + len].to_vec(),
                sealed_len: (flags & 1 != 0).then(|| u64::from_le_bytes(s[SLOT_SEALED_LEN..].try_into().unwrap())),
            };
            if slot.bytes() == s && best.as_ref().is_none_or(|b| generation > b.generation) {
                best = Some(slot);
            }
        }
        best
    }

    /// The slot's 1980 bytes, to be written at `slot_offset(self.generation)`.
    pub fn bytes(&self) -> Vec<u8> {
        let mut s = vec![0u8; SLOT];
        s[..8].copy_from_slice(&self.generation.to_le_bytes());
        s[8..10].copy_from_slice(&(self.prev.len() as u16).to_le_bytes());
        s[SLOT_HEAD..SLOT_HEAD + self.prev.len()].copy_from_slice(&self.prev);
        if let Some(len) = self.sealed_len {
            s[10..12].copy_from_slice(&1u16.to_le_bytes());
            s[SLOT_SEALED_LEN..].copy_from_slice(&len.to_le_bytes());
        }
        let mut c = crc32c::crc32c_append(crc(&s[..12]), &self.prev);
        if self.sealed_len.is_some() {
            c = crc32c::crc32c_append(c, &s[SLOT_SEALED_LEN..]);
        }
        s[12..16].copy_from_slice(&c.to_le_bytes());
        s
    }
}
