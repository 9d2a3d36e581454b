//! Reader tests: known records written by ZODB 6.4 (protocol 3), hand-made protocol 1
//! and 2 records in the Python 2 ZODB form, every reference form, and malformed input.

use super::*;

fn named(m: &str, n: &str) -> Class {
    Class::Named { module: m.into(), name: n.into() }
}

fn strong(o: u64, class: Option<&str>) -> Reference {
    Reference { oid: Oid(o), kind: RefKind::Strong, class: class.map(str::to_string) }
}

// The root PersistentMapping of a ZODB 6.4 database holding a mapping (oid, class), a
// PersistentList, a WeakRef and an OOBTree: note `h\x00` in the state pickle, a memo
// entry of the class pickle (one pickler writes both).
const ROOT: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03(X\x01\x00\x00\x00aq\x04C\x08\x00\x00\x00\x00\x00\x00\x00\x01q\x05h\x00\x86q\x06QX\x01\x00\x00\x00lq\x07C\x08\x00\x00\x00\x00\x00\x00\x00\x02q\x08cpersistent.list\nPersistentList\nq\t\x86q\nQX\x01\x00\x00\x00wq\x0b]q\x0c(h\x0bh\x05\x85q\reQX\x01\x00\x00\x00tq\x0eC\x08\x00\x00\x00\x00\x00\x00\x00\x03q\x0fcBTrees.OOBTree\nOOBTree\nq\x10\x86q\x11Qus.";
const BTREE: &[u8] = b"\x80\x03cBTrees.OOBTree\nOOBTree\nq\x00.\x80\x03(X\x01\x00\x00\x000q\x01K\x00X\x01\x00\x00\x001q\x02K\x01X\x01\x00\x00\x002q\x03K\x02tq\x04\x85q\x05\x85q\x06\x85q\x07.";

#[test]
fn reads_zodb_protocol_3_records() {
    let r = read_record(ROOT).unwrap();
    assert_eq!(r.class, named("persistent.mapping", "PersistentMapping"));
    assert_eq!(
        r.refs,
        vec![
            strong(1, Some("persistent.mapping.PersistentMapping")),
            strong(2, Some("persistent.list.PersistentList")),
            Reference { oid: Oid(1), kind: RefKind::Weak { database: None }, class: None },
            strong(3, Some("BTrees.OOBTree.OOBTree")),
        ]
    );
    let b = read_record(BTREE).unwrap();
    assert_eq!(b.class, named("BTrees.OOBTree", "OOBTree"));
    assert!(b.refs.is_empty());
    assert_eq!(r.class.to_string(), "persistent.mapping.PersistentMapping");
}

#[test]
fn reads_python2_protocol_1_and_2_records() {
    // ZODB 3 on Python 2: oids as SHORT_BINSTRING ('U'), (class, None) class pickles,
    // a plain-oid reference and a cross-database one.
    let p1 = b"(cfoo.bar\nBaz\nq\x01Ntq\x02.}q\x03(U\x01xq\x04U\x08\x00\x00\x00\x00\x00\x00\x00\x07q\x05QU\x01yq\x06]q\x07(U\x01mq\x08(U\x05otherq\tU\x08\x00\x00\x00\x00\x00\x00\x00\x09q\nh\x01tq\x0beQu.";
    let r = read_record(p1).unwrap();
    assert_eq!(r.class, named("foo.bar", "Baz"));
    assert_eq!(
        r.refs,
        vec![
            strong(7, None),
            Reference {
                oid: Oid(9),
                kind: RefKind::CrossDatabase { database: "other".into() },
                class: Some("foo.bar.Baz".into())
            },
        ]
    );
    // Protocol 2 with a ((module, name), None) class and an ['n', ...] reference.
    let p2 = b"\x80\x02U\x03modq\x00U\x04Nameq\x01\x86q\x02N\x86q\x03.\x80\x02]q\x04(U\x01nU\x02dbU\x08\x00\x00\x00\x00\x00\x00\x00\x05\x86eQ\x85.";
    let r = read_record(p2).unwrap();
    assert_eq!(r.class, named("mod", "Name"));
    assert_eq!(
        r.refs,
        vec![Reference { oid: Oid(5), kind: RefKind::CrossDatabase { database: "db".into() }, class: None }]
    );
}

#[test]
fn reads_weak_forms_persid_and_protocol_0_strings() {
    // ['w', (oid, 'db')], the legacy [oid], and a protocol-0 PERSID / quoted STRING.
    let rec = b"cm\nC\n.(]q\x00(U\x01wU\x08\x00\x00\x00\x00\x00\x00\x00\x04U\x02d1\x86eQ]q\x01U\x08\x00\x00\x00\x00\x00\x00\x00\x06aQS'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x08'\nQl.";
    let r = read_record(rec).unwrap();
    assert_eq!(r.class, named("m", "C"));
    assert_eq!(
        r.refs,
        vec![
            Reference { oid: Oid(4), kind: RefKind::Weak { database: Some("d1".into()) }, class: None },
            Reference { oid: Oid(6), kind: RefKind::Weak { database: None }, class: None },
            strong(8, None),
        ]
    );
    let persid = b"cm\nC\n.P\x00\x00\x00\x00\x00\x00\x00\x0b\n.";
    assert_eq!(read_record(persid).unwrap().refs, vec![strong(11, None)]);
    // Protocol 4 forms: SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, FRAME.
    let p4 = b"\x80\x04\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8c\x01m\x94\x8c\x01C\x94\x93\x94.\x80\x04N.";
    assert_eq!(read_record(p4).unwrap().class, named("m", "C"));
}

#[test]
fn a_persistent_class_is_named_by_its_reference() {
    let rec = b"\x80\x03C\x08\x00\x00\x00\x00\x00\x00\x00\x02QN\x86.\x80\x03N.";
    let r = read_record(rec).unwrap();
    assert_eq!(r.class, Class::Persistent(Oid(2)));
    assert_eq!(r.refs, vec![strong(2, None)]);
}

#[test]
fn what_is_not_a_zodb_record_is_refused() {
    let refused: &[(&[u8], &str)] = &[
        (b"", "truncated"),
        (b"hello, world\n", "memo"),
        (b"root: {'greeting': <oid 0000000000000001>}", "memo put"),
        (b"\x80\x03cm\nC\n.\xf0.", "not a pickle opcode"),
        (b"0", "underflow"),
        (b"\x80\x03cm\nC\n.", "no state pickle"),
        (b"\x80\x03cm\nC\n.N.x", "after the state pickle"),
        (b"\x80\x03K\x01.N.", "does not name a class"),
        (b"\x80\x03cm\nC\n.C\x03abcQ.", "3-byte oid"),
        (b"\x80\x03cm\nC\n.]X\x01\x00\x00\x00pC\x08\x00\x00\x00\x00\x00\x00\x00\x01\x85\x86Q.", "1-byte oid"),
        (b"\x80\x03cm\nC\n.}Q.", "neither"),
        (b"\x80\x03cm\nC\n.(X\x01\x00\x00\x00pC\x08\x00\x00\x00\x00\x00\x00\x00\x01\x85lQ.", "unknown extended"),
        (b"\x80\x03cm\nC\n.(X\x01\x00\x00\x00wK\x01lQ.", "not a tuple"),
        (b"\x80\x03cm\nC\n.K\x01Q.", "neither"),
        (b"\x80\x03cm\nC\n.K\x01N\x86Q.", "not a string"),
        (b"\x80\x03cm\nC\n.NN.", "malformed pickle stack"),
        (b"\x80\x03cm\nC\n.(N.", "malformed pickle stack"),
        (b"\x80\x09cm\nC\n.N.", "protocol 9"),
        (b"\x80\x03cm\nC\n.X\xff\xff\xff\xffab.", "truncated"),
        (b"\x80\x03cm\nC\n.\x8e\xff\xff\xff\xff\xff\xff\xff\xff.", "truncated"),
    ];
    for (bytes, why) in refused {
        match read_record(bytes) {
            Ok(r) => panic!("{bytes:?} read as {r:?}"),
            Err(e) => assert!(e.to_string().contains(why), "{bytes:?}: {e} (expected {why:?})"),
        }
    }
}

/// xorshift64*: deterministic pseudo-random bytes without a crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn fuzz_random_and_mutated_records_never_panic() {
    let n: u64 = std::env::var("FS2_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let seeds: [&[u8]; 3] =
        [ROOT, BTREE, b"(cfoo.bar\nBaz\nq\x01Ntq\x02.}q\x03(U\x01xq\x04U\x08\x00\x00\x00\x00\x00\x00\x00\x07q\x05Qu."];
    // Bytes a pickle is made of, so that random input goes deep into the machine.
    let alphabet: &[u8] = b"().0129NJKMGFILUCTXBSVt]lae}dsucRbiopqrghjQP\n\x80\x81\x85\x86\x87\x88\x8a\x8c\x8e\x93\x94\x95\x01\x03\x08\xff";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut reader = Reader::new();
    let mut ok = 0;
    for i in 0..n {
        let mut d: Vec<u8> = if i % 3 == 0 {
            let len = rng.below(64) as usize;
            (0..len)
                .map(|_| {
                    if rng.below(4) == 0 {
                        rng.next() as u8
                    } else {
                        alphabet[rng.below(alphabet.len() as u64) as usize]
                    }
                })
                .collect()
        } else {
            seeds[rng.below(seeds.len() as u64) as usize].to_vec()
        };
        for _ in 0..=rng.below(4) {
            if d.is_empty() {
                break;
            }
            let p = rng.below(d.len() as u64) as usize;
            match rng.below(4) {
                0 => d[p] = rng.next() as u8,
                1 => d[p] = alphabet[rng.below(alphabet.len() as u64) as usize],
                2 => d.truncate(p),
                _ => {
                    let q = rng.below(d.len() as u64) as usize;
                    let chunk = d[p.min(q)..p.max(q)].to_vec();
                    d.splice(p..p, chunk);
                }
            }
        }
        if reader.read(&d).is_ok() {
            ok += 1;
        }
    }
    // Some mutated records stay valid (e.g. a changed key byte); most do not.
    assert!(ok > 0 && ok < n, "{ok} of {n} read");
}

#[test]
fn hostile_records_stay_bounded() {
    // A million nested marks and a million memo copies of one list: linear time, no
    // recursion, no blow-up.
    let mut d = b"\x80\x03cm\nC\n.".to_vec();
    d.extend(std::iter::repeat_n(b'(', 1 << 20));
    d.push(b'.');
    assert!(read_record(&d).is_err());
    let mut d = b"\x80\x03cm\nC\n.]q\x00".to_vec();
    for _ in 0..(1 << 18) {
        d.extend_from_slice(b"h\x00h\x00\x86q\x00");
    }
    d.push(b'.');
    let t = std::time::Instant::now();
    assert!(read_record(&d).is_err(), "stack holds more than one value at STOP");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

mod gc {
    use super::super::gc::{collect, mark, GcOptions, GcReport, Graph};
    use super::super::scan::{class_histogram, dangling, referrers};
    use crate::error::Error;
    use crate::store::{Options, Storage};
    use crate::types::{Oid, Tid};

    enum R {
        Strong(u64),
        WithClass(u64),
        Weak(u64),
        Cross(u64),
    }

    /// A protocol-3 record of class `m.C` whose state is a list of references.
    fn rec(refs: &[R]) -> Vec<u8> {
        let mut d = b"\x80\x03cm\nC\nq\x00.\x80\x03]q\x01(".to_vec();
        let oid = |d: &mut Vec<u8>, o: u64| {
            d.extend_from_slice(b"C\x08");
            d.extend_from_slice(&o.to_be_bytes());
        };
        for r in refs {
            match *r {
                R::Strong(o) => oid(&mut d, o),
                R::WithClass(o) => {
                    oid(&mut d, o);
                    d.extend_from_slice(b"h\x00\x86");
                }
                R::Weak(o) => {
                    d.extend_from_slice(b"(X\x01\x00\x00\x00w");
                    oid(&mut d, o);
                    d.extend_from_slice(b"\x85l");
                }
                R::Cross(o) => {
                    d.extend_from_slice(b"(X\x01\x00\x00\x00nX\x05\x00\x00\x00other");
                    oid(&mut d, o);
                    d.extend_from_slice(b"\x86l");
                }
            }
            d.push(b'Q');
        }
        d.extend_from_slice(b"e.");
        d
    }

    fn store(s: &Storage, objs: &[(u64, Vec<u8>)]) -> Tid {
        let mut t = s.begin();
        for (o, d) in objs {
            t.store(Oid(*o), d).unwrap();
        }
        t.commit().unwrap()
    }

    fn run(s: &Storage, dry: bool, hook: &mut dyn FnMut()) -> (crate::Result<GcReport>, Vec<u64>) {
        let mut g = Vec::new();
        let r = collect(
            s,
            GcOptions {
                dry_run: dry,
                on_garbage: &mut |o| g.push(o.0),
                progress: &mut |_, _, _| {},
                before_commit: hook,
            },
        );
        (r, g)
    }

    fn live(s: &Storage) -> Vec<u64> {
        s.list(Oid(0), Tid::MAX, 1000).unwrap().iter().map(|o| o.oid.0).collect()
    }

    /// root 0 -> 1 (class) -> 2; 0 weak-> 3; 0 cross-> 4; 0 -> 999 (missing);
    /// 5 <-> 6 garbage cycle; 7 garbage referring to 2; 8 garbage, not a ZODB record.
    fn sample(dir: &std::path::Path) -> Storage {
        let s = Storage::create(dir, Options::default()).unwrap();
        store(
            &s,
            &[
                (0, rec(&[R::WithClass(1), R::Weak(3), R::Cross(4), R::Strong(999)])),
                (1, rec(&[R::Strong(2)])),
                (2, rec(&[])),
                (3, rec(&[])),
                (4, rec(&[])),
                (5, rec(&[R::Strong(6)])),
                (6, rec(&[R::WithClass(5)])),
                (7, rec(&[R::Strong(2)])),
                (8, b"plain bytes".to_vec()),
            ],
        );
        s
    }

    #[test]
    fn gc_follows_strong_references_only() {
        let t = tempfile::tempdir().unwrap();
        let s = sample(t.path());
        let (r, g) = run(&s, true, &mut || {});
        let r = r.unwrap();
        assert_eq!(g, [3, 4, 5, 6, 7, 8]);
        assert_eq!((r.objects, r.reachable, r.garbage, r.unreadable_garbage, r.tid), (9, 3, 6, 1, None));
        assert_eq!(live(&s).len(), 9, "a dry run deletes nothing");
        let (r, g) = run(&s, false, &mut || {});
        let tid = r.unwrap().tid.expect("committed");
        assert_eq!(g, [3, 4, 5, 6, 7, 8]);
        assert_eq!(live(&s), [0, 1, 2]);
        let txn = s.transactions(tid, tid).next().unwrap().unwrap();
        assert_eq!(txn.records.len(), 6, "one transaction deletes all the garbage");
        assert_eq!(run(&s, false, &mut || {}).0.unwrap().garbage, 0);
    }

    #[test]
    fn a_concurrent_change_to_garbage_deletes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = sample(t.path());
        let s2 = s.clone();
        let (r, _) = run(&s, false, &mut || {
            store(&s2, &[(6, rec(&[]))]);
        });
        assert!(matches!(r, Err(Error::Conflict { oid: Oid(6), .. })), "{r:?}");
        assert_eq!(live(&s).len(), 9, "nothing deleted");
    }

    #[test]
    fn a_concurrent_reference_to_garbage_deletes_nothing() {
        // A client that still held object 7 links it from the root after the walk.
        let t = tempfile::tempdir().unwrap();
        let s = sample(t.path());
        let s2 = s.clone();
        let (r, _) = run(&s, false, &mut || {
            store(&s2, &[(0, rec(&[R::WithClass(1), R::Strong(7)]))]);
        });
        assert!(matches!(r, Err(Error::Conflict { oid: Oid(7), .. })), "{r:?}");
        assert_eq!(live(&s).len(), 9, "nothing deleted");
        // Run again: 7 is reachable now.
        let (r, g) = run(&s, false, &mut || {});
        r.unwrap();
        assert_eq!(g, [3, 4, 5, 6, 8]);
    }

    #[test]
    fn gc_refuses_unknown_references_and_a_missing_root() {
        let t = tempfile::tempdir().unwrap();
        let s = Storage::create(t.path(), Options::default()).unwrap();
        assert_eq!(run(&s, false, &mut || {}).0.unwrap().objects, 0, "empty storage: nothing to do");
        store(&s, &[(1, rec(&[]))]);
        let e = run(&s, false, &mut || {}).0.unwrap_err();
        assert!(e.to_string().contains("no root object"), "{e}");
        // A reachable record that is not a ZODB record: its references are unknown.
        store(&s, &[(0, rec(&[R::Strong(2)])), (2, b"<oid 0000000000000001>".to_vec())]);
        let e = run(&s, false, &mut || {}).0.unwrap_err();
        assert!(
            e.to_string().contains("object 0000000000000002 is reachable")
                && e.to_string().contains("not a ZODB record"),
            "{e}"
        );
        assert_eq!(live(&s), [0, 1, 2], "nothing deleted");
    }

    /// A collection whose deletions spilled to disk (lib tests spill after 2), cut at
    /// every sync point and opened with each crash mode: all the garbage or none of it
    /// is gone, and all of it once the collection was acknowledged.
    #[test]
    fn gc_cut_at_every_sync_point_deletes_all_or_nothing() {
        use crate::vfs::{CrashMode, SimVfs};
        let dir = std::path::Path::new("/sim-gc");
        let opts = |v: &SimVfs| Options { vfs: std::sync::Arc::new(v.clone()), ..Options::default() };
        let mut objs: Vec<(u64, Vec<u8>)> = vec![(0, rec(&(1..20).map(R::Strong).collect::<Vec<_>>()))];
        objs.extend((1..20).map(|i| (i, rec(&[]))));
        objs.extend((100..400).map(|i| (i, rec(&[R::Strong(0), R::Strong(i + 1)]))));
        let all: Vec<u64> = objs.iter().map(|o| o.0).collect();
        let reachable: Vec<u64> = (0..20).collect();
        let build = |v: &SimVfs| {
            let s = Storage::create(dir, opts(v)).unwrap();
            store(&s, &objs);
            s
        };
        let v = SimVfs::new();
        let s = build(&v);
        let before = v.syncs();
        assert_eq!(run(&s, false, &mut || {}).0.unwrap().garbage, 300);
        let total = v.syncs() - before;
        drop(s);
        assert!(total >= 1, "the collection syncs");
        for k in 0..=total {
            let v = SimVfs::new();
            let s = build(&v);
            v.crash_at_sync(k);
            let acked = run(&s, false, &mut || {}).0.is_ok();
            drop(s);
            for mode in [CrashMode::DurableOnly, CrashMode::AllWritten, CrashMode::Torn(k + 1)] {
                let s = Storage::open(dir, opts(&v.crash(mode))).unwrap();
                let l = live(&s);
                assert!(l == reachable || (l == all && !acked), "crash at sync {k} ({mode:?}), acked {acked}: {l:?}");
            }
        }
    }

    #[test]
    fn marking_with_a_tiny_stack_spills_and_finds_the_same_set() {
        // A chain 0 -> 1 -> ... -> 299 and a fan-out 0 -> 1000..1299, 200 garbage.
        let t = tempfile::tempdir().unwrap();
        let s = Storage::create(t.path(), Options::default()).unwrap();
        let mut objs: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut root: Vec<R> = (1000..1300).map(R::Strong).collect();
        root.push(R::Strong(1));
        objs.push((0, rec(&root)));
        for i in 1..300 {
            objs.push((i, rec(&[R::Strong(i + 1), R::Strong(1000 + i)])));
        }
        objs.push((300, rec(&[])));
        for i in 1000..1300 {
            objs.push((i, rec(&[R::Strong(i - 999)])));
        }
        for i in 5000..5200 {
            objs.push((i, rec(&[R::Strong(0), R::Strong(i + 1)])));
        }
        store(&s, &objs);
        let g = Graph::build(&s, s.last_tid(), &mut |_, _, _| {}).unwrap();
        let big = mark(&s, &g, Oid(0), 1 << 20, &mut |_, _, _| {}).unwrap();
        for limit in [1, 2, 3, 64] {
            let small = mark(&s, &g, Oid(0), limit, &mut |_, _, _| {}).unwrap();
            assert_eq!(small.reachable, big.reachable, "stack limit {limit}");
            for i in 0..g.len() {
                assert_eq!(small.is_marked(i), big.is_marked(i), "node {i} with stack limit {limit}");
            }
        }
        assert_eq!(big.reachable, 601);
    }

    #[test]
    fn histogram_referrers_and_dangling_references() {
        let t = tempfile::tempdir().unwrap();
        let s = sample(t.path());
        let h = class_histogram(&s, Tid::MAX, &mut |_| {}).unwrap();
        let names: Vec<(&str, u64)> = h.iter().map(|c| (c.class.as_str(), c.count)).collect();
        assert_eq!(names, [("m.C", 8), ("(not a ZODB record)", 1)]);
        let from: Vec<u64> = referrers(&s, Oid(2), Tid::MAX, &mut |_| {}).unwrap().iter().map(|r| r.0 .0).collect();
        assert_eq!(from, [1, 7]);
        let mut found = Vec::new();
        let mut bad = Vec::new();
        let r =
            dangling(&s, Tid::MAX, &mut |_, _, _| {}, &mut |a, b| found.push((a.0, b.0)), &mut |o, _| bad.push(o.0))
                .unwrap();
        assert_eq!(found, [(0, 999)]);
        assert_eq!(bad, [8]);
        assert_eq!((r.dangling, r.unreadable), (1, 1));
        // A deleted target is dangling too.
        let mut t2 = s.begin();
        t2.delete(Oid(2)).unwrap();
        t2.commit().unwrap();
        let mut found = Vec::new();
        dangling(&s, Tid::MAX, &mut |_, _, _| {}, &mut |a, b| found.push((a.0, b.0)), &mut |_, _| {}).unwrap();
        assert_eq!(found, [(0, 999), (1, 2), (7, 2)]);
    }
}
