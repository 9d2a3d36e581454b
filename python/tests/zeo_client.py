"""A ZEO client process for test_zeo.py: ``zeo_client.py PORT ID COMMITS``.

Each commit adds ``i`` to this client's own OOBTree (disjoint objects), increments a
shared ``BTrees.Length`` (resolved conflicts) and writes a shared mapping key (real
conflicts, retried). After each acknowledged commit it prints ``ack ID i``. The server
may be killed and restarted meanwhile: a commit whose outcome is unknown (disconnected
during it) is retried, and printed only once it is acknowledged. At the end it marks
itself done and waits until it sees the other client done (through invalidations),
then prints ``saw OTHER_ID LEN`` with the length of the other client's tree.
"""

import sys
import time

import transaction
import ZODB
from ZEO.ClientStorage import ClientStorage
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError


def main():
    port, me, commits = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    other = 1 - me
    storage = ClientStorage(('127.0.0.1', port), wait_timeout=60)
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    deadline = time.time() + 120
    i = 0
    while i < commits:
        if time.time() > deadline:
            print('timeout', flush=True)
            return 1
        try:
            tm.begin()
            root = conn.root()
            tree = root['tree%d' % me]
            if i in tree:            # an earlier try whose ack was lost did commit
                i += 1
                continue
            tree[i] = i
            root['counter'].change(1)
            root['shared']['last'] = (me, i)
            tm.get().note('client %d commit %d' % (me, i))
            tm.commit()
        except ConflictError:
            tm.abort()
            print('conflict', flush=True)
            continue
        except (ClientDisconnected, OSError) as e:
            tm.abort()
            print('disconnected %s' % type(e).__name__, flush=True)
            time.sleep(0.2)
            continue
        print('ack %d %d' % (me, i), flush=True)
        i += 1
        time.sleep(0.02)   # spread the commits over the server's kill and restart
    while True:
        try:
            tm.begin()
            conn.root()['done%d' % me] = True
            tm.commit()
            break
        except (ConflictError, ClientDisconnected, OSError):
            tm.abort()
            time.sleep(0.2)
    while time.time() < deadline:
        try:
            tm.begin()
            root = conn.root()
            if root.get('done%d' % other):
                print('saw %d %d' % (other, len(root['tree%d' % other])), flush=True)
                tm.abort()
                break
            tm.abort()
        except (ClientDisconnected, OSError):
            tm.abort()
        time.sleep(0.1)
    else:
        print('timeout waiting for the other client', flush=True)
        return 1
    db.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
