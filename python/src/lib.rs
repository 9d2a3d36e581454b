//! `filestorage2._native`: a thin PyO3 layer over the engine's [`Storage`] and
//! [`Transaction`]. ZODB's semantics (serials, conflict resolution, the storage
//! interfaces) live in the Python package `filestorage2` on top of it.
//!
//! Oids and tids cross as ZODB spells them: 8-byte big-endian `bytes`. Calls that may
//! wait for the disk (open, vote, finish, rotate, merge, sync) release the GIL.

use filestorage2::merge::Policy;
use filestorage2::{
    Error, NewestFirst, ObjectCount, Oid, Options, SegmentName, SegmentState, Storage, Tid, Transaction, TxnIter,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

create_exception!(_native, Fs2Error, PyException, "An error of the filestorage2 engine.");
create_exception!(_native, ConflictError, Fs2Error, "The engine's conflict check: args are (oid, tid).");
create_exception!(_native, ReadOnlyError, Fs2Error, "A write on a read-only (or poisoned) storage.");
create_exception!(_native, BusyError, Fs2Error, "Locked by another process, or a merge is running.");
create_exception!(_native, NotFoundError, Fs2Error, "No such storage, object, revision or segment.");
create_exception!(_native, InvalidError, Fs2Error, "Bad input from the caller.");
create_exception!(_native, CorruptedError, Fs2Error, "Damaged bytes on disk (run `fs2 check`).");

/// The one place engine errors become Python exceptions.
fn err(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Conflict { oid, tid } => ConflictError::new_err((oid.0, tid.0, msg)),
        Error::ReadOnly(_) => ReadOnlyError::new_err(msg),
        Error::Busy(_) => BusyError::new_err(msg),
        Error::NotFound(_) => NotFoundError::new_err(msg),
        Error::Invalid(_) => InvalidError::new_err(msg),
        Error::Corrupted { .. } | Error::Checksum { .. } => CorruptedError::new_err(msg),
        Error::Io { .. } => Fs2Error::new_err(msg),
    }
}

fn u64_of(b: &[u8], what: &str) -> PyResult<u64> {
    let a: [u8; 8] =
        b.try_into().map_err(|_| PyValueError::new_err(format!("{what} must be 8 bytes, got {}", b.len())))?;
    Ok(u64::from_be_bytes(a))
}
fn oid(b: &[u8]) -> PyResult<Oid> {
    u64_of(b, "an oid").map(Oid)
}
fn tid(b: &[u8]) -> PyResult<Tid> {
    u64_of(b, "a tid").map(Tid)
}
fn b8(py: Python<'_>, v: u64) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &v.to_be_bytes())
}

/// An open storage. `close()` drops the engine handle (and the writer lock).
#[pyclass(frozen)]
struct NativeStorage {
    s: RwLock<Option<Storage>>,
    /// The last object count, which the next one starts from (see `count_objects`).
    count: Mutex<Option<ObjectCount>>,
}

impl NativeStorage {
    fn get(&self) -> PyResult<Storage> {
        self.s.read().unwrap().clone().ok_or_else(|| ReadOnlyError::new_err("the storage is closed"))
    }
}

type Loaded<'py> = Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>;

