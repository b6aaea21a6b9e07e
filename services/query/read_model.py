"""The read model: outdials and targets as the API serves them, on SQLite or PostgreSQL.

Each row keeps the resource's rendered JSON (`body`, exactly what the API
answers) beside the columns the API filters and sorts by. The read model is an
eventsourcing tracking recorder: every batch of rows is written in the same
transaction as the projection's position (`Tracking`), and the tracking upsert
refuses a position that does not increase, so each event is applied exactly
once even with two projectors on one store or a crash mid-batch.

Tables come in sets: the live set (`rm_outdials`, `rm_targets`) and sets with
a suffix that a replay builds beside it (`_next`) and then swaps in by renaming.

Every query the API makes is served by an index:
- an outdial or target by id: the primary keys;
- a customer's live outdials, newest first: `(customer_id, tm_create, id)` where not deleted;
- an outdial's live targets, newest first: `(outdial_id, tm_create, id)` where not deleted;
- an outdial's available targets, least recently updated first: `(outdial_id,
  tm_update, id)` where idle and not deleted.
"""

from __future__ import annotations

import contextlib
import copy
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import orjson
from eventsourcing.persistence import IntegrityError, OperationalError, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder

LIVE = ""
NEXT = "_next"

OutdialRow = tuple[str, str, str, int, str]  # id, customer_id, tm_create, deleted, body
# id, outdial_id, customer_id, tm_create, deleted, status, tm_update, present, 5 try counts, body
TargetRow = tuple[str, str, str, str, int, str, str, int, int, int, int, int, int, str]
TARGET_COLUMNS = (
    "id, outdial_id, customer_id, tm_create, deleted, status, tm_update, present, "
    "try_count_0, try_count_1, try_count_2, try_count_3, try_count_4, body"
)


_TABLES = [
    (
        "rm_outdials",
        "id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, tm_create TEXT NOT NULL, "
        "deleted INTEGER NOT NULL, body TEXT NOT NULL",
        "customer_id",
    ),
    (
        "rm_targets",
        "id TEXT PRIMARY KEY, outdial_id TEXT NOT NULL, customer_id TEXT NOT NULL, "
        "tm_create TEXT NOT NULL, deleted INTEGER NOT NULL, status TEXT NOT NULL, "
        # What the available query filters on: when it last changed, which
        # destinations exist (bit i: destination_i), and the tries of each.
        "tm_update TEXT NOT NULL, present INTEGER NOT NULL, "
        "try_count_0 INTEGER NOT NULL, try_count_1 INTEGER NOT NULL, "
        "try_count_2 INTEGER NOT NULL, try_count_3 INTEGER NOT NULL, "
        "try_count_4 INTEGER NOT NULL, body TEXT NOT NULL",
        "outdial_id",
    ),
]


@dataclass(frozen=True)
class Page:
    rows: list[tuple[str, str, str]]  # tm_create, id, body
    more: bool  # a row beyond the page exists
    next_tm_create: str | None  # tm_create of the first row beyond the page


