//! A transaction's staged records (stores and deletions by oid), read in oid order at
//! commit; a garbage collector's long run of deletions spills to disk.

use crate::error::{Error, Result};
use crate::types::Oid;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Deletions staged in increasing oid order kept in memory before they spill to disk
/// (tests spill early, so that every test of a collection covers the spilled form).
#[cfg(not(test))]
const SPILL_AFTER: usize = 1 << 16;
#[cfg(test)]
const SPILL_AFTER: usize = 2;

/// A transaction's staged records, iterated in oid order (`Staged::writes`). Stores and
/// out-of-order deletions are kept in a map. Deletions staged in increasing oid order (a
/// garbage collector's sweep) are appended to a sorted run instead: past
/// [`SPILL_AFTER`] of them the run goes to an unlinked temporary file, mapped, so a
/// transaction of millions of deletions holds no heap per deletion.
///
/// Invariants: the run (`spilled`, then `tail`) is strictly increasing; an oid in the
/// map takes precedence over the run; `dropped` holds run oids unstaged since.
pub(crate) struct Writes {
    map: BTreeMap<Oid, Option<Vec<u8>>>,
    spilled: Option<Spill>,
    tail: Vec<Oid>,
    dropped: BTreeSet<Oid>,
    spill_after: usize,
}

/// The spilled part of a run: little-endian oids in an unlinked temporary file.
struct Spill {
    file: std::fs::File,
    map: memmap2::Mmap,
    count: usize,
}

impl Spill {
    fn get(&self, i: usize) -> Oid {
        Oid(u64::from_le_bytes(self.map[i * 8..i * 8 + 8].try_into().expect("8 bytes")))
    }

    fn contains(&self, oid: Oid) -> bool {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.get(mid).cmp(&oid) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }
}

impl Writes {
    pub(crate) fn new() -> Writes {
        Writes {
            map: BTreeMap::new(),
            spilled: None,
            tail: Vec::new(),
            dropped: BTreeSet::new(),
            spill_after: SPILL_AFTER,
        }
    }

    pub(crate) fn last_in_run(&self) -> Option<Oid> {
        self.tail.last().copied().or_else(|| self.spilled.as_ref().map(|s| s.get(s.count - 1)))
    }

    pub(crate) fn in_run(&self, oid: Oid) -> bool {
        self.tail.binary_search(&oid).is_ok() || self.spilled.as_ref().is_some_and(|s| s.contains(oid))
    }

    pub(crate) fn store(&mut self, oid: Oid, data: Vec<u8>) {
        self.map.insert(oid, Some(data));
    }

    /// Stage a deletion; the run spills into a temporary file in `dir`.
    pub(crate) fn delete(&mut self, oid: Oid, dir: &Path) -> Result<()> {
        if self.last_in_run().is_none_or(|last| oid > last) {
            self.map.remove(&oid);
            self.tail.push(oid);
            if self.tail.len() >= self.spill_after {
                self.spill(dir)?;
            }
        } else if self.in_run(oid) {
            self.map.remove(&oid);
            self.dropped.remove(&oid);
        } else {
            self.map.insert(oid, None);
        }
        Ok(())
    }

    pub(crate) fn unstage(&mut self, oid: Oid) {
        self.map.remove(&oid);
        if self.in_run(oid) {
            self.dropped.insert(oid);
        }
    }

    /// Move the in-memory tail of the run to the spill file.
    pub(crate) fn spill(&mut self, dir: &Path) -> Result<()> {
        let err = |e: std::io::Error| Error::io(dir, "spill staged deletions to a temporary file in", e);
        let (file, count) = match self.spilled.take() {
            Some(s) => (s.file, s.count),
            // The storage's directory is not a real one on a simulated disk.
            None => (tempfile::tempfile_in(dir).or_else(|_| tempfile::tempfile()).map_err(err)?, 0),
        };
        let bytes: Vec<u8> = self.tail.iter().flat_map(|o| o.0.to_le_bytes()).collect();
        use std::os::unix::fs::FileExt;
        file.write_all_at(&bytes, count as u64 * 8).map_err(err)?;
        // SAFETY: `file` is an unlinked temporary file only this value holds; it is only
        // appended to (after this map is dropped above), never truncated, and every read
        // is within the `count` entries written before the map was made.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(err)?;
        self.spilled = Some(Spill { file, map, count: count + self.tail.len() });
        self.tail.clear();
        Ok(())
    }

