"""Rebuilding the read model from the event store (CONTRACT 6), while the service
keeps writing.

The rows of a resource are its state after its last event, so a rebuild reads
the log **aggregate by aggregate** (the events table's primary key order),
folds each aggregate's events once, and writes its row into a second set of
tables (`*_next`): no aggregate is loaded twice, none is kept once its row is
written. It reads the events up to the position it started at; meanwhile
commands go on writing their rows inline into the live tables. Then one
transaction holds the writers off, brings the new tables up to the events
stored meanwhile (the few resources they touched, loaded whole), renames the
new tables into place and sets the read model's position: readers see the old
model, then the new one, never a mix, and no row written during the rebuild is
lost.

`check` builds `*_check` tables up to the live model's position, read in one
snapshot with the live rows, and compares them row for row.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO, cast
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from tqdm import tqdm

from services.command.application import OutdialApplication
from services.command.domain import Outdial, OutdialTarget
from services.command.legacy import RECEIPT_TOPIC
from services.progress import progress
from services.query import event_rows, schema
from services.query.event_rows import StoredRow
from services.query.queries import DumpedRow, Queries
from services.query.schema import CHECK, NEXT, READ_MODEL
from services.query.sqlite_loader import Loader
from services.query.writes import (
    OutdialRow,
    TargetRow,
    by_table,
    insert_new_rows,
    outdial_row,
    overwrite_rows,
    target_row,
)
from services.store import (
    head,
    insert_statement,
    postgres_conninfo,
    read_position,
    read_transaction,
    replay_lock,
    write_position,
    write_transaction,
)

# Rows loaded per transaction while rebuilding, and bytes of their bodies: few
# transactions, but rows of targets with 64 KiB of data each must not pile up in
# memory by the ten thousand.
BATCH = 20_000
BATCH_BYTES = 32 * 1024 * 1024
# Events read from the store at a time.
FETCH = 200
# Bytes of memory an index of the rebuilt tables is sorted in.
SORT_MEMORY = 256 * 1024 * 1024
# Bytes of a SQLite store read through a memory map (SQLite's own upper bound).
MMAP = 0x7FFF0000


def _events_by_aggregate(
    app: OutdialApplication, stop: int, counted: Callable[[int], Any] | None = None
) -> Iterator[StoredRow]:
    """Every stored event up to position `stop` as (originator_id, version, topic,
    state), aggregate by aggregate, each aggregate's in version order (the events
    table's primary key); `counted` is told how many at a time."""
    recorder: Any = app.recorder
    dialect = app.store.dialect
    events = dialect.table(recorder.events_table_name)
    position = "rowid" if dialect.kind == "sqlite" else "notification_id"
    statement = dialect.sql(
        f"SELECT originator_id, originator_version, topic, state FROM {events} "
        f"WHERE {position} <= ? AND topic NOT LIKE ? "
        "ORDER BY originator_id, originator_version"
    )
    params = (stop, RECEIPT_TOPIC + ".%")
    if dialect.kind == "sqlite":
        # A connection of its own, the file mapped: the primary key's order is not
        # the table's, so each event is a lookup in the table, a read() call each
        # without the map. The events up to `stop` are the same in any later snapshot.
        connection = sqlite3.connect(app.store.path)
        try:
            connection.execute(f"PRAGMA mmap_size = {MMAP}")
            c = connection.execute(statement, params)
            while rows := c.fetchmany(FETCH):
                if counted is not None:
                    counted(len(rows))
                yield from rows
        finally:
            connection.close()
        return
    # COPY out: a million events streamed, not loaded at once, and without the round
    # trip per page a server-side cursor makes.
    from psycopg import sql

    query = sql.SQL(
        "COPY (SELECT originator_id, originator_version, topic, state FROM {} "
        "WHERE notification_id <= {} AND topic NOT LIKE {} "
        "ORDER BY originator_id, originator_version) TO STDOUT"
    ).format(sql.SQL(events), sql.Literal(stop), sql.Literal(RECEIPT_TOPIC + ".%"))
    with (
        recorder.datastore.get_connection() as conn,
        conn.transaction(),
        conn.cursor() as c,
        c.copy(query) as copy,
    ):
        copy.set_types(["uuid", "int8", "text", "bytea"])
        n = 0
        for n, r in enumerate(copy.rows(), start=1):
            if counted is not None and n % FETCH == 0:
                counted(FETCH)
            yield r[0], r[1], r[2], bytes(r[3])
        if counted is not None:
            counted(n % FETCH)


