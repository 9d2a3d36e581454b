//! Files leaving the chain: merged-away segments go to the archive directory, stray
//! files (named like segments, not this storage's chain) to `<dir>/stray/`. Both moves
//! are renames made durable by syncing both directories; across file systems an
//! archived segment is copied durably, verified and then removed. Merges (after their
//! switch) and recovery (finishing an interrupted merge) call this module.

use crate::durable::{copy_file, verify_copy};
use crate::error::{Error, Result};
use crate::vfs::Vfs;
use std::path::{Path, PathBuf};

/// Where `fs2 check --repair` moves stray files (inside the storage directory).
pub(crate) const STRAY_DIR: &str = "stray";

/// The archive directory of the storage in `dir` (`configured`: `Options::archive_dir`).
pub(crate) fn archive_dir(dir: &Path, configured: Option<&Path>) -> PathBuf {
    configured.map_or_else(|| dir.join("archive"), Path::to_path_buf)
}

/// Check that files can be created in the archive directory `dir` (creating it if
/// missing): a probe file is created, synced and removed. The error keeps the OS error
/// and says that nothing was merged.
pub(crate) fn probe_archive(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let err = |op, e| Error::io(dir, op, e);
    vfs.create_dir_all(dir)
        .map_err(|e| err("merge refused (nothing changed): cannot create the archive directory", e))?;
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let _ = vfs.remove(&probe);
    let f = vfs
        .create_new(&probe)
        .map_err(|e| err("merge refused (nothing changed): cannot create a file in the archive directory", e))?;
    let written = f.write_all_at(b"probe", 0).and_then(|_| f.sync());
    drop(f);
    let removed = vfs.remove(&probe);
    written.map_err(|e| err("merge refused (nothing changed): cannot write a file in the archive directory", e))?;
    removed.map_err(|e| err("merge refused (nothing changed): cannot remove a file from the archive directory", e))
}

/// Move a segment file that left the chain into the archive directory `dir`, durably.
pub(crate) fn move_to_archive(vfs: &dyn Vfs, dir: &Path, path: &Path) -> Result<PathBuf> {
    vfs.create_dir_all(dir).map_err(|e| Error::io(dir, "create archive directory", e))?;
    let to = dir.join(path.file_name().expect("a segment file name"));
    match vfs.rename(path, &to) {
        Ok(()) => vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?,
        // A segment moved to another file system: copy it into the archive, then remove it.
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let f = vfs.open(path, false).map_err(|e| Error::io(path, "open", e))?;
            let len = f.len().map_err(|e| Error::io(path, "stat", e))?;
            copy_file(vfs, &*f, path, len, &to)?;
            verify_copy(vfs, &*f, path, len, &to)?;
            vfs.remove(path).map_err(|e| Error::io(path, "remove the archived", e))?;
        }
        Err(e) => return Err(Error::io(path, "move to the archive", e)),
    }
    if let Some(from) = path.parent() {
        vfs.sync_dir(from).map_err(|e| Error::io(from, "sync directory", e))?;
    }
    Ok(to)
}

/// Move the stray file `path` into `<dir>/stray/`, durably, under a free name.
pub(crate) fn move_aside(vfs: &dyn Vfs, dir: &Path, path: &Path) -> Result<PathBuf> {
    let to_dir = dir.join(STRAY_DIR);
    vfs.create_dir_all(&to_dir).map_err(|e| Error::io(&to_dir, "create directory", e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("segment").to_string();
    let to = (0..)
        .map(|i| to_dir.join(if i == 0 { name.clone() } else { format!("{name}.{i}") }))
        .find(|p| !vfs.exists(p))
        .expect("a free name");
    vfs.rename(path, &to).map_err(|e| Error::io(path, "move aside (to the stray directory)", e))?;
    vfs.sync_dir(&to_dir).map_err(|e| Error::io(&to_dir, "sync directory", e))?;
    vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?;
    Ok(to)
}
