"""The garbage-collection walk of ``FileStorage2.pack``, in two phases so that commits
wait only for the second, short one.

1. ``mark(native, referencesf, at)``, without the commit lock: what is reachable from
   the root (oid 0) in the snapshot ``at``. The Rust collector (``fs2 gc``'s scan and
   mark, ``src/zodb/gc.rs``) does it with the GIL released and bounded memory, and
   returns the *unreachable* oids (:class:`Unreachable`). If it refuses (a reachable
   record is not a ZODB pickle its reader understands, or there is no root object), the
   walk is done here with ``referencesf`` (:class:`Reachable`, the set of marked oids).
2. ``sweep(native, referencesf, found, at)``, while commits go on: an object
   unreachable at ``at`` can only have become reachable through a reference written
   after ``at``, so the references of every record written since are marked too (and
   walked in the current state). The live objects left unmarked are the garbage.

References of single records are read by the Rust reader (``_native.references``: the
strong references, as ``ZODB.serialize.referencesf`` returns them), with
``referencesf`` for a record it does not read.
"""

from ZODB.utils import p64
from ZODB.utils import u64
from ZODB.utils import z64

from . import _native

_CHUNK = 4096


def _refs(referencesf, data):
    refs = _native.references(data)
    return referencesf(data) if refs is None else refs


class Reachable:
    """Phase 1 in Python: the set of oids reachable at the snapshot."""

    def __init__(self, marked):
        self.marked = marked

    def unmarked(self, oid):
        return oid not in self.marked

    def mark(self, oid):
        self.marked.add(oid)

    def garbage(self, native):
        garbage = []
        start = z64
        while True:
            items = native.list(start, _CHUNK)
            garbage.extend(oid for oid, _tid in items if oid not in self.marked)
            if len(items) < _CHUNK:
                return garbage
            start = p64(u64(items[-1][0]) + 1)


class Unreachable:
    """Phase 1 in Rust: the set of oids unreachable at the snapshot (usually few)."""

    def __init__(self, garbage):
        self.candidates = set(garbage)

    def unmarked(self, oid):
        return oid in self.candidates

    def mark(self, oid):
        self.candidates.discard(oid)

    def garbage(self, native):
        # Still live now (a client may have deleted one meanwhile), in oid order.
        return sorted(oid for oid in self.candidates if native.load(oid) is not None)


def _walk(load, referencesf, found, stack):
    while stack:
        r = load(stack.pop())
        if r is None:
            continue
        for ref in _refs(referencesf, r[0]):
            if found.unmarked(ref):
                found.mark(ref)
                stack.append(ref)


def mark(native, referencesf, at):
    """What is reachable from the root as of tid ``at`` (see the module docs)."""
    try:
        return Unreachable(native.gc_garbage(at))
    except _native.InvalidError:
        pass
    found = Reachable({z64})
    _walk(lambda oid: native.load(oid, at), referencesf, found, [z64])
    return found


def sweep(native, referencesf, found, at):
    """Oids of the live objects (now) that nothing reachable references, in oid order.
    ``found`` is ``mark(..., at)`` and is extended; commits after the sweep are checked
    with ``revived`` once the deleting transaction holds the commit order."""
    stack = []
    for _tid, _u, _d, _e, records in native.transactions(p64(u64(at) + 1)):
        for _oid, data in records:
            if data is not None:
                for ref in _refs(referencesf, data):
                    if found.unmarked(ref):
                        found.mark(ref)
                        stack.append(ref)
    _walk(native.load, referencesf, found, stack)
    return found.garbage(native)


def revived(native, referencesf, found, at, garbage):
    """Whether a transaction committed after ``at`` refers to one of ``garbage`` (a
    client that still held it made it reachable again); marks what it refers to."""
    garbage = set(garbage)
    hit = False
    for _tid, _u, _d, _e, records in native.transactions(p64(u64(at) + 1)):
        for oid, data in records:
            if oid in garbage:
                hit = True
            if data is not None:
                for ref in _refs(referencesf, data):
                    if ref in garbage:
                        hit = True
                    if found.unmarked(ref):
                        found.mark(ref)
    return hit
