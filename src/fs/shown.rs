//! Read-your-writes across processes: the tid `head/` shows, the notifier's progress
//! (kernel names and pages dropped after a commit or a merge), and `head/watch`.

use super::{opt_tid, Fh, Fs, FsError, FsResult, Ino, Node};
use crate::{SegmentName, Tid};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

/// The tid that `head/` shows to every process: a commit counts only once the kernel's
/// cached `head/<oid>` names it replaced have been invalidated. `None` while no notifier
/// runs (the unit tests call this layer without a kernel: nothing is cached there).
#[derive(Default)]
pub(super) struct Shown {
    pub(super) tid: Mutex<Option<Tid>>,
    pub(super) cv: std::sync::Condvar,
    /// Segment files rewritten in place (a merge rewrites its successor's header):
    /// (rewrites asked, rewrites whose cached pages the notifier has dropped).
    pub(super) rewrites: Mutex<(u64, u64)>,
    pub(super) rewrites_cv: std::sync::Condvar,
}

/// How long a commit waits for the notifier before answering anyway (with a warning).
pub(super) const SHOWN_WAIT: Duration = Duration::from_secs(10);

/// How often a blocked `head/watch` read looks whether its descriptor was closed (a
/// close sends no wakeup; a commit and an unmount do).
const WATCH_RECHECK: Duration = Duration::from_secs(1);

impl Shown {
    pub(super) fn set(&self, tid: Tid) {
        let mut t = self.tid.lock().unwrap();
        if let Some(old) = *t {
            *t = Some(old.max(tid));
        }
        self.cv.notify_all();
    }

    /// Ask the notifier to drop the kernel's cached pages of every segment file, and wait
    /// until it has (at once when untracked): nobody reads a header a merge rewrote.
    pub(super) fn rewritten(&self) {
        if self.tid.lock().unwrap().is_none() {
            return;
        }
        let mut r = self.rewrites.lock().unwrap();
        r.0 += 1;
        let n = r.0;
        let (_r, w) = self.rewrites_cv.wait_timeout_while(r, SHOWN_WAIT, |r| r.1 < n).unwrap();
        if w.timed_out() {
            log::warn!("segment pages not dropped after {SHOWN_WAIT:?}: the notifier is late");
        }
    }

    /// Wait until `tid` or newer is shown (at once when untracked).
    pub(super) fn wait(&self, tid: Tid) {
        let t = self.tid.lock().unwrap();
        let (t, r) = self.cv.wait_timeout_while(t, SHOWN_WAIT, |t| t.is_some_and(|s| s < tid)).unwrap();
        if r.timed_out() {
            log::warn!("head/ shows {} after {SHOWN_WAIT:?}, not yet {tid}: the notifier is late", opt_tid(*t));
        }
    }
}

impl Fs {
    /// A notifier starts: from now on commits wait until it has shown them. Call it right
    /// after subscribing to the storage's commits.
    pub fn track_shown(&self) {
        *self.shown.tid.lock().unwrap() = Some(self.storage.last_tid());
    }

    /// The notifier has dropped every kernel name that commits up to `tid` made stale.
    pub fn set_shown(&self, tid: Tid) {
        self.shown.set(tid);
    }

    /// Segment files were rewritten: the inodes of the chain's `data` files the kernel knows and
    /// the request number to pass to [`Fs::pages_dropped`] once their pages are dropped.
    pub fn rewritten_data(&self) -> Option<(u64, Vec<Ino>)> {
        let (asked, done) = *self.shown.rewrites.lock().unwrap();
        if asked == done {
            return None;
        }
        // Only segments still in the chain: a merged-away one keeps its bytes (open
        // descriptors read on), and invalidating it would make the kernel ask for its
        // attributes, which are gone.
        let chain: Vec<SegmentName> =
            self.storage.segments().map(|v| v.into_iter().map(|i| i.name).collect()).unwrap_or_default();
        let inodes = self.inodes.lock().unwrap().matching(|n| matches!(n, Node::SegData(s) if chain.contains(s)));
        Some((asked, inodes))
    }

    pub fn pages_dropped(&self, n: u64) {
        let mut r = self.shown.rewrites.lock().unwrap();
        r.1 = r.1.max(n);
        self.shown.rewrites_cv.notify_all();
    }

    /// The tid `head/` shows (the engine's last tid when no notifier runs).
    pub fn shown_tid(&self) -> Tid {
        self.shown.tid.lock().unwrap().unwrap_or_else(|| self.storage.last_tid())
    }

    /// Whether the engine is ahead of what `head/` shows (a commit's names are being
    /// invalidated): a new transaction must wait ([`Fs::wait_shown`]) so that its `head/`
    /// reads are never older than its base. Waiting blocks: not on a session thread.
    pub fn shown_behind(&self) -> bool {
        self.shown.tid.lock().unwrap().is_some_and(|t| t < self.storage.last_tid())
    }

    /// Wait until `head/` shows the engine's last tid to every process.
    pub fn wait_shown(&self) {
        self.shown.wait(self.storage.last_tid());
    }

    /// Wait until `head/` shows a tid newer than `last`; EINTR once `fh` is closed or
    /// the mount ends.
    pub(super) fn watch(&self, fh: Fh, last: Tid) -> FsResult<Tid> {
        loop {
            let t = self.shown.tid.lock().unwrap();
            let (t, _) = self.shown.cv.wait_timeout_while(t, WATCH_RECHECK, |t| t.is_some_and(|t| t <= last)).unwrap();
            drop(t);
            let now = self.shown_tid();
            if now > last {
                return Ok(now);
            }
            if !self.files.lock().unwrap().contains_key(&fh) || self.closing.load(Ordering::Relaxed) {
                return Err(FsError::new(libc::EINTR, "head/watch: closed while waiting"));
            }
        }
    }

    /// The inode of `head/` if the kernel knows it (for invalidating head entries).
    pub fn head_ino(&self) -> Option<Ino> {
        self.inodes.lock().unwrap().peek(Node::HeadDir)
    }

    /// The inodes the kernel knows of the directories whose names are oids of head
    /// objects (`head/`, `refs/`): a commit invalidates the names of the oids it changed.
    pub fn head_inos(&self) -> Vec<Ino> {
        let i = self.inodes.lock().unwrap();
        [Node::HeadDir, Node::RefsDir].into_iter().filter_map(|n| i.peek(n)).collect()
    }
}
