//! What the tree refuses or does not offer, per operation (docs/NAMESPACE.md
//! "Refusals"): the adapter calls these and replies, so the kernel-free tests cover
//! every errno. The errno and message of a refusal come from `errno`.

use super::{refuse, Attr, Entry, Fs, FsError, FsResult, Ino, Refusal};
use std::time::Duration;

/// What a `setattr` asks to change. Times are not here: they are accepted and ignored
/// on writable files (`touch` of a staged object) and refused elsewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
}

/// Operations the tree does not implement. Their answers are not failures worth a log
/// line or a count in `stats`: callers ask them routinely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotOffered {
    /// ENOTTY: what a terminal check (`read` from the clone file) expects.
    Ioctl,
    /// ENOSYS: the kernel stops asking for extended attributes (a cheaper `ls -l`).
    Xattr,
    /// ENOSYS: the kernel copies with reads and writes instead (and stops asking).
    CopyFileRange,
}

/// The answer to an operation the tree does not offer.
pub fn not_offered(op: NotOffered) -> FsError {
    match op {
        NotOffered::Ioctl => FsError::new(libc::ENOTTY, "no ioctls"),
        NotOffered::Xattr => FsError::new(libc::ENOSYS, "no extended attributes"),
        NotOffered::CopyFileRange => FsError::new(libc::ENOSYS, "no copy_file_range"),
    }
}

impl Fs {
    /// A readable path of `name` in `parent` for messages.
    fn child_path(&self, parent: Ino, name: &str) -> String {
        format!("{}/{name}", self.describe(parent))
    }

    /// chmod and chown are refused everywhere (EPERM); a size truncates a staged object
    /// (see [`Fs::truncate`]); times only need a writable node. The new attributes.
    pub fn setattr(&self, ino: Ino, change: SetAttr) -> FsResult<(Attr, Duration)> {
        if change.mode.is_some() {
            return Err(refuse(Refusal::Owner("chmod"), &self.describe(ino)));
        }
        if change.uid.is_some() || change.gid.is_some() {
            return Err(refuse(Refusal::Owner("chown"), &self.describe(ino)));
        }
        match change.size {
            Some(size) => self.truncate(ino, size)?,
            None => self.check_write(ino)?,
        }
        self.getattr(ino)
    }

    /// `access(2)`: reading is always allowed (the kernel checks the modes); writing
    /// only where [`Fs::check_write`] allows it.
    pub fn access(&self, ino: Ino, write: bool) -> FsResult<()> {
        if write {
            self.check_write(ino)?;
        }
        Ok(())
    }

    /// Device nodes and FIFOs: refused (EROFS).
    pub fn mknod(&self, parent: Ino, name: &str) -> FsResult<Entry> {
        Err(refuse(Refusal::Write("mknod"), &self.child_path(parent, name)))
    }

    /// Symbolic links: refused (EPERM).
    pub fn symlink(&self, parent: Ino, name: &str) -> FsResult<Entry> {
        Err(refuse(Refusal::Link("symlink"), &self.child_path(parent, name)))
    }

    /// Hard links (to `newparent/newname`): refused (EPERM).
    pub fn link(&self, newparent: Ino, newname: &str) -> FsResult<Entry> {
        Err(refuse(Refusal::Link("link"), &self.child_path(newparent, newname)))
    }

    /// Renames: refused, EXDEV across directories (so `mv` falls back to copying),
    /// EROFS within one.
    pub fn rename(&self, parent: Ino, name: &str, newparent: Ino) -> FsResult<()> {
        Err(refuse(Refusal::Rename { same_dir: parent == newparent }, &self.child_path(parent, name)))
    }

    /// Preallocation: refused (EROFS).
    pub fn fallocate(&self, ino: Ino) -> FsResult<()> {
        Err(refuse(Refusal::Write("fallocate"), &self.describe(ino)))
    }
}
