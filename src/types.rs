//! Newtypes for the ids that cross module boundaries: [`Oid`], [`Tid`], [`SegmentName`].
//!
//! Oids and tids display as 16 lowercase hex digits everywhere; only that spelling parses.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// A spelling that is not an id (the engine's error type makes it `Error::Invalid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parse exactly 16 lowercase hex digits (the only accepted spelling of an oid or tid).
fn parse_hex16(s: &str, what: &str) -> Result<u64, ParseError> {
    let ok = s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return Err(ParseError(format!("bad {what} {s:?}: expected 16 lowercase hex digits, e.g. 0000000000000001")));
    }
    u64::from_str_radix(s, 16).map_err(|_| ParseError(format!("bad {what} {s:?}")))
}

/// A 64-bit object id, chosen by the client or allocated by the storage.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub u64);

impl Oid {
    pub fn to_le_bytes(self) -> [u8; 8] {
        self.0.to_le_bytes()
    }
    pub fn from_le_bytes(b: [u8; 8]) -> Oid {
        Oid(u64::from_le_bytes(b))
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({:016x})", self.0)
    }
}
impl FromStr for Oid {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Oid, ParseError> {
        parse_hex16(s, "oid").map(Oid)
    }
}

/// A transaction id: a ZODB TimeStamp (minutes since 1900 in the high 32 bits, the
/// fraction of a minute in units of 60/2^32 s in the low 32 bits). Strictly increasing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tid(pub u64);

impl Tid {
    /// Smaller than every real tid.
    pub const ZERO: Tid = Tid(0);
    pub const MAX: Tid = Tid(u64::MAX);

    pub fn to_le_bytes(self) -> [u8; 8] {
        self.0.to_le_bytes()
    }
    pub fn from_le_bytes(b: [u8; 8]) -> Tid {
        Tid(u64::from_le_bytes(b))
    }

    /// The TimeStamp of a wall-clock time given as seconds since the Unix epoch (UTC).
    pub fn from_unix(secs: f64) -> Tid {
        let secs = secs.max(0.0);
        let days = (secs / 86400.0).floor() as i64;
        let (y, m, d) = civil_from_days(days);
        let rem = secs - days as f64 * 86400.0;
        let hour = (rem / 3600.0).floor() as i64;
        let minute = ((rem - hour as f64 * 3600.0) / 60.0).floor() as i64;
        let sec = rem - hour as f64 * 3600.0 - minute as f64 * 60.0;
        let minutes = ((((y - 1900) * 12 + (m - 1)) * 31 + (d - 1)) * 24 + hour) * 60 + minute;
        let frac = ((sec / 60.0) * 4294967296.0).min(4294967295.0) as u64;
        Tid(((minutes.max(0) as u64) << 32) | frac)
    }

    /// The TimeStamp for now.
    pub fn now() -> Tid {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Tid::from_unix(d.as_secs_f64())
    }

    /// The next tid for a commit: `now`, or one more than `last` if the clock went back
    /// or has not moved on (ZODB's `laterThan`).
    pub fn next_after(last: Tid) -> Tid {
        let now = Tid::now();
        if now > last {
            now
        } else {
            Tid(last.0.checked_add(1).expect("tid space exhausted"))
        }
    }

    /// Seconds since the Unix epoch (UTC) that this TimeStamp denotes.
    pub fn to_unix(self) -> f64 {
        let minutes = (self.0 >> 32) as i64;
        let frac = (self.0 & 0xffff_ffff) as f64 * 60.0 / 4294967296.0;
        let minute = minutes % 60;
        let hours = minutes / 60;
        let hour = hours % 24;
        let days31 = hours / 24;
        let d = days31 % 31 + 1;
        let months = days31 / 31;
        let m = months % 12 + 1;
        let y = months / 12 + 1900;
        let days = days_from_civil(y, m, d);
        days as f64 * 86400.0 + (hour * 3600 + minute * 60) as f64 + frac
    }

