//! `backup`: copy a storage's chain into a directory of segment directories (the layout
//! of the mount's `segments/`), copying only what changed since the last backup there.
//!
//! Why appending is enough: a past segment's bytes below its sealed length never change
//! and the active segment's committed transactions never change; only the header slots
//! do (a seal records the sealed length, a merge relinks the successor). So a copy
//! already in the backup is brought up to date by writing the bytes past its length and
//! the header (slot rewrites are crash-atomic, so a torn header write leaves a valid
//! slot). A copy that does not match where it should (another storage's, or cut) is
//! copied again whole.

use super::Archive;
use crate::durable::NewFile;
use crate::error::{Error, Result};
use crate::format::HEADER_SIZE;
use crate::store::{Options, Storage};
use crate::types::{SegmentName, Tid};
use crate::vfs::{RealVfs, VFile, Vfs};
use crate::views::SegmentBytes;
use crate::SegmentState;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// What `backup` did.
#[derive(Debug, Default)]
pub struct BackupReport {
    /// Segments written: name, bytes written (the header counts).
    pub copied: Vec<(SegmentName, u64)>,
    /// Segments already up to date.
    pub unchanged: Vec<SegmentName>,
    /// Segment directories in the backup that the chain no longer uses (merged away):
    /// kept, they hold older history (`fs2 restore` ignores them).
    pub stale: Vec<PathBuf>,
    /// The last transaction the backup holds.
    pub last_tid: Tid,
}

/// How many times a backup starts over when a merge relinked the chain while it copied.
const ATTEMPTS: u32 = 5;

/// Back up the storage in `dir` (live or not, mounted or not: it is opened read-only, a
/// snapshot beside its writer) into `dest/<segment>/<segment>.fs2`.
pub fn backup(dir: &Path, dest: &Path) -> Result<BackupReport> {
    // Compared as canonical paths (DEST may not exist yet: its parent then).
    let canonical = |p: &Path| -> Option<PathBuf> {
        std::fs::canonicalize(p).ok().or_else(|| {
            Some(
                std::fs::canonicalize(p.parent()?.to_str().filter(|s| !s.is_empty()).unwrap_or("."))
                    .ok()?
                    .join(p.file_name()?),
            )
        })
    };
    if let (Some(src), Some(to)) = (canonical(dir), canonical(dest)) {
        if to.starts_with(&src) {
            return Err(Error::invalid(format!("{}: a backup goes outside the storage directory", dest.display())));
        }
    }
    // A backup of another storage there would be mixed with this one.
    let id = super::storage_id(&Storage::open(dir, Options::read_only())?)?;
    let there = if dest.exists() { super::collect(&[dest.to_path_buf()])?.pieces } else { Vec::new() };
    if let Some(other) = there.iter().find(|p| p.header.storage_id != id) {
        return Err(Error::invalid(format!(
            "{} holds {}, a segment of another storage: back up into another directory",
            dest.display(),
            other.path.display()
        )));
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dest).map_err(|e| Error::io(dest, "create", e))?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let s = Storage::open(dir, Options::read_only())?;
        let mut report = BackupReport { last_tid: s.last_tid(), ..BackupReport::default() };
        let infos = s.segments()?;
        for i in &infos {
            let b = s.segment_bytes(i.name)?;
            let len = match i.state {
                SegmentState::Past => b.file_len()?,
                SegmentState::Active => i.data_end,
            };
            let d = dest.join(i.name.to_string());
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|e| Error::io(&d, "create", e))?;
            match update(&b, len, &d.join(i.name.file_name()))? {
                0 => report.unchanged.push(i.name),
                n => report.copied.push((i.name, n)),
            }
        }
        // The headers were read after the snapshot: a merge since may have relinked a
        // segment to one this backup does not hold. Then again, with a new snapshot.
        let archive = Archive::new(&[dest.to_path_buf()])?;
        let head = infos.last().map(|i| i.name);
        let ok = archive.plan.missing.is_none() && archive.plan.chain.first().map(|p| p.name()) == head;
        if ok {
            let chain: Vec<SegmentName> = infos.iter().map(|i| i.name).collect();
            for (name, path) in super::list(dest)? {
                let seg = SegmentName::from_file_name(&format!("{name}{}", SegmentName::SUFFIX));
                if seg.is_some_and(|n| !chain.contains(&n)) {
                    report.stale.push(path);
                }
            }
            return Ok(report);
        }
        last = archive.plan.missing.map(|(_, l)| l);
    }
    Err(Error::Busy(format!(
        "the chain kept changing while it was copied (merges): {}; try again",
        last.unwrap_or_default()
    )))
}

/// Bring the copy at `to` up to `len` bytes of `b`; the bytes written (0: up to date).
fn update(b: &SegmentBytes, len: u64, to: &Path) -> Result<u64> {
    let mut header = vec![0u8; HEADER_SIZE];
    b.read_at(&mut header, 0)?;
    let have = std::fs::metadata(to).map(|m| m.len()).ok();
    if let Some(have) = have.filter(|h| *h <= len && *h >= HEADER_SIZE as u64) {
        let f = RealVfs.open(to, true).map_err(|e| Error::io(to, "open", e))?;
        // The copy's last bytes must be the source's (else it is not a prefix of it).
        let tail = (have - HEADER_SIZE as u64).min(4096) as usize;
        let (mut mine, mut theirs) = (vec![0u8; tail], vec![0u8; tail]);
        f.read_exact_at(&mut mine, have - tail as u64).map_err(|e| Error::io(to, "read", e))?;
        b.read_at(&mut theirs, have - tail as u64)?;
        let mut old = vec![0u8; HEADER_SIZE];
        f.read_exact_at(&mut old, 0).map_err(|e| Error::io(to, "read", e))?;
        // Same storage and segment: the fixed part of the header (bytes 0..128).
        if mine == theirs && old[..128] == header[..128] {
            if have == len && old == header {
                return Ok(0);
            }
            let n = copy_range(b, &*f, to, have, len)?;
            if old != header {
                f.write_all_at(&header, 0).map_err(|e| Error::io(to, "write", e))?;
            }
            f.sync().map_err(|e| Error::io(to, "sync", e))?;
            return Ok(n + HEADER_SIZE as u64);
        }
    }
    // A whole new copy, put in place by a rename.
    let out = NewFile::create(&RealVfs, to)?;
    let n = copy_range(b, &*out.file, out.tmp(), 0, len)?;
    out.install()?;
    Ok(n)
}

/// Copy `[from, len)` of `b` to the same offsets of `f` (`to` names it in errors).
pub(super) fn copy_range(b: &SegmentBytes, f: &dyn VFile, to: &Path, from: u64, len: u64) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < len {
        let want = (len - at).min(buf.len() as u64) as usize;
        let n = b.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(Error::corrupted(&b.path, at, "the segment ends before its length"));
        }
        f.write_all_at(&buf[..n], at).map_err(|e| Error::io(to, "write", e))?;
        at += n as u64;
    }
    Ok(len - from)
}
