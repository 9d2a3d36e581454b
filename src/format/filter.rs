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

/// A filter being built in `bytes` (zeroed, `filter_blocks(count)` blocks; words
/// little-endian): on the heap, or in a mapped scratch file where memory must stay flat.
pub struct FilterBuilder<'a> {
    pub bytes: &'a mut [u8],
}

impl FilterBuilder<'_> {
    pub fn insert(&mut self, oid: Oid) {
        let blocks = (self.bytes.len() / FILTER_BLOCK) as u64;
        if blocks == 0 {
            return;
        }
        let (b, masks) = place(hash(oid), blocks);
        let block = &mut self.bytes[b as usize * FILTER_BLOCK..][..FILTER_BLOCK];
        for (w, m) in block.chunks_exact_mut(4).zip(masks) {
            let v = u32::from_le_bytes(w.try_into().expect("4 bytes")) | m;
            w.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// A filter of `oids` (for `count` of them) on the heap.
#[cfg(test)]
pub fn build(count: u64, oids: impl IntoIterator<Item = Oid>) -> Vec<u8> {
    let mut bytes = vec![0u8; filter_blocks(count) as usize * FILTER_BLOCK];
    let mut f = FilterBuilder { bytes: &mut bytes };
    oids.into_iter().for_each(|o| f.insert(o));
    bytes
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
            let bytes = build(n, oids.iter().copied());
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
