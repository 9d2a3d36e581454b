//! The mount's `classes/` at scale (ignored by default; run by hand, release build):
//!
//! ```sh
//! cargo test --release --test zodb_views_scale -- --ignored --nocapture
//! FS2_VIEW_OBJECTS=10000000 cargo test --release --test zodb_views_scale -- --ignored --nocapture
//! ```
//!
//! Builds N ZODB records (protocol 3) with random 64-bit oids in 10 classes, 90% of them
//! in `big.Class`, mounts the storage and times `ls classes/` (cold: the scan that builds
//! the view; then warm), `ls classes/big.Class/ | wc -l` and `ls -l` of it, and reports
//! the daemon's (this process's) anonymous memory before and after.

mod common;

use common::mount::{available, TestMount};
use common::random_oids;
use filestorage2::{Oid, Options, Storage};
use std::time::Instant;

fn rec(module: &str, name: &str, refs: &[u64]) -> Vec<u8> {
    let mut d = vec![0x80];
    d.extend_from_slice(format!("\x03c{module}\n{name}\nq\x00.").as_bytes());
    d.extend_from_slice(b"\x80\x03]q\x01(");
    for o in refs {
        d.extend_from_slice(b"C\x08");
        d.extend_from_slice(&o.to_be_bytes());
        d.extend_from_slice(b"h\x00\x86Q");
    }
    d.extend_from_slice(b"e.");
    d
}

fn rss_anon_mib() -> f64 {
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = st
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

#[test]
#[ignore = "scale measurement: run by hand"]
fn classes_of_a_large_storage() {
    if !available() {
        return;
    }
    let n: u64 = std::env::var("FS2_VIEW_OBJECTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let t = tempfile::tempdir_in(std::env::var("FS2_VIEW_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let mut rnd = random_oids();
    let build = Instant::now();
    let s = Storage::create(t.path(), Options { sync: false, ..Options::default() }).unwrap();
    let mut big = 0u64;
    let mut t_ = s.begin();
    for i in 0..n {
        let (m, c) = if i % 10 == 0 { ("small", format!("C{}", (i / 10) % 9)) } else { ("big", "Class".to_string()) };
        big += u64::from(m == "big");
        let oid = if i == 0 { 0 } else { rnd() };
        t_.store(Oid(oid), &rec(m, &c, &[rnd(), rnd()])).unwrap();
        if i % 10_000 == 9_999 {
            t_.commit().unwrap();
            t_ = s.begin();
        }
    }
    t_.commit().unwrap();
    s.rotate().unwrap();
    println!("built {n} objects in {:.1} s", build.elapsed().as_secs_f64());
    let m = TestMount::new(s);
    let before = rss_anon_mib();
    let time = |what: &str, script: &str| {
        let t = Instant::now();
        // Not m.sh: `ls -l` of 900k entries may take longer than its 30 s on a loaded machine.
        let o = std::process::Command::new("timeout")
            .args(["-k", "5", "600", "sh", "-c", script])
            .current_dir(&m.root)
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8(o.stdout).unwrap();
        println!("{what}: {:.2} s ({})", t.elapsed().as_secs_f64(), out.lines().next().unwrap_or("").trim());
        out
    };
    let ls = time("ls classes/ (cold: builds the view)", "ls classes/ | wc -l");
    assert_eq!(ls.trim(), "12", "10 classes, at, index");
    println!("anonymous RSS after the view is built: {:.1} MiB", rss_anon_mib());
    time("ls classes/ (warm)", "ls classes/ | wc -l");
    time("cat classes/index", "cat classes/index | head -1");
    let out = time("ls classes/big.Class/ | wc -l", "ls classes/big.Class/ | wc -l");
    assert_eq!(out.trim(), big.to_string());
    println!("anonymous RSS after ls classes/big.Class/: {:.1} MiB", rss_anon_mib());
    time("ls -l classes/big.Class/ | wc -l", "ls -l classes/big.Class/ | wc -l");
    time("for comparison, ls -l head/ | wc -l", "ls -l head/ | wc -l");
    // ls -l takes a kernel lookup (an inode entry in the daemon) per listed object.
    println!(
        "anonymous RSS of the test process (daemon inside): {before:.1} MiB before, {:.1} MiB after",
        rss_anon_mib()
    );
    m.unmount();
}
