//! filestorage2: the second-generation ZODB FileStorage, in Rust.
//!
//! A storage is a chain of segment files: one active segment receiving appends (with an
//! in-memory index) and sealed past segments with memory-mapped sorted indexes. See
//! `docs/FORMAT.md` for the bytes and `docs/DESIGN.md` for commit, recovery and
//! concurrency. The entry point is [`Storage`].

#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod bench_peer;
pub mod check;
mod count;
pub mod damage;
pub mod error;
pub mod format;
pub mod fs;
#[cfg(feature = "cli")]
pub mod fuse;
mod index;
pub mod merge;
#[cfg(feature = "cli")]
pub mod mount;
mod recovery;
mod seek;
mod segment;
pub mod settings;
mod store;
mod txn;
pub mod types;
mod undo;
pub mod vfs;
mod views;
pub mod zodb;

pub use count::ObjectCount;
pub use error::{Error, Result};
pub use format::TxnMeta;
pub use seek::NewestFirst;
pub use store::{
    AppendedInfo, LoadBefore, ObjectInfo, Options, Revision, RevisionInfo, SegmentInfo, SegmentState, Stats, Storage,
    TxnIter, TxnRecord,
};
pub use txn::Transaction;
pub use types::{AsOf, Oid, SegmentName, Tid};
pub use undo::UndoRecord;
pub use views::{CommitEvent, RevStat, SegmentBytes, TxnSummaries, TxnSummary, TxnView};
