//! P8–P10: the mounted view against plain files holding the same bytes on the same
//! disk, in the same run: warm and cold `cat` of small objects, warm `ls -l` of a large
//! directory, and `ls head | wc -l` over many objects (time and the daemon's RSS).
//! P11–P12: durable commits per second through the mount next to their peers in the same
//! run: a shell loop against the same loop on tmpfs plus one fsync; a Rust client with
//! std::fs calls against the engine API; 8 such clients against one.

use super::report::{fmt_count, fmt_kib, fmt_ns, fmt_ratio, Row};
use super::system::proc_status_kib;
use super::workload::{build, object_data};
use super::{Bench, Oids};
use filestorage2::fuse::{spawn, MountOptions};
use filestorage2::{Error, Oid, Options, Result, Storage};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (VmRSS, RssAnon) in KiB.
type Mem = (u64, u64);

/// Names per file in P10's directory of hard links (ext4's limit is 65,000).
const LINKS_PER_FILE: u64 = 50_000;

/// Timed repetitions of a warm measurement (the median is reported).
const WARM_RUNS: usize = 7;

/// Run `args` (output discarded) and time it.
fn timed(args: &[&str], paths: &[PathBuf]) -> Result<Duration> {
    let t = Instant::now();
    let st = Command::new(args[0])
        .args(&args[1..])
        .args(paths)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| Error::io(Path::new(args[0]), "run", e))?;
    let d = t.elapsed();
    if !st.success() {
        return Err(Error::invalid(format!("bench: {args:?} failed ({st})")));
    }
    Ok(d)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Drop `path`'s pages from the page cache (it must be synced).
fn evict(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    f.sync_all().map_err(|e| Error::io(path, "sync", e))?;
    // SAFETY: a valid open descriptor; fadvise only drops clean cached pages.
    unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_DONTNEED) };
    Ok(())
}