#[pymethods]
impl NativeStorage {
    #[new]
    #[pyo3(signature = (path, create=false, read_only=false, sync=true, rotate_size=None, preallocate=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        read_only: bool,
        sync: bool,
        rotate_size: Option<u64>,
        preallocate: Option<u64>,
    ) -> PyResult<Self> {
        let d = Options::default();
        let opts = Options {
            read_only,
            sync,
            rotate_size: rotate_size.unwrap_or(d.rotate_size),
            preallocate: preallocate.unwrap_or(d.preallocate),
            ..d
        };
        let s = py
            .detach(|| {
                let exists = path.is_dir()
                    && std::fs::read_dir(&path)
                        .map(|r| {
                            r.flatten().any(|e| SegmentName::from_file_name(&e.file_name().to_string_lossy()).is_some())
                        })
                        .unwrap_or(false);
                if create && !exists && !read_only {
                    Storage::create(&path, opts)
                } else {
                    Storage::open(&path, opts)
                }
            })
            .map_err(err)?;
        Ok(NativeStorage { s: RwLock::new(Some(s)), count: Mutex::new(None) })
    }

    fn close(&self, py: Python<'_>) {
        let s = self.s.write().unwrap().take();
        py.detach(move || drop(s));
    }

    fn is_read_only(&self) -> PyResult<bool> {
        Ok(self.get()?.is_read_only())
    }

    fn dir(&self) -> PyResult<PathBuf> {
        Ok(self.get()?.dir().to_path_buf())
    }

    /// The last tid, once the finish callbacks up to it ran (ZODB's `lastTransaction`;
    /// waits for them, with the GIL released).
    fn notified_tid<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let s = self.get()?;
        Ok(b8(py, py.detach(|| s.notified_tid()).0))
    }

    fn last_tid<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(b8(py, self.get()?.last_tid().0))
    }

    fn new_oid<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(b8(py, self.get()?.new_oid().map_err(err)?.0))
    }

    /// `(data, tid)` of the newest live revision with tid <= `at` (default: current).
    #[pyo3(signature = (o, at=None))]
    fn load<'py>(&self, py: Python<'py>, o: &[u8], at: Option<&[u8]>) -> PyResult<Loaded<'py>> {
        let at = at.map(tid).transpose()?.unwrap_or(Tid::MAX);
        let r = self.get()?.load_at(oid(o)?, at).map_err(err)?;
        Ok(r.map(|(t, d)| (PyBytes::new(py, &d), b8(py, t.0))))
    }

    /// `(data, tid, end_tid or None)` of the revision current just before `before`, or
    /// None (none before it, or it is a deletion).
    #[allow(clippy::type_complexity)]
    fn load_before<'py>(
        &self,
        py: Python<'py>,
        o: &[u8],
        before: &[u8],
    ) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>)>> {
        let r = self.get()?.load_before(oid(o)?, tid(before)?).map_err(err)?;
        Ok(r.map(|l| (PyBytes::new(py, &l.data), b8(py, l.tid.0), l.end.map(|e| b8(py, e.0)))))
    }

    /// The revision of `o` written by `t`: `None` if not retained, `(None,)` for a deletion.
    fn load_serial<'py>(
        &self,
        py: Python<'py>,
        o: &[u8],
        t: &[u8],
    ) -> PyResult<Option<(Option<Bound<'py, PyBytes>>,)>> {
        let r = self.get()?.revision(oid(o)?, tid(t)?).map_err(err)?;
        Ok(r.map(|r| (r.data.map(|d| PyBytes::new(py, &d)),)))
    }

    /// The tid of `o`'s newest record (a deletion counts), or None.
    fn current_tid<'py>(&self, py: Python<'py>, o: &[u8]) -> PyResult<Option<Bound<'py, PyBytes>>> {
        Ok(self.get()?.current_tid(oid(o)?).map_err(err)?.map(|t| b8(py, t.0)))
    }

    /// Retained revisions of `o`, newest first: `(tid, size, deleted)`.
    fn history<'py>(&self, py: Python<'py>, o: &[u8]) -> PyResult<Vec<(Bound<'py, PyBytes>, u64, bool)>> {
        let h = self.get()?.history(oid(o)?).map_err(err)?;
        Ok(h.into_iter().map(|r| (b8(py, r.tid.0), r.size, r.deleted)).collect())
    }

    /// `(user, description, extension)` of the retained transaction `t`, or None.
    #[allow(clippy::type_complexity)]
    fn transaction_meta<'py>(
        &self,
        py: Python<'py>,
        t: &[u8],
    ) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        let v = self.get()?.transaction(tid(t)?).map_err(err)?;
        Ok(v.map(|v| {
            (PyBytes::new(py, &v.meta.user), PyBytes::new(py, &v.meta.description), PyBytes::new(py, &v.meta.extension))
        }))
    }

    /// Live objects with oid >= `start` (current state), at most `limit`: `(oid, tid)`.
    fn list<'py>(
        &self,
        py: Python<'py>,
        start: &[u8],
        limit: usize,
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
        let l = self.get()?.list(oid(start)?, Tid::MAX, limit).map_err(err)?;
        Ok(l.into_iter().map(|o| (b8(py, o.oid.0), b8(py, o.tid.0))).collect())
    }

    /// Live objects: from the previous count and the transactions since when it can
    /// (`Storage::count_objects_from`), so repeated calls cost O(changes).
    fn count_objects(&self, py: Python<'_>) -> PyResult<u64> {
        let s = self.get()?;
        let prev = self.count.lock().unwrap().clone();
        let c = py.detach(|| s.count_objects_from(prev.as_ref())).map_err(err)?;
        let n = c.objects;
        *self.count.lock().unwrap() = Some(c);
        Ok(n)
    }

    /// Bytes of all segment files.
    fn size(&self) -> PyResult<u64> {
        Ok(self.get()?.stats().map_err(err)?.bytes)
    }

    /// Committed transactions with `start <= tid <= stop`, oldest first. Whole segments
    /// outside the range are skipped without being read.
    #[pyo3(signature = (start=None, stop=None))]
    fn transactions(&self, start: Option<&[u8]>, stop: Option<&[u8]>) -> PyResult<NativeTxnIter> {
        let from = start.map(tid).transpose()?.unwrap_or(Tid::ZERO);
        let to = stop.map(tid).transpose()?.unwrap_or(Tid::MAX);
        Ok(NativeTxnIter { it: Mutex::new(self.get()?.transactions(from, to)) })
    }

    /// Begin a transaction whose conflict check is against `base` (default: now).
    #[pyo3(signature = (base=None))]
    fn begin(&self, base: Option<&[u8]>) -> PyResult<NativeTxn> {
        let s = self.get()?;
        let t = match base {
            Some(b) => Transaction::at(&s, tid(b)?),
            None => s.begin(),
        };
        Ok(NativeTxn { t: Mutex::new(Some(t)) })
    }

    /// The transactions of segment `name` newest first, read backwards (a first item
    /// costs a window, not the segment): `(tid, user, description, extension, size)`,
    /// size = the bytes of its data records.
    fn transactions_newest_first(&self, name: &str) -> PyResult<NativeNewestFirst> {
        let name = name.parse::<SegmentName>().map_err(|e| err(e.into()))?;
        Ok(NativeNewestFirst { it: Mutex::new(self.get()?.transactions_newest_first(name, true).map_err(err)?) })
    }

    fn rotate(&self, py: Python<'_>) -> PyResult<String> {
        let s = self.get()?;
        Ok(py.detach(|| s.rotate()).map_err(err)?.to_string())
    }

    /// The chain, oldest first: `(name, active, first_tid, last_tid, transactions)`.
    #[allow(clippy::type_complexity)]
    fn segments<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Vec<(String, bool, Option<Bound<'py, PyBytes>>, Option<Bound<'py, PyBytes>>, u64)>> {
        let segs = self.get()?.segments().map_err(err)?;
        Ok(segs
            .into_iter()
            .map(|s| {
                (
                    s.name.to_string(),
                    s.state == SegmentState::Active,
                    s.first_tid.map(|t| b8(py, t.0)),
                    s.last_tid.map(|t| b8(py, t.0)),
                    s.transactions,
                )
            })
            .collect())
    }

    /// Merge these adjacent past segments (names as `segments()` gives them) into one
    /// that keeps each object's record current at the end of the last one.
    fn merge(&self, py: Python<'_>, names: Vec<String>) -> PyResult<bool> {
        let s = self.get()?;
        let names =
            names.iter().map(|n| n.parse::<SegmentName>()).collect::<Result<Vec<_>, _>>().map_err(|e| err(e.into()))?;
        Ok(py.detach(|| s.merge(&Policy::Named(names))).map_err(err)?.is_some())
    }

    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let s = self.get()?;
        py.detach(|| s.sync()).map_err(err)
    }

    /// Whether transaction `t` can be undone (its history is not merged away);
    /// `NotFoundError` if there is no such transaction.
    fn undoable(&self, t: &[u8]) -> PyResult<bool> {
        self.get()?.undoable(tid(t)?).map_err(err)
    }

    /// What undoing transaction `t` needs, per object it wrote: `(oid, before, undone,
    /// current_tid, current)`; the data are None for "absent / deleted". Refused with
    /// `InvalidError` if its history was merged away, `NotFoundError` if unknown.
    #[allow(clippy::type_complexity)]
    fn undo_records<'py>(
        &self,
        py: Python<'py>,
        t: &[u8],
    ) -> PyResult<
        Vec<(
            Bound<'py, PyBytes>,
            Option<Bound<'py, PyBytes>>,
            Option<Bound<'py, PyBytes>>,
            Bound<'py, PyBytes>,
            Option<Bound<'py, PyBytes>>,
        )>,
    > {
        let t = tid(t)?;
        let s = self.get()?;
        let recs = py.detach(|| s.undo_records(t)).map_err(err)?;
        let data = |d: &Option<Vec<u8>>| d.as_ref().map(|d| PyBytes::new(py, d));
        Ok(recs
            .iter()
            .map(|r| (b8(py, r.oid.0), data(&r.before), data(&r.undone), b8(py, r.current_tid.0), data(&r.current)))
            .collect())
    }

    /// The oids live at `at` that are unreachable from the root oid 0 by strong ZODB
    /// references (the Rust collector's scan and mark; deletes nothing; the GIL is
    /// released). `InvalidError` if a reachable record is not a ZODB record, or there
    /// are objects but no root.
    fn gc_garbage<'py>(&self, py: Python<'py>, at: &[u8]) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let at = tid(at)?;
        let s = self.get()?;
        let g = py.detach(|| filestorage2::zodb::gc::garbage(&s, at, &mut |_, _, _| {})).map_err(err)?;
        Ok(g.into_iter().map(|o| b8(py, o.0)).collect())
    }

    /// `full` or `minimal`; with an argument, set it.
    #[pyo3(signature = (value=None))]
    fn retention(&self, value: Option<&str>) -> PyResult<String> {
        use filestorage2::settings::Retention;
        let s = self.get()?;
        if let Some(v) = value {
            let r = match v {
                "full" => Retention::Full,
                "minimal" => Retention::Minimal,
                _ => return Err(PyValueError::new_err(format!("retention must be full or minimal, not {v:?}"))),
            };
            s.set_retention(r).map_err(err)?;
        }
        Ok(match s.retention() {
            Retention::Full => "full".into(),
            Retention::Minimal => "minimal".into(),
        })
    }
}

