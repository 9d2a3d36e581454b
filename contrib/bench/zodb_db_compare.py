#!/usr/bin/env python3
"""Side by side as ZODB users see it: ZODB's FileStorage, filestorage2's FileStorage2 and
(where PostgreSQL is installed) RelStorage, all driven the same way from Python through
``ZODB.DB`` and the ``transaction`` package (two-phase commit on every side).

    ./run-tests -k nothing        # once: creates .venv with ZODB, ZEO, RelStorage; builds filestorage2
    .venv/bin/pip install psycopg2-binary zc.zodbdgc     # for the RelStorage and zc.zodbdgc rows
    .venv/bin/python contrib/bench/zodb_db_compare.py [--objects N] [--reps R] [--big]

Rows (each figure the median of R runs, the sides alternating in one run):
  commits/s with 1 committer and with 8 threads (10 small objects per transaction);
  fsyncs per commit (counted with strace in a separate, untimed run);
  commits/s of 8 ZEO client processes against a real ``runzeo`` over each storage;
  a cold object load through a ``Connection`` (fresh DB and cache, page cache warm);
  opening a DB of N objects: FileStorage with and without its ``.index``, FileStorage2
  with the objects in its active segment (its index rebuilt by a scan at open: our
  equivalent of a lost ``.index``) and sealed (the index is in the file);
  ``zodbconvert`` of an N-object ``Data.fs`` into each storage;
  pack with GC and without GC (N objects written twice, half unreachable);
  garbage collection of a packed database: ``fs2 gc`` against zc.zodbdgc on the same
  FileStorage2 database (time and peak RSS of each process).
``--big`` adds the open and zodbconvert rows at 1M objects. The engine's own ceiling (the
Rust API, no Python) is ``contrib/bench/zodb_compare.py``.
"""

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import transaction
import ZODB
import ZODB.FileStorage
from persistent.mapping import PersistentMapping

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.path.dirname(sys.executable)
PG_BIN = '/usr/lib/postgresql/15/bin'

FS, FS2, RS = 'FileStorage', 'FileStorage2', 'RelStorage'


# ---------------------------------------------------------------------------------------
# Storages


class Postgres:
    """A throwaway PostgreSQL cluster on a Unix socket (as user postgres when run as root)."""

    def __init__(self, work):
        self.dir = tempfile.mkdtemp(dir=work, prefix='pg-')
        self.data = os.path.join(self.dir, 'data')
        self.port = free_port()
        self.proc = None

    def _run(self, *cmd, **kw):
        if os.geteuid() == 0:
            cmd = ('runuser', '-u', 'postgres', '--') + cmd
        return subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)

    def start(self):
        if os.geteuid() == 0:
            shutil.chown(self.dir, 'postgres')
        self._run(os.path.join(PG_BIN, 'initdb'), '-D', self.data, '-A', 'trust', '-U', 'postgres')
        self._run(os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data, '-w', '-l', os.path.join(self.dir, 'log'),
                  '-o', '-k %s -p %d -c listen_addresses=\'\' -c max_connections=50' % (self.dir, self.port),
                  'start')
        self._run(os.path.join(PG_BIN, 'createdb'), '-h', self.dir, '-p', str(self.port), '-U', 'postgres', 'zodb')
        return self

    def stop(self):
        try:
            self._run(os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data, '-m', 'immediate', '-w', 'stop')
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def config(self):
        return ("%%import relstorage\n<relstorage>\n  <postgresql>\n"
                "    dsn dbname='zodb' host='%s' port=%d user='postgres'\n  </postgresql>\n</relstorage>\n"
                % (self.dir, self.port))


PG = None   # the running cluster, if any


def storage_config(side, d):
    """The ZConfig storage section of ``side`` in directory ``d``."""
    if side == FS:
        return '<filestorage>\n  path %s\n</filestorage>\n' % os.path.join(d, 'Data.fs')
    if side == FS2:
        return ('%%import filestorage2\n<filestorage2>\n  path %s\n  create true\n</filestorage2>\n'
                % os.path.join(d, 'data.fs2'))
    return PG.config()


def open_storage(side, d, **kw):
    if side == FS:
        return ZODB.FileStorage.FileStorage(os.path.join(d, 'Data.fs'), **kw)
    if side == FS2:
        from filestorage2 import FileStorage2
        return FileStorage2(os.path.join(d, 'data.fs2'), create=True, **kw)
    from ZODB.config import storageFromString
    return storageFromString(PG.config())