def _tuple_rows(cursor: Any) -> Any:
    from psycopg.rows import tuple_row

    return tuple_row(cursor)


def _row_of(aggregate: Aggregate | None) -> OutdialRow | TargetRow | None:
    if isinstance(aggregate, OutdialTarget):
        return target_row(aggregate)
    if isinstance(aggregate, Outdial):
        return outdial_row(aggregate)
    return None


def rows_up_to(app: OutdialApplication, stop: int, bar: tqdm[Any] | None = None) -> Iterator[Any]:
    """The row of every resource as of position `stop`: folded from the events'
    JSON (`event_rows`), or, for events it does not know, through the aggregate."""
    to_event = app.mapper.to_domain_event

    def through_aggregate(group: list[StoredRow]) -> OutdialRow | TargetRow | None:
        aggregate: Any = None
        for originator_id, version, topic, state in group:
            stored = StoredEvent(UUID(str(originator_id)), version, topic, state)
            aggregate = cast(Any, to_event(stored)).mutate(aggregate)
        return _row_of(aggregate)

    events = _events_by_aggregate(app, stop, None if bar is None else bar.update)
    yield from event_rows.fold(events, through_aggregate)


def _write_batches(
    app: OutdialApplication, rows: Iterable[Any], suffix: str, *, indexes: bool = False
) -> None:
    """Load rows into the empty `suffix` tables, in large transactions on a
    connection of the load's own: on SQLite, plain INSERTs (each resource comes
    once) in a process of their own (`sqlite_loader`); on PostgreSQL, COPY. With
    `indexes`, then make the tables' secondary indexes (made without them: one sort
    each, not an entry put in place per row), each in a transaction of its own."""
    with _loader(app, suffix) as (load, run):
        with _beside(load) as put:
            batch: list[Any] = []
            size = 0
            for row in rows:
                batch.append(row)
                size += len(row.body)
                if len(batch) >= BATCH or size >= BATCH_BYTES:
                    put(batch)
                    batch, size = [], 0
            if batch:
                put(batch)
        for statement in schema.index_statements(app.store.dialect, suffix) if indexes else []:
            run(statement)


@contextlib.contextmanager
def _beside(load: Callable[[list[Any]], None]) -> Iterator[Callable[[list[Any]], None]]:
    """`load` on a thread of its own, a batch behind the caller: the store inserts
    one batch (the driver lets go of the GIL meanwhile) while the next is folded.
    At most two batches wait; the thread's error is raised here."""
    batches: queue.Queue[list[Any] | None] = queue.Queue(maxsize=2)
    failed: list[BaseException] = []

    def work() -> None:
        while (batch := batches.get()) is not None:
            if not failed:
                try:
                    load(batch)
                except BaseException as e:
                    failed.append(e)

    def put(batch: list[Any]) -> None:
        if failed:
            raise failed[0]
        batches.put(batch)

    thread = threading.Thread(target=work, name="replay-load", daemon=True)
    thread.start()
    try:
        yield put
    finally:
        batches.put(None)
        thread.join()
    if failed:
        raise failed[0]


_Load = Callable[[list[Any]], None]
_Run = Callable[[str], None]


@contextlib.contextmanager
def _loader(app: OutdialApplication, suffix: str) -> Iterator[tuple[_Load, _Run]]:
    """(load rows, run a statement), each in a transaction of its own."""
    store = app.store
    dialect = store.dialect
    if store.kind == "sqlite":
        # A process of its own (`sqlite_loader`): beside the fold, a thread of this
        # one would wait for the GIL at every row it inserts.
        with Loader(store.path, SORT_MEMORY) as child:

            def insert(rows: list[Any]) -> None:
                child.run(
                    [
                        # Plain tuples: the child knows no row classes.
                        (insert_statement("sqlite", name, columns), [tuple(r) for r in of_kind])
                        for name, columns, of_kind in by_table(dialect, rows, suffix)
                        if of_kind
                    ]
                )

            def run(statement: str) -> None:
                child.run([(statement, None)])

            yield insert, run
        return
    import psycopg

    with psycopg.connect(postgres_conninfo(store)) as pg:
        # The index sorts in memory (PostgreSQL's default, 64 MB, spills a million
        # rows' index keys to disk).
        pg.execute(f"SET maintenance_work_mem = '{SORT_MEMORY // 1024 // 1024}MB'")

        def copy(rows: list[Any]) -> None:
            with pg.transaction(), pg.cursor() as c:
                insert_new_rows(c, dialect, rows, suffix)

        def execute(statement: str) -> None:
            with pg.transaction():
                pg.execute(statement)

        yield copy, execute


