//! Fault containment (issue 10, items 3, 4, 9): what one damaged byte costs.
//!
//! - `flip_campaign_*`: a small storage with a sealed segment, a copy-merged one, one
//!   with an appended region and an active one; every byte of every structure (headers,
//!   slots, transaction and data record headers, data, index, trailer; the zero holes of
//!   headers and padding sampled) flipped on a copy, one at a time; each copy opened
//!   read-only and every object read (data, and header-only answers: tids and sizes).
//!   Asserted: never wrong bytes, tids or sizes, never a panic; every flip is detected
//!   or harmless (every read equals the original); and a detected flip costs at most
//!   the objects with a revision in the damaged segment (in the active segment: in the
//!   damaged transaction). Prints the counts (README, reliability).
//! - `truncated_past_segment_*`: a sealed segment cut at a record boundary is damage
//!   (item 3), never silently repaired.
//! - `damaged_active_transaction_*`: reads around it, writes refused, salvage (item 4).

mod common;
use common::bytes::{slot_offset, Slot};
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
    /// Every other read and its answer: as of every tid, and each history.
    reads: Vec<(Read, String)>,
    /// oid -> segment names holding a revision.
    segs: BTreeMap<u64, BTreeSet<String>>,
    /// oid -> the segment holding its current revision.
    current_seg: BTreeMap<u64, SegmentName>,
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
    let mut current_seg = BTreeMap::new();
    for o in 1..=12u64 {
        data.insert(o, s.load(Oid(o)).unwrap().unwrap().1);
        let h = s.history(Oid(o)).unwrap();
        segs.insert(o, h.iter().map(|r| r.segment.file_name()).collect());
        current_seg.insert(o, h[0].segment);
    }
    let tids: Vec<Tid> = s.transactions(Tid::ZERO, Tid::MAX).map(|t| t.unwrap().tid).collect();
    let reads = other_reads(&tids).into_iter().map(|r| (r, r.run(&s).unwrap())).collect();
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
    Truth { data, reads, segs, current_seg, active_txns, active, last_only: 11, files, seg_kinds }
}

