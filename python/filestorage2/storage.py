"""FileStorage2: a ZODB storage over the filestorage2 engine.

The engine (Rust, ``filestorage2._native``) stores, loads, iterates and commits; this
module gives it ZODB 6's storage semantics. ``ZODB/MappingStorage.py`` and
``ZODB/BaseStorage.py`` are the templates:

* Two-phase commit as FileStorage does it: ``tpc_begin`` takes the commit lock, which
  is held until ``tpc_finish`` or ``tpc_abort``. Stores are checked against the current
  serial at once (conflict resolution happens there), so the engine's own conflict check
  at vote never fires in practice. ``tpc_vote`` is the engine's vote (the record is
  written and synced, invisible); ``tpc_finish`` calls the callback with the tid, then
  the engine's finish makes it visible. Loads and ``lastTransaction`` wait while a finish
  runs (``_lock``), so nobody sees the new tid before the callback delivered its
  invalidations.
* Restore (``tpc_begin(txn, tid, status)`` + ``restore``) keeps the caller's tids
  (the engine refuses a tid that is not after the last one). The engine keeps no
  transaction status and no backpointers: a backpointer is restored as its data.
* ``pack(t, referencesf, gc=True)``: a reachability walk from oid 0 deletes unreachable
  objects through ``deleteObject`` in one transaction, then the past segments whose
  history ends at or before ``t`` are merged (each object keeps its record current at
  the end of the merged range). Time travel before ``t`` may disappear; after it, it
  stays exact.
"""

import base64
import binascii
import os
import threading
import time

import zope.interface
from ZODB import POSException
from ZODB.BaseStorage import DataRecord
from ZODB.BaseStorage import TransactionRecord
from ZODB.BaseStorage import copy as copy_transactions
from ZODB.ConflictResolution import ConflictResolvingStorage
from ZODB.interfaces import IExternalGC
from ZODB.interfaces import IMultiCommitStorage
from ZODB.interfaces import IStorage
from ZODB.interfaces import IStorageCurrentRecordIteration
from ZODB.interfaces import IStorageIteration
from ZODB.interfaces import IStorageRestoreable
from ZODB.interfaces import IStorageUndoable
from ZODB.TimeStamp import TimeStamp
from ZODB.utils import newTid
from ZODB.utils import p64
from ZODB.utils import u64
from ZODB.utils import z64

from . import _native


def _bytes(v):
    if v is None:
        return b''
    return v.encode('utf-8') if isinstance(v, str) else bytes(v)


def _extension_bytes(transaction):
    ext = getattr(transaction, 'extension_bytes', None)
    if ext is not None:
        return ext
    ext = getattr(transaction, 'extension', None) or getattr(transaction, '_extension', None)
    if not ext:
        return b''
    from ZODB._compat import dumps
    return dumps(ext, 3)


def timestamp(t):
    """The tid (8 bytes) of a time given as seconds since the epoch."""
    return TimeStamp(*time.gmtime(t)[:5] + (t % 60,)).raw()


#: The description of the transaction in which ``pack`` deletes the garbage. It is not
#: in the undo log (FileStorage's pack writes no transaction; undoing it would bring
#: back unreachable objects).
GC_DESCRIPTION = b'filestorage2 pack: garbage collection'


def _undo_tid(transaction_id):
    """The tid an undo id names: base64 of the tid (FileStorage's ids), or the tid."""
    if isinstance(transaction_id, str):
        transaction_id = transaction_id.encode('ascii')
    if len(transaction_id) == 8:
        return bytes(transaction_id)
    try:
        tid = base64.decodebytes(bytes(transaction_id) + b'\n')
    except (binascii.Error, ValueError):
        tid = b''
    if len(tid) != 8:
        raise POSException.UndoError('Invalid transaction id %r' % (transaction_id,))
    return tid


class Fs2TransactionRecord(TransactionRecord):
    """A transaction as ``iterator()`` yields it: metadata and its data records."""

    def __init__(self, tid, user, description, extension, records):
        TransactionRecord.__init__(self, tid, ' ', user, description, extension)
        self._records = records

    def __iter__(self):
        tid = self.tid
        for oid, data in self._records:
            yield DataRecord(oid, tid, data, None)


