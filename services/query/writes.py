"""The read model's writes: a resource's row, from the resource's state.

The command side hands every changed outdial and target here, with its rendered
shape, inside the transaction that stores the events (`ReadModelWriter`); a
rebuild writes the rows of every resource the same way. A row is the
resource's last state: written over on each change.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from services.command.domain import Outdial, OutdialTarget
from services.query.schema import LIVE, OUTDIALS, READ_MODEL, TARGETS, filter_text, table
from services.store import Dialect, insert_rows, write_position
from shared import shapes


class OutdialRow(NamedTuple):
    id: str
    customer_id: str
    campaign_id: str
    name: str  # JSON strings (`filter_text`)
    detail: str
    data: str
    tm_create: str
    deleted: int
    body: str


class TargetRow(NamedTuple):
    id: str
    outdial_id: str
    customer_id: str
    tm_create: str
    deleted: int
    status: str
    tm_update: str
    present: int  # bit i set: destination_i exists
    try_count_0: int
    try_count_1: int
    try_count_2: int
    try_count_3: int
    try_count_4: int
    body: str


def outdial_row(outdial: Outdial, shape: dict[str, Any] | None = None) -> OutdialRow:
    """`shape`: the outdial already rendered by `shapes.outdial` (else rendered here)."""
    shape = shape or shapes.outdial(outdial)
    return OutdialRow(
        shape["id"],
        str(outdial.customer_id),
        shape["campaign_id"],
        filter_text(outdial.name),
        filter_text(outdial.detail),
        filter_text(outdial.data),
        shape["tm_create"],
        int(outdial.deleted),
        orjson.dumps(shape).decode(),
    )


def present(destinations: Sequence[Any]) -> int:
    """TargetRow.present: bit i set when destination_i exists (the claim's query
    tests the bit of the destination it dials)."""
    d = destinations
    return (
        (d[0] is not None)
        | (d[1] is not None) << 1
        | (d[2] is not None) << 2
        | (d[3] is not None) << 3
        | (d[4] is not None) << 4
    )


def target_row(target: OutdialTarget, shape: dict[str, Any] | None = None) -> TargetRow:
    """`shape`: the target already rendered by `shapes.target` (else rendered here)."""
    shape = shape or shapes.target(target)
    counts = target.try_counts
    return TargetRow(
        shape["id"],
        shape["outdial_id"],
        str(target.customer_id),
        shape["tm_create"],
        int(target.deleted),
        target.status,
        shape["tm_update"],
        present(target.destinations),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        orjson.dumps(shape).decode(),
    )


@functools.cache  # a few statements in all; made once, not on every commit
def _upsert(dialect: Dialect, name: str, columns: tuple[str, ...], suffix: str) -> str:
    marks = ", ".join("?" * len(columns))
    keep = ("id", "customer_id", "outdial_id", "tm_create")
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keep)
    return dialect.sql(
        f"INSERT INTO {table(dialect, name, suffix)} ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}"
    )


def write_rows(
    cursor: Any,
    dialect: Dialect,
    outdials: Iterable[OutdialRow],
    targets: Iterable[TargetRow],
    suffix: str = LIVE,
) -> None:
    """Insert or overwrite rows of the `suffix` set of tables."""
    outdials, targets = list(outdials), list(targets)
    if outdials:
        cursor.executemany(_upsert(dialect, OUTDIALS, OutdialRow._fields, suffix), outdials)
    if targets:
        cursor.executemany(_upsert(dialect, TARGETS, TargetRow._fields, suffix), targets)


def insert_new_rows(cursor: Any, dialect: Dialect, rows: Sequence[Any], suffix: str = LIVE) -> None:
    """Insert rows of either kind where none of theirs can be: a created resource's, a
    rebuild's into its empty tables (`store.insert_rows`: COPY on PostgreSQL)."""
    for name, columns, of_kind in by_table(dialect, rows, suffix):
        insert_rows(cursor, dialect, name, columns, of_kind)


def by_table(
    dialect: Dialect, rows: Sequence[Any], suffix: str = LIVE
) -> list[tuple[str, tuple[str, ...], list[Any]]]:
    """Rows of either kind as (table, its columns, the rows of its kind)."""
    return [
        (table(dialect, name, suffix), kind._fields, [r for r in rows if type(r) is kind])
        for kind, name in ((OutdialRow, OUTDIALS), (TargetRow, TARGETS))
    ]


def overwrite_rows(cursor: Any, dialect: Dialect, rows: Iterable[Any], suffix: str = LIVE) -> None:
    """Insert or overwrite rows of either kind (`write_rows`, the rows sorted by kind)."""
    rows = list(rows)
    write_rows(
        cursor,
        dialect,
        (r for r in rows if isinstance(r, OutdialRow)),
        (r for r in rows if isinstance(r, TargetRow)),
        suffix,
    )


class ReadModelWriter:
    """What the command side's unit of work writes the read model with: the rows of
    the resources a transaction changed, and the read model's new position."""

    def rows(self, resource: Outdial | OutdialTarget, shape: dict[str, Any]) -> Any:
        if isinstance(resource, OutdialTarget):
            return target_row(resource, shape)
        return outdial_row(resource, shape)

    def write(
        self,
        cursor: Any,
        dialect: Dialect,
        created: Sequence[Any],
        changed: Sequence[Any],
        position: int,
    ) -> None:
        """`created`: rows of resources created in this transaction, inserted (no
        row of theirs can exist: a row comes from its resource's events, and the
        store refused a second creation); `changed`: rows written over."""
        insert_new_rows(cursor, dialect, created)
        overwrite_rows(cursor, dialect, changed)
        write_position(cursor, dialect, READ_MODEL, position)
