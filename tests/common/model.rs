//! Reading a storage against a model of what it holds: ask every read of the API
//! (`dump`), compute what it must answer (`expect`), compare; and the shape of the chain.

use super::workload::*;
use filestorage2::{Oid, SegmentName, SegmentState, Storage, Tid};

/// What to ask: every oid (and one never stored), at every tid of the model (and just
/// before each, when thorough); `load_before` and `revision` at every tid unless light.
#[derive(Clone)]
pub struct Queries {
    pub oids: Vec<u64>,
    pub tids: Vec<Tid>,
    pub light: bool,
}

pub fn queries(model: &Model, thorough: bool) -> Queries {
    let max = model.iter().flat_map(|(_, t)| t.writes.keys()).max().copied().unwrap_or(0);
    let mut tids = Vec::new();
    for (t, _) in model {
        if thorough {
            tids.push(Tid(t.0 - 1));
        }
        tids.push(*t);
    }
    Queries { oids: (0..=max + 1).collect(), tids, light: false }
}

fn txn_range(q: &Queries) -> (Tid, Tid) {
    match q.tids.len() {
        0 => (Tid::ZERO, Tid::MAX),
        n => (q.tids[n / 3], q.tids[(2 * n) / 3]),
    }
}

/// Read everything the storage answers for `q`, errors included.
pub fn dump(s: &Storage, q: &Queries) -> Dump {
    let mut d: Dump = Vec::new();
    d.push((("last_tid", 0, NO), val(V::Tid(s.last_tid()))));
    d.push((("max_oid", 0, NO), val(V::Oid(s.max_oid()))));
    d.push((("count_objects", 0, NO), one(s.count_objects().map(V::Count))));
    for &o in &q.oids {
        let oid = Oid(o);
        d.push((("load", o, NO), one(s.load(oid).map(|r| V::Load(r.map(|(t, v)| (t, B(v))))))));
        d.push((("current_tid", o, NO), one(s.current_tid(oid).map(V::Current))));
        let h = s.history(oid).map(|h| V::History(h.into_iter().map(|r| (r.tid, r.size, r.deleted)).collect()));
        d.push((("history", o, NO), one(h)));
        for &t in &q.tids {
            d.push((("load_at", o, t), one(s.load_at(oid, t).map(|r| V::Load(r.map(|(t, v)| (t, B(v))))))));
            if q.light {
                continue;
            }
            let lb = s.load_before(oid, t).map(|r| V::Before(r.map(|l| (B(l.data), l.tid, l.end))));
            d.push((("load_before", o, t), one(lb)));
            let rev = s.revision(oid, t).map(|r| V::Revision(r.map(|r| (r.tid, r.data.map(B)))));
            d.push((("revision", o, t), one(rev)));
        }
    }
    let list = |start: u64, at: Tid, limit: usize| {
        one(s.list(Oid(start), at, limit).map(|l| V::List(l.into_iter().map(|i| (i.oid, i.tid, i.size)).collect())))
    };
    for &t in q.tids.iter().chain([Tid::MAX].iter()) {
        d.push((("list", 0, t), list(0, t, 10_000)));
    }
    d.push((("list from 3, 2 items", 0, NO), list(3, Tid::MAX, 2)));
    let (from, to) = txn_range(q);
    for (name, from, to) in [("transactions", Tid::ZERO, Tid::MAX), ("transactions in range", from, to)] {
        let mut items = Vec::new();
        let mut err = None;
        for r in s.transactions(from, to) {
            match r {
                Ok(t) => items.push(record_v(&t)),
                Err(e) => {
                    err = Some(e.to_string());
                    break;
                }
            }
        }
        d.push(((name, 0, NO), Ans::Many(items, err)));
    }
    d
}

/// What `dump` must read from a storage holding exactly `model`.
pub fn expect(model: &Model, q: &Queries) -> Dump {
    let revs = |o: u64| -> Vec<(Tid, Option<Vec<u8>>)> {
        model.iter().filter_map(|(t, x)| x.writes.get(&o).map(|d| (*t, d.clone()))).collect()
    };
    let at = |o: u64, at: Tid| -> Option<(Tid, B)> {
        let r = revs(o).into_iter().rfind(|(t, _)| *t <= at)?;
        r.1.map(|d| (r.0, B(d)))
    };
    let all: Vec<u64> = {
        let mut v: Vec<u64> = model.iter().flat_map(|(_, t)| t.writes.keys().copied()).collect();
        v.sort();
        v.dedup();
        v
    };
    let list = |start: u64, t: Tid, limit: usize| -> Vec<(Oid, Tid, u64)> {
        all.iter()
            .filter(|&&o| o >= start)
            .filter_map(|&o| at(o, t).map(|(tid, d)| (Oid(o), tid, d.0.len() as u64)))
            .take(limit)
            .collect()
    };
    let mut d: Dump = Vec::new();
    d.push((("last_tid", 0, NO), val(V::Tid(model.last().map_or(Tid::ZERO, |m| m.0)))));
    d.push((("max_oid", 0, NO), val(V::Oid(all.last().map(|o| Oid(*o))))));
    d.push((("count_objects", 0, NO), val(V::Count(list(0, Tid::MAX, usize::MAX).len() as u64))));
    for &o in &q.oids {
        let r = revs(o);
        d.push((("load", o, NO), val(V::Load(at(o, Tid::MAX)))));
        d.push((("current_tid", o, NO), val(V::Current(r.last().map(|x| x.0)))));
        let h: Vec<(Tid, u64, bool)> =
            r.iter().rev().map(|(t, d)| (*t, d.as_ref().map_or(0, |d| d.len() as u64), d.is_none())).collect();
        d.push((("history", o, NO), val(V::History(h))));
        for &t in &q.tids {
            d.push((("load_at", o, t), val(V::Load(at(o, t)))));
            if q.light {
                continue;
            }
            let lb = r.iter().rposition(|x| x.0 < t).and_then(|i| {
                let data = r[i].1.clone()?;
                Some((B(data), r[i].0, r.get(i + 1).map(|x| x.0)))
            });
            d.push((("load_before", o, t), val(V::Before(lb))));
            let rev = r.iter().find(|x| x.0 == t).map(|x| (x.0, x.1.clone().map(B)));
            d.push((("revision", o, t), val(V::Revision(rev))));
        }
    }
    for &t in q.tids.iter().chain([Tid::MAX].iter()) {
        d.push((("list", 0, t), val(V::List(list(0, t, 10_000)))));
    }
    d.push((("list from 3, 2 items", 0, NO), val(V::List(list(3, Tid::MAX, 2)))));
    let (from, to) = txn_range(q);
    for (name, from, to) in [("transactions", Tid::ZERO, Tid::MAX), ("transactions in range", from, to)] {
        let items = model.iter().filter(|(t, _)| *t >= from && *t <= to).map(|(t, x)| model_v(*t, x)).collect();
        d.push(((name, 0, NO), Ans::Many(items, None)));
    }
    d
}

