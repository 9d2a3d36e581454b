//! filestorage2: the second-generation ZODB FileStorage, in Rust.
//!
//! A storage is a chain of segment files: one active segment receiving appends (with an
//! in-memory index) and sealed past segments with memory-mapped sorted indexes. See
//! `docs/FORMAT.md` for the bytes and `docs/DESIGN.md` for commit, recovery and
//! concurrency. The entry point is [`Storage`].
//!
//! The public API is the engine (what `docs/DESIGN.md` shows in "Storage API in one
//! screen", with `check`, `damage`, `merge`, `settings`, `vfs` and `zodb`) and, with the
//! `cli` feature, the mount's layers (`fs`, `fuse`, `mount`) that the `fs2` binary and the
//! real-mount tests use. Everything else is `pub(crate)`. The `fs2` command itself
//! (`src/main.rs`, `src/cli.rs`, `src/bench/`) is the binary's, not the library's.

mod archive;
pub mod backup;
mod chain;
pub mod check;
mod count;
pub mod damage;
mod durable;
mod error;
pub(crate) mod format;
#[cfg(feature = "cli")]
pub mod fs;
#[cfg(feature = "cli")]
pub mod fuse;
mod index;
mod listing;
pub mod merge;
#[cfg(feature = "cli")]
pub mod mount;
mod newest;
mod read;
mod recovery;
mod seek;
mod segment;
pub mod settings;
mod store;
mod txn;
mod types;
mod undo;
pub mod vfs;
mod views;
mod writes;
pub mod zodb;

pub use count::ObjectCount;
pub use error::{Error, Result};
pub use format::TxnMeta;
pub use index::set_oid_filters;
pub use listing::{Listed, Paged};
pub use newest::NewestFirst;
pub use store::{
    AppendedInfo, LoadBefore, ObjectInfo, Options, Revision, RevisionInfo, SegmentInfo, SegmentState, Stats, Storage,
    TxnIter, TxnRecord,
};
pub use txn::Transaction;
pub use types::{AsOf, Oid, ParseError, SegmentName, Tid};
pub use undo::UndoRecord;
pub use views::{CommitEvent, RevStat, SegmentBytes, TxnSummaries, TxnSummary, TxnView};
