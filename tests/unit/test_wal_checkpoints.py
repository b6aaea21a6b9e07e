"""SQLite's log is checkpointed by a thread of its own, between the process's write
transactions, never by a commit (services/wal_checkpoints.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.command.application import OutdialApplication
from services.store import SQLiteInlineRecorder, sqlite_companion, write_transaction
from services.wal_checkpoints import WalCheckpointer


@pytest.fixture
def app(tmp_path: Path) -> Iterator[OutdialApplication]:
    app = OutdialApplication.from_url(f"sqlite:///{tmp_path}/outdial.sqlite3")
    with write_transaction(app.recorder) as c:
        c.execute("CREATE TABLE blobs (b BLOB)")
    yield app
    app.close()


def checkpointer(app: OutdialApplication) -> WalCheckpointer:
    assert isinstance(app.recorder, SQLiteInlineRecorder)
    return app.recorder.checkpointer


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within 10 s"
        time.sleep(0.02)


def test_a_commit_leaves_the_checkpoint_to_the_thread(app: OutdialApplication) -> None:
    with write_transaction(app.recorder) as c:
        # SQLite's default is 1,000 pages: the commit would checkpoint itself.
        c.execute("PRAGMA wal_autocheckpoint")
        assert c.fetchone()[0] == 0
        c.execute("INSERT INTO blobs VALUES (?)", (os.urandom(100_000),))
    before = checkpointer(app).checkpoints
    wait_for(lambda: checkpointer(app).checkpoints > before)


def test_no_checkpoint_runs_while_a_write_transaction_is_open(app: OutdialApplication) -> None:
    done = checkpointer(app)
    with write_transaction(app.recorder) as c:
        c.execute("INSERT INTO blobs VALUES (?)", (b"x",))
    wait_for(lambda: done.checkpoints > 0)
    before = done.checkpoints
    with write_transaction(app.recorder) as c:
        c.execute("INSERT INTO blobs VALUES (?)", (b"y",))
        done.committed()  # another thread's commit asks for one meanwhile
        time.sleep(done.interval * 3)
        assert done.checkpoints == before
    wait_for(lambda: done.checkpoints > before)


def test_a_stream_of_big_commits_keeps_the_log_small(app: OutdialApplication) -> None:
    """40 MB written in 1 MB commits: the log is moved into the file as it goes and
    starts afresh, rather than growing by every commit (or waiting for a pause)."""
    wal = sqlite_companion(app.store.path, "wal")
    for _ in range(40):
        with write_transaction(app.recorder) as c:
            c.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(4000),)] * 256)
        time.sleep(0.01)  # a command's deciding, between commits
    assert checkpointer(app).checkpoints > 0
    assert wal.stat().st_size < 20 * 1024 * 1024
