//! Archives: copies of segments made outside the storage (`cp -a` of the mount's
//! `segments/<name>/`, `rsync` of segment files, `fs2 backup`), read as they are and
//! restored into a working storage.
//!
//! An archive is a set of *pieces* (segment files, found in the directories given, in
//! their segment-named subdirectories, or given as files). `assemble` picks the chain
//! from them: the newest segment, then for each previous-segment reference a copy of
//! the segment it names (by file name: an archive keeps no paths). Several copies of
//! one segment (copied before and after a merge relinked it, or the active segment
//! copied at different times) are told apart by their header slot generation and
//! length; the chain takes the newest copy whose own predecessors are present.
//!
//! Opening an archive reads it through `ArchiveVfs`, which shows the chosen pieces as
//! one flat directory and refuses every write: no recovery, no lock file. A chain whose
//! oldest pieces are missing opens too ("older segments not present").

mod copy;
mod restore;

pub use copy::{backup, BackupReport};
pub use restore::{restore, RestoreReport};

use crate::error::{Error, Result};
use crate::format::Header;
use crate::segment::SegmentFile;
use crate::store::{Options, Storage};
use crate::types::SegmentName;
use crate::vfs::{RealVfs, VFile, Vfs};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One segment file found in an archive.
#[derive(Clone, Debug)]
pub struct Piece {
    pub path: PathBuf,
    pub header: Header,
    /// The file's length when its header was read.
    pub len: u64,
}

impl Piece {
    pub fn name(&self) -> SegmentName {
        self.header.name
    }

    /// The name of the segment its header names as previous (paths are dropped: an
    /// archive is looked up by file name).
    pub fn prev_name(&self) -> Option<SegmentName> {
        let p = self.header.prev.as_deref()?;
        Path::new(p).file_name().and_then(|n| n.to_str()).and_then(SegmentName::from_file_name)
    }

    /// Which copy of a segment is newer: a later slot generation (a seal records its
    /// length, a merge relinks), then a longer file (the active segment grows).
    fn age(&self) -> (u64, u64) {
        (self.header.generation, self.len)
    }
}

/// What was found in the sources: the pieces, and files named like segments that are
/// not usable segments (one line each, with why).
#[derive(Debug, Default)]
pub struct Found {
    pub pieces: Vec<Piece>,
    pub unusable: Vec<String>,
}

/// Whether `name` is a segment directory's name (`seg-000002`, as the mount shows it).
fn is_segment_dir_name(name: &str) -> bool {
    SegmentName::from_file_name(&format!("{name}{}", SegmentName::SUFFIX)).is_some()
}

/// The segment files in `sources`: files given, segment files in a directory given, and
/// segment files in its subdirectories named like segments (copied `segments/<name>/`).
/// A storage's `archive/` is a directory of segment files: give it as a source.
pub fn collect(sources: &[PathBuf]) -> Result<Found> {
    let mut found = Found::default();
    let mut files = Vec::new();
    for src in sources {
        let meta = std::fs::metadata(src).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound(format!("{} does not exist", src.display())),
            _ => Error::io(src, "stat", e),
        })?;
        if !meta.is_dir() {
            files.push(src.clone());
            continue;
        }
        for (name, path) in list(src)? {
            if SegmentName::from_file_name(&name).is_some() {
                files.push(path);
            } else if is_segment_dir_name(&name) && path.is_dir() {
                for (inner, p) in list(&path)? {
                    if SegmentName::from_file_name(&inner).is_some() {
                        files.push(p);
                    }
                }
            }
        }
    }
    for path in files {
        match SegmentFile::open(&RealVfs, &path, false) {
            Ok(seg) => {
                let len = seg.effective_len()?;
                found.pieces.push(Piece { path, header: seg.header.clone(), len });
            }
            Err(e) => found.unusable.push(format!("{}: not a usable segment: {}", path.display(), e.detail())),
        }
    }
    Ok(found)
}

/// Check each piece copied with its `info` (a copied segment directory) against the
/// sealed length and data checksum written there; a piece that differs is unusable.
/// Reads every such piece whole.
pub fn verify_infos(found: &mut Found) -> Result<()> {
    let mut kept = Vec::new();
    for piece in std::mem::take(&mut found.pieces) {
        match info_mismatch(&piece)? {
            None => kept.push(piece),
            Some(why) => found.unusable.push(format!("{}: {why}", piece.path.display())),
        }
    }
    found.pieces = kept;
    Ok(())
}

