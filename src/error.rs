//! The engine's one error type. Every message says what failed, where, and what to do.

use crate::types::{Oid, ParseError, Tid};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
pub enum Error {
    /// An operating-system I/O error on `path`.
    Io { path: PathBuf, op: &'static str, source: io::Error },
    /// Bytes on disk that do not decode: a bad marker, length, bound or version.
    Corrupted { path: PathBuf, offset: u64, what: String },
    /// A checksum did not match: the bytes were torn or corrupted.
    Checksum { path: PathBuf, offset: u64, what: &'static str },
    /// Another transaction committed after our base tid changed `oid`.
    Conflict { oid: Oid, tid: Tid },
    /// No such object, revision, transaction or segment.
    NotFound(String),
    /// A write on a read-only storage, or after a failed write poisoned the writer.
    ReadOnly(String),
    /// Another process holds the writer lock; or a voted transaction is pending.
    Busy(String),
    /// Bad input from the caller (names, arguments, sizes).
    Invalid(String),
}

impl Error {
    pub fn io(path: &Path, op: &'static str, source: io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), op, source }
    }
    pub fn corrupted(path: &Path, offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupted { path: path.to_path_buf(), offset, what: what.into() }
    }
    pub fn checksum(path: &Path, offset: u64, what: &'static str) -> Error {
        Error::Checksum { path: path.to_path_buf(), offset, what }
    }
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }
    /// What is wrong, without the path and offset (for messages that already name them;
    /// never nests one error's text in another's).
    pub fn detail(&self) -> String {
        match self {
            Error::Corrupted { what, .. } => what.clone(),
            Error::Checksum { what, .. } => format!("checksum mismatch in {what}"),
            e => e.to_string(),
        }
    }
    /// The file offset a damage error names.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Corrupted { offset, .. } | Error::Checksum { offset, .. } => Some(*offset),
            _ => None,
        }
    }
    /// The same damage with `note` added (what it means, what to do); other errors as is.
    pub fn with_note(self, note: &str) -> Error {
        match self {
            Error::Corrupted { path, offset, what } => {
                Error::Corrupted { path, offset, what: format!("{what}; {note}") }
            }
            Error::Checksum { path, offset, what } => {
                Error::Corrupted { path, offset, what: format!("checksum mismatch in {what}; {note}") }
            }
            e => e,
        }
    }
    /// True for errors that mean the bytes on disk are damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupted { .. } | Error::Checksum { .. })
    }
    /// The raw OS error number, if this is an I/O error that has one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, op, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Corrupted { path, offset, what } => {
                write!(f, "{} at offset {offset}: corrupted: {what}", path.display())
            }
            Error::Checksum { path, offset, what } => write!(
                f,
                "{} at offset {offset}: checksum mismatch in {what}: the bytes are torn or corrupted",
                path.display()
            ),
            Error::Conflict { oid, tid } => {
                write!(f, "conflict on oid {oid}: changed by transaction {tid} after this transaction began; retry it")
            }
            Error::NotFound(m) | Error::ReadOnly(m) | Error::Busy(m) | Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Error {
        Error::Invalid(e.0)
    }
}
