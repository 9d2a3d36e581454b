#!/usr/bin/env python3
"""Side by side: ZODB's FileStorage and filestorage2, same machine, same run, same bytes.

    python3 contrib/bench/zodb_compare.py [--quick] [--reps R] [--objects N] ...

Creates contrib/bench/.venv with ZODB from PyPI if missing (and re-runs itself in it),
builds `fs2` with `cargo build --release`, writes real ZODB pickles (a tree of
PersistentMapping objects that reference their children, serialized by ZODB's
ObjectWriter) to payload files that both sides read, then runs each workload R times,
alternating ZODB (through its storage API: tpc_begin/store/tpc_vote/tpc_finish, load,
loadBefore, pack) and ours (`fs2 bench-peer`, through the Rust API), each run in a fresh
process. Prints one table of medians with ratios and the machine limits measured in the
same run, and saves it under contrib/bench/results/.

The ZODB half of every workload is in this file (`--zodb-worker`); ours is
src/bench/peer.rs.
"""

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VENV = os.path.join(HERE, ".venv")
PAYLOAD_MAGIC = b"FS2PAYL1"
WARMUP_COMMITS = 20
README_BEGIN = "<!-- zodb-compare:begin -->"
README_END = "<!-- zodb-compare:end -->"


# ---------------------------------------------------------------------------------------
# Environment: the virtual environment with ZODB, and our binary.


