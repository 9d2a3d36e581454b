"""Issue 15: the Rust collector (``fs2 gc``, ``pack``'s GC) and zc.zodbdgc find the same
garbage on the same ZODB database (a FileStorage2 written through ``ZODB.DB``)."""

import shutil
import time

import pytest
import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.serialize import referencesf
from ZODB.utils import p64
from ZODB.utils import u64

from filestorage2 import FileStorage2

zodbdgc = pytest.importorskip('zc.zodbdgc')

CONF = """%%import filestorage2
<zodb>
  <filestorage2>
    path %s
  </filestorage2>
</zodb>
"""


def build(path):
    """A database with reachable trees and mappings, and garbage: unlinked subtrees
    (some referencing each other and reachable objects), and objects only weakly
    referenced."""
    from persistent.wref import WeakRef
    db = ZODB.DB(FileStorage2(path, create=True))
    try:
        c = db.open()
        root = c.root()
        root['tree'] = OOBTree()
        for i in range(2000):
            root['tree'][i] = PersistentMapping(v=i)
        root['maps'] = PersistentMapping({i: PersistentMapping(v=i) for i in range(300)})
        transaction.commit()
        cycle_a, cycle_b = PersistentMapping(), PersistentMapping()
        cycle_a['b'], cycle_b['a'] = cycle_b, cycle_a
        cycle_a['live'] = root['maps'][1]
        root['doomed'] = PersistentMapping({'a': cycle_a, 'list': [PersistentMapping() for _ in range(50)]})
        root['target'] = PersistentMapping()
        transaction.commit()
        root['weak'] = WeakRef(root['target'])
        del root['target'], root['doomed']
        for i in range(0, 300, 3):
            del root['maps'][i]
        for i in range(0, 2000, 7):
            del root['tree'][i]
        transaction.commit()
    finally:
        db.close()


def test_zodbdgc_and_the_rust_collector_find_the_same_garbage(tmp_path):
    a, b = str(tmp_path / 'a.fs2'), str(tmp_path / 'b.fs2')
    build(a)
    # zc.zodbdgc counts what any old revision of a live object references as live: it
    # expects a database packed without GC first (as its README says). Pack away the
    # history (pack without GC = merge), then copy.
    s = FileStorage2(a)
    try:
        s.pack(time.time() + 1, referencesf, gc=False)
    finally:
        s.close()
    shutil.copytree(a, b)
    s = FileStorage2(a)
    try:
        last = s.lastTransaction()
        rust = sorted(u64(o) for o in s._native.gc_garbage(last))
    finally:
        s.close()
    assert len(rust) > 100
    conf = str(tmp_path / 'b.conf')
    with open(conf, 'w') as f:
        f.write(CONF % b)
    # days=0 and ptid after the last transaction: no recent records kept alive (its
    # default ptid, now in whole seconds, would ignore this second's transactions).
    # zc.zodbdgc deletes what it found.
    bad = zodbdgc.gc(conf, days=0, ptid=p64(u64(last) + 1), return_bad=True)
    assert sorted(oid for _name, oid in bad) == rust
    s = FileStorage2(b)
    try:
        # Deleted through our IExternalGC path; nothing left to collect.
        assert s._native.gc_garbage(s.lastTransaction()) == []
        assert all(s._native.current_tid(p64(o)) is not None for o in rust)
        assert len(s) == s._native.count_objects()
    finally:
        s.close()
