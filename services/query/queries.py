"""The read model's queries: everything the doors (HTTP, the platform's envelope)
and the claims read, in one place.

Reads go through a connection of the reading thread's own, in autocommit
(`services.store.ThreadReaders`): one statement is one consistent read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID

import orjson

from services.query.schema import (
    LIVE,
    OUTDIALS,
    READ_MODEL,
    TARGETS,
    column_names,
    filter_text,
    table,
)
from services.store import Dialect, Store, ThreadReaders, read_position
from shared import shapes

# One item of a page, as the driver hands it over (a page is read for every list
# the HTTP API answers: no object per row): tm_create, id, body (the tutorial's
# shape, CONTRACT 1, as the HTTP API answers it), and, for outdials, customer_id.
Row = tuple[str, ...]
TM_CREATE, ID, BODY, CUSTOMER_ID = range(4)


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    more: bool  # a row beyond the page exists
    next_tm_create: str | None  # tm_create of the first row beyond the page

    @property
    def bodies(self) -> list[str]:
        return [row[BODY] for row in self.rows]

    @property
    def customer_ids(self) -> list[str]:
        """Each row's customer (outdials' pages only)."""
        return [row[CUSTOMER_ID] for row in self.rows]


# A cursor of a page: after (tm_create, id); an id of None means after every row
# of that tm_create.
Cursor = tuple[str, str | None]

T = TypeVar("T")


class Read(NamedTuple, Generic[T]):
    """One read of one statement: its SQL (in the driver's style) and parameters, and
    what its first row (None: no row) means; run by `Queries.run`, on the event loop
    (SQLite) or a reader thread (`services.query.async_reads`)."""

    sql: str
    params: Sequence[Any]
    convert: Callable[[Any], T]
    # PostgreSQL, a read by key: the statement that makes the same read for many
    # keys at once (`Queries.run_many`), else None.
    many: str | None = None
    # SQLite: cheap enough to make on the event loop (a read by key: ~10 µs). A
    # page is not (50-120 µs of SQLite's, the bodies of up to 100 rows): on a
    # reader thread SQLite reads it without holding the GIL, and equal pages
    # asked together are read once.
    inline: bool = True


class JoinedPage(NamedTuple):
    """A page of an outdial's targets, read with its outdial in one statement: the
    bodies joined by commas as the store joined them (CONTRACT 1's shapes, what the
    HTTP API answers, never parsed here), and what the next page's token needs."""

    deleted: bool  # the outdial is deleted (its targets are hidden from lists)
    customer_id: str  # the outdial's customer
    joined: bytes  # b"" for no rows
    last: str | None  # "tm_create|id" of the page's last row
    next_tm_create: str | None  # tm_create of the first row beyond the page


class FoundOutdial(NamedTuple):
    body: str
    deleted: bool
    customer_id: str


class FoundTarget(NamedTuple):
    body: str
    customer_id: str
    outdial_id: str


@dataclass(frozen=True)
class OutdialFilters:
    """What a list of outdials is narrowed to (each None: any). The HTTP API names
    the customer; the platform's envelope may name any of these (CONTRACT 8)."""

    customer_id: str | None = None
    id: str | None = None
    campaign_id: str | None = None
    name: str | None = None
    detail: str | None = None
    data: str | None = None
    deleted: bool = False  # the deleted outdials, instead of the live ones

    def where(self) -> tuple[str, list[Any]]:
        # `deleted` as a literal: the planner picks an index by it.
        clauses, params = [f"deleted = {int(self.deleted)}"], []
        for column in ("customer_id", "id", "campaign_id"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        for column in ("name", "detail", "data"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(filter_text(value))
        return " AND ".join(clauses), params


def _body_and_deleted(row: Any) -> tuple[str, bool] | None:
    return None if row is None else (str(row[0]), bool(row[1]))


def _found_outdial(row: Any) -> FoundOutdial | None:
    return None if row is None else FoundOutdial(str(row[0]), bool(row[1]), str(row[2]))


def _first_text(row: Any) -> str | None:
    return None if row is None else str(row[0])


def _found_target(row: Any) -> FoundTarget | None:
    return None if row is None else FoundTarget(str(row[0]), str(row[1]), str(row[2]))


def _joined_page(row: Any) -> JoinedPage | None:
    if row is None:
        return None
    deleted, customer_id, joined, full, oldest = row
    if joined is None:  # no rows
        return JoinedPage(bool(deleted), str(customer_id), b"", None, None)
    if isinstance(joined, str):  # PostgreSQL's text
        joined = joined.encode()
    if full is None:  # fewer rows than the page holds: the last is the oldest
        return JoinedPage(bool(deleted), customer_id, joined, oldest, None)
    last, _, beyond = full.partition(",")
    next_tm_create = beyond.partition("|")[0] if beyond else None
    return JoinedPage(bool(deleted), customer_id, joined, last, next_tm_create)


class DumpedRow(NamedTuple):
    """A read-model row as `replay --check` compares it."""

    table: str
    id: str
    body: str
    columns: dict[str, Any]


class Queries:
    def __init__(self, store: Store, suffix: str = LIVE, *, readers: ThreadReaders | None = None):
        self.store = store
        self.dialect: Dialect = store.dialect
        self.suffix = suffix
        # A local file answers an indexed read in well under a millisecond, less
        # than a hop to a thread costs: such reads may run on the event loop.
        self.local = store.kind == "sqlite"
        # The event store's own readers where the process has them: one connection
        # per thread for both.
        self.readers = readers or ThreadReaders(store)
        self._outdials = table(self.dialect, OUTDIALS, suffix)
        self._targets = table(self.dialect, TARGETS, suffix)
        o, t = self._outdials, self._targets
        self._sql_outdial = self._by_key(o, ("body", "deleted"), ("id", "customer_id"))
        self._sql_outdial_by_id = self._by_key(o, ("body", "deleted", "customer_id"), ("id",))
        self._sql_target = self._by_key(t, ("body",), ("id", "outdial_id", "customer_id"))
        self._sql_target_by_id = self._by_key(t, ("body", "customer_id", "outdial_id"), ("id",))
        self._sql_joined_pages: dict[tuple[bool, str], str] = {}

    def _by_key(
        self, table: str, columns: Sequence[str], keys: Sequence[str]
    ) -> tuple[str, str | None]:
        """The statement that reads `columns` of the row of one key; and, on
        PostgreSQL, the one that reads them for many keys, each key's row after the
        key's number (1, 2, ...): one round trip and one statement of the server's
        for a batch of reads instead of one each (a fifth of the CPU on both sides,
        measured at 32 reads a batch). LATERAL: an index lookup per key, whatever
        the planner guesses of the arrays' lengths."""
        selected = ", ".join(columns)
        one = self.dialect.sql(
            f"SELECT {selected} FROM {table} WHERE " + " AND ".join(f"{k} = ?" for k in keys)
        )
        if self.dialect.kind != "postgres":
            return one, None
        arrays = ", ".join("%s::text[]" for _ in keys)
        match = " AND ".join(f"{k} = k.{k}" for k in keys)
        many = (
            f"SELECT k.i, {', '.join('r.' + c for c in columns)} FROM unnest({arrays}) "
            f"WITH ORDINALITY AS k({', '.join(keys)}, i) "
            f"CROSS JOIN LATERAL (SELECT {selected} FROM {table} WHERE {match}) r"
        )
        return one, many

    def _cursor(self) -> contextlib.AbstractContextManager[Any]:
        return self.readers.cursor()

    def _one(self, statement: str, params: Sequence[Any]) -> Any:
        """`statement`'s first row (written with `?`s, or in the driver's style)."""
        return self.readers.one(self.dialect.sql(statement), params)

    def _all(self, statement: str, params: Sequence[Any]) -> list[Any]:
        def every(c: Any) -> list[Any]:
            c.execute(self.dialect.sql(statement), params)
            return list(c.fetchall())

        return self.readers.read(every)

    @staticmethod
    def _read(
        statements: tuple[str, str | None], params: Sequence[Any], convert: Callable[[Any], T]
    ) -> Read[T]:
        one, many = statements
        return Read(one, params, convert, many)

    def run(self, read: Read[T]) -> T:
        """A read on this thread's connection."""
        return read.convert(self.readers.one(read.sql, read.params))

    def run_many(self, reads: Sequence[Read[Any]]) -> list[Any]:
        """Reads of one kind (one `many` statement) in one statement: each one's
        result, in order, as `run` would give it."""
        many = reads[0].many
        assert many is not None and all(r.many == many for r in reads)
        arrays = [list(values) for values in zip(*(r.params for r in reads), strict=True)]

        def all_rows(c: Any) -> list[Any]:
            return list(c.execute(many, arrays).fetchall())

        found = {row[0]: row[1:] for row in self.readers.read(all_rows)}
        return [read.convert(found.get(i)) for i, read in enumerate(reads, 1)]

    def close(self) -> None:
        self.readers.close()

    # ---- positions ---------------------------------------------------------
    def position(self) -> int:
        """The read model's position: the last event whose rows it holds."""
        return self.readers.read(lambda c: read_position(c, self.dialect, READ_MODEL)) or 0

    # ---- by id -------------------------------------------------------------
    def outdial(self, customer_id: str, outdial_id: str) -> tuple[str, bool] | None:
        """The customer's outdial, deleted or not: (body, deleted); None if absent or
        another customer's."""
        return self.run(self.outdial_read(customer_id, outdial_id))

    def outdial_read(self, customer_id: str, outdial_id: str) -> Read[tuple[str, bool] | None]:
        return self._read(self._sql_outdial, (outdial_id, customer_id), _body_and_deleted)

    def outdial_by_id(self, outdial_id: str) -> FoundOutdial | None:
        """Any customer's outdial, deleted or not. For trusted callers only (the
        platform's envelope, which names bare ids)."""
        return self.run(self.outdial_by_id_read(outdial_id))

    def outdial_by_id_read(self, outdial_id: str) -> Read[FoundOutdial | None]:
        return self._read(self._sql_outdial_by_id, (outdial_id,), _found_outdial)

    def target(self, customer_id: str, outdial_id: str, target_id: str) -> str | None:
        """The body of the customer's target of that outdial, deleted or not."""
        return self.run(self.target_read(customer_id, outdial_id, target_id))

    def target_read(self, customer_id: str, outdial_id: str, target_id: str) -> Read[str | None]:
        return self._read(self._sql_target, (target_id, outdial_id, customer_id), _first_text)

    def target_by_id(self, target_id: str) -> FoundTarget | None:
        """Any customer's target, deleted or not. For trusted callers only."""
        return self.run(self.target_by_id_read(target_id))

    def target_by_id_read(self, target_id: str) -> Read[FoundTarget | None]:
        return self._read(self._sql_target_by_id, (target_id,), _found_target)

    # ---- lists -------------------------------------------------------------
    def outdials_page(self, filters: OutdialFilters, after: Cursor | None, size: int) -> Page:
        where, params = filters.where()
        columns = "tm_create, id, body, customer_id"
        return self._page(self._outdials, columns, where, params, after, size)

    def targets_page(self, outdial_id: str, after: Cursor | None, size: int) -> Page:
        """The outdial's live targets (whose customer is the outdial's)."""
        where = "outdial_id = ? AND deleted = 0"
        return self._page(self._targets, "tm_create, id, body", where, [outdial_id], after, size)

    def targets_page_read(
        self, customer_id: str | None, outdial_id: str, after: Cursor | None, size: int
    ) -> Read[JoinedPage | None]:
        """The outdial (the customer's, or any customer's for a trusted caller) and a
        page of its live targets, newest first, strictly after the cursor, in one
        statement: the bodies joined by the store. None: no such outdial."""
        where, cursor_params = _after_cursor("outdial_id = ? AND deleted = 0", [outdial_id], after)
        key = (customer_id is not None, where)
        statement = self._sql_joined_pages.get(key)
        if statement is None:
            statement = self._sql_joined_pages[key] = self._joined_page_sql(
                where, customer_id is not None
            )
        params = [*cursor_params, size, *cursor_params, size - 1, *cursor_params, outdial_id]
        if customer_id is not None:
            params.append(customer_id)
        return Read(statement, params, _joined_page, inline=False)

    def _joined_page_sql(self, where: str, of_customer: bool) -> str:
        """Both stores aggregate a subquery's rows in the order it gives them (a
        LIMITed, ORDERed subquery of one table, no join): the page's bodies newest
        first, and the keys of the page's last row and of the row beyond."""
        t, newest = self._targets, "ORDER BY tm_create DESC, id DESC"
        page = f"SELECT body FROM {t} WHERE {where} {newest} LIMIT ?"
        if self.dialect.kind == "postgres":
            joined = f"SELECT string_agg(body, ',') FROM ({page}) p"
            keys = "string_agg(tm_create || '|' || id, ',')"
        else:
            # As bytes: what the HTTP API sends, without a str made of them first.
            joined = f"SELECT CAST(group_concat(body, ',') AS BLOB) FROM ({page}) p"
            keys = "group_concat(tm_create || '|' || id, ',')"
        # The page's last row and the one beyond it, when the page is full (an index
        # scan, no table rows); else the page holds the oldest row, and no more.
        full = (
            f"SELECT {keys} FROM (SELECT tm_create, id FROM {t} WHERE {where} {newest} "
            "LIMIT 2 OFFSET ?) k"
        )
        oldest = (
            f"SELECT tm_create || '|' || id FROM {t} WHERE {where} ORDER BY tm_create, id LIMIT 1"
        )
        owner = "id = ? AND customer_id = ?" if of_customer else "id = ?"
        return self.dialect.sql(
            f"SELECT deleted, customer_id, ({joined}), ({full}), ({oldest}) "
            f"FROM {self._outdials} WHERE {owner}"
        )

    def _page(
        self,
        from_table: str,
        columns: str,
        where: str,
        params: list[Any],
        after: Cursor | None,
        size: int,
    ) -> Page:
        """The rows `where` holds, newest first, strictly after the cursor."""
        where, params = _after_cursor(where, params, after)
        params.append(size + 1)
        # Text columns come as str from both drivers: the rows are used as they are.
        rows = self._all(
            f"SELECT {columns} FROM {from_table} WHERE {where} "
            "ORDER BY tm_create DESC, id DESC LIMIT ?",
            params,
        )
        more = len(rows) > size
        return Page(rows[:size], more, rows[size][TM_CREATE] if more else None)

    # ---- dialing -----------------------------------------------------------
    def available(
        self,
        outdial_id: str,
        max_try_counts: Sequence[int],
        updated_before: str | None,
        limit: int,
        offset: int = 0,
        *,
        columns: str = "id, body",
    ) -> list[tuple[str, str]]:
        """Available targets (CONTRACT 2) as (id, body), least recently updated first:
        idle, not deleted, some present destination with tries left, and (when
        `updated_before` is given) never tried or not changed since. The outdial's
        own state is the caller's business."""
        tries_left = " OR ".join(
            f"((present & {1 << i}) != 0 AND try_count_{i} < ?)"
            for i, most in enumerate(max_try_counts)
            if most > 0
        )
        if not tries_left:
            return []  # no destination may be tried at all
        params: list[Any] = [outdial_id, *(m for m in max_try_counts if m > 0)]
        where = f"outdial_id = ? AND deleted = 0 AND status = 'idle' AND ({tries_left})"
        if updated_before is not None:
            untried = " + ".join(f"try_count_{i}" for i in range(5))
            where += f" AND ({untried} = 0 OR tm_update <= ?)"
            params.append(updated_before)
        params += [limit, offset]
        rows = self._all(
            f"SELECT {columns} FROM {self._targets} WHERE {where} "
            "ORDER BY tm_update, id LIMIT ? OFFSET ?",
            params,
        )
        return [tuple(map(str, r)) for r in rows]  # type: ignore[misc]

    def claim_candidates(
        self,
        outdial_id: UUID,
        max_try_counts: Sequence[int],
        updated_before: datetime | None,
        limit: int,
        offset: int,
    ) -> list[UUID]:
        """The ids of `available` targets, for a claim to check (the command side's
        `CandidateFinder`)."""
        before = None if updated_before is None else shapes.timestamp(updated_before)
        rows = self.available(str(outdial_id), max_try_counts, before, limit, offset, columns="id")
        return [UUID(row[0]) for row in rows]

    def progress(
        self, customer_id: str, max_try_counts: Sequence[int], limit: int
    ) -> list[dict[str, Any]]:
        """The customer's newest live outdials, each with its live targets counted by
        state (idle, progressing, done, and exhausted: idle with no tries left under
        `max_try_counts`) and its tries summed per destination."""
        tries_left = " OR ".join(
            f"((t.present & {1 << i}) != 0 AND t.try_count_{i} < {int(most)})"
            for i, most in enumerate(max_try_counts)
            if most > 0
        )
        exhausted = (
            f"t.status = 'idle' AND NOT ({tries_left})" if tries_left else "t.status = 'idle'"
        )
        tries = ", ".join(f"COALESCE(SUM(t.try_count_{i}), 0)" for i in range(5))
        states = ", ".join(
            f"COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0)"
            for condition in (
                f"t.status = 'idle' AND NOT ({exhausted})",
                "t.status = 'progressing'",
                "t.status = 'done'",
                exhausted,
            )
        )
        rows = self._all(
            f"SELECT o.id, o.body, {states}, {tries} FROM "
            f"(SELECT id, body, tm_create FROM {self._outdials} WHERE customer_id = ? "
            "AND deleted = 0 ORDER BY tm_create DESC, id DESC LIMIT ?) o "
            f"LEFT JOIN {self._targets} t ON t.outdial_id = o.id AND t.deleted = 0 "
            "GROUP BY o.id, o.body, o.tm_create ORDER BY o.tm_create DESC, o.id DESC",
            [customer_id, limit],
        )
        return [
            {
                "outdial": orjson.loads(r[1]),
                "targets": dict(
                    zip(("idle", "progressing", "done", "exhausted"), map(int, r[2:6]), strict=True)
                ),
                "tries": [int(n) for n in r[6:11]],
            }
            for r in rows
        ]

    # ---- whole tables (replay --check) -------------------------------------
    def dump(self, cursor: Any) -> Iterator[DumpedRow]:
        """Every row of both tables, in id order, read through `cursor` (a
        snapshot's): its body, and its other columns (what lists filter and claims
        pick by) by name."""
        for name, full in ((OUTDIALS, self._outdials), (TARGETS, self._targets)):
            others = [c for c in column_names(name) if c not in ("id", "body")]
            cursor.execute(
                f"SELECT id, body, {', '.join(others)} FROM {full} "
                f"ORDER BY id {self.dialect.byte_order}"
            )
            for row in cursor.fetchall():
                columns = dict(zip(others, row[2:], strict=True))
                yield DumpedRow(name, str(row[0]), str(row[1]), columns)


def _after_cursor(where: str, params: list[Any], after: Cursor | None) -> tuple[str, list[Any]]:
    """`where` narrowed to the rows strictly after the cursor, newest first (a cursor
    of VoIPbin's holds the time alone), and its parameters (a new list)."""
    params = list(params)
    if after is not None:
        tm, row_id = after
        if row_id is None:
            where += " AND tm_create < ?"
            params.append(tm)
        else:
            where += " AND (tm_create < ? OR (tm_create = ? AND id < ?))"
            params += [tm, tm, row_id]
    return where, params