impl Bench<'_> {
    pub(super) fn mounted(&mut self, p8: bool, p9: bool, p10: bool) -> Result<()> {
        if !Path::new("/dev/fuse").exists() {
            self.notes.push("P8-P10 skipped: /dev/fuse is missing".into());
            return Ok(());
        }
        let a = self.args;
        let (files, size, dir_entries) = (a.mount_files, a.mount_file_size, a.mount_dir_entries.max(a.mount_files));
        // One storage of `dir_entries` objects (all in a past segment) and the same bytes
        // as plain files; P8/P9 read the first `files` of them.
        let sdir = self.root.join("p8-storage");
        let (s, _) = build(&sdir, Oids::Dense, dir_entries, size)?;
        let plain = self.root.join("p8-plain");
        std::fs::create_dir_all(&plain).map_err(|e| Error::io(&plain, "create", e))?;
        let mut buf = Vec::new();
        for i in 0..dir_entries {
            let oid = Oids::Dense.oid(i);
            object_data(oid, size, &mut buf);
            let p = plain.join(Oid(oid).to_string());
            std::fs::write(&p, &buf).map_err(|e| Error::io(&p, "write", e))?;
        }
        let names: Vec<String> = (0..files).map(|i| Oid(Oids::Dense.oid(i)).to_string()).collect();
        let segs: Vec<PathBuf> = s.segments()?.into_iter().map(|x| x.path).collect();
        let mnt = self.root.join("p8-mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| Error::io(&mnt, "create", e))?;
        let head = mnt.join("head");
        let in_mount: Vec<PathBuf> = names.iter().map(|n| head.join(n)).collect();
        let in_plain: Vec<PathBuf> = names.iter().map(|n| plain.join(n)).collect();

        // Cold first: nothing of either side in the page cache, a fresh mount.
        for p in in_plain.iter().chain(&segs) {
            evict(p)?;
        }
        let m = spawn(s.clone(), &mnt, &MountOptions::default()).map_err(|e| Error::io(&mnt, "mount", e))?;
        let cold_plain = timed(&["cat"], &in_plain)?;
        let cold_mount = timed(&["cat"], &in_mount)?;
        let what = format!("{files} objects × {size} B");
        if p9 {
            let r = cold_mount.as_secs_f64() / cold_plain.as_secs_f64();
            self.rows.push(Row {
                id: "P9".into(),
                workload: format!("cold `cat` of {what} (first pass after mount, page cache dropped)"),
                measured: fmt_ns(cold_mount.as_nanos() as f64),
                reference: format!("plain files {}", fmt_ns(cold_plain.as_nanos() as f64)),
                ratio: fmt_ratio(r),
                target: "≤ 5× plain files".into(),
                met: Some(r <= 5.0),
            });
        }
        if p8 {
            let (mut tm, mut tp) = (Vec::new(), Vec::new());
            timed(&["cat"], &in_mount)?;
            for _ in 0..WARM_RUNS {
                tp.push(timed(&["cat"], &in_plain)?);
                tm.push(timed(&["cat"], &in_mount)?);
            }
            let (tm, tp) = (median(tm), median(tp));
            // The same through @<tid>/, whose names have a long TTL (head/ names: 1 s).
            let at = mnt.join(format!("@{}", s.last_tid()));
            let in_at: Vec<PathBuf> = names.iter().map(|n| at.join(n)).collect();
            timed(&["cat"], &in_at)?;
            let ta = median((0..WARM_RUNS).map(|_| timed(&["cat"], &in_at)).collect::<Result<Vec<_>>>()?);
            let r = tm.as_secs_f64() / tp.as_secs_f64();
            self.rows.push(Row {
                id: "P8".into(),
                workload: format!("warm `cat` of {what} (median of {WARM_RUNS})"),
                measured: fmt_ns(tm.as_nanos() as f64),
                reference: format!("plain files {}", fmt_ns(tp.as_nanos() as f64)),
                ratio: fmt_ratio(r),
                target: "≤ 1.5× plain files".into(),
                met: Some(r <= 1.5),
            });
            let r = ta.as_secs_f64() / tp.as_secs_f64();
            self.rows.push(Row {
                id: "P8".into(),
                workload: "same through @<tid>/ (names cached for a day, not 1 s)".into(),
                measured: fmt_ns(ta.as_nanos() as f64),
                reference: format!("plain files {}", fmt_ns(tp.as_nanos() as f64)),
                ratio: fmt_ratio(r),
                target: "≤ 1.5× plain files".into(),
                met: Some(r <= 1.5),
            });
        }
        if p10 {
            let (mut tm, mut tp) = (Vec::new(), Vec::new());
            timed(&["ls", "-l"], std::slice::from_ref(&head))?;
            timed(&["ls", "-l"], std::slice::from_ref(&plain))?;
            for _ in 0..WARM_RUNS {
                tp.push(timed(&["ls", "-l"], std::slice::from_ref(&plain))?);
                tm.push(timed(&["ls", "-l"], std::slice::from_ref(&head))?);
            }
            let (tm, tp) = (median(tm), median(tp));
            let r = tm.as_secs_f64() / tp.as_secs_f64();
            self.rows.push(Row {
                id: "P10".into(),
                workload: format!("warm `ls -l` of a {dir_entries}-entry directory (median of {WARM_RUNS})"),
                measured: fmt_ns(tm.as_nanos() as f64),
                reference: format!("plain files {}", fmt_ns(tp.as_nanos() as f64)),
                ratio: fmt_ratio(r),
                target: "≤ 1.5× plain files".into(),
                met: Some(r <= 1.5),
            });
        }
        drop(m);
        drop(s);
        let _ = std::fs::remove_dir_all(&plain);
        let _ = std::fs::remove_dir_all(&sdir);
        if p10 {
            let big = a.mount_ls_objects;
            let small = (big / 10).max(1);
            let mut growth = Vec::new();
            for n in [small, big] {
                let (t, before, after, ext4) = self.ls_count(n)?;
                growth.push(after.1.saturating_sub(before.1));
                let r = t.as_secs_f64() / ext4.as_secs_f64();
                self.rows.push(Row {
                    id: "P10".into(),
                    workload: format!("`ls head | wc -l` over {n} objects (fresh mount)"),
                    measured: fmt_ns(t.as_nanos() as f64),
                    reference: format!("as many names in a directory here {}", fmt_ns(ext4.as_nanos() as f64)),
                    ratio: fmt_ratio(r),
                    target: "≤ 1.5× the directory".into(),
                    met: Some(r <= 1.5),
                });
                self.rows.push(Row {
                    id: "P10".into(),
                    workload: format!("daemon memory during that listing of {n}"),
                    measured: format!("anonymous {} → {}", fmt_kib(before.1), fmt_kib(after.1)),
                    reference: format!("RSS {} → {}", fmt_kib(before.0), fmt_kib(after.0)),
                    ratio: "-".into(),
                    target: "streams in flat memory".into(),
                    met: None,
                });
            }
            self.notes.push(format!(
                "P10: the daemon is this process (in-process mount); its RSS also counts the mapped segment \
                 pages the listing touched (page cache). Anonymous memory grew by {} listing {} objects and by {} \
                 listing {}",
                fmt_kib(growth[0]),
                fmt_count(small),
                fmt_kib(growth[1]),
                fmt_count(big)
            ));
        }
        Ok(())
    }

    /// Bulk-load `n` objects, mount, time `ls head | wc -l`; (time, (RSS, RssAnon) in KiB
    /// before and after, the same `ls | wc -l` of a directory in the bench directory with
    /// as many names, hard links to one empty file).
    fn ls_count(&mut self, n: u64) -> Result<(Duration, Mem, Mem, Duration)> {
        let dir = self.root.join(format!("p10-{n}"));
        let (s, _) = build(&dir, Oids::Dense, n, self.args.size)?;
        let mnt = self.root.join(format!("p10-{n}-mnt"));
        std::fs::create_dir_all(&mnt).map_err(|e| Error::io(&mnt, "create", e))?;
        let m = spawn(s.clone(), &mnt, &MountOptions::default()).map_err(|e| Error::io(&mnt, "mount", e))?;
        let mem = || (proc_status_kib("VmRSS").unwrap_or(0), proc_status_kib("RssAnon").unwrap_or(0));
        let before = mem();
        let script = format!("ls '{}' | wc -l", mnt.join("head").display());
        let t = Instant::now();
        let out = Command::new("sh").args(["-c", &script]).output().map_err(|e| Error::io(&mnt, "run ls", e))?;
        let took = t.elapsed();
        let after = mem();
        let count: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        if count != n + 1 {
            return Err(Error::invalid(format!("bench: ls head listed {count} names, expected {}", n + 1)));
        }
        drop(m);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
        let peer = self.root.join(format!("p10-{n}-names"));
        std::fs::create_dir_all(&peer).map_err(|e| Error::io(&peer, "create", e))?;
        let first = peer.join("at");
        std::fs::write(&first, b"").map_err(|e| Error::io(&first, "create", e))?;
        let mut target = first.clone();
        for i in 0..n {
            let p = peer.join(Oid(Oids::Dense.oid(i)).to_string());
            // ext4 allows 65,000 links to one inode: a new target now and then.
            if i % LINKS_PER_FILE == LINKS_PER_FILE - 1 {
                std::fs::write(&p, b"").map_err(|e| Error::io(&p, "create", e))?;
                target = p;
                continue;
            }
            std::fs::hard_link(&target, &p).map_err(|e| Error::io(&p, "link", e))?;
        }
        let script = format!("ls '{}' | wc -l", peer.display());
        let t = Instant::now();
        let out = Command::new("sh").args(["-c", &script]).output().map_err(|e| Error::io(&peer, "run ls", e))?;
        let ext4 = t.elapsed();
        let _ = std::fs::remove_dir_all(&peer);
        let listed: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        if listed != n + 1 {
            return Err(Error::invalid(format!(
                "bench: ls {} listed {listed} names, expected {}",
                peer.display(),
                n + 1
            )));
        }
        Ok((took, before, after, ext4))
    }
}

