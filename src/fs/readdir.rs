//! Directory listings: fixed entries first, then keyed entries (oid or tid) streamed in
//! key order with stable cookies (see [`RESERVED`]).

use super::names::rev_node;
use super::node::rev_name;
use super::stats::Op;
use super::{DirEntry, Entry, Fh, Fs, FsError, FsResult, Ino, Kind, Meta, Node, TxnNo, RESERVED, SHORT_TTL};
use crate::views::{RevStat, TxnSummaries, TxnSummary};
use crate::{Listed, Oid, Tid};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// An open directory. Listing `transactions/` scans segments: the handle keeps the scan
/// so that consecutive readdir calls continue it instead of starting over.
pub(super) struct DirHandle {
    node: Node,
    txns: Mutex<Option<TxnCursor>>,
}

pub(super) struct TxnCursor {
    /// The offset the next readdir call passes if it continues this scan.
    next_offset: u64,
    iter: TxnSummaries,
    /// The summary the last call could not fit.
    pending: Option<TxnSummary>,
}

impl Fs {
    pub fn opendir(&self, ino: Ino) -> FsResult<Fh> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(FsError::new(libc::ENOTDIR, format!("{node} is not a directory")));
        }
        let fh = Fh(self.next_fh.fetch_add(1, Ordering::Relaxed));
        self.dirs.lock().unwrap().insert(fh, Arc::new(DirHandle { node, txns: Mutex::new(None) }));
        Ok(fh)
    }

    pub fn releasedir(&self, fh: Fh) {
        self.dirs.lock().unwrap().remove(&fh);
    }

    /// Offer the entries of directory `ino` after `offset` to `add`, in order, until
    /// `add` returns true (buffer full; that entry was not taken). With `plus`, each
    /// taken entry (except `.` and `..`) carries its attributes and counts as a lookup.
    pub fn readdir(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(&DirEntry) -> bool,
    ) -> FsResult<()> {
        let _t = self.timer(Op::Readdir);
        let dir = self.dirs.lock().unwrap().get(&fh).cloned();
        let dir = match dir {
            Some(d) => d,
            None => Arc::new(DirHandle { node: self.node(ino)?, txns: Mutex::new(None) }),
        };
        let node = dir.node;
        let mut e = Emit { fs: self, dir: node, ino, plus, add };
        let fixed: &[&str] = match node {
            // classes/ and refs/ are lookup-only here: tree walks never enter them.
            Node::Root if self.opts.read_only => {
                &[".", "..", "README", "archive", "gc", "head", "history", "merge", "segments", "stats", "transactions"]
            }
            Node::Root => &[
                ".",
                "..",
                "README",
                "archive",
                "gc",
                "head",
                "history",
                "merge",
                "segments",
                "stats",
                "transactions",
                "txn",
            ],
            Node::ClassesDir => &[".", "..", "at", "index"],
            Node::TxnArea => &[".", "..", "new"],
            Node::WTxn(_) => &[".", "..", "ctl", "info", "new-oid"],
            // head/watch is lookup-only: a tree walk (`cp -r`, `grep -r`) must not block on it.
            Node::HeadDir | Node::AtDir(_) => &[".", "..", "at"],
            Node::TxnDir(_) => &[".", "..", "info"],
            // The records (`segments/<name>/<oid>`) are lookup-only: a copy of the
            // directory is the segment file and two small texts (see fs/segments.rs).
            Node::SegDir(_) | Node::ArchDir(_) => &[".", "..", "info"],
            _ => &[".", ".."],
        };
        // Fixed entries first: cookie i + 1.
        let mut start_key = 0u64;
        if offset <= RESERVED {
            for (i, name) in fixed.iter().enumerate().skip(offset as usize) {
                let cookie = i as u64 + 1;
                let ok = match *name {
                    "." | ".." => e.offer_dot(cookie, name),
                    _ => {
                        let (child, meta) = self.resolve(node, name)?;
                        e.offer(cookie, name.to_string(), child, || Ok(meta))?
                    }
                };
                if !ok {
                    return Ok(());
                }
            }
        } else {
            start_key = offset - RESERVED;
        }
        let s = &self.storage;
        match node {
            Node::HeadDir | Node::AtDir(_) => {
                let at = if let Node::AtDir(t) = node { t } else { Tid::MAX };
                for o in s.objects(Oid(start_key), at) {
                    let o = match o? {
                        Listed::Live(o) => o,
                        // Left out (looking it up answers EIO).
                        Listed::Damaged(oid, e) => {
                            log::error!("{oid}: not listed: {e}");
                            continue;
                        }
                    };
                    let meta = Meta { size: o.size, tid: o.tid };
                    if !e.keyed(o.oid.0, o.oid.to_string(), Node::Rev(o.oid, o.tid), || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::HistoryDir => {
                for o in s.oids(Oid(start_key)) {
                    let o = o?;
                    let meta = || {
                        let tid = s.current_tid(o)?.unwrap_or(Tid::ZERO);
                        Ok(Meta { size: 0, tid })
                    };
                    if !e.keyed(o.0, o.to_string(), Node::HistoryOid(o), meta)? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::HistoryOid(o) => {
                // One object's retained revisions (bounded by what merging keeps).
                let mut h = s.history(o)?;
                h.reverse();
                for r in h.into_iter().filter(|r| r.tid.0 >= start_key) {
                    let st = RevStat { oid: o, tid: r.tid, size: r.size, deleted: r.deleted };
                    let (child, meta) = rev_node(&st);
                    if !e.keyed(r.tid.0, rev_name(r.tid.0, r.deleted), child, || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::TxnsDir => {
                let mut cur = dir.txns.lock().unwrap();
                let resume = matches!(&*cur, Some(c) if c.next_offset == offset);
                if !resume {
                    *cur =
                        Some(TxnCursor { next_offset: offset, iter: s.txn_summaries(Tid(start_key)), pending: None });
                }
                let c = cur.as_mut().expect("set above");
                loop {
                    let x = match c.pending.take() {
                        Some(x) => x,
                        None => match c.iter.next() {
                            Some(Ok(x)) => x,
                            // A damaged transaction (fault containment) is left out.
                            Some(Err(e)) if e.is_corruption() => {
                                log::error!("transactions/: not listed: {e}");
                                continue;
                            }
                            Some(Err(e)) => return Err(e.into()),
                            None => return Ok(()),
                        },
                    };
                    let meta = Meta { size: 0, tid: x.tid };
                    if !e.keyed(x.tid.0, x.tid.to_string(), Node::TxnDir(x.tid), || Ok(meta))? {
                        c.pending = Some(x);
                        return Ok(());
                    }
                    c.next_offset = x.tid.0.saturating_add(RESERVED + 1);
                }
            }
            Node::TxnDir(t) => {
                let txn = self.txn(t)?;
                let mut recs: Vec<&RevStat> = txn.records.iter().filter(|r| r.oid.0 >= start_key).collect();
                recs.sort_by_key(|r| r.oid);
                for r in recs {
                    let (child, meta) = rev_node(r);
                    if !e.keyed(r.oid.0, rev_name(r.oid.0, r.deleted), child, || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::SegmentsDir => {
                for i in s.segments()?.into_iter().filter(|i| i.name.first >= start_key) {
                    let meta = Meta { size: 0, tid: i.last_tid.unwrap_or(Tid::ZERO) };
                    if !e.keyed(i.name.first, i.name.to_string(), Node::SegDir(i.name), || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::SegDir(_) | Node::ArchiveDir | Node::ArchDir(_) => self.readdir_segments(node, start_key, &mut e),
            Node::TxnArea => {
                let names: Vec<(String, TxnNo)> =
                    self.wtxns.lock().unwrap().by_name.iter().map(|(k, v)| (k.clone(), *v)).collect();
                // Cookies by position: a name made or removed during a listing may shift it.
                for (i, (name, no)) in names.into_iter().enumerate().skip(start_key as usize) {
                    if !e.keyed(i as u64, name, Node::WTxn(no), || Ok(Meta { size: 0, tid: s.last_tid() }))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::ClassesDir => {
                let v = self.class_view()?;
                let names: Vec<(u32, String)> = {
                    let n = self.zviews.names.lock().unwrap();
                    v.classes
                        .iter()
                        .filter(|c| c.id as u64 >= start_key)
                        .map(|c| (c.id, n.name(c.id).unwrap_or("?").to_string()))
                        .collect()
                };
                for (id, name) in names {
                    let c = v.class(id).expect("listed from the view");
                    let meta = Meta { size: c.count, tid: v.tid };
                    if !e.keyed(id as u64, name, Node::ClassDir(id), || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::ClassDir(id) => {
                let v = self.class_view()?;
                let c = v.class(id).ok_or_else(|| self.gone_class(id, v.tid))?;
                for m in v.members(c, start_key) {
                    let meta = Meta { size: m.size, tid: m.tid };
                    if !e.keyed(m.oid.0, m.oid.to_string(), Node::Rev(m.oid, m.tid), || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Node::WTxn(n) => {
                let t = self.wtxn(n)?;
                for (o, size) in t.staged_data().into_iter().filter(|(o, _)| o.0 >= start_key) {
                    let meta = Meta { size, tid: s.last_tid() };
                    if !e.keyed(o.0, o.to_string(), Node::WObj(n, o), || Ok(meta))? {
                        return Ok(());
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Feeds one readdir reply.
pub(super) struct Emit<'a> {
    fs: &'a Fs,
    dir: Node,
    ino: Ino,
    plus: bool,
    add: &'a mut dyn FnMut(&DirEntry) -> bool,
}

impl Emit<'_> {
    fn offer_dot(&mut self, cookie: u64, name: &str) -> bool {
        let ino = if name == "." { self.ino } else { Ino::ROOT };
        let entry = self.plus.then(|| {
            let attr = self.fs.attr(Node::Root, ino, Meta { size: 0, tid: Tid::ZERO });
            Entry { attr, attr_ttl: SHORT_TTL, entry_ttl: SHORT_TTL }
        });
        !(self.add)(&DirEntry { ino, cookie, name: name.to_string(), kind: Kind::Dir, entry })
    }

    /// Offer an entry; false when the buffer is full.
    fn offer(
        &mut self,
        cookie: u64,
        name: String,
        node: Node,
        meta: impl FnOnce() -> FsResult<Meta>,
    ) -> FsResult<bool> {
        let kind = if node.is_dir() { Kind::Dir } else { Kind::File };
        if !self.plus {
            // Plain readdir: d_ino is informational; unknown nodes get no inode.
            let ino = self.fs.inodes.lock().unwrap().peek(node).unwrap_or(Ino(u64::MAX));
            return Ok(!(self.add)(&DirEntry { ino, cookie, name, kind, entry: None }));
        }
        let meta = meta()?;
        let ino = self.fs.inodes.lock().unwrap().lookup(node);
        let entry = self.fs.entry(self.dir, node, ino, meta);
        let taken = !(self.add)(&DirEntry { ino, cookie, name, kind, entry: Some(entry) });
        if !taken {
            self.fs.forget(ino, 1);
        }
        Ok(taken)
    }

    /// Offer the entry with key `key` (cookie key + RESERVED + 1); false when full or
    /// when the key is too large to have a cookie (keys above u64::MAX - RESERVED - 1 are
    /// reachable by lookup only).
    pub(super) fn keyed(
        &mut self,
        key: u64,
        name: String,
        node: Node,
        meta: impl FnOnce() -> FsResult<Meta>,
    ) -> FsResult<bool> {
        match key.checked_add(RESERVED + 1) {
            Some(cookie) => self.offer(cookie, name, node, meta),
            None => Ok(false),
        }
    }
}
