"""FileStorage2 through ZODB's object layer (``ZODB.DB``), ZConfig, and the parts of
the storage API the conformance mixins do not pin down."""

import os
import time

import pytest
import transaction
import ZODB
import ZODB.blob
import ZODB.config
from BTrees.OOBTree import OOBTree
from BTrees.OOBTree import OOBucket
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError
from ZODB.POSException import POSKeyError
from ZODB.POSException import ReadOnlyError
from ZODB.serialize import referencesf
from ZODB.utils import p64
from ZODB.utils import z64

from filestorage2 import FileStorage2
from filestorage2 import _native


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / 'data.fs2')


def open_db(path, **kw):
    return ZODB.DB(FileStorage2(path, create=True, **kw))


def test_missing_storage_is_refused_without_create(path):
    with pytest.raises(_native.NotFoundError):
        FileStorage2(path)


def test_second_writer_is_refused(path):
    s = FileStorage2(path, create=True)
    try:
        with pytest.raises(_native.BusyError):
            FileStorage2(path)
        r = FileStorage2(path, read_only=True)
        r.close()
    finally:
        s.close()


def test_db_btrees_resolve_conflicts_and_mappings_raise(path):
    db = open_db(path)
    try:
        tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
        c1, c2 = db.open(tm1), db.open(tm2)
        c1.root()['tree'] = OOBTree()
        c1.root()['map'] = PersistentMapping()
        tm1.commit()
        c2.sync()
        # The same bucket changed on both sides, different keys: BTrees resolve it.
        c1.root()['tree']['a'] = 1
        c2.root()['tree']['b'] = 2
        tm1.commit()
        tm2.commit()
        # The same mapping on both sides: a real conflict.
        c1.root()['map']['x'] = 1
        c2.root()['map']['x'] = 2
        tm1.commit()
        with pytest.raises(ConflictError) as e:
            tm2.commit()
        assert e.value.oid == c1.root()['map']._p_oid
        tm2.abort()
        c3 = db.open()
        assert dict(c3.root()['tree']) == {'a': 1, 'b': 2}
        assert dict(c3.root()['map']) == {'x': 1}
        c3.close()
    finally:
        db.close()


def test_reopen_read_only_and_metadata(path):
    db = open_db(path)
    c = db.open()
    c.root()['x'] = PersistentMapping(v=1)
    t = transaction.get()
    t.setUser('alice')
    t.note('first')
    t.setExtendedInfo('k', 'v')
    transaction.commit()
    tid = c.root()._p_serial
    db.close()
    s = FileStorage2(path, read_only=True)
    try:
        assert s.isReadOnly()
        db = ZODB.DB(s)
        c = db.open()
        assert c.root()['x']['v'] == 1
        h = s.history(z64, size=5)
        assert h[0]['tid'] == tid
        assert h[0]['user_name'] == b'/ alice'
        assert h[0]['description'] == b'first'
        assert h[0]['extension'] == {'k': 'v'}
        txn, = [t for t in s.iterator() if t.tid == tid]
        assert txn.extension == {'k': 'v'}
        c.root()['y'] = 1
        with pytest.raises(ReadOnlyError):
            transaction.commit()
        transaction.abort()
    finally:
        db.close()


def test_iterator_start_stop_across_segments(path):
    s = FileStorage2(path, create=True, rotate_size=4096)
    db = ZODB.DB(s)
    try:
        c = db.open()
        tids = []
        for i in range(200):
            c.root()['k%d' % (i % 7)] = 'x' * 100 + str(i)
            transaction.commit()
            tids.append(c.root()._p_serial)
        assert len(s._native.segments()) > 5
        all_tids = [t.tid for t in s.iterator()]
        assert all_tids[-200:] == tids
        assert [t.tid for t in s.iterator(tids[150])] == tids[150:]
        assert [t.tid for t in s.iterator(tids[10], tids[20])] == tids[10:21]
        # A start between two tids begins with the next one.
        between = p64(int.from_bytes(tids[99], 'big') + 1)
        assert [t.tid for t in s.iterator(between, tids[101])] == tids[100:102]
        assert list(s.iterator(p64(int.from_bytes(tids[-1], 'big') + 1))) == []
    finally:
        db.close()


