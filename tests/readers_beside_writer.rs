//! Read-only commands in other processes beside a live writer process (issue 10, item 6).
//!
//! A writer process (this test binary run again in writer mode) commits, votes and aborts,
//! rotates, and merges (copy and `--append` both ways), continuously, with the default 4 MiB
//! preallocation; every so often it closes the storage and works through `fs2 commit`,
//! `fs2 rotate` and `fs2 merge` processes instead, so writers also come and go. Meanwhile
//! reader threads run `fs2 cat`, `ls`, `info`, `history`, `dump` and `check` (separate processes,
//! each a read-only open) `FS2_READERS_OPENS` times (default 3,000; at least 1,000) in total.
//!
//! Asserted: no reader exits non-zero or prints a warning, `check` always says ok, and
//! every value, tid and (oid, tid) pair a reader shows was committed: values name their oid
//! and a sequence number, and the writer logs each acknowledged commit.
//!
//! Below it, each race is also made to happen at a chosen moment, in one process, through
//! a `Vfs` that acts for the writer at the first large read of the active segment.

use filestorage2::merge::{Policy, Strategy};
use filestorage2::{AsOf, Error, Oid, Options, Storage, Tid};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::Rng;

const OIDS: u64 = 40;
const WRITER_ENV: &str = "FS2_TEST_WRITER_DIR";
/// The writer stops by itself after this long, should the test that started it be gone.
const WRITER_MAX: Duration = Duration::from_secs(300);

fn oid(i: u64) -> Oid {
    Oid(0x10 + i)
}

/// The value of `oid` written with sequence number `seq`: names both, with a filler whose
/// length and bytes follow from `seq`, so a reader can tell a whole value from anything else.
fn value(oid: Oid, seq: u64) -> Vec<u8> {
    let mut v = format!("v:{oid}:{seq}:").into_bytes();
    v.extend((0..seq % 300).map(|i| b'a' + ((i + seq) % 26) as u8));
    v.extend_from_slice(b":end");
    v
}

/// The sequence number of a value read back for `oid`, if it is a whole value of `oid`.
fn parse_value(oid: Oid, v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let rest = s.strip_prefix(&format!("v:{oid}:"))?;
    let seq: u64 = rest.split(':').next()?.parse().ok()?;
    (value(oid, seq) == v).then_some(seq)
}

/// The writer's log of acknowledged commits: `tid seq:oid seq:oid ...` per line.
struct Log(std::fs::File);

impl Log {
    fn open(path: &Path) -> Log {
        Log(std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap())
    }
    fn ack(&mut self, tid: Tid, writes: &[(u64, Oid)]) {
        let w: Vec<String> = writes.iter().map(|(s, o)| format!("{s}:{o}")).collect();
        writeln!(self.0, "{tid} {}", w.join(" ")).unwrap();
    }
}

/// What the writer acknowledged.
#[derive(Default)]
struct Committed {
    tids: BTreeSet<Tid>,
    /// (oid, seq) of every acknowledged write, and (oid, tid).
    values: BTreeSet<(Oid, u64)>,
    revisions: BTreeSet<(Oid, Tid)>,
}

fn read_log(path: &Path) -> Committed {
    let mut c = Committed::default();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let mut f = line.split(' ');
        let tid: Tid = f.next().unwrap().parse().unwrap();
        c.tids.insert(tid);
        for w in f {
            let (s, o) = w.split_once(':').unwrap();
            let o: Oid = o.parse().unwrap();
            c.values.insert((o, s.parse().unwrap()));
            c.revisions.insert((o, tid));
        }
    }
    c
}

fn fs2_command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fs2"));
    c.args(args).env("RUST_LOG", "warn");
    c
}

// ---------------------------------------------------------------------------------------
// The writer process.

/// The writer's work: `ops` steps on the open storage, or through `fs2` processes.
struct WriterState {
    dir: PathBuf,
    scratch: PathBuf,
    log: Log,
    rng: Rng,
    seq: u64,
    commits: u64,
    rotations: u64,
    merges: u64,
}

impl WriterState {
    /// 1-4 distinct random oids, each with a fresh sequence number.
    fn writes(&mut self) -> Vec<(u64, Oid)> {
        let mut oids = BTreeSet::new();
        for _ in 0..1 + self.rng.below(4) {
            oids.insert(oid(self.rng.below(OIDS)));
        }
        oids.into_iter()
            .map(|o| {
                self.seq += 1;
                (self.seq, o)
            })
            .collect()
    }

