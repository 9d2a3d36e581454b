//! Reachability garbage collection of ZODB objects (`fs2 gc`), in memory independent of
//! the object count beyond two bits per object.
//!
//! 1. **Begin** a transaction: its base `B` is the snapshot walked, and its conflict
//!    check makes a concurrent change to a garbage object fail the commit.
//! 2. **Scan** every object live at `B` in oid order (the storage's index merge), read
//!    its record and write the object graph to two unlinked temporary files: `nodes`,
//!    one (oid, first target) pair per live object, sorted by oid because the scan is
//!    (a mapped [`WorkTable`]: lookups by interpolation search, no hash set of oids);
//!    `targets`, the strong references' oids, node after node. An object whose record
//!    is not a ZODB record is flagged (its references are unknown).
//! 3. **Mark** from the root oid 0 with a bit per node and a bounded stack; when the
//!    stack is full, a node is marked and flagged "pending" in a second bit array, and
//!    the pending nodes are scanned once the stack empties. Weak and cross-database
//!    references are not in `targets`, so they keep nothing alive (as in ZODB's pack GC,
//!    which follows `referencesf`). A reachable unreadable object stops the collection:
//!    its references are unknown, so nothing can safely be called garbage.
//! 4. **Sweep**: every unmarked node is staged as a deletion in the one transaction.
//! 5. **Commit** in two phases: `vote` checks conflicts (a garbage object changed after
//!    `B`) and takes the commit order (`Transaction::hold_commit_order`); then the transactions committed after `B` are read
//!    and if one of them refers to a garbage object (an object made reachable again by a
//!    client that still held it) the transaction is aborted; else `finish`.

use super::{NotZodb, Reader};
use crate::error::{Error, Result};
use crate::index::WorkTable;
use crate::store::Storage;
use crate::types::{Oid, Tid};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The root object of a ZODB database.
pub const ROOT: Oid = Oid(0);

/// Bit 63 of a node's location: its record is not a ZODB record.
const UNREADABLE: u64 = 1 << 63;

/// Most node indices the marking stack holds before it spills to the pending bits.
const STACK_LIMIT: usize = 1 << 20;

/// Objects per chunk of the scan (the read view is held for one chunk).
const CHUNK: usize = 4096;

/// A phase of a long scan, for progress displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading every live object (done, an upper bound of the total).
    Scan,
    /// Marking reachable objects (marked, live objects).
    Mark,
}

/// The strong-reference graph of the objects live at one tid, on disk.
pub(crate) struct Graph {
    pub base: Tid,
    /// (oid, index of its first target | UNREADABLE) per live object, by oid.
    pub nodes: WorkTable,
    targets: std::fs::File,
    pub target_count: u64,
}

impl Graph {
    /// Read every object live at `base` and write its graph.
    pub fn build(s: &Storage, base: Tid, progress: &mut dyn FnMut(Phase, u64, u64)) -> Result<Graph> {
        let dir = s.dir().to_path_buf();
        let werr = |e: std::io::Error| Error::io(&dir, "write temporary file in", e);
        let mut nodes = BufWriter::with_capacity(1 << 20, super::scratch_file(s)?);
        let mut targets = BufWriter::with_capacity(1 << 20, super::scratch_file(s)?);
        let total: u64 = s.segments()?.iter().map(|g| g.index_entries).sum();
        let mut reader = Reader::new();
        let (mut count, mut target_count, mut seen) = (0u64, 0u64, 0u64);
        let mut start = Some(Oid(0));
        while let Some(from) = start {
            start = s.scan_live(from, base, CHUNK, |oid, _tid, data| {
                let mut loc = target_count;
                match reader.read(data) {
                    Ok((_, refs)) => {
                        for r in refs.iter().filter(|r| r.is_strong()) {
                            targets.write_all(&r.oid.0.to_le_bytes()).map_err(werr)?;
                            target_count += 1;
                        }
                    }
                    Err(_) => {
                        loc |= UNREADABLE;
                    }
                }
                nodes
                    .write_all(&oid.0.to_le_bytes())
                    .and_then(|_| nodes.write_all(&loc.to_le_bytes()))
                    .map_err(werr)?;
                count += 1;
                Ok(())
            })?;
            seen += CHUNK as u64;
            progress(Phase::Scan, seen.min(total), total);
        }
        let nodes = nodes.into_inner().map_err(|e| werr(e.into_error()))?;
        let targets = targets.into_inner().map_err(|e| werr(e.into_error()))?;
        let nodes = WorkTable::map(nodes, count).map_err(werr)?;
        Ok(Graph { base, nodes, targets, target_count })
    }