def test_pack_gc_through_db_keeps_history_after_pack_time(path):
    db = open_db(path)
    try:
        c = db.open()
        root = c.root()
        root['keep'] = PersistentMapping(v=0)
        root['drop'] = PersistentMapping(v=0)
        transaction.commit()
        dropped = root['drop']._p_oid
        old_keep = root['keep']._p_serial
        root['keep']['v'] = 1
        del root['drop']
        transaction.commit()
        packt = time.time()
        time.sleep(0.02)
        root['keep']['v'] = 2
        transaction.commit()
        after = root['keep']._p_serial
        n = len(db.storage)
        db.pack(packt)
        s = db.storage
        # Unreachable: deleted by the GC (through deleteObject's path).
        with pytest.raises(POSKeyError):
            s.load(dropped)
        assert len(s) == n - 1
        # History after the pack time stays exact.
        assert s.loadSerial(root['keep']._p_oid, after)
        # Before it may go once the segments are merged: pack now.
        db.pack(time.time() + 1)
        with pytest.raises(POSKeyError):
            s.loadSerial(root['keep']._p_oid, old_keep)
        c.cacheMinimize()
        assert root['keep']['v'] == 2
    finally:
        db.close()


def test_pack_without_gc_keeps_unreachable(path):
    s = FileStorage2(path, create=True, pack_gc=False)
    db = ZODB.DB(s)
    try:
        c = db.open()
        c.root()['a'] = PersistentMapping()
        transaction.commit()
        oid = c.root()['a']._p_oid
        del c.root()['a']
        transaction.commit()
        db.pack(time.time() + 1)
        assert s.load(oid)
        s.pack(time.time() + 1, referencesf, gc=True)
        with pytest.raises(POSKeyError):
            s.load(oid)
    finally:
        db.close()


def test_record_iternext_visits_every_current_record(path):
    db = open_db(path)
    try:
        c = db.open()
        for i in range(10):
            c.root()[i] = PersistentMapping(i=i)
        transaction.commit()
        s = db.storage
        seen, nxt = [], None
        while True:
            oid, tid, data, nxt = s.record_iternext(nxt)
            assert (data, tid) == s.load(oid)
            seen.append(oid)
            if nxt is None:
                break
        assert len(seen) == 11 == len(s)
    finally:
        db.close()


def test_blobs_survive_reopen_and_pack(tmp_path, path):
    blobs = str(tmp_path / 'blobs')

    def open_blob_db():
        return ZODB.DB(ZODB.blob.BlobStorage(blobs, FileStorage2(path, create=True)))
    db = open_blob_db()
    c = db.open()
    c.root()['b'] = ZODB.blob.Blob(b'one')
    transaction.commit()
    with c.root()['b'].open('w') as f:
        f.write(b'two')
    transaction.commit()
    db.close()
    db = open_blob_db()
    try:
        c = db.open()
        with c.root()['b'].open() as f:
            assert f.read() == b'two'
        db.pack(time.time() + 1)
        c.cacheMinimize()
        with c.root()['b'].open() as f:
            assert f.read() == b'two'
    finally:
        db.close()


CONFIG = """
%%import filestorage2
<zodb>
  <blobstorage>
    blob-dir %(dir)s/blobs
    <filestorage2>
      path %(dir)s/data.fs2
      rotate-size 1MB
      retention minimal
      pack-gc false
      %(extra)s
    </filestorage2>
  </blobstorage>
</zodb>
"""


