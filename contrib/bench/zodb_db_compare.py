#!/usr/bin/env python3
"""Side by side as ZODB users see it: ZODB's FileStorage and filestorage2's FileStorage2,
both driven the same way from Python through ``ZODB.DB`` and the ``transaction`` package
(two-phase commit on both sides).

    ./run-tests -k nothing        # once: creates .venv with ZODB and builds filestorage2
    .venv/bin/python contrib/bench/zodb_db_compare.py [--objects N] [--reps R]

Rows: durable commits per second (10 small objects per transaction) with 1 committer
and with 8 threads; a cold object load through a ``Connection`` (fresh DB and cache,
OS page cache warm); opening a DB of N objects (FileStorage with its ``.index``);
pack with GC of N objects written twice, half of them unreachable. Each figure is the
median of R runs, the two sides alternating in one process. The engine's own ceiling
(the Rust API, no Python) is ``contrib/bench/zodb_compare.py``.
"""

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time

import transaction
import ZODB
import ZODB.FileStorage
from persistent.mapping import PersistentMapping

from filestorage2 import FileStorage2

SIDES = ('FileStorage', 'FileStorage2')


def open_storage(side, d, create=False):
    if side == 'FileStorage':
        return ZODB.FileStorage.FileStorage(os.path.join(d, 'Data.fs'))
    return FileStorage2(os.path.join(d, 'data.fs2'), create=True)


def commits(side, d, threads, n):
    """Durable commits/s: each thread rewrites 10 of its own 100 objects per commit."""
    db = ZODB.DB(open_storage(side, d))
    tm = transaction.TransactionManager()
    c = db.open(tm)
    for t in range(threads):
        c.root()[t] = PersistentMapping({i: PersistentMapping(v=0) for i in range(100)})
    tm.commit()
    c.close()
    per = n // threads
    barrier = threading.Barrier(threads + 1)

    def worker(t):
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        objs = conn.root()[t]
        barrier.wait()
        for k in range(per):
            for i in range(10):
                objs[(k * 10 + i) % 100]['v'] = k
            tm.commit()
        conn.close()
    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    db.close()
    return per * threads / dt


def populate(side, d, n):
    """N small objects under the root in a flat PersistentMapping of buckets."""
    db = ZODB.DB(open_storage(side, d))
    tm = transaction.TransactionManager()
    c = db.open(tm)
    root = c.root()
    oids = []
    for start in range(0, n, 1000):
        objs = [PersistentMapping(v=i) for i in range(start, min(n, start + 1000))]
        root[start] = PersistentMapping({i: o for i, o in enumerate(objs)})
        tm.commit()
        oids.extend(o._p_oid for o in objs)
        c.cacheMinimize()
    db.close()
    return oids


def cold_loads(side, d, oids, k):
    """Microseconds per object load through a fresh Connection (unghostify)."""
    db = ZODB.DB(open_storage(side, d))
    c = db.open()
    sample = random.Random(7).sample(oids, k)
    t0 = time.perf_counter()
    for oid in sample:
        c.get(oid)['v']
    dt = time.perf_counter() - t0
    db.close()
    return dt / k * 1e6


def open_time(side, d):
    t0 = time.perf_counter()
    db = ZODB.DB(open_storage(side, d))
    dt = time.perf_counter() - t0
    db.close()
    return dt * 1e3


def pack_gc(side, d, n):
    """Seconds for db.pack() with GC: N objects written twice, half unlinked."""
    oids = populate(side, d, n)
    db = ZODB.DB(open_storage(side, d))
    tm = transaction.TransactionManager()
    c = db.open(tm)
    root = c.root()
    for start in list(root.keys()):
        bucket = root[start]
        for i in list(bucket.keys()):
            if i % 2:
                del bucket[i]
            else:
                bucket[i]['v'] = -1
        tm.commit()
        c.cacheMinimize()
    c.close()
    t0 = time.perf_counter()
    db.pack(time.time() + 1)
    dt = time.perf_counter() - t0
    n_after = len(db.storage)
    db.close()
    assert n_after < len(oids), (side, n_after)
    return dt


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--objects', type=int, default=100_000)
    p.add_argument('--commits', type=int, default=400)
    p.add_argument('--loads', type=int, default=20_000)
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--work', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '.work-db'))
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    results = {}

    def run(row, fn, *args):
        for _ in range(a.reps):
            for side in SIDES:
                d = tempfile.mkdtemp(dir=a.work)
                try:
                    results.setdefault((row, side), []).append(fn(side, d, *args))
                finally:
                    shutil.rmtree(d, ignore_errors=True)

    run('commits/s, 1 committer, 10 objects/txn', commits, 1, a.commits)
    run('commits/s, 8 threads, 10 objects/txn', commits, 8, a.commits * 2)

    def loads_and_open(side, d):
        oids = populate(side, d, a.objects)
        return cold_loads(side, d, oids, a.loads), open_time(side, d)
    for _ in range(a.reps):
        for side in SIDES:
            d = tempfile.mkdtemp(dir=a.work)
            try:
                us, ms = loads_and_open(side, d)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            results.setdefault(('cold load through a Connection, µs', side), []).append(us)
            results.setdefault(('open a DB of %d objects, ms' % a.objects, side), []).append(ms)
    run('pack with GC of %d objects (half garbage), s' % a.objects, pack_gc, a.objects)

    rows = []
    for row in dict.fromkeys(r for r, _ in results):
        z = statistics.median(results[(row, 'FileStorage')])
        o = statistics.median(results[(row, 'FileStorage2')])
        better = o / z if row.startswith('commits') else z / o
        rows.append((row, z, o, better))
    print('| workload (through ZODB.DB) | FileStorage | FileStorage2 | FileStorage2 vs FileStorage (>1 = better) |')
    print('|---|---|---|---|')
    for row, z, o, r in rows:
        print('| %s | %.4g | %.4g | %.2f× |' % (row, z, o, r))


if __name__ == '__main__':
    main()
