//! `segments/<name>/` and `archive/<name>/`: one directory per segment file, the unit
//! of archiving. A copy of one (`cp -a`, `tar`, `rsync -a`) is the segment file under
//! its own name and a small `info`; the records (`segments/<name>/<oid>`) and `txns` are
//! lookup-only, so a tree walk never copies the segment's objects again. `archive/` shows
//! the merged-away segments in the storage's `archive/` directory the same way, so that
//! they can be copied before `fs2 archive prune` deletes them.

use super::readdir::Emit;
use super::{no_such, opt_tid, Fs, FsResult, Meta, Node};
use crate::backup::data_crc32c;
use crate::format::Header;
use crate::segment::{PastSegment, SegmentFile};
use crate::types::{SegmentName, Tid};
use crate::vfs::RealVfs;
use crate::views::SegmentBytes;
use crate::SegmentState;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex};

/// Data checksums computed, by file and sealed length (the bytes they cover never
/// change), so that `stat` of an `info` reads a large segment once. Locked with
/// `lock().unwrap()`: a poisoned lock means a thread panicked mid-update.
static CRCS: LazyLock<Mutex<HashMap<(PathBuf, u64), u32>>> = LazyLock::new(Default::default);

/// The `info` lines a copy needs besides the chain's view: storage id, sealed length
/// and the data checksum (`-` for the active segment, which grows).
pub(super) fn copy_lines(b: &SegmentBytes) -> FsResult<String> {
    let mut header = vec![0u8; crate::format::HEADER_SIZE];
    b.read_at(&mut header, 0)?;
    let h = Header::from_bytes(&header, &b.path)?;
    let (sealed, crc) = match b.state {
        SegmentState::Active => ("-".to_string(), "-".to_string()),
        SegmentState::Past => {
            let len = b.file_len()?;
            let key = (b.path.clone(), len);
            let cached = CRCS.lock().unwrap().get(&key).copied();
            let crc = match cached {
                Some(c) => c,
                None => {
                    let c = data_crc32c(|buf, off| b.read_at(buf, off), len)?;
                    CRCS.lock().unwrap().insert(key, c);
                    c
                }
            };
            (len.to_string(), format!("{crc:08x}"))
        }
    };
    Ok(format!("storage_id: {:032x}\nsealed_length: {sealed}\ndata_crc32c: {crc}\n", h.storage_id))
}

impl Fs {
    fn archive_path(&self, n: SegmentName) -> PathBuf {
        self.storage.dir().join("archive").join(n.file_name())
    }

    /// A merged-away segment in the archive directory.
    pub(super) fn archived(&self, n: SegmentName) -> FsResult<SegmentBytes> {
        let path = self.archive_path(n);
        if !path.exists() {
            return Err(no_such(format!("archive/{n}: not in the archive (ls archive/)")));
        }
        Ok(SegmentBytes::open_sealed(&RealVfs, &path)?)
    }

    /// The archived segments, oldest first.
    fn archived_names(&self) -> Vec<SegmentName> {
        let dir = self.storage.dir().join("archive");
        let mut names: Vec<SegmentName> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| SegmentName::from_file_name(e.ok()?.file_name().to_str()?)).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// An archived segment's trailers (tid range and counts, over its regions).
    fn archived_parts(&self, n: SegmentName) -> FsResult<Vec<std::sync::Arc<PastSegment>>> {
        Ok(PastSegment::open(SegmentFile::open(&RealVfs, &self.archive_path(n), false)?)?)
    }

    pub(super) fn archived_info(&self, n: SegmentName) -> FsResult<String> {
        let b = self.archived(n)?;
        let parts = self.archived_parts(n)?;
        let with_txns = || parts.iter().map(|p| &p.trailer).filter(|t| t.txn_count > 0);
        let prev = parts.first().and_then(|p| p.seg.prev());
        Ok(format!(
            "name: {n}\nstate: archived\nprevious: {}\nfirst_tid: {}\nlast_tid: {}\nbytes: {}\ntransactions: {}\n\
             records: {}\npath: {}\n",
            prev.as_deref().unwrap_or("-"),
            opt_tid(with_txns().map(|t| t.first_tid).min()),
            opt_tid(with_txns().map(|t| t.last_tid).max()),
            b.file_len()?,
            parts.iter().map(|p| p.trailer.txn_count).sum::<u64>(),
            parts.iter().map(|p| p.trailer.record_count).sum::<u64>(),
            b.path.display()
        ) + &copy_lines(&b)?)
    }

    pub(super) fn resolve_archive(&self, parent: Node, name: &str) -> FsResult<Node> {
        match parent {
            Node::ArchiveDir => {
                let n = super::node::parse_segment(name).ok_or_else(|| no_such(name))?;
                self.archived(n)?;
                Ok(Node::ArchDir(n))
            }
            Node::ArchDir(n) if name == "info" => Ok(Node::ArchInfo(n)),
            Node::ArchDir(n) if name == n.file_name() || name == "data" => Ok(Node::ArchData(n)),
            _ => Err(no_such(format!("{parent}/{name}"))),
        }
    }

    pub(super) fn archive_meta(&self, node: Node) -> FsResult<Meta> {
        let last = |n| -> FsResult<Tid> {
            Ok(self
                .archived_parts(n)?
                .iter()
                .filter(|p| p.trailer.txn_count > 0)
                .map(|p| p.trailer.last_tid)
                .max()
                .unwrap_or(Tid::ZERO))
        };
        Ok(match node {
            Node::ArchDir(n) => Meta { size: 0, tid: last(n)? },
            Node::ArchInfo(n) => Meta { size: self.snapshot(node)?.len() as u64, tid: last(n)? },
            Node::ArchData(n) => Meta { size: self.archived(n)?.file_len()?, tid: last(n)? },
            _ => Meta { size: 0, tid: self.storage.last_tid() },
        })
    }

    /// The listed entries of `segments/<name>/` (its file), `archive/` (the archived
    /// segments) and `archive/<name>/` (its file), after the fixed ones.
    pub(super) fn readdir_segments(&self, node: Node, start_key: u64, e: &mut Emit<'_>) -> FsResult<()> {
        match node {
            Node::SegDir(n) | Node::ArchDir(n) if start_key == 0 => {
                let data = if matches!(node, Node::SegDir(_)) { Node::SegData(n) } else { Node::ArchData(n) };
                e.keyed(0, n.file_name(), data, || self.meta(data))?;
            }
            Node::ArchiveDir => {
                // Keyed by position: names sort oldest first, and only a prune removes one.
                for (i, n) in self.archived_names().into_iter().enumerate().skip(start_key as usize) {
                    if !e.keyed(i as u64, n.to_string(), Node::ArchDir(n), || self.meta(Node::ArchDir(n)))? {
                        break;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
