//! The writable part of the tree: `txn/` (see `txn`) and `merge`. Operations that block
//! (vote, commit, merge) are returned as a [`Job`] for the adapter to run on a worker
//! thread, so that only the caller waits and the session keeps serving other requests.

use super::node::{parse_hex, parse_segment};
use super::txn::{parse_command, valid_txn_name, Command, MountTxn, TxnNo};
use super::{no_such, Entry, Fh, FileHandle, Fs, FsError, FsResult, Meta, Node, Opened};
use crate::merge::{Policy, Strategy};
use crate::types::AsOf;
use crate::{Oid, SegmentName, Storage};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// How a file is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenMode {
    pub write: bool,
    /// O_TRUNC (the kernel passes it on open: FUSE_ATOMIC_O_TRUNC).
    pub truncate: bool,
    /// O_APPEND: writes go to the end whatever offset the kernel passes.
    pub append: bool,
}

/// A blocking part of a write, to run off the session threads; its result is the
/// write's.
pub type Job = Box<dyn FnOnce() -> FsResult<u32> + Send>;

/// What a write did, or the job that finishes it.
pub enum WriteDone {
    Now(u32),
    Later(Job),
}

/// Where writes to a control file go.
#[derive(Clone)]
pub(super) enum Control {
    Ctl(Arc<MountTxn>),
    Info(Arc<MountTxn>),
    /// The clone file's descriptor: its transaction ends when it is closed.
    Clone(Arc<MountTxn>),
    Merge,
    Gc,
}

/// The last merge's result line, and names that vanished without a request the kernel
/// saw (merged-away segments, clone transactions): the notifier drops them from the
/// kernel's cache.
#[derive(Default)]
pub(super) struct MergeState {
    last: Mutex<Option<String>>,
    vanished: Mutex<Vec<SegmentName>>,
    gone: Mutex<Vec<(Node, String)>>,
}

/// A merge command written to `merge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeCmd {
    pub policy: Policy,
    pub strategy: Strategy,
}

/// Default of `policy` without a number: keep at most this many past segments.
pub const DEFAULT_KEEP: usize = 4;

fn einval(m: String) -> FsError {
    FsError::new(libc::EINVAL, m)
}

/// `all` | `policy [K]` | `<segment> <segment>...`, then optionally
/// `--append source-end|target-end`.
pub fn parse_merge(data: &[u8]) -> FsResult<MergeCmd> {
    const HOW: &str = "write \"all\", \"policy [K]\" or segment names, optionally followed by \
                       \"--append source-end\" or \"--append target-end\"";
    let text = std::str::from_utf8(data).map_err(|_| einval(format!("merge: not text; {HOW}")))?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let (words, strategy) = match words.iter().position(|w| *w == "--append") {
        Some(i) => {
            let as_of = match words.get(i + 1..) {
                Some(["source-end"]) => AsOf::Source,
                Some(["target-end"]) => AsOf::Target,
                _ => return Err(einval(format!("merge: --append takes source-end or target-end; {HOW}"))),
            };
            (&words[..i], Strategy::Append(as_of))
        }
        None => (&words[..], Strategy::Copy),
    };
    let policy = match words {
        ["all"] => Policy::All,
        ["policy"] => Policy::KeepAtMost(DEFAULT_KEEP),
        ["policy", k] => Policy::KeepAtMost(k.parse().map_err(|_| einval(format!("merge: policy {k}: {HOW}")))?),
        [] => return Err(einval(format!("merge: empty command; {HOW}"))),
        names => Policy::Named(
            names
                .iter()
                .map(|n| parse_segment(n).ok_or_else(|| einval(format!("merge: unknown command {n:?}; {HOW}"))))
                .collect::<FsResult<_>>()?,
        ),
    };
    Ok(MergeCmd { policy, strategy })
}

