//! Merging (packing) adjacent past segments: `policy` decides what (a pure function),
//! `worker` does the I/O; this module switches the chain over and archives the inputs.
//!
//! Copy merge, chain switch: the merged segment is written under a temporary name, synced
//! and renamed into place (still outside the chain); then the successor's previous-segment
//! reference is rewritten to name it (one crash-atomic header-slot write + sync: old chain
//! or new chain, never a mix); then the inputs move to the archive directory. Recovery
//! removes a merged segment that never got into the chain and archives inputs that were
//! replaced.
//!
//! Append merge of f1 into the next segment f2: f2's header first records its sealed
//! length L (a slot write + sync); the records are appended behind L and synced; then one
//! slot write makes f2's header name f1's predecessor *and* record the new sealed length
//! (the switch); then f1 moves to the archive. Until the switch, the appended bytes lie
//! past the sealed length: readers ignore them and a writable open truncates them.

mod policy;
pub(crate) mod progress;
mod worker;

pub use policy::{choose, Policy, SegmentStat};
pub use progress::MergeProgress;
pub use worker::MergeCounts;

use crate::archive::{archive_dir, move_to_archive, probe_archive};
use crate::durable::{copy_file, verify_copy};
use crate::error::{Error, Result};
use crate::segment::PastSegment;
use crate::segment::SegmentFile;
use crate::store::{Inner, Storage};
use crate::types::{AsOf, SegmentName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use worker::{Output, Written};

/// How a merge writes its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Copy the retained records of the chosen segments into one new segment.
    #[default]
    Copy,
    /// Semi-sequential: append each older segment's retained records to the newest chosen
    /// segment (the target), newest source first; the target's own records are not copied.
    Append(AsOf),
}

/// The result of a merge.
#[derive(Clone, Debug)]
pub struct MergeReport {
    pub inputs: Vec<SegmentName>,
    pub output: SegmentName,
    pub counts: MergeCounts,
    pub seconds: f64,
    /// Where the replaced segments went.
    pub archived: Vec<PathBuf>,
}

/// A merge running in a background thread.
pub struct MergeHandle {
    thread: std::thread::JoinHandle<Result<MergeReport>>,
    pub progress: Arc<MergeProgress>,
}

