//! The ZODB views of the tree (docs/NAMESPACE.md): `classes/` (live objects by class),
//! `refs/<oid>` (an object's persistent references) and `gc` (the collector of `fs2 gc`
//! run by the daemon, which holds the writer).
//!
//! `classes/` comes from one scan of the objects live at the tid `head/` shows, kept
//! until head moves (then rebuilt at the next access that needs it). The scan writes
//! (oid, tid, size, class) per object to an unlinked temporary file, then places the
//! (oid, tid, size) triples grouped by class, in oid order, in a second one that is
//! mapped: the heap holds one entry per class, whatever the object count.

use super::node::parse_hex;
use super::{no_such, Fs, FsError, FsResult, Meta, Node};
use crate::error::{Error, Result};
use crate::store::Storage;
use crate::types::{Oid, Tid};
use crate::zodb::gc::{self, GcOptions, Phase};
use crate::zodb::{Reader, RefKind};
use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The directory name of the objects whose records are not ZODB records.
pub const NOT_ZODB_DIR: &str = "(not-zodb)";

/// Objects per chunk of the scan (the engine's read view is held for one chunk).
const CHUNK: usize = 4096;

/// Bytes per object in the grouped file: oid, tid, size.
const ENTRY: usize = 24;

/// Class directory names seen by this mount, each with a number that never changes (the inode key
/// and listing cookie of `classes/<name>/`, stable across rebuilds).
#[derive(Default)]
pub struct Classes {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Classes {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), i);
        i
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    pub fn find(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }
}

/// The directory name of a class: `/` (never in a Python name) would split the path.
pub fn dir_name(class: &str) -> String {
    class.replace('/', "%2F")
}

/// One class of a [`ClassView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassCount {
    pub id: u32,
    /// Where its entries start in the grouped file (in entries).
    start: u64,
    pub count: u64,
    pub bytes: u64,
}

/// The objects live at `tid`, by class.
pub struct ClassView {
    pub tid: Tid,
    /// By id (the listing order of `classes/`).
    pub classes: Vec<ClassCount>,
    map: Option<memmap2::Mmap>,
}

/// One object of a class: its oid and the revision live at the view's tid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub oid: Oid,
    pub tid: Tid,
    pub size: u64,
}

impl ClassView {
    fn entry(&self, i: u64) -> Member {
        let m = self.map.as_ref().expect("entries exist only in a mapped view");
        let at = i as usize * ENTRY;
        let w = |k: usize| u64::from_le_bytes(m[at + 8 * k..at + 8 * k + 8].try_into().unwrap());
        Member { oid: Oid(w(0)), tid: Tid(w(1)), size: w(2) }
    }

    pub fn class(&self, id: u32) -> Option<&ClassCount> {
        self.classes.binary_search_by_key(&id, |c| c.id).ok().map(|i| &self.classes[i])
    }

    /// The index (into the grouped file) of the first member of `c` with oid ≥ `from`.
    fn seek(&self, c: &ClassCount, from: u64) -> u64 {
        let (mut lo, mut hi) = (0, c.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(c.start + mid).oid.0 < from {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        c.start + lo
    }

    /// The members of class `c` with oid ≥ `from`, in oid order.
    pub fn members(&self, c: &ClassCount, from: u64) -> impl Iterator<Item = Member> + '_ {
        (self.seek(c, from)..c.start + c.count).map(move |i| self.entry(i))
    }

    /// The member `oid` of class `c`, if it is one.
    pub fn member(&self, c: &ClassCount, oid: Oid) -> Option<Member> {
        self.members(c, oid.0).next().filter(|m| m.oid == oid)
    }

    /// `classes/index`: "count bytes class" lines, most bytes first.
    pub fn index_text(&self, names: &Classes) -> String {
        let mut v: Vec<&ClassCount> = self.classes.iter().collect();
        let name = |c: &ClassCount| names.name(c.id).unwrap_or("?").to_string();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| name(a).cmp(&name(b))));
        v.iter().map(|c| format!("{} {} {}\n", c.count, c.bytes, name(c))).collect()
    }
}