/// Whether `off` of `name` lies in the active segment's last transaction.
fn in_txn_last(t: &Truth, name: &str, off: u64) -> bool {
    name == t.active && t.active_txns.last().is_some_and(|(s, e, _)| off >= *s && off < *e)
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
    /// Not reported and every read exact: bytes nothing reads (zero holes, reserved).
    harmless: usize,
    /// Reported at open (a warning), every read exact.
    detected_nothing_lost: usize,
    detected_at_open: usize,
    /// Some objects answered a damage error.
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
            let res = catch_unwind(AssertUnwindSafe(|| read_all(&copy, &t)));
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
            let (answers, warned, wrong) = answers;
            for (r, got) in wrong {
                // The last transaction, damaged, reads as a torn write (DESIGN.md).
                let dropped_last = r.oid() == t.last_only && in_txn_last(&t, name, off);
                if !dropped_last {
                    failures.push(format!("{ctx}: WRONG ANSWER to {r:?}: {got}"));
                }
            }
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
            if lost == 0 && warned {
                c.detected_nothing_lost += 1;
            } else if lost == 0 {
                c.harmless += 1;
            } else {
                c.detected_at_read += 1;
                c.objects_lost += lost;
                c.max_objects_lost = c.max_objects_lost.max(lost);
            }
        }
    }
    let total: usize = by_kind.values().map(|c| c.flips).sum();
    println!(
        "flip campaign: {total} flips of one byte (xor 0xff), read-only open; each time 12 current loads, {} \
         loads and stats as of every tid, histories and current tids",
        t.reads.len()
    );
    for (k, c) in &by_kind {
        println!(
            "  {k:>9}: {:5} flips: {:5} unread bytes, {:5} reported with every read exact, {:5} with objects \
             answering a damage error (per flip: mean {:.2}, max {}), {} open failures",
            c.flips,
            c.harmless,
            c.detected_nothing_lost,
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

/// A read besides the current loads: `load_at` as of a tid, or `history`; and the reads
/// that take only record headers (a tid, a size): `stat_at` as of a tid, `current_tid`.
#[derive(Clone, Copy, Debug)]
enum Read {
    At(u64, Tid),
    Stat(u64, Tid),
    History(u64),
    CurrentTid(u64),
}

fn other_reads(tids: &[Tid]) -> Vec<Read> {
    let mut v = Vec::new();
    for o in 1..=12u64 {
        v.extend(tids.iter().map(|t| Read::At(o, *t)));
        v.extend(tids.iter().map(|t| Read::Stat(o, *t)));
        v.push(Read::History(o));
        v.push(Read::CurrentTid(o));
    }
    v
}

impl Read {
    fn oid(&self) -> u64 {
        match self {
            Read::At(o, _) | Read::Stat(o, _) | Read::History(o) | Read::CurrentTid(o) => *o,
        }
    }
    /// The answer, rendered for comparison.
    fn run(&self, s: &Storage) -> filestorage2::Result<String> {
        Ok(match self {
            Read::At(o, t) => format!("{:?}", s.load_at(Oid(*o), *t)?),
            Read::Stat(o, t) => format!("{:?}", s.stat_at(Oid(*o), *t)?),
            Read::History(o) => format!("{:?}", s.history(Oid(*o))?),
            Read::CurrentTid(o) => format!("{:?}", s.current_tid(Oid(*o))?),
        })
    }
}

type Answers = Vec<(u64, Result<Option<Vec<u8>>, String>)>;
/// The current loads, whether the open reported anything, and the wrong other reads.
type Outcome = (Answers, bool, Vec<(Read, String)>);

/// Open read-only and load every object; whether the open reported anything; the
/// other reads of `t` that answered differently (errors are not counted).
fn read_all(v: &SimVfs, t: &Truth) -> Result<Outcome, String> {
    let s = Storage::open(Path::new(DIR), Options { read_only: true, ..opts(v) }).map_err(|e| e.to_string())?;
    let a = (1..=12u64).map(|o| (o, s.load(Oid(o)).map(|r| r.map(|x| x.1)).map_err(|e| e.to_string()))).collect();
    let wrong = t
        .reads
        .iter()
        .filter_map(|(r, want)| match r.run(&s) {
            Ok(got) if &got != want => Some((*r, got)),
            _ => None,
        })
        .collect();
    Ok((a, !s.open_warnings().is_empty(), wrong))
}

// ---------------------------------------------------------------------------------------
// Scenarios on real files, through the engine and the `fs2` binary.

fn real_opts() -> Options {
    Options { alignment: 4096, preallocate: 0, rotate_size: 0, ..Default::default() }
}

fn ro() -> Options {
    Options { read_only: true, ..real_opts() }
}

fn fs2(args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fs2"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fs2");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.code().unwrap(), text(&o.stdout), text(&o.stderr))
}

fn load(s: &Storage, o: u64) -> Result<Option<Vec<u8>>, filestorage2::Error> {
    s.load(Oid(o)).map(|r| r.map(|x| x.1))
}

fn txn_offsets(s: &Storage, segment: &str) -> Vec<(Tid, u64)> {
    s.transactions(Tid::ZERO, Tid::MAX)
        .map(|t| t.unwrap())
        .filter(|t| t.segment.file_name() == segment)
        .map(|t| (t.tid, t.offset))
        .collect()
}

fn xor(path: &Path, off: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[off as usize] ^= 0xff;
    std::fs::write(path, b).unwrap();
}

