//! The nodes of the mounted tree and the spelling of their names. A node is what an
//! inode stands for; the same node always gets the same inode while the kernel knows it.

use super::txn::TxnNo;
use crate::types::{parse_iso8601, Oid, SegmentName, Tid};

/// One node of the tree. Revision content (`head/<oid>`, `@<tid>/<oid>`,
/// `history/<oid>/<tid>`, `transactions/<tid>/<oid>`, `segments/<name>/<oid>`) is keyed
/// by (oid, tid) wherever it is reached, so a revision has one inode and its page cache
/// is shared. The writable nodes (`txn/` and `merge`) are keyed by the transaction's
/// number, never by its name (a name can be reused after `rmdir`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    Readme,
    Stats,
    HeadDir,
    HeadAt,
    /// `head/watch`: a read blocks until `head/` shows a newer commit, then gives its tid.
    HeadWatch,
    AtDir(Tid),
    AtAt(Tid),
    /// The data `tid` stored for `oid` (immutable).
    Rev(Oid, Tid),
    /// The deletion of `oid` by `tid`: an empty file named `<tid>.deleted` / `<oid>.deleted`.
    Deleted(Oid, Tid),
    HistoryDir,
    HistoryOid(Oid),
    TxnsDir,
    TxnDir(Tid),
    TxnInfo(Tid),
    SegmentsDir,
    SegDir(SegmentName),
    SegInfo(SegmentName),
    SegTxns(SegmentName),
    /// `segments/<name>/<name>.fs2` (also found as `data`, not listed).
    SegData(SegmentName),
    /// `archive/`: the merged-away segments in the storage's archive directory, laid out
    /// as `segments/` (`fs/segments.rs`).
    ArchiveDir,
    ArchDir(SegmentName),
    ArchInfo(SegmentName),
    ArchData(SegmentName),
    /// `txn/`: the transactions being built.
    TxnArea,
    /// `txn/new`: the clone file. Each lookup makes a new one (see [`Node::is_per_lookup`]).
    TxnClone(u64),
    /// `txn/<name>/` and its files.
    WTxn(TxnNo),
    WCtl(TxnNo),
    WInfo(TxnNo),
    WNewOid(TxnNo),
    /// `txn/<name>/<oid>`: staged data, or the snapshot's when not staged.
    WObj(TxnNo, Oid),
    /// `merge`: the merge control file; a new one per lookup, as `txn/new`.
    Merge(u64),
    /// `gc`: the garbage collector's control file; a new one per lookup, as `merge`.
    Gc(u64),
    /// `classes/` (lookup-only in the root), `classes/at`, `classes/index`.
    ClassesDir,
    ClassesAt,
    ClassIndex,
    /// `classes/<name>/`: the live objects of one class (the mount's number of the name).
    ClassDir(u32),
    /// `refs/` (lookup-only) and `refs/<oid>`: the references of a revision.
    RefsDir,
    Refs(Oid, Tid),
    /// `referrers/` (lookup-only) and `referrers/<oid>`: the head objects referring to one.
    ReferrersDir,
    Referrers(Oid),
}

impl Node {
    pub fn is_dir(self) -> bool {
        matches!(
            self,
            Node::Root
                | Node::HeadDir
                | Node::AtDir(_)
                | Node::HistoryDir
                | Node::HistoryOid(_)
                | Node::TxnsDir
                | Node::TxnDir(_)
                | Node::SegmentsDir
                | Node::SegDir(_)
                | Node::ArchiveDir
                | Node::ArchDir(_)
                | Node::TxnArea
                | Node::WTxn(_)
                | Node::ClassesDir
                | Node::ClassDir(_)
                | Node::RefsDir
                | Node::ReferrersDir
        )
    }

    /// Whether this node can be written (on a writable mount).
    pub fn is_writable(self) -> bool {
        matches!(
            self,
            Node::TxnArea
                | Node::TxnClone(_)
                | Node::WTxn(_)
                | Node::WCtl(_)
                | Node::WInfo(_)
                | Node::WObj(..)
                | Node::Merge(_)
                | Node::Gc(_)
        )
    }

    /// Whether each lookup of the name gets a node (and inode) of its own, with a name
    /// TTL of 0: files whose writes block for long (a commit through the clone file, a
    /// merge). The kernel serializes writes, and O_TRUNC opens, per inode: on a shared
    /// inode a commit would wait behind another descriptor's blocked commit, and a
    /// second merge behind the first instead of getting EBUSY.
    pub fn is_per_lookup(self) -> bool {
        matches!(self, Node::TxnClone(_) | Node::Merge(_) | Node::Gc(_))
    }

