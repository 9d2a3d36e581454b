//! The read path under [`Storage`](crate::Storage)'s reads: an oid's records newest first
//! through the active index and the past segments' indexes, each record's header checked
//! once, its data only when taken (format version 2; see DESIGN.md "Header-first reads").

use crate::chain::View;
use crate::error::{Error, Result};
use crate::segment::{read_record, RecordRef};
use crate::types::{Oid, SegmentName, Tid};
use std::path::Path;

/// A record met while walking an oid's history, newest first: its header is verified,
/// its data is read and verified only if taken.
pub(crate) struct Walked<'a> {
    pub header: crate::format::DataHeader,
    pub segment: SegmentName,
    rec: RecordRef<'a>,
}

impl<'a> Walked<'a> {
    /// The record's data, checksum-verified.
    pub fn data(self) -> Result<std::borrow::Cow<'a, [u8]>> {
        self.rec.data()
    }
}

/// Visit `oid`'s retained records newest first until `f` returns `false`: the active
/// segment's chain of prev pointers, then each past segment's, newest to oldest.
/// Every record's header is checksum-verified before its fields are used (by its own
/// CRC, or in a version-1 segment with its data), its data when `f` takes it; pointers
/// must go strictly backwards in offset and tid, so a damaged pointer is reported, never
/// followed in a loop.
///
/// `at`: the newest tid the caller can want (`Tid::MAX` for all): going on past a damaged
/// transaction of the active segment that may hold a revision of `oid` newer than the
/// last valid transaction before it, and not newer than `at`, is an error (it may hide the
/// answer), never a silent step to an older revision.
pub(crate) fn walk(v: &View, oid: Oid, at: Tid, mut f: impl FnMut(Walked<'_>) -> Result<bool>) -> Result<()> {
    let mut last_tid = Tid::MAX;
    let mut check_order = |r: &RecordRef<'_>, path: &Path| -> Result<()> {
        if r.header.tid >= last_tid && last_tid != Tid::MAX {
            return Err(Error::corrupted(path, r.offset, format!("history of oid {oid} is out of order")));
        }
        last_tid = r.header.tid;
        Ok(())
    };
    if let Some(a) = &v.active {
        // A damaged transaction newer than the oid's newest valid record may hold a newer
        // revision. (Older ones are met through `prev` pointers, and verified there.)
        let newest = a.index.get(&oid);
        a.cross(oid, at, newest.map_or(0, |e| e.offset))?;
        if let Some(e) = newest {
            let mut off = e.offset;
            loop {
                let r = read_record(None, &a.seg, off, a.end, oid)?;
                check_order(&r, &a.seg.path)?;
                let prev = r.header.prev;
                let go = f(Walked { header: r.header, segment: a.seg.header.name, rec: r })?;
                match prev {
                    _ if !go => return Ok(()),
                    0 => return Ok(()),
                    1 => break,
                    p => off = p,
                }
            }
        }
    }
    for p in &v.pasts {
        p.check_lost(oid, at)?;
        let Some(mut off) = p.find(oid)? else { continue };
        loop {
            let r = p.record(off, oid)?;
            check_order(&r, &p.seg.path)?;
            let prev = r.header.prev;
            let go = f(Walked { header: r.header, segment: p.seg.header.name, rec: r })?;
            match prev {
                _ if !go => return Ok(()),
                0 => return Ok(()),
                1 => break,
                p => off = p,
            }
        }
    }
    Ok(())
}

/// Call `f` with every oid ≥ `start` that has a record in `v`, in oid order, until it
/// returns `false`: a merge of the indexes' cursors (O(segments) per oid, no list of
/// all oids).
pub(crate) fn each_oid(v: &View, start: Oid, mut f: impl FnMut(Oid) -> Result<bool>) -> Result<()> {
    let mut active = v.active.as_ref().map(|a| a.index.range(start..).map(|(o, _)| *o).peekable());
    let mut cursors = Vec::with_capacity(v.pasts.len());
    for p in &v.pasts {
        cursors.push((p, p.lower_bound(start)?));
    }
    loop {
        let mut next: Option<Oid> = active.as_mut().and_then(|a| a.peek().copied());
        for (p, i) in &cursors {
            if *i < p.index.len() {
                let o = p.entry(*i)?.0;
                next = Some(next.map_or(o, |n| n.min(o)));
            }
        }
        let Some(oid) = next else { return Ok(()) };
        if let Some(a) = active.as_mut() {
            if a.peek() == Some(&oid) {
                a.next();
            }
        }
        for (p, i) in cursors.iter_mut() {
            if *i < p.index.len() && p.entry(*i)?.0 == oid {
                *i += 1;
            }
        }
        if !f(oid)? {
            return Ok(());
        }
    }
}

/// `f` of `oid`'s newest retained record with tid ≤ `at`, unless that is a deletion.
pub(crate) fn live_at<T>(v: &View, oid: Oid, at: Tid, f: impl FnOnce(Walked<'_>) -> Result<T>) -> Result<Option<T>> {
    let mut f = Some(f);
    let mut out = None;
    walk(v, oid, at, |r| {
        if r.header.tid > at {
            return Ok(true);
        }
        if !r.header.is_delete() {
            out = f.take().map(|f| f(r)).transpose()?;
        }
        Ok(false)
    })?;
    Ok(out)
}

/// The tid of `oid`'s newest record in `v`.
pub(crate) fn current_tid(v: &View, oid: Oid) -> Result<Option<Tid>> {
    if let Some(a) = &v.active {
        let newest = a.index.get(&oid);
        a.cross(oid, Tid::MAX, newest.map_or(0, |e| e.offset))?;
        if let Some(e) = newest {
            return Ok(Some(e.tid));
        }
    }
    for p in &v.pasts {
        p.check_lost(oid, Tid::MAX)?;
        if let Some(off) = p.find(oid)? {
            return Ok(Some(p.record(off, oid)?.header.tid));
        }
    }
    Ok(None)
}
