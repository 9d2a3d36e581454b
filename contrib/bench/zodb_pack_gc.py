"""ZODB's side of the `fs2 gc` measurement: the same synthetic database as
tests/zodb_gc_scale.rs (same records, same random 64-bit oids, 10% garbage) written to a
FileStorage through its storage API, then `FileStorage.pack(t, referencesf)` timed in a
fresh process with its peak RSS.

usage: python zodb_pack_gc.py [N] [DIR]     (N default 1000000; needs ZODB)
"""
import os
import resource
import subprocess
import sys
import time

M64 = (1 << 64) - 1


def rng():
    x = 0x9E3779B97F4A7C15
    while True:
        x ^= x >> 12
        x ^= (x << 25) & M64
        x ^= x >> 27
        yield ((x * 0x2545F4914F6CDD1D) & M64) | 1


def rec(refs):
    d = bytearray(b"\x80\x03cm\nC\nq\x00.\x80\x03]q\x01(")
    for o in refs:
        d += b"C\x08" + o.to_bytes(8, "big") + b"h\x00\x86Q"
    d += b"e."
    return bytes(d)


def build(n, path):
    import transaction  # noqa: F401
    from ZODB.FileStorage import FileStorage
    from ZODB.Connection import TransactionMetaData

    r = rng()
    live = n - n // 10
    oids = [0] + [next(r) for _ in range(1, n)]
    fs = FileStorage(path, create=True)
    t = None
    for i in range(n):
        if i < live:
            refs = [oids[c] for c in range(i * 64 + 1, min(i * 64 + 65, live))]
        else:
            nxt = oids[i + 1] if i + 1 < n else oids[live]
            refs = [oids[next(r) % live], nxt]
        if t is None:
            t = TransactionMetaData()
            fs.tpc_begin(t)
        fs.store(oids[i].to_bytes(8, "big"), b"\0" * 8, rec(refs), "", t)
        if i % 10000 == 9999 or i == n - 1:
            fs.tpc_vote(t)
            fs.tpc_finish(t)
            t = None
    fs.close()


def pack(path):
    from ZODB.FileStorage import FileStorage
    from ZODB.serialize import referencesf

    fs = FileStorage(path)
    before = len(fs)
    t0 = time.time()
    fs.pack(time.time(), referencesf)
    secs = time.time() - t0
    after = len(fs)
    fs.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("ZODB FileStorage.pack(t, referencesf): %d -> %d objects, %.2f s, peak RSS %.1f MiB" % (before, after, secs, rss))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pack"]:
        pack(sys.argv[2])
        sys.exit(0)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    d = sys.argv[2] if len(sys.argv) > 2 else "."
    path = os.path.join(d, "gc-%d.fs" % n)
    t0 = time.time()
    build(n, path)
    print("built %d objects in %.1f s" % (n, time.time() - t0))
    subprocess.run([sys.executable, __file__, "--pack", path], check=True)
    for suffix in ("", ".index", ".lock", ".tmp", ".old"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
