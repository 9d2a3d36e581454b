//! The bank-transfer invariant: accounts, balances and transfers; writers, readers.

use super::Rng;
use filestorage2::{Error, Oid, Storage, Tid, Transaction};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const ACCOUNTS: u64 = 20;

pub const INITIAL: u64 = 1_000;

pub const TOTAL: u64 = ACCOUNTS * INITIAL;

pub fn account(i: u64) -> Oid {
    Oid(100 + i)
}

/// A balance as stored: the amount, then the account number (catches misrouted data).
pub fn enc(i: u64, balance: u64) -> Vec<u8> {
    let mut b = balance.to_le_bytes().to_vec();
    b.extend_from_slice(&i.to_le_bytes());
    b
}

pub fn dec(i: u64, data: &[u8]) -> u64 {
    assert_eq!(data.len(), 16, "account {i}: a balance is 16 bytes, got {data:?}");
    assert_eq!(u64::from_le_bytes(data[8..].try_into().unwrap()), i, "account {i} holds another account's balance");
    u64::from_le_bytes(data[..8].try_into().unwrap())
}

/// A transfer as its writer made it; its description in the log says the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub from: u64,
    pub to: u64,
    pub amount: u64,
}

impl Transfer {
    pub fn describe(&self) -> String {
        format!("transfer {} from {} to {}", self.amount, self.from, self.to)
    }
}

pub fn setup(s: &Storage) -> Tid {
    let mut t = s.begin();
    for i in 0..ACCOUNTS {
        t.store(account(i), &enc(i, INITIAL)).unwrap();
    }
    t.set_description(b"open the accounts");
    t.commit().unwrap()
}

/// The balances of every account as of `at`.
pub fn balances_at(s: &Storage, at: Tid) -> Vec<u64> {
    (0..ACCOUNTS).map(|i| dec(i, &s.load_at(account(i), at).unwrap().expect("account exists").1)).collect()
}

/// What one writer did: its acknowledged transfers and how it got there.
#[derive(Default)]
pub struct Made {
    pub made: Vec<(Tid, Transfer)>,
    pub conflicts: u64,
    pub two_phase: u64,
    pub aborted_votes: u64,
}

/// Make random transfers while `more()` says so, each acknowledged however many
/// attempts it takes: one-step commits, vote+finish, and votes aborted and retried.
/// `begin` starts each attempt (and may return something held until it ends).
pub fn transfers<P>(seed: u64, mut more: impl FnMut() -> bool, mut begin: impl FnMut() -> (Transaction, P)) -> Made {
    let mut rng = Rng(seed);
    let mut m = Made::default();
    while more() {
        loop {
            let (mut t, _held) = begin();
            let from = rng.below(ACCOUNTS);
            let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
            let a = dec(from, &t.load(account(from)).unwrap().expect("account exists"));
            let b = dec(to, &t.load(account(to)).unwrap().expect("account exists"));
            let tr = Transfer { from, to, amount: rng.below(a + 1) };
            t.store(account(from), &enc(from, a - tr.amount)).unwrap();
            t.store(account(to), &enc(to, b + tr.amount)).unwrap();
            t.set_description(tr.describe().as_bytes());
            let mode = rng.below(20);
            let r = match mode {
                0..=4 => t.vote().and_then(|()| t.finish()),
                5 => match t.vote() {
                    Ok(()) => {
                        // Durable but never visible: the retry makes the transfer.
                        t.abort();
                        m.aborted_votes += 1;
                        continue;
                    }
                    Err(e) => Err(e),
                },
                _ => t.commit(),
            };
            match r {
                Ok(tid) => {
                    m.two_phase += (mode <= 4) as u64;
                    m.made.push((tid, tr));
                    break;
                }
                Err(Error::Conflict { oid, .. }) => {
                    assert!(oid == account(from) || oid == account(to), "conflict on {oid:?}, not written");
                    m.conflicts += 1;
                }
                Err(e) => panic!("transfer {tr:?} failed: {e}"),
            }
        }
    }
    m
}

/// What the writers and readers of a run did, added up.
#[derive(Debug, Default)]
pub struct Tally {
    /// tid -> the transfer its writer made (one-step or two-phase).
    pub made: BTreeMap<Tid, Transfer>,
    pub conflicts: u64,
    pub two_phase: u64,
    pub aborted_votes: u64,
    pub snapshots: u64,
    pub time_travels: u64,
}

