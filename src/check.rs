//! `check`: verify every checksum, the chain, and every index against its data.
//! With `repair`, first open for writing (which truncates a torn tail of the active
//! segment and rebuilds lost indexes), then verify.

use crate::error::{Error, Result};
use crate::format::HEADER_SIZE;
use crate::segment::{Scanner, SealStats, SegmentFile, Step};
use crate::store::{Options, Storage};
use crate::types::{Oid, SegmentName, Tid};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Problems: a non-empty list means the storage is damaged or needs `--repair`.
    pub problems: Vec<String>,
    /// What `--repair` did.
    pub repaired: Vec<String>,
    pub segments: usize,
    pub transactions: u64,
    pub records: u64,
    pub bytes: u64,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verify the storage in `dir`. `progress(done, total)` is called with bytes scanned.
pub fn check(dir: &Path, repair: bool, opts: Options, progress: &mut dyn FnMut(u64, u64)) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    if repair {
        let s = Storage::open(dir, Options { read_only: false, ..opts.clone() })?;
        let damage = s.open_damage();
        report.repaired = s.open_warnings().into_iter().filter(|w| !damage.contains(w)).collect();
        // A repair that may have lost data is not a success.
        report.problems.extend(s.open_losses());
        // With damage found the chain may have been guessed (a damaged header): strays
        // stay where they are until the damage is repaired (`--salvage`).
        let strays = if damage.is_empty() { s.move_strays_aside()? } else { Vec::new() };
        for (from, to) in strays {
            let from = from.display().to_string();
            report.repaired.retain(|w| !w.starts_with(&format!("{from}: ")));
            report.repaired.push(format!("{from}: not part of the chain; moved aside to {}", to.display()));
        }
    }
    // Not a storage (missing, not a directory, no access): an error, not damage.
    let opts_partial = opts.vfs.partial_chain();
    let s = match Storage::open(dir, Options { read_only: true, ..opts }) {
        Ok(s) => s,
        Err(e) if e.is_corruption() => {
            report.problems.push(e.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let damage = s.open_damage();
    for w in s.open_warnings() {
        // Damage lines say what to do; other warnings are what `--repair` fixes.
        let advice = match damage.contains(&w) || w.contains("fs2 check --repair") {
            true => "",
            false => " (run `fs2 check --repair`)",
        };
        report.problems.push(format!("{w}{advice}"));
    }
    let v = s.view();
    // Oldest first, each region of a segment on its own: (segment, data start, data end,
    // index entries as the storage sees them, trailer).
    type ToCheck<'a> = (&'a SegmentFile, u64, u64, Vec<(Oid, u64)>, Option<SealStats>);
    let damaged = v.active.as_ref().map_or(&[][..], |a| &a.damaged[..]);
    let mut segs: Vec<ToCheck<'_>> = Vec::new();
    for p in v.pasts.iter().rev() {
        let mut entries = Vec::with_capacity(p.index.len() as usize);
        for i in 0..p.index.len() {
            match p.entry(i) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    report.problems.push(e.to_string());
                    break;
                }
            }
        }
        if let Some(problem) = p.check_filter(&entries) {
            report.problems.push(format!("{}: {problem}", p.seg.path.display()));
        }
        let t = &p.trailer;
        let stats = SealStats {
            first_tid: t.first_tid,
            last_tid: t.last_tid,
            txn_count: t.txn_count,
            record_count: t.record_count,
        };
        segs.push((&p.seg, p.data_start(), p.data_end(), entries, Some(stats)));
    }
    if let Some(a) = &v.active {
        segs.push((&a.seg, HEADER_SIZE as u64, a.end, a.index.iter().map(|(o, e)| (*o, e.offset)).collect(), None));
    }
    let total: u64 = segs.iter().map(|s| s.2 - s.1).sum();
    let mut done = 0u64;
    let mut last_tid = Tid::ZERO;
    let mut prev_name: Option<SegmentName> = None;
    for (seg, start, end, entries, stats) in segs {
        let path = seg.path.display().to_string();
        // The first region seen of a segment (its oldest data): check the chain link.
        if prev_name != Some(seg.header.name) {
            // An archive's oldest segment may name a predecessor it does not hold.
            let partial = prev_name.is_none() && opts_partial;
            if !partial
                && seg.prev().as_deref().map(Path::new).and_then(|p| p.file_name()).and_then(|n| n.to_str())
                    != prev_name.map(|n| n.file_name()).as_deref()
            {
                report.problems.push(format!("{path}: previous-segment reference does not name the previous segment"));
            }
            prev_name = Some(seg.header.name);
            report.segments += 1;
            report.bytes += seg.effective_len()?;
        }
        let mut sc = Scanner::verifying(seg, start, end);
        let mut newest: BTreeMap<Oid, u64> = BTreeMap::new();
        let mut at: HashMap<u64, (Oid, Tid)> = HashMap::new();
        let mut seen = SealStats::default();
        // Padding, salvaged and damaged transactions: a back-pointer into one is a known
        // loss (reported once, with the damage).
        let mut skipped: Vec<(u64, u64)> = Vec::new();
        loop {
            progress(done + (sc.pos - start), total);
            let step_at = sc.pos;
            match sc.next_step()? {
                Step::Txn { offset, txn, .. } => {
                    let tid = txn.header.tid;
                    if tid <= last_tid {
                        report.problems.push(format!("{path} at offset {offset}: tid {tid} does not increase"));
                    }
                    last_tid = tid;
                    for (rel, h) in &txn.records {
                        let off = offset + rel;
                        let expect = newest.get(&h.oid).copied();
                        let ok = match h.prev {
                            0 | 1 => expect.is_none(),
                            p => {
                                (expect == Some(p) && at.get(&p).is_some_and(|(o, t)| *o == h.oid && *t < tid))
                                    || skipped.iter().any(|(s, e)| (*s..*e).contains(&p))
                            }
                        };
                        if !ok {
                            report.problems.push(format!(
                                "{path} at offset {off}: back-pointer {} of oid {} does not point at its previous record",
                                h.prev, h.oid
                            ));
                        }
                        newest.insert(h.oid, off);
                        at.insert(off, (h.oid, tid));
                    }
                    seen.note_txn(tid, txn.records.len());
                }
                Step::Skip => skipped.push((step_at, sc.pos)),
                Step::End | Step::Index => break,
                Step::Invalid(why) => {
                    // Damage contained at open (reported with its warning): go on after it.
                    if let Some(d) = damaged.iter().find(|d| stats.is_none() && d.start == sc.pos) {
                        skipped.push((d.start, d.end));
                        sc.pos = d.end;
                        continue;
                    }
                    report.problems.push(format!("{path} at offset {}: {why}", sc.pos));
                    break;
                }
            }
        }
        done += end - start;
        report.transactions += seen.txn_count;
        report.records += seen.record_count;
        let rebuilt: Vec<(Oid, u64)> = newest.into_iter().collect();
        if rebuilt != entries {
            let diff =
                rebuilt.iter().zip(&entries).position(|(a, b)| a != b).unwrap_or(rebuilt.len().min(entries.len()));
            report.problems.push(format!(
                "{path}: the index does not match the data ({} entries in the index, {} in the data; first difference at entry {diff})",
                entries.len(),
                rebuilt.len()
            ));
        }
        if let Some(st) = stats {
            let same = st.txn_count == seen.txn_count
                && st.record_count == seen.record_count
                && (st.txn_count == 0 || (st.first_tid == seen.first_tid && st.last_tid == seen.last_tid));
            if !same {
                report.problems.push(format!("{path}: the trailer's counts or tid range do not match the data"));
            }
        }
    }
    progress(total, total);
    Ok(report)
}

