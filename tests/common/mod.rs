//! Helpers shared by the integration tests (each test binary includes this module and
//! uses what it needs).
#![allow(dead_code)]

/// The bank-transfer invariant: accounts, balances and transfers; writers, readers.
pub mod bank;
/// The bytes of docs/FORMAT.md, for tests that damage or forge them.
pub mod bytes;
/// A disk that fills or fails (`FaultVfs`) under the engine.
pub mod fault;
/// Reading a storage against a model (`dump`, `expect`, `compare`, `check_chain`).
pub mod model;
/// Real mounts (`tests/mount_*.rs`).
pub mod mount;
/// Crash-test workloads: transactions whose values name them, and read answers.
pub mod workload;

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