def fresh(side, d):
    """A new, empty storage of ``side`` (RelStorage: the tables emptied)."""
    if side == RS:
        s = open_storage(side, d)
        s.zap_all()
        s.close()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# Workloads


def commits(side, d, threads, n):
    """Durable commits/s: each thread rewrites 10 of its own 100 objects per commit."""
    fresh(side, d)
    db = ZODB.DB(open_storage(side, d), pool_size=threads + 1)
    try:
        return commit_threads(db, threads, n)
    finally:
        db.close()


def setup_objects(db, keys):
    tm = transaction.TransactionManager()
    c = db.open(tm)
    for t in keys:
        c.root()[t] = PersistentMapping({i: PersistentMapping(v=0) for i in range(100)})
    tm.commit()
    c.close()


def commit_loop(db, key, per, wait=None):
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    objs = conn.root()[key]
    if wait:
        wait()
    for k in range(per):
        for i in range(10):
            objs[(k * 10 + i) % 100]['v'] = k
        tm.commit()
    conn.close()


def commit_threads(db, threads, n):
    setup_objects(db, range(threads))
    per = n // threads
    barrier = threading.Barrier(threads + 1)
    ts = [threading.Thread(target=commit_loop, args=(db, t, per, barrier.wait)) for t in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return per * threads / (time.perf_counter() - t0)


def fsyncs_per_commit(side, d, threads, n):
    """fsync + fdatasync calls of the whole process per commit (strace -f -c), for the
    commits workload run in a child process (untimed; strace slows it)."""
    out = os.path.join(d, 'strace.txt')
    subprocess.run(['strace', '-f', '-c', '-e', 'trace=fsync,fdatasync', '-o', out, sys.executable, __file__,
                    '--worker', 'commits', side, d, str(threads), str(n)],
                   check=True, stdout=subprocess.DEVNULL)
    calls = 0
    with open(out) as f:
        for line in f:
            m = re.match(r'\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)\s*$', line)
            if m:
                calls += int(m.group(1))
    # The setup commit and the storage's open/close syncs are included: say so.
    return calls / (n // threads * threads)


def zeo_commits(side, d, clients, n):
    """Commits/s of ``clients`` ZEO client processes against one runzeo over ``side``."""
    conf = os.path.join(d, 'zeo.conf')
    port = free_port()
    with open(conf, 'w') as f:
        f.write('<zeo>\n  address 127.0.0.1:%d\n</zeo>\n' % port + storage_config(side, d))
    server = subprocess.Popen([os.path.join(BIN, 'runzeo'), '-C', conf],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = []
    try:
        from ZEO.ClientStorage import ClientStorage
        db = None
        for _ in range(200):
            try:
                db = ZODB.DB(ClientStorage(('127.0.0.1', port), wait_timeout=1))
                break
            except Exception:
                time.sleep(0.05)
        setup_objects(db, range(clients))
        db.close()
        go = os.path.join(d, 'go')
        per = n // clients
        procs = [subprocess.Popen([sys.executable, __file__, '--zeo-client', str(port), str(k), str(per), go],
                                  stdout=subprocess.PIPE, text=True) for k in range(clients)]
        for p in procs:
            assert p.stdout.readline().strip() == 'ready'
        open(go, 'w').close()
        spans = [tuple(map(float, p.stdout.readline().split())) for p in procs]
        for p in procs:
            p.wait(timeout=300)
        return per * clients / (max(e for _, e in spans) - min(s for s, _ in spans))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def zeo_client(port, key, per, go):
    from ZEO.ClientStorage import ClientStorage
    db = ZODB.DB(ClientStorage(('127.0.0.1', int(port)), wait_timeout=30))
    print('ready', flush=True)

    def wait():
        while not os.path.exists(go):
            time.sleep(0.001)
    t = [0.0]

    def start():
        wait()
        t[0] = time.time()
    commit_loop(db, int(key), int(per), start)
    print(t[0], time.time(), flush=True)
    db.close()


def populate(side, d, n, sync=True):
    """N small objects under the root in PersistentMappings of 1000: their oids."""
    kw = {'sync': sync} if side == FS2 and not sync else {}
    db = ZODB.DB(open_storage(side, d, **kw))
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
    if side == FS2 and not sync:
        db.storage.sync()
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


def open_ms(side, d):
    """Milliseconds for ZODB.DB(storage) in a fresh process (page cache warm)."""
    out = subprocess.run([sys.executable, __file__, '--worker', 'open', side, d],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return float(out.split()[-1])


def open_worker(side, d):
    import filestorage2  # noqa: F401  (imported untimed, as ZODB.FileStorage is)
    t0 = time.perf_counter()
    db = ZODB.DB(open_storage(side, d))
    dt = time.perf_counter() - t0
    db.close()
    print(dt * 1e3)


def convert_s(side, d, src):
    """Seconds of zodbconvert from the Data.fs ``src`` into a new ``side`` storage."""
    fresh(side, d)
    dst = storage_config(side, d)
    imports = ''.join(line + '\n' for line in dst.splitlines() if line.startswith('%import'))
    body = ''.join(line + '\n' for line in dst.splitlines() if not line.startswith('%import'))
    for tag in ('filestorage', 'filestorage2', 'relstorage'):
        body = body.replace('<%s>' % tag, '<%s destination>' % tag)
    conf = os.path.join(d, 'convert.conf')
    with open(conf, 'w') as f:
        f.write(imports + '<filestorage source>\n  path %s\n  read-only true\n</filestorage>\n' % src + body)
    t0 = time.perf_counter()
    subprocess.run([os.path.join(BIN, 'zodbconvert'), conf], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def pack_s(side, d, n, gc):
    """Seconds for db.pack() (with or without GC): N objects written twice, half unlinked."""
    populate(side, d, n)
    kw = {'pack_gc': gc}
    db = ZODB.DB(open_storage(side, d, **kw))
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
    assert (n_after < n) == gc, (side, gc, n_after, n)
    return dt


def peak_run(cmd):
    """(seconds, peak RSS MiB) of a command in a fresh child process."""
    code = ('import resource, subprocess, sys, time; t = time.perf_counter(); '
            'subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); '
            'print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)')
    out = subprocess.run([sys.executable, '-c', code] + cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    s, m = out.split()
    return float(s), float(m)


def gc_rows(work, n, reps, fs2):
    """fs2 gc and zc.zodbdgc on copies of one packed FileStorage2 database with garbage:
    {(tool, 'time'|'rss'): [values]} and the number of objects each deleted."""
    base = tempfile.mkdtemp(dir=work)
    try:
        populate(FS2, base, n)
        db = ZODB.DB(open_storage(FS2, base))
        c = db.open()
        root = c.root()
        for start in list(root.keys())[::2]:
            del root[start]          # half the buckets and their objects: garbage
        transaction.commit()
        # zc.zodbdgc needs the history packed away first (it keeps what any old revision
        # of a live object references): pack without GC, for both tools.
        db.storage.pack(time.time() + 1, None, gc=False)
        last = db.storage.lastTransaction()
        db.close()
        src = os.path.join(base, 'data.fs2')
        conf = os.path.join(base, 'gc.conf')
        with open(conf, 'w') as f:
            f.write('<zodb>\n%s</zodb>\n' % storage_config(FS2, os.path.join(base, 'copy')))
        from ZODB.utils import p64, u64
        ptid = p64(u64(last) + 1).hex()
        dgc = ('import sys, time, zc.zodbdgc; time.sleep = lambda s: None; '
               'zc.zodbdgc.gc(sys.argv[1], days=0, ptid=bytes.fromhex(sys.argv[2]))')
        out = {}
        for _ in range(reps):
            for tool, cmd in (('fs2 gc', [fs2, 'gc', os.path.join(base, 'copy', 'data.fs2')]),
                              ('zc.zodbdgc', [sys.executable, '-c', dgc, conf, ptid])):
                shutil.rmtree(os.path.join(base, 'copy'), ignore_errors=True)
                shutil.copytree(src, os.path.join(base, 'copy', 'data.fs2'))
                subprocess.run(['sync'])
                s, m = peak_run(cmd)
                out.setdefault((tool, 'time'), []).append(s)
                out.setdefault((tool, 'rss'), []).append(m)
                from filestorage2 import FileStorage2
                st = FileStorage2(os.path.join(base, 'copy', 'data.fs2'))
                out[(tool, 'left')] = len(st)
                st.close()
        return out
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--objects', type=int, default=100_000, help='objects of the load/open/convert/pack/gc rows')
    p.add_argument('--commits', type=int, default=400)
    p.add_argument('--loads', type=int, default=20_000)
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--big', action='store_true', help='add the open and zodbconvert rows at 1M objects')
    p.add_argument('--no-relstorage', action='store_true')
    p.add_argument('--only', default='', help='comma-separated row groups: commits,fsync,zeo,load,open,convert,pack,gc')
    p.add_argument('--work', default=os.path.join(HERE, '.work-db'))
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    only = set(a.only.split(',')) - {''}
    want = lambda g: not only or g in only  # noqa: E731
    global PG
    sides = [FS, FS2]
    if not a.no_relstorage and os.path.exists(os.path.join(PG_BIN, 'initdb')):
        try:
            import psycopg2  # noqa: F401
            import relstorage  # noqa: F401
            PG = Postgres(a.work).start()
            sides.append(RS)
        except Exception as e:  # noqa: BLE001
            print('zodb_db_compare: no RelStorage rows (%s)' % e, file=sys.stderr)
            PG = None
    results = {}
    started = time.time()

    def run(row, fn, *args, sides=sides, reps=a.reps):
        print('zodb_db_compare: %s' % row, file=sys.stderr)
        for _ in range(reps):
            for side in sides:
                d = tempfile.mkdtemp(dir=a.work)
                try:
                    subprocess.run(['sync'])
                    results.setdefault((row, side), []).append(fn(side, d, *args))
                finally:
                    shutil.rmtree(d, ignore_errors=True)
    try:
        if want('commits'):
            run('commits/s, 1 committer, 10 objects/txn', commits, 1, a.commits)
            run('commits/s, 8 threads, 10 objects/txn', commits, 8, a.commits * 2)
        if want('fsync') and not shutil.which('strace'):
            print('zodb_db_compare: no fsync rows (strace is not installed: apt-get install strace)',
                  file=sys.stderr)
        elif want('fsync'):
            run('fsyncs per commit, 1 committer (strace)', fsyncs_per_commit, 1, 200, sides=[FS, FS2], reps=1)
            run('fsyncs per commit, 8 threads (strace)', fsyncs_per_commit, 8, 400, sides=[FS, FS2], reps=1)
        if want('zeo'):
            run('commits/s, 8 ZEO client processes, 10 objects/txn', zeo_commits, 8, a.commits * 2,
                sides=[FS, FS2])
        if want('load'):
            def loads(side, d):
                fresh(side, d)
                return cold_loads(side, d, populate(side, d, a.objects), a.loads)
            run('cold load through a Connection, µs', loads)
        sizes = [a.objects] + ([1_000_000] if a.big and a.objects != 1_000_000 else [])
        if want('open'):
            for n in sizes:
                open_rows(a.work, n, results, a.reps)
        if want('convert'):
            for n in sizes:
                src_dir = tempfile.mkdtemp(dir=a.work)
                try:
                    populate(FS, src_dir, n)
                    src = os.path.join(src_dir, 'Data.fs')
                    big = n >= 1_000_000
                    run('zodbconvert of a %s-object Data.fs, s' % f_count(n), convert_s, src,
                        reps=1 if big else a.reps, sides=[FS, FS2] if big else sides)
                finally:
                    shutil.rmtree(src_dir, ignore_errors=True)
        if want('pack'):
            run('pack with GC, %s objects (half garbage), s' % f_count(a.objects), pack_s, a.objects, True,
                sides=[FS, FS2])
            run('pack without GC, %s objects written twice, s' % f_count(a.objects), pack_s, a.objects, False,
                sides=[FS, FS2])
        gc = None
        if want('gc'):
            try:
                import zc.zodbdgc  # noqa: F401
                fs2 = os.path.join(os.environ.get('CARGO_TARGET_DIR') or os.path.join(REPO, 'target'),
                                   'release', 'fs2')
                subprocess.run(['cargo', 'build', '--release', '--quiet', '--bin', 'fs2'], cwd=REPO, check=True)
                print('zodb_db_compare: gc', file=sys.stderr)
                gc = gc_rows(a.work, a.objects, a.reps, fs2)
            except ImportError:
                print('zodb_db_compare: no gc rows (pip install zc.zodbdgc)', file=sys.stderr)
    finally:
        if PG:
            PG.stop()
    print_table(results, sides, gc, a, time.time() - started)


def open_rows(work, n, results, reps):
    """Open a DB of n objects, each side written once: FileStorage with and without its
    .index (removed before each open; every open's close writes it again); FileStorage2
    with the objects in its active segment (the index rebuilt by a scan), then sealed."""
    row = 'open a DB of %s objects, ms' % f_count(n)
    with_, without = row + ' (FileStorage with .index; FileStorage2 sealed)', \
        row + ' (FileStorage without .index; FileStorage2 active segment: index rebuilt by a scan)'
    print('zodb_db_compare: %s' % row, file=sys.stderr)
    dz, do = tempfile.mkdtemp(dir=work), tempfile.mkdtemp(dir=work)
    try:
        populate(FS, dz, n)
        populate(FS2, do, n, sync=False)
        for _ in range(reps):
            subprocess.run(['sync'])
            results.setdefault((without, FS2), []).append(open_ms(FS2, do))
            os.remove(os.path.join(dz, 'Data.fs.index'))
            subprocess.run(['sync'])
            results.setdefault((without, FS), []).append(open_ms(FS, dz))
        from filestorage2 import FileStorage2
        s = FileStorage2(os.path.join(do, 'data.fs2'))
        s._native.rotate()
        s.close()
        for _ in range(reps):
            subprocess.run(['sync'])
            results.setdefault((with_, FS), []).append(open_ms(FS, dz))
            results.setdefault((with_, FS2), []).append(open_ms(FS2, do))
    finally:
        shutil.rmtree(dz, ignore_errors=True)
        shutil.rmtree(do, ignore_errors=True)


def f_count(n):
    return '1M' if n == 1_000_000 else ('%dk' % (n // 1000) if n % 1000 == 0 else str(n))


def print_table(results, sides, gc, a, secs):
    import platform
    rs = RS in sides
    head = '| workload (through ZODB.DB) | FileStorage | FileStorage2 | FileStorage2 vs FileStorage (>1 = better) |'
    if rs:
        head += ' RelStorage (PostgreSQL 15) | FileStorage2 vs RelStorage |'
    print()
    print('- %s; %s cores; Python %s; load average at end %s; %.1f min; medians of %d'
          % (platform.node(), os.cpu_count(), platform.python_version(),
             ' '.join('%.2f' % x for x in os.getloadavg()), secs / 60, a.reps))
    print()
    print(head)
    print('|---|---|---|---|' + ('---|---|' if rs else ''))
    for row in dict.fromkeys(r for r, _ in results):
        higher = row.startswith('commits')
        vals = {s: statistics.median(results[(row, s)]) for s in sides if (row, s) in results}
        z, o = vals.get(FS), vals.get(FS2)
        ratio = lambda x, y: (y / x if higher else x / y) if x and y else float('nan')  # noqa: E731
        line = '| %s | %.4g | %.4g | %.2f× |' % (row, z, o, ratio(z, o))
        if rs:
            r = vals.get(RS)
            line += (' %.4g | %.2f× |' % (r, ratio(r, o))) if r is not None else ' – | – |'
        print(line)
    if gc:
        print()
        print('| GC of a packed FileStorage2 database, %s objects, half garbage | fs2 gc | zc.zodbdgc | fs2 gc vs zc.zodbdgc |'
              % f_count(a.objects))
        print('|---|---|---|---|')
        t1, t2 = statistics.median(gc[('fs2 gc', 'time')]), statistics.median(gc[('zc.zodbdgc', 'time')])
        m1, m2 = max(gc[('fs2 gc', 'rss')]), max(gc[('zc.zodbdgc', 'rss')])
        print('| time, s | %.3g | %.3g | %.1f× |' % (t1, t2, t2 / t1))
        print('| peak RSS of the process, MiB | %.1f | %.1f | %.1f× |' % (m1, m2, m2 / m1))
        print('| objects left | %d | %d | |' % (gc[('fs2 gc', 'left')], gc[('zc.zodbdgc', 'left')]))


if __name__ == '__main__':
    if sys.argv[1:2] == ['--worker']:
        what, side, d = sys.argv[2:5]
        if what == 'commits':
            commits(side, d, int(sys.argv[5]), int(sys.argv[6]))
        elif what == 'open':
            open_worker(side, d)
    elif sys.argv[1:2] == ['--zeo-client']:
        zeo_client(*sys.argv[2:6])
    else:
        main()
