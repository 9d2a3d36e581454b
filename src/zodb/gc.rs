//! Reachability garbage collection.
