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
    assert_eq!(r.refs, vec![Reference { oid: Oid(5), kind: RefKind::CrossDatabase { database: "db".into() }, class: None }]);
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
    let seeds: [&[u8]; 3] = [ROOT, BTREE, b"(cfoo.bar\nBaz\nq\x01Ntq\x02.}q\x03(U\x01xq\x04U\x08\x00\x00\x00\x00\x00\x00\x00\x07q\x05Qu."];
    // Bytes a pickle is made of, so that random input goes deep into the machine.
    let alphabet: &[u8] = b"().0129NJKMGFILUCTXBSVt]lae}dsucRbiopqrghjQP\n\x80\x81\x85\x86\x87\x88\x8a\x8c\x8e\x93\x94\x95\x01\x03\x08\xff";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut reader = Reader::new();
    let mut ok = 0;
    for i in 0..n {
        let mut d: Vec<u8> = if i % 3 == 0 {
            let len = rng.below(64) as usize;
            (0..len)
                .map(|_| if rng.below(4) == 0 { rng.next() as u8 } else { alphabet[rng.below(alphabet.len() as u64) as usize] })
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