/// An engine transaction. Dropping it (or `abort`) discards it.
#[pyclass(frozen)]
struct NativeTxn {
    t: Mutex<Option<Transaction>>,
}

impl NativeTxn {
    fn with<R>(&self, f: impl FnOnce(&mut Transaction) -> filestorage2::Result<R>) -> PyResult<R> {
        let mut g = self.t.lock().unwrap();
        let t = g.as_mut().ok_or_else(|| InvalidError::new_err("the transaction has ended"))?;
        f(t).map_err(err)
    }
    fn take(&self) -> PyResult<Transaction> {
        self.t.lock().unwrap().take().ok_or_else(|| InvalidError::new_err("the transaction has ended"))
    }
}

#[pymethods]
impl NativeTxn {
    fn store(&self, o: &[u8], data: &[u8]) -> PyResult<()> {
        let o = oid(o)?;
        self.with(|t| t.store(o, data))
    }

    fn delete(&self, o: &[u8]) -> PyResult<()> {
        let o = oid(o)?;
        self.with(|t| t.delete(o))
    }

    /// What this transaction staged for `o`: None, or `(data,)` (`(None,)`: a deletion).
    fn staged<'py>(&self, py: Python<'py>, o: &[u8]) -> PyResult<Option<(Option<Bound<'py, PyBytes>>,)>> {
        let o = oid(o)?;
        let g = self.t.lock().unwrap();
        let t = g.as_ref().ok_or_else(|| InvalidError::new_err("the transaction has ended"))?;
        Ok(t.staged(o).map(|d| (d.map(|d| PyBytes::new(py, d)),)))
    }

    fn set_meta(&self, user: &[u8], description: &[u8], extension: &[u8]) -> PyResult<()> {
        self.with(|t| {
            t.set_user(user);
            t.set_description(description);
            t.set_extension(extension);
            Ok(())
        })
    }

    fn set_tid(&self, t: &[u8]) -> PyResult<()> {
        let t = tid(t)?;
        self.with(|x| x.set_tid(t))
    }

    /// The tid chosen at finish is at least `t` (the client's clock).
    fn set_min_tid(&self, t: &[u8]) -> PyResult<()> {
        let t = tid(t)?;
        self.with(|x| x.set_min_tid(t))
    }

    /// Require `o` to be still at `serial` when this transaction commits (locked and
    /// checked at vote).
    fn require_current(&self, o: &[u8], serial: &[u8]) -> PyResult<()> {
        let (o, serial) = (oid(o)?, tid(serial)?);
        self.with(|t| t.require_current(o, serial))
    }

    /// Take the commit order at vote (no other transaction is written from the vote to
    /// finish or abort).
    fn hold_commit_order(&self) -> PyResult<()> {
        self.with(|t| t.hold_commit_order())
    }

    /// Lock the oids, check conflicts and reserve space (nothing is written or synced);
    /// returns the tid if it was set with `set_tid` (otherwise it is chosen at finish).
    fn vote<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut t = self.take()?;
        let r = py.detach(|| t.vote().map(|_| t.tid()));
        // Back in its slot even after an error: the caller aborts it.
        *self.t.lock().unwrap() = Some(t);
        Ok(r.map_err(err)?.map(|got| b8(py, got.0)))
    }

    /// Write the voted transaction with the next group commit and make it visible (or
    /// commit in one step); returns the tid. `callback(tid)`, if given, runs once the
    /// callbacks of smaller tids ran (ZODB's invalidations, in tid order); an exception
    /// it raises is raised here, after the commit.
    #[pyo3(signature = (callback=None))]
    fn finish<'py>(&self, py: Python<'py>, callback: Option<Py<PyAny>>) -> PyResult<Bound<'py, PyBytes>> {
        let t = self.take()?;
        let Some(cb) = callback else {
            let got = py.detach(|| t.commit()).map_err(err)?;
            return Ok(b8(py, got.0));
        };
        let (got, called) = py
            .detach(|| {
                t.finish_then(|tid| {
                    Python::attach(|py| cb.call1(py, (PyBytes::new(py, &tid.0.to_be_bytes()),)).map(drop))
                })
            })
            .map_err(err)?;
        called?;
        Ok(b8(py, got.0))
    }

    fn abort(&self, py: Python<'_>) {
        let t = self.t.lock().unwrap().take();
        py.detach(move || drop(t));
    }
}

