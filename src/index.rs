//! Sorted oid → offset indexes of past segments: memory-mapped (each `unsafe` block of
//! the crate says why it is sound, see the `[lints]` of Cargo.toml) or, where mapping is
//! not possible, read into memory after verification.

use crate::error::{Error, Result};
use crate::format::{crc, le32, le64, IndexHeader, Trailer, INDEX_BLOCK, INDEX_ENTRY, INDEX_HEADER};
use crate::types::Oid;
use crate::vfs::VFile;
use memmap2::Mmap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

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

/// Indexes with at least this many entries start a lookup with interpolation steps.
const INTERPOLATE_FROM: u64 = 64;
/// Interpolation steps before the binary search takes over (bounds skewed keys' cost).
const INTERPOLATION_STEPS: usize = 4;

/// The sorted index of one past segment.
pub(crate) struct SortedIndex {
    count: u64,
    entries: Entries,
    /// The oid filter in the map (trailer version 2), if any.
    filter: Option<Filter>,
}

/// An oid filter at `start..start + len` in the segment's map. Its CRC is checked on
/// first use (O(filter) once, not at open); a filter that fails it is never used, so a
/// damaged filter costs speed, never a wrong answer.
struct Filter {
    start: usize,
    len: usize,
    crc: u32,
    ok: OnceLock<bool>,
}

/// Whether lookups consult the oid filters (on by default; off only to measure them).
static OID_FILTERS: AtomicBool = AtomicBool::new(true);