def test_zconfig_blobstorage(tmp_path):
    db = ZODB.config.databaseFromString(CONFIG % dict(dir=tmp_path, extra=''))
    try:
        c = db.open()
        c.root()['b'] = ZODB.blob.Blob(b'data')
        transaction.commit()
        base = db.storage._BlobStorage__storage
        assert isinstance(base, FileStorage2)
        assert base._native.retention() == 'minimal'
        assert base._pack_gc is False
    finally:
        db.close()
    db = ZODB.config.databaseFromString(CONFIG % dict(dir=tmp_path, extra='read-only true'))
    try:
        assert db.storage.isReadOnly()
        c = db.open()
        with c.root()['b'].open() as f:
            assert f.read() == b'data'
    finally:
        db.close()


def test_zconfig_create_false_refuses_missing(tmp_path):
    with pytest.raises(_native.NotFoundError):
        ZODB.config.storageFromString(
            '%%import filestorage2\n<filestorage2>\npath %s/nothing\ncreate false\n</filestorage2>'
            % tmp_path)
    assert not os.path.exists(tmp_path / 'nothing')


def test_pack_keeps_an_object_made_reachable_during_the_walk(path, monkeypatch):
    """The walk reads a snapshot without the commit lock; a commit meanwhile that links
    a garbage object back in must keep it alive (the sweep marks what was written since)."""
    import filestorage2.pack as fpack
    db = open_db(path)
    try:
        c = db.open()
        root = c.root()
        root['a'] = PersistentMapping(child=PersistentMapping(v=1))
        transaction.commit()
        child = root['a']['child']
        del root['a']['child']
        transaction.commit()
        real_mark = fpack.mark

        def mark_then_commit(*args):
            marked = real_mark(*args)
            root['again'] = child
            transaction.commit()
            return marked
        monkeypatch.setattr(fpack, 'mark', mark_then_commit)
        db.pack(time.time() + 1)
        c.cacheMinimize()
        assert db.storage.load(child._p_oid)
        assert root['again']['v'] == 1
    finally:
        db.close()


def _undo_id(db, description):
    for d in db.undoLog(0, 100):
        if d['description'] == description:
            return d['id']
    raise AssertionError('no transaction %r in the undo log' % description)


def test_undo_through_db_restores_resolves_and_refuses(path):
    """DB.undo of a ZODB-written history: a plain undo, an undo that ZODB's conflict
    resolution merges (an OOBucket changed since), and one refused (a
    PersistentMapping changed since), naming the oid."""
    db = open_db(path)
    try:
        assert db.supportsUndo()
        c = db.open()
        root = c.root()
        root['tree'] = OOBucket({'0': 0})  # BTrees refuse to merge a deleted first key
        root['m'] = PersistentMapping(v=1)
        transaction.get().note('create')
        transaction.commit()
        root['tree']['a'] = 1
        root['m']['v'] = 2
        transaction.get().note('a and v')
        transaction.commit()
        root['tree']['b'] = 2
        transaction.get().note('b')
        transaction.commit()
        # Undo 'b': plain (nothing changed since).
        db.undo(_undo_id(db, 'b'))
        transaction.commit()
        c.sync()
        assert dict(root['tree']) == {'0': 0, 'a': 1}
        # Undo 'a and v' after a later change to the tree: the bucket is resolved,
        # but the mapping changed since too and has no conflict resolution.
        root['tree']['c'] = 3
        root['m']['v'] = 3
        transaction.get().note('c and v')
        transaction.commit()
        from ZODB.POSException import UndoError
        db.undo(_undo_id(db, 'a and v'))
        with pytest.raises(UndoError) as e:
            transaction.commit()
        assert e.value._oid == root['m']._p_oid
        transaction.abort()
        # Without the mapping change in the way, the tree's undo resolves.
        root['m']['v'] = 2
        transaction.commit()
        db.undo(_undo_id(db, 'a and v'))
        transaction.commit()
        c.sync()
        assert dict(root['tree']) == {'0': 0, 'c': 3}
        assert root['m']['v'] == 1
        assert len(db.undoLog(0, 100)) == 8
    finally:
        db.close()


