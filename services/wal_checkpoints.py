"""SQLite's checkpoints, made between a process's commits by a thread of their own.

In WAL mode SQLite appends each commit's pages to the log and now and then copies
the log back into the database file: a checkpoint. By default the commit that
takes the log past 1,000 pages (4 MB) runs it, in that command's own time: it
writes every page of the log into the file and syncs it. An AddTargets of 1,000
writes about that much (its events, read-model rows and outbox rows), so each
paid for a checkpoint beside its own writes, and more as the file grew.

So the writers of a process with a `WalCheckpointer` turn that off (`PRAGMA
wal_autocheckpoint = 0`, set in each write transaction: the setting is the
connection's, and eventsourcing's pool may replace its connections) and tell it
when they commit changes; its thread then runs the checkpoint SQLite would have run
(PASSIVE: it waits for no reader) on a connection of its own, while the writer
is deciding its next commands: the same work, on another core, after the reply.

A checkpoint runs while no write transaction of this process is open (`writing`
holds them off): one that ran beside a writer would never catch up with the end
of the log, and SQLite starts the log afresh only after a checkpoint that did,
so under a steady stream of commits the log would grow without end (seen: 180 MB
after 80 AddTargets of 1,000). Durability is unchanged: with `synchronous =
FULL` a commit is on disk in the log before it returns; a checkpoint only moves
it into the file. Connections that write outside `store.sqlite_write` (a
rebuild's loader, which commits large batches in a thread of its own) keep
SQLite's default.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

log = logging.getLogger("outdial.store")

# At most one checkpoint this often: a stream of small commits (group commits of
# single commands, every few milliseconds) is moved a few times a second, one
# sync of the file each, as SQLite's 1,000-page threshold would.
INTERVAL_SECONDS = 0.2


class WalCheckpointer:
    def __init__(self, path: str, interval: float = INTERVAL_SECONDS):
        self.path = path
        self.interval = interval
        self.checkpoints = 0  # made so far
        # Held by each write transaction of this process, and by a checkpoint.
        self._writes = threading.RLock()
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def writing(self) -> threading.RLock:
        """Held around a write transaction: no checkpoint meanwhile."""
        return self._writes

    def committed(self) -> None:
        """A write transaction of this process committed changes: checkpoint soon."""
        if self._thread is None:
            self._start()
        self._wanted.set()

    def _start(self) -> None:
        with self._starting:
            if self._thread is None and not self._stopping.is_set():
                thread = threading.Thread(
                    target=self._run, name="outdial-wal-checkpoints", daemon=True
                )
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            log.warning("cannot open the SQLite store to checkpoint its log", exc_info=True)
            return
        last = 0.0
        try:
            while True:
                self._wanted.wait()
                if self._stopping.wait(max(0.0, last + self.interval - time.monotonic())):
                    return
                self._wanted.clear()
                with self._writes:
                    self.checkpoint(connection)
                last = time.monotonic()
        finally:
            connection.close()

    def checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except Exception:
            # The next commit asks again; meanwhile the log only grows.
            log.warning("checkpointing the SQLite log failed", exc_info=True)

    def stop(self) -> None:
        """End the thread. What it left in the log stays there, safe: the next
        checkpoint moves it, or the store's last connection as it closes."""
        self._stopping.set()
        self._wanted.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