impl MergeHandle {
    pub fn wait(self) -> Result<MergeReport> {
        self.thread.join().unwrap_or_else(|_| Err(Error::Invalid("the merge thread panicked".into())))
    }
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Clears the running-merge slot when the merge ends, however it ends.
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        *self.0.merging.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Storage {
    /// The merge running now, if any.
    pub fn merge_progress(&self) -> Option<Arc<MergeProgress>> {
        self.inner.merging.lock().unwrap().clone()
    }

    /// Stats of the past segments, oldest first (what a policy decides on).
    pub fn past_segment_stats(&self) -> Result<Vec<SegmentStat>> {
        let v = self.view();
        v.files()
            .rev()
            .map(|f| {
                let records = f.iter().map(|p| p.trailer.record_count).sum();
                Ok(SegmentStat { name: f[0].seg.header.name, bytes: f[0].seg.effective_len()?, records })
            })
            .collect()
    }

    /// Copy-merge as `policy` chooses, in this thread; `Ok(None)` if there is nothing to
    /// merge.
    pub fn merge(&self, policy: &Policy) -> Result<Option<MergeReport>> {
        self.merge_with(policy, Strategy::Copy)
    }

    /// Merge as `policy` chooses with `strategy`, in this thread.
    pub fn merge_with(&self, policy: &Policy, strategy: Strategy) -> Result<Option<MergeReport>> {
        match self.start_merge_with(policy, strategy)? {
            Some(h) => h.wait().map(Some),
            None => Ok(None),
        }
    }

    /// Start a copy merge as `policy` chooses in a background thread.
    pub fn start_merge(&self, policy: &Policy) -> Result<Option<MergeHandle>> {
        self.start_merge_with(policy, Strategy::Copy)
    }

    /// Start a merge as `policy` chooses in a background thread. Commits and reads go on
    /// meanwhile. `Error::Busy` if a merge is already running.
    pub fn start_merge_with(&self, policy: &Policy, strategy: Strategy) -> Result<Option<MergeHandle>> {
        if self.inner.chain.opts.read_only {
            return Err(Error::ReadOnly("the storage is open read-only; merging needs the writer".into()));
        }
        // Damage found at open, or an earlier failure: no chain changes either.
        if let Some(why) = self.inner.chain.writer().poisoned().map(str::to_string) {
            return Err(Error::ReadOnly(why));
        }
        let mut slot = self.inner.merging.lock().unwrap();
        if let Some(p) = slot.as_ref() {
            let names: Vec<String> = p.inputs.iter().map(|n| n.to_string()).collect();
            return Err(Error::Busy(format!(
                "a merge of {} is running ({:.0}% done); wait for it to finish",
                names.join(" "),
                p.fraction() * 100.0
            )));
        }
        let stats = self.past_segment_stats()?;
        let Some(range) = choose(&stats, policy)? else { return Ok(None) };
        let names: Vec<SegmentName> = stats[range].iter().map(|s| s.name).collect();
        let progress = Arc::new(MergeProgress::new(names.clone()));
        *slot = Some(progress.clone());
        drop(slot);
        let running = Running(self.inner.clone());
        let storage = self.clone();
        let p = progress.clone();
        let thread = std::thread::Builder::new()
            .name("fs2-merge".into())
            .spawn(move || {
                let _running = running;
                // A merge is CPU-bound; on few cores it must not delay commits (P7: commit
                // p99 during a merge within 2x idle). It runs slower on a busy machine.
                crate::vfs::lower_thread_priority(10);
                crate::vfs::lower_thread_io_priority();
                storage.run_merge(&names, strategy, &p)
            })
            .map_err(|e| Error::io(&self.inner.chain.dir, "start merge thread for", e))?;
        Ok(Some(MergeHandle { thread, progress }))
    }

    /// Merge the adjacent past segments `names` (oldest first).
    fn run_merge(&self, names: &[SegmentName], strategy: Strategy, progress: &MergeProgress) -> Result<MergeReport> {
        let inner = &self.inner;
        // The inputs leave the chain at the switch and must go to the archive then:
        // refuse before writing anything if it cannot take them.
        probe_archive(&*inner.chain.opts.vfs, &archive_dir(&inner.chain.dir, inner.chain.opts.archive_dir.as_deref()))?;
        let (mut counts, mut replaced) = (MergeCounts::default(), Vec::new());
        let output = match strategy {
            Strategy::Copy => {
                let (out, c, files) = self.copy_step(names, progress)?;
                (counts, replaced) = (c, files);
                out
            }
            Strategy::Append(as_of) => {
                let (&target, sources) = names.split_last().expect("two segments");
                // Each source goes into the target when it is the target's neighbour.
                for &source in sources.iter().rev() {
                    let (c, file) = self.append_step(source, target, as_of, progress)?;
                    counts.add(&c);
                    replaced.push(file);
                }
                target
            }
        };
        let mut archived = Vec::new();
        for path in &replaced {
            let to_dir = archive_dir(&inner.chain.dir, inner.chain.opts.archive_dir.as_deref());
            match move_to_archive(&*inner.chain.opts.vfs, &to_dir, path) {
                Ok(to) => archived.push(to),
                Err(e) => log::warn!("merged {} but could not archive it: {e} (the next open retries)", path.display()),
            }
        }
        let report = MergeReport {
            inputs: names.to_vec(),
            output,
            counts,
            seconds: progress.started.elapsed().as_secs_f64(),
            archived,
        };
        log::info!("merged {} segments into {output} in {:.2} s", names.len(), report.seconds);
        Ok(report)
    }
}

impl Storage {
    /// The parts of the past segments `names` (adjacent, oldest first), oldest first, and
    /// the parts of the segments older than them.
    fn parts(&self, names: &[SegmentName]) -> Result<(Parts, Parts)> {
        let v = self.view();
        let mut inputs = Vec::new();
        for n in names {
            let r = v.parts_of(*n).ok_or_else(|| not_in_chain(n))?;
            inputs.extend(v.pasts[r].iter().rev().cloned());
        }
        let oldest = v.parts_of(names[0]).expect("found above");
        Ok((inputs, v.pasts[oldest.end..].to_vec()))
    }

    /// The oldest base tid of an open transaction. A transaction open now with base B
    /// conflicts with a deletion newer than B: such a deletion must stay even if nothing
    /// older holds the object any more. (Later transactions have bases past every tid
    /// merged here.)
    fn oldest_open(&self) -> Option<crate::types::Tid> {
        self.inner.open_bases.lock().unwrap().keys().next().copied()
    }

