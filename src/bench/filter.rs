//! P4 with many segments (issue 16 item 5): random 64-bit oids spread over
//! `FILTER_SEGMENTS` past segments, so every segment's oid range covers every oid and
//! only the per-segment oid filter keeps a load from searching every index. Loads timed
//! with the filters on and off, on the same storage, in the same run.

use super::report::{fmt_count, fmt_ns, fmt_ratio, Rng, Row};
use super::workload::{measure_loads, object_data, Latency};
use super::{Bench, Oids, BULK_TXN, SEED};
use filestorage2::{set_oid_filters, Error, Oid, Options, Result, SegmentState, Storage};

/// Past segments of the many-segment P4 row.
const FILTER_SEGMENTS: u64 = 20;
/// Alternating on/off passes (each over a fresh sample); the medians are pooled.
const FILTER_PASSES: u64 = 3;

impl Bench<'_> {
    pub(super) fn loads_over_many_segments(&mut self) -> Result<()> {
        let a = self.args;
        let n = a.objects.max(FILTER_SEGMENTS);
        let kind = Oids::Random;
        let dir = self.root.join("filter-segments");
        let s = Storage::create(&dir, Options { sync: false, rotate_size: 0, ..Options::default() })?;
        eprintln!("bench: P4 filter: loading {} random oids into {FILTER_SEGMENTS} segments", fmt_count(n));
        let per_seg = n.div_ceil(FILTER_SEGMENTS);
        let mut buf = Vec::new();
        let mut i = 0;
        while i < n {
            let seg_end = (i + per_seg).min(n);
            while i < seg_end {
                let mut txn = s.begin();
                for j in i..(i + BULK_TXN).min(seg_end) {
                    let oid = kind.oid(j);
                    object_data(oid, a.size, &mut buf);
                    txn.store(Oid(oid), &buf)?;
                }
                txn.commit()?;
                i = (i + BULK_TXN).min(seg_end);
            }
            s.rotate()?;
        }
        s.sync()?;
        let segments = s.segments()?.iter().filter(|x| x.state == SegmentState::Past).count();
        // Warm: every object once (pages of data, indexes and filters).
        for j in 0..n {
            if s.load(Oid(kind.oid(j)))?.is_none() {
                return Err(Error::invalid(format!("bench: oid {} missing", Oid(kind.oid(j)))));
            }
        }
        let mut rng = Rng(SEED ^ 0x4646);
        let mut on = Vec::new();
        let mut off = Vec::new();
        let mut miss_on = Vec::new();
        let mut miss_off = Vec::new();
        let hit = |o: u64| match s.load(Oid(o))? {
            Some((_, d)) => Ok(d.len()),
            None => Err(Error::invalid(format!("bench: oid {} vanished", Oid(o)))),
        };
        // Oids none of the segments holds (a bijection's image outside 0..n).
        let absent = |o: u64| match s.load(Oid(o))? {
            None => Ok(0),
            Some(_) => Err(Error::invalid(format!("bench: absent oid {} found", Oid(o)))),
        };
        eprintln!("bench: P4 filter: timing {} loads × {FILTER_PASSES} passes, filters on and off", fmt_count(a.loads));
        for _ in 0..FILTER_PASSES {
            for filters in [true, false] {
                set_oid_filters(filters);
                let sample: Vec<u64> = (0..2 * a.loads).map(|_| kind.oid(rng.below(n))).collect();
                let misses: Vec<u64> = (0..2 * a.loads).map(|_| kind.oid(n + rng.below(u64::MAX - n))).collect();
                let (h, m) = (measure_loads(&sample, hit)?, measure_loads(&misses, absent)?);
                if filters {
                    on.push(h);
                    miss_on.push(m);
                } else {
                    off.push(h);
                    miss_off.push(m);
                }
            }
        }
        set_oid_filters(true);
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
        let med = |v: &[Latency], f: fn(&Latency) -> u64| {
            let mut x: Vec<u64> = v.iter().map(f).collect();
            x.sort_unstable();
            x[x.len() / 2]
        };
        let (p50, p99) = (med(&on, |l| l.median), med(&on, |l| l.p99));
        let (p50_off, p99_off) = (med(&off, |l| l.median), med(&off, |l| l.p99));
        self.rows.push(Row {
            id: "P4".into(),
            workload: format!("random load, {} random oids in {segments} past segs, warm, 1 thread", fmt_count(n)),
            measured: format!("filter p50 {}, p99 {}", fmt_ns(p50 as f64), fmt_ns(p99 as f64)),
            reference: format!("no filter p50 {}, p99 {}", fmt_ns(p50_off as f64), fmt_ns(p99_off as f64)),
            ratio: fmt_ratio(p50 as f64 / p50_off as f64),
            target: "p50 ≤ 1 µs with 20 past segs".into(),
            met: Some(p50 <= 1000),
        });
        self.notes.push(format!(
            "P4 filter: {segments} past segments of {} random oids each (every segment's oid range covers every \
             oid); {FILTER_PASSES} passes of {} loads with the oid filters on, then off (same storage, fresh \
             samples), medians of the passes; loads of absent oids: filter p50 {}, p99 {}; no filter p50 {}, p99 {}",
            fmt_count(per_seg),
            fmt_count(a.loads),
            fmt_ns(med(&miss_on, |l| l.median) as f64),
            fmt_ns(med(&miss_on, |l| l.p99) as f64),
            fmt_ns(med(&miss_off, |l| l.median) as f64),
            fmt_ns(med(&miss_off, |l| l.p99) as f64),
        ));
        Ok(())
    }
}
