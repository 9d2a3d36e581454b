//! The process and the machine: probe children, /proc figures, machine information.

use super::report::fmt_kib;
use filestorage2::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// Run `<this exe> bench FLAG DIR`; its stdout and whether it succeeded.
pub(super) fn run_child(flag: &str, dir: &Path) -> Result<(String, bool)> {
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("/proc/self/exe"), "locate", e))?;
    let out = Command::new(&exe)
        .arg("bench")
        .arg(flag)
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(&exe, "run", e))?;
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), out.status.success()))
}

pub(super) fn child_failed(flag: &str, dir: &Path, out: &str, what: &str) -> Error {
    let exe = std::env::current_exe().unwrap_or_default();
    Error::invalid(format!(
        "bench: the probe `{} bench {flag} {}` failed (output {:?}); {what} need the fs2 binary: run \
         `cargo run --release -- bench`",
        exe.display(),
        dir.display(),
        out.trim()
    ))
}

/// The `key=value` pairs of the last line of `out` that contains `marker`.
pub(super) fn kv_line<'a>(out: &'a str, marker: &str) -> Option<HashMap<&'a str, u64>> {
    let line = out.lines().rev().find(|l| l.contains(marker))?;
    Some(
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect(),
    )
}

/// Clock ticks per second of /proc times (fixed by the kernel ABI).
pub(super) const USER_HZ: u64 = 100;

/// User and system CPU time of this process so far (all threads, live and exited), in
/// clock ticks, from /proc/self/stat.
pub(super) fn cpu_ticks() -> Option<(u64, u64)> {
    stat_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Fields 14 and 15 (utime, stime) of a /proc/PID/stat line; the name (field 2) may hold
/// spaces and parentheses, so count from the last `)`.
pub(super) fn stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    Some((rest.next()?.parse().ok()?, rest.next()?.parse().ok()?))
}

/// A `kB` field of /proc/self/status.
pub(super) fn proc_status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field_kib(&s, field)
}

pub(super) fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

pub(super) fn machine_info() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "cpu unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| status_field_kib(&m, "MemTotal"));
    let kernel = std::fs::read_to_string("/proc/version")
        .ok()
        .and_then(|v| v.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    format!("{cpus} CPUs ({model}), {} RAM, Linux {kernel}", mem.map_or("?".into(), fmt_kib))
}

/// The 1-minute load average (other work on a shared machine skews every figure).
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The filesystem type and source of the mount holding `path`, from /proc/self/mountinfo.
pub(super) fn fs_type_of(mountinfo: &str, path: &Path) -> Option<(String, String)> {
    let mut best: Option<(usize, String, String)> = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let Some(mount) = pre.split_whitespace().nth(4) else { continue };
        let mount = mount.replace("\\040", " ");
        let mut post = post.split_whitespace();
        let Some(ty) = post.next() else { continue };
        let (ty, src) = (ty.to_string(), post.next().unwrap_or("?").to_string());
        let len = Path::new(&mount).components().count();
        if path.starts_with(&mount) && best.as_ref().is_none_or(|b| len >= b.0) {
            best = Some((len, ty, src));
        }
    }
    best.map(|(_, t, s)| (t, s))
}