    /// Copy `names` into a new segment and put it in their place. Returns the new
    /// segment's name and the replaced files.
    fn copy_step(
        &self,
        names: &[SegmentName],
        progress: &MergeProgress,
    ) -> Result<(SegmentName, MergeCounts, Vec<PathBuf>)> {
        let inner = &self.inner;
        let (inputs, older) = self.parts(names)?;
        let out = worker::merge(
            &*inner.chain.opts.vfs,
            &inner.chain.dir,
            &inputs,
            &older,
            self.oldest_open(),
            Output::New,
            progress,
        );
        let (Written::New(out), counts) = out? else { unreachable!("a copy merge writes a new segment") };
        let output = out.header.name;
        let merged = PastSegment::open(*out)?;
        let newest = *names.last().expect("inputs");
        self.relink(newest, names.len(), merged, output.file_name())?;
        let mut files: Vec<PathBuf> = inputs.iter().map(|p| p.seg.path.clone()).collect();
        files.dedup();
        Ok((output, counts, files))
    }

    /// Append the retained records of `source` to the next segment, `target`, and switch
    /// the chain over. Returns the replaced file (the source's).
    fn append_step(
        &self,
        source: SegmentName,
        target: SegmentName,
        as_of: AsOf,
        progress: &MergeProgress,
    ) -> Result<(MergeCounts, PathBuf)> {
        let inner = &self.inner;
        let vfs = &*inner.chain.opts.vfs;
        let (inputs, older) = self.parts(&[source])?;
        let (target_parts, _) = self.parts(&[target])?;
        let from = &inputs[0].seg;
        let t = SegmentFile::open(vfs, &target_parts[0].seg.path, true)?;
        if t.prev().as_deref().map(file_name_of) != Some(&source.file_name()) {
            return Err(Error::invalid(format!("{source} is not the segment just before {target}")));
        }
        // The intent: from here on, bytes past the sealed length are an unfinished append.
        let sealed = t.effective_len()?;
        if t.sealed_len() != Some(sealed) {
            t.rewrite_slot(vfs, t.prev(), Some(sealed))?;
        }
        let out = Output::Append { target: &t, parts: &target_parts, as_of };
        let (written, counts) =
            worker::merge(vfs, &inner.chain.dir, &inputs, &older, self.oldest_open(), out, progress)?;
        let Written::Appended(new_len) = written else { unreachable!("an append merge appends") };
        // The switch, under the writer lock like every chain change.
        let w = inner.chain.writer();
        // A failed switch leaves the appended bytes alone: the slot may have reached the
        // disk even if its sync failed. If the old slot is in force, the next open cuts
        // them off; if the new one is, they are the segment's data.
        t.rewrite_slot(vfs, from.prev(), Some(new_len))?;
        let parts = PastSegment::open(SegmentFile::open(vfs, &t.path, false)?)?;
        let v = inner.chain.read();
        let (Some(tr), Some(sr)) = (v.parts_of(target), v.parts_of(source)) else {
            return Err(not_in_chain(&source));
        };
        drop(v);
        inner.chain.splice(&w, tr.start..sr.end, parts);
        Ok((counts, from.path.clone()))
    }

    /// Replace the `count` past segments ending with `newest` (newest first in the view)
    /// by `replacement` (the parts of one segment), whose file the successor of `newest`
    /// is made to reference as `prev_ref`: one crash-atomic header-slot write. Under the
    /// writer lock, so that no rotation changes the successor meanwhile.
    fn relink(
        &self,
        newest: SegmentName,
        count: usize,
        replacement: Vec<Arc<PastSegment>>,
        prev_ref: String,
    ) -> Result<()> {
        let inner = &self.inner;
        let vfs = &*inner.chain.opts.vfs;
        let w = inner.chain.writer();
        // The writer lock keeps the view's segments where they are until it is released.
        let v = self.view();
        let at = v.parts_of(newest).ok_or_else(|| not_in_chain(&newest))?.start;
        let end =
            at + v.files().skip_while(|f| f[0].seg.header.name != newest).take(count).map(|f| f.len()).sum::<usize>();
        let successor = match at {
            0 => v.active.as_ref().map(|a| a.seg.clone()).ok_or_else(|| Error::ReadOnly("no active segment".into()))?,
            n => Arc::new(SegmentFile::open(vfs, &v.pasts[n - 1].seg.path, false)?),
        };
        let successor_parts = if at > 0 { v.parts_of(successor.header.name) } else { None };
        drop(v);
        successor.rewrite_prev(vfs, Some(prev_ref))?;
        // Keep the in-memory reference of a past successor current for `segments()` and
        // `check`: its parts are opened again (I/O, before the view lock).
        let reopened = match successor_parts {
            Some(r) => Some((r, PastSegment::open(Arc::try_unwrap(successor).ok().expect("sole owner"))?)),
            None => None,
        };
        inner.chain.splice(&w, at..end, replacement);
        // The successor's parts lie before `at` (newer): their indices did not move.
        if let Some((r, parts)) = reopened {
            inner.chain.splice(&w, r, parts);
        }
        Ok(())
    }

