//! `restore`: a working storage from an archive's pieces (see the module comment of
//! `backup`), verified before and after.

use super::{Archive, Plan};
use crate::check::{check, CheckReport};
use crate::error::{Error, Result};
use crate::segment::SegmentFile;
use crate::store::{Options, Storage};
use crate::types::{SegmentName, Tid};
use crate::vfs::{RealVfs, Vfs};
use crate::SegmentState;
use std::path::{Path, PathBuf};

/// What `restore` did (or, without a target, found).
#[derive(Debug)]
pub struct RestoreReport {
    /// The chain, oldest first: name, the piece used, bytes.
    pub chain: Vec<(SegmentName, PathBuf, u64)>,
    /// Pieces the chain does not use, each with why.
    pub unused: Vec<(PathBuf, String)>,
    /// Files named like segments that are not usable segments.
    pub unusable: Vec<String>,
    /// What was worth saying but is not a problem (an unfinished commit at the end of
    /// a copied active segment, left out).
    pub notes: Vec<String>,
    /// The verification of the pieces; problems mean nothing was restored.
    pub check: CheckReport,
    /// The last transaction restored.
    pub last_tid: Tid,
    /// Whether the storage was written (a target was given and the pieces verified).
    pub restored: bool,
}

/// Verify the archive of `sources` (every checksum, the storage id, the chain links) and,
/// with `target`, write it there as a storage (a new or empty directory, made 0700;
/// files 0600 as a storage's are), open it for writing once (which starts the next
/// segment if the newest copy was sealed) and verify it again. The sources are only read.
pub fn restore(
    sources: &[PathBuf],
    target: Option<&Path>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RestoreReport> {
    // A target that holds something is refused before the (long) verification.
    if let Some(t) = target {
        if std::fs::read_dir(t).is_ok_and(|mut d| d.next().is_some()) {
            return Err(Error::invalid(format!("{} is not empty: restore into a new directory", t.display())));
        }
    }
    let archive = Archive::with(sources, true)?;
    let Plan { chain, missing, unused } = &archive.plan;
    if let Some((_, line)) = missing {
        let mut msg = format!("the pieces do not form a whole chain: {line}");
        for u in &archive.unusable {
            msg.push_str(&format!("; left out: {u}"));
        }
        return Err(Error::invalid(msg));
    }
    let mut report = RestoreReport {
        chain: Vec::new(),
        unused: unused.clone(),
        unusable: archive.unusable.clone(),
        notes: Vec::new(),
        check: check(&archive.dir, false, archive.opts.clone(), progress)?,
        last_tid: Tid::ZERO,
        restored: false,
    };
    let s = archive.open()?;
    // A copy of the active segment taken during a commit ends in a part of it: the
    // restore keeps the whole transactions before it (as a crash would).
    if let Some(t) = s.ignored_tail() {
        let t = t.to_string();
        report.check.problems.retain(|p| !p.starts_with(&t));
        report.notes.push(format!("{t}; restored up to the last whole transaction"));
    }
    report.last_tid = s.last_tid();
    let infos = s.segments()?;
    for i in &infos {
        let piece = chain.iter().find(|p| p.name() == i.name).map(|p| p.path.clone()).unwrap_or_default();
        report.chain.push((i.name, piece, i.bytes));
    }
    let Some(target) = target else { return Ok(report) };
    if !report.check.ok() {
        return Ok(report);
    }
    make_target(target)?;
    let vfs = RealVfs;
    let mut prev: Option<SegmentName> = None;
    for i in &infos {
        let b = s.segment_bytes(i.name)?;
        // A past segment up to its sealed length, the active one up to its last whole
        // transaction (not the writer's preallocated zeros or an unfinished commit).
        let len = match i.state {
            SegmentState::Past => b.file_len()?,
            SegmentState::Active => i.data_end,
        };
        let to = target.join(i.name.file_name());
        let out = vfs.create_new(&to).map_err(|e| Error::io(&to, "create", e))?;
        super::copy::copy_range(&b, &*out, &to, 0, len)?;
        out.sync().map_err(|e| Error::io(&to, "sync", e))?;
        // The previous segment by its file name in the restored directory (the source
        // may have named it by an absolute path: a segment moved elsewhere).
        let want = prev.map(|p| p.file_name());
        if i.prev != want {
            let seg = SegmentFile::open(&vfs, &to, true)?;
            seg.rewrite_prev(&vfs, want)?;
        }
        prev = Some(i.name);
    }
    vfs.sync_dir(target).map_err(|e| Error::io(target, "sync directory", e))?;
    drop(s);
    drop(Storage::open(target, Options::default())?);
    let after = check(target, false, Options::default(), &mut |_, _| {})?;
    if !after.ok() {
        return Err(Error::corrupted(
            target,
            0,
            format!("the restored storage does not verify: {}", after.problems.join("; ")),
        ));
    }
    report.restored = true;
    Ok(report)
}

/// A new directory, or an empty one of ours, made owner-only.
fn make_target(target: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::read_dir(target) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(Error::invalid(format!("{} is not empty: restore into a new directory", target.display())));
            }
            std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(target, "make owner-only", e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(target)
            .map_err(|e| Error::io(target, "create directory", e)),
        Err(e) => Err(Error::io(target, "list", e)),
    }
}
