//! `fs2 mount` / `fs2 umount` as processes: signals unmount cleanly, a busy mount is
//! explained and a second signal detaches it, a stale mount left by `kill -9` is
//! detected at the next mount and cleaned with `--force`.

mod common;

use common::mount::{available, is_mounted, start, Cleanup};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn fs2() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fs2"));
    c.env("RUST_LOG", "warn");
    c
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Wait for `child` to exit (at most 20 s), returning (status code, stdout, stderr).
fn finish(mut child: Child) -> (Option<i32>, String, String) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("fs2 mount did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn sigterm_unmounts_and_busy_mounts_are_explained() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (storage, mp) = (d.path().join("s"), d.path().join("mnt"));
    let _c = Cleanup(&mp);
    assert!(
        fs2().arg("mount").arg(&storage).arg(&mp).output().unwrap().status.code() == Some(3),
        "no storage, no --init"
    );
    let child = start(&storage, &mp, &["--init"]);
    assert_eq!(std::fs::read_to_string(mp.join("head/at")).unwrap(), "0000000000000000\n");
    signal(&child, libc::SIGTERM);
    let (code, out, _) = finish(child);
    assert_eq!(code, Some(0));
    assert!(out.contains("unmounted"), "{out}");
    assert!(!is_mounted(&mp));

    // Busy: a process sits in the mount. The first signal explains, the second detaches.
    let child = start(&storage, &mp, &[]);
    let mut sitter = Command::new("sleep").arg("30").current_dir(mp.join("head")).spawn().unwrap();
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(is_mounted(&mp), "a busy mount stays");
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!is_mounted(&mp), "the second signal detaches it");
    sitter.kill().unwrap();
    sitter.wait().unwrap();
    let (code, _, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("is busy") && err.contains(&format!("fs2 umount {}", mp.display())), "{err}");
}

#[test]
fn stale_mount_is_detected_and_cleaned_with_force_and_umount_works() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (storage, mp) = (d.path().join("s"), d.path().join("mnt"));
    let _c = Cleanup(&mp);
    let mut child = start(&storage, &mp, &["--init"]);
    child.kill().unwrap(); // SIGKILL: the mount stays, answering ENOTCONN
    child.wait().unwrap();
    use filestorage2::mount::{mountpoint_state, MountpointState};
    assert_eq!(mountpoint_state(&mp).unwrap(), MountpointState::Stale);
    let out = fs2().arg("mount").arg(&storage).arg(&mp).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("stale mount") && err.contains("--force"), "{err}");
    let child = start(&storage, &mp, &["--force"]);
    assert!(std::fs::read_dir(mp.join("head")).is_ok(), "serving again");
    // `fs2 umount` ends it; the daemon exits cleanly.
    let out = fs2().arg("umount").arg(&mp).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, _, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(!is_mounted(&mp));
    let out = fs2().arg("umount").arg(&mp).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a mount point"));
}

#[test]
fn read_only_mount_is_kernel_read_only() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (storage, mp) = (d.path().join("s"), d.path().join("mnt"));
    let _c = Cleanup(&mp);
    assert!(fs2().args(["demo"]).arg(&storage).output().unwrap().status.success());
    let child = start(&storage, &mp, &["--read-only"]);
    assert_eq!(std::fs::read(mp.join("head/0000000000000001")).unwrap(), b"hello, world\n");
    let e = std::fs::create_dir(mp.join("x")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    // A read-only mount holds no writer lock: a writer process can work beside it.
    let f = d.path().join("data");
    std::fs::write(&f, b"x").unwrap();
    let out = fs2().arg("commit").arg(&storage).arg(format!("0000000000000009={}", f.display())).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    signal(&child, libc::SIGTERM);
    assert_eq!(finish(child).0, Some(0));
}

/// The hints `fs2 mount` prints fit the storage (no objects on an empty `--init` mount,
/// no `mkdir txn/` on a read-only one), and a clean `fs2 umount` leaves no warning.
#[test]
fn hints_fit_the_mount_and_a_clean_umount_is_quiet() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (storage, mp) = (d.path().join("s"), d.path().join("mnt"));
    let _c = Cleanup(&mp);
    for (args, empty) in [(&["--init"][..], true), (&["--read-only"][..], true)] {
        let child = start(&storage, &mp, args);
        assert!(fs2().arg("umount").arg(&mp).status().unwrap().success());
        let (code, out, err) = finish(child);
        assert_eq!(code, Some(0), "{err}");
        assert!(!err.contains("WARN") && !err.contains("Failed to umount"), "{err}");
        assert_eq!(out.contains("head/0000000000000001"), !empty, "{out}");
        assert_eq!(out.contains("mkdir"), args != ["--read-only"], "{out}");
    }
}