fn merge_job(storage: Storage, state: Arc<MergeState>, cmd: MergeCmd, len: u32) -> FsResult<u32> {
    if let Policy::Named(names) = &cmd.policy {
        let chain = storage.segments()?;
        if let Some(n) = names.iter().find(|n| !chain.iter().any(|s| s.name == **n)) {
            return Err(FsError::not_found(format!("merge: {n} is not in the chain; ls segments/")));
        }
    }
    let result = match storage.start_merge_with(&cmd.policy, cmd.strategy) {
        Ok(None) => Ok("nothing to merge".to_string()),
        Ok(Some(h)) => h.wait().map(|r| {
            let names: Vec<String> = r.inputs.iter().map(|n| n.to_string()).collect();
            state.vanished.lock().unwrap().extend(r.inputs.iter().filter(|n| **n != r.output));
            format!("merged {} into {} in {:.3}s", names.join(" "), r.output, r.seconds)
        }),
        Err(e) => Err(e),
    };
    // A refused start (another merge runs) leaves the last result as it was.
    match result {
        Ok(line) => {
            *state.last.lock().unwrap() = Some(line);
            Ok(len)
        }
        Err(crate::Error::Busy(m)) => Err(FsError::new(libc::EBUSY, format!("merge: {m}; cat merge shows it"))),
        Err(e) => {
            *state.last.lock().unwrap() = Some(format!("error {}", e.to_string().replace('\n', " ")));
            Err(e.into())
        }
    }
}

fn eperm(m: String) -> FsError {
    FsError::new(libc::EPERM, m)
}

impl Fs {
    pub(super) fn wtxn(&self, no: TxnNo) -> FsResult<Arc<MountTxn>> {
        let t = self.wtxns.lock().unwrap().by_no.get(&no).cloned();
        t.ok_or_else(|| FsError::not_found(format!("transaction #{} is gone (rmdir'd or its clone fd closed)", no.0)))
    }

    /// Names inside `txn/` and `txn/<name>/`.
    pub(super) fn resolve_txn(&self, parent: Node, name: &str) -> FsResult<(Node, Meta)> {
        let child = match parent {
            Node::TxnArea if name == "new" => Node::TxnClone(self.next_fh.fetch_add(1, Ordering::Relaxed)),
            Node::TxnArea => {
                let no = self.wtxns.lock().unwrap().by_name.get(name).copied();
                Node::WTxn(no.ok_or_else(|| FsError::not_found(format!("txn/{name}: no such transaction")))?)
            }
            Node::WTxn(n) => match name {
                "ctl" => Node::WCtl(n),
                "info" => Node::WInfo(n),
                "new-oid" => Node::WNewOid(n),
                _ => Node::WObj(n, Oid(parse_hex(name).ok_or_else(|| no_such(name))?)),
            },
            _ => unreachable!("resolve_txn is called for txn/ directories"),
        };
        Ok((child, self.meta(child)?))
    }

    /// The handle of a writable node's file; `None` for the other nodes.
    pub(super) fn open_writable(&self, node: Node, mode: OpenMode) -> FsResult<Option<FileHandle>> {
        let s = &self.storage;
        Ok(Some(match node {
            Node::WObj(n, oid) => {
                let t = self.wtxn(n)?;
                if mode.write || mode.truncate {
                    t.stage(s, oid, mode.truncate)?;
                } else if t.stat(s, oid)?.is_none() {
                    return Err(no_such(node));
                }
                FileHandle::Obj(t, oid, mode.append)
            }
            Node::WCtl(n) => {
                let t = self.wtxn(n)?;
                let text = t.status_line().into_bytes();
                FileHandle::Control(Control::Ctl(t), text)
            }
            Node::WInfo(n) => {
                let t = self.wtxn(n)?;
                let text = t.info_text().into_bytes();
                FileHandle::Control(Control::Info(t), text)
            }
            // A fresh oid per open: never handed out again by this storage.
            Node::WNewOid(n) => {
                self.wtxn(n)?;
                FileHandle::Bytes(format!("{}\n", s.new_oid()?).into_bytes())
            }
            Node::TxnClone(_) => {
                let t = self.begin_txn(None)?;
                let text = format!("{}\n", t.name).into_bytes();
                FileHandle::Control(Control::Clone(t), text)
            }
            Node::Merge(_) => FileHandle::Control(Control::Merge, self.merge_text().into_bytes()),
            Node::Gc(_) => FileHandle::Control(Control::Gc, self.gc.text().into_bytes()),
            _ => return Ok(None),
        }))
    }

