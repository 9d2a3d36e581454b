"""FileStorage2: a ZODB storage over the filestorage2 engine.

The engine (Rust, ``filestorage2._native``) stores, loads, iterates and commits; this
module gives it ZODB 6's storage semantics. ``ZODB/MappingStorage.py`` and
``ZODB/BaseStorage.py`` are the templates:

* Two-phase commit as ZEO 5 and RelStorage do it: transactions commit concurrently
  (no storage-wide commit lock). Stores are checked against the current serial at once
  (conflict resolution happens there). ``tpc_vote`` is the engine's vote: it locks the
  transaction's objects (a vote on an object another voted transaction holds waits),
  checks conflicts and reserves space, writing and syncing nothing. ``tpc_finish`` is
  the engine's finish: the tid is chosen there (IMultiCommitStorage), concurrent
  finishes share one fsync, and the callback gets the tid in tid order; until it
  returns, ``lastTransaction`` stays below that tid, so nobody starts a snapshot that
  includes a commit whose invalidations were not delivered.
* Blobs (ZODB's ``BlobStorage`` wrapper names a blob file after ``_tid`` at store
  time): the first ``_tid`` of a transaction chooses its tid then, and the engine gives
  it the commit order at vote (as a restore); if another commit took a later tid
  meanwhile, the vote raises a ``ConflictError`` and ZODB retries the transaction.
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
from . import pack


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
        self._lock = threading.RLock()          # close waits for reads
        self._pack_lock = threading.Lock()
        self._tpc = {}                          # transaction -> _Tpc (in two-phase commit)
        self._tpc_lock = threading.Lock()       # guards _tpc only (never held across calls)
        self._local = threading.local()         # .tpc: this thread's latest _Tpc
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
        state = self._check_txn(transaction)
        tid = _undo_tid(transaction_id)
        try:
            records = self._native.undo_records(tid)
        except _native.NotFoundError:
            raise POSException.UndoError('Invalid transaction id')
        except _native.InvalidError as e:
            raise POSException.UndoError(str(e))
        changes = []
        for oid, before, undone, ctid, current in records:
            staged = state.txn.staged(oid)
            if staged is not None:           # an earlier undo in this transaction
                current, ctid = staged[0], state.tid or z64
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
                state.txn.delete(oid)
            else:
                state.txn.store(oid, data)
        # The blob wrapper names the restored blob files after this tid: chosen now.
        return self._tid, [oid for oid, _ in changes]

    def sync(self, force=True):
        """Make every commit durable (after bulk loads with ``sync=False``)."""
        self._native.sync()

    # -- reads -----------------------------------------------------------------

    def lastTransaction(self):
        # Waits for the invalidation callbacks of the commits up to the last tid (not
        # under `_lock`: loads go on meanwhile).
        self._check_open()
        return self._native.notified_tid()

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
        with self._tpc_lock:
            if transaction in self._tpc:
                raise POSException.StorageTransactionError(
                    'Duplicate tpc_begin calls for same transaction')
        txn = self._native.begin()
        txn.set_meta(_bytes(transaction.user), _bytes(transaction.description),
                     _extension_bytes(transaction))
        if tid is not None:
            # Restore keeps the caller's tid (the engine takes the commit order at vote).
            txn.set_tid(tid)
        state = _Tpc(txn, tid)
        state.transaction = transaction
        with self._tpc_lock:
            self._tpc[transaction] = state
        self._local.tpc = state

    def tpc_transaction(self):
        state = getattr(self._local, 'tpc', None)
        return state.transaction if state is not None else None

    def _check_txn(self, transaction):
        self._check_writable()
        with self._tpc_lock:
            state = self._tpc.get(transaction)
        if state is None:
            raise POSException.StorageTransactionError(self, transaction)
        self._local.tpc = state
        return state

    @property
    def _tid(self):
        """The tid of this thread's transaction, chosen now if it was not yet (ZODB's
        ``BlobStorage`` names blob files after it at store time)."""
        state = getattr(self._local, 'tpc', None)
        if state is None:
            return None
        if state.tid is None:
            state.tid = newTid(self._native.last_tid())
            state.txn.set_tid(state.tid)
        return state.tid

    def store(self, oid, serial, data, version, transaction):
        if version:
            raise POSException.Unsupported('versions are not supported')
        state = self._check_txn(transaction)
        committed = self._native.current_tid(oid)
        # As FileStorage: a new object (no record at all) is not checked.
        if committed is not None and serial != committed:
            data = self.tryToResolveConflict(oid, committed, serial, data)
            state.resolved.append(oid)
        state.txn.store(oid, data)

    def restore(self, oid, serial, data, version, prev_txn, transaction):
        """Store a record as copied from another storage (no conflict check). A
        backpointer (``data`` None, ``prev_txn`` set) is restored as that revision's
        data; ``data`` None without ``prev_txn`` is a deletion."""
        if version:
            raise POSException.Unsupported('versions are not supported')
        state = self._check_txn(transaction)
        if data is None and prev_txn is not None:
            r = self._native.load_serial(oid, prev_txn)
            data = r[0] if r is not None else None
        if data is None:
            state.txn.delete(oid)
        else:
            state.txn.store(oid, data)

    def deleteObject(self, oid, oldserial, transaction):
        state = self._check_txn(transaction)
        committed = self._committed_tid(oid)
        if oldserial != committed:
            raise POSException.ConflictError(oid=oid, serials=(committed, oldserial))
        state.txn.delete(oid)

    def checkCurrentSerialInTransaction(self, oid, serial, transaction):
        state = self._check_txn(transaction)
        committed = self._committed_tid(oid)
        if committed != serial:
            raise POSException.ReadConflictError(oid=oid, serials=(committed, serial))
        # The vote locks it and checks again (as ZEO 5 does with read-current oids).
        state.txn.require_current(oid, serial)

    def tpc_vote(self, transaction):
        state = self._check_txn(transaction)
        if not state.voted:
            try:
                state.txn.vote()
                state.voted = True
            except _native.ConflictError as e:
                oid, tid = p64(e.args[0]), p64(e.args[1])
                if state.txn.staged(oid) is None:      # read, not written
                    raise POSException.ReadConflictError(oid=oid, serials=(tid, z64))
                raise POSException.ConflictError(oid=oid, serials=(tid, z64))
            except _native.InvalidError as e:
                if state.tid is not None and 'tids must increase' in str(e):
                    # A tid chosen early (blobs) that a later commit overtook: retry.
                    raise POSException.ConflictError(str(e))
                raise POSException.StorageTransactionError(str(e))
            except _native.ReadOnlyError as e:
                raise POSException.ReadOnlyError(str(e))
        return state.resolved

    def tpc_finish(self, transaction, f=None):
        state = self._check_txn(transaction)
        try:
            if not state.voted:
                self.tpc_vote(transaction)
            # The engine writes the transaction with the next group commit, then calls
            # `f` in tid order (lastTransaction waits until it returned). Its tid is not
            # before this clock's (as FileStorage's, which takes it from time.time()).
            if state.tid is None:
                state.txn.set_min_tid(newTid(None))
            return state.txn.finish(f)
        finally:
            self._end(transaction)

    def tpc_abort(self, transaction):
        with self._tpc_lock:
            state = self._tpc.get(transaction)
        if state is None:
            return
        state.txn.abort()
        self._end(transaction)

    def _end(self, transaction):
        with self._tpc_lock:
            state = self._tpc.pop(transaction, None)
        if getattr(self._local, 'tpc', None) is state:
            self._local.tpc = None

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
        packtid = min(timestamp(t), self._native.last_tid())
        if packtid == z64:
            return
        # The long part of the GC walk reads a snapshot; commits go on meanwhile.
        snapshot = self._native.last_tid()
        marked = pack.mark(self._native, referencesf, snapshot) if gc else None
        # Seal the history so far, finish the walk with what was committed since the
        # snapshot, delete the garbage in one transaction, and seal that too (or an
        # empty segment), so that the merge below has a tail segment whose state is the
        # current one. Commits go on meanwhile (see `_delete_garbage`).
        if self._native.segments()[-1][4] > 0:
            self._native.rotate()
        history = [s for s in self._native.segments() if not s[1]]
        deleted = self._delete_garbage(referencesf, marked, snapshot) if gc else False
        self._native.rotate()
        # The garbage collection's segments (an automatic rotation may split them);
        # merged only if no other commit went into them.
        tail = [s for s in self._native.segments() if not s[1]][len(history):]
        only_gc = sum(s[4] for s in tail) <= (1 if deleted else 0)
        names = []
        for name, _active, _first, last, _ntxn in history:
            if last is not None and last > packtid:
                break
            names.append(name)
        if len(names) == len(history) and only_gc:
            # Nothing but the garbage collection happened between them.
            names.extend(s[0] for s in tail)
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

    def _delete_garbage(self, referencesf, marked, snapshot):
        """Delete the garbage in one transaction; whether there was any. Commits go on
        while the sweep runs: the transaction takes the commit order at its vote, then
        the commits that came in since its base are read, and if one refers to (or
        changed) a garbage object, it is aborted and the sweep goes on from there."""
        at = snapshot
        for _attempt in range(100):
            txn = self._native.begin()
            base = self._native.last_tid()
            garbage = pack.sweep(self._native, referencesf, marked, at)
            if not garbage:
                txn.abort()
                return False
            txn.set_meta(b'', GC_DESCRIPTION, b'')
            for oid in garbage:
                txn.delete(oid)
            txn.hold_commit_order()
            try:
                txn.vote()
            except _native.ConflictError:
                txn.abort()        # a garbage object changed: it was reachable
                at = base
                continue
            # No commit comes now until finish or abort: the ones since `base` are all.
            revived = pack.revived(self._native, referencesf, marked, base, garbage)
            if revived:
                txn.abort()
                at = base
                continue
            txn.finish()
            return True
        raise POSException.StorageError('pack: commits kept reviving garbage; try again')

class _Tpc:
    """One transaction in two-phase commit: the engine transaction and its state."""

    __slots__ = ('txn', 'tid', 'voted', 'resolved', 'transaction')

    def __init__(self, txn, tid):
        self.txn = txn
        self.tid = tid              # None: chosen at finish (or at the first ``_tid``)
        self.voted = False
        self.resolved = []
        self.transaction = None


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