    pub fn len(&self) -> u64 {
        self.nodes.len()
    }

    pub fn oid(&self, i: u64) -> Oid {
        self.nodes.get(i).0
    }

    pub fn is_readable(&self, i: u64) -> bool {
        self.nodes.get(i).1 & UNREADABLE == 0
    }

    /// The node of a live oid.
    pub fn find(&self, oid: Oid) -> Option<u64> {
        if self.nodes.len() == 0 {
            return None;
        }
        self.nodes.find(oid)
    }

    /// The strong references of node `i` into `out`.
    pub fn targets(&self, i: u64, out: &mut Vec<Oid>) -> Result<()> {
        let first = self.nodes.get(i).1 & !UNREADABLE;
        let end = if i + 1 < self.len() { self.nodes.get(i + 1).1 & !UNREADABLE } else { self.target_count };
        let mut buf = vec![0u8; ((end - first) * 8) as usize];
        self.targets.read_exact_at(&mut buf, first * 8).map_err(|e| Error::io(Path::new("gc targets"), "read", e))?;
        out.clear();
        out.extend(buf.chunks_exact(8).map(|c| Oid(u64::from_le_bytes(c.try_into().unwrap()))));
        Ok(())
    }

    /// Why the record of `oid` at the graph's base is not a ZODB record.
    pub fn why_unreadable(s: &Storage, oid: Oid, base: Tid) -> String {
        match s.load_at(oid, base) {
            Ok(Some((_, d))) => match Reader::new().read(&d) {
                Err(NotZodb { offset, reason }) => format!("{reason} (at byte {offset})"),
                Ok(_) => "unreadable".into(),
            },
            Ok(None) => "not found".into(),
            Err(e) => e.to_string(),
        }
    }
}

/// Bit arrays over node indices (two bits per live object in all).
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    fn get(&self, i: u64) -> bool {
        self.0[(i / 64) as usize] >> (i % 64) & 1 == 1
    }
    fn set(&mut self, i: u64) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
}

/// The marked (reachable) nodes of a graph.
pub(crate) struct Marks {
    bits: Bits,
    pub reachable: u64,
}

impl Marks {
    pub fn is_marked(&self, i: u64) -> bool {
        self.bits.get(i)
    }
}

/// Mark everything reachable from `root` by strong references. Errors if a reachable
/// object is unreadable (naming it and the reason).
pub(crate) fn mark(
    s: &Storage,
    g: &Graph,
    root: Oid,
    stack_limit: usize,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<Marks> {
    let n = g.len();
    let mut m = Marks { bits: Bits::new(n), reachable: 0 };
    let mut pending = Bits::new(n);
    let mut stack: Vec<u64> = Vec::new();
    let mut refs = Vec::new();
    let Some(r) = g.find(root) else { return Ok(m) };
    // Mark node `i` and queue it for scanning: on the stack, or in `pending` if full.
    let visit = |i: u64, m: &mut Marks, stack: &mut Vec<u64>, pending: &mut Bits| -> Result<()> {
        if m.bits.get(i) {
            return Ok(());
        }
        if !g.is_readable(i) {
            let oid = g.oid(i);
            return Err(Error::invalid(format!(
                "object {oid} is reachable from the root but its record is not a ZODB record ({}): its \
                 references are unknown, so nothing was collected",
                Graph::why_unreadable(s, oid, g.base)
            )));
        }
        m.bits.set(i);
        m.reachable += 1;
        if stack.len() < stack_limit {
            stack.push(i);
        } else {
            pending.set(i);
        }
        Ok(())
    };
    visit(r, &mut m, &mut stack, &mut pending)?;
    loop {
        while let Some(i) = stack.pop() {
            g.targets(i, &mut refs)?;
            for oid in &refs {
                if let Some(j) = g.find(*oid) {
                    visit(j, &mut m, &mut stack, &mut pending)?;
                }
            }
            if m.reachable.is_multiple_of(65536) {
                progress(Phase::Mark, m.reachable, n);
            }
        }
        // Refill the stack with nodes marked while it was full (they may spill again).
        for (k, w) in pending.0.iter_mut().enumerate() {
            while *w != 0 && stack.len() < stack_limit {
                let b = w.trailing_zeros() as u64;
                *w &= *w - 1;
                stack.push(k as u64 * 64 + b);
            }
        }
        if stack.is_empty() {
            break;
        }
    }
    progress(Phase::Mark, m.reachable, n);
    Ok(m)
}

/// What a collection found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The snapshot walked.
    pub base: Tid,
    /// Objects live at `base`.
    pub objects: u64,
    pub reachable: u64,
    pub garbage: u64,
    /// Strong references followed from the scanned records (all objects).
    pub references: u64,
    /// Unreachable objects whose records are not ZODB records (deleted with the rest).
    pub unreadable_garbage: u64,
    /// The deleting transaction (`None` for a dry run or when nothing is garbage).
    pub tid: Option<Tid>,
}

