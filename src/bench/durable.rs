//! P1–P4: durable commits (one writer, group commit) next to the fsync limit; bulk load next
//! to a sequential write; random loads next to the same lookup on plain mapped files.

use super::report::{fmt_bps, fmt_bytes, fmt_count, fmt_ns, fmt_num, fmt_ratio, median_f64, Rng, Row};
use super::workload::{
    build, durable_commits, fsync_loop, measure_loads, object_data, seq_write, timer_overhead_ns, Built, PlainFiles,
};
use super::{Bench, Oids, BULK_TXN, P2_FACTOR, ROUNDS, SEED, TXN_OBJECTS, WORKING_SET};
use filestorage2::{Error, Oid, Options, Result, Storage};
use std::hint::black_box;
use std::time::Duration;

impl Bench<'_> {
    /// The fsync limit, P1 and P2, interleaved in rounds.
    pub(super) fn durable(&mut self, with_p2: bool) -> Result<()> {
        let a = self.args;
        let per_round = (a.commits / ROUNDS).max(1);
        let p2_per_writer = (P2_FACTOR * a.commits / ROUNDS / a.writers).max(1);
        let s1 = Storage::create(&self.root.join("p1"), Options::default())?;
        let s2 = if with_p2 { Some(Storage::create(&self.root.join("p2"), Options::default())?) } else { None };
        // Warm up (untimed), and learn how many bytes one transaction appends.
        let warm = 20;
        let before = s1.stats()?.bytes;
        durable_commits(&s1, 1, warm, ROUNDS, a.size)?;
        let txn_bytes = ((s1.stats()?.bytes - before) / warm) as usize;
        if let Some(s2) = &s2 {
            durable_commits(s2, a.writers, 2, ROUNDS, a.size)?;
        }
        let (mut limit, mut limit_txn, mut one, mut many) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let rate = |dt: Duration, n: u64| n as f64 / dt.as_secs_f64();
            limit.push(rate(fsync_loop(&self.root, per_round, a.size)?, per_round));
            limit_txn.push(rate(fsync_loop(&self.root, per_round, txn_bytes)?, per_round));
            one.push(rate(durable_commits(&s1, 1, per_round, r, a.size)?, per_round));
            let mut line = format!(
                "bench: round {}/{ROUNDS}: fsync limit {}/s ({txn_bytes} B: {}/s), 1 writer {} tx/s",
                r + 1,
                fmt_num(limit[r as usize]),
                fmt_num(limit_txn[r as usize]),
                fmt_num(one[r as usize])
            );
            if let Some(s2) = &s2 {
                many.push(rate(durable_commits(s2, a.writers, p2_per_writer, r, a.size)?, p2_per_writer * a.writers));
                line += &format!(", {} writers {} tx/s", a.writers, fmt_num(many[r as usize]));
            }
            eprintln!("{line}");
        }
        let (limit, limit_txn, one) = (median_f64(&limit), median_f64(&limit_txn), median_f64(&one));
        let limit_row = |bytes: usize, rate: f64, what: &str| Row {
            id: "limit".into(),
            workload: format!("plain file: append {bytes} B + fdatasync{what}"),
            measured: format!("{}/s", fmt_num(rate)),
            reference: "-".into(),
            ratio: "-".into(),
            target: "the machine's fsync limit".into(),
            met: None,
        };
        self.rows.push(limit_row(a.size, limit, " (same disk)"));
        self.rows.push(limit_row(txn_bytes, limit_txn, " (= one P1 txn)"));
        self.rows.push(Row {
            id: "P1".into(),
            workload: format!("durable commits, 1 writer, {TXN_OBJECTS} objects × {} B", a.size),
            measured: format!("{} tx/s", fmt_num(one)),
            reference: format!("fsync limit {}/s", fmt_num(limit)),
            ratio: fmt_ratio(one / limit),
            target: "≥ 0.8× fsync limit".into(),
            met: Some(one / limit >= 0.8),
        });
        self.rows.push(Row {
            id: "P1".into(),
            workload: format!("  same, against appends of {txn_bytes} B"),
            measured: format!("{} tx/s", fmt_num(one)),
            reference: format!("{txn_bytes} B limit {}/s", fmt_num(limit_txn)),
            ratio: fmt_ratio(one / limit_txn),
            target: "(engine overhead beyond the bytes)".into(),
            met: None,
        });
        if with_p2 {
            let many = median_f64(&many);
            self.rows.push(Row {
                id: "P2".into(),
                workload: format!("durable commits, {} writers (group commit)", a.writers),
                measured: format!("{} tx/s", fmt_num(many)),
                reference: format!("1 writer {} tx/s", fmt_num(one)),
                ratio: fmt_ratio(many / one),
                target: "≥ 3× our 1-writer rate".into(),
                met: Some(many / one >= 3.0),
            });
            self.rows.push(Row {
                id: "P2".into(),
                workload: format!("  same, against the fsync limit ({} writers)", a.writers),
                measured: format!("{} tx/s", fmt_num(many)),
                reference: format!("fsync limit {}/s", fmt_num(limit)),
                ratio: fmt_ratio(many / limit),
                target: "≥ 5× ZODB (~1,900 tx/s: ~9,500)".into(),
                met: None,
            });
        }
        self.notes.push(format!(
            "P1/P2: median of {ROUNDS} interleaved rounds ({per_round} fsyncs of each size, {per_round} 1-writer \
             commits, {} {}-writer commits each, after an untimed warm-up); each writer cycles through its own \
             {WORKING_SET} oids (creates, then updates); one P1 transaction appends {txn_bytes} B",
            p2_per_writer * a.writers,
            a.writers
        ));
        Ok(())
    }

    /// P3 (bulk load, dense; and random oids when P4 runs too) and P4 (random loads).
    pub(super) fn bulk_and_loads(&mut self, p3: bool, p4: bool) -> Result<()> {
        let a = self.args;
        let kinds: &[Oids] = if p4 { &[Oids::Dense, Oids::Random] } else { &[Oids::Dense] };
        let timer = timer_overhead_ns();
        for &kind in kinds {
            let dir = self.root.join(format!("bulk-{}-{}", kind.name(), a.objects));
            let (s, built) = build(&dir, kind, a.objects, a.size)?;
            if p3 {
                let seq = seq_write(&self.root, built.bytes)?;
                let objs = a.objects as f64 / built.load.as_secs_f64();
                let bps = built.bytes as f64 / built.load.as_secs_f64();
                let seq_bps = built.bytes as f64 / seq.as_secs_f64();
                self.rows.push(Row {
                    id: "P3".into(),
                    workload: format!(
                        "bulk load {} × {} B, {} oids, txns of {BULK_TXN}, sync at end",
                        fmt_count(a.objects),
                        a.size,
                        kind.name()
                    ),
                    measured: format!("{} obj/s = {}", fmt_num(objs), fmt_bps(bps)),
                    reference: format!("seq write {}", fmt_bps(seq_bps)),
                    ratio: fmt_ratio(bps / seq_bps),
                    target: "≥ 20× ZODB obj/s (ZODB not run)".into(),
                    met: None,
                });
                self.notes.push(format!(
                    "P3 {}: {} in {} segments, {:.2} s; the final rotate (seal) took {}; the seq-write reference \
                     writes the same {} in 1 MiB writes + one fdatasync",
                    kind.name(),
                    fmt_bytes(built.bytes),
                    built.segments,
                    built.load.as_secs_f64(),
                    fmt_ns(built.rotate.as_nanos() as f64),
                    fmt_bytes(built.bytes),
                ));
            }
            if p4 {
                self.random_loads(&s, kind, &built, timer)?;
            }
            drop(s);
            self.built.insert((kind, a.objects), dir);
        }
        Ok(())
    }

    pub(super) fn random_loads(&mut self, s: &Storage, kind: Oids, built: &Built, timer: u64) -> Result<()> {
        let a = self.args;
        let n = a.objects;
        // Warm: every object once, verifying its bytes.
        eprintln!("bench: P4 {}: warming (loading all {} objects)", kind.name(), fmt_count(n));
        let mut want = Vec::new();
        for i in 0..n {
            let oid = kind.oid(i);
            object_data(oid, a.size, &mut want);
            match s.load(Oid(oid))? {
                Some((_, d)) if d == want => {}
                other => {
                    return Err(Error::invalid(format!(
                        "bench: oid {} read back wrong: {:?} bytes",
                        Oid(oid),
                        other.map(|(_, d)| d.len())
                    )))
                }
            }
        }
        let mut rng = Rng(SEED ^ 0x4444);
        // Two different samples: one for the mean, one timed per load (so that the timed
        // pass does not find the first pass's cache lines).
        let sample: Vec<u64> = (0..2 * a.loads).map(|_| kind.oid(rng.below(n))).collect();
        eprintln!("bench: P4 {}: timing {} random loads", kind.name(), fmt_count(a.loads));
        let ours = measure_loads(&sample, |o| match s.load(Oid(o))? {
            Some((_, d)) => Ok(d.len()),
            None => Err(Error::invalid(format!("bench: oid {} vanished", Oid(o)))),
        })?;
        // The reference: the same lookups on plain mapped files.
        let plain = PlainFiles::build(&self.root.join(format!("plain-{}", kind.name())), kind, n, a.size)?;
        for i in 0..n {
            black_box(plain.load(kind.oid(i)));
        }
        let theirs = measure_loads(&sample, |o| {
            plain.load(o).map(|d| d.len()).ok_or_else(|| Error::invalid("bench: plain lookup missed"))
        })?;
        plain.remove();
        self.rows.push(Row {
            id: "P4".into(),
            workload: format!(
                "random load, {} {} oids in {} past segs, warm, 1 thread",
                fmt_count(n),
                kind.name(),
                built.segments
            ),
            measured: format!("p50 {}, p99 {}", fmt_ns(ours.median as f64), fmt_ns(ours.p99 as f64)),
            reference: format!("plain mmap p50 {}, p99 {}", fmt_ns(theirs.median as f64), fmt_ns(theirs.p99 as f64)),
            ratio: fmt_ratio(ours.median as f64 / theirs.median as f64),
            target: "p50 ≤ 1 µs (≥ 8× ZODB's 7.7 µs)".into(),
            met: Some(ours.median <= 1000),
        });
        self.notes.push(format!(
            "P4 {}: {} loads (another {} for the mean), each timed with Instant (timer overhead ~{timer} ns, included); mean without the \
             per-load timer: ours {}, plain {}; plain = binary search in a mapped sorted 16-byte index + copy of \
             the {} B from a mapped data file, no checksum",
            kind.name(),
            fmt_count(a.loads),
            fmt_count(a.loads),
            fmt_ns(ours.mean),
            fmt_ns(theirs.mean),
            a.size
        ));
        Ok(())
    }
}
