"""The event store's adapter: from `OUTDIAL_DATABASE_URL` to eventsourcing's recorders.

eventsourcing chooses its persistence from an environment of settings. This
module is the one place that builds that environment from the service's own
URL, so nothing depends on hand-set `PERSISTENCE_MODULE`/`POSTGRES_*` variables.

    sqlite:///./var/outdial.sqlite3         a file, relative to the working dir
    sqlite:////srv/outdial/outdial.sqlite3  an absolute path
    postgresql://user:pw@host:5432/db?schema=outdial
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry


class StoreURLError(ValueError):
    pass


@dataclass(frozen=True)
class Store:
    kind: Literal["sqlite", "postgres"]
    env: dict[str, str]

    @property
    def schema(self) -> str:
        return self.env.get("POSTGRES_SCHEMA", "public")


def parse_store_url(url: str) -> Store:
    """The eventsourcing environment that `url` describes."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
            raise StoreURLError(f"expected sqlite:///relative/path or sqlite:////abs/path: {url}")
        return Store(
            kind="sqlite",
            env={
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": parts.path[1:],
                # Seconds a writer waits for another process's write lock.
                "SQLITE_LOCK_TIMEOUT": "30",
            },
        )
    if parts.scheme in ("postgresql", "postgres"):
        query = parse_qs(parts.query)
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise StoreURLError(f"the PostgreSQL URL names no database: {url}")
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_CONNECT_TIMEOUT": "5",
            # Check a pooled connection before use, so a PostgreSQL restart costs
            # one failed ping rather than one failed command.
            "POSTGRES_PRE_PING": "y",
            # Pooled connections: as many as the threads that hold one at once in
            # `outdial run` (the command writer, the projector, the relay; the
            # short reads of positions and heads wait a few ms for one), and no
            # overflow (eventsourcing's default would add ten). libpq keeps each
            # connection's input and output buffers at the largest message they
            # have carried and never shrinks them, and the pool hands connections
            # out in turn, so every connection it ever opens ends up holding the
            # biggest write (an AddTargets of 1,000 with its receipt: a 4 MiB
            # output buffer) and the biggest page read (2 MiB of input) for the
            # life of the process. Bench, resident memory after 200,000 events vs
            # after 1,000: 117 vs 83 MiB with 5 + overflow (6 connections opened),
            # 103 vs 82 MiB with 3; commands/s the same within the machine's noise.
            "POSTGRES_POOL_SIZE": query.get("pool_size", ["3"])[0],
            "POSTGRES_MAX_OVERFLOW": "0",
            "APPLICATION_RECORDER_TOPIC": "shared.store:UnpipelinedRecorder",
        }
        if "schema" in query:
            env["POSTGRES_SCHEMA"] = query["schema"][0]
        return Store(kind="postgres", env=env)
    raise StoreURLError(f"OUTDIAL_DATABASE_URL must be sqlite:/// or postgresql://: {url}")


class UnpipelinedRecorder(PostgresApplicationRecorder):
    """eventsourcing's recorder, its insert sent statement by statement.

    eventsourcing sends LOCK, NOTIFY and the INSERT of all the events in one
    psycopg pipeline, and psycopg (3.3) can deadlock there once the INSERT
    outgrows the socket's buffers: PostgreSQL waits for the rest of the
    statement, the client for results. A few MB of events do it (an AddTargets
    of 100 targets with 64 KiB of data each, a group commit of 30 big commands),
    and the writer then hangs for good. Without the pipeline a transaction
    costs two more round trips.
    """

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            self._insert_events(curs, stored_events, **kwargs)
            if not stored_events:
                return None
            self._insert_stored_events(curs, stored_events, **kwargs)
            return self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)


def prepare_store(store: Store) -> None:
    """Create what eventsourcing expects to exist: the SQLite file's folder, the schema."""
    if store.kind == "sqlite":
        Path(store.env["SQLITE_DBNAME"]).parent.mkdir(parents=True, exist_ok=True)
        return
    from psycopg import sql

    with connect_postgres(store) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(store.schema)))


# Any fixed number: the key of the advisory lock that serialises schema changes.
_DDL_LOCK = 0x0DD1A1