    /// Begin a transaction named `name`, or (clone file) the smallest free number.
    fn begin_txn(&self, name: Option<&str>) -> FsResult<Arc<MountTxn>> {
        let staging = self.staging.as_ref().ok_or_else(|| {
            FsError::new(libc::EROFS, "this mount is read-only (--read-only): no transactions".to_string())
        })?;
        let clone = name.is_none();
        let mut w = self.wtxns.lock().unwrap();
        let no = TxnNo(w.next);
        let name = match name {
            Some(n) if w.by_name.contains_key(n) => {
                return Err(FsError::new(libc::EEXIST, format!("txn/{n} exists; pick another name or rmdir it")))
            }
            Some(n) => n.to_string(),
            None => (no.0..).map(|i| i.to_string()).find(|n| !w.by_name.contains_key(n)).expect("a free number"),
        };
        // The base is what `head/` shows now, never newer: a commit published but not yet
        // shown may still have stale names in the kernel, and this transaction's reads of
        // them must be covered by its conflict check.
        let base = Some(self.shown_tid());
        let t = Arc::new(MountTxn::begin(
            &self.storage,
            base,
            staging,
            no,
            name.clone(),
            clone,
            self.opts.max_object_size,
        )?);
        w.next += 1;
        w.by_name.insert(name, no);
        w.by_no.insert(no, t.clone());
        Ok(t)
    }

    fn remove_txn(&self, t: &MountTxn) {
        let mut w = self.wtxns.lock().unwrap();
        if w.by_name.get(&t.name) == Some(&t.no) {
            w.by_name.remove(&t.name);
        }
        w.by_no.remove(&t.no);
    }

    /// A file handle was closed: closing the clone file ends its transaction.
    pub(super) fn released(&self, h: &FileHandle) {
        if let FileHandle::Control(Control::Clone(t), _) = h {
            t.discard();
            self.remove_txn(t);
            self.merge.gone.lock().unwrap().push((Node::TxnArea, t.name.clone()));
        }
    }

    /// Write `data` at `offset` to the open file `fh`.
    pub fn write(&self, fh: Fh, offset: u64, data: &[u8]) -> FsResult<WriteDone> {
        let h = self.files.lock().unwrap().get(&fh).cloned();
        let h = h.ok_or_else(|| FsError::new(libc::EBADF, format!("file handle {fh} is not open")))?;
        let len = data.len() as u32;
        match &*h {
            FileHandle::Obj(t, oid, append) => Ok(WriteDone::Now(t.write(*oid, offset, data, *append)?)),
            FileHandle::Control(Control::Ctl(t) | Control::Clone(t), _) => {
                let t = t.clone();
                match parse_command(data)? {
                    Command::Abort => t.abort().map(|_| WriteDone::Now(len)),
                    // Read-your-writes: answer once every process sees the commit in head/.
                    Command::Commit => {
                        let shown = self.shown.clone();
                        Ok(WriteDone::Later(Box::new(move || {
                            let tid = t.commit()?;
                            shown.wait(tid);
                            Ok(len)
                        })))
                    }
                    Command::Vote => {
                        let timeout = self.opts.vote_timeout;
                        Ok(WriteDone::Later(Box::new(move || {
                            let vote = t.vote()?;
                            let waiter = t.clone();
                            std::thread::Builder::new()
                                .name("fs2-vote-timeout".into())
                                .spawn(move || waiter.expire_vote(vote, timeout))
                                .map_err(|e| FsError::new(libc::EAGAIN, format!("vote timeout thread: {e}")))?;
                            Ok(len)
                        })))
                    }
                }
            }
            FileHandle::Control(Control::Info(t), _) => t.set_info(data).map(|_| WriteDone::Now(len)),
            FileHandle::Control(Control::Merge, _) => {
                if self.opts.read_only {
                    return Err(FsError::new(libc::EROFS, "merge refused: this mount is read-only (--read-only)"));
                }
                let cmd = parse_merge(data)?;
                if self.storage.merge_progress().is_some() {
                    return Err(FsError::new(libc::EBUSY, "merge: a merge is running; cat merge shows it"));
                }
                let (storage, state, shown) = (self.storage.clone(), self.merge.clone(), self.shown.clone());
                Ok(WriteDone::Later(Box::new(move || {
                    let r = merge_job(storage, state, cmd, len);
                    // The merge rewrote headers of segments the kernel may have cached.
                    shown.rewritten();
                    r
                })))
            }
            FileHandle::Control(Control::Gc, _) => {
                if self.opts.read_only {
                    return Err(FsError::new(libc::EROFS, "gc refused: this mount is read-only (--read-only)"));
                }
                let cmd = super::zodb::parse_gc(data)?;
                self.gc.claim()?;
                let (storage, gc, shown) = (self.storage.clone(), self.gc.clone(), self.shown.clone());
                Ok(WriteDone::Later(Box::new(move || {
                    // Read-your-writes: answer once head/ shows the deletions everywhere.
                    if let Some(tid) = gc.run(&storage, cmd)? {
                        shown.wait(tid);
                    }
                    Ok(len)
                })))
            }
            _ => Err(FsError::new(libc::EBADF, "this file is not open for writing")),
        }
    }

