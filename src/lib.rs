//! filestorage2: the second-generation ZODB FileStorage, in Rust.
//!
//! A storage is a chain of segment files: one active segment receiving appends (with an
//! in-memory index) and sealed past segments with memory-mapped sorted indexes. See
//! `docs/FORMAT.md` for the bytes and `docs/DESIGN.md` for commit, recovery and
//! concurrency. The entry point is [`Storage`].

mod archive;
pub mod backup;
#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod bench_peer;
mod chain;
pub mod check;
pub mod damage;
mod durable;
pub mod error;
pub mod format;
pub mod fs;
#[cfg(feature = "cli")]
pub mod fuse;
mod index;
mod listing;
pub mod merge;
#[cfg(feature = "cli")]
pub mod mount;
mod recovery;
mod segment;
pub mod settings;
mod store;
mod txn;
pub mod types;
mod undo;
pub mod vfs;
mod views;
pub mod zodb;

pub use error::{Error, Result};
pub use format::TxnMeta;
pub use listing::{Listed, Paged};
pub use store::{
    AppendedInfo, LoadBefore, ObjectInfo, Options, Revision, RevisionInfo, SegmentInfo, SegmentState, Stats, Storage,
    TxnIter, TxnRecord,
};
pub use txn::Transaction;
pub use types::{AsOf, Oid, SegmentName, Tid};
pub use undo::UndoRecord;
pub use views::{CommitEvent, RevStat, SegmentBytes, TxnSummaries, TxnSummary, TxnView};
