"""filestorage2: the second-generation ZODB FileStorage (a chain of segment files).

    >>> import ZODB, filestorage2
    >>> db = ZODB.DB(filestorage2.FileStorage2('Data.fs2', create=True))

See ``FileStorage2`` for the options and ``component.xml`` for the ZConfig section
(``%import filestorage2`` then ``<filestorage2> path ... </filestorage2>``).
"""

from .storage import FileStorage2

__all__ = ['FileStorage2']
