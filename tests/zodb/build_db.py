"""Build a ZODB database with the real ZODB package and print what the Rust tests compare.

Used by tests/zodb.rs (interpreter: env FS2_PYTHON, default python3; ZODB 6.x, tested
with ZODB 6.4 / zodbpickle 4.5 / BTrees 6.5 / persistent 6.9).

usage: build_db.py WORKDIR

Output, one line each (hex oids are 16 lowercase hex digits):
  TXN                                  a transaction of the database begins
  REC <oid> <data hex> <module> <name> <refs>   a data record: get_pickle_metadata's
                                       module and name, referencesf's oids joined by
                                       commas ("-" for none); in transaction order
  EXTRA <data hex> <module> <name> <refs>       a record in the Python 2 (protocol 1/2)
                                       form, not stored: for the reader only
  GONE <oid>                           removed by FileStorage.pack(t, referencesf) on a copy
  KEPT <count>                         objects left after that pack
"""
import os
import shutil
import sys
import time
from io import BytesIO

import pickle
import transaction
import ZODB
import ZODB.serialize
from BTrees.IOBTree import IOBTree
from BTrees.OOBTree import OOBTree
from persistent import Persistent
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping
from persistent.wref import WeakRef
from ZODB.FileStorage import FileStorage
from ZODB.serialize import referencesf
from ZODB.utils import get_pickle_metadata


class Thing(Persistent):
    """Referenced as (oid, class)."""

    def __init__(self, n=0):
        self.n = n


class WithArgs(Persistent):
    """Has __getnewargs__: its class pickle is (class, args), references are plain oids."""

    def __init__(self, n=0):
        self.n = n

    def __getnewargs__(self):
        return (self.n,)


def hexoid(o):
    return o.hex()


def describe(data):
    m, n = get_pickle_metadata(data)
    refs = referencesf(data)
    return "%s %s %s" % (m or "?", n or "?", ",".join(hexoid(r) for r in refs) or "-")


def main(work):
    path = os.path.join(work, "Data.fs")
    other_path = os.path.join(work, "Other.fs")
    databases = {}
    db = ZODB.DB(FileStorage(path), databases=databases, database_name="main")
    other = ZODB.DB(FileStorage(other_path), databases=databases, database_name="other")
    conn = db.open()
    root = conn.root()
    oconn = conn.get_connection("other")
    oroot = oconn.root()

    root["map"] = PersistentMapping({"a": Thing(1), "b": PersistentMapping({"c": Thing(2)})})
    root["list"] = PersistentList([Thing(i) for i in range(5)] + [WithArgs(7)])
    tree = OOBTree()
    for i in range(3000):
        tree["key%05d" % i] = Thing(i) if i % 100 == 0 else i
    root["oobtree"] = tree
    itree = IOBTree()
    for i in range(5000):
        itree[i] = WithArgs(i) if i % 500 == 0 else "v%d" % i
    root["iobtree"] = itree
    doomed = PersistentMapping({"x": Thing(10), "y": PersistentList([Thing(11)])})
    root["doomed"] = doomed
    weak_target = Thing(99)
    root["holder"] = PersistentMapping({"strong": weak_target})
    oroot["far"] = Thing(1000)
    oroot["far_args"] = WithArgs(1001)
    transaction.commit()

    # Cross-database references ('m' and 'n'), weak references ('w', same and other db).
    root["cross"] = PersistentMapping({"m": oroot["far"], "n": oroot["far_args"]})
    root["weak"] = WeakRef(weak_target)
    root["weak_other"] = WeakRef(oroot["far"])
    transaction.commit()

    # Make garbage: drop the strong path to weak_target (only a weak ref remains), the
    # doomed subtree, and some BTree values.
    del root["holder"]
    del root["doomed"]
    for i in range(0, 3000, 200):
        tree["key%05d" % i] = -i
    transaction.commit()
    conn.close()
    db.close()
    other.close()

    # Every record of every transaction, oldest first.
    fs = FileStorage(path, read_only=True)
    for txn in fs.iterator():
        print("TXN")
        for rec in txn:
            if rec.data is None:
                continue
            print("REC %s %s %s" % (hexoid(rec.oid), rec.data.hex(), describe(rec.data)))
    before = set(fs._index.keys())
    fs.close()

    for data in python2_records():
        print("EXTRA %s %s" % (data.hex(), describe(data)))

    # ZODB's own pack GC on a copy.
    copy = os.path.join(work, "Copy.fs")
    shutil.copy(path, copy)
    fs = FileStorage(copy)
    time.sleep(0.01)
    fs.pack(time.time(), referencesf)
    after = set(fs._index.keys())
    fs.close()
    for oid in sorted(before - after):
        print("GONE %s" % hexoid(oid))
    print("KEPT %d" % len(after))


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's str (SHORT_BINSTRING/BINSTRING), as ZODB 3 did."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes_py2(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes_py2


def python2_records():
    """Records as Python 2 ZODB wrote them (protocols 1 and 2), through ObjectWriter's
    persistent_id."""
    out = []
    db = ZODB.DB(None)
    conn = db.open()
    root = conn.root()
    root["t"] = Thing(1)
    root["w"] = WithArgs(2)
    root["m"] = PersistentMapping()
    root["weak"] = WeakRef(root["t"])
    transaction.commit()
    for proto in (1, 2):
        for obj in (root, root["t"], root["m"]):
            writer = ZODB.serialize.ObjectWriter(obj)
            f = BytesIO()
            p = Py2Pickler(f, proto)
            p.persistent_id = writer.persistent_id
            klass = type(obj)
            p.dump((klass, None) if proto == 1 else klass)
            p.dump(obj.__getstate__())
            out.append(f.getvalue())
    db.close()
    return out


if __name__ == "__main__":
    main(sys.argv[1])
