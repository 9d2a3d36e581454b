//! `check`: verify every checksum, the chain, and every index against its data.
//! With `repair`, first open for writing (which truncates a torn tail of the active
//! segment and rebuilds lost indexes), then verify.

use crate::error::Result;
use crate::format::HEADER_SIZE;
use crate::recovery::note_txn;
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
                    note_txn(&mut seen, tid, txn.records.len());
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
