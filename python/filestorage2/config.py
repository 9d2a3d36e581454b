"""The ZConfig section ``<filestorage2>`` (see ``component.xml``)."""

from ZODB.config import BaseConfig


def retention(value):
    value = value.strip().lower()
    if value not in ('full', 'minimal'):
        raise ValueError('retention must be full or minimal, not %r' % value)
    return value


class FileStorage2Config(BaseConfig):

    def open(self, database_name='unnamed', databases=None):
        from .storage import FileStorage2
        c = self.config
        return FileStorage2(
            c.path, create=c.create, read_only=c.read_only,
            rotate_size=c.rotate_size, retention=c.retention,
            pack_gc=c.pack_gc, sync=c.sync)
