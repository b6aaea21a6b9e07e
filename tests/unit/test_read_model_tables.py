"""The read model's tables on SQLite (services/query/schema.py)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from services import store
from services.query import schema
from services.query.schema import NEXT, TARGETS
from services.query.writes import TargetRow
from services.store import Dialect, insert_rows, insert_text_rows

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


def test_rows_inserted_as_json_are_the_rows_inserted_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rebuild loads its rows through one JSON array (`insert_text_rows`); the
    commands insert theirs by `executemany`: both must store the same values, of
    the same types."""
    db = sqlite3.connect(":memory:")
    schema.create(db.cursor(), SQLITE)
    schema.create(db.cursor(), SQLITE, NEXT)
    # No NUL: the read model's texts never hold one (its filters and bodies hold JSON).
    texts = ['"quoted" \\ back', "ünïcödé 🙂", "\x01\x1f\u2028", "", "[1, 2]", "null", " 7 "]
    rows = [
        TargetRow(f"id{i}", text, "c", "t", i % 2, "idle", text, 2**40 + i, 0, 1, 2, 3, -4, text)
        for i, text in enumerate(texts)
    ]
    columns = TargetRow._fields
    monkeypatch.setattr(store, "JSON_ROWS", 3)  # three arrays of the seven rows
    insert_rows(db, SQLITE, schema.table(SQLITE, TARGETS), columns, rows)
    insert_text_rows(db, SQLITE, schema.table(SQLITE, TARGETS, NEXT), columns, rows)

    def stored(name: str) -> list[tuple[object, ...]]:
        typed = ", ".join(f"{c}, typeof({c})" for c in columns)
        return db.execute(f"SELECT {typed} FROM {name} ORDER BY id").fetchall()

    assert stored(TARGETS + NEXT) == stored(TARGETS)
    assert [r[0::2] for r in stored(TARGETS)] == sorted(rows)
