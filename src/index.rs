//! Sorted oid → offset indexes of past segments: memory-mapped (the only `unsafe` in
//! the crate) or, where mapping is not possible, read into memory after verification.

use crate::error::{Error, Result};
use crate::format::{crc, le32, le64, Trailer, INDEX_BLOCK, INDEX_ENTRY, INDEX_HEADER};
use crate::types::Oid;
use crate::vfs::VFile;
use memmap2::Mmap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Map the first `len` bytes (the sealed length) of a sealed segment read-only. `None`
/// where the file system cannot map.
pub(crate) fn map_sealed(file: &dyn VFile, len: u64) -> Option<Mmap> {
    let f = file.os_file()?;
    // SAFETY: only sealed segment files are mapped. A sealed file is never truncated and
    // never rewritten in place in the bytes read through the map: the only in-place
    // rewrite is of a previous-segment slot inside the 4096-byte header, which is read
    // with pread, and appends (semi-sequential merge) land beyond the mapped length.
    // Every access through the map is bounds-checked against the map's length.
    unsafe { memmap2::MmapOptions::new().len(usize::try_from(len).ok()?).map(f) }.ok()
}

/// Bytes of a sealed segment: the map, or positional reads.
pub(crate) enum SealedBytes {
    Mapped(Mmap),
    File,
}

/// The sorted index of one past segment.
pub(crate) struct SortedIndex {
    count: u64,
    entries: Entries,
}

enum Entries {
    /// Entries at `base` in the segment's map, verified per block on first touch.
    Mapped { base: usize, crcs: usize, verified: Vec<AtomicU64> },
    /// Entries read and verified at open (fallback, and indexes rebuilt in memory).
    Memory(Vec<(Oid, u64)>),
}

impl SortedIndex {
    /// Open the index a verified `trailer` locates. Checks the header and the block-CRC
    /// array against the trailer: O(entries / 256), no entry is read.
    pub(crate) fn open(bytes: &SealedBytes, file: &dyn VFile, path: &Path, t: &Trailer) -> Result<SortedIndex> {
        let io = |e| Error::io(path, "read index of", e);
        let crcs_len = (t.count.div_ceil(INDEX_BLOCK) * 4) as usize;
        let crcs_rel = crate::format::IndexHeader::crcs_offset(t.count);
        let check_crcs = |crcs: &[u8]| -> Result<()> {
            if crc(crcs) != t.crcs_crc {
                return Err(Error::checksum(path, t.index_offset + crcs_rel, "index block checksums"));
            }
            Ok(())
        };
        match bytes {
            SealedBytes::Mapped(map) => {
                let start = t.index_offset as usize;
                let header: &[u8; INDEX_HEADER] = map
                    .get(start..start + INDEX_HEADER)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| Error::corrupted(path, t.index_offset, "index outside the file"))?;
                t.check_index_header(header, path)?;
                let crcs = start + crcs_rel as usize;
                check_crcs(map.get(crcs..crcs + crcs_len).ok_or_else(|| Error::corrupted(path, 0, "short index"))?)?;
                let blocks = t.count.div_ceil(INDEX_BLOCK) as usize;
                let verified = (0..blocks.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
                Ok(SortedIndex {
                    count: t.count,
                    entries: Entries::Mapped { base: start + INDEX_HEADER, crcs, verified },
                })
            }
            SealedBytes::File => {
                let mut buf = vec![0u8; (crcs_rel as usize) + crcs_len];
                file.read_exact_at(&mut buf, t.index_offset).map_err(io)?;
                let header: &[u8; INDEX_HEADER] = buf[..INDEX_HEADER].try_into().expect("sized");
                t.check_index_header(header, path)?;
                check_crcs(&buf[crcs_rel as usize..])?;
                let body = &buf[INDEX_HEADER..crcs_rel as usize];
                for (i, block) in body.chunks(INDEX_BLOCK as usize * INDEX_ENTRY).enumerate() {
                    if crc(block) != le32(&buf, crcs_rel as usize + i * 4) {
                        return Err(Error::checksum(path, t.index_offset, "index block"));
                    }
                }
                let v = body.chunks(INDEX_ENTRY).map(|e| (Oid(le64(e, 0)), le64(e, 8))).collect();
                SortedIndex::memory(v, path, t.index_offset)
            }
        }
    }