/// Item 3: a sealed segment cut right after its first transaction (a record boundary)
/// is damage: reads that may need the lost transactions fail, others are served, writes
/// are refused, `check` and `check --repair` exit 5; `--salvage` re-seals it, naming the
/// last transaction kept, and the storage takes writes again.
#[test]
fn truncated_past_segment_is_damage_never_silently_repaired() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    let s = Storage::create(&dir, real_opts()).unwrap();
    let t1 = commit(&s, &[(1, "one")]);
    commit(&s, &[(2, "two")]);
    commit(&s, &[(1, "one-b"), (3, "three")]);
    s.rotate().unwrap();
    commit(&s, &[(4, "four")]);
    s.rotate().unwrap();
    commit(&s, &[(5, "five")]);
    let cut = txn_offsets(&s, "seg-000001.fs2")[1].1;
    drop(s);
    let seg1 = dir.join("seg-000001.fs2");
    std::fs::OpenOptions::new().write(true).open(&seg1).unwrap().set_len(cut).unwrap();

    let s = Storage::open(&dir, ro()).unwrap();
    assert!(
        s.open_damage().iter().any(|d| d.contains("seg-000001.fs2") && d.contains("cut short")),
        "{:?} {:?}",
        s.open_damage(),
        s.open_warnings()
    );
    let e = load(&s, 1).unwrap_err();
    assert!(e.is_corruption() && e.to_string().contains("seg-000001.fs2"), "{e}");
    assert!(load(&s, 2).unwrap_err().is_corruption());
    assert_eq!(s.load_at(Oid(1), t1).unwrap().unwrap().1, b"one", "as of the last transaction kept: exact");
    assert_eq!(load(&s, 4).unwrap().unwrap(), b"four");
    assert_eq!(load(&s, 5).unwrap().unwrap(), b"five");
    drop(s);

    let s = Storage::open(&dir, real_opts()).unwrap();
    let mut w = s.begin();
    w.store(Oid(9), b"x").unwrap();
    let e = w.commit().unwrap_err();
    assert!(e.to_string().contains("seg-000001.fs2") && e.to_string().contains("salvage"), "{e}");
    drop(s);

    for args in [vec!["check", d], vec!["check", d, "--repair"]] {
        let (code, out, _) = fs2(&args);
        assert_eq!(code, 5, "{args:?}: {out}");
        assert!(out.contains("cut short"), "{out}");
    }
    let (code, out, err) = fs2(&["check", d, "--repair", "--salvage"]);
    assert_eq!(code, 5, "{out}{err}");
    let line =
        out.lines().find(|l| l.starts_with("salvaged:") && l.contains("re-sealed")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&t1.to_string()) && line.contains("lost"), "{line}");
    let (code, out, _) = fs2(&["check", d]);
    assert_eq!(code, 0, "after the salvage: {out}");
    let s = Storage::open(&dir, real_opts()).unwrap();
    assert_eq!(load(&s, 1).unwrap().unwrap(), b"one");
    assert_eq!(load(&s, 2).unwrap(), None, "lost with the cut");
    commit(&s, &[(9, "writable again")]);
}

/// Item 4: a flipped byte inside a committed transaction of the active segment (not the
/// last one) costs that transaction's objects only; writes are refused with a message
/// naming the file, the offset and the command; `--salvage` moves it aside, listing its
/// tid and oids, and the storage takes writes again.
#[test]
fn damaged_active_transaction_is_contained_and_salvaged() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    let s = Storage::create(&dir, real_opts()).unwrap();
    let ta = commit(&s, &[(1, "a1"), (7, "past")]);
    s.rotate().unwrap();
    let tb = commit(&s, &[(1, "b1"), (2, "b2")]);
    commit(&s, &[(3, "c3")]);
    commit(&s, &[(4, "d4"), (7, "seven")]);
    let at = txn_offsets(&s, "seg-000002.fs2")[0].1;
    drop(s);
    let active = dir.join("seg-000002.fs2");
    let before = std::fs::read(&active).unwrap();
    xor(&active, at + 100); // inside the first data record

    let s = Storage::open(&dir, ro()).unwrap();
    for o in [1, 2] {
        let e = load(&s, o).unwrap_err();
        assert!(e.is_corruption() && e.to_string().contains("seg-000002.fs2"), "{e}");
        assert!(e.to_string().contains(&format!("offset {at}")), "{e}");
    }
    assert_eq!(load(&s, 3).unwrap().unwrap(), b"c3");
    assert_eq!(load(&s, 4).unwrap().unwrap(), b"d4");
    assert_eq!(load(&s, 7).unwrap().unwrap(), b"seven");
    assert_eq!(s.load_at(Oid(1), ta).unwrap().unwrap().1, b"a1", "as of before the damage: exact");
    drop(s);
    let (code, _, err) = fs2(&["cat", d, "0000000000000001"]);
    assert_eq!(code, 5, "{err}");
    assert_eq!(fs2(&["cat", d, "0000000000000003"]).1, "c3");
    // `fs2 ls` lists everything else, names the damaged objects on stderr, exits 5.
    let (code, out, err) = fs2(&["ls", d]);
    assert_eq!(code, 5, "{out}{err}");
    let listed: Vec<&str> = out.lines().map(|l| &l[..16]).collect();
    assert_eq!(listed, ["0000000000000003", "0000000000000004", "0000000000000007"], "{out}");
    assert!(err.contains("its objects: 0000000000000001 0000000000000002"), "{err}");
    // Iterations go on past it: the damaged transaction is an error, the others are there.
    let s = Storage::open(&dir, ro()).unwrap();
    let all: Vec<_> = s.transactions(Tid::ZERO, Tid::MAX).collect();
    assert_eq!(all.len(), 4, "ta, the damaged tb, and the two after it");
    assert!(all[1].as_ref().is_err_and(|e| e.is_corruption()));
    assert!([0, 2, 3].iter().all(|&i| all[i].is_ok()));
    drop(s);
    let (code, out, err) = fs2(&["dump", d]);
    assert_eq!(code, 5, "{out}{err}");
    assert_eq!(out.matches("Trans #").count(), 3, "{out}");
    assert!(!out.contains(&tb.to_string()) && err.contains("damaged transaction"), "{out}{err}");

    let s = Storage::open(&dir, real_opts()).unwrap();
    let mut w = s.begin();
    w.store(Oid(9), b"x").unwrap();
    let e = w.commit().unwrap_err().to_string();
    assert!(
        e.contains("seg-000002.fs2")
            && e.contains(&format!("offset {at}"))
            && e.contains("fs2 check --repair --salvage"),
        "{e}"
    );
    drop(s);

    let (code, out, _) = fs2(&["check", d]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("damaged transaction"), "{out}");
    let (code, out, err) = fs2(&["check", d, "--repair", "--salvage"]);
    assert_eq!(code, 5, "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("salvaged:")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(&tb.to_string()) && line.contains("0000000000000001 0000000000000002"), "{line}");
    let aside = dir.join(format!("seg-000002.fs2.damaged-{at}"));
    let kept = std::fs::read(&aside).unwrap();
    assert_eq!(kept[..100], before[at as usize..at as usize + 100], "the damaged bytes are kept");
    let (code, out, _) = fs2(&["check", d]);
    assert_eq!(code, 0, "after the salvage: {out}");
    let s = Storage::open(&dir, real_opts()).unwrap();
    assert_eq!(load(&s, 1).unwrap().unwrap(), b"a1", "the previous revision");
    assert_eq!(load(&s, 2).unwrap(), None);
    commit(&s, &[(9, "writable again")]);
}

