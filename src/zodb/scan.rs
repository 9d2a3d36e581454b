//! Scans over a storage's current objects, in chunks (commits are never blocked for
//! long): a class histogram (`fs2 analyze`), the objects referring to one object
//! (`fs2 refs`), dangling references (`fs2 check --refs`).

use super::gc::{Graph, Phase};
use super::{Reader, Reference};
use crate::error::Result;
use crate::store::Storage;
use crate::types::{Oid, Tid};
use std::collections::HashMap;

const CHUNK: usize = 4096;

/// The class name shown for records that are not ZODB records.
pub const NOT_ZODB: &str = "(not a ZODB record)";

/// One line of a class histogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassStat {
    /// `module.Name`, or [`NOT_ZODB`].
    pub class: String,
    pub count: u64,
    pub bytes: u64,
}

/// Call `f(oid, data)` for every object live at `at`.
fn each_live(s: &Storage, at: Tid, mut f: impl FnMut(Oid, &[u8]) -> Result<()>) -> Result<()> {
    let mut start = Some(Oid(0));
    while let Some(from) = start {
        start = s.scan_live(from, at, CHUNK, |oid, _, d| f(oid, d))?;
    }
    Ok(())
}

/// Objects live at `at` by class, most bytes first (memory: one entry per class).
pub fn class_histogram(s: &Storage, at: Tid, progress: &mut dyn FnMut(u64)) -> Result<Vec<ClassStat>> {
    let mut by: HashMap<String, (u64, u64)> = HashMap::new();
    let mut reader = Reader::new();
    let mut n = 0u64;
    each_live(s, at, |_, d| {
        let class = match reader.read(d) {
            Ok((c, _)) => c.to_string(),
            Err(_) => NOT_ZODB.to_string(),
        };
        let e = by.entry(class).or_default();
        e.0 += 1;
        e.1 += d.len() as u64;
        n += 1;
        if n.is_multiple_of(CHUNK as u64) {
            progress(n);
        }
        Ok(())
    })?;
    let mut v: Vec<ClassStat> =
        by.into_iter().map(|(class, (count, bytes))| ClassStat { class, count, bytes }).collect();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.class.cmp(&b.class)));
    Ok(v)
}

/// Every reference to `target` from an object live at `at`: (referring oid, reference).
pub fn referrers(s: &Storage, target: Oid, at: Tid, progress: &mut dyn FnMut(u64)) -> Result<Vec<(Oid, Reference)>> {
    let mut out = Vec::new();
    let mut reader = Reader::new();
    let mut n = 0u64;
    each_live(s, at, |oid, d| {
        if let Ok((_, refs)) = reader.read(d) {
            out.extend(refs.into_iter().filter(|r| r.oid == target).map(|r| (oid, r)));
        }
        n += 1;
        if n.is_multiple_of(CHUNK as u64) {
            progress(n);
        }
        Ok(())
    })?;
    Ok(out)
}

/// What [`dangling`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefCheck {
    pub objects: u64,
    pub references: u64,
    /// Strong references to oids without a current revision (missing or deleted).
    pub dangling: u64,
    /// Objects whose records are not ZODB records.
    pub unreadable: u64,
}

/// Find strong references, as of `at`, to objects that do not exist (never stored, or
/// deleted): `f(from, to)` for each, like ZODB's `fsrefs`; `bad(oid, why)` for each
/// object that is not a ZODB record. Memory: the on-disk graph of `gc`.
pub fn dangling(
    s: &Storage,
    at: Tid,
    progress: &mut dyn FnMut(Phase, u64, u64),
    f: &mut dyn FnMut(Oid, Oid),
    bad: &mut dyn FnMut(Oid, String),
) -> Result<RefCheck> {
    let g = Graph::build(s, at, progress)?;
    let mut r = RefCheck { objects: g.len(), references: g.target_count, ..RefCheck::default() };
    let mut targets = Vec::new();
    for i in 0..g.len() {
        if !g.is_readable(i) {
            r.unreadable += 1;
            bad(g.oid(i), Graph::why_unreadable(s, g.oid(i), at));
            continue;
        }
        g.targets(i, &mut targets)?;
        for t in &targets {
            if g.find(*t).is_none() {
                r.dangling += 1;
                f(g.oid(i), *t);
            }
        }
    }
    Ok(r)
}
