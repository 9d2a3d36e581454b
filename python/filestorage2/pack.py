"""The garbage-collection walk of ``FileStorage2.pack``, in two phases so that commits
wait only for the second, short one.

1. ``mark(native, referencesf, at)``, without the commit lock: everything reachable from
   the root (oid 0) in the snapshot ``at``.
2. ``sweep(native, referencesf, marked, at)``, with the commit lock held: an object
   unreachable at ``at`` can only have become reachable through a reference written
   after ``at``, so the references of every record written since are marked too (and
   walked in the current state). The live objects left unmarked are the garbage.

Memory is one set entry per reachable oid; object data is dropped as soon as its
references are read.
"""

from ZODB.utils import p64
from ZODB.utils import u64
from ZODB.utils import z64

_CHUNK = 4096


def _walk(load, referencesf, marked, stack):
    while stack:
        r = load(stack.pop())
        if r is None:
            continue
        for ref in referencesf(r[0]):
            if ref not in marked:
                marked.add(ref)
                stack.append(ref)


def mark(native, referencesf, at):
    """Oids reachable from the root as of tid ``at``."""
    marked = {z64}
    _walk(lambda oid: native.load(oid, at), referencesf, marked, [z64])
    return marked


def sweep(native, referencesf, marked, at):
    """Oids of the live objects (now) that nothing reachable references, in oid order.
    The caller holds the commit lock; ``marked`` is ``mark(..., at)`` and is extended."""
    stack = []
    for _tid, _u, _d, _e, records in native.transactions(p64(u64(at) + 1)):
        for _oid, data in records:
            if data is not None:
                for ref in referencesf(data):
                    if ref not in marked:
                        marked.add(ref)
                        stack.append(ref)
    _walk(native.load, referencesf, marked, stack)
    garbage = []
    start = z64
    while True:
        items = native.list(start, _CHUNK)
        garbage.extend(oid for oid, _tid in items if oid not in marked)
        if len(items) < _CHUNK:
            return garbage
        start = p64(u64(items[-1][0]) + 1)