    /// `truncate`/`ftruncate`: staged objects get the length; status files accept
    /// truncation to zero (so `echo cmd > ctl` works even without atomic O_TRUNC).
    pub fn truncate(&self, ino: super::Ino, size: u64) -> FsResult<()> {
        let node = self.node(ino)?;
        match node {
            _ if self.opts.read_only => Err(super::refuse(super::Refusal::Write("truncate"), &node.to_string())),
            Node::WObj(n, oid) => self.wtxn(n)?.truncate(&self.storage, oid, size),
            Node::WCtl(_) | Node::WInfo(_) | Node::Merge(_) | Node::Gc(_) | Node::TxnClone(_) if size == 0 => Ok(()),
            _ => Err(super::refuse(super::Refusal::Write("truncate"), &node.to_string())),
        }
    }

    /// Whether `ino` may be opened for writing (for `access(W_OK)`).
    pub fn check_write(&self, ino: super::Ino) -> FsResult<()> {
        let node = self.node(ino)?;
        if node.is_writable() && !self.opts.read_only {
            return Ok(());
        }
        Err(super::refuse(super::Refusal::Write("write access to"), &node.to_string()))
    }

    /// `mkdir txn/NAME` begins a transaction.
    pub fn mkdir(&self, parent: super::Ino, name: &str) -> FsResult<Entry> {
        let pnode = self.node(parent)?;
        match pnode {
            Node::TxnArea if !valid_txn_name(name) => {
                Err(einval(format!("txn/{name}: transaction names are 1 to 64 of A-Z a-z 0-9 . _ - (and not \"new\")")))
            }
            Node::TxnArea => {
                self.begin_txn(Some(name))?;
                self.lookup(parent, name)
            }
            Node::WTxn(_) => Err(eperm(format!("mkdir {pnode}/{name}: a transaction holds files only"))),
            _ => Err(super::refuse(super::Refusal::Write("mkdir"), &format!("{pnode}/{name}"))),
        }
    }

    /// `rmdir txn/NAME` aborts the transaction (unless it has ended) and removes it.
    pub fn rmdir(&self, parent: super::Ino, name: &str) -> FsResult<()> {
        let pnode = self.node(parent)?;
        if pnode != Node::TxnArea {
            return Err(super::refuse(super::Refusal::Write("rmdir"), &format!("{pnode}/{name}")));
        }
        let (node, _) = self.resolve_txn(pnode, name)?;
        let Node::WTxn(no) = node else {
            return Err(FsError::new(libc::ENOTDIR, "txn/new is the clone file".to_string()));
        };
        let t = self.wtxn(no)?;
        if t.clone {
            return Err(FsError::new(libc::EBUSY, format!("txn/{name} ends when its clone descriptor is closed")));
        }
        t.discard();
        if !t.status().ended() {
            return Err(FsError::new(libc::EBUSY, format!("txn/{name}: a vote or commit is running")));
        }
        self.remove_txn(&t);
        Ok(())
    }

