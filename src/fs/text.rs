//! The generated text files: README, `stats` (see `stats`), `segments/<name>/info` and
//! `txns`, `transactions/<tid>/info`, and the snapshots that keep a reported size true.

use super::{esc, opt_tid, segments, zodb, Fs, FsError, FsResult, Node};
use crate::views::TxnView;
use crate::{SegmentInfo, SegmentState};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const README: &str = "\
This is a filestorage2 storage, mounted by `fs2 mount`.

head/              the latest committed state; head/at holds its tid
@<tid>/            the state as of a tid (also @2026-11-21T11:20:30Z); not listed, just cd there
history/<oid>/     every retained revision of an object, one file per tid (<tid>.deleted: a deletion)
transactions/<tid>/ one directory per retained transaction: info and the data it stored
segments/<name>/   one per segment file: <name>.fs2 (the file byte for byte) and info; not
                   listed: txns (one line per transaction) and <oid> (its newest record
                   there). `cp -a segments/<name> BACKUP/` archives a segment.
archive/<name>/    the same for merged-away segments (fs2 archive prune deletes them)
stats              counters
txn/               transactions being built (writable mounts only):
  mkdir txn/T; echo data > txn/T/<oid>; rm txn/T/<oid>; echo commit > txn/T/ctl
  cat txn/T/ctl (open|voted|committed <tid>|aborted|conflict <oid> <tid>|error ...)
  txn/T/info takes lines: user NAME, description TEXT, extension TEXT;
  cat txn/T/new-oid hands out a fresh oid; rmdir txn/T aborts (or removes an ended one)
merge              echo all|policy [K]|<segment names> [--append source-end|target-end] > merge
gc                 echo dry-run|run > gc: ZODB garbage collection (as fs2 gc); cat gc: the result
classes/           (not listed here; ls classes/) live objects by ZODB class as of head:
                   classes/index has count-bytes-class lines, classes/<module.Class>/<oid>
refs/<oid>         (not listed) the persistent references of head/<oid>, one oid per line
referrers/<oid>    (not listed) the head objects referring to <oid> (a scan of every object)

Names are 16 lowercase hex digits. Times are commit times. To pin one snapshot in a
script: T=$(cat head/at); ls @$T/
Everything outside txn/ and merge is read-only (EROFS).
";

/// How long a rendered text file's snapshot serves opens after its size was reported
/// (longer than the attribute TTL, so that `stat` then `open` see the same bytes).
pub(super) const SNAPSHOT_KEEP: Duration = Duration::from_secs(2);

/// A rendered text file and when it was rendered.
pub(super) type Snapshot = (Arc<Vec<u8>>, Instant);

impl Fs {
    /// The text of a generated file as of now.
    pub(super) fn render(&self, node: Node) -> FsResult<Vec<u8>> {
        Ok(match node {
            Node::Stats => self.render_stats()?.into_bytes(),
            Node::SegInfo(n) => {
                let b = self.storage.segment_bytes(n)?;
                (render_seg_info(&self.seg_info(n)?) + &segments::copy_lines(&b)?).into_bytes()
            }
            Node::ArchInfo(n) => self.archived_info(n)?.into_bytes(),
            Node::ClassIndex => {
                let v = self.class_view()?;
                v.index_text(&self.zviews.names.lock().unwrap()).into_bytes()
            }
            Node::Referrers(o) => zodb::referrers_text(&self.storage, o, self.shown_tid())?.into_bytes(),
            Node::SegTxns(n) => {
                let mut out = String::new();
                for x in self.storage.segment_txn_summaries(n)? {
                    // A damaged transaction (fault containment) is left out.
                    let x = match x {
                        Ok(x) => x,
                        Err(e) if e.is_corruption() => {
                            log::error!("{n}/txns: not listed: {e}");
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    out.push_str(&format!("{} {} {}\n", x.tid, x.objects, x.bytes));
                }
                out.into_bytes()
            }
            _ => return Err(FsError::new(libc::EINVAL, format!("{node} is not a generated text file"))),
        })
    }

    /// Render `node` now and keep it for the next open (its size is about to be reported).
    pub(super) fn snapshot(&self, node: Node) -> FsResult<Arc<Vec<u8>>> {
        let b = Arc::new(self.render(node)?);
        let mut snaps = self.snapshots.lock().unwrap();
        snaps.retain(|_, (_, at)| at.elapsed() < SNAPSHOT_KEEP);
        snaps.insert(node, (b.clone(), Instant::now()));
        Ok(b)
    }
}

pub(super) fn render_txn_info(t: &TxnView) -> String {
    format!(
        "tid: {}\ntime: {}\nuser: {}\ndescription: {}\nextension: {}\nobjects: {}\nbytes: {}\nsegment: {}\n",
        t.tid,
        t.tid.iso8601(),
        esc(&t.meta.user),
        esc(&t.meta.description),
        esc(&t.meta.extension),
        t.records.len(),
        t.bytes,
        t.segment
    )
}

pub(super) fn render_seg_info(i: &SegmentInfo) -> String {
    let state = match i.state {
        SegmentState::Active => "active",
        SegmentState::Past => "past",
    };
    let mut out = format!(
        "name: {}\nstate: {state}\nprevious: {}\nfirst_tid: {}\nlast_tid: {}\nbytes: {}\ntransactions: {}\n\
         records: {}\npath: {}\n",
        i.name,
        i.prev.as_deref().unwrap_or("-"),
        opt_tid(i.first_tid),
        opt_tid(i.last_tid),
        i.bytes,
        i.transactions,
        i.records,
        i.path.display()
    );
    // What an append merge put behind this segment's own data, newest data first.
    for a in &i.appended {
        let as_of = match a.as_of {
            crate::types::AsOf::Source => "source-end",
            crate::types::AsOf::Target => "target-end",
        };
        out.push_str(&format!(
            "appended: {} as of {as_of}, tids {}..{}, {} transactions, {} records\n",
            a.source,
            opt_tid(a.first_tid),
            opt_tid(a.last_tid),
            a.transactions,
            a.records
        ));
    }
    out
}
