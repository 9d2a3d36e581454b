//! Durable new files: the one way a whole file appears in a directory. Its bytes go to
//! `<name>.tmp`, are synced, the temporary is renamed into place and the directory is
//! synced: after a crash the name holds either nothing (a leftover `.tmp` at most) or
//! every byte. Used for new segments (rotation, merges), copies of segments (moves,
//! archiving across file systems) and the settings file.

use crate::error::{Error, Result};
use crate::vfs::{VFile, Vfs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file being written under its temporary name; [`NewFile::install`] puts it in
/// place. Dropped without installing, the temporary is removed (best effort: a writable
/// open removes leftover `*.fs2.tmp` segment files too).
pub(crate) struct NewFile<'a> {
    vfs: &'a dyn Vfs,
    tmp: PathBuf,
    to: PathBuf,
    pub file: Arc<dyn VFile>,
    installed: bool,
}

impl<'a> NewFile<'a> {
    /// Create `<to>.tmp` (replacing a leftover one) for writing.
    pub fn create(vfs: &'a dyn Vfs, to: &Path) -> Result<NewFile<'a>> {
        let tmp = PathBuf::from(format!("{}.tmp", to.display()));
        let _ = vfs.remove(&tmp);
        let file = vfs.create_new(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        Ok(NewFile { vfs, tmp, to: to.to_path_buf(), file, installed: false })
    }

    /// The temporary path the bytes are written to (for error messages).
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Sync the bytes, rename the temporary into place, sync the directory.
    pub fn install(mut self) -> Result<Arc<dyn VFile>> {
        self.file.sync().map_err(|e| Error::io(&self.tmp, "sync", e))?;
        self.vfs.rename(&self.tmp, &self.to).map_err(|e| Error::io(&self.to, "rename into place", e))?;
        self.installed = true;
        let dir = self.to.parent().unwrap_or(Path::new("."));
        self.vfs.sync_dir(dir).map_err(|e| Error::io(dir, "sync directory", e))?;
        Ok(self.file.clone())
    }
}

impl Drop for NewFile<'_> {
    fn drop(&mut self) {
        if !self.installed {
            let _ = self.vfs.remove(&self.tmp);
        }
    }
}

/// Write `bytes` as the new content of `to`, durably (see the module doc).
pub(crate) fn write_file(vfs: &dyn Vfs, to: &Path, bytes: &[u8]) -> Result<Arc<dyn VFile>> {
    let f = NewFile::create(vfs, to)?;
    f.file.write_all_at(bytes, 0).map_err(|e| Error::io(f.tmp(), "write", e))?;
    f.install()
}

/// Copy the first `len` bytes of `from` to the new file `to` durably (and drop the copy
/// from the page cache: it is a segment nobody reads soon).
pub(crate) fn copy_file(vfs: &dyn Vfs, from: &dyn VFile, from_path: &Path, len: u64, to: &Path) -> Result<()> {
    let out = NewFile::create(vfs, to)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        from.read_exact_at(&mut buf[..n], at).map_err(|e| Error::io(from_path, "read", e))?;
        out.file.write_all_at(&buf[..n], at).map_err(|e| Error::io(out.tmp(), "write", e))?;
        at += n as u64;
    }
    out.install()?.drop_cache();
    Ok(())
}

/// Check that `to` holds the first `len` bytes of `from` (read back from the disk).
pub(crate) fn verify_copy(vfs: &dyn Vfs, from: &dyn VFile, from_path: &Path, len: u64, to: &Path) -> Result<()> {
    let copy = vfs.open(to, false).map_err(|e| Error::io(to, "open", e))?;
    if copy.len().map_err(|e| Error::io(to, "stat", e))? != len {
        return Err(Error::corrupted(to, 0, format!("the copy of {} does not have its length", from_path.display())));
    }
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(a.len() as u64) as usize;
        from.read_exact_at(&mut a[..n], at).map_err(|e| Error::io(from_path, "read", e))?;
        copy.read_exact_at(&mut b[..n], at).map_err(|e| Error::io(to, "read back", e))?;
        if a[..n] != b[..n] {
            return Err(Error::corrupted(to, at, format!("the copy differs from {}", from_path.display())));
        }
        at += n as u64;
    }
    copy.drop_cache();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::SimVfs;

    #[test]
    fn a_new_file_is_whole_after_a_crash_or_absent() {
        let vfs = SimVfs::new();
        let dir = Path::new("/d");
        let to = dir.join("f");
        // Dropped before install: nothing under either name.
        {
            let f = NewFile::create(&vfs, &to).unwrap();
            f.file.write_all_at(b"half", 0).unwrap();
        }
        assert!(!vfs.exists(&to) && !vfs.exists(&dir.join("f.tmp")));
        write_file(&vfs, &to, b"every byte").unwrap();
        let after = vfs.crash(crate::vfs::CrashMode::DurableOnly);
        let f = after.open(&to, false).unwrap();
        let mut b = vec![0u8; f.len().unwrap() as usize];
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(b, b"every byte");
    }
}
