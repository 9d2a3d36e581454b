//! Name resolution: what a name in a directory stands for, its attributes, and how long
//! the kernel may cache them.

use super::node::{parse_at, parse_hex, parse_hex_maybe_deleted, parse_segment};
use super::stats::Op;
use super::text::render_txn_info;
use super::{
    no_such, tid_time, Attr, Entry, Fh, FileHandle, Fs, FsError, FsResult, Ino, Kind, Meta, Node, LONG_TTL, README,
    SHORT_TTL,
};
use crate::views::{RevStat, TxnView};
use crate::{Oid, SegmentInfo, SegmentName, Tid};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Transactions remembered after a lookup (each scan of a segment to find one is long).
const TXN_CACHE: usize = 64;
/// The size of a file holding one tid or oid (`head/at`, `new-oid`, ...): 16 hex digits
/// and a newline.
const HEX_LINE: u64 = 16 + 1;

impl Fs {
    /// Look `name` up in `parent`; counts one kernel lookup of the result.
    pub fn lookup(&self, parent: Ino, name: &str) -> FsResult<Entry> {
        let _t = self.timer(Op::Lookup);
        let pnode = self.node(parent)?;
        let (node, meta) = self.resolve(pnode, name)?;
        let ino = self.inodes.lock().unwrap().lookup(node);
        Ok(self.entry(pnode, node, ino, meta))
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.inodes.lock().unwrap().forget(ino, n);
    }

    pub(super) fn entry(&self, parent: Node, node: Node, ino: Ino, meta: Meta) -> Entry {
        // Names in head/ and in the chain's directories point at other nodes after a
        // commit, rotation or merge; elsewhere a name always means the same node.
        let entry_ttl = match parent {
            Node::HeadDir
            | Node::SegmentsDir
            | Node::SegDir(_)
            | Node::TxnArea
            | Node::WTxn(_)
            | Node::ClassesDir
            | Node::ClassDir(_)
            | Node::RefsDir
            | Node::ReferrersDir => SHORT_TTL,
            _ => LONG_TTL,
        };
        let entry_ttl = if node.is_per_lookup() { Duration::ZERO } else { entry_ttl };
        let attr_ttl = if node.is_immutable() { LONG_TTL } else { SHORT_TTL };
        Entry { attr: self.attr(node, ino, meta), attr_ttl, entry_ttl }
    }

