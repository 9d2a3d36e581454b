//! Output helpers: progress on a terminal, sizes, escapes.

use super::*;

/// Progress on stderr for long work, only when stderr is a terminal.
pub(super) struct Progress {
    pub(super) what: &'static str,
    last: Instant,
    shown: bool,
    tty: bool,
}

impl Progress {
    pub(super) fn new(what: &'static str) -> Progress {
        Progress { what, last: Instant::now(), shown: false, tty: std::io::stderr().is_terminal() }
    }
    /// Items done, of `total` if known (0: unknown).
    pub(super) fn update_count(&mut self, done: u64, total: u64) {
        if !self.tty || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        self.shown = true;
        if total == 0 {
            eprint!("\r\x1b[K{}: {done}", self.what);
        } else {
            eprint!("\r\x1b[K{}: {:5.1}% ({done} of {total})", self.what, done as f64 * 100.0 / total as f64);
        }
    }

    pub(super) fn update(&mut self, done: u64, total: u64) {
        if !self.tty || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        self.shown = true;
        let pct = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
        eprint!("\r{}: {pct:5.1}% ({} of {})", self.what, human(done), human(total));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.shown {
            eprint!("\r\x1b[K");
        }
    }
}

pub fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Bytes as a Python-like literal: printable ASCII as is, the rest escaped.
pub(super) fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string().replace('\'', "\\'")
}

pub(super) fn tid_or_none(t: Option<Tid>) -> String {
    t.map_or("-".into(), |t| t.to_string())
}
