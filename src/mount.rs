//! `fs2 mount` as a foreground daemon and `fs2 umount`: a stale mount left by a killed
//! daemon is detected (and cleaned with `--force`); SIGINT/SIGTERM unmount cleanly; a
//! busy mount is reported with the command that finishes it, and a second signal
//! detaches it lazily.

use crate::fs::Fs;
use crate::fuse::{config, lazy_unmount, spawn_notifier, umount2, FuseFs, MountOptions};
use crate::Storage;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What is at a mountpoint now.
#[derive(Debug, PartialEq, Eq)]
pub enum MountpointState {
    /// An ordinary directory.
    Free,
    /// A FUSE mount whose daemon died: every access fails with ENOTCONN.
    Stale,
    /// Something is mounted there.
    Mounted,
}

/// Make a storage directory owner-only (0700) before `init` puts a storage in it: a
/// missing one is created so, an existing one of ours is tightened, and one that
/// belongs to someone else while others may write to it is refused (they could replace
/// the staging directory of a mount and forge what it commits).
pub fn owner_only_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let d = dir.display();
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(dir).map_err(|e| format!("create {d}: {e}"))?;
    }
    let md = std::fs::metadata(dir).map_err(|e| format!("{d}: {e}"))?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me && md.mode() & 0o022 != 0 {
        return Err(format!(
            "{d} belongs to uid {} and others can write to it (mode {:o}): a storage needs a directory only              its owner can write; use a new directory",
            md.uid(),
            md.mode() & 0o7777
        ));
    }
    if md.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("make {d} owner-only (chmod 700): {e}"))?;
    }
    Ok(())
}

/// Whether `path` is a mount point in this process's mount table.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(abs) = std::path::absolute(path) else { return false };
    let want = abs.to_string_lossy().replace(' ', "\\040");
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Free, stale or mounted. Liveness is asked with `statfs`, which the kernel never
/// answers from its caches (a `stat` of a dead mount can succeed from cached attributes).
pub fn mountpoint_state(path: &Path) -> std::io::Result<MountpointState> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid path; `st` is a plain C struct statfs fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTCONN) { Ok(MountpointState::Stale) } else { Err(e) };
    }
    Ok(if is_mount_point(path) { MountpointState::Mounted } else { MountpointState::Free })
}

/// Make `mountpoint` ready: create it if missing, refuse a live mount, explain (or with
/// `force` clean) a stale one.
pub fn prepare_mountpoint(mountpoint: &Path, force: bool) -> Result<(), String> {
    let mp = mountpoint.display();
    let fs2 = std::env::args().next().unwrap_or_else(|| "fs2".into());
    if std::fs::symlink_metadata(mountpoint).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        std::fs::create_dir_all(mountpoint).map_err(|e| format!("create mountpoint {mp}: {e}"))?;
    }
    match mountpoint_state(mountpoint).map_err(|e| format!("{mp}: {e}"))? {
        MountpointState::Free => Ok(()),
        MountpointState::Mounted => {
            Err(format!("{mp} is already a mount point; unmount it first with `{fs2} umount {mp}`"))
        }
        MountpointState::Stale if force => {
            lazy_unmount(mountpoint).map_err(|e| format!("clean the stale mount {mp}: {e}"))?;
            log::warn!("cleaned the stale mount left at {mp} by a daemon that died");
            Ok(())
        }
        MountpointState::Stale => Err(format!(
            "{mp} is a stale mount left by an `fs2 mount` that was killed (\"Transport endpoint is not \
             connected\"); clean it with `{fs2} umount {mp}`, or mount again with --force"
        )),
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Mount `storage` on `mountpoint` and serve it in the foreground until unmounted (a
/// signal, `fs2 umount`, or `umount`). `ready` runs once the mount is live.
pub fn run(storage: Storage, mountpoint: &Path, opts: &MountOptions, ready: impl FnOnce()) -> Result<(), String> {
    let mp = mountpoint.display().to_string();
    if let Some(t) = storage.ignored_tail() {
        log::warn!("{t} (the mount's stats file shows it)");
    }
    // Block the signals before any thread exists, so that every thread (the session's
    // included) inherits the mask and only the waiting thread below receives them.
    let set = signal_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let fs = Arc::new(Fs::with_options(storage, opts.clone()));
    let mut session = fuser::Session::new(FuseFs::new(fs.clone()), mountpoint, &config(fs.storage(), opts))
        .map_err(|e| format!("mount {mp}: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let notify = spawn_notifier(fs.clone(), session.notifier(), stop.clone()).map_err(|e| e.to_string())?;
    let mut unmounter = session.unmount_callable();
    let path = PathBuf::from(mountpoint);
    std::thread::Builder::new()
        .name("fs2-signals".into())
        .spawn(move || {
            let mut busy = false;
            loop {
                let mut sig = 0;
                // SAFETY: `set` and `sig` are valid for the call.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                let mp = path.display();
                if busy {
                    match lazy_unmount(&path) {
                        Ok(()) => eprintln!("fs2: detached {mp}; it goes away when the last process leaves it"),
                        Err(e) => eprintln!("fs2: lazy unmount of {mp}: {e}"),
                    }
                    return;
                }
                eprintln!("fs2: unmounting {mp}");
                match unmounter.unmount() {
                    Ok(()) => return,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        busy = true;
                        eprintln!(
                            "fs2: {mp} is busy (a process has its working directory or an open file in it). \
                             Leave it and run `fs2 umount {mp}`, or press Ctrl-C again to detach it now \
                             (`umount -l {mp}`)"
                        );
                    }
                    Err(e) => {
                        eprintln!("fs2: unmount {mp}: {e}; detaching it lazily");
                        let _ = lazy_unmount(&path);
                        return;
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    ready();
    let r = session.run().map_err(|e| format!("serving {mp}: {e}"));
    stop.store(true, Ordering::Relaxed);
    let _ = notify.join();
    // Unmount aborts every open transaction.
    fs.shutdown();
    r
}

/// `fs2 umount`: unmount (lazily with `lazy`). Non-root users go through `fusermount3`.
pub fn umount(mountpoint: &Path, lazy: bool) -> Result<(), String> {
    let mp = mountpoint.display();
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    match umount2(mountpoint, flags) {
        Ok(()) => Ok(()),
        Err(e) => match e.raw_os_error() {
            Some(libc::EBUSY) => Err(format!(
                "{mp} is busy (a process has its working directory or an open file in it); leave it and retry, \
                 or detach it now with `fs2 umount --lazy {mp}`"
            )),
            Some(libc::EINVAL) => Err(format!("{mp} is not a mount point")),
            Some(libc::EPERM) => {
                let mut c = std::process::Command::new("fusermount3");
                c.arg("-u");
                if lazy {
                    c.arg("-z");
                }
                match c.arg(mountpoint).status() {
                    Ok(s) if s.success() => Ok(()),
                    Ok(_) => Err(format!("fusermount3 -u {mp} failed")),
                    Err(_) => {
                        Err(format!("unmount {mp}: not permitted, and fusermount3 is missing (Debian package fuse3)"))
                    }
                }
            }
            _ => Err(format!("unmount {mp}: {e}")),
        },
    }
}