/// Item 9: the current header slot of a segment an append merge wrote into is damaged;
/// the other slot names the merged-away source. That is damage of this segment's
/// header, not a missing file: reads are served, and `--salvage` rewrites the slot.
#[test]
fn damaged_current_slot_of_an_appended_segment_is_damage_not_a_missing_file() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    let s = Storage::create(&dir, real_opts()).unwrap();
    commit(&s, &[(1, "one")]);
    s.rotate().unwrap();
    commit(&s, &[(2, "two")]);
    s.rotate().unwrap();
    commit(&s, &[(3, "three")]);
    s.merge_with(&Policy::Named(vec![seg(1), seg(2)]), Strategy::Append(AsOf::Source)).unwrap().unwrap();
    drop(s);
    let path = dir.join("seg-000002.fs2");
    let b = std::fs::read(&path).unwrap();
    let h = Slot::in_force(&b).unwrap();
    assert!(h.prev.is_empty() && h.generation >= 2);
    xor(&path, slot_offset(h.generation) + 12); // its CRC

    let s = Storage::open(&dir, ro()).unwrap();
    let damage = s.open_damage().join("\n");
    assert!(damage.contains("seg-000002.fs2") && damage.contains("slot is damaged"), "{damage}");
    for (o, v) in [(1, "one"), (2, "two"), (3, "three")] {
        assert_eq!(load(&s, o).unwrap().unwrap(), v.as_bytes());
    }
    drop(s);
    let (code, out, _) = fs2(&["check", d]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("seg-000002.fs2") && !out.contains("No such file"), "{out}");
    let (_, out, err) = fs2(&["check", d, "--repair", "--salvage"]);
    assert!(out.contains("rewrote the damaged header"), "{out}{err}");
    let (code, out, _) = fs2(&["check", d]);
    assert_eq!(code, 0, "after the salvage: {out}");
    let s = Storage::open(&dir, real_opts()).unwrap();
    assert_eq!(load(&s, 1).unwrap().unwrap(), b"one");
    commit(&s, &[(9, "writable again")]);
}