    /// Whether what this node shows can never change (a retained revision, a snapshot,
    /// a committed transaction). Such nodes get long TTLs and keep the page cache.
    pub fn is_immutable(self) -> bool {
        matches!(
            self,
            Node::Readme
                | Node::AtDir(_)
                | Node::AtAt(_)
                | Node::Rev(..)
                | Node::Deleted(..)
                | Node::TxnDir(_)
                | Node::TxnInfo(_)
                | Node::Refs(..)
        )
    }
}

/// A path that reaches the node (revisions are shown under `history/`).
impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Root => write!(f, "/"),
            Node::Readme => write!(f, "/README"),
            Node::Stats => write!(f, "/stats"),
            Node::HeadDir => write!(f, "/head"),
            Node::HeadAt => write!(f, "/head/at"),
            Node::HeadWatch => write!(f, "/head/watch"),
            Node::AtDir(t) => write!(f, "/@{t}"),
            Node::AtAt(t) => write!(f, "/@{t}/at"),
            // Reached as head/, @<tid>/, history/, transactions/ or segments/ alike.
            Node::Rev(o, t) => write!(f, "object {o} as of {t}"),
            Node::Deleted(o, t) => write!(f, "/history/{o}/{t}.deleted"),
            Node::HistoryDir => write!(f, "/history"),
            Node::HistoryOid(o) => write!(f, "/history/{o}"),
            Node::TxnsDir => write!(f, "/transactions"),
            Node::TxnDir(t) => write!(f, "/transactions/{t}"),
            Node::TxnInfo(t) => write!(f, "/transactions/{t}/info"),
            Node::SegmentsDir => write!(f, "/segments"),
            Node::SegDir(n) => write!(f, "/segments/{n}"),
            Node::SegInfo(n) => write!(f, "/segments/{n}/info"),
            Node::SegTxns(n) => write!(f, "/segments/{n}/txns"),
            Node::SegData(n) => write!(f, "/segments/{n}/{n}.fs2"),
            Node::ArchiveDir => write!(f, "/archive"),
            Node::ArchDir(n) => write!(f, "/archive/{n}"),
            Node::ArchInfo(n) => write!(f, "/archive/{n}/info"),
            Node::ArchData(n) => write!(f, "/archive/{n}/{n}.fs2"),
            Node::TxnArea => write!(f, "/txn"),
            Node::TxnClone(_) => write!(f, "/txn/new"),
            Node::WTxn(n) => write!(f, "/txn/#{}", n.0),
            Node::WCtl(n) => write!(f, "/txn/#{}/ctl", n.0),
            Node::WInfo(n) => write!(f, "/txn/#{}/info", n.0),
            Node::WNewOid(n) => write!(f, "/txn/#{}/new-oid", n.0),
            Node::WObj(n, o) => write!(f, "/txn/#{}/{o}", n.0),
            Node::Merge(_) => write!(f, "/merge"),
            Node::Gc(_) => write!(f, "/gc"),
            Node::ClassesDir => write!(f, "/classes"),
            Node::ClassesAt => write!(f, "/classes/at"),
            Node::ClassIndex => write!(f, "/classes/index"),
            Node::ClassDir(i) => write!(f, "/classes/#{i}"),
            Node::RefsDir => write!(f, "/refs"),
            Node::Refs(o, t) => write!(f, "/refs/{o} (as of {t})"),
            Node::ReferrersDir => write!(f, "/referrers"),
            Node::Referrers(o) => write!(f, "/referrers/{o}"),
        }
    }
}

/// A name that is exactly 16 lowercase hex digits (other spellings are not aliases).
pub fn parse_hex(name: &str) -> Option<u64> {
    let ok = name.len() == 16 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then(|| u64::from_str_radix(name, 16).ok()).flatten()
}

/// `<hex>` or `<hex>.deleted`: the number and whether the suffix was there.
pub fn parse_hex_maybe_deleted(name: &str) -> Option<(u64, bool)> {
    match name.strip_suffix(".deleted") {
        Some(h) => parse_hex(h).map(|v| (v, true)),
        None => parse_hex(name).map(|v| (v, false)),
    }
}