def test_undo_of_merged_history_is_refused(path):
    s = FileStorage2(path, create=True, rotate_size=1024)
    db = ZODB.DB(s)
    try:
        c = db.open()
        root = c.root()
        for i in range(40):
            root['k'] = PersistentMapping(i=i)
            transaction.commit()
        first = db.undoLog(0, -1000)[-1]['id']
        db.pack(time.time() + 1)
        assert first not in [d['id'] for d in db.undoLog(0, -1000)]
        from ZODB.POSException import UndoError
        db.undo(first)
        with pytest.raises(UndoError, match='merged'):
            transaction.commit()
        transaction.abort()
    finally:
        db.close()


def test_pack_gc_uses_the_rust_collector(path, monkeypatch):
    """On ZODB records the Rust collector finds the garbage: referencesf is not called."""
    db = open_db(path)
    try:
        c = db.open()
        root = c.root()
        root['a'] = PersistentMapping(child=PersistentMapping(v=1))
        root['t'] = OOBTree({i: PersistentMapping() for i in range(300)})
        transaction.commit()
        gone = root['a']['child']._p_oid
        del root['a']['child']
        transaction.commit()

        def no_python(data):
            raise AssertionError('the Python walk ran')
        db.storage.pack(time.time() + 1, no_python)
        with pytest.raises(POSKeyError):
            db.storage.load(gone)
        c.cacheMinimize()
        assert len(root['t']) == 300
    finally:
        db.close()


def test_pack_gc_falls_back_to_referencesf_for_records_rust_cannot_read(path):
    """Records that are not ZODB pickles (a custom serializer): the collector refuses,
    the walk uses the referencesf given."""
    s = FileStorage2(path, create=True)
    try:
        def commit(records):
            t = transaction.TransactionManager().begin()
            s.tpc_begin(t)
            for oid, data in records:
                s.store(oid, s._committed_tid(oid), data, '', t)
            s.tpc_vote(t)
            s.tpc_finish(t)
        # "refs:<oid hex>,..." records
        commit([(z64, b'refs:1'), (p64(1), b'refs:'), (p64(2), b'refs:')])

        def refs(data):
            body = data[len(b'refs:'):]
            return [p64(int(x, 16)) for x in body.split(b',') if x]
        s.pack(time.time() + 1, refs)
        assert s.load(p64(1))
        with pytest.raises(POSKeyError):
            s.load(p64(2))
    finally:
        s.close()


def _fs2_binary():
    here = os.path.dirname(os.path.abspath(__file__))
    for p in (os.environ.get('FS2_BIN'),
              os.path.join(here, '..', '..', 'target', 'debug', 'fs2'),
              os.path.join(here, '..', '..', 'target', 'release', 'fs2')):
        if p and os.access(p, os.X_OK):
            return p
    pytest.skip('no fs2 binary (cargo build, or FS2_BIN)')