def ensure_venv():
    """Re-run this script inside contrib/bench/.venv (created with ZODB if missing)."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        print(f"zodb_compare: creating {VENV} with ZODB from PyPI", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "ZODB"], check=True)
    os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


def build_fs2():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    print("zodb_compare: cargo build --release", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    return os.path.join(target, "release", "fs2")


# ---------------------------------------------------------------------------------------
# Payloads: real ZODB pickles, the same bytes for both storages.


def tree_pickles(oids, rev, size):
    """Yield (oid, pickle) for a binary tree of PersistentMapping objects: object i
    references objects 2i+1 and 2i+2 (so oids[0] is the root and everything is reachable
    for ZODB's pack). The pickles are ZODB's ObjectWriter output; for speed each of the
    three shapes (0, 1, 2 children) is serialized once with marker oids, and the oids
    are substituted in the bytes (checked against ObjectWriter on a sample)."""
    from persistent.mapping import PersistentMapping
    from ZODB.serialize import ObjectWriter
    from ZODB.utils import p64

    class Jar:  # what ObjectWriter asks of a connection, for objects that have oids
        xrefs = True
        databases = {}

        def db(self):
            return self

        def new_oid(self):
            raise AssertionError("every object has an oid")

        def register(self, obj):
            pass

    jar = Jar()

    def obj(oid, state=None):
        o = PersistentMapping(state or {})
        o._p_oid, o._p_jar = p64(oid), jar
        return o

    writer = ObjectWriter(obj(0))

    def serialize(oid, kids, value):
        state = {"value": value}
        for name, k in zip(("left", "right"), kids):
            state[name] = obj(k)
        return writer.serialize(obj(oid, state))

    n = len(oids)
    markers = [0xA1A1A1A1A1A1A1A1, 0xA2A2A2A2A2A2A2A2, 0xA3A3A3A3A3A3A3A3]
    templates = {}
    for nkids in (0, 1, 2):
        bare = len(serialize(markers[0], markers[1:1 + nkids], b""))
        value = (b"r%d:" % rev + b"x" * size)[:max(0, size - bare)]
        t = serialize(markers[0], markers[1:1 + nkids], value)
        offsets = [t.index(p64(m)) for m in markers[1:1 + nkids]]  # (the own oid is not in the pickle)
        templates[nkids] = (bytearray(t), offsets, value)
    check_every = max(1, n // 50)
    for i, oid in enumerate(oids):
        kids = [oids[c] for c in (2 * i + 1, 2 * i + 2) if c < n]
        t, offsets, value = templates[len(kids)]
        for off, o in zip(offsets, kids):
            t[off:off + 8] = p64(o)
        data = bytes(t)
        if i % check_every == 0:
            assert data == serialize(oid, kids, value), "template pickle differs from ObjectWriter"
        yield oid, data


def oid_list(n, kind, seed):
    if kind == "dense":
        return list(range(n))
    rng = random.Random(seed)
    seen = {0}
    oids = [0]  # the root keeps oid 0, as in ZODB
    while len(oids) < n:
        o = rng.getrandbits(64)
        if o not in seen:
            seen.add(o)
            oids.append(o)
    return oids


def write_payload(path, oids, rev, size):
    if os.path.exists(path):
        return
    t = time.time()
    with open(path + ".tmp", "wb") as f:
        f.write(PAYLOAD_MAGIC + struct.pack("<Q", len(oids)))
        for oid, data in tree_pickles(oids, rev, size):
            f.write(struct.pack(">Q", oid) + struct.pack("<I", len(data)))
            f.write(data)
    os.rename(path + ".tmp", path)
    log(f"payload {os.path.basename(path)}: {len(oids):,} pickles in {time.time() - t:.1f} s")


def read_payload(path, limit=None):
    """[(oid bytes, data)] of the first `limit` records."""
    from ZODB.utils import p64

    with open(path, "rb") as f:
        buf = f.read()
    assert buf[:8] == PAYLOAD_MAGIC, path
    (count,) = struct.unpack_from("<Q", buf, 8)
    n = count if limit is None else min(limit, count)
    out, pos = [], 16
    for _ in range(n):
        (oid,) = struct.unpack_from(">Q", buf, pos)
        (length,) = struct.unpack_from("<I", buf, pos + 8)
        out.append((p64(oid), buf[pos + 12:pos + 12 + length]))
        pos += 12 + length
    return out


def payload_stats(path):
    recs = read_payload(path)
    return len(recs), sum(len(d) for _, d in recs) / max(1, len(recs))


def write_sample(path, oids, k, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(b"".join(struct.pack("<Q", oids[rng.randrange(len(oids))]) for _ in range(k)))


def read_sample(path):
    from ZODB.utils import p64

    with open(path, "rb") as f:
        b = f.read()
    return [p64(o) for (o,) in struct.iter_unpack("<Q", b)]


# ---------------------------------------------------------------------------------------
# The ZODB side: one workload per fresh process, JSON on stdout (as `fs2 bench-peer`).


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pct(sorted_ns, p):
    """Nearest-rank percentile (as src/bench/report.rs)."""
    if not sorted_ns:
        return 0
    rank = int(-(-(p / 100.0) * len(sorted_ns) // 1))
    return sorted_ns[min(max(rank, 1), len(sorted_ns)) - 1]


def latency(prefix, lat):
    lat = sorted(lat)
    return {prefix + "p50_ns": pct(lat, 50), prefix + "p99_ns": pct(lat, 99)}


def zodb_path(d):
    return os.path.join(d, "Data.fs")


def zodb_commit(st, recs, serials):
    """One transaction through the storage API; `serials` tracks each oid's last tid."""
    from ZODB.Connection import TransactionMetaData
    from ZODB.utils import z64

    t = TransactionMetaData()
    st.tpc_begin(t)
    for oid, data in recs:
        st.store(oid, serials.get(oid, z64), data, "", t)
    st.tpc_vote(t)
    tid = st.tpc_finish(t)
    for oid, _ in recs:
        serials[oid] = tid
    return tid


def zodb_worker(a):
    from ZODB.FileStorage import FileStorage
    from ZODB.serialize import referencesf

    w = a.zodb_worker
    os.makedirs(a.dir, exist_ok=True)
    path = zodb_path(a.dir)
    out = {}
    if w == "commit":
        ws = max(a.working_set, a.txn_objects)
        recs = read_payload(a.payload, ws * a.writers)
        st = FileStorage(path, create=True)
        per_writer = max(1, a.commits // a.writers)
        start = threading.Barrier(a.writers + 1)
        results = [None] * a.writers

        def writer(wi):
            mine, serials, lat = recs[wi * ws:(wi + 1) * ws], {}, []

            def txn(k):
                return [mine[(k * a.txn_objects + j) % ws] for j in range(a.txn_objects)]

            for k in range(WARMUP_COMMITS):
                zodb_commit(st, txn(k), serials)
            start.wait()
            for k in range(WARMUP_COMMITS, WARMUP_COMMITS + per_writer):
                t = time.perf_counter_ns()
                zodb_commit(st, txn(k), serials)
                lat.append(time.perf_counter_ns() - t)
            results[wi] = lat

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(a.writers)]
        for th in threads:
            th.start()
        start.wait()
        t = time.perf_counter()
        for th in threads:
            th.join()
        secs = time.perf_counter() - t
        st.close()
        lat = [x for r in results for x in r]
        out = {"commits": len(lat), "seconds": secs, "tx_per_s": len(lat) / secs, **latency("", lat)}
    elif w in ("bulk", "build2"):
        payloads = [read_payload(a.payload)] + ([read_payload(a.payload2)] if w == "build2" else [])
        # As ours (sync: false, one sync at the end): FileStorage's per-transaction fsync
        # off (its module-level `fsync`), then one fsync of each file after close.
        import ZODB.FileStorage.FileStorage as fs_module
        fs_module.fsync = None
        t = time.perf_counter()
        st = FileStorage(path, create=True)
        serials = {}
        for recs in payloads:
            for i in range(0, len(recs), a.txn_objects):
                zodb_commit(st, recs[i:i + a.txn_objects], serials)
        st.close()  # writes the .index file
        for f in (path, path + ".index"):
            fd = os.open(f, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        secs = time.perf_counter() - t
        n = len(payloads[0])
        out = {"objects": n, "seconds": secs, "obj_per_s": n / secs, "bytes": os.path.getsize(path)}
    elif w in ("loads", "old"):
        sample = read_sample(a.sample)
        st = FileStorage(path)
        old = w == "old"
        tids = []
        for oid in sample:  # warm; for `old`, each oid's current tid
            _, tid = st.load(oid)
            if old:
                assert st.loadBefore(oid, tid) is not None
            tids.append(tid)
        load, load_before = st.load, st.loadBefore
        clock = time.perf_counter_ns
        lat = []
        if old:
            for oid, tid in zip(sample, tids):
                t = clock()
                load_before(oid, tid)
                lat.append(clock() - t)
        else:
            for oid in sample:
                t = clock()
                load(oid)
                lat.append(clock() - t)
        t = time.perf_counter()
        if old:
            for oid, tid in zip(sample, tids):
                load_before(oid, tid)
        else:
            for oid in sample:
                load(oid)
        mean = (time.perf_counter() - t) * 1e9 / max(1, len(sample))
        st.close()
        out = {"loads": len(sample), "mean_ns": mean, **latency("", lat)}
    elif w == "open":
        if a.no_index and os.path.exists(path + ".index"):
            os.remove(path + ".index")
        before = status_kib("VmRSS")
        t = time.perf_counter()
        st = FileStorage(path)
        open_ns = (time.perf_counter() - t) * 1e9
        rss = status_kib("VmRSS")
        anon = status_kib("RssAnon")
        st.close()  # (re)writes the .index, for the next open with it
        out = {"open_ns": open_ns, "rss_kib": rss, "rss_before_kib": before, "anon_kib": anon}
    elif w == "merge":
        before = status_kib("VmRSS")
        st = FileStorage(path, pack_gc=not a.no_gc)
        size_in = os.path.getsize(path)
        reset_hwm()
        stop, peak = threading.Event(), [0]

        def sample():  # the heap's (RssAnon) peak, sampled as ours does
            while True:
                last = stop.is_set()
                peak[0] = max(peak[0], status_kib("RssAnon"))
                if last:
                    return
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        t = time.perf_counter()
        st.pack(time.time(), referencesf)
        secs = time.perf_counter() - t
        stop.set()
        sampler.join()
        out = {"seconds": secs, "hwm_kib": status_kib("VmHWM"), "rss_before_kib": before, "anon_peak_kib": peak[0],
               "bytes_in": size_in, "bytes_out": os.path.getsize(path)}
        st.close()
    elif w == "merge-writer":
        ws = max(a.working_set, a.txn_objects)
        recs = read_payload(a.payload, ws)
        st = FileStorage(path)
        serials = {oid: st.load(oid)[1] for oid, _ in recs}
        period = 1.0 / max(a.rate, 1e-3)
        state = {"k": 0, "next": time.perf_counter()}

        def write(lat, more):
            while more():
                now = time.perf_counter()
                if state["next"] > now:
                    time.sleep(state["next"] - now)
                state["next"] = max(time.perf_counter(), state["next"]) + period
                k = state["k"]
                t = time.perf_counter_ns()
                zodb_commit(st, [recs[(k * a.txn_objects + j) % ws] for j in range(a.txn_objects)], serials)
                lat.append(time.perf_counter_ns() - t)
                state["k"] = k + 1

        def counter(n):
            left = [n]

            def more():
                left[0] -= 1
                return left[0] >= 0
            return more

        idle, during = [], []
        write([], counter(WARMUP_COMMITS))
        write(idle, counter(a.commits))
        packed = {}

        def pack():
            t0 = time.perf_counter()
            st.pack(time.time(), referencesf)
            packed["seconds"] = time.perf_counter() - t0

        th = threading.Thread(target=pack)
        t = time.perf_counter()
        th.start()
        write(during, lambda: th.is_alive() and time.perf_counter() - t < a.cap)
        finished = not th.is_alive()
        th.join()
        total = time.perf_counter() - t
        write(idle, counter(a.commits))
        st.close()
        out = {"merge_seconds": packed.get("seconds", float("nan")), "finished_under_writer": int(finished),
               "seconds_to_finish": total, "commits_during": len(during),
               **latency("idle_", idle), **latency("during_", during)}
    else:
        raise SystemExit(f"unknown workload {w}")
    print(json.dumps(out))


def reset_hwm():
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak is the work's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# ---------------------------------------------------------------------------------------
# The harness.


def log(msg):
    print(f"zodb_compare: {msg}", file=sys.stderr, flush=True)


class Runner:
    def __init__(self, args, fs2, work):
        self.a, self.fs2, self.work = args, fs2, work

    def run(self, side, workload, d, **kw):
        """One workload in a fresh process; its JSON result."""
        flags = ["--dir", d]
        for k, v in kw.items():
            if v is True:
                flags.append("--" + k.replace("_", "-"))
            elif v is not None and v is not False:
                flags += ["--" + k.replace("_", "-"), str(v)]
        if side == "zodb":
            cmd = [sys.executable, os.path.abspath(__file__), "--zodb-worker", workload] + flags
        else:
            flags = [f for f in flags if f not in ("--no-index", "--no-gc")]
            cmd = [self.fs2, "bench-peer", workload] + flags
        # Untimed: write back the dirty pages the previous run left (e.g. ZODB's .index at
        # close), so that this run's fsyncs do not wait for the other side's writeback.
        os.sync()
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise SystemExit(f"zodb_compare: failed ({r.returncode}): {' '.join(cmd)}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def alternate(self, name, reps, zodb, ours):
        """Run `zodb(rep)` and `ours(rep)` `reps` times, alternating which goes first;
        lists of their results."""
        zs, os_ = [], []
        for r in range(reps):
            order = [("zodb", zodb, zs), ("ours", ours, os_)]
            for side, f, acc in order if r % 2 == 0 else reversed(order):
                acc.append(f(r))
                log(f"{name} rep {r + 1}/{reps} {side}: {short(acc[-1])}")
        return zs, os_


def short(d):
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def med(results, key):
    vals = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")


def fsync_limit(work, n):
    """Append 100 B + fdatasync, n times on a fresh file: per-op latencies (ns)."""
    path = os.path.join(work, "fsync-limit.dat")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    buf = b"\xa5" * 100
    lat = []
    try:
        for _ in range(n):
            t = time.perf_counter_ns()
            os.write(fd, buf)
            os.fdatasync(fd)
            lat.append(time.perf_counter_ns() - t)
    finally:
        os.close(fd)
        os.remove(path)
    return sorted(lat)


def seq_write(work, nbytes):
    """Sequential write of nbytes in 1 MiB writes + one fdatasync: bytes/s."""
    path = os.path.join(work, "seq-write.dat")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    chunk = b"\x5a" * (1 << 20)
    t = time.perf_counter()
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, chunk[:min(left, len(chunk))])
        os.fdatasync(fd)
        return nbytes / (time.perf_counter() - t)
    finally:
        os.close(fd)
        os.remove(path)


def copy_tree(src, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def fresh(d):
    if os.path.exists(d):
        shutil.rmtree(d)
    return d


# Formatting.

def f_rate(x):
    return f"{x:,.0f}/s"


def f_ns(x):
    if x != x:
        return "-"
    if x < 1e3:
        return f"{x:.0f} ns"
    if x < 1e6:
        return f"{x / 1e3:.2f} µs"
    if x < 1e9:
        return f"{x / 1e6:.1f} ms"
    return f"{x / 1e9:.2f} s"


def f_kib(k):
    return f"{k / 1024:,.1f} MiB"


def f_mibs(bps):
    return f"{bps / (1 << 20):,.0f} MiB/s"


def f_count(n):
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if n >= div and n % div == 0:
            return f"{n / div:.0f}{unit}"
    return f"{n:,}"


def ratio(zodb, ours, higher_is_better):
    if not (zodb == zodb and ours == ours) or zodb <= 0 or ours <= 0:
        return "-"
    r = ours / zodb if higher_is_better else zodb / ours
    return f"{r:,.1f}×" if r >= 10 else f"{r:.2f}×"


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep] + [line(r).rstrip() for r in rows])


def machine_description(work):
    def read(p):
        try:
            with open(p) as f:
                return f.read()
        except OSError:
            return ""
    cpu = next((l.split(":", 1)[1].strip() for l in read("/proc/cpuinfo").splitlines()
                if l.startswith("model name")), "cpu unknown")
    mem = next((int(l.split()[1]) for l in read("/proc/meminfo").splitlines() if l.startswith("MemTotal:")), 0)
    fs = "?"
    best = ""
    real = os.path.realpath(work)
    for l in read("/proc/self/mountinfo").splitlines():
        parts = l.split()
        mnt = parts[4]
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best = mnt
            dash = parts.index("-")
            fs = f"{parts[dash + 1]} on {parts[dash + 2]} (mounted at {mnt})"
    try:
        rustc = subprocess.run(["rustc", "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    except OSError:
        rustc = "rustc ?"
    from importlib.metadata import version
    return [
        f"host {platform.node()}: {os.cpu_count()} cores ({cpu}), {mem / 1024 / 1024:.1f} GiB RAM, "
        f"kernel {platform.release()}",
        f"storages on {fs}",
        f"Python {platform.python_version()}, ZODB {version('ZODB')}, zodbpickle {version('zodbpickle')}; {rustc}",
        f"load average at start: {' '.join(read('/proc/loadavg').split()[:3])}",
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes, 1 rep (a smoke test of the harness, about a minute)")
    p.add_argument("--full", action="store_true", help="also open 10M objects (workload 6; slow: builds 10M in ZODB)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each workload per side (medians)")
    p.add_argument("--objects", type=int, default=1_000_000, help="objects for bulk load, loads, open (3, 4, 6)")
    p.add_argument("--random-objects", type=int, default=None, help="objects with random oids (8); default --objects")
    p.add_argument("--open-large", type=int, default=10_000_000, help="the larger open size with --full (6)")
    p.add_argument("--pack-objects", type=int, default=250_000,
                   help="objects written twice for loadBefore and pack/merge (5, 7)")
    p.add_argument("--commits", type=int, default=1000, help="timed durable commits per run (1, 2)")
    p.add_argument("--writers", type=int, default=8, help="writer threads (2)")
    p.add_argument("--loads", type=int, default=100_000, help="timed loads per run (4, 5)")
    p.add_argument("--size", type=int, default=100, help="target pickle size in bytes (refs make some larger)")
    p.add_argument("--writer-rate", type=float, default=100.0, help="commits/s of the writer during pack/merge (7)")
    p.add_argument("--pack-cap", type=float, default=60.0,
                   help="seconds the writer keeps writing while a pack/merge runs (7)")
    p.add_argument("--only", default="1,2,3,4,5,6,7,8", help="workloads to run, e.g. 1,4")
    p.add_argument("--work", default=os.path.join(HERE, ".work"),
                   help="where storages and payloads go (a real disk, not tmpfs)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--no-save", action="store_true", help="do not write contrib/bench/results/")
    p.add_argument("--update-readme", action="store_true", help="put the table in README.md (between markers)")
    # The worker half (internal).
    p.add_argument("--zodb-worker", help=argparse.SUPPRESS)
    for flag, typ, default in (("--dir", str, None), ("--payload", str, None), ("--payload2", str, None),
                               ("--sample", str, None), ("--txn-objects", int, 10), ("--working-set", int, 1000),
                               ("--rate", float, 100.0), ("--cap", float, 60.0)):
        p.add_argument(flag, type=typ, default=default, help=argparse.SUPPRESS)
    p.add_argument("--no-index", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-gc", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.zodb_worker:
        return zodb_worker(a)
    if a.quick:  # smaller defaults; flags given explicitly still win
        quick = {"reps": 1, "objects": 100_000, "pack_objects": 50_000, "commits": 300, "loads": 20_000,
                 "pack_cap": 20.0}
        for k, v in quick.items():
            if getattr(a, k) == p.get_default(k):
                setattr(a, k, v)
    a.random_objects = a.random_objects or a.objects
    compare(a)


def compare(a):
    only = {int(x) for x in a.only.split(",") if x.strip()}
    fs2 = build_fs2()
    work = a.work
    os.makedirs(work, exist_ok=True)
    machine = machine_description(work)
    run = Runner(a, fs2, work)
    started = time.time()
    rows, notes = Rows(), []
    reps = a.reps
    pay = lambda name: os.path.join(work, name + ".payload")
    dense = pay(f"dense-{a.objects}")
    sample = os.path.join(work, "sample-dense")
    write_payload(dense, oid_list(a.objects, "dense", 1), 1, a.size)
    n_dense, mean_size = payload_stats(dense)
    write_sample(sample, list(range(a.objects)), a.loads, 42)
    notes.append(f"payloads: ZODB pickles of PersistentMapping tree nodes (each references its two children; "
                 f"ZODB.serialize.ObjectWriter), mean {mean_size:.0f} B (target --size {a.size}); the same bytes "
                 f"go into both storages")
    d = lambda side, name: os.path.join(work, side, name)

    # Machine limits, alternated with the durable workloads below.
    fs_lat, seq = [], []

    def limits(r):
        lat = fsync_limit(work, max(200, a.commits // 2))
        fs_lat.append((statistics.median(lat), len(lat) / (sum(lat) / 1e9)))
        seq.append(seq_write(work, 256 << 20))

    # 1, 2: durable commits.
    for wid, writers in ((1, 1), (2, a.writers)):
        if wid not in only:
            continue
        per = a.commits * (2 if writers > 1 else 1)
        z, o = run.alternate(f"{wid}: commits, {writers} writer(s)", reps,
                             lambda r: (limits(r), run.run("zodb", "commit", fresh(d("zodb", "commit")),
                                        payload=dense, writers=writers, commits=per))[1],
                             lambda r: run.run("ours", "commit", fresh(d("ours", "commit")), payload=dense,
                                               writers=writers, commits=per))
        zt, ot = med(z, "tx_per_s"), med(o, "tx_per_s")
        lim = f"fsync {f_rate(statistics.median(x[1] for x in fs_lat))} (p50 {f_ns(statistics.median(x[0] for x in fs_lat))})"
        rows.append([f"{wid}. durable commits, {writers} writer{'s' if writers > 1 else ''}, 10 × {mean_size:.0f} B, tx/s",
                     f_rate(zt), f_rate(ot), ratio(zt, ot, True), lim])
        rows.append([f"   commit latency p50 / p99", f"{f_ns(med(z, 'p50_ns'))} / {f_ns(med(z, 'p99_ns'))}",
                     f"{f_ns(med(o, 'p50_ns'))} / {f_ns(med(o, 'p99_ns'))}",
                     ratio(med(z, "p99_ns"), med(o, "p99_ns"), False) + " (p99)", ""])
    if {1, 2} & only:
        notes.append(f"1, 2: {a.commits} timed commits (2× that with {a.writers} writers) after {WARMUP_COMMITS} "
                     f"untimed per writer, on a fresh storage; each writer rewrites its own 1000 objects; ZODB: "
                     f"tpc_begin/store/tpc_vote/tpc_finish from Python threads (its commit lock serializes them, "
                     f"one fsync each); ours: Transaction::commit (group commit shares fsyncs)")

    # 3: bulk load (keeps the last build of each side for 4 and 6).
    if {3, 4, 6} & only:
        if 3 not in only:
            reps_b = 1
        else:
            reps_b = reps
        z, o = run.alternate(f"3: bulk load {f_count(a.objects)}", reps_b,
                             lambda r: (seq.append(seq_write(work, 256 << 20)) if 3 in only else None,
                                        run.run("zodb", "bulk", fresh(d("zodb", "bulk")), payload=dense,
                                                txn_objects=1000))[1],
                             lambda r: run.run("ours", "bulk", fresh(d("ours", "bulk")), payload=dense,
                                               txn_objects=1000))
        if 3 in only:
            zt, ot = med(z, "obj_per_s"), med(o, "obj_per_s")
            zb, ob = med(z, "bytes") / med(z, "seconds"), med(o, "bytes") / med(o, "seconds")
            rows.append([f"3. bulk load {f_count(a.objects)} objects, txns of 1000, obj/s",
                         f"{f_rate(zt)} ({f_mibs(zb)})", f"{f_rate(ot)} ({f_mibs(ob)})", ratio(zt, ot, True),
                         f"seq write {f_mibs(statistics.median(seq))}"])
            notes.append(f"3: from payload in memory to a durable, closed storage, neither side syncing per "
                         f"transaction: ZODB with FileStorage's per-transaction fsync switched off (its module's "
                         f"`fsync = None`), its .index written at close, then one fsync of each file; ours "
                         f"commits with sync: false, one sync and a rotation (seal) at the end; file sizes ZODB "
                         f"{med(z, 'bytes') / 2**20:.0f} MiB, ours {med(o, 'bytes') / 2**20:.0f} MiB")

    # 4: random current loads.
    if 4 in only:
        z, o = run.alternate("4: random loads", reps,
                             lambda r: run.run("zodb", "loads", d("zodb", "bulk"), sample=sample),
                             lambda r: run.run("ours", "loads", d("ours", "bulk"), sample=sample))
        rows.append([f"4. random current load, {f_count(a.objects)} objects, warm, p50",
                     f_ns(med(z, "p50_ns")), f_ns(med(o, "p50_ns")), ratio(med(z, "p50_ns"), med(o, "p50_ns"), False), "-"])
        rows.append(["   same, p99", f_ns(med(z, "p99_ns")), f_ns(med(o, "p99_ns")),
                     ratio(med(z, "p99_ns"), med(o, "p99_ns"), False), ""])
        notes.append(f"4: {a.loads:,} random oids (the same for both), a warm pass over them, then each load "
                     f"timed (ZODB: FileStorage.load from Python, perf_counter_ns; ours: Storage::load, Instant); "
                     f"mean of an untimed pass: ZODB {f_ns(med(z, 'mean_ns'))}, ours {f_ns(med(o, 'mean_ns'))}")

    # 6: open time and RSS.
    if 6 in only:
        sizes = [(a.objects, d("zodb", "bulk"), d("ours", "bulk"))]
        if a.full:
            big = pay(f"dense-{a.open_large}")
            write_payload(big, oid_list(a.open_large, "dense", 1), 1, a.size)
            log(f"6: building {f_count(a.open_large)} objects on each side (untimed)")
            run.run("zodb", "bulk", fresh(d("zodb", "open-large")), payload=big, txn_objects=1000)
            run.run("ours", "bulk", fresh(d("ours", "open-large")), payload=big, txn_objects=1000)
            os.remove(big)
            sizes.append((a.open_large, d("zodb", "open-large"), d("ours", "open-large")))
        for n, zd, od in sizes:
            rows += open_rows(run, reps, f"6. open {f_count(n)} dense objects", zd, od, both_index=True)
        notes.append("6, 8: open in a fresh process (page cache warm); RSS = VmRSS right after open, which for ZODB "
                     "includes the Python interpreter with ZODB imported (the `before open` figure: "
                     "subtract it for the memory the open itself added); `without .index`: ZODB rebuilds its "
                     "index by reading Data.fs at open, ours rebuilds lost indexes with `fs2 check --repair` "
                     "(their index headers damaged on a copy; the repair also verifies every checksum), and the "
                     "time is the repair plus the open")

    # 8: random 64-bit oids.
    if 8 in only:
        rnd = pay(f"random-{a.random_objects}")
        write_payload(rnd, oid_list(a.random_objects, "random", 7), 1, a.size)
        z, o = run.alternate(f"8: bulk load {f_count(a.random_objects)} random oids", 1,
                             lambda r: run.run("zodb", "bulk", fresh(d("zodb", "random")), payload=rnd, txn_objects=1000),
                             lambda r: run.run("ours", "bulk", fresh(d("ours", "random")), payload=rnd, txn_objects=1000))
        rows.append([f"8. bulk load {f_count(a.random_objects)} random 64-bit oids, obj/s", f_rate(med(z, "obj_per_s")),
                     f_rate(med(o, "obj_per_s")), ratio(med(z, "obj_per_s"), med(o, "obj_per_s"), True), ""])
        rows += open_rows(run, reps, f"8. open {f_count(a.random_objects)} random oids", d("zodb", "random"),
                          d("ours", "random"), both_index=False)

    # 5, 7: storages with every object written twice.
    if {5, 7} & only:
        m = a.pack_objects
        oids = oid_list(m, "dense", 1)
        p1, p2 = pay(f"pack-{m}-r1"), pay(f"pack-{m}-r2")
        write_payload(p1, oids, 1, a.size)
        write_payload(p2, oids, 2, a.size)
        psample = os.path.join(work, "sample-pack")
        write_sample(psample, oids, a.loads, 43)
        z, o = run.alternate(f"5/7: build {f_count(m)} objects written twice", 1,
                             lambda r: run.run("zodb", "build2", fresh(d("zodb", "twice")), payload=p1, payload2=p2,
                                               txn_objects=1000),
                             lambda r: run.run("ours", "build2", fresh(d("ours", "twice")), payload=p1, payload2=p2,
                                               txn_objects=1000))
        zbytes, obytes = z[0]["bytes"], o[0]["bytes"]
        if 5 in only:
            z, o = run.alternate("5: loadBefore", reps,
                                 lambda r: run.run("zodb", "old", d("zodb", "twice"), sample=psample),
                                 lambda r: run.run("ours", "old", d("ours", "twice"), sample=psample))
            rows.append([f"5. old revision (loadBefore), {f_count(m)} objects × 2 revisions, p50",
                         f_ns(med(z, "p50_ns")), f_ns(med(o, "p50_ns")),
                         ratio(med(z, "p50_ns"), med(o, "p50_ns"), False), "-"])
            rows.append(["   same, p99", f_ns(med(z, "p99_ns")), f_ns(med(o, "p99_ns")),
                         ratio(med(z, "p99_ns"), med(o, "p99_ns"), False), ""])
            notes.append(f"5: loadBefore(oid, current tid) = the previous revision, {a.loads:,} random oids, warm "
                         f"(the current tid comes from a load in the warm pass); ours: Storage::load_before (the "
                         f"as-of read load_at(oid, tid - 1) walks the same records); means: ZODB "
                         f"{f_ns(med(z, 'mean_ns'))}, ours {f_ns(med(o, 'mean_ns'))}")
        if 7 in only:
            rows += pack_rows(run, reps, a, d, m, p2, zbytes, obytes, notes)

    elapsed = time.time() - started
    header = ["workload", "ZODB FileStorage", "filestorage2", "ours vs ZODB (>1 = ours better)", "machine limit"]
    text = table(header, rows.ordered())
    cmd = "python3 contrib/bench/zodb_compare.py " + " ".join(sys.argv[1:])
    report = "\n".join(
        [f"# ZODB FileStorage vs filestorage2, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}", ""]
        + [f"- {m}" for m in machine]
        + [f"- the machine was shared: other builds and benchmarks ran at the same time, so single figures "
           f"are noisy; each figure is the median of {reps} run(s), ZODB and ours alternating, each run in a "
           f"fresh process after a `sync` (untimed)",
           f"- command: `{cmd.strip()}` ({elapsed / 60:.1f} min)", "", text, ""]
        + [f"- {n}" for n in sorted(notes, key=note_order)]) + "\n"
    print(report)
    if not a.no_save:
        res = os.path.join(HERE, "results")
        os.makedirs(res, exist_ok=True)
        name = f"{datetime.datetime.now().strftime('%Y-%m-%d-%H%M')}-{platform.node()}.txt"
        with open(os.path.join(res, name), "w") as f:
            f.write(report)
        log(f"saved contrib/bench/results/{name}")
    if a.update_readme:
        update_readme(report)
    if not a.keep:
        for side in ("zodb", "ours"):
            shutil.rmtree(os.path.join(work, side), ignore_errors=True)


def note_order(note):
    """Notes sorted by the workload number they start with (general ones first)."""
    digits = note[:len(note) - len(note.lstrip("0123456789"))]
    return int(digits) if digits else 0


class Rows(list):
    """Table rows; printed sorted by the workload number that starts each group."""

    def ordered(self):
        groups, key = [], 0
        for r in self:
            if r[0][:1].isdigit():
                key = int(r[0].split(".")[0])
            groups.append((key, len(groups), r))
        return [r for _, _, r in sorted(groups)]


def open_lost_index(run, od):
    """Ours without its index: a copy whose sealed segments' index records are damaged
    (index header overwritten), `fs2 check --repair` (rebuilds them from the data, and
    verifies every checksum), then the open; open_ns is the sum of both."""
    cd = od.rstrip("/") + "-noindex"
    copy_tree(od, cd)
    try:
        for name in os.listdir(cd):
            if not name.endswith(".fs2"):
                continue
            with open(os.path.join(cd, name), "r+b") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() < 4096 + 128:
                    continue
                f.seek(-128, os.SEEK_END)
                trailer = f.read(128)
                if trailer[:4] != b"fs2t":
                    continue  # the active segment
                f.seek(struct.unpack("<Q", trailer[8:16])[0])
                f.write(b"\xff" * 24)
        os.sync()
        t = time.perf_counter()
        subprocess.run([run.fs2, "check", "--repair", cd], check=True, stdout=subprocess.DEVNULL)
        repair_ns = (time.perf_counter() - t) * 1e9
        r = run.run("ours", "open", cd)
        r["open_ns"] += repair_ns
        return r
    finally:
        shutil.rmtree(cd, ignore_errors=True)


def open_rows(run, reps, what, zd, od, both_index):
    variants = [("with .index", False)] + ([("without .index", True)] if both_index else [])
    rows = []
    for label, no_index in variants:
        z, o = run.alternate(f"{what} (ZODB {label})", reps,
                             lambda r: run.run("zodb", "open", zd, no_index=no_index),
                             lambda r: run.run("ours", "open", od) if not no_index else open_lost_index(run, od))
        rows.append([f"{what}: open time (ZODB {label})", f_ns(med(z, "open_ns")), f_ns(med(o, "open_ns")),
                     ratio(med(z, "open_ns"), med(o, "open_ns"), False), "-"])
        rows.append([f"   RSS after open (before open: ZODB {f_kib(med(z, 'rss_before_kib'))}, "
                     f"ours {f_kib(med(o, 'rss_before_kib'))})", f_kib(med(z, "rss_kib")), f_kib(med(o, "rss_kib")),
                     ratio(med(z, "rss_kib"), med(o, "rss_kib"), False), ""])
    return rows


def pack_rows(run, reps, a, d, m, p2, zbytes, obytes, notes):
    rows = []
    cz, co = d("zodb", "pack"), d("ours", "pack")
    z, o = run.alternate(f"7: pack/merge {f_count(m)}", reps,
                         lambda r: (copy_tree(d("zodb", "twice"), cz), run.run("zodb", "merge", cz))[1],
                         lambda r: (copy_tree(d("ours", "twice"), co), run.run("ours", "merge", co))[1])
    rows.append([f"7. pack (ZODB) / merge all (ours), {f_count(m)} objects × 2 revisions, time",
                 f_ns(med(z, "seconds") * 1e9), f_ns(med(o, "seconds") * 1e9),
                 ratio(med(z, "seconds"), med(o, "seconds"), False), "-"])
    zn, on = run.alternate(f"7: pack without GC/merge {f_count(m)}", reps,
                           lambda r: (copy_tree(d("zodb", "twice"), cz), run.run("zodb", "merge", cz, no_gc=True))[1],
                           lambda r: (copy_tree(d("ours", "twice"), co), run.run("ours", "merge", co))[1])
    rows.append(["   same, ZODB's pack without GC (pack_gc=False), time", f_ns(med(zn, "seconds") * 1e9),
                 f_ns(med(on, "seconds") * 1e9), ratio(med(zn, "seconds"), med(on, "seconds"), False), "-"])
    rows.append(["   peak RSS of the process (VmHWM, includes mapped files)", f_kib(med(z, "hwm_kib")),
                 f_kib(med(o, "hwm_kib")), ratio(med(z, "hwm_kib"), med(o, "hwm_kib"), False), ""])
    rows.append(["   peak heap (RssAnon, sampled every 2 ms)", f_kib(med(z, "anon_peak_kib")),
                 f_kib(med(o, "anon_peak_kib")), ratio(med(z, "anon_peak_kib"), med(o, "anon_peak_kib"), False), ""])
    notes.append(f"7: input ZODB {zbytes / 2**20:.0f} MiB, ours {obytes / 2**20:.0f} MiB (every object written "
                 f"twice, 50% garbage); ZODB: FileStorage.pack(now, referencesf) (with its reachability GC from the "
                 f"root), ours: Storage::merge(Policy::All) of the past segments; fresh process, a fresh copy of the "
                 f"input each run; VmHWM reset after open (the Python interpreter's ~25 MiB is in ZODB's figures); "
                 f"the rest of our VmHWM beyond the heap is mapped input and work-table pages (page cache); "
                 f"output ZODB {med(z, 'bytes_out') / 2**20:.0f} MiB, ours {med(o, 'bytes_out') / 2**20:.0f} MiB")
    z, o = run.alternate(f"7: pack/merge under a writer", reps,
                         lambda r: (copy_tree(d("zodb", "twice"), cz),
                                    run.run("zodb", "merge-writer", cz, payload=p2, rate=a.writer_rate,
                                            cap=a.pack_cap, commits=200))[1],
                         lambda r: (copy_tree(d("ours", "twice"), co),
                                    run.run("ours", "merge-writer", co, payload=p2, rate=a.writer_rate,
                                            cap=a.pack_cap, commits=200))[1])
    for key, label in (("during_", "during the pack/merge"), ("idle_", "idle (same run)")):
        rows.append([f"   commit p50 / p99 {label}, writer at {a.writer_rate:.0f} tx/s",
                     f"{f_ns(med(z, key + 'p50_ns'))} / {f_ns(med(z, key + 'p99_ns'))}",
                     f"{f_ns(med(o, key + 'p50_ns'))} / {f_ns(med(o, key + 'p99_ns'))}",
                     ratio(med(z, key + "p99_ns"), med(o, key + "p99_ns"), False) + " (p99)", ""])
    fin = lambda rs: sum(int(r["finished_under_writer"]) for r in rs)
    rows.append([f"   pack/merge under that writer: finished within {a.pack_cap:.0f} s / time to finish",
                 f"{fin(z)}/{len(z)} / {f_ns(med(z, 'seconds_to_finish') * 1e9)}",
                 f"{fin(o)}/{len(o)} / {f_ns(med(o, 'seconds_to_finish') * 1e9)}",
                 ratio(med(z, "seconds_to_finish"), med(o, "seconds_to_finish"), False), ""])
    notes.append(f"7 under a writer: one durable writer at a steady {a.writer_rate:.0f} commits/s of 10 objects: "
                 f"{WARMUP_COMMITS} untimed, 200 idle, then during a background pack (ZODB: FileStorage.pack in a "
                 f"thread of the same process, as a ZEO server runs it) / merge (ours: start_merge), then 200 idle; "
                 f"the writer stops after {a.pack_cap:.0f} s if the pack/merge has not finished (it then finishes "
                 f"without the writer: `time to finish` includes that); commits during: ZODB "
                 f"{med(z, 'commits_during'):.0f}, ours {med(o, 'commits_during'):.0f} (with few commits, the p99 "
                 f"is the slowest one)")
    return rows


def update_readme(report):
    path = os.path.join(REPO, "README.md")
    with open(path) as f:
        text = f.read()
    if README_BEGIN not in text or README_END not in text:
        log("README.md has no zodb-compare markers; not updated")
        return
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    title, _, body = report.split("\n", 2)
    body = f"- run of {title.rsplit(', ', 1)[1]}\n" + body
    with open(path, "w") as f:
        f.write(head + README_BEGIN + "\n" + body + README_END + tail)
    log("updated README.md")


if __name__ == "__main__":
    ensure_venv()
    main()