/// `@<tid>` or `@<ISO-8601 time>` (e.g. `@2026-11-21T11:20:30Z`, `+hh:mm` offsets
/// too): the tid it names. A time means the state at the end of its last written digit,
/// so the `time:` a transaction shows (microseconds) names that transaction's state.
pub fn parse_at(name: &str) -> Option<Tid> {
    let rest = name.strip_prefix('@')?;
    if let Some(t) = parse_hex(rest) {
        return Some(Tid(t));
    }
    // Only something that looks like a date is tried as a time.
    if rest.len() < 10 || rest.as_bytes()[4] != b'-' {
        return None;
    }
    let (time, offset) = split_offset(rest)?;
    let digits = time.rsplit_once('.').map_or(0, |(_, f)| f.trim_end_matches('Z').len()) as i32;
    let end = parse_iso8601(time)? - offset + 10f64.powi(-digits.min(9));
    Some(Tid(Tid::from_unix(end).0.saturating_sub(1)))
}

/// A time and its UTC offset in seconds (`Z` or none: 0; `+hh:mm` / `-hh:mm`).
fn split_offset(s: &str) -> Option<(&str, f64)> {
    let Some(t) = s.find('T') else { return Some((s, 0.0)) };
    match s[t..].rfind(['+', '-']).map(|i| t + i) {
        Some(i) => {
            let (h, m) = s[i + 1..].split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            let sign = if &s[i..i + 1] == "-" { -1.0 } else { 1.0 };
            Some((&s[..i], sign * f64::from(h * 3600 + m * 60)))
        }
        None => Some((s, 0.0)),
    }
}

/// A segment directory name: exactly as `fs2 info` spells it (`seg-000001`).
pub fn parse_segment(name: &str) -> Option<SegmentName> {
    let s: SegmentName = name.parse().ok()?;
    (s.to_string() == name).then_some(s)
}

/// A revision's file name in a listing keyed by `key`: `<key>` or `<key>.deleted`.
pub fn rev_name(key: u64, deleted: bool) -> String {
    if deleted {
        format!("{key:016x}.deleted")
    } else {
        format!("{key:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_names_parse() {
        assert_eq!(parse_hex("00000000000000ff"), Some(255));
        for bad in ["ff", "00000000000000FF", "0x00000000000000ff", "000000000000000ff", "+0000000000000ff", ""] {
            assert_eq!(parse_hex(bad), None, "{bad}");
        }
        assert_eq!(parse_hex_maybe_deleted("0000000000000001.deleted"), Some((1, true)));
        assert_eq!(parse_hex_maybe_deleted("0000000000000001.Deleted"), None);
        assert_eq!(parse_at("@00000000000000ff"), Some(Tid(255)));
        // The end of that second; an offset moves it.
        assert_eq!(parse_at("@2000-01-01T00:00:00Z"), Some(Tid(0x0331_6200_0444_4443)));
        assert_eq!(parse_at("@2000-01-01T00:00:00+00:00"), parse_at("@2000-01-01T00:00:00Z"));
        assert_eq!(parse_at("@2000-01-01T01:00:00+01:00"), parse_at("@2000-01-01T00:00:00Z"));
        // The time a transaction shows names its state (not the one before).
        for tid in [Tid(0x0331_6200_0123_4567), Tid(0x0331_6200_0fff_ffff)] {
            let t = parse_at(&format!("@{}", tid.iso8601())).unwrap();
            assert!(t >= tid && t.0 - tid.0 < 0x2000, "{tid} -> {t}");
        }
        assert_eq!(parse_at("@ff"), None);
        assert_eq!(parse_at("@yesterday"), None);
        assert_eq!(parse_at("0000000000000001"), None);
        assert_eq!(parse_segment("seg-000001"), Some(SegmentName::single(1)));
        assert_eq!(parse_segment("seg-000001-000003"), Some(SegmentName { first: 1, last: 3 }));
        assert_eq!(parse_segment("seg-1"), None);
        assert_eq!(parse_segment("seg-000001.fs2"), None);
        assert_eq!(rev_name(2, true), "0000000000000002.deleted");
    }

    #[test]
    fn immutable_nodes_are_the_revision_keyed_ones() {
        assert!(Node::Rev(Oid(1), Tid(2)).is_immutable());
        assert!(!Node::HeadAt.is_immutable());
        assert!(!Node::HeadDir.is_immutable());
        assert!(Node::TxnDir(Tid(1)).is_dir());
        assert!(!Node::SegData(SegmentName::single(1)).is_dir());
    }
}
