"""The SQLite store's commit stamp (services/query/commit_stamp.py) and the HTTP API's
answers kept under it (services/query/answer_cache.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.query.answer_cache import ENTRY_BYTES, MAX_ANSWER_BYTES, AnswerCache
from services.query.commit_stamp import CommitStamp


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "store.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("INSERT INTO rows VALUES (1, 'first')")
    yield path
    db.close()


def test_every_commit_changes_the_stamp_and_nothing_else_does(store: Path) -> None:
    stamp = CommitStamp(store)
    other = sqlite3.connect(store, isolation_level=None)
    try:
        seen = stamp.now()
        assert seen is not None and len(seen) == 48
        other.execute("SELECT * FROM rows").fetchall()
        other.execute("PRAGMA wal_checkpoint(PASSIVE)")  # moves pages, changes no row
        assert stamp.now() == seen
        stamps = {seen}
        for n in range(20):
            other.execute("UPDATE rows SET body = ? WHERE id = 1", (f"body {n}",))
            now = stamp.now()
            assert now not in stamps  # never one seen before
            stamps.add(now)
        # The log started afresh by a checkpoint and the next commit: changed too.
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        other.execute("UPDATE rows SET body = 'after the restart' WHERE id = 1")
        assert stamp.now() not in stamps
    finally:
        other.close()
        stamp.close()


def test_a_store_reached_by_a_symbolic_link_has_its_real_stamp(store: Path) -> None:
    link = store.parent / "elsewhere" / "link.sqlite3"
    link.parent.mkdir()
    link.symlink_to(store)
    (link.parent / "link.sqlite3-shm").write_bytes(bytes(32768))  # never SQLite's
    stamp = CommitStamp(link)
    try:
        before = stamp.now()
        assert before is not None
        db = sqlite3.connect(link, isolation_level=None)
        db.execute("UPDATE rows SET body = 'through the link'")
        db.close()
        assert stamp.now() != before
    finally:
        stamp.close()


def test_another_process_commit_changes_it(store: Path) -> None:
    stamp = CommitStamp(store)
    try:
        before = stamp.now()
        write = (
            f"import sqlite3; db = sqlite3.connect({str(store)!r}); "
            "db.execute(\"UPDATE rows SET body = 'x'\"); db.commit()"
        )
        subprocess.run([sys.executable, "-c", write], check=True, timeout=30)
        assert stamp.now() != before
    finally:
        stamp.close()


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads Linux's /proc/locks")
def test_the_stamp_leaves_sqlite_its_locks_on_the_index(store: Path) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on
    it, SQLite's included. SQLite holds the `-shm` file's "DMS" lock as long as a
    connection has it open: without it, another process opening the store takes
    itself for the only one and truncates the file under this one's maps (SIGBUS),
    and a checkpointer elsewhere may restart the log under this process's readers.
    Making a stamp, and closing one, must leave those locks as they were."""
    shm = Path(f"{store}-shm")
    reader = sqlite3.connect(store, isolation_level=None)
    try:
        reader.execute("SELECT * FROM rows").fetchall()
        held = _locks_held_on(shm)
        assert held, "SQLite holds no lock on the -shm file: nothing to check"
        for _ in range(2):
            stamp = CommitStamp(store)
            assert _locks_held_on(shm) == held
            stamp.close()
            assert _locks_held_on(shm) == held
    finally:
        reader.close()


def _locks_held_on(path: Path) -> set[tuple[str, str, str]]:
    """This process's POSIX locks on `path`: (kind, first byte, last byte)."""
    inode = path.stat().st_ino
    held = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:  # a lock waited for, not held
            continue
        kind, pid, device_inode, start, end = fields[3:8]
        if int(pid) == os.getpid() and int(device_inode.rsplit(":", 1)[1]) == inode:
            held.add((kind, start, end))
    return held


def test_a_store_not_in_wal_mode_has_no_stamp(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY)")
    db.close()
    stamp = CommitStamp(path)
    try:
        assert stamp.now() is None
    finally:
        stamp.close()


class Stamps:
    """A stamp the test sets."""

    def __init__(self) -> None:
        self.value: bytes | None = b"1"

    def __call__(self) -> bytes | None:
        return self.value


def test_an_answer_is_kept_until_the_stamp_changes() -> None:
    stamps = Stamps()
    cache = AnswerCache(stamps)
    kept, stamp = cache.lookup(("a",))
    assert kept is None and stamp == b"1"
    cache.keep(("a",), stamp, b"answer")
    assert cache.lookup(("a",)) == (b"answer", b"1")
    stamps.value = b"2"
    assert cache.lookup(("a",)) == (None, b"2")
    assert len(cache) == 0


def test_an_answer_read_across_a_commit_is_not_kept() -> None:
    stamps = Stamps()
    cache = AnswerCache(stamps)
    _, stamp = cache.lookup(("a",))
    stamps.value = b"2"
    cache.lookup(("b",))  # another request saw the commit while "a" was being read
    cache.keep(("a",), stamp, b"maybe older than the commit")
    assert cache.lookup(("a",)) == (None, b"2")


def test_no_stamp_keeps_nothing() -> None:
    stamps = Stamps()
    stamps.value = None
    cache = AnswerCache(stamps)
    kept, stamp = cache.lookup(("a",))
    cache.keep(("a",), stamp, b"answer")
    assert (kept, stamp, len(cache)) == (None, None, 0)


def kept(cache: AnswerCache, *keys: str) -> list[bytes | None]:
    return [cache.lookup((key,))[0] for key in keys]


def test_the_oldest_answers_go_first_and_large_ones_are_not_kept() -> None:
    four = ENTRY_BYTES + 1 + 4  # an entry of a one-letter key and four bytes
    cache = AnswerCache(Stamps(), max_bytes=2 * four + 10)
    for key in "abc":
        _, stamp = cache.lookup((key,))
        cache.keep((key,), stamp, b"4444")
    assert kept(cache, "a", "b", "c") == [None, b"4444", b"4444"]
    _, stamp = cache.lookup(("b",))
    cache.keep(("b",), stamp, b"333")  # replaced: its old bytes no longer count
    assert kept(cache, "b", "c") == [b"333", b"4444"]
    cache = AnswerCache(Stamps())
    _, stamp = cache.lookup(("big",))
    cache.keep(("big",), stamp, b"x" * (MAX_ANSWER_BYTES + 1))
    assert len(cache) == 0


def test_keys_count_with_their_answers() -> None:
    """A client can make every request's query its own: 8 KB of key beside a small
    answer takes room too."""
    cache = AnswerCache(Stamps(), max_bytes=4 * (ENTRY_BYTES + 2))
    for key in "abc":
        _, stamp = cache.lookup((key,))
        cache.keep((key,), stamp, b"1")
    long_key = ("/v1.0/outdials/x?junk=" + "j" * 8000,)
    _, stamp = cache.lookup(long_key)
    cache.keep(long_key, stamp, b"1")
    assert kept(cache, "a", "b", "c") == [None, None, None]
    assert cache.lookup(long_key)[0] == b"1"
