"""The garbage-collection walk of ``FileStorage2.pack``."""

from ZODB.utils import p64
from ZODB.utils import u64
from ZODB.utils import z64

_CHUNK = 4096


def unreachable(native, referencesf):
    """Oids of the live objects not reachable from the root (oid 0), in oid order.

    Walks the current state (the caller holds the commit lock) with an explicit stack;
    memory is one set entry per reachable oid, and object data is dropped as soon as its
    references are read.
    """
    marked = {z64}
    stack = [z64]
    while stack:
        r = native.load(stack.pop())
        if r is None:
            continue
        for ref in referencesf(r[0]):
            if ref not in marked:
                marked.add(ref)
                stack.append(ref)
    garbage = []
    start = z64
    while True:
        items = native.list(start, _CHUNK)
        garbage.extend(oid for oid, _tid in items if oid not in marked)
        if len(items) < _CHUNK:
            return garbage
        start = p64(u64(items[-1][0]) + 1)
