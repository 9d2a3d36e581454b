//! A full disk while preallocating (issue 10): on a real 1 MiB tmpfs (the tests run as
//! root). Its own test binary: it spawns `mount`/`umount`, and a child forked while
//! another test thread holds a storage's writer lock keeps that lock until it execs.

use filestorage2::{Oid, Options, Storage};
use std::path::PathBuf;
use std::process::Command;

mod common;
use common::simple::{checked, commit, data, within};

/// Unmounts a file system the test mounted, however the test ends.
struct TmpFs(PathBuf);

impl Drop for TmpFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A 1 MiB tmpfs (the tests run as root) under a fresh temporary directory.
fn small_fs(t: &tempfile::TempDir) -> TmpFs {
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "fs2-enospc"]).arg(t.path()).status();
    assert!(ok.is_ok_and(|s| s.success()), "mount a 1 MiB tmpfs (the tests run as root)");
    TmpFs(t.path().to_path_buf())
}

#[test]
fn preallocation_that_does_not_fit_falls_back_to_the_space_there_is() {
    within(120, || {
        let t = tempfile::tempdir().unwrap();
        let _fs = small_fs(&t);
        let db = t.path().join("db");
        // 4 MiB of zeros ahead (the default) cannot fit in 1 MiB: the commit still does.
        let s = Storage::create(&db, Options::default()).unwrap();
        let tid = commit(&s, &[(1, b"hello")]);
        assert_eq!(s.load(Oid(1)).unwrap(), Some((tid, b"hello".to_vec())));
        // Fill the disk: each commit succeeds while its bytes fit, then ENOSPC.
        let chunk = vec![7u8; 64 << 10];
        let mut n = 0u64;
        let err = loop {
            let mut t = s.begin();
            t.store(Oid(100 + n), &chunk).unwrap();
            match t.commit() {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
            assert!(n < 64, "a 1 MiB disk took {n} commits of 64 KiB");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(n >= 10, "only {n} commits of 64 KiB fitted in 1 MiB");
        // Small commits fit in what is left.
        commit(&s, &[(2, b"small")]);
        drop(s);
        let s = Storage::open(&db, Options::default()).unwrap();
        assert_eq!(data(&s, 1), Some(b"hello".to_vec()));
        assert_eq!(data(&s, 2), Some(b"small".to_vec()));
        assert_eq!(data(&s, 100 + n - 1), Some(chunk.clone()));
        drop(s);
        checked(&db);
    })
}
