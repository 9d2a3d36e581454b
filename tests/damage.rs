//! Fault containment (issue 10, items 3, 4, 9): what one damaged byte costs.
//!
//! - `flip_campaign_*`: a small storage with a sealed segment, a copy-merged one, one
//!   with an appended region and an active one; every byte of every structure (headers,
//!   slots, transaction and data record headers, data, index, trailer; the zero holes of
//!   headers and padding sampled) flipped on a copy, one at a time; each copy opened
//!   read-only and every object read. Asserted: never wrong bytes, never a panic; every
//!   flip is detected or harmless (every read equals the original); and a detected flip
//!   costs at most the objects with a revision in the damaged segment (in the active
//!   segment: in the damaged transaction). Prints the counts (README, reliability).
//! - `truncated_past_segment_*`: a sealed segment cut at a record boundary is damage
//!   (item 3), never silently repaired.
//! - `damaged_active_transaction_*`: reads around it, writes refused, salvage (item 4).

use filestorage2::merge::{Policy, Strategy};
use filestorage2::vfs::{CrashMode, SimVfs, Vfs};
use filestorage2::{AsOf, Oid, Options, SegmentName, Storage, Tid};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const DIR: &str = "/s";

fn opts(v: &SimVfs) -> Options {
    Options { vfs: Arc::new(v.clone()), alignment: 4096, preallocate: 0, rotate_size: 0, ..Default::default() }
}

fn commit(s: &Storage, writes: &[(u64, &str)]) -> Tid {
    let mut t = s.begin();
    for (o, d) in writes {
        t.store(Oid(*o), d.as_bytes()).unwrap();
    }
    t.commit().unwrap()
}

fn seg(n: u64) -> SegmentName {
    SegmentName::single(n)
}

/// The storage: seg 1 sealed; seg 2-3 a copy merge; seg 5 with seg 4 appended; seg 6
/// active with four transactions. Returns the sim disk.
fn build() -> SimVfs {
    let v = SimVfs::new();
    let s = Storage::create(Path::new(DIR), opts(&v)).unwrap();
    commit(&s, &[(1, "one-a"), (2, "two-a")]);
    commit(&s, &[(3, "three-a")]);
    s.rotate().unwrap(); // seg 2
    commit(&s, &[(4, "four-a"), (1, "one-b")]);
    s.rotate().unwrap(); // seg 3
    commit(&s, &[(5, "five-a")]);
    s.rotate().unwrap(); // seg 4
    commit(&s, &[(6, "six-a"), (12, "twelve")]);
    s.rotate().unwrap(); // seg 5
    commit(&s, &[(7, "seven-a")]);
    s.rotate().unwrap(); // seg 6 active
    s.merge(&Policy::Named(vec![seg(2), seg(3)])).unwrap().unwrap();
    s.merge_with(&Policy::Named(vec![seg(4), seg(5)]), Strategy::Append(AsOf::Source)).unwrap().unwrap();
    commit(&s, &[(8, "eight-a"), (1, "one-c")]);
    commit(&s, &[(9, "nine-a")]);
    commit(&s, &[(10, "ten-a"), (2, "two-b")]);
    commit(&s, &[(11, "eleven-a")]);
    v
}

/// Every object's current data; and which segments and (active) transactions hold it.
struct Truth {
    data: BTreeMap<u64, Vec<u8>>,
    /// oid -> segment names holding a revision.
    segs: BTreeMap<u64, BTreeSet<String>>,
    /// Active segment: (start, end, oids) of each transaction.
    active_txns: Vec<(u64, u64, BTreeSet<u64>)>,
    active: String,
    /// The oid of the active segment's last transaction only (a torn-write look-alike).
    last_only: u64,
    files: Vec<(String, u64)>,
    /// (file, offset) where structures other than data bytes start and end: the header
    /// parts read, index and trailer; data regions are sampled elsewhere.
    seg_kinds: BTreeMap<String, &'static str>,
}

fn truth(v: &SimVfs) -> Truth {
    let s = Storage::open(Path::new(DIR), Options { read_only: true, ..opts(v) }).unwrap();
    let mut data = BTreeMap::new();
    let mut segs = BTreeMap::new();
    for o in 1..=12u64 {
        data.insert(o, s.load(Oid(o)).unwrap().unwrap().1);
        let h = s.history(Oid(o)).unwrap();
        segs.insert(o, h.iter().map(|r| r.segment.file_name()).collect());
    }
    let infos = s.segments().unwrap();
    let active = infos.last().unwrap().name.file_name();
    let active_end = infos.last().unwrap().bytes;
    let txns: Vec<_> = s.transactions(Tid::ZERO, Tid::MAX).map(|t| t.unwrap()).collect();
    let act: Vec<_> = txns.iter().filter(|t| t.segment.file_name() == active).collect();
    let mut active_txns = Vec::new();
    for (i, t) in act.iter().enumerate() {
        let end = act.get(i + 1).map_or(active_end, |n| n.offset);
        active_txns.push((t.offset, end, t.records.iter().map(|r| r.0 .0).collect()));
    }
    let files = infos
        .iter()
        .map(|g| (g.name.file_name(), v.open(&Path::new(DIR).join(g.name.file_name()), false).unwrap().len().unwrap()))
        .collect();
    let mut seg_kinds = BTreeMap::new();
    for g in &infos {
        let kind = match () {
            _ if g.state == filestorage2::SegmentState::Active => "active",
            _ if !g.appended.is_empty() => "appended",
            _ if g.name.first != g.name.last => "merged",
            _ => "sealed",
        };
        seg_kinds.insert(g.name.file_name(), kind);
    }
    Truth { data, segs, active_txns, active, last_only: 11, files, seg_kinds }
}