/// Scan the objects live at `at` and group them by class (see the module docs).
pub fn build(s: &Storage, at: Tid, names: &Mutex<Classes>) -> Result<ClassView> {
    let werr = |e: std::io::Error| Error::io(s.dir(), "write temporary file in", e);
    let mut pairs = BufWriter::with_capacity(1 << 20, crate::zodb::scratch_file(s)?);
    let mut reader = Reader::new();
    // (count, bytes) by class id; a local cache of names to ids.
    let mut counts: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut local: HashMap<String, u32> = HashMap::new();
    let mut total = 0u64;
    let mut start = Some(Oid(0));
    while let Some(from) = start {
        start = s.scan_live(from, at, CHUNK, |oid, tid, data| {
            let class = match reader.read(data) {
                Ok((c, _)) => dir_name(&c.to_string()),
                Err(_) => NOT_ZODB_DIR.to_string(),
            };
            let id = match local.get(&class) {
                Some(&i) => i,
                None => {
                    let i = names.lock().unwrap().id(&class);
                    local.insert(class, i);
                    i
                }
            };
            let e = counts.entry(id).or_default();
            e.0 += 1;
            e.1 += data.len() as u64;
            total += 1;
            for w in [oid.0, tid.0, data.len() as u64] {
                pairs.write_all(&w.to_le_bytes()).map_err(werr)?;
            }
            pairs.write_all(&id.to_le_bytes()).map_err(werr)?;
            Ok(())
        })?;
    }
    let mut classes: Vec<ClassCount> =
        counts.into_iter().map(|(id, (count, bytes))| ClassCount { id, start: 0, count, bytes }).collect();
    classes.sort_by_key(|c| c.id);
    let mut next = 0;
    let mut cursor: HashMap<u32, u64> = HashMap::new();
    for c in &mut classes {
        c.start = next;
        cursor.insert(c.id, next);
        next += c.count;
    }
    if total == 0 {
        return Ok(ClassView { tid: at, classes, map: None });
    }
    let mut pairs = pairs.into_inner().map_err(|e| werr(e.into_error()))?;
    std::io::Seek::rewind(&mut pairs).map_err(werr)?;
    let grouped = crate::zodb::scratch_file(s)?;
    grouped.set_len(total * ENTRY as u64).map_err(werr)?;
    // SAFETY: an unlinked temporary file of ours; nobody else maps or truncates it.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&grouped) }.map_err(werr)?;
    let mut r = BufReader::with_capacity(1 << 20, pairs);
    let mut rec = [0u8; ENTRY + 4];
    for _ in 0..total {
        r.read_exact(&mut rec).map_err(|e| Error::io(s.dir(), "read temporary file in", e))?;
        let id = u32::from_le_bytes(rec[ENTRY..].try_into().unwrap());
        let i = cursor.get_mut(&id).expect("every id was counted");
        let at = *i as usize * ENTRY;
        map[at..at + ENTRY].copy_from_slice(&rec[..ENTRY]);
        *i += 1;
    }
    let map = map.make_read_only().map_err(werr)?;
    Ok(ClassView { tid: at, classes, map: Some(map) })
}

/// `refs/<oid>`: one line per persistent reference of a record, in pickle order, a
/// repeated one once: `<oid>` (strong), `<oid> weak`, `<oid> weak database=<db>`,
/// `<oid> database=<db>` (cross-database). Not a ZODB record: the reason.
pub fn refs_text(data: &[u8]) -> std::result::Result<String, String> {
    let (_, refs) = Reader::new().read(data).map_err(|e| e.to_string())?;
    Ok(lines(refs.iter().map(|r| (r.oid, &r.kind))))
}

/// One line per (oid, kind) as `refs/` spells them, a repeated one once.
fn lines<'a>(refs: impl Iterator<Item = (Oid, &'a RefKind)>) -> String {
    let mut out = String::new();
    let mut seen = std::collections::HashSet::new();
    for (oid, kind) in refs {
        let line = match kind {
            RefKind::Strong => format!("{oid}\n"),
            RefKind::Weak { database: None } => format!("{oid} weak\n"),
            RefKind::Weak { database: Some(d) } => format!("{oid} weak database={}\n", d.escape_default()),
            RefKind::CrossDatabase { database } => format!("{oid} database={}\n", database.escape_default()),
        };
        if seen.insert(line.clone()) {
            out.push_str(&line);
        }
    }
    out
}