    /// Move past segment `name` to `to_dir` (for example another file system) and update
    /// the chain: copy, sync, rename into place there, verify the copy, switch the
    /// successor's reference (crash-atomic), then remove the old file. Returns the new
    /// path. Paths are compared as files, never as text: a move into the directory the
    /// segment already lives in is refused and changes nothing. A crash before the switch
    /// leaves an unused copy in `to_dir`; after it, the next writable open removes the
    /// old file once it has verified that the chain's copy holds the same bytes.
    pub fn move_segment(&self, name: SegmentName, to_dir: &Path) -> Result<PathBuf> {
        let inner = &self.inner;
        let vfs = &*inner.chain.opts.vfs;
        if inner.chain.opts.read_only {
            return Err(Error::ReadOnly("the storage is open read-only".into()));
        }
        if !to_dir.is_absolute() {
            return Err(Error::invalid(format!("{}: give the target directory as an absolute path", to_dir.display())));
        }
        let mut slot = inner.merging.lock().unwrap();
        if slot.is_some() {
            return Err(Error::Busy("a merge or move is running; wait for it to finish".into()));
        }
        *slot = Some(Arc::new(MergeProgress::new(vec![name])));
        drop(slot);
        let _running = Running(inner.clone());
        let p = {
            let v = self.view();
            v.pasts.iter().find(|p| p.seg.header.name == name).cloned().ok_or_else(|| not_in_chain(&name))?
        };
        let from = p.seg.path.clone();
        let from_dir = from.parent().unwrap_or(Path::new("/"));
        if vfs.exists(to_dir) && vfs.same_file(from_dir, to_dir) {
            return Err(Error::invalid(format!(
                "{name} already lives in {} ({}): nothing to move",
                to_dir.display(),
                from.display()
            )));
        }
        vfs.create_dir_all(to_dir).map_err(|e| Error::io(to_dir, "create directory", e))?;
        let to_dir = vfs.canonicalize(to_dir).map_err(|e| Error::io(to_dir, "resolve the path of", e))?;
        let to = to_dir.join(name.file_name());
        if vfs.exists(&to) {
            // A copy left by an interrupted move of this segment may be replaced; anything
            // else under that name is not ours to overwrite.
            let ours = SegmentFile::open(vfs, &to, false)
                .is_ok_and(|s| s.header.storage_id == p.seg.header.storage_id && s.header.name == name);
            if !ours || vfs.same_file(&to, &from) {
                return Err(Error::invalid(format!(
                    "{} already exists and is not a leftover copy of this segment; move it away first",
                    to.display()
                )));
            }
        }
        let len = p.seg.effective_len()?;
        copy_file(vfs, &*p.seg.file, &from, len, &to)?;
        verify_copy(vfs, &*p.seg.file, &from, len, &to)?;
        let moved = PastSegment::open(SegmentFile::open(vfs, &to, false)?)?;
        let reference =
            if vfs.same_file(&to_dir, &inner.chain.dir) { name.file_name() } else { to.display().to_string() };
        self.relink(name, 1, moved, reference)?;
        // The chain now names the verified copy `to`, a different file than `from`.
        vfs.remove(&from).map_err(|e| Error::io(&from, "remove the old copy of", e))?;
        vfs.sync_dir(from_dir).map_err(|e| Error::io(from_dir, "sync directory", e))?;
        Ok(to)
    }
}

/// The file name at the end of a previous-segment reference.
fn file_name_of(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

type Parts = Vec<Arc<PastSegment>>;

fn not_in_chain(n: &SegmentName) -> Error {
    Error::NotFound(format!("segment {n} is not a past segment of this storage's chain"))
}