/// Options of [`collect`].
pub struct GcOptions<'a> {
    /// Find the garbage, delete nothing.
    pub dry_run: bool,
    /// Called with each garbage oid, in oid order.
    pub on_garbage: &'a mut dyn FnMut(Oid),
    pub progress: &'a mut dyn FnMut(Phase, u64, u64),
    /// Called after marking, before the commit (tests use it to race the collector).
    pub before_commit: &'a mut dyn FnMut(),
}

/// The objects live at `base` that are unreachable from the root by strong references,
/// in oid order, deleting nothing (steps 2 and 3 of the module docs; the caller deals
/// with what was committed after `base`, e.g. the Python package's two-phase pack).
/// Refused (`Invalid`) when a reachable record is not a ZODB record or there are
/// objects but no root object.
pub fn garbage(s: &Storage, base: Tid, progress: &mut dyn FnMut(Phase, u64, u64)) -> Result<Vec<Oid>> {
    let g = Graph::build(s, base, progress)?;
    if g.len() == 0 {
        return Ok(Vec::new());
    }
    if g.find(ROOT).is_none() {
        return Err(Error::invalid(format!(
            "no root object {ROOT} as of {base}: refusing to collect (every object would be garbage)"
        )));
    }
    let marks = mark(s, &g, ROOT, STACK_LIMIT, progress)?;
    Ok((0..g.len()).filter(|&i| !marks.is_marked(i)).map(|i| g.oid(i)).collect())
}

/// Collect the garbage of `s` (see the module docs). A storage without objects has none;
/// one with objects but without a root object is refused.
pub fn collect(s: &Storage, o: GcOptions<'_>) -> Result<GcReport> {
    let mut txn = if o.dry_run { None } else { Some(s.begin()) };
    let base = txn.as_ref().map_or_else(|| s.last_tid(), |t| t.base());
    let g = Graph::build(s, base, o.progress)?;
    let mut report = GcReport { base, objects: g.len(), references: g.target_count, ..GcReport::default() };
    if g.len() == 0 {
        return Ok(report);
    }
    if g.find(ROOT).is_none() {
        return Err(Error::invalid(format!(
            "no root object {ROOT} as of {base}: refusing to collect (every object would be garbage)"
        )));
    }
    let marks = mark(s, &g, ROOT, STACK_LIMIT, o.progress)?;
    report.reachable = marks.reachable;
    for i in 0..g.len() {
        if !marks.is_marked(i) {
            let oid = g.oid(i);
            report.garbage += 1;
            report.unreadable_garbage += u64::from(!g.is_readable(i));
            (o.on_garbage)(oid);
            if let Some(t) = txn.as_mut() {
                t.delete(oid)?;
            }
        }
    }
    (o.before_commit)();
    let Some(mut t) = txn.filter(|_| report.garbage > 0) else { return Ok(report) };
    t.set_user(b"fs2 gc");
    t.set_description(
        format!("gc: delete {} objects unreachable from the root as of {base}", report.garbage).as_bytes(),
    );
    t.hold_commit_order()?;
    t.vote()?;
    // The commit order is ours: no transaction commits until finish or abort. One
    // committed after the base that refers to a garbage object revived it.
    let mut reader = Reader::new();
    for txn_rec in s.transactions(Tid(base.0.saturating_add(1)), Tid::MAX) {
        let txn_rec = txn_rec?;
        for (oid, data) in &txn_rec.records {
            let Some(d) = data else { continue };
            // A record we cannot read might refer to garbage: do not guess.
            let Ok((_, refs)) = reader.read(d) else {
                t.abort();
                return Err(Error::Conflict { oid: *oid, tid: txn_rec.tid });
            };
            for r in refs.iter().filter(|r| r.is_strong()) {
                if g.find(r.oid).is_some_and(|i| !marks.is_marked(i)) {
                    t.abort();
                    return Err(Error::Conflict { oid: r.oid, tid: txn_rec.tid });
                }
            }
        }
    }
    report.tid = Some(t.finish()?);
    Ok(report)
}