    /// What is staged for `oid`: `Some(None)` = a deletion.
    pub(crate) fn get(&self, oid: Oid) -> Option<Option<&[u8]>> {
        match self.map.get(&oid) {
            Some(d) => Some(d.as_deref()),
            None => (self.in_run(oid) && !self.dropped.contains(&oid)).then_some(None),
        }
    }

    /// The run's oids still staged, in order.
    pub(crate) fn run(&self) -> impl Iterator<Item = Oid> + '_ {
        let spilled = self.spilled.iter().flat_map(|s| (0..s.count).map(|i| s.get(i)));
        spilled.chain(self.tail.iter().copied()).filter(|o| !self.dropped.contains(o) && !self.map.contains_key(o))
    }

    /// Every staged record in oid order: `None` = a deletion.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Oid, Option<&[u8]>)> + '_ {
        let mut map = self.map.iter().map(|(o, d)| (*o, d.as_deref())).peekable();
        let mut run = self.run().map(|o| (o, None)).peekable();
        std::iter::from_fn(move || match (map.peek(), run.peek()) {
            (Some(a), Some(b)) if b.0 < a.0 => run.next(),
            (Some(_), _) => map.next(),
            (None, _) => run.next(),
        })
    }

    /// The staged oids in order.
    pub(crate) fn oids(&self) -> impl Iterator<Item = Oid> + '_ {
        self.iter().map(|(o, _)| o)
    }

    /// How many records are staged.
    #[allow(clippy::len_without_is_empty)]
    pub(crate) fn len(&self) -> usize {
        self.map.len() + self.run().count()
    }
}

#[cfg(test)]
mod tests {
    use super::Writes;
    use crate::types::Oid;
    use std::collections::BTreeMap;

    /// Staging with a run that spills every few deletions reads and iterates like a map,
    /// whatever the order of stores, deletions (in and out of order) and unstagings.
    #[test]
    fn spilled_staging_is_a_map() {
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for spill_after in [1, 3, 64] {
            let mut w = Writes::new();
            w.spill_after = spill_after;
            let mut model: BTreeMap<Oid, Option<Vec<u8>>> = BTreeMap::new();
            let mut next = 0u64;
            for step in 0..3000u64 {
                // Mostly increasing deletions (the run), some anywhere below.
                let oid = if rnd() % 3 == 0 { Oid(rnd() % (next + 1)) } else { Oid(next) };
                next += 1 + rnd() % 3;
                match rnd() % 6 {
                    0 => {
                        w.store(oid, step.to_le_bytes().to_vec());
                        model.insert(oid, Some(step.to_le_bytes().to_vec()));
                    }
                    1 => {
                        w.unstage(oid);
                        model.remove(&oid);
                    }
                    _ => {
                        w.delete(oid, dir.path()).unwrap();
                        model.insert(oid, None);
                    }
                }
                let probe = Oid(rnd() % (next + 1));
                assert_eq!(w.get(probe), model.get(&probe).map(|d| d.as_deref()), "get {probe} at {step}");
            }
            let got: Vec<(Oid, Option<&[u8]>)> = w.iter().collect();
            let want: Vec<(Oid, Option<&[u8]>)> = model.iter().map(|(o, d)| (*o, d.as_deref())).collect();
            assert_eq!(got, want, "spill_after {spill_after}");
            assert_eq!(w.len(), model.len());
            assert!(w.spilled.is_some(), "the run spilled");
        }
    }
}
