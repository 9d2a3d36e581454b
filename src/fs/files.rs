//! Open files: the handle table and reads (a revision's data is read once per open and
//! kept; generated text files serve the snapshot whose size was reported).

use super::stats::Op;
use super::text::{render_txn_info, SNAPSHOT_KEEP};
use super::write;
use super::{refuse, Fh, Fs, FsError, FsResult, Ino, MountTxn, Node, OpenMode, Opened, Refusal, README};
use crate::views::SegmentBytes;
use crate::{Oid, SegmentState, Tid};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub(super) enum FileHandle {
    Bytes(Vec<u8>),
    /// A status file (`ctl`, `info`, `merge`, the clone file): the text as of the open,
    /// and where writes go.
    Control(write::Control, Vec<u8>),
    /// `txn/<name>/<oid>`; `append`: every write goes to the end (O_APPEND).
    Obj(Arc<MountTxn>, Oid, bool),
    /// A revision's data, read at the first `read` (a warm `cat` with the page cache
    /// kept never reads, so its open costs no engine work).
    Rev(Oid, Tid, Mutex<Option<Arc<Vec<u8>>>>),
    Segment(SegmentBytes),
    /// A generated text file (`stats`, `segments/<name>/info`, `txns`): the snapshot whose
    /// size was reported. `grows`: append-only (the active segment's `txns`), so a read
    /// past the end renders again and extends it (`tail -f` follows).
    Text(Node, Mutex<Arc<Vec<u8>>>, bool),
    /// `head/watch`: the last tid this descriptor gave (or the one shown at open) and
    /// what of its line is still to be read (a shell's `read` takes a byte at a time).
    Watch(Mutex<(Tid, Vec<u8>)>),
}

impl Fs {
    /// Whether `fh` is a `head/watch` descriptor (its reads block: not on a session thread).
    pub fn is_watch(&self, fh: Fh) -> bool {
        matches!(self.files.lock().unwrap().get(&fh).map(|h| &**h), Some(FileHandle::Watch(_)))
    }

    /// Open a file for reading, or for writing when `write` (EROFS outside `txn/` and
    /// `merge`).
    pub fn open(&self, ino: Ino, write: bool) -> FsResult<Opened> {
        self.open_with(ino, OpenMode { write, ..OpenMode::default() })
    }

    /// Open a file as `mode` says.
    pub fn open_with(&self, ino: Ino, mode: OpenMode) -> FsResult<Opened> {
        let _t = self.timer(Op::Open);
        let node = self.node(ino)?;
        if (mode.write || mode.truncate) && (!node.is_writable() || self.opts.read_only) {
            return Err(refuse(Refusal::Write("open for writing"), &node.to_string()));
        }
        if let Some(h) = self.open_writable(node, mode)? {
            return Ok(self.add_handle(h, false));
        }
        let s = &self.storage;
        let (handle, keep_cache) = match node {
            Node::Rev(o, t) => (FileHandle::Rev(o, t, Mutex::new(None)), true),
            Node::Deleted(..) => (FileHandle::Bytes(Vec::new()), true),
            Node::Readme => (FileHandle::Bytes(README.as_bytes().to_vec()), true),
            Node::HeadAt => (FileHandle::Bytes(format!("{}\n", self.shown_tid()).into_bytes()), false),
            Node::HeadWatch => (FileHandle::Watch(Mutex::new((self.shown_tid(), Vec::new()))), false),
            Node::AtAt(t) => (FileHandle::Bytes(format!("{t}\n").into_bytes()), true),
            Node::TxnInfo(t) => (FileHandle::Bytes(render_txn_info(&*self.txn(t)?).into_bytes()), true),
            Node::ArchData(n) => (FileHandle::Segment(self.archived(n)?), true),
            Node::Stats
            | Node::SegInfo(_)
            | Node::SegTxns(_)
            | Node::ArchInfo(_)
            | Node::ClassIndex
            | Node::Referrers(_) => {
                let kept = self.snapshots.lock().unwrap().get(&node).cloned();
                let bytes = match kept {
                    Some((b, at)) if at.elapsed() < SNAPSHOT_KEEP => b,
                    _ => self.snapshot(node)?,
                };
                let grows = matches!(node, Node::SegTxns(n) if self.seg_info(n)?.state == SegmentState::Active);
                (FileHandle::Text(node, Mutex::new(bytes), grows), false)
            }
            Node::ClassesAt => (FileHandle::Bytes(format!("{}\n", self.class_view()?.tid).into_bytes()), false),
            Node::Refs(o, t) => (FileHandle::Bytes(self.refs_text(o, t)?.into_bytes()), true),
            Node::SegData(n) => {
                let b = s.segment_bytes(n)?;
                // A sealed segment never changes; the active one grows.
                let sealed = b.state == SegmentState::Past;
                (FileHandle::Segment(b), sealed)
            }
            _ => return Err(FsError::new(libc::EISDIR, format!("{node} is a directory"))),
        };
        Ok(self.add_handle(handle, keep_cache))
    }