@zope.interface.implementer(
    IStorage,
    IMultiCommitStorage,
    IStorageIteration,
    IStorageRestoreable,
    IStorageCurrentRecordIteration,
    IExternalGC,
    IStorageUndoable,
)
class FileStorage2(ConflictResolvingStorage):
    """A ZODB storage in a filestorage2 directory (a chain of segment files).

    ``path``: the storage directory. ``create``: create it if it holds no storage
    (``False``: it must exist). ``read_only``: open without the writer lock and refuse
    writes. ``rotate_size``: seal the active segment when it passes this many bytes
    (default 64 MiB). ``retention``: ``'full'`` (history kept until a pack) or
    ``'minimal'`` (past segments merged after every rotation); ``None`` keeps the
    stored setting. ``sync=False`` is the bulk-load mode (no fsync per commit; call
    ``sync()``; a crash may lose the latest commits, never corrupts). ``pack_gc``: whether
    ``pack`` garbage-collects by default (as FileStorage's ``pack_gc``; with ``False``,
    an external collector deletes objects with ``deleteObject``).
    """

    def __init__(self, path, create=False, read_only=False, rotate_size=None,
                 retention=None, sync=True, pack_gc=True, name=None):
        self._path = os.path.abspath(path)
        self.__name__ = name or self._path
        self._is_read_only = bool(read_only)
        self._pack_gc = bool(pack_gc)
        self._native = _native.NativeStorage(
            self._path, create=bool(create), read_only=self._is_read_only,
            sync=bool(sync), rotate_size=rotate_size)
        if retention is not None and not self._is_read_only:
            self._native.retention(retention)
        self._lock = threading.RLock()          # loads wait while a finish runs
        self._commit_lock = threading.Lock()    # tpc_begin .. tpc_finish/tpc_abort
        self._pack_lock = threading.Lock()
        self._transaction = None
        self._txn = None                        # the engine transaction
        self._tid = None                        # chosen at tpc_begin
        self._voted = False
        self._resolved = []
        self._opened = True

    # -- helpers ---------------------------------------------------------------

    def _check_open(self):
        if not self._opened:
            raise POSException.StorageError('the storage is closed')

    def _check_writable(self):
        if self._is_read_only:
            raise POSException.ReadOnlyError()

    def _committed_tid(self, oid):
        """The tid of ``oid``'s newest record (a deletion counts) or z64."""
        return self._native.current_tid(oid) or z64

    # -- IStorage: identity and lifetime ----------------------------------------

    def getName(self):
        return self.__name__

    def sortKey(self):
        return self._path

    def __repr__(self):
        return '<FileStorage2 %s>' % self._path

    def isReadOnly(self):
        return self._is_read_only

    def registerDB(self, db):
        ConflictResolvingStorage.registerDB(self, db)

    def close(self):
        with self._lock:
            if self._opened:
                self._opened = False
                self._native.close()

    def cleanup(self):
        """Remove the storage's files (tests)."""
        import shutil
        self.close()
        shutil.rmtree(self._path, ignore_errors=True)

    def getSize(self):
        self._check_open()
        return self._native.size()

    def __len__(self):
        self._check_open()
        return self._native.count_objects()

    def supportsUndo(self):
        """True while history is retained (retention ``full``); with ``minimal``
        retention past segments are merged after every rotation."""
        return self._opened and self._native.retention() == 'full'

    # -- IStorageUndoable ----------------------------------------------------------

    def undoLog(self, first=0, last=-20, filter=None):
        """Undoable transactions, newest first, as FileStorage describes them (``id`` is
        the base64 of the tid, as FileStorage's). Transactions of merged (packed)
        segments are not listed: they cannot be undone; nor is the garbage collection of
        ``pack``. Unlike FileStorage, a pack does not end the log at the pack time: the
        transactions of segments it did not merge stay undoable."""
        self._check_open()
        if last < 0:
            last = first - last
        out = []
        i = 0
        for name, _active, first_tid, last_tid, ntxn in reversed(self._native.segments()):
            if i >= last:
                break
            if not ntxn or last_tid is None:
                continue
            try:
                if not self._native.undoable(last_tid):
                    continue    # a merged segment: its history is gone
            except _native.NotFoundError:
                continue
            # Read backwards from the segment's end: a page of the log costs about
            # that page's transactions, not the segment.
            for tid, user, description, extension, size in \
                    self._native.transactions_newest_first(name):
                if i >= last:
                    break
                if description == GC_DESCRIPTION and not user:
                    continue
                d = {'id': base64.encodebytes(tid).rstrip(),
                     'time': TimeStamp(tid).timeTime(),
                     'user_name': user,
                     'description': description,
                     'size': size}
                if extension:
                    try:
                        d.update(TransactionRecord(
                            tid, ' ', user, description, extension).extension)
                    except Exception:
                        pass
                if filter is None or filter(d):
                    if i >= first:
                        out.append(d)
                    i += 1
        return out

    def undoInfo(self, first=0, last=-20, specification=None):
        if specification:
            spec = specification.items()

            def filter(desc):
                return all(desc.get(k, None) == v for k, v in spec)
        else:
            filter = None
        return self.undoLog(first, last, filter)

    def undo(self, transaction_id, transaction):
        """Undo the transaction ``transaction_id`` (an ``id`` of ``undoLog``: the tid in
        base64; the 8 tid bytes are accepted too) within ``transaction``: each object it
        wrote gets its state before it, as FileStorage does. An object changed since is
        resolved with ZODB's conflict resolution (current state, undone state, state
        before) or the undo fails with ``UndoError`` naming it (always when the undone
        transaction created it). Returns ``(tid, oids)``."""
        self._check_writable()
        self._check_txn(transaction)
        tid = _undo_tid(transaction_id)
        try:
            records = self._native.undo_records(tid)
        except _native.NotFoundError:
            raise POSException.UndoError('Invalid transaction id')
        except _native.InvalidError as e:
            raise POSException.UndoError(str(e))
        changes = []
        for oid, before, undone, ctid, current in records:
            staged = self._txn.staged(oid)
            if staged is not None:           # an earlier undo in this transaction
                current, ctid = staged[0], self._tid
            if ctid == tid or current == undone:
                # Unchanged since (or changed back): the state before (None: it did
                # not exist, the undo deletes it).
                changes.append((oid, before))
                continue
            if before is None:
                raise POSException.UndoError(
                    "Can't undo an add transaction followed by conflicting transactions.",
                    oid)
            if current is None or undone is None:
                raise POSException.UndoError(
                    'Some data were modified by a later transaction', oid)
            try:
                data = self.tryToResolveConflict(oid, ctid, tid, before, current)
            except POSException.ConflictError:
                raise POSException.UndoError(
                    'Some data were modified by a later transaction', oid)
            changes.append((oid, data))
        for oid, data in changes:
            if data is None:
                self._txn.delete(oid)
            else:
                self._txn.store(oid, data)
        return self._tid, [oid for oid, _ in changes]

    def sync(self, force=True):
        """Make every commit durable (after bulk loads with ``sync=False``)."""
        self._native.sync()

    # -- reads -----------------------------------------------------------------

    def lastTransaction(self):
        with self._lock:
            self._check_open()
            return self._native.last_tid()

    def load(self, oid, version=''):
        with self._lock:
            self._check_open()
            r = self._native.load(oid)
        if r is None:
            raise POSException.POSKeyError(oid)
        return r

    def loadBefore(self, oid, tid):
        with self._lock:
            self._check_open()
            r = self._native.load_before(oid, tid)
            if r is not None:
                return r
            # Nothing live before `tid`: a missing object (or a deletion) is a
            # POSKeyError; an object created at or after `tid` is None.
            for rtid, _size, deleted in self._native.history(oid):
                if rtid < tid:
                    if deleted:
                        raise POSException.POSKeyError(oid)
                    break
            else:
                if self._native.current_tid(oid) is not None:
                    return None
            raise POSException.POSKeyError(oid)

    def loadSerial(self, oid, serial):
        with self._lock:
            self._check_open()
            r = self._native.load_serial(oid, serial)
        if r is None or r[0] is None:
            raise POSException.POSKeyError(oid, serial)
        return r[0]

    def getTid(self, oid):
        with self._lock:
            self._check_open()
            h = self._native.history(oid)
        if not h or h[0][2]:
            raise POSException.POSKeyError(oid)
        return h[0][0]

    def history(self, oid, size=1):
        with self._lock:
            self._check_open()
            revs = self._native.history(oid)
        if not revs:
            raise POSException.POSKeyError(oid)
        out = []
        for tid, nbytes, _deleted in revs[:size]:
            meta = self._native.transaction_meta(tid) or (b'', b'', b'')
            r = TransactionRecord(tid, ' ', meta[0], meta[1], meta[2])
            out.append(dict(
                time=TimeStamp(tid).timeTime(), tid=tid, serial=tid,
                user_name=meta[0], description=meta[1],
                extension=r.extension, size=nbytes))
        return out

    def new_oid(self):
        self._check_open()
        self._check_writable()
        return self._native.new_oid()

    # -- IStorageIteration -------------------------------------------------------

    def iterator(self, start=None, stop=None):
        """Transactions with start <= tid <= stop, oldest first. The engine skips the
        segments whose tid range lies before ``start`` without reading them, and seeks
        to ``start`` inside the segment that holds it (a bisection over its records)."""
        self._check_open()
        return _TransactionIterator(self._native.transactions(start, stop))

    # -- IStorageCurrentRecordIteration -----------------------------------------

    def record_iternext(self, next=None):
        start = next or z64
        with self._lock:
            items = self._native.list(start, 2)
            if not items:
                raise ValueError('no objects at or after oid %r' % start)
            oid, tid = items[0]
            data, tid = self._native.load(oid)
        nxt = items[1][0] if len(items) > 1 else None
        return oid, tid, data, nxt

    # -- two-phase commit --------------------------------------------------------

    def tpc_begin(self, transaction, tid=None, status=' '):
        self._check_open()
        self._check_writable()
        if self._transaction is transaction:
            raise POSException.StorageTransactionError(
                'Duplicate tpc_begin calls for same transaction')
        self._commit_lock.acquire()
        try:
            self._check_open()
            txn = self._native.begin()
            txn.set_meta(_bytes(transaction.user), _bytes(transaction.description),
                         _extension_bytes(transaction))
            # The tid is chosen now, as FileStorage does (the blob wrapper names files
            # after it at store time); no one else commits while we hold the lock.
            if tid is None:
                tid = newTid(self._native.last_tid())
            txn.set_tid(tid)
        except BaseException:
            self._commit_lock.release()
            raise
        self._txn = txn
        self._tid = tid
        self._voted = False
        self._resolved = []
        self._transaction = transaction

    def tpc_transaction(self):
        return self._transaction

    def _check_txn(self, transaction):
        self._check_writable()
        if transaction is not self._transaction or self._transaction is None:
            raise POSException.StorageTransactionError(self, transaction)

    def store(self, oid, serial, data, version, transaction):
        if version:
            raise POSException.Unsupported('versions are not supported')
        self._check_txn(transaction)
        committed = self._native.current_tid(oid)
        # As FileStorage: a new object (no record at all) is not checked.
        if committed is not None and serial != committed:
            data = self.tryToResolveConflict(oid, committed, serial, data)
            self._resolved.append(oid)
        self._txn.store(oid, data)

    def restore(self, oid, serial, data, version, prev_txn, transaction):
        """Store a record as copied from another storage (no conflict check). A
        backpointer (``data`` None, ``prev_txn`` set) is restored as that revision's
        data; ``data`` None without ``prev_txn`` is a deletion."""
        if version:
            raise POSException.Unsupported('versions are not supported')
        self._check_txn(transaction)
        if data is None and prev_txn is not None:
            r = self._native.load_serial(oid, prev_txn)
            data = r[0] if r is not None else None
        if data is None:
            self._txn.delete(oid)
        else:
            self._txn.store(oid, data)

    def deleteObject(self, oid, oldserial, transaction):
        self._check_txn(transaction)
        committed = self._committed_tid(oid)
        if oldserial != committed:
            raise POSException.ConflictError(oid=oid, serials=(committed, oldserial))
        self._txn.delete(oid)

    def checkCurrentSerialInTransaction(self, oid, serial, transaction):
        self._check_txn(transaction)
        committed = self._committed_tid(oid)
        if committed != serial:
            raise POSException.ReadConflictError(oid=oid, serials=(committed, serial))

    def tpc_vote(self, transaction):
        self._check_txn(transaction)
        if not self._voted:
            try:
                self._txn.vote()
                self._voted = True
            except _native.ConflictError as e:
                oid, tid = p64(e.args[0]), p64(e.args[1])
                raise POSException.ConflictError(oid=oid, serials=(tid, z64))
            except _native.InvalidError as e:
                raise POSException.StorageTransactionError(str(e))
            except _native.ReadOnlyError as e:
                raise POSException.ReadOnlyError(str(e))
        return self._resolved

    def tpc_finish(self, transaction, f=None):
        self._check_txn(transaction)
        with self._lock:
            try:
                if not self._voted:
                    self.tpc_vote(transaction)
                tid = self._tid
                if f is not None:
                    f(tid)
                self._txn.finish()
                return tid
            finally:
                self._end()

    def tpc_abort(self, transaction):
        if transaction is not self._transaction or transaction is None:
            return
        with self._lock:
            self._txn.abort()
            self._end()

    def _end(self):
        self._transaction = None
        self._txn = None
        self._tid = None
        self._voted = False
        self._resolved = []
        self._commit_lock.release()

    # -- copying ---------------------------------------------------------------

    def copyTransactionsFrom(self, other, verbose=0):
        copy_transactions(other, self, verbose)

    # -- pack ------------------------------------------------------------------

    def pack(self, t, referencesf, gc=None):
        """Garbage-collect (unless ``gc`` is false), then merge the past segments whose
        history ends at or before ``t`` (seconds since the epoch)."""
        self._check_open()
        self._check_writable()
        if gc is None:
            gc = self._pack_gc
        if not self._pack_lock.acquire(blocking=False):
            raise POSException.StorageError('a pack is already running')
        try:
            self._pack(t, referencesf, gc)
        finally:
            self._pack_lock.release()

    def _pack(self, t, referencesf, gc):
        from . import pack
        packtid = min(timestamp(t), self._native.last_tid())
        if packtid == z64:
            return
        # The long part of the GC walk reads a snapshot; commits go on meanwhile.
        snapshot = self._native.last_tid()
        marked = pack.mark(self._native, referencesf, snapshot) if gc else None
        # Under the commit lock (commits wait): seal the history so far, finish the walk
        # with what was committed since the snapshot, delete the garbage in one
        # transaction, and seal that too (or an empty segment), so that the merge below
        # has a tail segment whose state is the current one.
        self._commit_lock.acquire()
        try:
            if self._native.segments()[-1][4] > 0:
                self._native.rotate()
            history = [s for s in self._native.segments() if not s[1]]
            garbage = pack.sweep(self._native, referencesf, marked, snapshot) if gc else []
            if garbage:
                self._delete_garbage(garbage)
            self._native.rotate()
            # The garbage collection's segments (an automatic rotation may split them).
            tail = [s[0] for s in self._native.segments() if not s[1]][len(history):]
        finally:
            self._commit_lock.release()
        names = []
        for name, _active, _first, last, _ntxn in history:
            if last is not None and last > packtid:
                break
            names.append(name)
        if len(names) == len(history):
            # Nothing but the garbage collection happened between them.
            names.extend(tail)
        while len(names) >= 2:
            chunk, names = names[:127], names[127:]
            self._merge(chunk)
            if names:
                past = [s[0] for s in self._native.segments() if not s[1]]
                names = [past[past.index(names[0]) - 1]] + names

    def _merge(self, names):
        # With minimal retention a background merge may be running: wait for it.
        for _ in range(600):
            try:
                return self._native.merge(names)
            except _native.BusyError:
                time.sleep(0.1)
        return self._native.merge(names)

    def _delete_garbage(self, garbage):
        """One transaction deleting ``garbage`` (oids); the commit lock is held."""
        txn = self._native.begin()
        txn.set_meta(b'', GC_DESCRIPTION, b'')
        for oid in garbage:
            txn.delete(oid)
        txn.vote()
        return txn.finish()


class _TransactionIterator:
    """What ``iterator()`` returns: an iterator of transaction records with ``close``."""

    def __init__(self, native_iter):
        self._it = native_iter

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            raise StopIteration
        tid, user, description, extension, records = next(self._it)
        return Fs2TransactionRecord(tid, user, description, extension, records)

    def close(self):
        self._it = None
