"""The SQLite store's commit stamp: bytes that change with every commit to the store,
by any process, read without a transaction.

In WAL mode every connection to the file, in any process, shares an index of the
log in the `-shm` file beside it, mapped into memory. Its first 48 bytes are the
index's header (https://www.sqlite.org/walformat.html, "The WAL-Index Header",
stable since SQLite 3.7.0): a counter that every commit increments, the log's last
frame, its salts and a checksum. A commit rewrites the header before it returns,
so once a write is answered its stamp is in the header. A reader's transaction
starts by reading the same header: a read that starts after a stamp was read sees
every commit the stamp counts.

Reading the stamp costs a copy of 48 bytes of memory; a read of the store by key
costs two `fcntl` locks besides the read itself. It lets the HTTP API keep its
answers while nothing was committed (`answer_cache`).

The header is read from a map of the file's first page, made while a connection of
this object's own holds the file open: SQLite truncates the `-shm` file only when
it opens it with no other connection in any process, and a read of a map of a
truncated file kills the process (SIGBUS).

The map's descriptors stay open while the file is there (`_maps`): closing any
descriptor of a file drops every POSIX lock the process holds on it, and SQLite
holds the `-shm` file's for as long as a connection has it open. Without them,
another process opening the store would take itself for the only one and truncate
the file under this one's maps, and a checkpointer elsewhere could restart the log
under this process's readers.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import struct
import threading
from pathlib import Path

from services.store import sqlite_companion

__all__ = ["HEADER_BYTES", "CommitStamp"]

HEADER_BYTES = 48
# The header's version (iVersion) and its isInit flag: an index in another format,
# or one not yet written, gives no stamp.
_VERSION = 3007000
_FIELDS = struct.Struct("=I4xIB")  # iVersion, padding, iChange, isInit (native order)


class CommitStamp:
    """The stamp of the store file at `path` (`now()`), None when its index gives none:
    a store not in WAL mode, an index of another format or not yet written. Its
    connection and map are this object's until `close()`."""

    def __init__(self, path: Path):
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._map: mmap.mmap | None = None
        try:
            self._connection.execute("PRAGMA query_only = ON")
            # A read opens the log and its index (the `-shm` file) and holds them open
            # until the connection closes.
            mode = self._connection.execute("PRAGMA journal_mode").fetchone()[0]
            self._connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            # Beside the file the path leads to: SQLite names it after the real path.
            shm = sqlite_companion(path.resolve(), "shm")
            if mode == "wal" and shm.exists() and shm.stat().st_size >= 2 * HEADER_BYTES:
                self._map = _maps.of(shm)
        except BaseException:
            self.close()
            raise

    def now(self) -> bytes | None:
        """The header as it is now (a commit in progress may show half written: that
        is a stamp no finished commit has, taken as a change); None without one."""
        if self._map is None:
            return None
        header = self._map[:HEADER_BYTES]
        version, _, initialised = _FIELDS.unpack_from(header)
        if version != _VERSION or not initialised:
            return None
        return header

    def close(self) -> None:
        """The map is let go of first (kept open in `_maps`): the connection keeps the
        file from being truncated under it."""
        self._map = None
        with contextlib.suppress(sqlite3.Error):
            self._connection.close()


class _Maps:
    """A read-only map of the first bytes of each `-shm` file, one per file for the
    process, with its descriptors open until SQLite has deleted the file (no
    connection of any process has it open then, so none of its locks is held)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[int, int], tuple[int, mmap.mmap]] = {}

    def of(self, shm: Path) -> mmap.mmap:
        with self._lock:
            self._close_deleted()
            status = shm.stat()
            key = (status.st_dev, status.st_ino)
            if key not in self._open:
                fd = os.open(shm, os.O_RDONLY)
                self._open[key] = (fd, mmap.mmap(fd, 2 * HEADER_BYTES, prot=mmap.PROT_READ))
            return self._open[key][1]

    def _close_deleted(self) -> None:
        for key, (fd, header) in list(self._open.items()):
            if os.fstat(fd).st_nlink == 0:
                header.close()
                os.close(fd)
                del self._open[key]


_maps = _Maps()