impl Tally {
    /// Add what one writer made; no tid is acknowledged twice.
    pub fn add_writer(&mut self, m: Made) {
        for (tid, tr) in m.made {
            assert!(self.made.insert(tid, tr).is_none(), "tid {tid:?} acknowledged twice");
        }
        self.conflicts += m.conflicts;
        self.two_phase += m.two_phase;
        self.aborted_votes += m.aborted_votes;
    }
    /// Add what one reader checked (`read_snapshots`).
    pub fn add_reader(&mut self, (snapshots, time_travels): (u64, u64)) {
        self.snapshots += snapshots;
        self.time_travels += time_travels;
    }
}

/// Check snapshots until `done`, with every read path: each snapshot's balances add
/// up (read through the transaction, `load_at`, `load_before` and `list`), a snapshot
/// never changes, and now and then an older snapshot adds up too. `begin` starts each
/// snapshot (and may return something held while it is read); `pin_old(tid)` says
/// whether the older snapshot `tid` may still be read (holding it while it is).
/// Returns (snapshots, time travels).
pub fn read_snapshots<P, Q>(
    s: &Storage,
    seed: u64,
    done: &AtomicBool,
    mut begin: impl FnMut() -> (Transaction, P),
    mut pin_old: impl FnMut(Tid) -> Option<Q>,
) -> (u64, u64) {
    let mut rng = Rng(seed);
    let mut older: Vec<Tid> = Vec::new();
    let (mut snapshots, mut time_travels) = (0, 0);
    while !done.load(Ordering::Acquire) {
        let (t, pin) = begin();
        let base = t.base();
        let sum: u64 = match rng.below(4) {
            0 => (0..ACCOUNTS).map(|i| dec(i, &t.load(account(i)).unwrap().expect("account exists"))).sum(),
            1 => balances_at(s, base).iter().sum(),
            2 => (0..ACCOUNTS)
                .map(|i| {
                    let lb = s.load_before(account(i), Tid(base.0 + 1)).unwrap().expect("account exists");
                    assert!(lb.tid <= base && lb.end.is_none_or(|e| e > base), "{lb:?} is not current at {base:?}");
                    dec(i, &lb.data)
                })
                .sum(),
            _ => {
                let live = s.list(account(0), base, 1000).unwrap();
                assert_eq!(live.len() as u64, ACCOUNTS, "accounts listed at {base:?}");
                let mut sum = 0;
                for (i, o) in live.iter().enumerate() {
                    let (tid, data) = s.load_at(o.oid, base).unwrap().expect("listed, so live");
                    assert_eq!((o.oid, o.tid), (account(i as u64), tid), "list and load_at agree at {base:?}");
                    sum += dec(i as u64, &data);
                }
                sum
            }
        };
        assert_eq!(sum, TOTAL, "balances of the snapshot at {base:?} do not add up");
        // A snapshot never changes: one account again, read last.
        let i = rng.below(ACCOUNTS);
        assert_eq!(t.load(account(i)).unwrap(), s.load_at(account(i), base).unwrap().map(|x| x.1));
        drop(t);
        drop(pin);
        snapshots += 1;
        // Time travel to an older snapshot, if it may still be read.
        let pick = rng.below(older.len() as u64 + 1) as usize;
        if let Some(&old) = older.get(pick).filter(|_| snapshots % 4 == 0) {
            if let Some(_pin) = pin_old(old) {
                assert_eq!(balances_at(s, old).iter().sum::<u64>(), TOTAL, "balances as of the older {old:?}");
                time_travels += 1;
            }
        }
        if older.len() < 64 {
            older.push(base);
        } else {
            older[rng.below(64) as usize] = base;
        }
        // Leave the writers most of the CPU.
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    (snapshots, time_travels)
}

/// A run that does not end within `limit` (a hang: a deadlock or a lost wake-up) ends
/// the test process; the run ends when the returned sender is used or dropped.
pub fn watchdog(limit: std::time::Duration, what: &'static str) -> std::sync::mpsc::Sender<()> {
    let (finished, watch) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watch.recv_timeout(limit) {
            eprintln!("{what} did not finish within {limit:?}: a hang; giving up");
            std::process::exit(101);
        }
    });
    finished
}

/// Marks the end of one writer; the last one out stops the readers and the rotator.
pub struct WriterExit<'a> {
    pub left: &'a AtomicU64,
    pub done: &'a AtomicBool,
}

impl Drop for WriterExit<'_> {
    fn drop(&mut self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.store(true, Ordering::Release);
        }
    }
}
