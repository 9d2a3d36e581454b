//! Helpers shared by the integration tests (each test binary includes this module and
//! uses what it needs).
#![allow(dead_code)]

/// The bytes of docs/FORMAT.md, for tests that damage or forge them.
pub mod bytes;
/// A disk that fills or fails (`FaultVfs`) under the engine.
pub mod fault;
/// Reading a storage against a model (`dump`, `expect`, `compare`, `check_chain`).
pub mod model;
/// Real mounts (`tests/mount_*.rs`).
pub mod mount;

/// The `Vfs` methods that a wrapper of the real disk passes through unchanged, for
/// `impl Vfs for X { fn open(..) ..; fn create_new(..) ..; crate::real_vfs_passthrough!(); }`.
#[macro_export]
macro_rules! real_vfs_passthrough {
    () => {
        fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
            filestorage2::vfs::RealVfs.rename(from, to)
        }
        fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
            filestorage2::vfs::RealVfs.remove(path)
        }
        fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
            filestorage2::vfs::RealVfs.list(dir)
        }
        fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
            filestorage2::vfs::RealVfs.sync_dir(dir)
        }
        fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
            filestorage2::vfs::RealVfs.create_dir_all(dir)
        }
        fn exists(&self, path: &std::path::Path) -> bool {
            filestorage2::vfs::RealVfs.exists(path)
        }
        fn lock(&self, dir: &std::path::Path) -> std::io::Result<Option<std::fs::File>> {
            filestorage2::vfs::RealVfs.lock(dir)
        }
    };
}

/// The named `VFile` methods, passed through to the wrapped file in field `$f`, for
/// `impl VFile for X { fn sync(..) ..; crate::vfile_passthrough!(f: len, set_len); }`.
#[macro_export]
macro_rules! vfile_passthrough {
    ($f:ident: $($m:ident),* $(,)?) => { $( $crate::vfile_passthrough!(@one $f $m); )* };
    (@one $f:ident read_exact_at) => {
        fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
            self.$f.read_exact_at(buf, off)
        }
    };
    (@one $f:ident write_all_at) => {
        fn write_all_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
            self.$f.write_all_at(buf, off)
        }
    };
    (@one $f:ident sync) => {
        fn sync(&self) -> std::io::Result<()> {
            self.$f.sync()
        }
    };
    (@one $f:ident len) => {
        fn len(&self) -> std::io::Result<u64> {
            self.$f.len()
        }
    };
    (@one $f:ident set_len) => {
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.$f.set_len(len)
        }
    };
    (@one $f:ident os_file) => {
        fn os_file(&self) -> Option<&std::fs::File> {
            self.$f.os_file()
        }
    };
}

/// Small helpers of the engine tests.
pub mod simple {
    use filestorage2::{Oid, Options, Storage, Tid};
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Run `f` in a thread; fail the test if it takes longer than `secs`.
    pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(v) => v,
            Err(_) => match h.join() {
                Err(p) => std::panic::resume_unwind(p),
                Ok(()) => panic!("the test took longer than {secs} s"),
            },
        }
    }

    /// One committed transaction of `(oid, data)` stores.
    pub fn commit(s: &Storage, writes: &[(u64, &[u8])]) -> Tid {
        let mut t = s.begin();
        for (oid, d) in writes {
            t.store(Oid(*oid), d).unwrap();
        }
        t.commit().unwrap()
    }

    /// The current data of `oid` (`None`: no live revision).
    pub fn data(s: &Storage, oid: u64) -> Option<Vec<u8>> {
        s.load(Oid(oid)).unwrap().map(|x| x.1)
    }

    /// `fs2 check` of `dir` finds nothing.
    pub fn checked(dir: &Path) {
        let r = filestorage2::check::check(dir, false, Options::default(), &mut |_, _| {}).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
    }
}

/// The segment files (`*.fs2`) of a storage directory on the real disk, sorted.
pub fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "fs2"))
        .collect();
    v.sort();
    v
}

/// xorshift64* with the low bit set: random-looking 64-bit oids (never 0), the same
/// sequence every run (the scale tests' storages).
pub fn random_oids() -> impl FnMut() -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1
    }
}

/// splitmix64: a small seeded generator, so failures replay from their seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

/// The bank-transfer invariant: accounts, balances and transfers.
pub mod bank {
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
    pub fn transfers<P>(
        seed: u64,
        mut more: impl FnMut() -> bool,
        mut begin: impl FnMut() -> (Transaction, P),
    ) -> Made {
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
}

/// Crash-test workloads: transactions whose values name them, and read answers.
pub mod workload {
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
}