/// How a dump compared with the expected one (when no value was wrong).
#[derive(Default, Debug)]
pub struct Outcome {
    pub errors: usize,
    pub first_error: Option<String>,
}

/// `Err` names the first wrong answer; errors are counted, not wrong.
pub fn compare(actual: &Dump, expected: &Dump) -> Result<Outcome, String> {
    assert_eq!(actual.len(), expected.len(), "the dumps ask the same questions");
    let mut out = Outcome::default();
    for ((k, a), (k2, e)) in actual.iter().zip(expected) {
        assert_eq!(k, k2);
        let err = match (a, e) {
            (Ans::One(Ok(a)), Ans::One(Ok(e))) => {
                if a != e {
                    return Err(format!("{k:?}: got {a:?}, expected {e:?}"));
                }
                None
            }
            (Ans::One(Err(m)), _) => Some(m),
            (Ans::Many(items, err), Ans::Many(exp, None)) => {
                let n = items.len();
                let ok = match err {
                    None => items == exp,
                    Some(_) => n <= exp.len() && items[..] == exp[..n],
                };
                if !ok {
                    return Err(format!("{k:?}: got {items:#?} (then error {err:?}), expected {exp:#?}"));
                }
                err.as_ref()
            }
            _ => panic!("query shapes differ for {k:?}"),
        };
        if let Some(m) = err {
            out.errors += 1;
            out.first_error.get_or_insert_with(|| format!("{k:?}: {m}"));
        }
    }
    Ok(out)
}

/// The questions for a model and their answers, computed once.
pub struct Expected {
    pub q: Queries,
    pub answers: Dump,
}

impl Expected {
    pub fn new(model: &Model, thorough: bool) -> Expected {
        Expected::asking(model, queries(model, thorough))
    }
    pub fn asking(model: &Model, q: Queries) -> Expected {
        let answers = expect(model, &q);
        Expected { q, answers }
    }
    /// The storage holds exactly the model, and every read succeeds.
    pub fn check(&self, s: &Storage, ctx: &str) {
        match compare(&dump(s, &self.q), &self.answers) {
            Ok(o) => assert_eq!(o.errors, 0, "{ctx}: a read failed: {:?}", o.first_error),
            Err(m) => panic!("{ctx}: wrong data: {m}"),
        }
    }
}

/// The storage holds exactly `model`, and every read succeeds.
pub fn check_model(s: &Storage, model: &Model, thorough: bool, ctx: &str) {
    Expected::new(model, thorough).check(s, ctx)
}

/// The storage holds `model`, or `model` plus all of `maybe` (a transaction whose commit
/// failed, so it may or may not have reached the disk, but never partly). Returns the
/// model of what is visible.
pub fn check_model_or_plus(s: &Storage, model: &Model, maybe: Option<&Txn>, ctx: &str) -> Model {
    let txns = visible(s, ctx);
    let mut m = model.clone();
    match maybe {
        Some(x) if txns.len() == model.len() + 1 => {
            let r = txns.last().unwrap();
            assert_eq!(record_v(r), model_v(r.tid, x), "{ctx}: the failed transaction is partly visible");
            m.push((r.tid, x.clone()));
        }
        _ => assert_eq!(txns.len(), model.len(), "{ctx}: visible transactions"),
    }
    check_model(s, &m, false, ctx);
    m
}

/// The chain is well formed: past segments then the active one, each naming the one
/// before, names going up, transactions adding up to `txns`. Returns the names.
pub fn check_chain(s: &Storage, txns: usize, ctx: &str) -> Vec<SegmentName> {
    let segs = s.segments().unwrap_or_else(|e| panic!("{ctx}: segments: {e}"));
    assert!(!segs.is_empty(), "{ctx}: no segments");
    for (i, g) in segs.iter().enumerate() {
        let want = if i + 1 == segs.len() { SegmentState::Active } else { SegmentState::Past };
        assert_eq!(g.state, want, "{ctx}: segment {}", g.name);
        assert_eq!(g.prev, (i > 0).then(|| segs[i - 1].name.file_name()), "{ctx}: segment {}", g.name);
        if i > 0 {
            assert!(g.name.first > segs[i - 1].name.last, "{ctx}: segment names go up");
        }
    }
    assert_eq!(segs.iter().map(|g| g.transactions).sum::<u64>(), txns as u64, "{ctx}: transactions per segment");
    segs.iter().map(|g| g.name).collect()
}