/// The sealed length is in the header slot of every sealed segment: a rotation writes
/// generation 2 into slot B with flag 1 and the file's length (known bytes; FORMAT.md).
#[test]
fn sealed_segments_record_their_length_in_the_header_slot() {
    use common::bytes::crc;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let s = Storage::create(&dir, real_opts()).unwrap();
    commit(&s, &[(1, "one")]);
    s.rotate().unwrap();
    drop(s);
    let b = std::fs::read(dir.join("seg-000001.fs2")).unwrap();
    let slot = &b[2108..2108 + 1980];
    let len = b.len() as u64;
    assert_eq!(slot_offset(2), 2108);
    assert_eq!(slot[..16].to_vec(), [&2u64.to_le_bytes()[..], &[0, 0, 1, 0], &slot[12..16]].concat());
    assert_eq!(slot[1972..1980], len.to_le_bytes());
    let want = crc32c::crc32c_append(crc(&slot[..12]), &slot[1972..1980]);
    assert_eq!(u32::from_le_bytes(slot[12..16].try_into().unwrap()), want);
    assert!(slot[16..1972].iter().all(|&x| x == 0), "no previous segment");
    let h = Slot::in_force(&b).unwrap();
    assert_eq!((h.generation, h.sealed_len), (2, Some(len)));
}

/// Backward compatibility: a segment sealed before lengths were recorded (slot without
/// the flag) still opens; cut at a record boundary, its index is rebuilt from what is
/// left, and `check --repair` says which transactions may be lost and exits 5.
#[test]
fn old_segment_without_a_recorded_length_cut_at_a_record_boundary_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let d = dir.to_str().unwrap();
    let s = Storage::create(&dir, real_opts()).unwrap();
    let t1 = commit(&s, &[(1, "one")]);
    commit(&s, &[(2, "two")]);
    s.rotate().unwrap();
    commit(&s, &[(3, "three")]);
    let cut = txn_offsets(&s, "seg-000001.fs2")[1].1;
    drop(s);
    // Make seg 1 look like an old segment: a newer slot without the sealed length.
    let path = dir.join("seg-000001.fs2");
    let b = std::fs::read(&path).unwrap();
    let h = Slot::in_force(&b).unwrap();
    let old = Slot { generation: h.generation + 1, sealed_len: None, ..h };
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &old.bytes(), slot_offset(old.generation)).unwrap();
    assert_eq!(fs2(&["check", d]).0, 0, "an old segment opens and checks");
    f.set_len(cut).unwrap();
    drop(f);
    let (code, out, _) = fs2(&["check", d, "--repair"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains(&format!("the transactions after {t1} are lost")), "{out}");
    let s = Storage::open(&dir, real_opts()).unwrap();
    assert_eq!(load(&s, 1).unwrap().unwrap(), b"one");
    assert_eq!(load(&s, 3).unwrap().unwrap(), b"three");
}

