"""The read model's tables, on SQLite or PostgreSQL.

Each row keeps the resource's rendered JSON (`body`, exactly what the HTTP API
answers) beside the columns that queries filter and sort by. Every query is
served by an index:
- an outdial or target by id: the primary keys;
- a customer's live (or deleted) outdials, newest first: `(customer_id, deleted,
  tm_create, id)`; every customer's, for the platform's envelope: `(deleted,
  tm_create, id)` (the envelope's other filters, `campaign_id`, `name`, ..., are
  checked along these: a customer has few outdials);
- an outdial's live targets, newest first: `(outdial_id, tm_create, id)` where not deleted;
- an outdial's available targets, least recently updated first: `(outdial_id,
  tm_update, id)` where idle and not deleted (done, progressing and deleted
  targets cost a claim nothing).

Tables come in sets: the live set, and sets with a suffix that a rebuild fills
beside it (`_next`, `_check`). `swap_in` renames a rebuilt set into place.

The rows are written in the commands' own transactions (`writes`), so the read
model's position is always the last event's; `READ_MODEL` names that position,
and its number is the layout's version: a store whose read model has another
layout, or none, is rebuilt from the events once (`replay.bring_up_to_date`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from services.store import Dialect, table_exists

READ_MODEL = "readmodel-3"
LIVE = ""
NEXT = "_next"
CHECK = "_check"

OUTDIALS = "rm_outdials"
TARGETS = "rm_targets"

_COLUMNS = {
    OUTDIALS: (
        "id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, campaign_id TEXT NOT NULL, "
        # What the platform's envelope filters on, each as its JSON string: equal
        # when the texts are, and without NUL, which PostgreSQL's text refuses.
        "name TEXT NOT NULL, detail TEXT NOT NULL, data TEXT NOT NULL, "
        "tm_create TEXT NOT NULL, deleted INTEGER NOT NULL, body TEXT NOT NULL"
    ),
    TARGETS: (
        "id TEXT PRIMARY KEY, outdial_id TEXT NOT NULL, customer_id TEXT NOT NULL, "
        "tm_create TEXT NOT NULL, deleted INTEGER NOT NULL, status TEXT NOT NULL, "
        # What the available query filters on: when it last changed, which
        # destinations exist (bit i: destination_i), and the tries of each.
        "tm_update TEXT NOT NULL, present INTEGER NOT NULL, "
        "try_count_0 INTEGER NOT NULL, try_count_1 INTEGER NOT NULL, "
        "try_count_2 INTEGER NOT NULL, try_count_3 INTEGER NOT NULL, "
        "try_count_4 INTEGER NOT NULL, body TEXT NOT NULL"
    ),
}


def column_names(name: str) -> list[str]:
    """The columns of a read-model table, in their order."""
    return [definition.split()[0] for definition in _COLUMNS[name].split(", ")]


def filter_text(text: str) -> str:
    """How a text column that lists filter on holds its text: as its JSON string,
    equal when the texts are, and free of NUL (PostgreSQL's text takes none)."""
    return orjson.dumps(text).decode()


def table(dialect: Dialect, name: str, suffix: str = LIVE) -> str:
    return dialect.table(name + suffix)


def create(cursor: Any, dialect: Dialect, suffix: str = LIVE, *, indexes: bool = True) -> None:
    """Create the set of tables named by `suffix`, where missing; with their
    indexes unless `indexes` is false (a rebuild loads its rows first and then
    makes the indexes, `index_statements`: one sort each instead of an index
    entry put in place row by row)."""
    for name, columns in _COLUMNS.items():
        if table_exists(cursor, dialect, name + suffix):
            continue
        cursor.execute(f"CREATE TABLE {table(dialect, name, suffix)} ({columns})")
        for statement in _index_statements(dialect, name, suffix) if indexes else []:
            cursor.execute(statement)


def index_statements(dialect: Dialect, suffix: str) -> list[str]:
    """The statements that make the secondary indexes of the set `suffix` (the
    primary keys come with the tables), each on its own (a rebuild on SQLite runs
    each in a transaction of its own: writers wait for one index at a time)."""
    return [s for name in _COLUMNS for s in _index_statements(dialect, name, suffix)]


def _index_statements(dialect: Dialect, name: str, suffix: str) -> list[str]:
    full = table(dialect, name, suffix)
    # Fresh index names: a swapped-in table keeps its indexes' names, so fixed
    # ones would collide with the next rebuild's.
    if name == OUTDIALS:
        return [
            f"CREATE INDEX {name}_list_{uuid.uuid4().hex[:12]} ON {full} "
            f"({leading}, tm_create DESC, id DESC)"
            for leading in ("customer_id, deleted", "deleted")
        ]
    if name == TARGETS:
        return [
            f"CREATE INDEX {name}_list_{uuid.uuid4().hex[:12]} ON {full} "
            "(outdial_id, tm_create DESC, id DESC) WHERE deleted = 0",
            f"CREATE INDEX {name}_idle_{uuid.uuid4().hex[:12]} ON {full} "
            "(outdial_id, tm_update, id) WHERE deleted = 0 AND status = 'idle'",
        ]
    return []


@contextlib.contextmanager
def _pages_freed_as_they_are(cursor: Any, dialect: Dialect) -> Iterator[None]:
    """Within: a table dropped on SQLite frees its pages without writing zeros over
    them. Debian's SQLite is built with `SECURE_DELETE` on, so dropping a read model
    of a million targets wrote 1.2 GB of zeros through the log (5.2 of a rebuild's
    32 s, and the checkpoint after it wrote them again). Its rows are derived:
    every byte of them is in the events, which stay."""
    if dialect.kind != "sqlite":
        yield
        return
    cursor.execute("PRAGMA secure_delete")
    was = int(cursor.fetchone()[0])
    cursor.execute("PRAGMA secure_delete = FAST")
    try:
        yield
    finally:
        cursor.execute(f"PRAGMA secure_delete = {was}")


def drop(cursor: Any, dialect: Dialect, suffix: str) -> None:
    with _pages_freed_as_they_are(cursor, dialect):
        for name in _COLUMNS:
            cursor.execute(f"DROP TABLE IF EXISTS {table(dialect, name, suffix)}")


def swap_in(cursor: Any, dialect: Dialect, suffix: str) -> None:
    """Make the `suffix` set the live one, dropping the old live set (if any)."""
    for name in _COLUMNS:
        if table_exists(cursor, dialect, name):
            # RENAME TO takes a bare name: the table stays in its schema.
            cursor.execute(f"ALTER TABLE {table(dialect, name)} RENAME TO {name}_old")
        cursor.execute(f"ALTER TABLE {table(dialect, name, suffix)} RENAME TO {name}")
    drop(cursor, dialect, "_old")