    /// Create `txn/NAME/<oid>` (staged empty); EEXIST with `excl` if it exists as of base.
    pub fn create(&self, parent: super::Ino, name: &str, excl: bool, append: bool) -> FsResult<(Entry, Opened)> {
        let pnode = self.node(parent)?;
        let Node::WTxn(n) = pnode else {
            return Err(super::refuse(super::Refusal::Write("create"), &format!("{pnode}/{name}")));
        };
        let t = self.wtxn(n)?;
        let oid = match parse_hex(name) {
            Some(o) => Oid(o),
            None if matches!(name, "ctl" | "info" | "new-oid") => {
                return Err(FsError::new(libc::EEXIST, format!("txn/{}/{name} exists", t.name)))
            }
            None => return Err(no_such(format!("txn/{}/{name}", t.name))),
        };
        t.create(&self.storage, oid, excl)?;
        let entry = self.lookup(parent, name)?;
        let opened = self.add_handle(FileHandle::Obj(t, oid, append), false);
        Ok((entry, opened))
    }

    /// `rm txn/NAME/<oid>` stages a deletion (or drops what was staged for a new oid).
    pub fn unlink(&self, parent: super::Ino, name: &str) -> FsResult<()> {
        let pnode = self.node(parent)?;
        let Node::WTxn(n) = pnode else {
            return Err(super::refuse(super::Refusal::Write("unlink"), &format!("{pnode}/{name}")));
        };
        let t = self.wtxn(n)?;
        match parse_hex(name) {
            Some(o) => t.unlink(&self.storage, Oid(o)),
            None if matches!(name, "ctl" | "info" | "new-oid") => {
                Err(eperm(format!("rm txn/{}/{name}: control files stay; rmdir txn/{} ends it", t.name, t.name)))
            }
            None => Err(no_such(format!("txn/{}/{name}", t.name))),
        }
    }

    /// What `cat merge` shows.
    pub(super) fn merge_text(&self) -> String {
        if let Some(p) = self.storage.merge_progress() {
            let names: Vec<String> = p.inputs.iter().map(|n| n.to_string()).collect();
            return format!("running {} {}%\n", names.join(" "), (p.fraction() * 100.0) as u32);
        }
        match &*self.merge.last.lock().unwrap() {
            Some(l) => format!("{l}\n"),
            None => "idle\n".into(),
        }
    }

    /// Segments merged away since the last call (the notifier drops their names from
    /// the kernel's cache).
    pub fn take_vanished(&self) -> Vec<SegmentName> {
        std::mem::take(&mut *self.merge.vanished.lock().unwrap())
    }

    /// Names to drop from the kernel's cache, by parent inode: merged-away segments and
    /// ended clone transactions (only those whose directory the kernel knows).
    pub fn take_stale_names(&self) -> Vec<(super::Ino, String)> {
        let mut names: Vec<(Node, String)> = std::mem::take(&mut *self.merge.gone.lock().unwrap());
        names.extend(self.take_vanished().into_iter().map(|n| (Node::SegmentsDir, n.to_string())));
        let inodes = self.inodes.lock().unwrap();
        names.into_iter().filter_map(|(parent, name)| Some((inodes.peek(parent)?, name))).collect()
    }

    /// Unmount: abort every open transaction and remove the staging directory.
    pub fn shutdown(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.shown.cv.notify_all();
        let all: Vec<Arc<MountTxn>> = self.wtxns.lock().unwrap().by_no.drain().map(|(_, t)| t).collect();
        self.wtxns.lock().unwrap().by_name.clear();
        for t in all {
            if !t.status().ended() {
                log::info!("unmount: txn/{} aborted", t.name);
            }
            t.discard();
        }
        if let Some(s) = &self.staging {
            let _ = std::fs::remove_dir_all(&s.dir);
        }
    }
}