fn info_mismatch(piece: &Piece) -> Result<Option<String>> {
    let Some(info) = piece.path.parent().map(|d| d.join("info")) else { return Ok(None) };
    let Ok(text) = std::fs::read_to_string(&info) else { return Ok(None) };
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    if field("name: ") != Some(&piece.name().to_string()) {
        return Ok(None);
    }
    let (Some(Ok(len)), Some(Ok(crc))) =
        (field("sealed_length: ").map(str::parse::<u64>), field("data_crc32c: ").map(|c| u32::from_str_radix(c, 16)))
    else {
        return Ok(None);
    };
    let f = RealVfs.open(&piece.path, false).map_err(|e| Error::io(&piece.path, "open", e))?;
    let have = f.len().map_err(|e| Error::io(&piece.path, "stat", e))?;
    if have < len {
        return Ok(Some(format!("shorter ({have} bytes) than the sealed length its info gives ({len})")));
    }
    let got = data_crc32c(
        |buf, off| {
            f.read_exact_at(buf, off).map_err(|e| Error::io(&piece.path, "read", e))?;
            Ok(buf.len())
        },
        len,
    )?;
    Ok((got != crc).then(|| format!("its data checksum is {got:08x}, its info says {crc:08x}: a damaged copy")))
}

fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))? {
        let e = e.map_err(|e| Error::io(dir, "list", e))?;
        if let Some(n) = e.file_name().to_str() {
            out.push((n.to_string(), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The chain assembled from an archive's pieces.
#[derive(Debug)]
pub struct Plan {
    /// Newest first.
    pub chain: Vec<Piece>,
    /// The oldest chain piece's predecessor, when it is not in the archive, with a line
    /// saying what is missing and what was found instead.
    pub missing: Option<(SegmentName, String)>,
    /// Pieces the chain does not use, each with why.
    pub unused: Vec<(PathBuf, String)>,
}

/// The chain back from a segment: (segment, index of the copy taken) newest first, and
/// the first missing predecessor with the segment naming it.
type Back = (Vec<(SegmentName, usize)>, Option<(SegmentName, SegmentName)>);

/// Pick the chain from `pieces` (see the module comment). Refuses pieces of several
/// storages.
pub fn assemble(pieces: Vec<Piece>) -> Result<Plan> {
    let Some(head) = pieces.iter().max_by_key(|p| (p.name().last, std::cmp::Reverse(p.name().first))) else {
        return Err(Error::NotFound(
            "no segment files found (give segment files, copied segment \
             directories, or directories holding them)"
                .into(),
        ));
    };
    let id = head.header.storage_id;
    if let Some(other) = pieces.iter().find(|p| p.header.storage_id != id) {
        return Err(Error::invalid(format!(
            "{} belongs to another storage than {} (storage ids {:032x} and {:032x}); give the pieces of one storage",
            other.path.display(),
            head.path.display(),
            other.header.storage_id,
            id
        )));
    }
    let head_name = head.name();
    // Copies of each segment, newest first.
    let mut by_name: BTreeMap<SegmentName, Vec<Piece>> = BTreeMap::new();
    for p in pieces {
        by_name.entry(p.name()).or_default().push(p);
    }
    for copies in by_name.values_mut() {
        copies.sort_by_key(|p| std::cmp::Reverse(p.age()));
    }
    // The chain back from each name: (chosen copy index per segment, missing name).
    let mut memo: BTreeMap<SegmentName, Back> = BTreeMap::new();
    fn chain_from(
        name: SegmentName,
        by_name: &BTreeMap<SegmentName, Vec<Piece>>,
        memo: &mut BTreeMap<SegmentName, Back>,
    ) -> Back {
        if let Some(r) = memo.get(&name) {
            return r.clone();
        }
        let copies = &by_name[&name];
        let mut best = None;
        for (i, c) in copies.iter().enumerate() {
            let r = match c.prev_name() {
                None => (vec![(name, i)], None),
                // A reference that does not go back is damage: `check` names it.
                Some(p) if p.last >= name.first => (vec![(name, i)], None),
                Some(p) if by_name.contains_key(&p) => {
                    let (mut rest, missing) = chain_from(p, by_name, memo);
                    rest.insert(0, (name, i));
                    (rest, missing)
                }
                Some(p) => (vec![(name, i)], Some((p, name))),
            };
            let complete = r.1.is_none();
            if best.is_none() || complete {
                best = Some(r);
            }
            if complete {
                break;
            }
        }
        let r = best.expect("every name has a copy");
        memo.insert(name, r.clone());
        r
    }
    let (picked, missing) = chain_from(head_name, &by_name, &mut memo);
    let chain: Vec<Piece> = picked.iter().map(|(n, i)| by_name[n][*i].clone()).collect();
    let missing = missing.map(|(m, by)| {
        let instead: Vec<String> =
            by_name.keys().filter(|n| n.first <= m.last && m.first <= n.last).map(|n| n.file_name()).collect();
        let mut line =
            format!("{} is not present ({} names it as its previous segment)", m.file_name(), by.file_name());
        if !instead.is_empty() {
            line.push_str(&format!(
                "; present instead: {}, copies from the other side of a merge of that range: copy the missing \
                 segment (a storage's archive/ keeps merged-away ones) or a copy of {} taken {} that merge",
                instead.join(", "),
                by.file_name(),
                // A merged segment present instead of the missing one: the copy naming it
                // is from before the merge; merge inputs instead: from after.
                if instead
                    .iter()
                    .any(|i| SegmentName::from_file_name(i).is_some_and(|n| n.first < m.first || n.last > m.last))
                {
                    "after"
                } else {
                    "before"
                }
            ));
        }
        (m, line)
    });
    let mut unused = Vec::new();
    for (name, copies) in &by_name {
        for (i, c) in copies.iter().enumerate() {
            if picked.contains(&(*name, i)) {
                continue;
            }
            let why = if picked.iter().any(|(n, _)| n == name) {
                "another copy of this segment is the one the chain needs".to_string()
            } else if let Some((n, _)) = picked.iter().find(|(n, _)| n.first <= name.first && name.last <= n.last) {
                format!("merged into {}", n.file_name())
            } else {
                "not linked from the chain (merged away, or appended to a newer segment)".to_string()
            };
            unused.push((c.path.clone(), why));
        }
    }
    Ok(Plan { chain, missing, unused })
}

/// A read-only view of an archive's chosen pieces as one flat directory (`dir`):
/// every write is refused, and a missing predecessor ends the chain.
pub struct ArchiveVfs {
    files: BTreeMap<String, PathBuf>,
}

impl ArchiveVfs {
    pub fn new(plan: &Plan) -> ArchiveVfs {
        ArchiveVfs { files: plan.chain.iter().map(|p| (p.name().file_name(), p.path.clone())).collect() }
    }

    fn real(&self, path: &Path) -> Option<&PathBuf> {
        self.files.get(path.file_name()?.to_str()?)
    }
}

fn read_only_err() -> io::Error {
    io::Error::new(io::ErrorKind::ReadOnlyFilesystem, "an archive is read-only (`fs2 restore` makes a storage of it)")
}

impl Vfs for ArchiveVfs {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        if write {
            return Err(read_only_err());
        }
        match self.real(path) {
            Some(real) => RealVfs.open(real, false),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
    fn create_new(&self, _path: &Path) -> io::Result<Arc<dyn VFile>> {
        Err(read_only_err())
    }
    fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        Err(read_only_err())
    }
    fn remove(&self, _path: &Path) -> io::Result<()> {
        Err(read_only_err())
    }
    fn list(&self, _dir: &Path) -> io::Result<Vec<String>> {
        Ok(self.files.keys().cloned().collect())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Err(read_only_err())
    }
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Err(read_only_err())
    }
    fn exists(&self, path: &Path) -> bool {
        self.real(path).is_some()
    }
    fn lock(&self, _dir: &Path) -> io::Result<Option<File>> {
        Err(read_only_err())
    }
    fn partial_chain(&self) -> bool {
        true
    }
    /// A piece may be a live storage's segment (restoring from the storage directory):
    /// its writer's work in progress is then not damage (see `recovery::open_snapshot`).
    fn writer_active(&self, _dir: &Path) -> bool {
        let dirs: std::collections::BTreeSet<&Path> = self.files.values().filter_map(|p| p.parent()).collect();
        dirs.into_iter().any(|d| RealVfs.writer_active(d))
    }
}

/// Whether `path` is an archive rather than a storage: a segment file, or a directory
/// without a `LOCK` file (every storage opened for writing has one) holding segment
/// files or copied segment directories.
pub fn is_archive(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            path.file_name().and_then(|n| n.to_str()).and_then(SegmentName::from_file_name).is_some()
        }
        Ok(m) if m.is_dir() => !path.join("LOCK").exists() && holds_segments(path),
        _ => false,
    }
}

/// Whether `dir` holds segment files or copied segment directories.
pub fn holds_segments(dir: &Path) -> bool {
    let Ok(entries) = list(dir) else { return false };
    entries.iter().any(|(n, p)| {
        SegmentName::from_file_name(n).is_some()
            || (is_segment_dir_name(n)
                && list(p).is_ok_and(|e| e.iter().any(|(n, _)| SegmentName::from_file_name(n).is_some())))
    })
}

/// An archive ready to be opened read-only: the directory to give `Storage::open` and
/// the options that read it through `ArchiveVfs`.
pub struct Archive {
    pub dir: PathBuf,
    pub opts: Options,
    pub plan: Plan,
    pub unusable: Vec<String>,
}

impl Archive {
    /// Assemble the archive of `sources` (see `collect`).
    pub fn new(sources: &[PathBuf]) -> Result<Archive> {
        Archive::with(sources, false)
    }

    /// With `verify`, pieces that do not match their copied `info` are left out (see
    /// `verify_infos`).
    pub fn with(sources: &[PathBuf], verify: bool) -> Result<Archive> {
        let mut found = collect(sources)?;
        if verify {
            verify_infos(&mut found)?;
        }
        let plan = assemble(found.pieces)?;
        let first = &sources[0];
        let dir = if first.is_dir() { first.clone() } else { first.parent().unwrap_or(Path::new(".")).to_path_buf() };
        let dir = std::fs::canonicalize(&dir).map_err(|e| Error::io(&dir, "resolve the path of", e))?;
        let opts = Options { read_only: true, vfs: Arc::new(ArchiveVfs::new(&plan)), ..Options::default() };
        Ok(Archive { dir, opts, plan, unusable: found.unusable })
    }

    pub fn open(&self) -> Result<Storage> {
        Storage::open(&self.dir, self.opts.clone())
    }
}

/// Open `path` read-only: a storage as it is, an archive (see `is_archive`) through
/// `ArchiveVfs`.
pub fn open_read_only(path: &Path) -> Result<Storage> {
    if is_archive(path) {
        Archive::new(&[path.to_path_buf()])?.open()
    } else {
        Storage::open(path, Options::read_only())
    }
}

/// Refuse to open an archive for writing (it would recover, rotate and create a lock
/// file in the copy, forking the storage it was copied from).
pub fn refuse_writable(path: &Path) -> Result<()> {
    if is_archive(path) {
        return Err(Error::ReadOnly(format!(
            "{} is an archive (copied segments, no LOCK file): it opens read-only; `fs2 restore {} NEWDIR` \
             makes a working storage of it",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// The storage id of an open storage (its newest segment's header).
pub fn storage_id(s: &Storage) -> Result<u128> {
    let segs = s.segments()?;
    let newest = segs.last().ok_or_else(|| Error::NotFound("the storage has no segment".into()))?;
    let b = s.segment_bytes(newest.name)?;
    let mut header = vec![0u8; crate::format::HEADER_SIZE];
    b.read_at(&mut header, 0)?;
    Ok(Header::from_bytes(&header, &b.path)?.storage_id)
}

/// A line saying where an archive's history starts when older segments are missing.
pub fn history_note(s: &Storage) -> Result<Option<String>> {
    let segs = s.segments()?;
    Ok(segs.first().and_then(|oldest| {
        oldest.prev.as_ref().map(|p| {
            format!(
                "older segments not present: the history starts at {} (its previous segment {p} is not here)",
                oldest.name
            )
        })
    }))
}

/// Delete the segment files in the storage's `archive/` (merged away), never one the
/// chain uses (a segment moved there by `move-segment`); with `dry_run` only list them.
/// Works beside a live writer: the chain is a read-only snapshot, and a segment merged
/// away after it is only a segment more to delete.
pub fn prune_archive(dir: &Path, dry_run: bool) -> Result<Vec<(PathBuf, u64)>> {
    let s = Storage::open(dir, Options::read_only())?;
    let chain = s.segments()?;
    let archive = dir.join("archive");
    let mut out = Vec::new();
    let entries = match list(&archive) {
        Ok(e) => e,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for (name, path) in entries {
        let Some(n) = SegmentName::from_file_name(&name) else { continue };
        if chain.iter().any(|c| c.name == n || RealVfs.same_file(&c.path, &path)) {
            continue;
        }
        let len = std::fs::metadata(&path).map_err(|e| Error::io(&path, "stat", e))?.len();
        if !dry_run {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, "remove", e))?;
        }
        out.push((path, len));
    }
    if !dry_run && !out.is_empty() {
        RealVfs.sync_dir(&archive).map_err(|e| Error::io(&archive, "sync directory", e))?;
    }
    Ok(out)
}

/// The data checksum an `info` shows: CRC32C of a sealed segment's bytes from the end
/// of its header to its sealed length `len` (the header is left out: a merge relinks
/// it). `read(buf, off)` reads the segment.
pub fn data_crc32c(mut read: impl FnMut(&mut [u8], u64) -> Result<usize>, len: u64) -> Result<u32> {
    let mut crc = 0u32;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = crate::format::HEADER_SIZE as u64;
    while at < len {
        let want = (len - at).min(buf.len() as u64) as usize;
        let n = read(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(first: u64, last: u64, prev: Option<(u64, u64)>, generation: u64) -> Piece {
        let name = SegmentName { first, last };
        Piece {
            path: PathBuf::from(format!("/copies/g{generation}/{}", name.file_name())),
            header: Header {
                version: crate::format::VERSION,
                flags: 0,
                alignment: 1 << 28,
                storage_id: 7,
                name,
                prev: prev.map(|(f, l)| SegmentName { first: f, last: l }.file_name()),
                generation,
                sealed_len: None,
            },
            len: 8192,
        }
    }

    fn chain(p: &Plan) -> Vec<String> {
        p.chain.iter().map(|x| format!("{}@{}", x.name(), x.header.generation)).collect()
    }

    #[test]
    fn the_chain_takes_the_newest_copy_whose_predecessors_are_present() {
        // seg-3 copied before (prev seg-2) and after (prev seg-1-2) a merge of 1..2.
        let pieces = vec![
            piece(1, 1, None, 2),
            piece(2, 2, Some((1, 1)), 2),
            piece(3, 3, Some((2, 2)), 1),
            piece(3, 3, Some((1, 2)), 3),
        ];
        let p = assemble(pieces.clone()).unwrap();
        assert_eq!(chain(&p), ["seg-000003@1", "seg-000002@2", "seg-000001@2"]);
        assert!(p.missing.is_none());
        assert_eq!(p.unused.len(), 1);
        assert!(p.unused[0].1.contains("another copy"), "{:?}", p.unused);
        // With the merged segment present, the newer copy wins and the inputs are unused.
        let mut more = pieces;
        more.push(piece(1, 2, None, 2));
        let p = assemble(more).unwrap();
        assert_eq!(chain(&p), ["seg-000003@3", "seg-000001-000002@2"]);
        assert!(p.unused.iter().any(|(_, why)| why.contains("merged into seg-000001-000002.fs2")), "{:?}", p.unused);
    }

    #[test]
    fn a_missing_piece_is_named_with_what_is_there_instead() {
        // A pre-merge copy of seg-3 beside the merged segment: copy seg-3 again after.
        let p = assemble(vec![piece(1, 2, None, 2), piece(3, 3, Some((2, 2)), 1)]).unwrap();
        let (m, line) = p.missing.unwrap();
        assert_eq!(m, SegmentName::single(2));
        assert!(line.contains("seg-000001-000002.fs2") && line.contains("taken after that merge"), "{line}");
        // A post-merge copy beside the merge's inputs: the merged one is missing.
        let p =
            assemble(vec![piece(1, 1, None, 2), piece(2, 2, Some((1, 1)), 2), piece(3, 3, Some((1, 2)), 3)]).unwrap();
        assert_eq!(chain(&p), ["seg-000003@3"]);
        let (m, line) = p.missing.unwrap();
        assert_eq!(m, SegmentName { first: 1, last: 2 });
        assert!(line.contains("seg-000001.fs2, seg-000002.fs2") && line.contains("taken before that merge"), "{line}");
    }

    #[test]
    fn pieces_of_two_storages_are_refused() {
        let mut other = piece(1, 1, None, 2);
        other.header.storage_id = 8;
        let e = assemble(vec![other, piece(2, 2, Some((1, 1)), 2)]).unwrap_err();
        assert!(e.to_string().contains("another storage"), "{e}");
    }
}
