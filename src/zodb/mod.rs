//! ZODB records: what a data record's two pickles say (its class and its persistent
//! references), read in Rust without Python ([`pickle`]), and what the storage does with
//! that: a class histogram, reference listings and dangling references ([`scan`]), and
//! reachability garbage collection ([`gc`]).
//!
//! A ZODB data record is the bytes `ZODB.serialize.ObjectWriter.serialize` produces: a
//! class pickle then a state pickle (protocol 1 to 3; zodbpickle's binary forms), written
//! by one pickler so the state pickle may refer to the class pickle's memo. A record that
//! is not that is reported as [`NotZodb`], never guessed at.

pub mod gc;
mod pickle;
pub mod scan;

use crate::types::Oid;
use std::fmt;

pub use pickle::Reader;

/// The class of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// A class named by module and name (`persistent.mapping.PersistentMapping`).
    Named { module: String, name: String },
    /// A class that is itself a persistent object (ZClasses): its oid.
    Persistent(Oid),
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Named { module, name } => write!(f, "{module}.{name}"),
            Class::Persistent(oid) => write!(f, "<persistent class {oid}>"),
        }
    }
}

/// What kind of persistent reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefKind {
    /// An ordinary reference (oid, or (oid, class)): keeps its target alive.
    Strong,
    /// `persistent.wref.WeakRef` (['w', (oid[, database])], or the legacy [oid]): does
    /// not keep its target alive. `database` names another database of a multi-database.
    Weak { database: Option<String> },
    /// A reference into another database of a multi-database (['m', …] or ['n', …]).
    CrossDatabase { database: String },
}

/// One persistent reference of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub oid: Oid,
    pub kind: RefKind,
    /// `module.Name` of the target, when the reference carries it.
    pub class: Option<String>,
}

impl Reference {
    /// True for the references ZODB's `referencesf` returns (and pack GC follows).
    pub fn is_strong(&self) -> bool {
        self.kind == RefKind::Strong
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.oid)?;
        match &self.kind {
            RefKind::Strong => {}
            RefKind::Weak { database: None } => write!(f, " weak")?,
            RefKind::Weak { database: Some(d) } => write!(f, " weak database={d}")?,
            RefKind::CrossDatabase { database } => write!(f, " database={database}")?,
        }
        if let Some(c) = &self.class {
            write!(f, " class={c}")?;
        }
        Ok(())
    }
}

/// Why bytes are not a ZODB data record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotZodb {
    /// Where in the record the reader gave up.
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for NotZodb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a ZODB record: {} (at byte {})", self.reason, self.offset)
    }
}

/// A ZODB record's class and references, in pickle order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub class: Class,
    pub refs: Vec<Reference>,
}

/// Read one record (for many, reuse a [`Reader`]).
pub fn read_record(data: &[u8]) -> Result<Record, NotZodb> {
    Reader::new().read(data).map(|(class, refs)| Record { class, refs })
}

#[cfg(test)]
mod tests;

/// An unnamed scratch file for a scan too large for memory: beside the storage when it
/// is writable (its disk, not a small /tmp), in the system's temporary directory when it
/// is read-only (archives and read-only opens are never written to).
pub fn scratch_file(s: &crate::Storage) -> crate::Result<std::fs::File> {
    let dir = s.dir();
    let beside = match s.is_read_only() {
        true => Err(std::io::ErrorKind::ReadOnlyFilesystem.into()),
        false => tempfile::tempfile_in(dir),
    };
    beside.or_else(|_| tempfile::tempfile()).map_err(|e| crate::Error::io(dir, "create temporary file in", e))
}
