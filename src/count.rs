//! Counting live objects cheaply when asked again (ZODB's `len(storage)`, which ZEO asks
//! on every client connect).
//!
//! An exact O(1) count would need a count per segment that a merge and every deletion
//! keep exact, i.e. a format change; we do not make one. A first count walks every index
//! (O(objects)); a later one starts from it and looks only at the transactions
//! committed since (a seeked scan, see `seek`): each object they touched counts by
//! whether it was live before and is live now. A merge may drop the history the
//! earlier count stood on, so when a segment the earlier count saw has left the chain,
//! or the changes since are more than a full walk reads, it counts afresh.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::store::Storage;
use crate::types::{Oid, SegmentName, Tid};

/// The number of live objects as of a tid (see [`Storage::count_objects_from`]).
#[derive(Clone, Debug)]
pub struct ObjectCount {
    pub tid: Tid,
    pub objects: u64,
    /// The chain's segments when counted.
    chain: Vec<SegmentName>,
}

impl Storage {
    /// Live objects now, counted from `prev` (an earlier result) when that can be done
    /// exactly; else by a full walk.
    pub fn count_objects_from(&self, prev: Option<&ObjectCount>) -> Result<ObjectCount> {
        let chain = || -> Result<Vec<SegmentName>> { Ok(self.segments()?.iter().map(|s| s.name).collect()) };
        let now = chain()?;
        let at = self.last_tid();
        if let Some(p) = prev.filter(|p| p.tid <= at && p.chain.iter().all(|n| now.contains(n))) {
            if let Some(objects) = self.count_changes(p, at)? {
                // A merge that ran meanwhile may have taken the history it read.
                let after = chain()?;
                if p.chain.iter().all(|n| after.contains(n)) {
                    return Ok(ObjectCount { tid: at, objects, chain: now });
                }
            }
        }
        let mut objects = 0;
        let mut start = Oid(0);
        loop {
            let chunk = self.list(start, at, 4096)?;
            objects += chunk.len() as u64;
            match chunk.last() {
                Some(last) if last.oid.0 < u64::MAX => start = Oid(last.oid.0 + 1),
                _ => return Ok(ObjectCount { tid: at, objects, chain: now }),
            }
        }
    }

    /// `p`'s count brought to `at` through the transactions after `p.tid`; None when
    /// they hold more records than a full walk would read.
    fn count_changes(&self, p: &ObjectCount, at: Tid) -> Result<Option<u64>> {
        if p.tid == at {
            return Ok(Some(p.objects));
        }
        let limit = p.objects.max(100_000);
        let mut touched = BTreeSet::new();
        let (mut records, from) = (0u64, Tid(p.tid.0 + 1));
        for t in self.transactions(from, at) {
            let t = t?;
            records += t.records.len() as u64;
            if records > limit {
                return Ok(None);
            }
            touched.extend(t.records.iter().map(|r| r.0));
        }
        let live = |oid, at| -> Result<bool> { Ok(self.stat_at(oid, at)?.is_some_and(|r| !r.deleted)) };
        let mut n = p.objects as i64;
        for oid in touched {
            n += live(oid, at)? as i64 - live(oid, p.tid)? as i64;
        }
        Ok(Some(n.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Options;

    fn commit(s: &Storage, writes: &[(u64, bool)]) {
        let mut t = s.begin();
        for &(o, live) in writes {
            if live {
                t.store(Oid(o), b"x").unwrap();
            } else {
                t.delete(Oid(o)).unwrap();
            }
        }
        t.commit().unwrap();
    }

    #[test]
    fn counts_from_an_earlier_count_agree_with_a_full_walk() {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::create(d.path(), Options { sync: false, ..Options::default() }).unwrap();
        for i in 0..200 {
            commit(&s, &[(i, true), (i + 1000, true)]);
        }
        let first = s.count_objects_from(None).unwrap();
        assert_eq!(first.objects, 400);
        // Deletions, re-creations, rewrites, a deletion undone in the same range, a
        // rotation: each step's incremental count equals a full walk.
        let mut c = first.clone();
        let steps: Vec<Vec<(u64, bool)>> = vec![
            vec![(5, false), (6, false), (7, true)],
            vec![(5, true), (2000, true)],
            vec![(2000, false), (2001, true), (1000, false)],
            vec![],
        ];
        for (k, w) in steps.iter().enumerate() {
            if w.is_empty() {
                s.rotate().unwrap();
            } else {
                commit(&s, w);
            }
            // Counted from `c` through the changes, not by a full walk.
            assert!(s.count_changes(&c, s.last_tid()).unwrap().is_some(), "step {k}");
            let next = s.count_objects_from(Some(&c)).unwrap();
            assert_eq!(next.objects, s.count_objects().unwrap(), "step {k}");
            assert_eq!(next.objects, s.count_objects_from(None).unwrap().objects);
            c = next;
        }
        assert_eq!(c.objects, 400 - 2 + 2 - 1);
        // Several steps at once from the first count.
        assert_eq!(s.count_objects_from(Some(&first)).unwrap().objects, c.objects);
        // After a merge (the earlier count's segments left the chain): a full walk.
        commit(&s, &[(3, false)]);
        s.rotate().unwrap();
        commit(&s, &[(4, false)]);
        s.rotate().unwrap();
        let names: Vec<SegmentName> =
            s.segments().unwrap().iter().filter(|x| x.state == crate::SegmentState::Past).map(|x| x.name).collect();
        s.merge(&crate::merge::Policy::Named(names)).unwrap();
        assert_eq!(s.count_objects_from(Some(&c)).unwrap().objects, c.objects - 2);
    }
}