/// `referrers/<oid>`: the objects live at `at` whose records refer to `target`, one line
/// per (referrer, kind) as in `refs/`, in oid order. A scan of every object.
pub fn referrers_text(s: &Storage, target: Oid, at: Tid) -> Result<String> {
    let v = crate::zodb::scan::referrers(s, target, at, &mut |_| {})?;
    Ok(lines(v.iter().map(|(o, r)| (*o, &r.kind))))
}

/// The `gc` node: whether a collection runs, its progress and the last result.
#[derive(Default)]
pub(super) struct GcState {
    running: AtomicBool,
    /// Phase (0 scan, 1 mark), done, total.
    progress: [AtomicU64; 3],
    last: Mutex<Option<String>>,
}

/// A command written to `gc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcCmd {
    Run,
    DryRun,
}

pub fn parse_gc(data: &[u8]) -> FsResult<GcCmd> {
    match std::str::from_utf8(data).map(str::trim) {
        Ok("run") => Ok(GcCmd::Run),
        Ok("dry-run") => Ok(GcCmd::DryRun),
        _ => Err(FsError::new(libc::EINVAL, "gc: write \"run\" or \"dry-run\"; cat gc shows the last result")),
    }
}

impl GcState {
    /// What `cat gc` shows.
    pub fn text(&self) -> String {
        if self.running.load(Ordering::Relaxed) {
            let p: Vec<u64> = self.progress.iter().map(|a| a.load(Ordering::Relaxed)).collect();
            let phase = if p[0] == 0 { "scan" } else { "mark" };
            return format!("running {phase} {}/{}\n", p[1], p[2]);
        }
        match &*self.last.lock().unwrap() {
            Some(l) => format!("{l}\n"),
            None => "idle\n".into(),
        }
    }

    /// Claim the collector: EBUSY if one runs.
    pub fn claim(&self) -> FsResult<()> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(FsError::new(libc::EBUSY, "gc: a collection is running; cat gc shows it"));
        }
        for a in &self.progress {
            a.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Run the collector of `fs2 gc` (claimed by [`GcState::claim`]); the result line
    /// is kept for `cat gc`. Returns the deleting transaction's tid.
    pub fn run(&self, s: &Storage, cmd: GcCmd) -> FsResult<Option<Tid>> {
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _r = Release(&self.running);
        let dry_run = cmd == GcCmd::DryRun;
        let mut progress = |phase: Phase, done: u64, total: u64| {
            self.progress[0].store(u64::from(phase == Phase::Mark), Ordering::Relaxed);
            self.progress[1].store(done, Ordering::Relaxed);
            self.progress[2].store(total, Ordering::Relaxed);
        };
        let r = gc::collect(
            s,
            GcOptions { dry_run, on_garbage: &mut |_| {}, progress: &mut progress, before_commit: &mut || {} },
        );
        let line = match &r {
            Ok(r) => {
                let what = match (dry_run, r.tid) {
                    (true, _) => "dry-run".to_string(),
                    (false, Some(t)) => format!("collected {t}"),
                    (false, None) => "collected nothing".to_string(),
                };
                format!(
                    "{what} base {} objects {} reachable {} garbage {} unreadable_garbage {} references {}",
                    r.base, r.objects, r.reachable, r.garbage, r.unreadable_garbage, r.references
                )
            }
            Err(Error::Conflict { oid, tid }) => format!("conflict {oid} {tid}"),
            Err(e) => format!("error {}", e.to_string().replace('\n', " ")),
        };
        *self.last.lock().unwrap() = Some(line);
        Ok(r?.tid)
    }
}

/// The class view at the tid head/ shows, built once per head.
#[derive(Default)]
pub(super) struct ViewCache {
    pub names: Mutex<Classes>,
    /// The current view; the lock is held while one is built (others wait for it).
    current: Mutex<Option<Arc<ClassView>>>,
    pub builds: AtomicU64,
}

