"""A rebuild's writes to a SQLite store, made by a process of their own.

A rebuild folds the events into rows on one thread and must insert them into the
store as fast. On a thread of the same process the two share the GIL: Python's
`sqlite3` lets go of it and takes it back around each row it inserts, so beside
the busy fold each row waited for a thread switch. In a process of its own the
load has a core and a GIL to itself and uses plain `executemany`: 1.7 µs a row,
against 8 for the JSON arrays SQLite took apart itself, which the thread sent so
as to hold the GIL less (both measured alone on 2026-11-28, SQLite 3.40). A
rebuild of a million targets took 20.8 s this way and 27.3 before.

Both ends are here. The parent (`Loader`) sends work as pickles down the child's
stdin, each a list of (statement, rows or None) to run in one transaction; the
child (this file run as a script, so it imports nothing but the standard library)
runs them in order. The pipe holds little, so the parent, once it has sent a
transaction, waits while the child runs the one before: at most one transaction
waits, and a slow store slows the fold instead of filling memory.

A child whose parent dies (a `kill -9` of `outdial replay`) is killed with it
(Linux: `PR_SET_PDEATHSIG`; elsewhere it stops at the end of its input): its open
transaction is rolled back, and it writes nothing after the parent's lock is gone.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

# One transaction: statements and their rows (None: the statement once, no parameters).
Work = list[tuple[str, list[tuple[Any, ...]] | None]]


class LoadFailed(RuntimeError):
    pass


class Loader:
    """The parent's end: a child process writing to the SQLite store at `path`, with
    `cache_bytes` of pages in memory (what an index's sort keeps there)."""

    def __init__(self, path: Path, cache_bytes: int):
        self._child = subprocess.Popen(
            # -I: the standard library only, whatever the working directory holds.
            [sys.executable, "-I", __file__, str(path), str(cache_bytes), str(os.getpid())],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def run(self, work: Work) -> None:
        """Send one transaction's work (returns once the child has taken it)."""
        assert self._child.stdin is not None
        try:
            pickle.dump(work, self._child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._child.stdin.flush()
        except BrokenPipeError:
            self._failed()

    def close(self) -> None:
        """Wait until the child has run everything sent."""
        assert self._child.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died: said below
            self._child.stdin.close()
        if self._child.wait() != 0:
            self._failed()

    def _failed(self) -> None:
        assert self._child.stderr is not None
        self._child.kill()
        self._child.wait()
        said = self._child.stderr.read().decode(errors="replace").strip().splitlines()
        raise LoadFailed(said[-1] if said else f"exit status {self._child.returncode}")

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
            return
        self._child.kill()  # the parent failed: nothing more of this rebuild is wanted
        self._child.wait()


def _die_with_parent(parent: int) -> None:
    if sys.platform == "linux":
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before that took hold
        sys.exit(1)


def serve(path: str, cache_bytes: int, work_in: BinaryIO) -> None:
    """The child's end: run each transaction read from `work_in` until its end."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # The rebuilt tables are made durable by the swap's own commit; WAL stays
        # consistent without a sync at each of these.
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA busy_timeout = 30000")
        connection.execute(f"PRAGMA cache_size = -{cache_bytes // 1024}")
        while True:
            try:
                work: Work = pickle.load(work_in)
            except EOFError:
                return
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement, rows in work:
                    if rows is None:
                        connection.execute(statement)
                    else:
                        connection.executemany(statement, rows)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
    finally:
        connection.close()


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[3]))
    try:
        serve(sys.argv[1], int(sys.argv[2]), sys.stdin.buffer)
    except sqlite3.Error as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
