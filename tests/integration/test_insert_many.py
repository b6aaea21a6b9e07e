"""`Dialect.insert_many` on both stores: rows in are the rows read back.

On PostgreSQL the rows go as one binary array a column, unnested: NULLs (a
column of nothing but NULLs too), bytes, text beyond ASCII, 64-bit integers and
an ON CONFLICT clause must come through as `executemany` would write them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.bootstrap import Runtime
from services.store import read_transaction, write_transaction
from shared.config import Settings

COLUMNS = [
    ("id", "TEXT"),
    ("count", "INTEGER"),
    ("position", "BIGINT"),
    ("note", "TEXT"),
]


@pytest.fixture
def runtime(store_url: str) -> Iterator[Runtime]:
    rt = Runtime(Settings(database_url=store_url))
    yield rt
    rt.app.close()


def blob(rt: Runtime) -> str:
    return "BLOB" if rt.store.kind == "sqlite" else "BYTEA"


def test_rows_read_back_as_written(runtime: Runtime) -> None:
    dialect = runtime.store.dialect
    table = dialect.table("t_insert_many")
    columns = [*COLUMNS, ("data", blob(runtime))]
    rows = [
        ("a", 1, 2**40, None, b"\x00\x01"),
        ("b", -(2**31), None, "caf\u00e9 \u2028 \U0001f4de", b""),
        ("c", None, 0, "", None),
    ]
    with write_transaction(runtime.app.recorder) as c:
        c.execute(
            f"CREATE TABLE {table} (id TEXT PRIMARY KEY, count INTEGER, position BIGINT, "
            f"note TEXT, data {blob(runtime)})"
        )
        dialect.insert_many(c, table, columns, rows)
        dialect.insert_many(c, table, columns, [])  # nothing to do
    with read_transaction(runtime.app.recorder) as c:
        c.execute(f"SELECT id, count, position, note, data FROM {table} ORDER BY id")
        read = [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in c.fetchall()
        ]
    assert read == rows


def test_a_column_of_nulls_and_a_conflict_clause(runtime: Runtime) -> None:
    dialect = runtime.store.dialect
    table = dialect.table("t_upsert")
    upsert = "ON CONFLICT (id) DO UPDATE SET count = excluded.count, note = excluded.note"
    with write_transaction(runtime.app.recorder) as c:
        c.execute(
            f"CREATE TABLE {table} (id TEXT PRIMARY KEY, count INTEGER, position BIGINT, note TEXT)"
        )
        dialect.insert_many(c, table, COLUMNS, [("a", 1, None, "one"), ("b", 2, None, None)])
        dialect.insert_many(c, table, COLUMNS, [("a", 10, None, "ten")], upsert)
        dialect.insert_many(c, table, COLUMNS, [("b", 20, 5, "x")], "ON CONFLICT (id) DO NOTHING")
    with read_transaction(runtime.app.recorder) as c:
        c.execute(f"SELECT id, count, position, note FROM {table} ORDER BY id")
        assert [tuple(r) for r in c.fetchall()] == [("a", 10, None, "ten"), ("b", 2, None, None)]
