//! Undo of a committed transaction (ZODB's `IStorageUndoable`, `fs2 undo`): the data a
//! new transaction needs to restore each object's state before it.
//!
//! Undo of `T` writes, for every object `T` wrote, the object's state before `T` (a
//! deletion when `T` created it). An object is *current* when nothing changed it after
//! `T` (its newest record is `T`'s, or has the same bytes); otherwise the undo conflicts
//! and is refused here. The ZODB layer (Python) tries ZODB's conflict resolution on top
//! of [`Storage::undo_records`] first, as FileStorage does (never for an object `T`
//! created: there is no state before to merge with).
//!
//! Only a transaction whose records are all still retained can be undone: one inside a
//! merged segment (a merge keeps only the records current at the end of its range) or a
//! segment that received merged history is refused. The state *before* `T` is exact
//! whenever `T`'s own segment is intact: older merged segments keep the state at the
//! end of their range, which is what precedes `T`'s segment.

use crate::error::{Error, Result};
use crate::store::Storage;
use crate::txn::Transaction;
use crate::types::{Oid, Tid};

/// One object of a transaction to undo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndoRecord {
    pub oid: Oid,
    /// The state before the undone transaction (`None`: it did not exist or was deleted).
    pub before: Option<Vec<u8>>,
    /// What the undone transaction wrote (`None`: a deletion).
    pub undone: Option<Vec<u8>>,
    /// The tid of the object's newest record, and that record's data (`None`: deleted).
    pub current_tid: Tid,
    pub current: Option<Vec<u8>>,
}

impl UndoRecord {
    /// Nothing changed the object after the undone transaction `tid` (or the change
    /// left the same bytes).
    pub fn is_current(&self, tid: Tid) -> bool {
        self.current_tid == tid || self.current == self.undone
    }
}

impl Storage {
    /// Whether transaction `tid` can be undone: it is retained, in a segment no merge
    /// touched. `Ok(false)` = its history was merged away; `NotFound` = no such one.
    pub fn undoable(&self, tid: Tid) -> Result<bool> {
        let segs = self.segments()?;
        let Some(t) = self.transaction(tid)? else {
            // Gone because a merge dropped it (all its records were superseded)?
            // (The first segment whose history reaches `tid`: a merged one has lost the
            // transactions of its range that it does not list.)
            let merged = segs
                .iter()
                .find(|s| s.last_tid.is_some_and(|l| tid <= l))
                .is_some_and(|s| s.name.first != s.name.last || !s.appended.is_empty());
            return if merged { Ok(false) } else { Err(Error::NotFound(format!("no retained transaction {tid}"))) };
        };
        let seg = segs.iter().find(|s| s.name == t.segment);
        Ok(t.segment.first == t.segment.last && seg.is_some_and(|s| s.appended.is_empty()))
    }

    /// The records undoing transaction `tid` needs, in the order it wrote them. Refused
    /// (`NotFound`) if `tid` is not retained, (`Invalid`) if its history was merged.
    pub fn undo_records(&self, tid: Tid) -> Result<Vec<UndoRecord>> {
        if !self.undoable(tid)? {
            return Err(Error::invalid(format!(
                "transaction {tid} cannot be undone: its history was merged (packed) away"
            )));
        }
        let t = self.transaction(tid)?.ok_or_else(|| Error::NotFound(format!("no retained transaction {tid}")))?;
        let mut out = Vec::with_capacity(t.records.len());
        for r in &t.records {
            let undone = match self.revision(r.oid, tid)? {
                Some(rev) => rev.data,
                None => return Err(Error::NotFound(format!("object {} has no record in {tid}", r.oid))),
            };
            let before = self.load_before(r.oid, tid)?.map(|l| l.data);
            let current_tid = self.current_tid(r.oid)?.unwrap_or(tid);
            let current = self.load(r.oid)?.filter(|(t, _)| *t == current_tid).map(|(_, d)| d);
            out.push(UndoRecord { oid: r.oid, before, undone, current_tid, current });
        }
        Ok(out)
    }
}

impl Transaction {
    /// Stage the undo of transaction `tid` (see the module docs); returns the oids
    /// staged. What this transaction already staged counts as the current state (several
    /// undos in one transaction). An object changed after `tid` is a
    /// [`Error::Conflict`] naming it and its newest tid; nothing is staged then.
    pub fn undo(&mut self, tid: Tid) -> Result<Vec<Oid>> {
        let s = Storage { inner: self.inner.clone() };
        let mut recs = s.undo_records(tid)?;
        for r in &mut recs {
            if let Some(d) = self.staged(r.oid) {
                r.current = d.map(<[u8]>::to_vec);
                r.current_tid = Tid::MAX;
            }
            if !r.is_current(tid) {
                return Err(Error::Conflict { oid: r.oid, tid: r.current_tid });
            }
        }
        for r in &recs {
            match &r.before {
                Some(d) => self.store(r.oid, d)?,
                None => self.delete(r.oid)?,
            }
        }
        Ok(recs.iter().map(|r| r.oid).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Options;

    fn commit(s: &Storage, writes: &[(u64, Option<&[u8]>)]) -> Tid {
        let mut t = s.begin();
        for (o, d) in writes {
            match d {
                Some(d) => t.store(Oid(*o), d).unwrap(),
                None => t.delete(Oid(*o)).unwrap(),
            }
        }
        t.commit().unwrap()
    }

    #[test]
    fn several_undos_in_one_transaction_see_each_other() {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::create(d.path(), Options::default()).unwrap();
        let t1 = commit(&s, &[(1, Some(b"a1"))]);
        let t2 = commit(&s, &[(1, Some(b"a2")), (2, Some(b"b2"))]);
        let mut t = s.begin();
        // Undoing t1 first conflicts (object 1 changed in t2) and stages nothing.
        assert!(matches!(t.undo(t1), Err(Error::Conflict { oid: Oid(1), tid }) if tid == t2));
        assert_eq!(t.staged_oids().count(), 0);
        assert_eq!(t.undo(t2).unwrap(), vec![Oid(1), Oid(2)]);
        // Object 1 is now staged as a1, what t1 wrote: undoing t1 deletes it.
        assert_eq!(t.undo(t1).unwrap(), vec![Oid(1)]);
        t.commit().unwrap();
        assert_eq!(s.load(Oid(1)).unwrap(), None);
        assert_eq!(s.load(Oid(2)).unwrap(), None);
        // An undo of a deletion restores the object.
        let t3 = commit(&s, &[(3, Some(b"c"))]);
        let t4 = commit(&s, &[(3, None)]);
        let r = s.undo_records(t4).unwrap();
        assert_eq!(r[0].before.as_deref(), Some(&b"c"[..]));
        assert!(r[0].is_current(t4));
        let mut t = s.begin();
        t.undo(t4).unwrap();
        t.commit().unwrap();
        assert_eq!(s.load(Oid(3)).unwrap().map(|x| x.1), Some(b"c".to_vec()));
        assert!(t3 < t4);
        assert!(matches!(s.undo_records(Tid(1)), Err(Error::NotFound(_))));
    }
}
