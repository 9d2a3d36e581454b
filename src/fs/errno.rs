//! The one place where engine errors and refusals become errno values (docs/NAMESPACE.md
//! "Refusals"). Every refusal carries a message saying what to do instead; the adapter
//! logs it once.

use crate::error::Error;

/// An fs-layer failure: the errno the caller gets and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    pub errno: i32,
    pub message: String,
}

impl FsError {
    pub fn new(errno: i32, message: impl Into<String>) -> FsError {
        FsError { errno, message: message.into() }
    }

    /// Missing or malformed name.
    pub fn not_found(message: impl Into<String>) -> FsError {
        FsError::new(libc::ENOENT, message)
    }

    /// Whether this is worth a log line at warning level (the storage's limits: a full
    /// disk, an oversized object) rather than info: refusals and misses are answers the
    /// caller gets (a script probing names or writing where it may not would otherwise
    /// flood the log).
    pub fn is_loud(&self) -> bool {
        matches!(self.errno, libc::ENOSPC | libc::EFBIG | libc::EDQUOT)
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, std::io::Error::from_raw_os_error(self.errno))
    }
}

/// The errno for an engine error.
pub fn errno_of(e: &Error) -> i32 {
    match e {
        Error::NotFound(_) => libc::ENOENT,
        Error::ReadOnly(_) => libc::EROFS,
        Error::Busy(_) => libc::EBUSY,
        Error::Conflict { .. } => libc::ESTALE,
        Error::Invalid(_) => libc::EINVAL,
        // Never wrong bytes: damage is an I/O error.
        Error::Corrupted { .. } | Error::Checksum { .. } => libc::EIO,
        Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
    }
}

impl From<Error> for FsError {
    fn from(e: Error) -> FsError {
        FsError { errno: errno_of(&e), message: e.to_string() }
    }
}

/// A write-side operation refused outside the writable area (`txn/`, `merge`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Open for writing, write, truncate, set times, create, mknod, mkdir, unlink, rmdir.
    Write(&'static str),
    /// chmod, chown.
    Owner(&'static str),
    /// link, symlink.
    Link(&'static str),
    /// rename; `same_dir` tells whether source and target directory are the same.
    Rename { same_dir: bool },
}

/// The errno and the "what to do instead" message of a refusal.
pub fn refuse(r: Refusal, path: &str) -> FsError {
    const HOW: &str = "only txn/ and merge are writable: `mkdir txn/NAME`, write objects in it, \
                       `echo commit > txn/NAME/ctl` (or `fs2 commit STORAGE OID=FILE`)";
    match r {
        Refusal::Write(op) => FsError::new(libc::EROFS, format!("{op} {path} refused: {HOW}")),
        Refusal::Owner(op) => {
            FsError::new(libc::EPERM, format!("{op} {path} refused: owners and modes are fixed; {HOW}"))
        }
        Refusal::Link(op) => {
            FsError::new(libc::EPERM, format!("{op} {path} refused: no links in this tree; copy the file out instead"))
        }
        Refusal::Rename { same_dir: false } => {
            FsError::new(libc::EXDEV, format!("rename {path} across directories refused: copy the file out instead"))
        }
        Refusal::Rename { same_dir: true } => FsError::new(libc::EROFS, format!("rename {path} refused: {HOW}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Oid, Tid};
    use std::path::Path;

    #[test]
    fn each_error_has_its_errno() {
        let io = |k: i32| Error::io(Path::new("x"), "read", std::io::Error::from_raw_os_error(k));
        let cases = [
            (Error::NotFound("x".into()), libc::ENOENT),
            (Error::ReadOnly("x".into()), libc::EROFS),
            (Error::Busy("x".into()), libc::EBUSY),
            (Error::Conflict { oid: Oid(1), tid: Tid(2) }, libc::ESTALE),
            (Error::invalid("x"), libc::EINVAL),
            (Error::corrupted(Path::new("x"), 1, "bad"), libc::EIO),
            (Error::checksum(Path::new("x"), 1, "record"), libc::EIO),
            (io(libc::ENOSPC), libc::ENOSPC),
            (Error::io(Path::new("x"), "read", std::io::Error::other("no errno")), libc::EIO),
        ];
        for (e, want) in cases {
            assert_eq!(FsError::from(e).errno, want);
        }
        assert_eq!(refuse(Refusal::Write("mkdir"), "/x").errno, libc::EROFS);
        assert_eq!(refuse(Refusal::Owner("chmod"), "/x").errno, libc::EPERM);
        assert_eq!(refuse(Refusal::Link("symlink"), "/x").errno, libc::EPERM);
        assert_eq!(refuse(Refusal::Rename { same_dir: false }, "/x").errno, libc::EXDEV);
        assert_eq!(refuse(Refusal::Rename { same_dir: true }, "/x").errno, libc::EROFS);
        assert!(refuse(Refusal::Write("write"), "/x").message.contains("mkdir txn/NAME"));
    }
}
