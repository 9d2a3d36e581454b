//! Per-storage settings, in `<dir>/settings` ("key = value" lines), written atomically.
//!
//! - `retention = full` (default): history is kept until a merge is asked for.
//! - `retention = minimal`: after each rotation the storage merges all past segments in
//!   the background, so that past segments hold only current revisions.

use crate::error::{Error, Result};
use crate::vfs::Vfs;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Retention {
    #[default]
    Full,
    Minimal,
}

impl std::str::FromStr for Retention {
    type Err = Error;
    fn from_str(s: &str) -> Result<Retention> {
        match s {
            "full" => Ok(Retention::Full),
            "minimal" => Ok(Retention::Minimal),
            _ => Err(Error::invalid(format!("retention {s:?}: expected full or minimal"))),
        }
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Retention::Full => "full",
            Retention::Minimal => "minimal",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Settings {
    pub retention: Retention,
}

const FILE: &str = "settings";

impl Settings {
    /// Read `<dir>/settings`; defaults if it does not exist.
    pub fn load(vfs: &dyn Vfs, dir: &Path) -> Result<Settings> {
        let path = dir.join(FILE);
        let f = match vfs.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => return Err(Error::io(&path, "open", e)),
        };
        let len = f.len().map_err(|e| Error::io(&path, "stat", e))?;
        if len > 64 << 10 {
            return Err(Error::corrupted(&path, 0, "settings file too large"));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, 0).map_err(|e| Error::io(&path, "read", e))?;
        let text = String::from_utf8(buf).map_err(|_| Error::corrupted(&path, 0, "settings are not UTF-8"))?;
        let mut s = Settings::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: String| Error::corrupted(&path, 0, format!("line {}: {what}", i + 1));
            let (k, v) = line.split_once('=').ok_or_else(|| bad(format!("{line:?} is not key = value")))?;
            match k.trim() {
                "retention" => s.retention = v.trim().parse().map_err(|e: Error| bad(e.to_string()))?,
                other => return Err(bad(format!("unknown setting {other:?}"))),
            }
        }
        Ok(s)
    }

    /// Write `<dir>/settings` durably (temporary file, sync, rename, sync directory).
    pub fn save(&self, vfs: &dyn Vfs, dir: &Path) -> Result<()> {
        let text = format!("# filestorage2 settings\nretention = {}\n", self.retention);
        crate::durable::write_file(vfs, &dir.join(FILE), text.as_bytes()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::SimVfs;

    #[test]
    fn round_trip_and_bad_input() {
        let vfs = SimVfs::new();
        let dir = Path::new("/s");
        assert_eq!(Settings::load(&vfs, dir).unwrap(), Settings::default());
        let s = Settings { retention: Retention::Minimal };
        s.save(&vfs, dir).unwrap();
        assert_eq!(Settings::load(&vfs, dir).unwrap(), s);
        for bad in ["retention = some", "color = red", "retention"] {
            let f = vfs.create_new(&dir.join("x")).unwrap();
            f.write_all_at(bad.as_bytes(), 0).unwrap();
            vfs.rename(&dir.join("x"), &dir.join(FILE)).unwrap();
            assert!(Settings::load(&vfs, dir).is_err(), "{bad}");
        }
    }
}