/// `fs2 check --repair --salvage`: move every damaged transaction of the active segment
/// aside, into `<segment>.damaged-<offset>` beside it (durably), and put a padding record
/// of zeros in its place, so that the storage takes writes again. Returns one line per
/// transaction moved (tid, oids, file). Its objects read as of their previous revision
/// afterwards; reads of history that went through it end with a damage error.
pub fn salvage(dir: &Path, opts: crate::Options) -> crate::Result<Vec<String>> {
    let s = crate::Storage::open(dir, crate::Options { read_only: false, ..opts })?;
    let vfs = s.inner.chain.opts.vfs.clone();
    let v = s.view();
    // The first tid after past part `i` (in the newer parts or the active segment).
    let next_tid = |i: usize| {
        let newer = v.pasts[..i].iter().rev().find(|p| p.trailer.txn_count > 0).map(|p| p.trailer.first_tid);
        newer.or_else(|| v.active.as_ref().filter(|a| a.stats.txn_count > 0).map(|a| a.stats.first_tid))
    };
    let mut out = Vec::new();
    // Damaged headers: write the reconstructed one back (past segments record their
    // length, which the open verified ends in a trailer).
    let active = v.active.iter().map(|a| (&a.seg, None));
    let pasts = v.files().map(|f| (&f[0].seg, Some(f[0].seg.len())));
    for (seg, len) in active.chain(pasts).filter(|(s, _)| s.header_damaged) {
        let len = len.transpose()?;
        seg.rewrite_header(&*vfs, len)?;
        out.push(format!(
            "{}: rewrote the damaged header (previous segment {}{})",
            seg.path.display(),
            seg.prev().as_deref().unwrap_or("none"),
            len.map_or(String::new(), |l| format!(", length {l}"))
        ));
    }
    out.extend(reseal_cut(&*vfs, &v, next_tid)?);
    let Some(a) = &v.active else { return Ok(out) };
    for d in &a.damaged {
        let len = d.end - d.start;
        let bytes = a.seg.read(d.start, len as usize)?;
        let aside = std::path::PathBuf::from(format!("{}.damaged-{}", a.seg.path.display(), d.start));
        // Whole and durable before the range becomes padding (a rerun after a crash
        // rewrites the same bytes over it).
        crate::durable::write_file(&*vfs, &aside, &bytes)?;
        let (head, tail) = crate::format::encode_padding(len);
        let mut pad = vec![0u8; len as usize];
        pad[..head.len()].copy_from_slice(&head);
        pad[len as usize - tail.len()..].copy_from_slice(&tail);
        a.seg.file.write_all_at(&pad, d.start).map_err(|e| Error::io(&a.seg.path, "write", e))?;
        out.push(format!("{}; moved aside to {}", d.describe(&a.seg.path), aside.display()));
    }
    a.seg.file.sync().map_err(|e| Error::io(&a.seg.path, "sync", e))?;
    Ok(out)
}

