//! The oid filter of a past segment's index (trailer version 2): a split-block Bloom
//! filter, blocks of 8 × u32 words, one bit set per word for each oid, so a query reads
//! one 32-byte block (one cache line). About 10 bits per oid: ~1% false positives, never a
//! false negative. See FORMAT.md, "Oid filter".

use crate::types::Oid;

/// Bytes per filter block.
pub const FILTER_BLOCK: usize = 32;
/// Filter bits per index entry.
const BITS_PER_OID: u64 = 10;
/// One odd multiplier per word (the Parquet split-block filter's salts).
const SALT: [u32; 8] =
    [0x47b6_137b, 0x4497_4d91, 0x8824_ad5b, 0xa2b7_289d, 0x7054_95c7, 0x2df1_424b, 0x9efc_4947, 0x5c6b_fb31];

/// Blocks of the filter of an index with `count` entries.
pub fn filter_blocks(count: u64) -> u64 {
    (count.saturating_mul(BITS_PER_OID)).div_ceil(FILTER_BLOCK as u64 * 8)
}

/// The oid's 64-bit hash (the splitmix64 finalizer: dense oids spread over all blocks).
#[inline(always)]
fn hash(oid: Oid) -> u64 {
    let mut z = oid.0;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The block of `h` among `blocks` (> 0), and the mask of each of its 8 words.
#[inline(always)]
fn place(h: u64, blocks: u64) -> (u64, [u32; 8]) {
    let block = ((h as u128 * blocks as u128) >> 64) as u64;
    let key = h as u32;
    (block, SALT.map(|s| 1u32 << (key.wrapping_mul(s) >> 27)))
}

/// A filter being built, for an index of a known entry count.
pub struct FilterBuilder {
    words: Vec<u32>,
}

impl FilterBuilder {
    pub fn new(count: u64) -> FilterBuilder {
        FilterBuilder { words: vec![0; filter_blocks(count) as usize * 8] }
    }

    pub fn insert(&mut self, oid: Oid) {
        let blocks = (self.words.len() / 8) as u64;
        if blocks == 0 {
            return;
        }
        let (b, masks) = place(hash(oid), blocks);
        for (w, m) in self.words[b as usize * 8..][..8].iter_mut().zip(masks) {
            *w |= m;
        }
    }

    /// The filter's bytes (words little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// Whether `oid` may be among the oids a filter of `bytes` (whole blocks) was built from.
/// `false` is exact: the oid is not there.
#[inline(always)]
pub fn may_contain(bytes: &[u8], oid: Oid) -> bool {
    let blocks = (bytes.len() / FILTER_BLOCK) as u64;
    if blocks == 0 {
        return false;
    }
    let (b, masks) = place(hash(oid), blocks);
    let block = &bytes[b as usize * FILTER_BLOCK..][..FILTER_BLOCK];
    masks.iter().enumerate().all(|(i, m)| super::le32(block, i * 4) & m != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        for (n, spread) in [(1u64, 1u64), (1000, 1), (100_000, 1), (100_000, 0x9e37_79b9_7f4a_7c15)] {
            let oids: Vec<Oid> = (0..n).map(|i| Oid(i.wrapping_mul(spread))).collect();
            let mut f = FilterBuilder::new(n);
            oids.iter().for_each(|&o| f.insert(o));
            let bytes = f.to_bytes();
            assert_eq!(bytes.len() as u64, filter_blocks(n) * 32);
            assert!(oids.iter().all(|&o| may_contain(&bytes, o)), "{n} oids");
            let probes = 100_000u64;
            let fp = (0..probes).filter(|i| may_contain(&bytes, Oid(u64::MAX - i * 7919))).count();
            if n >= 1000 {
                assert!(fp < probes as usize * 3 / 100, "{n} oids: {fp} false positives");
            }
        }
        assert_eq!(filter_blocks(0), 0);
        assert!(!may_contain(&[], Oid(1)));
    }
}
