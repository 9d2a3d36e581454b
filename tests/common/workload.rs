//! Crash-test workloads: transactions whose values name them, and read answers.

use filestorage2::vfs::CrashMode;
use filestorage2::{Error, Oid, Storage, Tid, Transaction, TxnRecord};
use std::collections::BTreeMap;
use std::fmt;

pub type Writes = BTreeMap<u64, Option<Vec<u8>>>;

/// One staged write: a store of a value naming the transaction plus `n` filler bytes, an
/// empty object, or a deletion.
#[derive(Clone, Copy)]
pub enum W {
    S(usize),
    E,
    D,
}

#[derive(Clone, Debug)]
pub struct Txn {
    pub user: Vec<u8>,
    pub desc: Vec<u8>,
    pub ext: Vec<u8>,
    pub writes: Writes,
}

/// Committed transactions, oldest first.
pub type Model = Vec<(Tid, Txn)>;

pub fn value(label: usize, oid: u64, extra: usize) -> Vec<u8> {
    let mut v = format!("txn{label}/oid{oid}/").into_bytes();
    v.extend((0..extra).map(|i| b'a' + ((i * 7 + label + oid as usize) % 26) as u8));
    v
}

pub fn txn(label: usize, ws: &[(u64, W)]) -> Txn {
    let writes = ws
        .iter()
        .map(|&(oid, w)| {
            let d = match w {
                W::S(n) => Some(value(label, oid, n)),
                W::E => Some(Vec::new()),
                W::D => None,
            };
            (oid, d)
        })
        .collect();
    Txn {
        user: if label.is_multiple_of(2) { format!("user{label}").into_bytes() } else { Vec::new() },
        desc: format!("txn{label}").into_bytes(),
        ext: if label.is_multiple_of(3) { vec![label as u8, 0, 0xff] } else { Vec::new() },
        writes,
    }
}

pub fn stage(s: &Storage, t: &Txn) -> Transaction {
    let mut x = s.begin();
    x.set_user(&t.user);
    x.set_description(&t.desc);
    x.set_extension(&t.ext);
    for (oid, d) in &t.writes {
        match d {
            Some(d) => x.store(Oid(*oid), d).unwrap(),
            None => x.delete(Oid(*oid)).unwrap(),
        }
    }
    x
}

pub fn commit(s: &Storage, model: &mut Model, t: Txn) -> Tid {
    let tid = stage(s, &t).commit().unwrap_or_else(|e| panic!("commit of {:?}: {e}", t.desc.escape_ascii()));
    model.push((tid, t));
    tid
}

/// Bytes, shown as their start, their length and a 64-bit hash of all of them.
#[derive(PartialEq, Clone)]
pub struct B(pub Vec<u8>);

impl fmt::Debug for B {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hasher::write(&mut h, &self.0);
        let head = &self.0[..self.0.len().min(24)];
        write!(f, "b\"{}\"[{}#{:x}]", head.escape_ascii(), self.0.len(), std::hash::Hasher::finish(&h))
    }
}

/// A transaction as read: tid, user, description, extension, (oid, data or deletion).
pub type TxnV = (Tid, B, B, B, Vec<(Oid, Option<B>)>);

pub fn record_v(r: &TxnRecord) -> TxnV {
    let recs = r.records.iter().map(|(o, d)| (*o, d.clone().map(B))).collect();
    (r.tid, B(r.meta.user.clone()), B(r.meta.description.clone()), B(r.meta.extension.clone()), recs)
}

pub fn model_v(tid: Tid, t: &Txn) -> TxnV {
    let recs = t.writes.iter().map(|(o, d)| (Oid(*o), d.clone().map(B))).collect();
    (tid, B(t.user.clone()), B(t.desc.clone()), B(t.ext.clone()), recs)
}

/// The value of one answer (compared as is; formatted only to report a difference).
#[derive(Debug, PartialEq)]
pub enum V {
    Tid(Tid),
    Oid(Option<Oid>),
    Count(u64),
    Load(Option<(Tid, B)>),
    Current(Option<Tid>),
    History(Vec<(Tid, u64, bool)>),
    Before(Option<(B, Tid, Option<Tid>)>),
    Revision(Option<(Tid, Option<B>)>),
    List(Vec<(Oid, Tid, u64)>),
}

/// One answer: a value, or a list read item by item (the items before an error count).
#[derive(Debug)]
pub enum Ans {
    One(Result<V, String>),
    Many(Vec<TxnV>, Option<String>),
}

/// A question: what, of which oid, at which tid.
pub type Key = (&'static str, u64, Tid);

pub type Dump = Vec<(Key, Ans)>;

pub const NO: Tid = Tid::ZERO;

pub fn one(r: Result<V, Error>) -> Ans {
    Ans::One(r.map_err(|e| e.to_string()))
}

pub fn val(v: V) -> Ans {
    Ans::One(Ok(v))
}

pub fn visible(s: &Storage, ctx: &str) -> Vec<TxnRecord> {
    s.transactions(Tid::ZERO, Tid::MAX).collect::<Result<Vec<_>, _>>().unwrap_or_else(|e| panic!("{ctx}: {e}"))
}

pub const SIM_DIR: &str = "/s";

pub fn crash_modes() -> Vec<CrashMode> {
    let mut m = vec![CrashMode::DurableOnly, CrashMode::AllWritten];
    m.extend((1..=8u64).map(|i| CrashMode::Torn(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
    m
}
