//! Transactions built through the mount (`txn/<name>/`): the state machine behind
//! `ctl`, the staged object files, `info` and `new-oid`.
//!
//! - Staging: each staged oid is a buffer in memory while it is small and the mount's
//!   staging budget allows ([`Staging`]); a larger one spills to an unnamed file
//!   (`O_TMPFILE`) in the storage's `.staging/`. A deletion is a mark in memory. Nothing
//!   staged is durable: it reaches the engine transaction at vote or commit.
//! - The engine transaction is begun with the mount transaction (so merges keep what its
//!   conflict check needs) and only filled at vote or commit.
//! - States: `Open` → (`vote`) → `Voted` → (`commit`) → `Committed`; `abort`, a failed
//!   vote or commit, a vote timeout or unmount end it as `Aborted`, `Conflict` or
//!   `Error`. An ended transaction never changes again (only `rmdir` removes it).
//! - Vote and commit block (object locks, fsync): callers run them on a worker thread.
//!   While one runs the transaction is `busy` and refuses changes with EBUSY.

use super::errno::FsError;
use super::FsResult;
use crate::{Error, Oid, Storage, Tid, Transaction, TxnMeta};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::staging::{io_err, Buf};
pub use super::staging::{Staging, STAGE_MEMORY, STAGE_MEMORY_OBJECT};

/// A mount transaction's number: its key in the inode table (never reused, unlike names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnNo(pub u64);

/// A transaction name: `[A-Za-z0-9._-]{1,64}`, not `.`/`..`, not `new` (the clone file).
pub fn valid_txn_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && name != "."
        && name != ".."
        && name != "new"
}

/// What `ctl` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Open,
    Voted,
    Committed(Tid),
    Aborted,
    Conflict(Oid, Tid),
    Error(String),
}

impl Status {
    pub fn ended(&self) -> bool {
        !matches!(self, Status::Open | Status::Voted)
    }
}

/// A `ctl` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Vote,
    Commit,
    Abort,
}

/// Parse what was written to `ctl` (surrounding whitespace ignored).
pub fn parse_command(data: &[u8]) -> FsResult<Command> {
    match std::str::from_utf8(data).map(str::trim) {
        Ok("vote") => Ok(Command::Vote),
        Ok("commit") => Ok(Command::Commit),
        Ok("abort") => Ok(Command::Abort),
        _ => Err(FsError::new(
            libc::EINVAL,
            format!("unknown ctl command {:?}: write vote, commit or abort", String::from_utf8_lossy(data).trim()),
        )),
    }
}

enum Staged {
    Data(Buf),
    Deleted,
}

struct State {
    status: Status,
    base: Tid,
    /// `None` while a worker votes or commits with it, and after the end.
    engine: Option<Transaction>,
    /// A vote or commit is running on a worker.
    busy: bool,
    staged: BTreeMap<Oid, Staged>,
    meta: TxnMeta,
    /// Counts votes, so that a vote-timeout waiter knows whether its vote still stands.
    votes: u64,
}

/// One transaction of the `txn/` area.
pub struct MountTxn {
    pub no: TxnNo,
    pub name: String,
    /// Begun by opening `txn/new`: it ends when that descriptor is closed.
    pub clone: bool,
    staging: Arc<Staging>,
    max_object: u64,
    state: Mutex<State>,
    /// Signalled when a voted transaction ends.
    ended: Condvar,
}

/// Create `dir` for the owner only (0700 whatever the umask); it must not exist (a
/// directory someone else made could be read or written by them).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn busy(name: &str) -> FsError {
    FsError::new(libc::EBUSY, format!("txn/{name}: a vote or commit is running; wait for it"))
}

