//! The bench's pure parts: statistics, formatting, report parsing, target selection.

use super::merge::{merge_pair, parse_merge_probe};
use super::open::parse_probe;
use super::report::{fmt_bytes, fmt_count, fmt_ns, fmt_num, fmt_ratio, format_table, median_f64, percentile, Rng};
use super::system::{fs_type_of, stat_cpu_ticks, status_field_kib};
use super::workload::object_data;
use super::{Oids, Selection, MERGE_SEGMENTS};
use std::path::Path;

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&v, 50.0), 50);
    assert_eq!(percentile(&v, 99.0), 99);
    assert_eq!(percentile(&v, 100.0), 100);
    assert_eq!(percentile(&v, 0.0), 1);
    assert_eq!(percentile(&[7], 99.0), 7);
    assert_eq!(percentile(&[], 50.0), 0);
    assert_eq!(percentile(&[1, 2, 3], 50.0), 2);
    assert_eq!(median_f64(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median_f64(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    assert_eq!(median_f64(&[]), 0.0);
}

#[test]
fn table_columns_align_without_trailing_spaces() {
    let rows = vec![
        vec!["P1".to_string(), "µs wide".to_string(), "x".to_string()],
        vec!["limit".into(), "a".into(), "".into()],
    ];
    let t = format_table(&["id", "what", "z"], &rows);
    assert_eq!(t, "id     what     z\n-----  -------  -\nP1     µs wide  x\nlimit  a\n");
}

#[test]
fn numbers_format_for_people() {
    assert_eq!(fmt_num(1234567.4), "1,234,567");
    assert_eq!(fmt_num(999.0), "999");
    assert_eq!(fmt_num(1000.0), "1,000");
    assert_eq!(fmt_count(1_000_000), "1M");
    assert_eq!(fmt_count(100_000), "100k");
    assert_eq!(fmt_count(1234), "1234");
    assert_eq!(fmt_ns(850.0), "850 ns");
    assert_eq!(fmt_ns(1250.0), "1.25 µs");
    assert_eq!(fmt_ns(4.5e6), "4.50 ms");
    assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
    assert_eq!(fmt_ratio(0.876), "0.88×");
}

#[test]
fn probe_report_parses() {
    let out = "noise\nopen_ns=1200 reopen_median_ns=900 rss_kib=5000 rss_anon_kib=1000 rss_before_kib=2000 \
               segments=4 active_bytes=4096 loaded=100 warnings=0\n";
    let p = parse_probe(out).unwrap();
    assert_eq!((p.open_ns, p.reopen_median_ns, p.rss_kib, p.segments, p.active_bytes), (1200, 900, 5000, 4, 4096));
    assert!(parse_probe("open_ns=x").is_none());
    assert!(parse_probe("").is_none());
}

#[test]
fn merge_probe_report_parses() {
    let out = "noise\nmerge_ns=2000000000 inputs=4 bytes_in=300 bytes_out=150 records_in=20 records_out=10 \
               transactions_in=2 rss_open_kib=5 anon_open_kib=1 anon_peak_kib=3 hwm_kib=400 hwm_reset=1 samples=9 sync_ns=7\n";
    let p = parse_merge_probe(out).unwrap();
    assert_eq!((p.merge_ns, p.inputs, p.bytes_in, p.records_out), (2_000_000_000, 4, 300, 10));
    assert_eq!((p.anon_peak_kib, p.hwm_kib, p.hwm_reset, p.samples, p.sync_ns), (3, 400, true, 9, 7));
    assert!(parse_merge_probe("merge_ns=1 inputs=4").is_none());
    let stat = "4242 (fs2 (x) y) R 1 4242 4242 0 -1 4194304 500 0 0 0 137 42 0 0 20 0 3 0 100 0 0";
    assert_eq!(stat_cpu_ticks(stat), Some((137, 42)));
    assert_eq!(stat_cpu_ticks("1 (a) R 1"), None);
    assert!(parse_merge_probe("open_ns=1 rss_kib=2").is_none());
}

#[test]
fn selection_takes_p1_to_p12() {
    let all = Selection::parse(&[]).unwrap();
    assert_eq!(all.names(), ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10", "p11", "p12"]);
    let some = Selection::parse(&["P10".into(), " p2 ".into()]).unwrap();
    assert_eq!(some.names(), ["p2", "p10"]);
    assert!(Selection::parse(&["p13".into()]).is_err());
    assert!(Selection::parse(&["p0".into()]).is_err());
    assert!(Selection::parse(&["x".into()]).is_err());
}

#[test]
fn merge_layout_is_half_garbage_in_every_segment() {
    let n = 60_000;
    let mut per_seg = [0u64; MERGE_SEGMENTS];
    for i in 0..n {
        let (a, b) = merge_pair(i);
        assert!(a < b && b < MERGE_SEGMENTS);
        per_seg[a] += 1;
        per_seg[b] += 1;
    }
    // Each segment is in 3 of the 6 pairs: it holds about half of the objects.
    for c in per_seg {
        assert!((c as f64 / n as f64 - 0.5).abs() < 0.02, "{per_seg:?}");
    }
}

#[test]
fn status_fields_and_mounts_parse() {
    let st = "Name:\tfs2\nVmRSS:\t    5124 kB\nRssAnon:\t  1000 kB\n";
    assert_eq!(status_field_kib(st, "VmRSS"), Some(5124));
    assert_eq!(status_field_kib(st, "RssAnon"), Some(1000));
    assert_eq!(status_field_kib(st, "VmHWM"), None);
    let mi = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
              30 22 0:26 / /tmp rw - tmpfs tmpfs rw\n";
    assert_eq!(fs_type_of(mi, Path::new("/work/x")), Some(("ext4".into(), "/dev/vda".into())));
    assert_eq!(fs_type_of(mi, Path::new("/tmp/x")), Some(("tmpfs".into(), "tmpfs".into())));
}

#[test]
fn oids_and_data_are_deterministic() {
    let r: std::collections::HashSet<u64> = (0..10_000).map(|i| Oids::Random.oid(i)).collect();
    assert_eq!(r.len(), 10_000, "random oids never repeat");
    assert_eq!(Oids::Dense.oid(0), 1);
    let mut b = Vec::new();
    object_data(258, 10, &mut b);
    assert_eq!(b, [2, 1, 0, 0, 0, 0, 0, 0, 10, 11]);
    object_data(1, 4, &mut b);
    assert_eq!(b, [1, 0, 0, 0]);
    let mut rng = Rng(1);
    assert!((0..1000).all(|_| rng.below(7) < 7));
}