    pub(super) fn attr(&self, node: Node, ino: Ino, meta: Meta) -> Attr {
        let writable = node.is_writable() && !self.opts.read_only;
        // The kernel checks these (default_permissions): everyone may read; only the
        // owner writes unless the mount lets others write.
        let (kind, perm, nlink) = match (node.is_dir(), writable, self.opts.others_write()) {
            (true, false, _) => (Kind::Dir, 0o555, 2),
            (true, true, false) => (Kind::Dir, 0o755, 2),
            (true, true, true) => (Kind::Dir, 0o777, 2),
            (false, false, _) => (Kind::File, 0o444, 1),
            (false, true, false) => (Kind::File, 0o644, 1),
            (false, true, true) => (Kind::File, 0o666, 1),
        };
        Attr {
            ino,
            kind,
            size: meta.size,
            mtime: tid_time(meta.tid, self.started),
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// The child `name` of `parent`, with its size and time.
    pub(super) fn resolve(&self, parent: Node, name: &str) -> FsResult<(Node, Meta)> {
        let s = &self.storage;
        let child = match parent {
            Node::Root => match name {
                "README" => Node::Readme,
                "head" => Node::HeadDir,
                "history" => Node::HistoryDir,
                "transactions" => Node::TxnsDir,
                "segments" => Node::SegmentsDir,
                "archive" => Node::ArchiveDir,
                "stats" => Node::Stats,
                "merge" => Node::Merge(self.next_fh.fetch_add(1, Ordering::Relaxed)),
                "gc" => Node::Gc(self.next_fh.fetch_add(1, Ordering::Relaxed)),
                "classes" => Node::ClassesDir,
                "refs" => Node::RefsDir,
                "referrers" => Node::ReferrersDir,
                "txn" if !self.opts.read_only => Node::TxnArea,
                _ => {
                    let t = parse_at(name).ok_or_else(|| no_such(name))?;
                    self.check_at(name, t)?;
                    Node::AtDir(t)
                }
            },
            Node::HeadDir | Node::AtDir(_) => {
                let at = if let Node::AtDir(t) = parent { t } else { Tid::MAX };
                if name == "at" {
                    return Ok(if at == Tid::MAX { Node::HeadAt } else { Node::AtAt(at) })
                        .and_then(|n| Ok((n, self.meta(n)?)));
                }
                if name == "watch" && at == Tid::MAX {
                    return Ok((Node::HeadWatch, self.meta(Node::HeadWatch)?));
                }
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                match s.stat_at(oid, at)? {
                    Some(r) if !r.deleted => return Ok((Node::Rev(oid, r.tid), Meta { size: r.size, tid: r.tid })),
                    _ => return Err(FsError::not_found(format!("{name}: no such object (in {parent})"))),
                }
            }
            Node::HistoryDir => {
                let oid = Oid(parse_hex(name).ok_or_else(|| no_such(name))?);
                let tid = s.current_tid(oid)?.ok_or_else(|| no_such(format!("history/{name}")))?;
                return Ok((Node::HistoryOid(oid), Meta { size: 0, tid }));
            }
            Node::HistoryOid(oid) => {
                let (t, deleted) = parse_hex_maybe_deleted(name).ok_or_else(|| no_such(name))?;
                match s.stat_at(oid, Tid(t))? {
                    Some(r) if r.tid == Tid(t) && r.deleted == deleted => return Ok(rev_node(&r)),
                    _ => return Err(no_such(format!("history/{oid}/{name}"))),
                }
            }
            Node::TxnsDir => {
                let t = Tid(parse_hex(name).ok_or_else(|| no_such(name))?);
                self.txn(t)?;
                Node::TxnDir(t)
            }
            Node::TxnDir(t) => {
                if name == "info" {
                    Node::TxnInfo(t)
                } else {
                    let (o, deleted) = parse_hex_maybe_deleted(name).ok_or_else(|| no_such(name))?;
                    let txn = self.txn(t)?;
                    let r = txn.records.iter().find(|r| r.oid == Oid(o) && r.deleted == deleted);
                    return r.map(rev_node).ok_or_else(|| no_such(format!("transactions/{t}/{name}")));
                }
            }
            Node::SegmentsDir => {
                let n = parse_segment(name).ok_or_else(|| no_such(name))?;
                self.seg_info(n)?;
                Node::SegDir(n)
            }
            Node::SegDir(n) => match name {
                "info" => Node::SegInfo(n),
                "txns" => Node::SegTxns(n),
                // The segment file under its own name (`data`: the old name, not listed).
                "data" => Node::SegData(n),
                _ if name == n.file_name() => Node::SegData(n),
                _ => {
                    let (o, deleted) = parse_hex_maybe_deleted(name).ok_or_else(|| no_such(name))?;
                    return match s.segment_record(n, Oid(o))? {
                        Some(r) if r.deleted == deleted => Ok(rev_node(&r)),
                        _ => Err(no_such(format!("segments/{n}/{name}"))),
                    };
                }
            },
            Node::ArchiveDir | Node::ArchDir(_) => self.resolve_archive(parent, name)?,
            Node::TxnArea | Node::WTxn(_) => return self.resolve_txn(parent, name),
            Node::ClassesDir | Node::ClassDir(_) | Node::RefsDir | Node::ReferrersDir => {
                return self.resolve_zodb(parent, name)
            }
            _ => return Err(FsError::new(libc::ENOTDIR, format!("{parent} is not a directory"))),
        };
        Ok((child, self.meta(child)?))
    }

    /// `@<tid>` must lie within the retained history: not older than the oldest retained
    /// transaction, not newer than head.
    pub(super) fn check_at(&self, name: &str, t: Tid) -> FsResult<()> {
        let s = &self.storage;
        let last = s.last_tid();
        // A merge keeps only the states at the ends of what it merged: states strictly
        // inside are gone.
        if let Some((_, end, seg)) = s.history_gaps()?.into_iter().find(|(lo, hi, _)| *lo < t && t < *hi) {
            return Err(FsError::not_found(format!(
                "{name}: that history was merged into {seg} (exact states from {end} on); see segments/"
            )));
        }
        match s.first_tid() {
            Some(first) if t >= first && t <= last => Ok(()),
            // A time (not a tid) after the last commit that has passed: head as of then
            // (a later commit gets a later tid, so this state never changes).
            Some(_) if t > last && t <= Tid::now() && parse_hex(&name[1..]).is_none() => Ok(()),
            Some(first) => Err(FsError::not_found(format!(
                "{name}: outside the retained history {first}..{last} (see head/at and transactions/)"
            ))),
            None => Err(FsError::not_found(format!("{name}: the storage has no transactions yet"))),
        }
    }

    pub(super) fn txn(&self, t: Tid) -> FsResult<Arc<TxnView>> {
        {
            let c = self.txns.lock().unwrap();
            if let Some(x) = c.iter().find(|x| x.tid == t) {
                self.counters.txn_cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(x.clone());
            }
        }
        self.counters.txn_cache_misses.fetch_add(1, Ordering::Relaxed);
        let x = Arc::new(self.storage.transaction(t)?.ok_or_else(|| no_such(format!("transactions/{t}")))?);
        let mut c = self.txns.lock().unwrap();
        if c.len() >= TXN_CACHE {
            c.pop_front();
        }
        c.push_back(x.clone());
        Ok(x)
    }

    pub(super) fn seg_info(&self, n: SegmentName) -> FsResult<SegmentInfo> {
        self.storage
            .segments()?
            .into_iter()
            .find(|s| s.name == n)
            .ok_or_else(|| FsError::not_found(format!("segments/{n}: not in the chain (merged away?); ls segments/")))
    }

    /// Size and time of `node` (errors if it has vanished, e.g. merged away).
    pub(super) fn meta(&self, node: Node) -> FsResult<Meta> {
        let s = &self.storage;
        let last = s.last_tid();
        let m = |size: u64, tid: Tid| Ok(Meta { size, tid });
        match node {
            Node::Root | Node::HeadDir | Node::HistoryDir | Node::TxnsDir | Node::SegmentsDir => m(0, last),
            Node::Stats => m(self.snapshot(node)?.len() as u64, last),
            Node::Readme => m(README.len() as u64, Tid::ZERO),
            Node::HeadAt => m(HEX_LINE, last),
            // A stream (like a pipe): no size.
            Node::HeadWatch => m(0, last),
            Node::AtDir(t) => m(0, t),
            Node::AtAt(t) => m(HEX_LINE, t),
            Node::Rev(o, t) | Node::Deleted(o, t) => match s.stat_at(o, t)? {
                Some(r) if r.tid == t && r.deleted == matches!(node, Node::Deleted(..)) => m(r.size, t),
                _ => Err(FsError::not_found(format!("revision {t} of {o} is no longer retained (merged away)"))),
            },
            Node::HistoryOid(o) => {
                m(0, s.current_tid(o)?.ok_or_else(|| no_such(format!("history/{o}: no retained revisions")))?)
            }
            Node::TxnDir(t) => self.txn(t).map(|_| Meta { size: 0, tid: t }),
            Node::TxnInfo(t) => m(render_txn_info(&*self.txn(t)?).len() as u64, t),
            Node::SegDir(n) => m(0, self.seg_info(n)?.last_tid.unwrap_or(Tid::ZERO)),
            Node::ArchiveDir | Node::ArchDir(_) | Node::ArchInfo(_) | Node::ArchData(_) => self.archive_meta(node),
            Node::SegTxns(n) | Node::SegInfo(n) => {
                let size = self.snapshot(node)?.len() as u64;
                m(size, self.seg_info(n)?.last_tid.unwrap_or(Tid::ZERO))
            }
            Node::SegData(n) => {
                let i = self.seg_info(n)?;
                m(s.segment_bytes(n)?.file_len()?, i.last_tid.unwrap_or(Tid::ZERO))
            }
            Node::TxnArea | Node::TxnClone(_) => m(0, last),
            Node::WNewOid(_) => m(HEX_LINE, last),
            Node::Merge(_) => m(self.merge_text().len() as u64, last),
            Node::Gc(_) => m(self.gc.text().len() as u64, last),
            Node::ClassesDir | Node::RefsDir | Node::ReferrersDir => m(0, last),
            Node::Referrers(_) => m(self.snapshot(node)?.len() as u64, last),
            Node::ClassesAt => m(HEX_LINE, self.shown_tid()),
            Node::ClassIndex => {
                let size = self.snapshot(node)?.len() as u64;
                m(size, self.shown_tid())
            }
            Node::ClassDir(id) => {
                let v = self.class_view()?;
                let c = v.class(id).ok_or_else(|| self.gone_class(id, v.tid))?;
                m(c.count, v.tid)
            }
            Node::Refs(o, t) => m(self.refs_text(o, t)?.len() as u64, t),
            Node::WTxn(n) => self.wtxn(n).map(|_| Meta { size: 0, tid: last }),
            Node::WCtl(n) => m(self.wtxn(n)?.status_line().len() as u64, last),
            Node::WInfo(n) => m(self.wtxn(n)?.info_text().len() as u64, last),
            Node::WObj(n, o) => match self.wtxn(n)?.stat(s, o)? {
                Some(size) => m(size, last),
                None => Err(no_such(format!("{node}"))),
            },
        }
    }

    /// Attributes of `ino` and how long they may be cached.
    pub fn getattr(&self, ino: Ino) -> FsResult<(Attr, Duration)> {
        self.getattr_open(ino, None)
    }

    /// Attributes of `ino`, asked through the open file `fh` if given: a segment
    /// merged away since the open has no name any more, but its open file still has
    /// its size (the kernel asks before reading at the end).
    pub fn getattr_open(&self, ino: Ino, fh: Option<Fh>) -> FsResult<(Attr, Duration)> {
        let _t = self.timer(Op::Getattr);
        let node = self.node(ino)?;
        let meta = self.meta(node).or_else(|e| {
            let h = fh.and_then(|fh| self.files.lock().unwrap().get(&fh).cloned());
            match h.as_deref() {
                Some(FileHandle::Segment(seg)) => Ok(Meta { size: seg.file_len()?, tid: Tid::ZERO }),
                _ => Err(e),
            }
        })?;
        let ttl = if node.is_immutable() { LONG_TTL } else { SHORT_TTL };
        Ok((self.attr(node, ino, meta), ttl))
    }
}

/// The node and meta of a retained record.
pub(super) fn rev_node(r: &RevStat) -> (Node, Meta) {
    let node = if r.deleted { Node::Deleted(r.oid, r.tid) } else { Node::Rev(r.oid, r.tid) };
    (node, Meta { size: if r.deleted { 0 } else { r.size }, tid: r.tid })
}