/// Item 3, swept: every past segment of the campaign storage cut at every multiple of 8
/// (record boundaries included). Each cut is detected (the open reports damage) and
/// contained (the open succeeds, no read answers wrong data, objects without a revision
/// in the cut segment read exactly), and a repairing `check` never reports success.
#[test]
fn truncation_campaign_of_past_segments_is_always_detected() {
    let t0 = Instant::now();
    let v = build();
    let t = truth(&v);
    let mut failures = Vec::new();
    let mut cuts = 0;
    for (name, len) in t.files.iter().filter(|(n, _)| *n != t.active) {
        let path = PathBuf::from(DIR).join(name);
        for cut in (0..*len).step_by(8) {
            cuts += 1;
            let ctx = format!("{name} cut at {cut} of {len}");
            let copy = v.crash(CrashMode::AllWritten);
            copy.open(&path, true).unwrap().set_len(cut).unwrap();
            let res = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
                let s = Storage::open(Path::new(DIR), Options { read_only: true, ..opts(&copy) })
                    .map_err(|e| format!("read-only open failed: {e}"))?;
                if s.open_damage().is_empty() {
                    return Err(format!("not reported: {:?}", s.open_warnings()));
                }
                // The lost transactions may have held any object: objects whose current
                // revision is in a newer segment read exactly; others may fail.
                let cut_seg = SegmentName::from_file_name(name).unwrap();
                for o in 1..=12u64 {
                    let newer = t.current_seg[&o].first > cut_seg.last;
                    match load(&s, o) {
                        Ok(Some(d)) if d == t.data[&o] => {}
                        Err(_) if !newer => {}
                        other => return Err(format!("oid {o}: {other:?}")),
                    }
                }
                for (r, want) in &t.reads {
                    if let Ok(got) = r.run(&s) {
                        if &got != want {
                            return Err(format!("WRONG ANSWER to {r:?}: {got}"));
                        }
                    }
                }
                drop(s);
                let r = filestorage2::check::check(Path::new(DIR), true, opts(&copy), &mut |_, _| {})
                    .map_err(|e| format!("check --repair: {e}"))?;
                if r.ok() {
                    return Err(format!("check --repair reports ok: {:?}", r.repaired));
                }
                if cut % 64 == 0 {
                    // The salvage re-seals what is left: then the storage checks ok and
                    // still answers nothing wrong.
                    let said = filestorage2::check::salvage(Path::new(DIR), opts(&copy))
                        .map_err(|e| format!("salvage: {e}"))?;
                    if !said.iter().any(|l| l.contains("lost")) {
                        return Err(format!("salvage said nothing lost: {said:?}"));
                    }
                    let r = filestorage2::check::check(Path::new(DIR), false, opts(&copy), &mut |_, _| {})
                        .map_err(|e| format!("check after salvage: {e}"))?;
                    if !r.ok() {
                        return Err(format!("check after salvage: {:?}", r.problems));
                    }
                    let s = Storage::open(Path::new(DIR), opts(&copy)).map_err(|e| e.to_string())?;
                    for o in 1..=12u64 {
                        if let Ok(Some(d)) = load(&s, o) {
                            if t.current_seg[&o].first > cut_seg.last && d != t.data[&o] {
                                return Err(format!("after salvage, oid {o}: {d:?}"));
                            }
                        }
                    }
                    let mut w = s.begin();
                    w.store(Oid(99), b"x").map_err(|e| e.to_string())?;
                    w.commit().map_err(|e| format!("commit after salvage: {e}"))?;
                }
                Ok(())
            }));
            match res {
                Err(_) => failures.push(format!("{ctx}: PANIC")),
                Ok(Err(e)) => failures.push(format!("{ctx}: {e}")),
                Ok(Ok(())) => {}
            }
        }
    }
    println!("truncation campaign: {cuts} cuts of past segments, every one detected and contained; {:?}", t0.elapsed());
    assert!(
        failures.is_empty(),
        "{} bad outcomes, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(3000)].join("\n")
    );
}

/// A damaged transaction in a past segment costs that segment's rest in a transaction
/// iteration (one error item), not the segments after it: `fs2 dump` shows them and
/// exits 5.
#[test]
fn iterations_go_on_after_a_damaged_past_segment() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let s = Storage::create(&dir, real_opts()).unwrap();
    let ta = commit(&s, &[(1, "a")]);
    s.rotate().unwrap();
    let tb = commit(&s, &[(2, "b")]);
    s.rotate().unwrap();
    let tc = commit(&s, &[(3, "c")]);
    let at = txn_offsets(&s, "seg-000002.fs2")[0].1;
    drop(s);
    xor(&dir.join("seg-000002.fs2"), at + 20); // the transaction header of tb
    let s = Storage::open(&dir, ro()).unwrap();
    let all: Vec<_> = s.transactions(Tid::ZERO, Tid::MAX).collect();
    assert_eq!(all.len(), 3, "ta, the damaged segment's error, tc");
    assert_eq!(all[0].as_ref().unwrap().tid, ta);
    assert!(all[1].as_ref().is_err_and(|e| e.is_corruption()));
    assert_eq!(all[2].as_ref().unwrap().tid, tc);
    drop(s);
    let (code, out, err) = fs2(&["dump", dir.to_str().unwrap()]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(out.contains(&ta.to_string()) && out.contains(&tc.to_string()) && !out.contains(&tb.to_string()), "{out}");
}