/// Rounds of P11/P12, interleaved so that every side sees the same machine weather.
const COMMIT_ROUNDS: u64 = 7;
/// Concurrent mount clients of P12's group-commit row.
const MOUNT_CLIENTS: u64 = 8;

/// One durable commit of one object through the mount, as a compiled client does it:
/// mkdir, write the object, write `commit` to ctl, rmdir. `oid` must not be written by
/// a concurrent client (that would be a conflict).
fn mount_commit(mnt: &Path, name: &str, oid: Oid, data: &[u8]) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| Error::io(p, "write through the mount", e);
    let d = mnt.join("txn").join(name);
    std::fs::create_dir(&d).map_err(|e| io(&d, e))?;
    let o = d.join(oid.to_string());
    std::fs::write(&o, data).map_err(|e| io(&o, e))?;
    let c = d.join("ctl");
    std::fs::write(&c, b"commit\n").map_err(|e| io(&c, e))?;
    std::fs::remove_dir(&d).map_err(|e| io(&d, e))
}

/// `n` commits from each of `clients` threads; commits per second in all.
fn mount_clients(mnt: &Path, round: u64, clients: u64, n: u64) -> Result<f64> {
    let t = Instant::now();
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                sc.spawn(move || {
                    (0..n).try_for_each(|i| {
                        let oid = Oid(1 + 1000 * c + i % 100);
                        mount_commit(mnt, &format!("r{round}-{c}-{i}"), oid, format!("{i}\n").as_bytes())
                    })
                })
            })
            .collect();
        hs.into_iter().try_for_each(|h| h.join().expect("a bench client panicked"))
    })?;
    Ok((clients * n) as f64 / t.elapsed().as_secs_f64())
}

