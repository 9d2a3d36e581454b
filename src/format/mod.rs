//! On-disk codecs. Every structure has `SIZE`, `to_bytes` and a validating `from_bytes`;
//! `docs/FORMAT.md` describes the bytes and is kept exact by the known-bytes tests here.
//!
//! Every record starts with a 4-byte marker and an 8-byte length and ends with the same
//! 8-byte length (the length counts the whole record). All numbers are little-endian.

mod filter;
mod header;
mod index;
mod txn;

pub use filter::may_contain;
pub use header::{Header, HEADER_SIZE, OLDEST_VERSION, VERSION};
pub use index::{
    encode_index, encode_index_to, Appended, IndexHeader, Trailer, INDEX_BLOCK, INDEX_ENTRY, INDEX_HEADER,
    TRAILER_SIZE, TRAILER_VERSION,
};
pub use txn::{
    encode_padding, encode_txn, encoded_txn_len, DataHeader, DecodedTxn, RecordForm, RecordToWrite, TxnHeader, TxnMeta,
    MIN_PADDING, TXN_FOOTER, TXN_HEADER,
};

/// Record markers.
pub const MARK_HEADER: [u8; 4] = *b"fs2 ";
pub const MARK_TXN: [u8; 4] = *b"TTTT";
pub const MARK_PAD: [u8; 4] = *b"PPPP";
pub const MARK_INDEX: [u8; 4] = *b"fs2i";
pub const MARK_TRAILER: [u8; 4] = *b"fs2t";

pub fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn put(b: &mut [u8], o: usize, v: &[u8]) {
    b[o..o + v.len()].copy_from_slice(v);
}

/// CRC32C (Castagnoli; hardware-accelerated where the CPU has it).
pub fn crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}
pub fn crc_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// Hex rendering for known-bytes tests.
#[cfg(test)]
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