/// Where the oid filter of the (single-region) sealed segment `b` lies: (start, len).
fn filter_of(b: &[u8]) -> (usize, usize) {
    let t = &b[b.len() - 128..];
    let le = |o: usize| u64::from_le_bytes(t[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 2, "trailer version 2");
    let (index, count) = (le(8), le(16));
    let start = index + (24 + 16 * count + 4 * count.div_ceil(256)).div_ceil(8) * 8;
    (start, b.len() - 128 - start)
}

/// Rewrite the oid filter of segment file `path` with `f` and make both CRCs (filter's,
/// trailer's) match again: a forged filter that every check accepts.
fn forge_filter(path: &Path, f: impl Fn(&mut [u8])) {
    let mut b = std::fs::read(path).unwrap();
    let (start, len) = filter_of(&b);
    f(&mut b[start..start + len]);
    let fc = crc32c::crc32c(&b[start..start + len]);
    let n = b.len();
    let t = &mut b[n - 128..];
    t[116..120].copy_from_slice(&fc.to_le_bytes());
    let tc = crc32c::crc32c_append(crc32c::crc32c(&t[..112]), &t[116..120]);
    t[112..116].copy_from_slice(&tc.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

/// A storage of 600 random 64-bit oids in two sealed segments (300 each, interleaved
/// ranges); returns the oids with their data.
fn filtered_storage(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let s = Storage::create(dir, real_opts()).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut objs = Vec::new();
    for seg in 0..2 {
        for chunk in 0..3 {
            let mut txn = s.begin();
            for i in 0..100 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let data = format!("object {seg}.{chunk}.{i}").into_bytes();
                txn.store(Oid(x), &data).unwrap();
                objs.push((x, data));
            }
            txn.commit().unwrap();
        }
        s.rotate().unwrap();
    }
    objs
}

/// Every object reads back exactly and absent oids read as absent.
fn all_exact(s: &Storage, objs: &[(u64, Vec<u8>)]) -> Result<(), String> {
    for (o, d) in objs {
        match load(s, *o) {
            Ok(Some(got)) if &got == d => {}
            other => return Err(format!("oid {o:#x}: {other:?}")),
        }
        for miss in [o ^ 1, o.wrapping_add(977)] {
            if !objs.iter().any(|(x, _)| *x == miss) && !matches!(load(s, miss), Ok(None)) {
                return Err(format!("absent oid {miss:#x} found"));
            }
        }
    }
    Ok(())
}

/// Issue 16 item 5: lookups consult the oid filter (a forged empty filter that passes
/// its CRC hides the segment's objects: the test that the filter is used at all), and a
/// damaged filter, or a damaged filter CRC, is detected and ignored: every byte of both
/// flipped in turn, never a wrong answer.
#[test]
fn a_flipped_oid_filter_or_its_crc_is_ignored_never_a_wrong_answer() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let objs = filtered_storage(&dir);
    let path = dir.join("seg-000001.fs2");
    let good = std::fs::read(&path).unwrap();
    all_exact(&Storage::open(&dir, ro()).unwrap(), &objs).unwrap();

    forge_filter(&path, |f| f.fill(0));
    let s = Storage::open(&dir, ro()).unwrap();
    let hidden = objs[..300].iter().filter(|(o, _)| matches!(load(&s, *o), Ok(None))).count();
    assert_eq!(hidden, 300, "an empty filter that passes its CRC hides every object of the segment");
    drop(s);
    let problems = |dir: &Path| filestorage2::check::check(dir, false, ro(), &mut |_, _| {}).unwrap().problems;
    let p = problems(&dir);
    assert!(p.len() == 1 && p[0].contains("the oid filter rules out oid"), "check reports a wrong filter: {p:?}");

    let (start, len) = filter_of(&good);
    assert_eq!(len, 3000usize.div_ceil(256) * 32, "10 bits per oid, in 32-byte blocks");
    let n = good.len();
    let mut flips = 0;
    for off in (start..start + len).chain(n - 12..n - 8) {
        let mut b = good.clone();
        b[off] ^= 0xff;
        std::fs::write(&path, &b).unwrap();
        let s = Storage::open(&dir, ro()).unwrap();
        all_exact(&s, &objs).unwrap_or_else(|e| panic!("flip at {off}: {e}"));
        drop(s);
        if off == start || off == n - 10 {
            assert!(!problems(&dir).is_empty(), "check reports the flip at {off}");
        }
        flips += 1;
    }
    assert_eq!(flips, len + 4);
    std::fs::write(&path, &good).unwrap();
    assert_eq!(problems(&dir), Vec::<String>::new());
}
