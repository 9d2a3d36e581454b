"""ZODB's own storage conformance suites (the mixins in ``ZODB.tests``), run against
FileStorage2, the way ZODB runs them against FileStorage and MappingStorage.

Every skipped test names its reason. Undo (``IStorageUndoable``) is run with ZODB's
TransactionalUndoStorage, ConflictResolvingTransUndoStorage and PackableUndoStorage.
"""

import doctest
import os
import unittest

import pytest
import ZODB.blob
import ZODB.FileStorage
from ZODB.tests import BasicStorage
from ZODB.tests import ConflictResolution
from ZODB.tests import HistoryStorage
from ZODB.tests import IteratorStorage
from ZODB.tests import MTStorage
from ZODB.tests import PackableStorage
from ZODB.tests import PersistentStorage
from ZODB.tests import ReadOnlyStorage
from ZODB.tests import RecoveryStorage
from ZODB.tests import RevisionStorage
from ZODB.tests import StorageTestBase
from ZODB.tests import Synchronization
from ZODB.tests import TransactionalUndoStorage
from ZODB.tests import testblob

from filestorage2 import FileStorage2

PACK_SPLITS_SEGMENTS = (
    'expects pack(t) to end the undo log at t: filestorage2 packs by merging whole past '
    'segments ending at or before t, so the transactions of a segment spanning t (here the '
    'one active segment) are kept and stay undoable')


class FileStorage2Tests(
    StorageTestBase.StorageTestBase,
    BasicStorage.BasicStorage,
    ConflictResolution.ConflictResolvingStorage,
    ConflictResolution.ConflictResolvingTransUndoStorage,
    HistoryStorage.HistoryStorage,
    IteratorStorage.ExtendedIteratorStorage,
    IteratorStorage.IteratorStorage,
    MTStorage.MTStorage,
    PackableStorage.PackableStorageWithOptionalGC,
    PackableStorage.PackableUndoStorage,
    PersistentStorage.PersistentStorage,
    ReadOnlyStorage.ReadOnlyStorage,
    RevisionStorage.RevisionStorage,
    Synchronization.SynchronizedStorage,
    TransactionalUndoStorage.TransactionalUndoStorage,
):
    """The combination ZODB runs for FileStorage."""

    use_extension_bytes = True  # the extension is stored as the bytes given

    def setUp(self):
        StorageTestBase.StorageTestBase.setUp(self)
        self.open(create=True)

    def open(self, read_only=False, create=False):
        self._storage = FileStorage2('Data.fs2', create=create, read_only=read_only)

    @unittest.skip('checks undo records by their backpointer (data_txn): filestorage2 '
                   'keeps no backpointers, an undo writes the restored state as data')
    def testTransactionalUndoIterator(self):
        pass

    @unittest.skip(PACK_SPLITS_SEGMENTS)
    def testPackUndoLog(self):
        pass

    @unittest.skip(PACK_SPLITS_SEGMENTS)
    def testTransactionalUndoAfterPack(self):
        pass


class FileStorage2SmallSegmentsTests(FileStorage2Tests):
    """The same with a tiny rotate size: every few commits seal a segment, so reads,
    iteration, history and pack cross segment boundaries (and pack ends the undo log)."""

    testPackUndoLog = TransactionalUndoStorage.TransactionalUndoStorage.__dict__.get(
        'testPackUndoLog', PackableStorage.PackableUndoStorage.testPackUndoLog)
    testTransactionalUndoAfterPack = (
        TransactionalUndoStorage.TransactionalUndoStorage.testTransactionalUndoAfterPack)

    def open(self, read_only=False, create=False):
        self._storage = FileStorage2('Data.fs2', create=create, read_only=read_only,
                                     rotate_size=2048)


class RecoveryFromFileStorageTests(
    StorageTestBase.StorageTestBase,
    RecoveryStorage.RecoveryStorage,
):
    """copyTransactionsFrom / restore: from a ZODB FileStorage (which has undo, so the
    history includes backpointers) into FileStorage2."""

    def setUp(self):
        StorageTestBase.StorageTestBase.setUp(self)
        self._storage = ZODB.FileStorage.FileStorage('Source.fs', create=True)
        self._dst = FileStorage2('Dest.fs2', create=True)

    def tearDown(self):
        self._dst.close()
        StorageTestBase.StorageTestBase.tearDown(self)

    def new_dest(self):
        return FileStorage2('Dest.fs2')

    @unittest.skip('the source transaction (undoMultiple in FileStorage) holds two records of '
                   'one oid; filestorage2 keeps one record per oid per transaction (the last, '
                   'the one loads see), so the record-by-record compare differs')
    def testRestoreWithMultipleUndoRedo(self):
        pass

    @unittest.skip('IteratorDeepCompare compares records in file order: FileStorage keeps '
                   'store order within a transaction, filestorage2 writes oid order')
    def testRestoreWithMultipleObjectsInUndoRedo(self):
        pass


def _blob_factory(name, blob_dir):
    return ZODB.blob.BlobStorage(blob_dir, FileStorage2(name, create=True))


def _external_gc_factory(name='data.fs2', blob_dir='blobs'):
    """As the IExternalGC doctest wants it: blobs, and no GC at pack."""
    return ZODB.blob.BlobStorage(blob_dir, FileStorage2(name, create=True, pack_gc=False))


def _doctest_cases():
    suite = unittest.TestSuite()
    suite.addTest(PackableStorage.IExternalGC_suite(_external_gc_factory))
    suite.addTest(testblob.storage_reusable_suite(
        'FileStorage2', _blob_factory, test_blob_storage_recovery=False,
        test_packing=False, test_undo=True))

    def flat(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                yield from flat(t)
            else:
                yield t
    return list(flat(suite))


@pytest.mark.skip(reason=(
    'blob_packing.txt expects pack(t) to drop the revisions (and blob files) before t '
    'within one file; filestorage2 packs by merging whole past segments ending at or '
    'before t, so the revisions of a segment spanning t are kept (as their blob files)'))
def test_blob_packing():
    pass


@pytest.mark.parametrize('case', _doctest_cases(), ids=lambda c: c.id().split('.')[-1])
def test_doctest(case):
    """ZODB's IExternalGC and blob doctests (through ZODB.blob.BlobStorage)."""
    if case.id().endswith('blob_transaction_txt') and os.geteuid() == 0:
        pytest.skip('blob_transaction.txt checks that a committed blob file cannot be '
                    'opened for writing; root can (ZODB FileStorage fails it the same '
                    'way as root), and the write then truncates the blob it reads next')
    result = unittest.TestResult()
    case.run(result)
    problems = result.failures + result.errors
    assert not problems, '\n'.join(text for _, text in problems)


if __name__ == '__main__':
    unittest.main()
