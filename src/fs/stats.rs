//! The `stats` file's counters (requests, times, refusals) and `statfs`.

use super::{Fs, FsError, FsResult, StatFs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Clone, Copy)]
pub(super) enum Op {
    Lookup,
    Getattr,
    Open,
    Read,
    Readdir,
}
pub(super) const OPS: [&str; 5] = ["lookup", "getattr", "open", "read", "readdir"];

#[derive(Default)]
pub(super) struct Counters {
    pub(super) count: [AtomicU64; 5],
    pub(super) nanos: [AtomicU64; 5],
    pub(super) read_bytes: AtomicU64,
    pub(super) refusals: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) txn_cache_hits: AtomicU64,
    pub(super) txn_cache_misses: AtomicU64,
}

pub(super) struct Timer<'a>(&'a Counters, Op, Instant);
impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let i = self.1 as usize;
        self.0.count[i].fetch_add(1, Ordering::Relaxed);
        self.0.nanos[i].fetch_add(self.2.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Fs {
    pub(super) fn timer(&self, op: Op) -> Timer<'_> {
        Timer(&self.counters, op, Instant::now())
    }

    /// Count a failure that the adapter is about to return (for `stats`).
    pub fn note_error(&self, e: &FsError) {
        let c = match e.errno {
            // A miss (a shell probing names) is not an error.
            libc::ENOENT => &self.counters.misses,
            libc::EROFS | libc::EPERM | libc::EXDEV | libc::EACCES => &self.counters.refusals,
            _ => &self.counters.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The real numbers of the file system holding the storage.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let dir = self.storage.dir();
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| FsError::new(libc::EINVAL, "storage path holds a NUL byte"))?;
        // SAFETY: `c` is a valid NUL-terminated path; `st` is a plain C struct that
        // statvfs fills in completely on success.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(FsError::new(e.raw_os_error().unwrap_or(libc::EIO), format!("statvfs {}: {e}", dir.display())));
        }
        Ok(StatFs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namemax as u32,
            frsize: st.f_frsize as u32,
        })
    }

    pub(super) fn render_stats(&self) -> FsResult<String> {
        let s = &self.storage;
        let st = s.stats()?;
        let c = &self.counters;
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k}: {v}\n"));
        line("last_tid", st.last_tid.to_string());
        line("objects", s.count_objects()?.to_string());
        line("max_oid", st.max_oid.map_or("-".into(), |o| o.to_string()));
        line("segments", st.segments.to_string());
        line("bytes", st.bytes.to_string());
        line("transactions", st.transactions.to_string());
        line("records", st.records.to_string());
        line("commits", st.commits.to_string());
        line("conflicts", st.conflicts.to_string());
        line(
            "ignored_tail",
            s.ignored_tail()
                .map_or("-".into(), |t| format!("{} bytes at {}:{}", t.bytes, t.segment.display(), t.offset)),
        );
        let merge = match s.merge_progress() {
            Some(p) => {
                let names: Vec<String> = p.inputs.iter().map(|n| n.to_string()).collect();
                let total = p.bytes_total.load(Ordering::Relaxed).max(1);
                let pct = p.bytes_done.load(Ordering::Relaxed) * 100 / total;
                format!("running {} {pct}%", names.join(" "))
            }
            None => "idle".into(),
        };
        line("merge", merge);
        line("class_view_builds", self.zviews.builds.load(Ordering::Relaxed).to_string());
        line("inodes", self.inodes.lock().unwrap().len().to_string());
        line("open_files", self.files.lock().unwrap().len().to_string());
        line("txn_cache_hits", c.txn_cache_hits.load(Ordering::Relaxed).to_string());
        line("txn_cache_misses", c.txn_cache_misses.load(Ordering::Relaxed).to_string());
        line("read_bytes", c.read_bytes.load(Ordering::Relaxed).to_string());
        line("refusals", c.refusals.load(Ordering::Relaxed).to_string());
        line("not_found", c.misses.load(Ordering::Relaxed).to_string());
        line("errors", c.errors.load(Ordering::Relaxed).to_string());
        for (i, name) in OPS.iter().enumerate() {
            let n = c.count[i].load(Ordering::Relaxed);
            let ns = c.nanos[i].load(Ordering::Relaxed);
            let mean = if n == 0 { 0.0 } else { ns as f64 / n as f64 / 1000.0 };
            line(name, format!("{n} requests, mean {mean:.1} us"));
        }
        Ok(out)
    }
}