/// Iterator over committed transactions: `(tid, user, description, extension,
/// [(oid, data or None)])`.
#[pyclass(frozen)]
struct NativeTxnIter {
    it: Mutex<TxnIter>,
}

type TxnTuple<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Vec<(Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>)>,
);

#[pymethods]
impl NativeTxnIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<TxnTuple<'py>>> {
        let next = self.it.lock().unwrap().next();
        let Some(r) = next else { return Ok(None) };
        let r = r.map_err(err)?;
        let recs = r.records.iter().map(|(o, d)| (b8(py, o.0), d.as_ref().map(|d| PyBytes::new(py, d)))).collect();
        Ok(Some((
            b8(py, r.tid.0),
            PyBytes::new(py, &r.meta.user),
            PyBytes::new(py, &r.meta.description),
            PyBytes::new(py, &r.meta.extension),
            recs,
        )))
    }
}

/// Iterator over one segment's transactions, newest first.
#[pyclass(frozen)]
struct NativeNewestFirst {
    it: Mutex<NewestFirst>,
}

type TxnInfo<'py> = (Bound<'py, PyBytes>, Bound<'py, PyBytes>, Bound<'py, PyBytes>, Bound<'py, PyBytes>, u64);

#[pymethods]
impl NativeNewestFirst {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<TxnInfo<'py>>> {
        let next = self.it.lock().unwrap().next();
        let Some(t) = next else { return Ok(None) };
        let t = t.map_err(err)?;
        Ok(Some((
            b8(py, t.tid.0),
            PyBytes::new(py, &t.meta.user),
            PyBytes::new(py, &t.meta.description),
            PyBytes::new(py, &t.meta.extension),
            t.records.iter().map(|r| r.size).sum(),
        )))
    }
}

/// The oids of the strong references of a ZODB record (what `ZODB.serialize.referencesf`
/// returns), read by the Rust record reader; None if `data` is not a ZODB record.
#[pyfunction]
fn references<'py>(py: Python<'py>, data: &[u8]) -> Option<Vec<Bound<'py, PyBytes>>> {
    let r = filestorage2::zodb::read_record(data).ok()?;
    Some(r.refs.iter().filter(|r| r.is_strong()).map(|r| b8(py, r.oid.0)).collect())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(references, m)?)?;
    m.add_class::<NativeStorage>()?;
    m.add_class::<NativeTxn>()?;
    m.add_class::<NativeTxnIter>()?;
    m.add_class::<NativeNewestFirst>()?;
    m.add("Fs2Error", py.get_type::<Fs2Error>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("ReadOnlyError", py.get_type::<ReadOnlyError>())?;
    m.add("BusyError", py.get_type::<BusyError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("InvalidError", py.get_type::<InvalidError>())?;
    m.add("CorruptedError", py.get_type::<CorruptedError>())?;
    Ok(())
}