def test_fs2_undo_on_a_database_written_by_zodb(path):
    """`fs2 undo` on ZODB records: restores the state before, refuses (exit 4, naming
    the oid) an object changed since; ZODB reads the result."""
    import subprocess
    fs2 = _fs2_binary()
    db = open_db(path)
    c = db.open()
    root = c.root()
    root['m'] = PersistentMapping(v=1)
    transaction.commit()
    moid = root['m']._p_oid
    root['m']['v'] = 2
    transaction.commit()
    t2 = db.lastTransaction()
    root['m']['v'] = 3
    transaction.commit()
    t3 = db.lastTransaction()
    db.close()
    try:
        r = subprocess.run([fs2, 'undo', path, t2.hex()], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 4, r
        assert moid.hex() in r.stderr, r.stderr
        r = subprocess.run([fs2, 'undo', path, t3.hex()], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r
        db = open_db(path)
        c = db.open()
        assert c.root()['m']['v'] == 2
        assert db.undoLog(0, 1)[0]['description'] == 'undo %s' % t3.hex()
    finally:
        db.close()


def _bulk(s, n, per=3, start=0):
    """``n`` transactions of ``per`` small objects through the storage API: their tids."""
    from ZODB.Connection import TransactionMetaData
    tids = []
    for i in range(start, start + n):
        t = TransactionMetaData(user='u%d' % i, description='txn %d' % i)
        s.tpc_begin(t)
        for k in range(per):
            s.store(p64(1 + (i * per + k) % 5000), s._committed_tid(p64(1 + (i * per + k) % 5000)),
                    b'x' * 200 + str(i).encode(), '', t)
        s.tpc_vote(t)
        tids.append(s.tpc_finish(t))
    return tids


def test_iterator_seeks_inside_a_large_segment(path):
    """``iterator(start)`` inside one 4 MB segment: the same transactions as a full
    scan, and (the seek) far faster than reading the segment from its start."""
    s = FileStorage2(path, create=True, sync=False)
    try:
        tids = _bulk(s, 6000)
        assert len(s._native.segments()) == 1
        for k in (0, 1, 2999, 5998, 5999):
            assert [t.tid for t in s.iterator(tids[k])] == tids[k:]
            after = p64(int.from_bytes(tids[k], 'big') + 1)
            assert [t.tid for t in s.iterator(after, tids[-1])] == tids[k + 1:]
        assert [t.tid for t in s.iterator(tids[4000], tids[4002])] == tids[4000:4003]

        def best(f, n=5):
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                f()
                out.append(time.perf_counter() - t0)
            return min(out)
        # The last transaction: a seek reads ~64 KiB; a scan from the start reads 4 MB.
        seek = best(lambda: next(iter(s.iterator(tids[-1]))))
        scan = best(lambda: list(s._native.transactions(None, tids[-1]))[-1])
        assert seek * 10 < scan, (seek, scan)
    finally:
        s.close()


def test_undo_log_pages_newest_first_across_segments(path):
    s = FileStorage2(path, create=True, sync=False, rotate_size=256 << 10)
    try:
        tids = _bulk(s, 3000)
        assert len(s._native.segments()) > 3
        log = s.undoLog(0, -10_000)
        assert [d['description'] for d in log] == [b'txn %d' % i for i in reversed(range(3000))]
        assert [d['user_name'] for d in log[:2]] == [b'u2999', b'u2998']
        assert log[0]['size'] == 3 * (200 + 4)
        # Pages agree with the whole log; a page near the top is cheap.
        assert s.undoLog(100, 150) == log[100:150]
        assert s.undoLog(0, 20, lambda d: d['user_name'].endswith(b'7')) == [
            d for d in log if d['user_name'].endswith(b'7')][:20]
        import base64
        assert log[-1]['id'] == base64.encodebytes(tids[0]).rstrip()
    finally:
        s.close()


def test_len_stays_exact_through_commits_deletions_rotations_and_packs(path):
    s = FileStorage2(path, create=True, rotate_size=64 << 10)
    db = ZODB.DB(s)
    try:
        c = db.open()
        root = c.root()
        root['m'] = PersistentMapping({i: PersistentMapping(v=i) for i in range(300)})
        transaction.commit()
        assert len(s) == 302 == s._native.count_objects()
        for step in range(5):
            m = root['m']
            for i in range(step * 40, step * 40 + 40):
                del m[i]
            m[1000 + step] = PersistentMapping()
            transaction.commit()
            if step == 2:
                db.pack(time.time() + 1)   # a merge: the next count walks afresh
            full = sum(1 for _ in iter_live(s))
            assert len(s) == full, step
    finally:
        db.close()


def iter_live(s):
    nxt = None
    while True:
        try:
            oid, _tid, _data, nxt = s.record_iternext(nxt)
        except ValueError:
            return
        yield oid
        if nxt is None:
            return
