"""Each test starts with a clean thread-local transaction manager: a test that leaves a
connection joined to it (then closes its storage) must not break the next test. Each
test has a time limit (SIGALRM in the main thread: the test fails, its finally blocks
run and stop the servers it started)."""

import signal

import pytest
import transaction

TIME_LIMIT = 600


@pytest.fixture(autouse=True)
def time_limit():
    def expired(signum, frame):
        raise TimeoutError('the test ran longer than %d s' % TIME_LIMIT)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def clean_transaction_manager():
    yield
    try:
        transaction.abort()
    finally:
        transaction.manager.clearSynchs()