def _changed_since(cursor: Any, app: OutdialApplication, start: int) -> tuple[int, list[Any]]:
    """Through `cursor` (of the transaction that holds the writers off): the position
    of the last event, and the rows, as they stand now, of the resources changed
    after `start` (loaded whole: the events stored while a rebuild ran are few).

    Through the same cursor, not the pool: on SQLite a second connection asked for
    while this one writes waits behind every writer queued for the pool."""
    recorder: Any = app.recorder
    dialect = app.store.dialect
    events = dialect.table(recorder.events_table_name)
    position = "rowid" if dialect.kind == "sqlite" else "notification_id"
    cursor.execute(f"SELECT MAX({position}) FROM {events}")
    now = int(cursor.fetchone()[0] or 0)
    cursor.execute(
        dialect.sql(
            f"SELECT DISTINCT originator_id FROM {events} WHERE {position} > ? AND topic NOT LIKE ?"
        ),
        (start, RECEIPT_TOPIC + ".%"),
    )
    changed = [row[0] for row in cursor.fetchall()]
    to_event = app.mapper.to_domain_event
    rows = []
    for originator_id in changed:
        cursor.execute(
            dialect.sql(
                f"SELECT originator_id, originator_version, topic, state FROM {events} "
                "WHERE originator_id = ? ORDER BY originator_version"
            ),
            (originator_id,),
        )
        aggregate: Any = None
        for r in cursor.fetchall():
            stored = StoredEvent(UUID(str(r[0])), r[1], r[2], bytes(r[3]))
            event: Any = to_event(stored)
            aggregate = event.mutate(aggregate)
        if (row := _row_of(aggregate)) is not None:
            rows.append(row)
    return now, rows


def _progress(total: int, out: TextIO, desc: str, *, quiet: bool = False) -> tqdm[Any]:
    return progress(total, "events", desc, out, quiet=quiet)


def _count_events(app: OutdialApplication, stop: int) -> int:
    recorder: Any = app.recorder
    dialect = app.store.dialect
    position = "rowid" if dialect.kind == "sqlite" else "notification_id"
    with read_transaction(recorder) as c:
        c.execute(
            dialect.sql(
                f"SELECT COUNT(*) FROM {dialect.table(recorder.events_table_name)} "
                # The receipts of a store of an earlier version are not replayed.
                f"WHERE {position} <= ? AND topic NOT LIKE ?"
            ),
            (stop, RECEIPT_TOPIC + ".%"),
        )
        return int(c.fetchone()[0])


def rebuild(
    app: OutdialApplication, *, out: TextIO = sys.stderr, quiet: bool = False, wait: bool = True
) -> int:
    """Rebuild the read model and swap it in; return its position. `wait`: for a
    rebuild or check another process is making (`replay_lock`), else raise Busy."""
    with _one_at_a_time(app, out, wait):
        return _rebuild(app, out, quiet)


# What a second replay (or a rebuild at start) is told while one runs.
ANOTHER_REPLAY = "another outdial replay (or replay --check) is running on this store"


def _one_at_a_time(
    app: OutdialApplication, out: TextIO, wait: bool
) -> contextlib.AbstractContextManager[None]:
    """`replay_lock`, saying on `out` that it waits, when it does."""

    def waiting() -> None:
        print(f"outdial: {ANOTHER_REPLAY}; waiting for it to finish", file=out, flush=True)

    return replay_lock(app.store, wait=wait, waiting=waiting)