impl ViewCache {
    pub fn get(&self, s: &Storage, at: Tid) -> Result<Arc<ClassView>> {
        let mut cur = self.current.lock().unwrap();
        if let Some(v) = &*cur {
            if v.tid == at {
                return Ok(v.clone());
            }
        }
        let t = std::time::Instant::now();
        let v = Arc::new(build(s, at, &self.names)?);
        self.builds.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "classes/: {} objects in {} classes as of {at}, scanned in {:.3}s",
            v.classes.iter().map(|c| c.count).sum::<u64>(),
            v.classes.len(),
            t.elapsed().as_secs_f64()
        );
        *cur = Some(v.clone());
        Ok(v)
    }
}

/// The ZODB directories of the tree (`classes/`, `refs/`, `referrers/`).
impl Fs {
    /// The class view as of the tid `head/` shows (built at the first use after head moved).
    pub(super) fn class_view(&self) -> FsResult<Arc<ClassView>> {
        Ok(self.zviews.get(&self.storage, self.shown_tid())?)
    }

    pub(super) fn gone_class(&self, id: u32, at: Tid) -> FsError {
        let n = self.zviews.names.lock().unwrap().name(id).unwrap_or("?").to_string();
        FsError::not_found(format!("classes/{n}: no live object of that class as of {at}"))
    }

    /// `refs/<oid>` of revision (oid, tid): ENOENT (with the reason) if it is not a ZODB record.
    pub(super) fn refs_text(&self, oid: Oid, tid: Tid) -> FsResult<String> {
        let data = match self.storage.revision(oid, tid)? {
            Some(r) if r.data.is_some() => r.data.unwrap_or_default(),
            _ => return Err(FsError::not_found(format!("revision {tid} of {oid} is no longer retained"))),
        };
        refs_text(&data).map_err(|why| {
            FsError::not_found(format!("refs/{oid}: {why} (classes/{}/ lists such objects)", NOT_ZODB_DIR))
        })
    }

    /// Names inside `classes/`, `classes/<name>/` and `refs/`.
    pub(super) fn resolve_zodb(&self, parent: Node, name: &str) -> FsResult<(Node, Meta)> {
        let child = match parent {
            Node::ClassesDir if name == "at" => Node::ClassesAt,
            Node::ClassesDir if name == "index" => Node::ClassIndex,
            Node::ClassesDir => {
                let v = self.class_view()?;
                let id = self.zviews.names.lock().unwrap().find(name);
                let c = id.and_then(|id| v.class(id)).ok_or_else(|| {
                    FsError::not_found(format!("classes/{name}: no live object of that class as of {}", v.tid))
                })?;
                return Ok((Node::ClassDir(c.id), Meta { size: c.count, tid: v.tid }));
            }
            Node::ClassDir(id) => {
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                let v = self.class_view()?;
                let c = v.class(id).ok_or_else(|| self.gone_class(id, v.tid))?;
                let m = v.member(c, oid).ok_or_else(|| no_such(format!("{parent}/{name}")))?;
                return Ok((Node::Rev(m.oid, m.tid), Meta { size: m.size, tid: m.tid }));
            }
            Node::RefsDir => {
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                match self.storage.stat_at(oid, Tid::MAX)? {
                    Some(r) if !r.deleted => Node::Refs(oid, r.tid),
                    _ => return Err(FsError::not_found(format!("refs/{name}: no such object"))),
                }
            }
            Node::ReferrersDir => {
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                match self.storage.stat_at(oid, Tid::MAX)? {
                    Some(r) if !r.deleted => Node::Referrers(oid),
                    _ => return Err(FsError::not_found(format!("referrers/{name}: no such object"))),
                }
            }
            _ => unreachable!("resolve_zodb is called for the ZODB directories"),
        };
        Ok((child, self.meta(child)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_commands_parse() {
        assert_eq!(parse_gc(b"run\n").unwrap(), GcCmd::Run);
        assert_eq!(parse_gc(b"dry-run").unwrap(), GcCmd::DryRun);
        assert_eq!(parse_gc(b"all").unwrap_err().errno, libc::EINVAL);
    }

    #[test]
    fn class_names_never_hold_a_slash() {
        assert_eq!(dir_name("a/b.C"), "a%2Fb.C");
        assert_eq!(dir_name("BTrees.OOBTree.OOBTree"), "BTrees.OOBTree.OOBTree");
    }
}