@contextlib.contextmanager
def schema_lock(store: Store) -> Iterator[None]:
    """Serialise creating tables among processes starting at once on one PostgreSQL
    database: concurrent `CREATE ... IF NOT EXISTS` can still fail there with a
    unique violation. SQLite serialises writers by itself."""
    if store.kind != "postgres":
        yield
        return
    with connect_postgres(store) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_DDL_LOCK,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_DDL_LOCK,))


def postgres_conninfo(store: Store) -> str:
    from psycopg.conninfo import make_conninfo

    e = store.env
    return make_conninfo(
        dbname=e["POSTGRES_DBNAME"],
        host=e["POSTGRES_HOST"],
        port=e["POSTGRES_PORT"],
        user=e["POSTGRES_USER"],
        password=e["POSTGRES_PASSWORD"],
        connect_timeout=e["POSTGRES_CONNECT_TIMEOUT"],
    )


def connect_postgres(store: Store) -> Any:
    """A plain autocommit connection, for set-up work outside eventsourcing."""
    import psycopg

    e = store.env
    return psycopg.connect(
        dbname=e["POSTGRES_DBNAME"],
        host=e["POSTGRES_HOST"],
        port=e["POSTGRES_PORT"],
        user=e["POSTGRES_USER"],
        password=e["POSTGRES_PASSWORD"],
        connect_timeout=int(e["POSTGRES_CONNECT_TIMEOUT"]),
        autocommit=True,
    )


def notification_id_of(recorder: Any, originator_id: UUID, version: int) -> int | None:
    """The notification id (position) of one stored event, by its primary key.

    eventsourcing answers "which events does this aggregate have" and "what are
    the notifications after N", but not "where is this event in the log"; a
    redelivered command needs that to repeat the position of its first reply.
    """
    datastore = getattr(recorder, "datastore", None)
    if datastore is None:
        # The in-memory recorder of unit tests: small, so a scan will do.
        return next(
            (
                n.id
                for n in recorder.select_notifications(start=None, limit=2**31)
                if n.originator_id == originator_id and n.originator_version == version
            ),
            None,
        )
    table = recorder.events_table_name
    if hasattr(datastore, "schema"):
        from psycopg import sql

        statement = sql.SQL(
            "SELECT notification_id FROM {}.{} WHERE originator_id = %s AND originator_version = %s"
        ).format(sql.Identifier(datastore.schema), sql.Identifier(table))
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (originator_id, version), prepare=True)
            row = curs.fetchone()
            return None if row is None else int(row["notification_id"])
    with datastore.transaction(commit=False) as c:
        c.execute(
            f"SELECT rowid FROM {table} WHERE originator_id = ? AND originator_version = ?",
            (originator_id.hex, version),
        )
        row = c.fetchone()
        return None if row is None else int(row[0])


def existing_originators(recorder: Any, originator_ids: list[UUID]) -> set[UUID] | None:
    """Which of these aggregates have any event, in one query; None where the
    recorder is not one of the SQL stores (the caller then asks one by one)."""
    datastore = getattr(recorder, "datastore", None)
    if datastore is None or not originator_ids:
        return None if datastore is None else set()
    table = recorder.events_table_name
    if hasattr(datastore, "schema"):
        from psycopg import sql

        statement = sql.SQL(
            "SELECT originator_id FROM {}.{} WHERE originator_id = ANY(%s) "
            "AND originator_version = 1"
        ).format(sql.Identifier(datastore.schema), sql.Identifier(table))
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (originator_ids,))
            return {UUID(str(row["originator_id"])) for row in curs.fetchall()}
    marks = ",".join("?" * len(originator_ids))
    with datastore.transaction(commit=False) as c:
        c.execute(
            f"SELECT originator_id FROM {table} WHERE originator_version = 1 "
            f"AND originator_id IN ({marks})",
            [i.hex for i in originator_ids],
        )
        return {UUID(row[0]) for row in c.fetchall()}


__all__ = [
    "Store",
    "StoreURLError",
    "connect_postgres",
    "existing_originators",
    "notification_id_of",
    "parse_store_url",
    "postgres_conninfo",
    "prepare_store",
    "schema_lock",
]
