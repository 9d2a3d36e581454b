//! Scans over a storage's current objects: class histogram, references of and to an
//! object, dangling references.