/// Turn the oid filters of past segments on or off for this process (for benchmarks that
/// compare loads with and without them; results are the same either way).
pub fn set_oid_filters(on: bool) {
    OID_FILTERS.store(on, Ordering::Relaxed);
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
                let filter_start = start + IndexHeader::filter_offset(t.count) as usize;
                let filter_len = IndexHeader::filter_len(t.count, t.version) as usize;
                let filter = (filter_len > 0 && map.len() >= filter_start + filter_len).then(|| Filter {
                    start: filter_start,
                    len: filter_len,
                    crc: t.filter_crc,
                    ok: OnceLock::new(),
                });
                Ok(SortedIndex {
                    count: t.count,
                    entries: Entries::Mapped { base: start + INDEX_HEADER, crcs, verified },
                    filter,
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
        Ok(SortedIndex { count: entries.len() as u64, entries: Entries::Memory(entries), filter: None })
    }

    /// Whether `oid` may be in this index: `false` only when a verified filter says it
    /// is not.
    #[inline(always)]
    pub(crate) fn may_contain(&self, bytes: &SealedBytes, path: &Path, oid: Oid) -> bool {
        let (Some(f), SealedBytes::Mapped(map)) = (&self.filter, bytes) else { return true };
        if !OID_FILTERS.load(Ordering::Relaxed) {
            return true;
        }
        let Some(b) = map.get(f.start..f.start + f.len) else { return true };
        let ok = f.ok.get_or_init(|| {
            let ok = crc(b) == f.crc;
            if !ok {
                log::warn!("{}: oid filter checksum mismatch; searching its index without it", path.display());
            }
            ok
        });
        if !ok {
            return true;
        }
        crate::format::may_contain(b, oid)
    }

    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// For `check`: a problem with the oid filter (its CRC, or one of the index's oids
    /// `entries` that it would rule out), if any. A filter failing its CRC is never used.
    pub(crate) fn check_filter(&self, bytes: &SealedBytes, entries: &[(Oid, u64)]) -> Option<String> {
        let (Some(f), SealedBytes::Mapped(map)) = (&self.filter, bytes) else { return None };
        let Some(b) = map.get(f.start..f.start + f.len) else { return Some("oid filter outside the file".into()) };
        if crc(b) != f.crc {
            return Some("oid filter checksum mismatch (loads search the index without it)".into());
        }
        let missed = entries.iter().find(|(o, _)| !crate::format::may_contain(b, *o))?;
        Some(format!("the oid filter rules out oid {}, which the index holds", missed.0))
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
    /// The position of the first entry whose oid is ≥ `oid` (`len()` if none).
    #[inline(always)]
    pub(crate) fn lower_bound(&self, bytes: &SealedBytes, path: &Path, oid: Oid) -> Result<u64> {
        lower_bound(self.count, oid, |i| Ok(self.get(bytes, path, i)?.0))
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
        let i = lower_bound(self.count, oid, |i| Ok(self.get(i).0)).ok()?;
        (i < self.count && self.get(i).0 == oid).then_some(i)
    }
}

/// Zeroed scratch bytes in an unlinked temporary file, mapped read-write: what a merge
/// builds the output's oid filter in (page cache, not heap, like the work table).
pub(crate) struct ScratchMap {
    map: Option<memmap2::MmapMut>,
    _file: std::fs::File,
}

impl ScratchMap {
    pub(crate) fn new(file: std::fs::File, len: u64) -> std::io::Result<ScratchMap> {
        file.set_len(len)?;
        let map = if len == 0 {
            None
        } else {
            // SAFETY: `file` is an unlinked temporary file created by this merge; no other
            // process or handle can truncate or write it while the map lives, and all
            // access goes through the map's bounds-checked slice.
            Some(unsafe { memmap2::MmapMut::map_mut(&file)? })
        };
        Ok(ScratchMap { map, _file: file })
    }

    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }
}

/// The position of the first of `count` sorted keys (`key(i)`) that is ≥ `oid`
/// (`count` if none).
///
/// Oids are dense or spread evenly over 64 bits in most storages, so a few
/// interpolation steps first (a probe at the oid's proportional position between two
/// known keys lands next to it: about 4 keys read instead of the ~20 cache misses of a
/// binary search in 1M entries), then a binary search. Every probe lies in `[lo, hi)`,
/// so both kinds keep the same invariant (keys before `lo` are < `oid`, keys from `hi`
/// on are ≥ `oid`) and the result is exact whatever the keys.
#[inline(always)]
fn lower_bound(count: u64, oid: Oid, mut key: impl FnMut(u64) -> Result<Oid>) -> Result<u64> {
    let (mut lo, mut hi) = (0u64, count);
    if count >= INTERPOLATE_FROM {
        let (first, last) = (key(0)?, key(count - 1)?);
        if oid <= first {
            return Ok(0);
        }
        if oid > last {
            return Ok(count);
        }
        // Now key(lo - 1) = `below` < oid and key(hi) = `above` ≥ oid.
        (lo, hi) = (1, count - 1);
        let (mut below, mut above) = (first.0, last.0);
        for _ in 0..INTERPOLATION_STEPS {
            if lo >= hi {
                break;
            }
            let frac = (oid.0 - below) as u128 * (hi - lo + 1) as u128 / (above - below) as u128;
            let mid = (lo - 1 + frac as u64).clamp(lo, hi - 1);
            let k = key(mid)?;
            if k < oid {
                (lo, below) = (mid + 1, k.0);
            } else {
                (hi, above) = (mid, k.0);
            }
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key(mid)? < oid {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lower_bound` equals a plain partition point for dense, random, clustered and
    /// extreme keys, at every probe around every key.
    #[test]
    fn lower_bound_is_exact_for_any_key_spread() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let sets: Vec<Vec<u64>> = vec![
            (5..1005).collect(),
            (0..2000).map(|_| rnd()).collect(),
            (0..500).map(|i| i * i * i).chain((0..100).map(|i| u64::MAX - i)).collect(),
            (0..300).map(|i| if i < 290 { i } else { 1 << (i - 236) }).collect(),
            vec![0, 1, u64::MAX - 1, u64::MAX],
        ];
        for mut keys in sets {
            keys.sort_unstable();
            keys.dedup();
            let idx = SortedIndex::memory(keys.iter().map(|&k| (Oid(k), k)).collect(), Path::new("t"), 0).unwrap();
            let probes = keys.iter().flat_map(|&k| [k.saturating_sub(1), k, k.saturating_add(1)]).chain([0, u64::MAX]);
            for p in probes {
                let want = keys.partition_point(|&k| k < p) as u64;
                assert_eq!(idx.lower_bound(&SealedBytes::File, Path::new("t"), Oid(p)).unwrap(), want, "probe {p}");
                let found = idx.find(&SealedBytes::File, Path::new("t"), Oid(p)).unwrap();
                assert_eq!(found, keys.binary_search(&p).ok().map(|_| p), "probe {p}");
            }
        }
    }
}