/// The P11 loop: `sh` in `dir`, `n` iterations from `from`, each making `c$i`, writing
/// an object file and `commit` into a ctl file, and removing `c$i` (through the mount:
/// a transaction; on tmpfs: the same shell work on plain files). Seconds.
fn shell_loop(dir: &Path, from: u64, n: u64, mount: bool) -> Result<f64> {
    let body = if mount {
        "mkdir txn/c$i && echo $i > txn/c$i/$(printf %016x $((i % 100 + 1))) && echo commit > txn/c$i/ctl && rmdir txn/c$i"
    } else {
        "mkdir c$i && echo $i > o$i.$(printf %016x $((i % 100 + 1))) && echo commit > c$i.ctl && rmdir c$i"
    };
    let script =
        format!("cd '{}' && for i in $(seq {from} {}); do {body} || exit 1; done", dir.display(), from + n - 1);
    let t = Instant::now();
    let st = Command::new("sh").args(["-c", &script]).status().map_err(|e| Error::io(dir, "run sh", e))?;
    if !st.success() {
        return Err(Error::invalid(format!("bench: the P11 shell loop in {} failed ({st})", dir.display())));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// `n` durable one-object commits through the engine API from each of `clients` threads
/// (disjoint oids); commits per second in all.
fn engine_clients(s: &Storage, clients: u64, n: u64) -> Result<f64> {
    let t = Instant::now();
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                sc.spawn(move || {
                    (0..n).try_for_each(|i| {
                        let mut tx = s.begin();
                        tx.store(Oid(1 + 1000 * c + i % 100), format!("{i}\n").as_bytes())?;
                        tx.commit().map(|_| ())
                    })
                })
            })
            .collect();
        hs.into_iter().try_for_each(|h| h.join().expect("a bench writer panicked"))
    })?;
    Ok((clients * n) as f64 / t.elapsed().as_secs_f64())
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Bench<'_> {
    /// P11/P12: durable commits of one object through the mount next to their peers, in
    /// interleaved rounds (medians): the engine API, plain files on tmpfs plus an fsync.
    pub(super) fn mount_commits(&mut self, p11: bool, p12: bool) -> Result<()> {
        if !Path::new("/dev/fuse").exists() {
            self.notes.push("P11-P12 skipped: /dev/fuse is missing".into());
            return Ok(());
        }
        let per = (self.args.mount_commits / COMMIT_ROUNDS).max(MOUNT_CLIENTS);
        let edir = self.root.join("p11-engine");
        let e = Storage::create(&edir, Options::default())?;
        let sdir = self.root.join("p11-storage");
        let s = Storage::create(&sdir, Options::default())?;
        let mnt = self.root.join("p11-mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| Error::io(&mnt, "create", e))?;
        let m = spawn(s.clone(), &mnt, &MountOptions::default()).map_err(|e| Error::io(&mnt, "mount", e))?;
        let shm = tempfile::tempdir_in("/dev/shm").map_err(|e| Error::io(Path::new("/dev/shm"), "create", e))?;
        let (mut engine, mut one, mut many, mut sh, mut peer) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut engine_many, mut one_after) = (vec![], vec![]);
        for r in 0..COMMIT_ROUNDS {
            // One engine commit, one mount commit, alternately: the disk's weather (a
            // slow fsync after a burst of writes) falls on both alike.
            let (mut te, mut tm) = (Duration::ZERO, Duration::ZERO);
            for i in 0..per {
                let t = Instant::now();
                let mut tx = e.begin();
                tx.store(Oid(1 + i % 100), format!("{i}\n").as_bytes())?;
                tx.commit()?;
                te += t.elapsed();
                if p12 {
                    let t = Instant::now();
                    mount_commit(&mnt, &format!("r{r}-{i}"), Oid(1 + i % 100), format!("{i}\n").as_bytes())?;
                    tm += t.elapsed();
                }
            }
            engine.push(per as f64 / te.as_secs_f64());
            if p12 {
                one.push(per as f64 / tm.as_secs_f64());
                many.push(mount_clients(&mnt, r, MOUNT_CLIENTS, per / MOUNT_CLIENTS * 2)?);
                // One client again, right after the burst: the 8-client ratio compares
                // runs in the same weather.
                one_after.push(mount_clients(&mnt, r + COMMIT_ROUNDS, 1, per / 2)?);
                engine_many.push(engine_clients(&e, MOUNT_CLIENTS, per / MOUNT_CLIENTS * 2)?);
            }
            if p11 {
                sh.push(per as f64 / shell_loop(&mnt, 1 + r * per, per, true)?);
                let fsyncs = crate::bench::workload::fsync_loop(&self.root, per, 100)?.as_secs_f64();
                peer.push(per as f64 / (shell_loop(shm.path(), 1 + r * per, per, false)? + fsyncs));
            }
        }
        if s.last_tid() == filestorage2::Tid::ZERO {
            return Err(Error::invalid("bench: nothing was committed through the mount"));
        }
        drop(m);
        drop((s, e));
        let _ = std::fs::remove_dir_all(&sdir);
        let _ = std::fs::remove_dir_all(&edir);
        let engine = median_f(engine);
        let what =
            |how: &str| format!("{} durable commits of one object through the mount: {how}", per * COMMIT_ROUNDS);
        let rate = |r: f64| format!("{r:.0} commits/s");
        if p11 {
            let (sh, peer) = (median_f(sh), median_f(peer));
            self.rows.push(Row {
                id: "P11".into(),
                workload: what("shell loop (mkdir, echo > oid, echo commit > ctl, rmdir)"),
                measured: rate(sh),
                reference: format!("same loop on tmpfs + 1 fsync {}", rate(peer)),
                ratio: fmt_ratio(sh / peer),
                target: "≥ 0.8× the tmpfs loop".into(),
                met: Some(sh >= 0.8 * peer),
            });
        }
        if p12 {
            let (one, many, engine_many) = (median_f(one), median_f(many), median_f(engine_many));
            let after = median_f(one_after);
            self.rows.push(Row {
                id: "P12".into(),
                workload: what("Rust client (std::fs: create_dir, write, write ctl, remove_dir)"),
                measured: rate(one),
                reference: format!("engine API {}", rate(engine)),
                ratio: fmt_ratio(one / engine),
                target: "≥ 0.5× the engine API".into(),
                met: Some(one >= 0.5 * engine),
            });
            self.rows.push(Row {
                id: "P12".into(),
                workload: format!("same from {MOUNT_CLIENTS} concurrent clients (group commit)"),
                measured: rate(many),
                reference: format!(
                    "one client right after {} (engine API: {} from {MOUNT_CLIENTS}, {:.2}× its one)",
                    rate(after),
                    rate(engine_many),
                    engine_many / engine
                ),
                ratio: fmt_ratio(many / after),
                target: "≥ 4× one client".into(),
                met: Some(many >= 4.0 * after),
            });
        }
        self.notes.push(format!(
            "P11/P12: medians of {COMMIT_ROUNDS} interleaved rounds; ratio = mount ÷ peer. P12 alternates one \
             engine commit and one mount commit (a slow fsync after a burst of writes falls on both). The P11 \
             peer runs the same shell work on plain files in /dev/shm and adds the time of one 100 B append + fdatasync per \
             iteration in the bench directory (the durability the mount commit pays)"
        ));
        Ok(())
    }
}
