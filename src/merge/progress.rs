//! Progress of a running merge or move: a leaf the storage's shared state can hold
//! without depending on the merge machinery.

use crate::types::SegmentName;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Progress of a running merge, readable from any thread.
#[derive(Debug)]
pub struct MergeProgress {
    pub inputs: Vec<SegmentName>,
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub records_done: AtomicU64,
    pub records_total: AtomicU64,
    pub started: Instant,
}

impl MergeProgress {
    pub(crate) fn new(inputs: Vec<SegmentName>) -> MergeProgress {
        MergeProgress {
            inputs,
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            records_done: AtomicU64::new(0),
            records_total: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
    /// Fraction done, 0.0 to 1.0 (by bytes).
    pub fn fraction(&self) -> f64 {
        let t = self.bytes_total.load(Ordering::Relaxed);
        if t == 0 {
            0.0
        } else {
            (self.bytes_done.load(Ordering::Relaxed) as f64 / t as f64).min(1.0)
        }
    }
}