    /// An index held in memory; `entries` must be sorted by oid without duplicates.
    pub(crate) fn memory(entries: Vec<(Oid, u64)>, path: &Path, at: u64) -> Result<SortedIndex> {
        if entries.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(Error::corrupted(path, at, "index entries are not sorted"));
        }
        Ok(SortedIndex { count: entries.len() as u64, entries: Entries::Memory(entries) })
    }

    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// Entry `i` (< len). A mapped block is checked against its CRC on first touch.
    #[inline(always)]
    pub(crate) fn get(&self, bytes: &SealedBytes, path: &Path, i: u64) -> Result<(Oid, u64)> {
        match (&self.entries, bytes) {
            (Entries::Memory(v), _) => {
                v.get(i as usize).copied().ok_or_else(|| Error::corrupted(path, 0, "index entry"))
            }
            (Entries::Mapped { base, crcs, verified }, SealedBytes::Mapped(map)) => {
                let block = i / INDEX_BLOCK;
                let (word, bit) = ((block / 64) as usize, 1u64 << (block % 64));
                let bad = || Error::corrupted(path, *base as u64, "index entry outside the file");
                if verified.get(word).ok_or_else(bad)?.load(Ordering::Acquire) & bit == 0 {
                    let first = block * INDEX_BLOCK;
                    let n = INDEX_BLOCK.min(self.count - first) as usize;
                    let s = base + first as usize * INDEX_ENTRY;
                    let bytes = map.get(s..s + n * INDEX_ENTRY).ok_or_else(bad)?;
                    let c = crcs + block as usize * 4;
                    let want = map.get(c..c + 4).ok_or_else(bad)?;
                    if crc(bytes) != le32(want, 0) {
                        return Err(Error::checksum(path, s as u64, "index block"));
                    }
                    verified[word].fetch_or(bit, Ordering::AcqRel);
                }
                let s = base + i as usize * INDEX_ENTRY;
                let e = map.get(s..s + INDEX_ENTRY).ok_or_else(bad)?;
                Ok((Oid(le64(e, 0)), le64(e, 8)))
            }
            (Entries::Mapped { .. }, SealedBytes::File) => Err(Error::corrupted(path, 0, "mapped index without a map")),
        }
    }

    /// Binary search: the record offset of `oid`, if present.
    pub(crate) fn find(&self, bytes: &SealedBytes, path: &Path, oid: Oid) -> Result<Option<u64>> {
        let i = self.lower_bound(bytes, path, oid)?;
        if i < self.count {
            let (o, off) = self.get(bytes, path, i)?;
            if o == oid {
                return Ok(Some(off));
            }
        }
        Ok(None)
    }

    /// The position of the first entry with oid ≥ `oid`.
    #[inline(always)]
    pub(crate) fn lower_bound(&self, bytes: &SealedBytes, path: &Path, oid: Oid) -> Result<u64> {
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(bytes, path, mid)?.0 < oid {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// The merge's work area: a table of (oid u64, location u64) entries sorted by oid in an
/// unlinked temporary file, mapped read-write. Memory use is the page cache's business,
/// not the heap's: this is what keeps a merge's memory flat in the number of objects.
pub(crate) struct WorkTable {
    map: Option<memmap2::MmapMut>,
    count: u64,
    _file: std::fs::File,
}

impl WorkTable {
    /// Map `file`, which holds `count` entries written sequentially.
    pub(crate) fn map(file: std::fs::File, count: u64) -> std::io::Result<WorkTable> {
        let map = if count == 0 {
            None
        } else {
            // SAFETY: `file` is an unlinked temporary file created by this merge; no other
            // process or handle can truncate or write it while the map lives, and every
            // access below is bounds-checked against `count` entries.
            Some(unsafe { memmap2::MmapMut::map_mut(&file)? })
        };
        if map.as_ref().is_some_and(|m| (m.len() as u64) < count * INDEX_ENTRY as u64) {
            return Err(std::io::Error::other("merge work table shorter than its entries"));
        }
        Ok(WorkTable { map, count, _file: file })
    }

    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    pub(crate) fn get(&self, i: u64) -> (Oid, u64) {
        let m = self.map.as_ref().expect("non-empty table");
        let s = i as usize * INDEX_ENTRY;
        (Oid(le64(&m[s..s + 8], 0)), le64(&m[s + 8..s + 16], 0))
    }

    pub(crate) fn set_location(&mut self, i: u64, loc: u64) {
        let m = self.map.as_mut().expect("non-empty table");
        let s = i as usize * INDEX_ENTRY + 8;
        m[s..s + 8].copy_from_slice(&loc.to_le_bytes());
    }

    /// The position of `oid`, if present.
    pub(crate) fn find(&self, oid: Oid) -> Option<u64> {
        let (mut lo, mut hi) = (0u64, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid).0.cmp(&oid) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }
}
