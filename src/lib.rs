//! filestorage2: the second-generation ZODB FileStorage.
pub mod error;
pub mod format;
pub mod types;
pub mod vfs;

pub use error::{Error, Result};
pub use types::{Oid, SegmentName, Tid};