def _rebuild(app: OutdialApplication, out: TextIO, quiet: bool) -> int:
    dialect = app.store.dialect
    started = time.monotonic()
    with write_transaction(app.recorder) as c:
        schema.drop(c, dialect, NEXT)  # what an interrupted rebuild left
        schema.create(c, dialect, NEXT, indexes=False)
    stop = head(app.recorder)
    with _progress(_count_events(app, stop), out, "replay", quiet=quiet) as bar:
        _write_batches(app, rows_up_to(app, stop, bar), NEXT, indexes=True)
    with write_transaction(app.recorder, lock_writers=True) as c:
        # Writers wait from here to the commit: what they stored since `stop` is
        # brought over, and nothing more can arrive before the swap.
        now, rows = _changed_since(c, app, stop)
        overwrite_rows(c, dialect, rows, NEXT)
        schema.swap_in(c, dialect, NEXT)
        write_position(c, dialect, READ_MODEL, now)
    if not quiet:
        print(
            f"replay: rebuilt the read model to position {now} in "
            f"{time.monotonic() - started:.1f} s; it is live",
            file=out,
        )
    return now


@dataclass
class Comparison:
    position: int
    rows: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.differences


def check(
    app: OutdialApplication, *, out: TextIO = sys.stderr, limit: int = 50, wait: bool = True
) -> Comparison:
    """Rebuild into scratch tables and compare them with the live read model (`wait`:
    as `rebuild`'s)."""
    with _one_at_a_time(app, out, wait):
        return _check(app, out, limit)


def _check(app: OutdialApplication, out: TextIO, limit: int) -> Comparison:
    dialect = app.store.dialect
    live = Queries(app.store)
    fresh = Queries(app.store, CHECK)
    with write_transaction(app.recorder) as c:
        schema.drop(c, dialect, CHECK)
        # No secondary indexes: the comparison reads the rows in id order only.
        schema.create(c, dialect, CHECK, indexes=False)
    try:
        with read_transaction(app.recorder) as snapshot:
            # The live rows and position as of one moment; the fresh tables are
            # built to exactly that position.
            position = read_position(snapshot, dialect, READ_MODEL) or 0
            with _progress(_count_events(app, position), out, "replay --check") as bar:
                _write_batches(app, rows_up_to(app, position, bar), CHECK)
            with read_transaction(app.recorder) as f:
                return _compare(live.dump(snapshot), fresh.dump(f), position, limit)
    finally:
        with write_transaction(app.recorder) as c:
            schema.drop(c, dialect, CHECK)


def _compare(
    live: Iterator[DumpedRow],
    fresh: Iterator[DumpedRow],
    position: int,
    limit: int,
) -> Comparison:
    """Merge two row streams sorted alike by (table, id), noting every difference."""
    comparison = Comparison(position)
    a, b = next(live, None), next(fresh, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[:2] < b[:2]):
            assert a is not None
            comparison.differences.append(f"{a.table} {a.id}: in the live model only")
            a = next(live, None)
            continue
        comparison.rows += 1
        if a is None or b[:2] < a[:2]:
            comparison.differences.append(f"{b.table} {b.id}: missing from the live model")
        else:
            if a.body != b.body:
                comparison.differences.append(
                    f"{a.table} {a.id}: live {a.body} != rebuilt {b.body}"
                )
            elif a.columns != b.columns:
                comparison.differences += [
                    f"{a.table} {a.id}: {column}: live {value!r} != rebuilt {b.columns[column]!r}"
                    for column, value in a.columns.items()
                    if value != b.columns[column]
                ]
            a = next(live, None)
        b = next(fresh, None)
    del comparison.differences[limit:]
    return comparison


def is_current(app: OutdialApplication) -> bool:
    """Whether the read model has this version's layout and every event's rows."""
    recorder: Any = app.recorder
    dialect = app.store.dialect
    events = dialect.table(recorder.events_table_name)
    column = "rowid" if dialect.kind == "sqlite" else "notification_id"
    # Both in one snapshot: read apart, a commit in between would show the read
    # model behind events whose rows it has.
    with read_transaction(recorder) as c:
        position = read_position(c, dialect, READ_MODEL)
        c.execute(f"SELECT MAX({column}) FROM {events}")
        last = int(c.fetchone()[0] or 0)
    return position is not None and position >= last
