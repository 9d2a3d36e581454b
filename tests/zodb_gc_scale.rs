//! `fs2 gc` at scale (ignored by default; run by hand, release build advised):
//!
//! ```sh
//! cargo test --release --test zodb_gc_scale -- --ignored --nocapture
//! FS2_GC_OBJECTS=10000000 cargo test --release --test zodb_gc_scale -- --ignored --nocapture
//! FS2_GC_OBJECTS=2000000 FS2_GC_GARBAGE_PERCENT=50 cargo test --release --test zodb_gc_scale -- --ignored --nocapture
//! ```
//!
//! Builds a storage of N ZODB records (protocol 3, class `m.C`) with random 64-bit oids:
//! a tree from the root with 64 children per node ((oid, class) references), 10% garbage
//! (`FS2_GC_GARBAGE_PERCENT`)
//! (each garbage object refers to a live one and to the next garbage object), sealed in
//! past segments; then times `fs2 gc --dry-run` and `fs2 gc` in a child process and reads
//! its peak RSS (getrusage of the child). `FS2_GC_BIN` runs another `fs2` binary (an
//! older build, to compare) instead of this build's.

mod common;

use common::random_oids;
use filestorage2::{Oid, Options, Storage};
use std::process::Command;
use std::time::Instant;

fn rec(refs: &[u64]) -> Vec<u8> {
    let mut d = b"\x80\x03cm\nC\nq\x00.\x80\x03]q\x01(".to_vec();
    for o in refs {
        d.extend_from_slice(b"C\x08");
        d.extend_from_slice(&o.to_be_bytes());
        d.extend_from_slice(b"h\x00\x86Q");
    }
    d.extend_from_slice(b"e.");
    d
}

/// Run fs2 with `args`: (seconds, peak RSS in MiB, peak anonymous RSS (heap) in MiB
/// sampled every 5 ms, stdout).
// The child is reaped by `wait4` (for its rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn timed(args: &[&str]) -> (f64, f64, f64, String) {
    let t = Instant::now();
    let child = Command::new(std::env::var("FS2_GC_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fs2").into()))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let sampler = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if st.contains("State:\tZ") {
                break;
            }
            let kb = st
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok());
            peak = peak.max(kb.unwrap_or(0));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        peak as f64 / 1024.0
    });
    let out = child.stdout.unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(out).unwrap());
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `ru` are ours for wait4 to fill in, for our own child.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "fs2 {args:?} failed");
    let secs = t.elapsed().as_secs_f64();
    (secs, ru.ru_maxrss as f64 / 1024.0, sampler.join().unwrap(), reader.join().unwrap())
}

#[test]
#[ignore = "scale measurement: run by hand"]
fn gc_of_a_large_storage_with_random_oids() {
    let n: u64 = std::env::var("FS2_GC_OBJECTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let t = tempfile::tempdir_in(std::env::var("FS2_GC_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let dir = t.path().join("db");
    let build = Instant::now();
    let mut rnd = random_oids();
    let percent: u64 = std::env::var("FS2_GC_GARBAGE_PERCENT").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let live = n - n * percent.min(90) / 100;
    let oids: Vec<u64> = std::iter::once(0).chain((1..n).map(|_| rnd())).collect();
    {
        let s = Storage::create(&dir, Options { sync: false, ..Options::default() }).unwrap();
        let mut t = s.begin();
        for i in 0..n {
            let refs: Vec<u64> = if i < live {
                (i * 64 + 1..(i * 64 + 65).min(live)).map(|c| oids[c as usize]).collect()
            } else {
                let next = if i + 1 < n { oids[i as usize + 1] } else { oids[live as usize] };
                vec![oids[(rnd() % live) as usize], next]
            };
            t.store(Oid(oids[i as usize]), &rec(&refs)).unwrap();
            if i % 10_000 == 9_999 {
                t.commit().unwrap();
                t = s.begin();
            }
        }
        t.commit().unwrap();
        s.sync().unwrap();
        s.rotate().unwrap();
    }
    println!("built {n} objects ({} garbage) in {:.1} s", n - live, build.elapsed().as_secs_f64());
    let d = dir.to_str().unwrap();
    let (secs, rss, anon, out) = timed(&["gc", "--dry-run", d]);
    assert_eq!(out.lines().count() as u64, n - live);
    println!("fs2 gc --dry-run: {secs:.2} s, peak RSS {rss:.1} MiB, of which anonymous (heap) {anon:.1} MiB");
    let (secs, rss, anon, out) = timed(&["gc", d]);
    assert!(out.contains(&format!("{} garbage", n - live)), "{out}");
    println!("fs2 gc: {secs:.2} s, peak RSS {rss:.1} MiB, of which anonymous (heap) {anon:.1} MiB ({})", out.trim());
}