impl MountTxn {
    /// Begin a transaction at `base` (the head `head/` shows; `None`: the engine's head).
    pub fn begin(
        storage: &Storage,
        base: Option<Tid>,
        staging: &Arc<Staging>,
        no: TxnNo,
        name: String,
        clone: bool,
        max_object: u64,
    ) -> FsResult<MountTxn> {
        let engine = match base {
            Some(b) => Transaction::at(storage, b),
            None => storage.begin(),
        };
        let state = State {
            status: Status::Open,
            base: engine.base(),
            engine: Some(engine),
            busy: false,
            staged: BTreeMap::new(),
            meta: TxnMeta::default(),
            votes: 0,
        };
        Ok(MountTxn {
            no,
            name,
            clone,
            staging: staging.clone(),
            max_object,
            state: Mutex::new(state),
            ended: Condvar::new(),
        })
    }

    /// A poisoned lock means a thread panicked mid-update: stop (see `fs` on locks).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    /// The line `ctl` reads.
    pub fn status_line(&self) -> String {
        let st = self.lock();
        match &st.status {
            Status::Open => format!("open {}\n", st.base),
            Status::Voted => "voted\n".into(),
            Status::Committed(t) => format!("committed {t}\n"),
            Status::Aborted => "aborted\n".into(),
            Status::Conflict(o, t) => format!("conflict {o} {t}\n"),
            Status::Error(w) => format!("error {w}\n"),
        }
    }

    /// What `info` reads.
    pub fn info_text(&self) -> String {
        let st = self.lock();
        let e = |b: &[u8]| b.escape_ascii().to_string();
        format!(
            "user: {}\ndescription: {}\nextension: {}\n",
            e(&st.meta.user),
            e(&st.meta.description),
            e(&st.meta.extension)
        )
    }

    /// The snapshot names read through to: the base, or the committed tid after a commit.
    fn read_at(st: &State) -> Tid {
        match st.status {
            Status::Committed(t) => t,
            _ => st.base,
        }
    }

    /// Refuse changes unless open and idle.
    fn changeable(&self, st: &State) -> FsResult<()> {
        if st.busy {
            return Err(busy(&self.name));
        }
        match &st.status {
            Status::Open => Ok(()),
            Status::Voted => Err(FsError::new(
                libc::EBUSY,
                format!("txn/{}: voted; it cannot change (commit or abort it)", self.name),
            )),
            _ => Err(FsError::new(
                libc::EINVAL,
                format!("txn/{}: the transaction has ended; rmdir it and mkdir a new one", self.name),
            )),
        }
    }

    /// Size of `oid` as this transaction sees it; `None` if absent (or staged deleted).
    pub fn stat(&self, storage: &Storage, oid: Oid) -> FsResult<Option<u64>> {
        let st = self.lock();
        match st.staged.get(&oid) {
            Some(Staged::Data(b)) => Ok(Some(b.len())),
            Some(Staged::Deleted) => Ok(None),
            None => Ok(storage.stat_at(oid, Self::read_at(&st))?.filter(|r| !r.deleted).map(|r| r.size)),
        }
    }

    /// Oids staged with data, in order (what `ls txn/<name>` lists).
    pub fn staged_data(&self) -> Vec<(Oid, u64)> {
        let st = self.lock();
        st.staged.iter().filter_map(|(o, s)| if let Staged::Data(b) = s { Some((*o, b.len())) } else { None }).collect()
    }