    /// ISO-8601 UTC rendering with microseconds, e.g. `2026-11-21T11:20:30.123456Z`.
    pub fn iso8601(self) -> String {
        let t = self.to_unix();
        let days = (t / 86400.0).floor() as i64;
        let (y, m, d) = civil_from_days(days);
        let rem = t - days as f64 * 86400.0;
        let micros_total = (rem * 1e6).round() as i64;
        let (h, rest) = (micros_total / 3_600_000_000, micros_total % 3_600_000_000);
        let (mi, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (s, us) = (rest / 1_000_000, rest % 1_000_000);
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
impl fmt::Debug for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tid({:016x})", self.0)
    }
}
impl FromStr for Tid {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Tid, ParseError> {
        parse_hex16(s, "tid").map(Tid)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parse `YYYY-MM-DD[THH:MM[:SS[.frac]]][Z]` (UTC) into seconds since the Unix epoch.
#[cfg_attr(not(feature = "cli"), allow(dead_code))] // only the mount names times
pub fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: i64 = dp.next()?.parse().ok()?;
    let d: i64 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1900 {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) as f64 * 86400.0;
    if let Some(t) = time {
        let mut tp = t.split(':');
        let h: i64 = tp.next()?.parse().ok()?;
        let mi: i64 = tp.next()?.parse().ok()?;
        let sec: f64 = match tp.next() {
            Some(x) => x.parse().ok()?,
            None => 0.0,
        };
        if tp.next().is_some() || !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0.0..61.0).contains(&sec) {
            return None;
        }
        secs += (h * 3600 + mi * 60) as f64 + sec;
    }
    Some(secs)
}

/// The name of a segment file: `seg-NNNNNN.fs2` for a segment created by rotation,
/// `seg-FFFFFF-LLLLLL.fs2` for one produced by merging segments FFFFFF..LLLLLL.
/// Names sort in chain order (oldest first) because sequence numbers only grow.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SegmentName {
    pub first: u64,
    pub last: u64,
}

impl SegmentName {
    pub const SUFFIX: &'static str = ".fs2";

    pub fn single(seq: u64) -> SegmentName {
        SegmentName { first: seq, last: seq }
    }

    pub fn file_name(&self) -> String {
        format!("{self}{}", Self::SUFFIX)
    }

    /// Parse a file name (`seg-000001.fs2`); `None` for anything else.
    pub fn from_file_name(name: &str) -> Option<SegmentName> {
        name.strip_suffix(Self::SUFFIX)?.parse().ok()
    }
}

/// What a semi-sequential merge keeps of the segment it appends (the source) to the
/// next one (the target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// The source's newest record of every oid: time travel to the end of the source
    /// stays exact.
    Source,
    /// Only the records still current at the end of the target: the source's records of
    /// oids the target holds go.
    Target,
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "seg-{:06}", self.first)
        } else {
            write!(f, "seg-{:06}-{:06}", self.first, self.last)
        }
    }
}

impl FromStr for SegmentName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<SegmentName, ParseError> {
        let bad = || ParseError(format!("bad segment name {s:?}: expected seg-NNNNNN or seg-NNNNNN-NNNNNN"));
        let rest = s.strip_prefix("seg-").ok_or_else(bad)?;
        let num = |p: &str| -> Result<u64, ParseError> {
            if p.len() >= 6 && p.bytes().all(|b| b.is_ascii_digit()) && (p.len() == 6 || !p.starts_with('0')) {
                p.parse().map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        let name = match rest.split_once('-') {
            Some((a, b)) => SegmentName { first: num(a)?, last: num(b)? },
            None => SegmentName::single(num(rest)?),
        };
        if name.first > name.last || name.first == 0 || (rest.contains('-') && name.first == name.last) {
            return Err(bad());
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_spelling_is_strict() {
        assert_eq!("00000000000000ff".parse::<Oid>().unwrap(), Oid(255));
        assert_eq!(Oid(255).to_string(), "00000000000000ff");
        for bad in ["ff", "00000000000000FF", "0x000000000000ff", "000000000000000ff", "00000000000000fg", ""] {
            assert!(bad.parse::<Oid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamp_round_trips_wall_clock() {
        // 2026-11-21T11:20:30Z
        let t = 1_795_260_030.0;
        let tid = Tid::from_unix(t);
        assert!((tid.to_unix() - t).abs() < 1e-3, "{}", tid.to_unix());
        assert_eq!(&tid.iso8601()[..19], "2026-11-21T11:20:30");
        // 2000-01-01T00:00Z: ((100*12 + 0)*31 + 0)*24*60 = 53568000 minutes = 0x03316200.
        let y2k = Tid::from_unix(946_684_800.0);
        assert_eq!(y2k.0, 0x0331_6200_0000_0000);
        assert_eq!(parse_iso8601("2000-01-01T00:00:00Z"), Some(946_684_800.0));
        assert_eq!(parse_iso8601("2000-01-01"), Some(946_684_800.0));
        assert_eq!(parse_iso8601("2000-13-01"), None);
    }

    #[test]
    fn tids_increase_even_if_clock_goes_back() {
        let future = Tid(Tid::now().0 + (1000 << 32));
        let next = Tid::next_after(future);
        assert_eq!(next.0, future.0 + 1);
    }

    #[test]
    fn segment_names_sort_in_chain_order() {
        let a: SegmentName = "seg-000001-000003".parse().unwrap();
        let b: SegmentName = "seg-000004".parse().unwrap();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(SegmentName::from_file_name("seg-000004.fs2"), Some(b));
        assert_eq!(SegmentName::single(1234567).to_string(), "seg-1234567");
        for bad in ["seg-1", "seg-000003-000001", "seg-000001-000001", "x-000001", "seg-0000001", "seg-000000"] {
            assert!(bad.parse::<SegmentName>().is_err(), "{bad}");
        }
    }
}
