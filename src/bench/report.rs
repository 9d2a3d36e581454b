//! Small pure helpers: randomness, statistics, formatting, the table.

/// The splitmix64 finalizer: a bijection of u64.
pub(super) fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix(self.0)
    }
    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// A sorted copy.
pub(super) fn sorted(v: &[u64]) -> Vec<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

/// Nearest-rank percentile of a sorted slice (0 for an empty one).
pub(super) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median (mean of the two middle values for an even count; 0 for none).
pub(super) fn median_f64(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// 1234567.8 → "1,234,568".
pub(super) fn fmt_num(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An object count as a short label: 1000000 → "1M", 100000 → "100k".
pub(super) fn fmt_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

pub(super) fn fmt_ns(ns: f64) -> String {
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{:.2} µs", ns / 1e3),
        ns if ns < 1e9 => format!("{:.2} ms", ns / 1e6),
        ns => format!("{:.2} s", ns / 1e9),
    }
}

pub(super) fn fmt_bytes(b: u64) -> String {
    match b as f64 {
        x if x < 1024.0 * 1024.0 => format!("{:.1} KiB", x / 1024.0),
        x if x < 1024.0 * 1024.0 * 1024.0 => format!("{:.1} MiB", x / (1024.0 * 1024.0)),
        x => format!("{:.2} GiB", x / (1024.0 * 1024.0 * 1024.0)),
    }
}

pub(super) fn fmt_kib(k: u64) -> String {
    fmt_bytes(k * 1024)
}

pub(super) fn fmt_bps(bps: f64) -> String {
    format!("{}/s", fmt_bytes(bps as u64))
}

pub(super) fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "-".into()
    }
}

/// One line of the result table.
pub(super) struct Row {
    pub(super) id: String,
    pub(super) workload: String,
    pub(super) measured: String,
    pub(super) reference: String,
    pub(super) ratio: String,
    pub(super) target: String,
    /// Whether the target is met, where this run can tell.
    pub(super) met: Option<bool>,
}

pub(super) fn render(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            vec![
                r.id.clone(),
                r.workload.clone(),
                r.measured.clone(),
                r.reference.clone(),
                r.ratio.clone(),
                r.target.clone(),
                met.to_string(),
            ]
        })
        .collect();
    format_table(&["id", "workload", "measured", "reference (same run)", "ratio", "target", "met"], &cells)
}

/// Left-aligned columns two spaces apart, a rule under the header, no trailing spaces.
pub(super) fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < width.len() {
                width[i] = width[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            s.extend(std::iter::repeat_n(' ', width[i].saturating_sub(c.chars().count())));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    out += &line(&mut rule.iter().map(String::as_str));
    for r in rows {
        out += &line(&mut r.iter().take(width.len()).map(String::as_str));
    }
    out
}