    /// A merge of the past segments: copy (keep at most 2), or the oldest two appended.
    fn merge_choice(&mut self, pasts: usize) -> Option<(Policy, Strategy)> {
        let m = self.merges;
        self.merges += 1;
        match m % 3 {
            0 if pasts > 2 => Some((Policy::KeepAtMost(2), Strategy::Copy)),
            1 | 2 if pasts >= 2 => {
                let as_of = if m % 3 == 1 { AsOf::Source } else { AsOf::Target };
                Some((Policy::KeepAtMost(pasts - 1), Strategy::Append(as_of)))
            }
            _ => None,
        }
    }

    fn library_session(&mut self, ops: u64) {
        let s = Storage::open(&self.dir, Options::default()).unwrap();
        for _ in 0..ops {
            let writes = self.writes();
            let mut t = s.begin();
            for (seq, o) in &writes {
                t.store(*o, &value(*o, *seq)).unwrap();
            }
            let r = match self.rng.below(10) {
                0 => {
                    // Voted, then aborted: a `PPPP` record stays in the file as padding.
                    t.vote().unwrap();
                    t.abort();
                    continue;
                }
                1 | 2 => t.vote().and_then(|()| t.finish()),
                _ => t.commit(),
            };
            let tid = r.unwrap();
            self.log.ack(tid, &writes);
            self.commits += 1;
            if self.commits.is_multiple_of(12) {
                s.rotate().unwrap();
                self.rotations += 1;
                if self.rotations.is_multiple_of(2) {
                    let pasts = s.past_segment_stats().unwrap().len();
                    if let Some((policy, strategy)) = self.merge_choice(pasts) {
                        match s.merge_with(&policy, strategy) {
                            Ok(_) | Err(Error::Busy(_)) => {}
                            Err(e) => panic!("merge: {e}"),
                        }
                    }
                }
            }
        }
    }

