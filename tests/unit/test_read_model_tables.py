"""The read model's tables on SQLite (services/query/schema.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.query import schema
from services.query.schema import NEXT, TARGETS
from services.query.sqlite_loader import Loader, LoadFailed
from services.query.writes import TargetRow
from services.store import Dialect, insert_rows, insert_statement

SQLITE = Dialect("sqlite")


def test_a_swap_frees_the_old_tables_pages_without_zeroing_them(tmp_path: Path) -> None:
    """Debian's SQLite overwrites every freed page with zeros (`secure_delete`), which
    made dropping a million targets' read model write 1.2 GB through the log. The
    rows are derived from the events, which keep every byte of them."""
    path = tmp_path / "store.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute("PRAGMA secure_delete = ON")  # as that build has it, whatever this one's
    schema.create(db.cursor(), SQLITE)
    schema.create(db.cursor(), SQLITE, NEXT)
    columns = schema.column_names(TARGETS)
    row = ["x"] * 2 + ["t", 0, "idle", "t", 1, 0, 0, 0, 0, 0]
    db.executemany(
        f"INSERT INTO {TARGETS} VALUES ({', '.join('?' * len(columns))})",
        ([str(i), *row, os.urandom(2000).hex()] for i in range(2000)),
    )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    dropped = db.execute("PRAGMA page_count").fetchone()[0] * 4096

    db.execute("BEGIN IMMEDIATE")
    schema.swap_in(db.cursor(), SQLITE, NEXT)
    db.execute("COMMIT")

    written = os.path.getsize(f"{path}-wal")
    assert written < dropped / 10, f"{written:,} bytes of log to drop {dropped:,}"
    assert db.execute(f"SELECT COUNT(*) FROM {TARGETS}").fetchone()[0] == 0  # the new set
    assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1  # the connection's own again
    db.close()


def test_rows_loaded_by_the_loader_process_are_the_rows_inserted_here(tmp_path: Path) -> None:
    """A rebuild on SQLite loads its rows in a process of its own (`sqlite_loader`); the
    commands insert theirs by `executemany` here: both store the same values, of the
    same types, and the loader runs its statements in the order sent."""
    path = tmp_path / "store.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    schema.create(db.cursor(), SQLITE)
    schema.create(db.cursor(), SQLITE, NEXT, indexes=False)
    texts = ['"quoted" \\ back', "ünïcödé 🙂", "\x00\x01\x1f\u2028", "", "[1, 2]", "null", " 7 "]
    rows = [
        TargetRow(f"id{i}", text, "c", "t", i % 2, "idle", text, 2**40 + i, 0, 1, 2, 3, -4, text)
        for i, text in enumerate(texts)
    ]
    columns = TargetRow._fields
    insert_rows(db, SQLITE, schema.table(SQLITE, TARGETS), columns, rows)
    into_next = insert_statement("sqlite", schema.table(SQLITE, TARGETS, NEXT), columns)
    with Loader(path, 1024 * 1024) as child:
        child.run([(into_next, [tuple(r) for r in rows[:3]])])
        child.run([(into_next, [tuple(r) for r in rows[3:]])])
        for statement in schema.index_statements(SQLITE, NEXT):
            child.run([(statement, None)])

    def stored(name: str) -> list[tuple[object, ...]]:
        typed = ", ".join(f"{c}, typeof({c})" for c in columns)
        return db.execute(f"SELECT {typed} FROM {name} ORDER BY id").fetchall()

    assert stored(TARGETS + NEXT) == stored(TARGETS)
    assert [r[0::2] for r in stored(TARGETS)] == sorted(rows)
    indexes = db.execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
        (TARGETS + NEXT,),
    ).fetchone()[0]
    assert indexes == 3  # the primary key's, and the two made last
    db.close()


def test_the_loader_process_says_why_it_failed_and_stored_nothing_of_it(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE t (id TEXT PRIMARY KEY)").connection.close()
    child = Loader(path, 1024 * 1024)
    child.run([("INSERT INTO t VALUES (?)", [("a",), ("b",)])])
    child.run([("INSERT INTO t VALUES (?)", [("c",), ("a",)])])
    with pytest.raises(LoadFailed, match=r"IntegrityError: UNIQUE constraint failed: t\.id"):
        child.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT id FROM t ORDER BY id").fetchall() == [("a",), ("b",)]
    db.close()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_loader_process_dies_with_its_parent_and_its_transaction(tmp_path: Path) -> None:
    """`kill -9` of a replay: its loader must not go on and commit what it was writing
    (the next replay, holding the lock the dead one let go of, drops and refills
    those tables)."""
    path = tmp_path / "store.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE t (x INTEGER)").connection.close()
    slow = (  # seconds of inserting
        "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        "WHERE x < 50000000) SELECT x FROM c"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path\n"
            "from services.query.sqlite_loader import Loader\n"
            f"child = Loader(Path({str(path)!r}), 1024 * 1024)\n"
            f"child.run([({slow!r}, None)])\n"
            "print(child._child.pid, flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # into its transaction
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _state(child) not in ("gone", "Z"):
        assert time.monotonic() < deadline, "the loader outlived its parent"
        time.sleep(0.05)
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    db.close()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