/// Re-seal every past segment that was cut short at the end of the data it still holds
/// (an index record and trailer written there, the new length recorded in its header).
fn reseal_cut(
    vfs: &dyn crate::vfs::Vfs,
    v: &crate::chain::View,
    next_tid: impl Fn(usize) -> Option<Tid>,
) -> crate::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut at = 0;
    for parts in v.files() {
        let first = at;
        at += parts.len();
        // The part the cut fell in: the first that records a loss (parts after it only
        // stand for regions lost with the rest of the file).
        let Some(k) = parts.iter().position(|p| p.lost_after.is_some()) else { continue };
        let p = &parts[k];
        let path = &p.seg.path;
        let file = vfs.open(path, true).map_err(|e| Error::io(path, "open", e))?;
        let seg = crate::segment::SegmentFile::new(path.clone(), p.seg.header.clone(), file);
        let end = match p.trailer.appended {
            // A region of which nothing is left: the segment ends before it.
            Some(a) if p.index.len() == 0 && p.trailer.txn_count == 0 => {
                seg.file.set_len(a.base_len).map_err(|e| Error::io(path, "truncate", e))?;
                seg.file.sync().map_err(|e| Error::io(path, "sync", e))?;
                seg.record_sealed_len(a.base_len)?;
                a.base_len
            }
            _ => {
                let mut entries = Vec::with_capacity(p.index.len() as usize);
                for j in 0..p.index.len() {
                    entries.push(p.entry(j)?);
                }
                crate::segment::seal_with(&seg, &entries, p.trailer.clone())?;
                seg.len()?
            }
        };
        let kept = match p.trailer.txn_count {
            0 => "no transaction of the part that was cut".to_string(),
            _ => format!("the transactions up to {}", p.trailer.last_tid),
        };
        let upto = next_tid(first + k).map_or("the next segment's".to_string(), |t| t.to_string());
        out.push(format!(
            "{}: re-sealed at {end} bytes with {kept}; the transactions after them (before {upto}), and \
             those of any region appended after them, were in the missing bytes and are lost",
            path.display(),
        ));
    }
    Ok(out)
}