    fn run_fs2(&self, args: &[&str]) -> String {
        let o = fs2_command(args).output().unwrap();
        assert!(o.status.success(), "writer: fs2 {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    fn cli_session(&mut self, ops: u64) {
        let d = self.dir.to_str().unwrap().to_string();
        for _ in 0..ops {
            let writes = self.writes();
            let mut args = vec!["commit".to_string(), d.clone()];
            for (seq, o) in &writes {
                let f = self.scratch.join(format!("{seq}"));
                std::fs::write(&f, value(*o, *seq)).unwrap();
                args.push(format!("{o}={}", f.display()));
            }
            let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
            let out = self.run_fs2(&args);
            let tid = out.trim().strip_prefix("committed ").expect("committed <tid>").parse().unwrap();
            self.log.ack(tid, &writes);
            self.commits += 1;
            if self.commits.is_multiple_of(6) {
                self.run_fs2(&["rotate", &d]);
                self.rotations += 1;
                let pasts = Storage::open(&self.dir, Options::read_only()).unwrap().past_segment_stats().unwrap().len();
                match self.merge_choice(pasts) {
                    Some((_, Strategy::Copy)) => drop(self.run_fs2(&["merge", &d, "--policy", "--keep", "2"])),
                    Some((_, Strategy::Append(a))) => {
                        let how = if a == AsOf::Source { "source-end" } else { "target-end" };
                        let keep = (pasts - 1).to_string();
                        self.run_fs2(&["merge", &d, "--policy", "--keep", &keep, "--append", how]);
                    }
                    None => {}
                }
            }
        }
    }
}

/// Writer mode: runs only when the test below starts this binary with `WRITER_ENV` set.
#[test]
fn writer_process() {
    let Ok(dir) = std::env::var(WRITER_ENV) else { return };
    let dir = PathBuf::from(dir);
    let stop = dir.with_extension("stop");
    let scratch = dir.with_extension("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut w = WriterState {
        log: Log::open(&dir.with_extension("log")),
        dir,
        scratch,
        rng: Rng(7),
        seq: 1_000,
        commits: 0,
        rotations: 0,
        merges: 0,
    };
    let started = Instant::now();
    let mut session = 0u64;
    while !stop.exists() && started.elapsed() < WRITER_MAX {
        session += 1;
        if session.is_multiple_of(4) {
            w.cli_session(12);
        } else {
            w.library_session(120);
        }
    }
    eprintln!("writer: {} commits, {} rotations, {} merges, {session} sessions", w.commits, w.rotations, w.merges);
}

// ---------------------------------------------------------------------------------------
// The test: readers beside the writer.

/// Child processes, killed and reaped when dropped (a failed test leaves none behind).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait for `c` to exit, at most `limit`.
fn wait_for(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// What readers saw, checked against the writer's log at the end.
#[derive(Default)]
struct Seen {
    failures: Vec<String>,
    values: Vec<(Oid, u64)>,
    tids: Vec<Tid>,
    revisions: Vec<(Oid, Tid)>,
    counts: BTreeMap<&'static str, u64>,
}

/// Run one read-only command and record what it showed.
fn read_once(dir: &str, rng: &mut Rng, seen: &Mutex<Seen>) {
    let o = oid(rng.below(OIDS));
    let os = o.to_string();
    let (cmd, args): (&'static str, Vec<&str>) = match rng.below(20) {
        0..=6 => ("cat", vec!["cat", dir, &os]),
        7..=10 => ("history", vec!["history", dir, &os]),
        11..=13 => ("ls", vec!["ls", dir]),
        14..=15 => ("info", vec!["info", dir]),
        16 => ("dump", vec!["dump", dir]),
        _ => ("check", vec!["check", dir]),
    };
    let out: Output = fs2_command(&args).stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut s = seen.lock().unwrap();
    *s.counts.entry(cmd).or_default() += 1;
    if !out.status.success() || !stderr.is_empty() {
        s.failures.push(format!("fs2 {args:?}: {}\nstderr: {stderr}stdout: {stdout}", out.status));
        return;
    }
    let bad = |s: &mut Seen, why: &str| s.failures.push(format!("fs2 {args:?}: {why}\nstdout: {stdout}"));
    match cmd {
        "cat" => match parse_value(o, &out.stdout) {
            Some(seq) => s.values.push((o, seq)),
            None => bad(&mut s, "not a whole value of this oid"),
        },
        "history" => {
            for line in stdout.lines() {
                match line.split_whitespace().next().and_then(|t| t.parse::<Tid>().ok()) {
                    Some(t) => s.revisions.push((o, t)),
                    None => bad(&mut s, "a history line without a tid"),
                }
            }
        }
        "ls" => {
            let mut n = 0;
            for line in stdout.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                match (f.first().and_then(|x| x.parse::<Oid>().ok()), f.get(2).and_then(|x| x.parse::<Tid>().ok())) {
                    (Some(o), Some(t)) => s.revisions.push((o, t)),
                    _ => bad(&mut s, "an ls line without oid and tid"),
                }
                n += 1;
            }
            if n != OIDS {
                bad(&mut s, &format!("{n} objects listed, not {OIDS}"));
            }
        }
        "dump" => {
            for line in stdout.lines().filter(|l| l.starts_with("Trans #")) {
                let t = line.split_whitespace().find_map(|f| f.strip_prefix("tid="));
                match t.and_then(|t| t.parse::<Tid>().ok()) {
                    Some(t) => s.tids.push(t),
                    None => bad(&mut s, "a transaction without a tid"),
                }
            }
        }
        "info" => {
            let t = stdout.lines().find_map(|l| l.strip_prefix("last tid:")).and_then(|l| l.split_whitespace().next());
            match t.and_then(|t| t.parse::<Tid>().ok()) {
                Some(t) => s.tids.push(t),
                None => bad(&mut s, "no last tid"),
            }
        }
        _ => {
            if stdout.lines().last() != Some("ok") {
                bad(&mut s, "check did not say ok");
            }
        }
    }
}

#[test]
fn read_only_commands_beside_a_writer_process_never_fail() {
    let opens: u64 = std::env::var("FS2_READERS_OPENS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let limit = Duration::from_secs(240);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let log_path = dir.with_extension("log");
    {
        let s = Storage::create(&dir, Options::default()).unwrap();
        let mut tx = s.begin();
        let writes: Vec<(u64, Oid)> = (0..OIDS).map(|i| (i, oid(i))).collect();
        for (seq, o) in &writes {
            tx.store(*o, &value(*o, *seq)).unwrap();
        }
        let tid = tx.commit().unwrap();
        Log::open(&log_path).ack(tid, &writes);
    }
    let exe = std::env::current_exe().unwrap();
    let writer = Command::new(exe)
        .args(["--exact", "writer_process", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, &dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut children = Children(vec![writer]);

    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let readers: Vec<_> = (0..3u64)
        .map(|r| {
            let (done, seen, d) = (done.clone(), seen.clone(), dir.to_str().unwrap().to_string());
            std::thread::spawn(move || {
                let mut rng = Rng(100 + r);
                while done.fetch_add(1, Ordering::Relaxed) < opens && started.elapsed() < limit {
                    read_once(&d, &mut rng, &seen);
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let elapsed = started.elapsed();
    std::fs::write(dir.with_extension("stop"), b"").unwrap();
    let status = wait_for(&mut children.0[0], Duration::from_secs(60)).expect("the writer stops within 60 s");
    assert!(status.success(), "the writer process failed: {status}");

    let committed = read_log(&log_path);
    let s = seen.lock().unwrap();
    let total: u64 = s.counts.values().sum();
    eprintln!(
        "{total} read-only commands in {:.1} s beside {} commits: {:?}; {} failures",
        elapsed.as_secs_f64(),
        committed.tids.len(),
        s.counts,
        s.failures.len()
    );
    let shown: Vec<&String> = s.failures.iter().take(5).collect();
    assert!(s.failures.is_empty(), "{} of {total} read-only commands failed; the first:\n{shown:#?}", s.failures.len());
    assert!(total >= opens, "only {total} read-only commands ran within {limit:?}");
    for v in &s.values {
        assert!(committed.values.contains(v), "a reader saw value {v:?}, which was never committed");
    }
    for t in &s.tids {
        assert!(committed.tids.contains(t), "a reader saw tid {t}, which was never committed");
    }
    for r in &s.revisions {
        assert!(committed.revisions.contains(r), "a reader saw revision {r:?}, which was never committed");
    }
    // And the storage the writer left is whole.
    let out = fs2_command(&["check", dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "final check: {}", String::from_utf8_lossy(&out.stdout));
}

// ---------------------------------------------------------------------------------------
// Each race of a read-only open with a writer, made to happen at a chosen moment.

use filestorage2::vfs::{RealVfs, VFile, Vfs};
use std::fs::File;
use std::io;

/// What happens to the first large read of `path` (the scanner's 1 MiB chunk read; header
/// reads are 4 KiB): the writer in another process acts just before it, or the read sees
/// some bytes as they were before the writer wrote them.
enum Race {
    /// The file is cut to this length (a seal cutting off preallocated zeros).
    Truncate(u64),
    /// The bytes at this offset read as zeros (written after the read copied them).
    StaleZeros(u64, usize),
    /// Right after the first read of the header, the file holds these bytes (a merge
    /// appended to it and rewrote its header slot).
    ReplaceAfterHeader(Vec<u8>),
}

struct RaceVfs {
    path: PathBuf,
    race: Mutex<Option<Race>>,
}

struct RaceFile {
    f: Arc<dyn VFile>,
    vfs: Arc<RaceVfs>,
}

impl VFile for RaceFile {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let mut race = self.vfs.race.lock().unwrap();
        let race = match &*race {
            Some(Race::ReplaceAfterHeader(_)) if off == 0 && buf.len() == 4096 => race.take(),
            Some(Race::Truncate(_) | Race::StaleZeros(..)) if buf.len() >= 1 << 20 => race.take(),
            _ => None,
        };
        if let Some(Race::Truncate(len)) = race {
            File::options().write(true).open(&self.vfs.path)?.set_len(len)?;
        }
        self.f.read_exact_at(buf, off)?;
        if let Some(Race::StaleZeros(at, n)) = race {
            let s = (at - off) as usize;
            buf[s..s + n].fill(0);
        }
        if let Some(Race::ReplaceAfterHeader(bytes)) = race {
            std::fs::write(&self.vfs.path, bytes)?;
        }
        Ok(())
    }
    crate::vfile_passthrough!(f: write_all_at, sync, len, set_len, os_file);
}

/// `RealVfs`, with a race on the first large read of one file.
#[derive(Clone)]
struct Racing(Arc<RaceVfs>);

impl Vfs for Racing {
    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn VFile>> {
        let f = RealVfs.open(path, write)?;
        Ok(if path == self.0.path { Arc::new(RaceFile { f, vfs: self.0.clone() }) } else { f })
    }
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn VFile>> {
        RealVfs.create_new(path)
    }
    crate::real_vfs_passthrough!();
    fn writer_active(&self, dir: &Path) -> bool {
        RealVfs.writer_active(dir)
    }
}

/// A storage with three durable commits in its active segment (4 MiB preallocated), its
/// active segment's path, and the tids with the offsets of their transactions.
fn three_commits(dir: &Path) -> (PathBuf, Vec<(Tid, u64)>) {
    let s = Storage::create(dir, Options::default()).unwrap();
    for i in 0..3u64 {
        let mut t = s.begin();
        t.store(oid(i), &value(oid(i), i)).unwrap();
        t.commit().unwrap();
    }
    let txns = s.transactions(Tid::ZERO, Tid::MAX).map(|t| t.map(|t| (t.tid, t.offset))).collect::<Result<_, _>>();
    let active = s.segments().unwrap().pop().unwrap().path;
    (active, txns.unwrap())
}

fn racing_open(dir: &Path, active: &Path, race: Race) -> filestorage2::Result<Storage> {
    let vfs = Racing(Arc::new(RaceVfs { path: active.to_path_buf(), race: Mutex::new(Some(race)) }));
    let opened = Storage::open(dir, Options { vfs: Arc::new(vfs.clone()), ..Options::read_only() });
    assert!(vfs.0.race.lock().unwrap().is_none(), "the race happened");
    opened
}

fn assert_all_three(s: &Storage) {
    assert!(s.open_warnings().is_empty(), "{:?}", s.open_warnings());
    for i in 0..3 {
        assert_eq!(s.load(oid(i)).unwrap().unwrap().1, value(oid(i), i));
    }
}

/// A seal cuts the preallocated zeros off the active segment after a read-only open read
/// its length: the scan meets the end of the file early ("failed to fill whole buffer").
#[test]
fn read_only_open_while_a_seal_cuts_the_active_segment() {
    let t = tempfile::tempdir().unwrap();
    let (active, txns) = three_commits(t.path());
    let data_end = std::fs::metadata(&active).unwrap().len();
    assert!(data_end >= 4 << 20, "preallocated");
    let end_of_data = {
        let s = Storage::open(t.path(), Options::read_only()).unwrap();
        s.segments().unwrap().pop().unwrap().data_end
    };
    assert!(end_of_data > txns[2].1);
    let s = racing_open(t.path(), &active, Race::Truncate(end_of_data)).unwrap();
    assert_all_three(&s);
}

/// A read-only open reads the second transaction's first bytes before the writer wrote
/// them, and the third (which says the second was durable) after: not damage.
#[test]
fn read_only_open_reading_a_record_before_its_writer_is_not_damage() {
    let t = tempfile::tempdir().unwrap();
    let (active, txns) = three_commits(t.path());
    let s = racing_open(t.path(), &active, Race::StaleZeros(txns[1].1, 12)).unwrap();
    assert_all_three(&s);
    // The same bytes zeroed on disk are damage, found and reported as such.
    let f = File::options().write(true).open(&active).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0; 12], txns[1].1).unwrap();
    // (Contained: the open succeeds, reports it, and the damaged transaction's object
    // answers an error.)
    let s = Storage::open(t.path(), Options::read_only()).unwrap();
    assert!(s.open_damage().iter().any(|d| d.contains("this is damage")), "{:?}", s.open_damage());
    assert!(s.load(oid(1)).unwrap_err().is_corruption());
    assert_eq!(s.load(oid(2)).unwrap().unwrap().1, value(oid(2), 2));
}

/// A record voted when a read-only open scans is finished afterwards: the snapshot does
/// not grow (a second reading of it, like `check`'s or `transactions`', finds the same).
#[test]
fn read_only_snapshot_does_not_take_a_record_finished_after_it() {
    let t = tempfile::tempdir().unwrap();
    three_commits(t.path());
    let s = Storage::open(t.path(), Options::default()).unwrap();
    let mut v = s.begin();
    v.store(oid(9), b"voted").unwrap();
    v.vote().unwrap();
    let ro = Storage::open(t.path(), Options::read_only()).unwrap();
    v.finish().unwrap();
    assert_eq!(ro.transactions(Tid::ZERO, Tid::MAX).count(), 3);
    assert_eq!(ro.load(oid(9)).unwrap(), None);
    let report = filestorage2::check::check(t.path(), false, Options::read_only(), &mut |_, _| {}).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

/// An unfinished record at the end of the active segment is a write in progress while a
/// writer holds the lock (no warning), and a crash's leftover once none does.
#[test]
fn unfinished_tail_is_reported_only_without_a_writer() {
    let t = tempfile::tempdir().unwrap();
    three_commits(t.path());
    let s = Storage::open(t.path(), Options::default()).unwrap();
    let seg = s.segments().unwrap().pop().unwrap();
    let f = File::options().write(true).open(&seg.path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"TTTT\x00\x01\x00\x00\x00\x00\x00\x00\x17", seg.data_end).unwrap();
    assert!(RealVfs.writer_active(t.path()));
    let ro = Storage::open(t.path(), Options::read_only()).unwrap();
    assert!(ro.open_warnings().is_empty(), "a write in progress: {:?}", ro.open_warnings());
    assert!(ro.ignored_tail().is_none(), "a write in progress is not an ignored tail");
    assert_eq!(ro.transactions(Tid::ZERO, Tid::MAX).count(), 3);
    drop(s);
    // Another test thread's child may hold an inherited descriptor of the lock between
    // its fork and exec for a moment: wait that out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while RealVfs.writer_active(t.path()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!RealVfs.writer_active(t.path()));
    let ro = Storage::open(t.path(), Options::read_only()).unwrap();
    let w = ro.open_warnings();
    assert!(w.len() == 1 && w[0].contains("unreadable bytes at offset"), "{w:?}");
    assert!(ro.ignored_tail().is_some());
    // The probe did not get in the way of a writer.
    drop(Storage::open(t.path(), Options::default()).unwrap());
}

/// A semi-sequential merge appends to a segment and records its intent in the header
/// between a read-only open's read of that header and of the file's length: the appended
/// bytes are not the segment's own (they would repeat its predecessor's transactions).
#[test]
fn read_only_open_while_a_merge_appends_to_a_segment() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("db");
    let s = Storage::create(&d, Options { preallocate: 0, ..Options::default() }).unwrap();
    for i in 0..3u64 {
        let mut x = s.begin();
        x.store(oid(i), &value(oid(i), i)).unwrap();
        x.commit().unwrap();
        s.rotate().unwrap();
    }
    let names: Vec<_> = s.segments().unwrap().iter().map(|g| (g.name, g.path.clone())).collect();
    let ((f1, f1_path), (f2, f2_path)) = (names[1].clone(), names[2].clone());
    let before = std::fs::read(&f2_path).unwrap();
    s.merge_with(&Policy::Named(vec![f1, f2]), Strategy::Append(AsOf::Source)).unwrap();
    drop(s);
    // The target as it is between the append and the switch: the newer header slot (the
    // switch) torn, the older one (the intent: sealed length, previous = f1) in force.
    let mut appended = std::fs::read(&f2_path).unwrap();
    let generation = |at: usize| u64::from_le_bytes(appended[at..at + 8].try_into().unwrap());
    let newer = if generation(128) > generation(2108) { 128 } else { 2108 };
    appended[newer + 12] ^= 0xff;
    assert!(appended.len() > before.len());
    // Back to the chain before the merge; the reader's first header read of f2 sees it.
    std::fs::write(&f2_path, &before).unwrap();
    std::fs::rename(d.join("archive").join(f1_path.file_name().unwrap()), &f1_path).unwrap();
    let ro = racing_open(&d, &f2_path, Race::ReplaceAfterHeader(appended)).unwrap();
    assert!(ro.open_warnings().is_empty(), "{:?}", ro.open_warnings());
    for i in 0..3 {
        assert_eq!(ro.load(oid(i)).unwrap().unwrap().1, value(oid(i), i));
    }
    assert_eq!(ro.transactions(Tid::ZERO, Tid::MAX).count(), 3);
}

/// Damage is not a race: a read-only open of a damaged storage while a writer holds it
/// reports the damage (once) after one more attempt, and serves the rest; it neither
/// drops the damage as the writer's business nor loops.
#[test]
fn read_only_open_beside_a_writer_reports_damage_once() {
    let t = tempfile::tempdir().unwrap();
    let (active, txns) = three_commits(t.path());
    let f = File::options().write(true).open(&active).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0; 12], txns[1].1).unwrap();
    let writer = Storage::open(t.path(), Options::default()).unwrap();
    assert!(writer.open_damage().len() == 1, "{:?}", writer.open_damage());
    let started = Instant::now();
    for _ in 0..20 {
        let s = Storage::open(t.path(), Options::read_only()).unwrap();
        assert_eq!(s.open_damage().len(), 1, "{:?}", s.open_damage());
        let line = &s.open_damage()[0];
        assert!(line.contains("this is damage"), "{line}");
        assert_eq!(s.open_warnings().iter().filter(|w| *w == line).count(), 1, "{:?}", s.open_warnings());
        assert!(s.load(oid(1)).unwrap_err().is_corruption());
        assert_eq!(s.load(oid(2)).unwrap().unwrap().1, value(oid(2), 2));
    }
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    drop(writer);
}