    pub(super) fn add_handle(&self, handle: FileHandle, keep_cache: bool) -> Opened {
        let fh = Fh(self.next_fh.fetch_add(1, Ordering::Relaxed));
        self.files.lock().unwrap().insert(fh, Arc::new(handle));
        Opened { fh, keep_cache, direct_io: !keep_cache, no_flush: true }
    }

    /// At most `size` bytes at `offset` (fewer at the end; never more than asked).
    pub fn read(&self, fh: Fh, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let _t = self.timer(Op::Read);
        let h = self.files.lock().unwrap().get(&fh).cloned();
        let h = h.ok_or_else(|| FsError::new(libc::EBADF, format!("file handle {fh} is not open")))?;
        let slice = |b: &[u8]| {
            let start = (offset.min(b.len() as u64)) as usize;
            let end = start + (size as usize).min(b.len() - start);
            b[start..end].to_vec()
        };
        let out = match &*h {
            FileHandle::Bytes(b) | FileHandle::Control(_, b) => slice(b),
            FileHandle::Obj(t, oid, _) => t.read(&self.storage, *oid, offset, size)?,
            FileHandle::Rev(o, t, cell) => {
                let mut c = cell.lock().unwrap();
                let data = match &*c {
                    Some(d) => d.clone(),
                    None => {
                        let d = match self.storage.revision(*o, *t)? {
                            Some(r) if r.data.is_some() => Arc::new(r.data.unwrap_or_default()),
                            _ => return Err(FsError::not_found(format!("revision {t} of {o} is no longer retained"))),
                        };
                        *c = Some(d.clone());
                        d
                    }
                };
                drop(c);
                slice(&data)
            }
            FileHandle::Watch(w) => {
                let mut w = w.lock().unwrap();
                let (last, pending) = &mut *w;
                if pending.is_empty() {
                    *last = self.watch(fh, *last)?;
                    *pending = format!("{last}\n").into_bytes();
                }
                pending.drain(..pending.len().min(size as usize)).collect()
            }
            FileHandle::Text(node, cell, grows) => {
                let mut b = cell.lock().unwrap();
                if *grows && offset.saturating_add(size as u64) > b.len() as u64 {
                    // Append-only: a longer rendering that keeps what was read extends it.
                    let now = self.render(*node)?;
                    if now.len() > b.len() && now.starts_with(&b) {
                        *b = Arc::new(now);
                    }
                }
                slice(&b)
            }
            FileHandle::Segment(seg) => {
                let mut buf = vec![0u8; size as usize];
                let n = seg.read_at(&mut buf, offset)?;
                buf.truncate(n);
                buf
            }
        };
        self.counters.read_bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    pub fn release(&self, fh: Fh) {
        let h = self.files.lock().unwrap().remove(&fh);
        if let Some(h) = h {
            self.released(&h);
        }
    }
}
