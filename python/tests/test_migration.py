"""Moving a real ``Data.fs`` into filestorage2 and back with ``zodbconvert`` (from the
``relstorage`` package: ZConfig + ``copyTransactionsFrom``): every transaction and data
record equal on all three storages, and ZODB's ``fstest`` passes on the result."""

import os
import subprocess
import sys
import time

import transaction
import ZODB
import ZODB.FileStorage
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.Connection import TransactionMetaData
from ZODB.serialize import referencesf

from filestorage2 import FileStorage2

TRANSACTIONS = 300


def make_data_fs(path):
    """A Data.fs with BTrees, PersistentMappings, several hundred transactions with
    user, description and extension, conflict-resolved commits, an undo (backpointers),
    an external-GC deletion and a pack (so part of the history is packed)."""
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    tm1, tm2 = transaction.TransactionManager(), transaction.TransactionManager()
    c1, c2 = db.open(tm1), db.open(tm2)
    root = c1.root()
    root['tree'] = OOBTree()
    root['count'] = Length()
    root['maps'] = PersistentMapping()
    root['gone'] = PersistentMapping(x=1)
    tm1.commit()
    packt = None
    for i in range(TRANSACTIONS):
        t = tm1.get()
        t.setUser('user%d' % (i % 5), '/site')
        t.note('transaction %d' % i)
        t.setExtendedInfo('n', i)
        if i % 3 == 0:
            t.setExtendedInfo('tags', ['a', i])
        root['tree'][i] = 'value %d' % i
        root['count'].change(1)
        if i % 10 == 0:
            root['maps'][i] = PersistentMapping(i=i, tree=OOBTree({i: i}))
        if i % 25 == 5:
            # Both connections change the same bucket and counter: BTrees and Length
            # resolve the conflict (tm2 commits second, against a stale serial).
            c2.sync() if hasattr(c2, 'sync') else None
            tm2.begin()
            c2.root()['tree'][-i] = 'other'
            c2.root()['count'].change(10)
            tm1.commit()
            tm2.get().note('resolved %d' % i)
            tm2.commit()
        else:
            tm1.commit()
        if i == TRANSACTIONS // 2:
            time.sleep(0.01)
            packt = time.time()
            time.sleep(0.01)
    # An undo (writes backpointers).
    undo_id = db.undoLog(0, 1)[0]['id']
    db.undo(undo_id)                 # joins the thread's default transaction
    transaction.get().note('undo')
    transaction.commit()
    tm1.begin()
    # An external garbage collector deletes an object nothing references any more.
    gone = root['gone']._p_oid
    del root['gone']
    tm1.commit()
    s = db.storage
    t = TransactionMetaData(b'gc', b'delete gone')
    s.tpc_begin(t)
    s.deleteObject(gone, s.getTid(gone), t)
    s.tpc_vote(t)
    s.tpc_finish(t)
    # Pack half of the history (without GC, so the deletion and the history after the
    # pack time stay).
    s.pack(packt, referencesf, gc=False)
    db.close()


def records(storage):
    """Every transaction (tid, user, description, extension) with its data records
    (oid, tid, data or None for a deletion), backpointers resolved; records of one
    transaction in oid order (FileStorage keeps store order, filestorage2 oid order)."""
    out = []
    it = storage.iterator()
    for t in it:
        recs = []
        for r in t:
            data = r.data
            if data is None and r.data_txn is not None:
                data = storage.loadSerial(r.oid, r.data_txn)
            recs.append((r.oid, r.tid, data))
        out.append((t.tid, t.user, t.description, t.extension_bytes, sorted(recs)))
    if hasattr(it, 'close'):
        it.close()
    return out


def zodbconvert(tmp_path, name, source, destination):
    conf = tmp_path / (name + '.conf')
    conf.write_text('%%import filestorage2\n%s\n%s\n' % (source, destination))
    exe = os.path.join(os.path.dirname(sys.executable), 'zodbconvert')
    r = subprocess.run([exe, str(conf)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def test_data_fs_to_filestorage2_and_back(tmp_path):
    src = str(tmp_path / 'Data.fs')
    mid = str(tmp_path / 'data.fs2')
    back = str(tmp_path / 'Back.fs')
    make_data_fs(src)
    zodbconvert(tmp_path, 'in',
                '<filestorage source>\n  path %s\n  read-only true\n</filestorage>' % src,
                '<filestorage2 destination>\n  path %s\n</filestorage2>' % mid)
    zodbconvert(tmp_path, 'out',
                '<filestorage2 source>\n  path %s\n  read-only true\n</filestorage2>' % mid,
                '<filestorage destination>\n  path %s\n</filestorage>' % back)

    stores = [ZODB.FileStorage.FileStorage(src, read_only=True),
              FileStorage2(mid, read_only=True),
              ZODB.FileStorage.FileStorage(back, read_only=True)]
    try:
        a, b, c = (records(s) for s in stores)
        assert len(a) > TRANSACTIONS // 2   # the pack dropped some emptied transactions
        assert any(data is None for t in a for _, _, data in t[4]), 'a deletion'
        assert any(t[2].startswith(b'resolved') for t in a), 'conflict-resolved commits'
        assert any(r.data_txn for t in stores[0].iterator() for r in t), 'backpointers'
        assert any(t.status == 'p' for t in stores[0].iterator()), 'packed history'
        assert a == b
        assert b == c
        assert stores[0].lastTransaction() == stores[1].lastTransaction() == stores[2].lastTransaction()
        # The object graph reads the same through ZODB.
        tm = transaction.TransactionManager()
        conns = [ZODB.DB(s).open(tm) for s in stores]
        roots = [c.root() for c in conns]
        assert len({tuple(r['tree'].items()) for r in roots}) == 1
        assert len({r['count']() for r in roots}) == 1
        tm.abort()
        for c in conns:
            c.close()
    finally:
        for s in stores:
            s.close()
    r = subprocess.run([sys.executable, '-m', 'ZODB.scripts.fstest', '-v', back],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