class ReadModelMixin:
    """SQL shared by both stores; the subclasses say how to reach the database."""

    suffix: str = LIVE
    local = True  # a file on this machine: reads are quick enough to run inline
    param = "?"
    byte_order = ""  # a collation that sorts ids as Python compares them

    # ---- names -------------------------------------------------------------
    def table(self, name: str, suffix: str | None = None) -> str:
        raise NotImplementedError

    @property
    def tracking_name(self) -> str:
        return "readmodel" + self.suffix

    def _sql(self, statement: str) -> str:
        return statement if self.param == "?" else statement.replace("?", self.param)

    # ---- transactions (per store) ------------------------------------------
    def _write(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _insert_tracking(self, c: Any, tracking: Tracking) -> None:
        raise NotImplementedError

    def _reader(self) -> Any:
        """This thread's own connection for the API's reads (made on first use,
        made again once closed)."""
        readers = self.__dict__.setdefault("_readers", threading.local())
        connection = getattr(readers, "connection", None)
        if connection is None or getattr(connection, "closed", False):
            connection = readers.connection = self._connect_reader()
        return connection

    def _connect_reader(self) -> Any:
        raise NotImplementedError

    def _after_write(self, c: Any, position: int) -> None:
        """A hook for PostgreSQL's NOTIFY."""

    # ---- schema ------------------------------------------------------------
    def create_views(self) -> None:
        with self._write() as c:
            for name, columns, owner in _TABLES:
                table = self.table(name)
                if self._exists(c, table):
                    continue
                c.execute(f"CREATE TABLE {table} ({columns})")
                # A fresh index name: a swapped-in table keeps its index's name,
                # so a fixed one would collide with the next rebuild's.
                c.execute(
                    f"CREATE INDEX {name}_list_{uuid.uuid4().hex[:12]} ON {table} "
                    f"({owner}, tm_create DESC, id DESC) WHERE deleted = 0"
                )
                if name == "rm_targets":
                    # The available query: idle targets of an outdial, least recently
                    # updated first; done, progressing and deleted ones are not in it.
                    c.execute(
                        f"CREATE INDEX rm_targets_idle_{uuid.uuid4().hex[:12]} ON {table} "
                        "(outdial_id, tm_update, id) WHERE deleted = 0 AND status = 'idle'"
                    )

    def _exists(self, c: Any, table: str) -> bool:
        raise NotImplementedError

    def drop_views(self) -> None:
        with self._write() as c:
            for name in ("rm_outdials", "rm_targets"):
                c.execute(f"DROP TABLE IF EXISTS {self.table(name)}")

    def variant(self, suffix: str) -> Self:
        """The same store's other set of tables (a rebuild's), tracked under its own name."""
        other = copy.copy(self)
        other.suffix = suffix
        return other

    # ---- the projection's writes -------------------------------------------
    def write(
        self, outdials: Sequence[OutdialRow], targets: Sequence[TargetRow], position: int
    ) -> None:
        """Rows and the projection's new position, in one transaction."""
        with self._write() as c:
            # Tracking first: it takes the write lock (SQLite) and fails fast
            # when another projector already applied this batch.
            self._insert_tracking(c, Tracking(self.tracking_name, position))
            self.write_rows(c, outdials, targets)
            self._after_write(c, position)

    def write_rows(
        self, c: Any, outdials: Sequence[OutdialRow], targets: Sequence[TargetRow]
    ) -> None:
        if outdials:
            c.executemany(
                self._sql(
                    f"INSERT INTO {self.table('rm_outdials')} "
                    "(id, customer_id, tm_create, deleted, body) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET "
                    "deleted = excluded.deleted, body = excluded.body"
                ),
                outdials,
            )
        if targets:
            c.executemany(
                self._sql(
                    f"INSERT INTO {self.table('rm_targets')} ({TARGET_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET deleted = excluded.deleted, "
                    "status = excluded.status, tm_update = excluded.tm_update, "
                    "try_count_0 = excluded.try_count_0, try_count_1 = excluded.try_count_1, "
                    "try_count_2 = excluded.try_count_2, try_count_3 = excluded.try_count_3, "
                    "try_count_4 = excluded.try_count_4, body = excluded.body"
                ),
                targets,
            )

    # ---- replay ------------------------------------------------------------
    def swap_in(self, rebuilt: ReadModelMixin, catch_up: Callable[[Any, int, int], int]) -> int:
        """Make the `rebuilt` tables the live ones, in one transaction.

        The live projection is locked out first; `catch_up(c, start, stop)` then
        brings the rebuilt tables up to the live position inside this transaction,
        so the live projection carries on from where it was, on the new tables.
        Returns the position of the new live tables.
        """
        with self._write() as c:
            live = self._lock_for_swap(c)
            position = self._tracked(c, rebuilt.tracking_name)
            if position < live:
                position = catch_up(c, position, live)
            for name in ("rm_outdials", "rm_targets"):
                # RENAME TO takes a bare name: the table stays in its schema.
                c.execute(f"ALTER TABLE {self.table(name)} RENAME TO {name}_old")
                c.execute(f"ALTER TABLE {rebuilt.table(name)} RENAME TO {name}")
                c.execute(f"DROP TABLE {self.table(name, '_old')}")
            c.execute(
                self._sql(
                    f"UPDATE {self.tracking_table} SET notification_id = ? "
                    "WHERE application_name = ?"
                ),
                (max(position, live), self.tracking_name),
            )
            c.execute(
                self._sql(f"DELETE FROM {self.tracking_table} WHERE application_name = ?"),
                (rebuilt.tracking_name,),
            )
        return max(position, live)

    def tracked_in(self, c: Any) -> int:
        """This model's position, read through a caller's transaction."""
        return self._tracked(c, self.tracking_name)

    def forget_position(self) -> None:
        with self._write() as c:
            c.execute(
                self._sql(f"DELETE FROM {self.tracking_table} WHERE application_name = ?"),
                (self.tracking_name,),
            )

    def _tracked(self, c: Any, name: str) -> int:
        c.execute(
            self._sql(
                f"SELECT notification_id FROM {self.tracking_table} WHERE application_name = ?"
            ),
            (name,),
        )
        row = c.fetchone()
        return 0 if row is None else int(_first(row) or 0)

    def _lock_for_swap(self, c: Any) -> int:
        """Lock out the live projection (and, briefly, readers); return its position."""
        raise NotImplementedError

    @property
    def tracking_table(self) -> str:
        raise NotImplementedError

    def snapshot(self) -> contextlib.AbstractContextManager[Any]:
        """A read transaction that sees one moment: the position and every row as of it."""
        return self._read()

    def dump(self, c: Any) -> Iterator[tuple[str, str, str]]:
        """Every row of both tables as (table, id, body), in id order, read through `c`."""
        for name in ("rm_outdials", "rm_targets"):
            c.execute(f"SELECT id, body FROM {self.table(name)} ORDER BY id {self.byte_order}")
            for row in c.fetchall():
                yield name, str(row[0]), str(row[1])

    # ---- the API's reads ---------------------------------------------------
    def position(self) -> int:
        return self.max_tracking_id(self.tracking_name) or 0  # type: ignore[attr-defined]

    def outdial(self, customer_id: str, outdial_id: str) -> tuple[str, bool] | None:
        """The outdial's body and whether it is deleted; None if absent or another's."""
        with self._read() as c:
            c.execute(
                self._sql(
                    f"SELECT body, deleted FROM {self.table('rm_outdials')} "
                    "WHERE id = ? AND customer_id = ?"
                ),
                (outdial_id, customer_id),
            )
            row = c.fetchone()
        return None if row is None else (row[0], bool(row[1]))

    def outdial_by_id(self, outdial_id: str) -> tuple[str, str, bool] | None:
        """Any customer's outdial: (body, customer_id, deleted). For trusted callers only."""
        with self._read() as c:
            c.execute(
                self._sql(
                    f"SELECT body, customer_id, deleted FROM {self.table('rm_outdials')} "
                    "WHERE id = ?"
                ),
                (outdial_id,),
            )
            row = c.fetchone()
        return None if row is None else (str(row[0]), str(row[1]), bool(row[2]))

    def target_by_id(self, target_id: str) -> tuple[str, str, str, bool] | None:
        """Any customer's target: (body, outdial_id, customer_id, deleted). Trusted callers only."""
        with self._read() as c:
            c.execute(
                self._sql(
                    f"SELECT body, outdial_id, customer_id, deleted FROM "
                    f"{self.table('rm_targets')} WHERE id = ?"
                ),
                (target_id,),
            )
            row = c.fetchone()
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]), bool(row[3]))

    def target(self, customer_id: str, outdial_id: str, target_id: str) -> str | None:
        with self._read() as c:
            c.execute(
                self._sql(
                    f"SELECT body FROM {self.table('rm_targets')} "
                    "WHERE id = ? AND outdial_id = ? AND customer_id = ?"
                ),
                (target_id, outdial_id, customer_id),
            )
            row = c.fetchone()
        return None if row is None else str(row[0])

    def available(
        self,
        outdial_id: str,
        max_try_counts: Sequence[int],
        updated_before: str | None,
        limit: int,
        offset: int = 0,
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
        with self._read() as c:
            c.execute(
                self._sql(
                    f"SELECT id, body FROM {self.table('rm_targets')} WHERE {where} "
                    "ORDER BY tm_update, id LIMIT ? OFFSET ?"
                ),
                params,
            )
            return [(str(r[0]), str(r[1])) for r in c.fetchall()]

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
        outdials, targets = self.table("rm_outdials"), self.table("rm_targets")
        with self._read() as c:
            c.execute(
                self._sql(
                    f"SELECT o.id, o.body, {states}, {tries} FROM "
                    f"(SELECT id, body, tm_create FROM {outdials} WHERE customer_id = ? "
                    "AND deleted = 0 ORDER BY tm_create DESC, id DESC LIMIT ?) o "
                    f"LEFT JOIN {targets} t ON t.outdial_id = o.id AND t.deleted = 0 "
                    "GROUP BY o.id, o.body, o.tm_create ORDER BY o.tm_create DESC, o.id DESC"
                ),
                [customer_id, limit],
            )
            rows = c.fetchall()
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

    def outdials_page(
        self, customer_id: str, after: tuple[str, str | None] | None, size: int
    ) -> Page:
        return self._page("rm_outdials", "customer_id", customer_id, after, size)

    def targets_page(
        self, outdial_id: str, after: tuple[str, str | None] | None, size: int
    ) -> Page:
        return self._page("rm_targets", "outdial_id", outdial_id, after, size)

    def _page(
        self,
        table: str,
        owner_column: str,
        owner: str,
        after: tuple[str, str | None] | None,
        size: int,
    ) -> Page:
        """Live rows newest first, strictly after the cursor `(tm_create, id)`;
        an id of None means after every row of that tm_create."""
        where = f"{owner_column} = ? AND deleted = 0"
        params: list[Any] = [owner]
        if after is not None:
            tm, row_id = after
            if row_id is None:
                where += " AND tm_create < ?"
                params.append(tm)
            else:
                where += " AND (tm_create < ? OR (tm_create = ? AND id < ?))"
                params += [tm, tm, row_id]
        params.append(size + 1)
        with self._read() as c:
            c.execute(
                self._sql(
                    f"SELECT tm_create, id, body FROM {self.table(table)} WHERE {where} "
                    "ORDER BY tm_create DESC, id DESC LIMIT ?"
                ),
                params,
            )
            rows = [(r[0], r[1], r[2]) for r in c.fetchall()]
        more = len(rows) > size
        return Page(rows[:size], more, rows[size][0] if more else None)


class SQLiteReadModel(ReadModelMixin, SQLiteTrackingRecorder):
    def table(self, name: str, suffix: str | None = None) -> str:
        return name + (self.suffix if suffix is None else suffix)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        # BEGIN IMMEDIATE, not eventsourcing's plain BEGIN: a deferred transaction
        # that reads first (does the table exist? where is the tracking?) and then
        # writes gets SQLITE_BUSY at once, without waiting, when another process
        # committed in between: its snapshot is stale. Taking the write lock first
        # waits for it (SQLITE_LOCK_TIMEOUT) and reads only what is current.
        with self.datastore.get_connection(commit=True) as connection:
            cursor = connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                connection.commit()
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    connection.rollback()
                if isinstance(e, sqlite3.OperationalError):
                    raise OperationalError(e) from e
                if isinstance(e, sqlite3.IntegrityError):
                    raise IntegrityError(e) from e
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        # A plain read-only connection per thread, in autocommit: one statement is
        # one consistent read (WAL), without the pool's locks, BEGIN and ROLLBACK
        # that a read through eventsourcing's datastore pays. Multi-statement
        # reads that must agree use `snapshot`.
        yield self._reader().cursor()

    def _connect_reader(self) -> Any:
        connection = sqlite3.connect(
            self.datastore.pool.db_name, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA query_only = ON")
        return connection

    def snapshot(self) -> contextlib.AbstractContextManager[Any]:
        return self.datastore.transaction(commit=False)

    def _insert_tracking(self, c: Any, tracking: Tracking) -> None:
        SQLiteTrackingRecorder._insert_tracking(self, c, tracking)

    def _exists(self, c: Any, table: str) -> bool:
        c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return c.fetchone() is not None

    @property
    def tracking_table(self) -> str:
        return "tracking"

    def _lock_for_swap(self, c: Any) -> int:
        # A write takes SQLite's one write lock: no projector commits until we do.
        c.execute(
            "INSERT INTO tracking VALUES (?, 0) ON CONFLICT (application_name) DO NOTHING",
            (self.tracking_name,),
        )
        return self._tracked(c, self.tracking_name)


class PostgresReadModel(ReadModelMixin, PostgresTrackingRecorder):
    local = False
    param = "%s"
    byte_order = 'COLLATE "C"'
    CHANNEL = "outdial_readmodel"

    def table(self, name: str, suffix: str | None = None) -> str:
        full = name + (self.suffix if suffix is None else suffix)
        return f'"{self.datastore.schema}"."{full}"'

    def _write(self) -> contextlib.AbstractContextManager[Any]:
        return self.datastore.transaction(commit=True)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        # A connection per reading thread, in autocommit: the pool's checkout
        # pings the server first (pre-ping, for the write side's sake), which
        # would double every read's round trips. A broken one is dropped, and
        # the next read connects again.
        import psycopg

        connection = self._reader()
        try:
            with connection.cursor(row_factory=_tuple_row) as c:
                yield c
        except psycopg.OperationalError:
            connection.close()
            raise

    def _connect_reader(self) -> Any:
        import psycopg

        pool = self.datastore.pool
        options = dict(pool.kwargs) if isinstance(pool.kwargs, dict) else {}
        return psycopg.connect(str(pool.conninfo), autocommit=True, **options)

    def _insert_tracking(self, c: Any, tracking: Tracking) -> None:
        PostgresTrackingRecorder._insert_tracking(self, c, tracking)

    def _exists(self, c: Any, table: str) -> bool:
        c.execute("SELECT to_regclass(%s) AS oid", (table,))
        row = c.fetchone()
        return row is not None and row["oid"] is not None

    @property
    def tracking_table(self) -> str:
        return f'"{self.datastore.schema}"."{self.tracking_table_name}"'

    def _lock_for_swap(self, c: Any) -> int:
        # The tracking row first, as a projector's transaction takes it first too:
        # the other order could deadlock with a projector mid-page.
        c.execute(
            f"INSERT INTO {self.tracking_table} VALUES (%s, 0) "
            "ON CONFLICT (application_name) DO NOTHING",
            (self.tracking_name,),
        )
        c.execute(
            f"SELECT notification_id FROM {self.tracking_table} "
            "WHERE application_name = %s FOR UPDATE",
            (self.tracking_name,),
        )
        row = c.fetchone()
        c.execute(
            f"LOCK TABLE {self.table('rm_outdials')}, {self.table('rm_targets')} "
            "IN ACCESS EXCLUSIVE MODE"
        )
        return int(_first(row) or 0)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Any]:
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(force_rollback=True),
            conn.cursor(row_factory=_tuple_row) as c,
        ):
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield c

    def _after_write(self, c: Any, position: int) -> None:
        # Delivered at commit: query processes waiting for a position wake up.
        c.execute("SELECT pg_notify(%s, %s)", (self.channel, str(position)))

    @property
    def channel(self) -> str:
        return f"{self.CHANNEL}_{self.datastore.schema}"[:63]


def _first(row: Any) -> Any:
    """The first column of a row of any of the drivers' row types."""
    if row is None:
        return None
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]


def _tuple_row(cursor: Any) -> Any:
    from psycopg.rows import tuple_row

    return tuple_row(cursor)