    /// Make `oid` staged with data (copying the snapshot's data unless `truncate`), so
    /// that it can be written. Called on open for writing and on create.
    pub fn stage(&self, storage: &Storage, oid: Oid, truncate: bool) -> FsResult<()> {
        let mut st = self.lock();
        self.changeable(&st)?;
        let keep = matches!(st.staged.get(&oid), Some(Staged::Data(_)));
        if keep && !truncate {
            return Ok(());
        }
        let data = match (keep, truncate) {
            (false, false) if !st.staged.contains_key(&oid) => {
                storage.load_at(oid, st.base)?.map(|(_, d)| d).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        match Buf::new(&self.staging, data) {
            Ok(b) => {
                st.staged.insert(oid, Staged::Data(b));
                Ok(())
            }
            Err(e) => {
                drop(st);
                Err(self.write_failed(io_err(format!("stage {oid} in {}", self.staging.dir.display()), e)))
            }
        }
    }

    /// `create` of `txn/<name>/<oid>`: EEXIST with `excl` when it exists as of the base.
    pub fn create(&self, storage: &Storage, oid: Oid, excl: bool) -> FsResult<()> {
        if excl {
            let base = self.lock().base;
            if storage.stat_at(oid, base)?.is_some_and(|r| !r.deleted) {
                return Err(FsError::new(
                    libc::EEXIST,
                    format!("txn/{}/{oid}: the object exists as of the base {base}", self.name),
                ));
            }
        }
        self.stage(storage, oid, true)
    }

    /// Write at `offset` (at the end with `append`); returns the bytes written. A write
    /// that fails (EFBIG, ENOSPC, EIO) ends the transaction as failed: what is staged is
    /// no longer what the writer meant, so `commit` must refuse.
    pub fn write(&self, oid: Oid, offset: u64, data: &[u8], append: bool) -> FsResult<u32> {
        let mut st = self.lock();
        self.changeable(&st)?;
        let Some(Staged::Data(buf)) = st.staged.get_mut(&oid) else {
            return Err(FsError::new(libc::EBADF, format!("txn/{}/{oid} is not staged (reopen it)", self.name)));
        };
        let at = if append { buf.len() } else { offset };
        let end = at.saturating_add(data.len() as u64);
        let r = self.check_size(oid, end).and_then(|()| {
            buf.write_at(data, at)
                .map_err(|e| io_err(format!("write staged {oid} (spilled to {})", self.staging.dir.display()), e))
        });
        match r {
            Ok(()) => Ok(data.len() as u32),
            Err(e) => {
                drop(st);
                Err(self.write_failed(e))
            }
        }
    }

    fn check_size(&self, oid: Oid, size: u64) -> FsResult<()> {
        if size <= self.max_object {
            return Ok(());
        }
        let (name, max) = (&self.name, self.max_object);
        Err(FsError::new(
            libc::EFBIG,
            format!("txn/{name}/{oid}: objects are limited to {max} bytes (--max-object-size)"),
        ))
    }

    /// End the transaction after a failed change (its status says why).
    fn write_failed(&self, e: FsError) -> FsError {
        log::info!("txn/{}: {e}; the transaction is ended (ctl reads error)", self.name);
        self.end(Status::Error(format!("write failed: {}", e.to_string().replace('\n', " "))));
        e
    }

    /// Set the staged length of `oid` (staging it first).
    pub fn truncate(&self, storage: &Storage, oid: Oid, size: u64) -> FsResult<()> {
        if let Err(e) = self.check_size(oid, size) {
            self.changeable(&self.lock())?;
            return Err(self.write_failed(e));
        }
        self.stage(storage, oid, size == 0)?;
        let mut st = self.lock();
        self.changeable(&st)?;
        let Some(Staged::Data(buf)) = st.staged.get_mut(&oid) else {
            return Err(FsError::new(libc::EBADF, format!("txn/{}/{oid} is not staged (reopen it)", self.name)));
        };
        match buf.set_len(size) {
            Ok(()) => Ok(()),
            Err(e) => {
                drop(st);
                Err(self.write_failed(io_err(format!("truncate staged {oid} in {}", self.staging.dir.display()), e)))
            }
        }
    }

    /// At most `size` bytes at `offset` of `oid` as this transaction sees it.
    pub fn read(&self, storage: &Storage, oid: Oid, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let st = self.lock();
        match st.staged.get(&oid) {
            Some(Staged::Data(b)) => b.read(offset, size).map_err(|e| io_err(format!("read staged {oid}"), e)),
            Some(Staged::Deleted) => Err(FsError::not_found(format!("txn/{}/{oid}: staged for deletion", self.name))),
            None => {
                let at = Self::read_at(&st);
                drop(st);
                let d = storage.load_at(oid, at)?.map(|(_, d)| d);
                let d = d.ok_or_else(|| FsError::not_found(format!("{oid}: no such object as of {at}")))?;
                let start = offset.min(d.len() as u64) as usize;
                Ok(d[start..(start + size as usize).min(d.len())].to_vec())
            }
        }
    }

    /// `rm txn/<name>/<oid>`: drop what was staged; if the object exists as of the base,
    /// stage its deletion.
    pub fn unlink(&self, storage: &Storage, oid: Oid) -> FsResult<()> {
        let mut st = self.lock();
        self.changeable(&st)?;
        let exists = storage.stat_at(oid, st.base)?.is_some_and(|r| !r.deleted);
        match st.staged.get(&oid) {
            Some(Staged::Deleted) => return Err(FsError::not_found(format!("{oid}: already staged for deletion"))),
            None if !exists => return Err(FsError::not_found(format!("{oid}: no such object as of {}", st.base))),
            _ => {}
        }
        if exists {
            st.staged.insert(oid, Staged::Deleted);
        } else {
            st.staged.remove(&oid);
        }
        Ok(())
    }

    /// Apply `user ...`, `description ...`, `extension ...` lines written to `info`.
    pub fn set_info(&self, data: &[u8]) -> FsResult<()> {
        let mut st = self.lock();
        self.changeable(&st)?;
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let (key, value) = match line.iter().position(|&b| b == b' ') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &[][..]),
            };
            match key {
                b"user" => st.meta.user = value.to_vec(),
                b"description" => st.meta.description = value.to_vec(),
                b"extension" => st.meta.extension = value.to_vec(),
                _ => {
                    return Err(FsError::new(
                        libc::EINVAL,
                        format!(
                            "info: unknown key {:?}: write \"user ...\", \"description ...\" or \"extension ...\"",
                            String::from_utf8_lossy(key)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Take the engine transaction for a vote or commit and fill it with the staged
    /// changes. Marks the transaction busy; `done` must follow.
    fn take(&self, for_commit: bool) -> FsResult<Transaction> {
        let (t, filled) = {
            let mut st = self.lock();
            if st.busy {
                return Err(busy(&self.name));
            }
            match (&st.status, for_commit) {
                (Status::Open, _) => {}
                (Status::Voted, true) => {
                    st.busy = true;
                    return Ok(st.engine.take().expect("a voted transaction holds its engine transaction"));
                }
                (Status::Voted, false) => {
                    return Err(FsError::new(libc::EINVAL, format!("txn/{}: already voted", self.name)))
                }
                (s, _) => {
                    return Err(FsError::new(
                        libc::EINVAL,
                        format!("txn/{}: the transaction has ended ({s:?}); rmdir it", self.name),
                    ))
                }
            }
            st.busy = true;
            let mut t = st.engine.take().expect("an open transaction holds its engine transaction");
            // Filled under the lock (busy already refuses changes): staged bytes are
            // copied once, straight into the engine transaction.
            let fill = |t: &mut Transaction| -> FsResult<()> {
                t.set_user(&st.meta.user);
                t.set_description(&st.meta.description);
                t.set_extension(&st.meta.extension);
                for (oid, s) in &st.staged {
                    match s {
                        Staged::Deleted => t.delete(*oid)?,
                        Staged::Data(b) => b.store(t, *oid)?,
                    }
                }
                Ok(())
            };
            let filled = fill(&mut t);
            (t, filled)
        };
        match filled {
            Ok(()) => Ok(t),
            Err(e) => {
                t.abort();
                self.end(Status::Error(e.message.clone()));
                Err(e)
            }
        }
    }

    /// End the transaction: status, staged files gone, waiters woken.
    fn end(&self, status: Status) {
        let mut st = self.lock();
        if let Some(t) = st.engine.take() {
            t.abort();
        }
        st.status = status;
        st.busy = false;
        st.staged.clear();
        drop(st);
        self.ended.notify_all();
    }

    /// The end status of a failed vote or commit.
    fn failed(&self, e: Error) -> FsError {
        let status = match &e {
            Error::Conflict { oid, tid } => Status::Conflict(*oid, *tid),
            other => Status::Error(other.to_string().replace('\n', " ")),
        };
        self.end(status);
        e.into()
    }

    /// Phase one (blocks: run it on a worker). Returns the vote number for
    /// [`MountTxn::expire_vote`].
    pub fn vote(&self) -> FsResult<u64> {
        let mut t = self.take(false)?;
        match t.vote() {
            Ok(()) => {
                let mut st = self.lock();
                st.engine = Some(t);
                st.busy = false;
                st.status = Status::Voted;
                st.votes += 1;
                Ok(st.votes)
            }
            Err(e) => {
                t.abort();
                Err(self.failed(e))
            }
        }
    }

    /// Commit (after a vote: phase two). Blocks until durable: run it on a worker.
    pub fn commit(&self) -> FsResult<Tid> {
        let t = self.take(true)?;
        match t.commit() {
            Ok(tid) => {
                self.end(Status::Committed(tid));
                Ok(tid)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Discard everything. Aborting an aborted transaction is a no-op; a committed one
    /// cannot be aborted (EINVAL); a running vote or commit is waited for by the caller.
    pub fn abort(&self) -> FsResult<()> {
        let st = self.lock();
        if st.busy {
            return Err(busy(&self.name));
        }
        if let Status::Committed(t) = st.status {
            return Err(FsError::new(libc::EINVAL, format!("txn/{}: already committed as {t}", self.name)));
        }
        if st.status.ended() {
            return Ok(());
        }
        drop(st);
        self.end(Status::Aborted);
        Ok(())
    }

    /// Wait until vote number `vote` has ended or `timeout` passed; then abort it if it
    /// still stands (an abandoned voted transaction would hold its object locks forever).
    /// Returns whether it aborted.
    pub fn expire_vote(&self, vote: u64, timeout: Duration) -> bool {
        let st = self.lock();
        let still = |s: &State| s.status == Status::Voted && s.votes == vote && !s.busy;
        let (st, _) = self.ended.wait_timeout_while(st, timeout, |s| still(s)).unwrap();
        if !still(&st) {
            return false;
        }
        drop(st);
        log::warn!(
            "txn/{}: voted but neither committed nor aborted within {timeout:?}: aborted (see --vote-timeout)",
            self.name
        );
        self.end(Status::Error(format!("vote timed out after {}s", timeout.as_secs())));
        true
    }

    /// Abort unless committed (unmount, rmdir, closing the clone descriptor). A running
    /// vote or commit is left to finish (its worker holds the engine transaction).
    pub fn discard(&self) {
        let st = self.lock();
        let running = st.busy;
        drop(st);
        if !running && !self.status().ended() {
            self.end(Status::Aborted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;

    fn setup() -> (tempfile::TempDir, Storage, Arc<Staging>) {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::create(&d.path().join("s"), Options { sync: false, ..Options::default() }).unwrap();
        let mut t = s.begin();
        t.store(Oid(1), b"one").unwrap();
        t.store(Oid(2), b"two").unwrap();
        t.commit().unwrap();
        let dir = d.path().join("staging");
        private_dir(&dir).unwrap();
        (d, s, Staging::new(dir, STAGE_MEMORY, STAGE_MEMORY_OBJECT))
    }

    fn begin(s: &Storage, staging: &Arc<Staging>, no: u64) -> MountTxn {
        MountTxn::begin(s, None, staging, TxnNo(no), format!("t{no}"), false, 1 << 20).unwrap()
    }

    #[test]
    fn names_and_commands() {
        for ok in ["a", "gc-1", "A.b_c", &"x".repeat(64)] {
            assert!(valid_txn_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "new", "a/b", "a b", &"x".repeat(65), "é"] {
            assert!(!valid_txn_name(bad), "{bad}");
        }
        assert_eq!(parse_command(b"commit\n").unwrap(), Command::Commit);
        assert_eq!(parse_command(b" vote ").unwrap(), Command::Vote);
        assert_eq!(parse_command(b"abort").unwrap(), Command::Abort);
        assert_eq!(parse_command(b"comit\n").unwrap_err().errno, libc::EINVAL);
    }

    #[test]
    fn staging_reads_back_and_commits() {
        let (_d, s, staging) = setup();
        let t = begin(&s, &staging, 1);
        assert_eq!(t.read(&s, Oid(1), 0, 100).unwrap(), b"one", "read-through");
        t.stage(&s, Oid(1), false).unwrap();
        t.write(Oid(1), 0, b"!!", true).unwrap();
        t.write(Oid(1), 1, b"N", false).unwrap();
        assert_eq!(t.read(&s, Oid(1), 0, 100).unwrap(), b"oNe!!");
        t.truncate(&s, Oid(1), 2).unwrap();
        assert_eq!(t.stat(&s, Oid(1)).unwrap(), Some(2));
        t.create(&s, Oid(9), true).unwrap();
        t.write(Oid(9), 3, b"x", false).unwrap();
        assert_eq!(t.read(&s, Oid(9), 0, 100).unwrap(), b"\0\0\0x", "a hole reads as zeros");
        assert_eq!(t.create(&s, Oid(2), true).unwrap_err().errno, libc::EEXIST);
        t.unlink(&s, Oid(2)).unwrap();
        assert_eq!(t.stat(&s, Oid(2)).unwrap(), None);
        assert_eq!(t.unlink(&s, Oid(2)).unwrap_err().errno, libc::ENOENT);
        assert_eq!(t.unlink(&s, Oid(77)).unwrap_err().errno, libc::ENOENT);
        t.set_info(b"user alice\ndescription fix it\n").unwrap();
        assert_eq!(t.set_info(b"colour blue").unwrap_err().errno, libc::EINVAL);
        assert!(t.status_line().starts_with("open "));
        let tid = t.commit().unwrap();
        assert_eq!(t.status_line(), format!("committed {tid}\n"));
        assert_eq!(s.load(Oid(1)).unwrap().unwrap().1, b"oN");
        assert_eq!(s.load(Oid(9)).unwrap().unwrap().1, b"\0\0\0x");
        assert!(s.load(Oid(2)).unwrap().is_none());
        let info = s.transaction(tid).unwrap().unwrap();
        assert_eq!(info.meta.user, b"alice");
        assert_eq!(info.meta.description, b"fix it");
        assert_eq!(t.write(Oid(9), 0, b"y", false).unwrap_err().errno, libc::EINVAL, "ended");
        assert_eq!(t.abort().unwrap_err().errno, libc::EINVAL, "committed cannot abort");
        assert_eq!(staging.in_memory(), 0, "staged memory is given back at the end");
    }

    /// Past the budget (or one object's share) staged data moves to unnamed files, and
    /// reads, writes, truncates and the commit see the same bytes either way.
    #[test]
    fn staging_spills_to_disk_past_the_budget() {
        let (_d, s, big) = setup();
        let files = || std::fs::read_dir(&big.dir).unwrap().count();
        let staging = Staging::new(big.dir.clone(), 8, 6);
        let t = begin(&s, &staging, 1);
        t.create(&s, Oid(7), false).unwrap();
        t.write(Oid(7), 0, b"abcd", false).unwrap();
        assert_eq!(staging.in_memory(), 4, "a small object stays in memory");
        t.write(Oid(7), 4, b"efgh", false).unwrap();
        assert_eq!(staging.in_memory(), 0, "past one object's share it spilled");
        t.create(&s, Oid(8), false).unwrap();
        t.write(Oid(8), 0, b"12345", false).unwrap();
        t.stage(&s, Oid(1), false).unwrap();
        assert_eq!(staging.in_memory(), 8, "5 + 3 bytes: the budget is full");
        t.write(Oid(1), 3, b"!", true).unwrap();
        assert_eq!(staging.in_memory(), 5, "past the budget it spilled");
        assert_eq!(t.read(&s, Oid(7), 2, 4).unwrap(), b"cdef");
        assert_eq!(t.read(&s, Oid(1), 0, 100).unwrap(), b"one!");
        t.truncate(&s, Oid(7), 2).unwrap();
        t.truncate(&s, Oid(8), 3).unwrap();
        assert_eq!(staging.in_memory(), 3);
        assert_eq!(files(), 0, "spilled files have no names");
        t.commit().unwrap();
        assert_eq!(staging.in_memory(), 0);
        assert_eq!(s.load(Oid(7)).unwrap().unwrap().1, b"ab");
        assert_eq!(s.load(Oid(8)).unwrap().unwrap().1, b"123");
        assert_eq!(s.load(Oid(1)).unwrap().unwrap().1, b"one!");
        assert_eq!(big.in_memory(), 0);
    }

    #[test]
    fn a_failed_write_ends_the_transaction() {
        let (_d, s, staging) = setup();
        let t = begin(&s, &staging, 1);
        t.create(&s, Oid(9), false).unwrap();
        t.write(Oid(9), 0, b"x", false).unwrap();
        assert_eq!(t.write(Oid(9), 1 << 20, b"x", false).unwrap_err().errno, libc::EFBIG);
        assert!(t.status_line().starts_with("error write failed: "), "{}", t.status_line());
        assert_eq!(t.commit().unwrap_err().errno, libc::EINVAL, "a failed transaction cannot commit");
        let u = begin(&s, &staging, 2);
        assert_eq!(u.truncate(&s, Oid(1), 1 << 21).unwrap_err().errno, libc::EFBIG);
        assert!(matches!(u.status(), Status::Error(_)));
        assert!(s.load(Oid(9)).unwrap().is_none());
    }

    #[test]
    fn conflict_applies_nothing_and_vote_holds() {
        let (_d, s, staging) = setup();
        let a = begin(&s, &staging, 1);
        let b = begin(&s, &staging, 2);
        for t in [&a, &b] {
            t.stage(&s, Oid(1), true).unwrap();
            t.write(Oid(1), 0, t.name.as_bytes(), false).unwrap();
            t.create(&s, Oid(5), false).unwrap();
        }
        let v = a.vote().unwrap();
        assert_eq!(a.status(), Status::Voted);
        assert_eq!(a.write(Oid(1), 0, b"x", false).unwrap_err().errno, libc::EBUSY, "voted cannot change");
        // b's commit waits for a's vote; a commits meanwhile.
        std::thread::scope(|sc| {
            let h = sc.spawn(|| b.commit());
            std::thread::sleep(Duration::from_millis(100));
            assert!(!h.is_finished(), "another commit waits while a vote stands");
            let tid = a.commit().unwrap();
            let e = h.join().unwrap().unwrap_err();
            assert_eq!(e.errno, libc::ESTALE);
            assert_eq!(b.status(), Status::Conflict(Oid(1), tid));
            assert_eq!(b.status_line(), format!("conflict {} {tid}\n", Oid(1)));
        });
        assert_eq!(s.load(Oid(1)).unwrap().unwrap().1, b"t1");
        assert!(!a.expire_vote(v, Duration::from_millis(1)), "committed: nothing to expire");
        b.abort().unwrap();
    }

    #[test]
    fn abandoned_vote_expires_and_abort_discards() {
        let (_d, s, staging) = setup();
        let a = begin(&s, &staging, 1);
        a.stage(&s, Oid(3), true).unwrap();
        let v = a.vote().unwrap();
        assert!(a.expire_vote(v, Duration::from_millis(50)));
        assert!(matches!(a.status(), Status::Error(ref w) if w.contains("timed out")));
        let b = begin(&s, &staging, 2);
        b.stage(&s, Oid(4), true).unwrap();
        b.commit().unwrap();
        assert!(s.load(Oid(3)).unwrap().is_none(), "the expired vote applied nothing");
        let c = begin(&s, &staging, 3);
        c.stage(&s, Oid(6), true).unwrap();
        c.abort().unwrap();
        c.abort().unwrap();
        assert_eq!(c.status_line(), "aborted\n");
        assert_eq!(c.commit().unwrap_err().errno, libc::EINVAL);
        assert!(s.load(Oid(6)).unwrap().is_none());
    }
}
