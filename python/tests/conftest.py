"""Each test starts with a clean thread-local transaction manager: a test that leaves a
connection joined to it (then closes its storage) must not break the next test."""

import pytest
import transaction


@pytest.fixture(autouse=True)
def clean_transaction_manager():
    yield
    try:
        transaction.abort()
    finally:
        transaction.manager.clearSynchs()