/// The offsets to flip in a file of `len` bytes: every byte except long runs of zeros
/// (header holes, padding), which are sampled every 61 bytes.
fn offsets(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|&&b| b == 0).count();
        if run >= 64 {
            out.extend((i..i + run).step_by(61).map(|x| x as u64));
            out.push((i + run - 1) as u64);
            i += run;
        } else {
            out.push(i as u64);
            i += 1;
        }
    }
    out
}

#[derive(Default, Debug)]
struct Counts {
    flips: usize,
    harmless: usize,
    detected_at_open: usize,
    detected_at_read: usize,
    /// Objects that answered an error, summed over detected flips.
    objects_lost: usize,
    max_objects_lost: usize,
}

#[test]
fn flip_campaign_every_structure_byte() {
    let t0 = Instant::now();
    let v = build();
    let t = truth(&v);
    let mut by_kind: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, len) in &t.files {
        let path = PathBuf::from(DIR).join(name);
        let mut bytes = vec![0u8; *len as usize];
        v.open(&path, false).unwrap().read_exact_at(&mut bytes, 0).unwrap();
        let kind = t.seg_kinds[name];
        for off in offsets(&bytes) {
            let copy = v.crash(CrashMode::AllWritten);
            let f = copy.open(&path, true).unwrap();
            f.write_all_at(&[bytes[off as usize] ^ 0xff], off).unwrap();
            let ctx = format!("{name} ({kind}) offset {off}");
            let res = catch_unwind(AssertUnwindSafe(|| read_all(&copy)));
            let c = by_kind.entry(kind).or_default();
            c.flips += 1;
            let answers = match res {
                Err(_) => {
                    failures.push(format!("{ctx}: PANIC"));
                    continue;
                }
                Ok(Err(e)) => {
                    c.detected_at_open += 1;
                    failures.push(format!("{ctx}: the read-only open failed (the whole storage is lost): {e}"));
                    continue;
                }
                Ok(Ok(a)) => a,
            };
            // Which objects may be lost: those with a revision in the damaged segment; in
            // the active segment, those of the damaged transaction.
            let in_txn = t.active_txns.iter().find(|(s, e, _)| off >= *s && off < *e);
            let allowed = |o: u64| match (name == &t.active, in_txn) {
                (true, Some((_, _, oids))) => oids.contains(&o),
                (true, None) if off < 4096 => t.segs[&o].contains(name),
                (true, None) => false,
                (false, _) => t.segs[&o].contains(name),
            };
            let mut lost = 0;
            for (o, a) in &answers {
                match a {
                    Ok(Some(d)) if d == &t.data[o] => {}
                    Ok(None) if *o == t.last_only && in_txn.is_some_and(|x| x.2.contains(o)) => {
                        lost += 1; // the last transaction, read as a torn write
                    }
                    Ok(got) => failures.push(format!("{ctx}: WRONG DATA for oid {o}: {got:?}")),
                    Err(e) => {
                        lost += 1;
                        if !allowed(*o) {
                            failures.push(format!("{ctx}: oid {o} lost, outside the damage: {e}"));
                        }
                    }
                }
            }
            if lost == 0 {
                c.harmless += 1;
            } else {
                c.detected_at_read += 1;
                c.objects_lost += lost;
                c.max_objects_lost = c.max_objects_lost.max(lost);
            }
        }
    }
    let total: usize = by_kind.values().map(|c| c.flips).sum();
    println!("flip campaign: {total} flips of one byte (xor 0xff), read-only open, 12 objects read each time");
    for (k, c) in &by_kind {
        println!(
            "  {k:>9}: {:5} flips, {:5} harmless, {:5} detected at read (objects lost: mean {:.2}, max {}), {} open failures",
            c.flips,
            c.harmless,
            c.detected_at_read,
            c.objects_lost as f64 / c.detected_at_read.max(1) as f64,
            c.max_objects_lost,
            c.detected_at_open
        );
    }
    println!("  {:?}", t0.elapsed());
    assert!(
        failures.is_empty(),
        "{} bad outcomes, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(3000)].join("\n")
    );
}

type Answers = Vec<(u64, Result<Option<Vec<u8>>, String>)>;

/// Open read-only and load every object.
fn read_all(v: &SimVfs) -> Result<Answers, String> {
    let s = Storage::open(Path::new(DIR), Options { read_only: true, ..opts(v) }).map_err(|e| e.to_string())?;
    Ok((1..=12u64).map(|o| (o, s.load(Oid(o)).map(|r| r.map(|x| x.1)).map_err(|e| e.to_string()))).collect())
}
