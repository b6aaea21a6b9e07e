"""The event store's adapter: from `OUTDIAL_DATABASE_URL` to eventsourcing's recorders,
and the one transaction every command commits in.

eventsourcing chooses its persistence from an environment of settings. This
module is the one place that builds that environment from the service's own
URL, so nothing depends on hand-set `PERSISTENCE_MODULE`/`POSTGRES_*` variables.

    sqlite:///./var/outdial.sqlite3         a file, relative to the working dir
    sqlite:////srv/outdial/outdial.sqlite3  an absolute path
    postgresql://user:pw@host:5432/db?schema=outdial

**Inline writes.** `Application.save(*events, inline=writes)` hands `inline` to
the application recorder's `insert_events`. The recorders below insert the
events and then call `writes.write(cursor, positions)` in the same database
transaction, with the notification id (position) of each event: the read-model
rows, the outbox and the command receipts commit or roll back with the events
they come from (eventsourcing's own process recorders write their tracking row
this way).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from eventsourcing.utils import retry

from services.wal_checkpoints import WalCheckpointer
from shared import private_files

log = logging.getLogger("outdial.store")

T = TypeVar("T")


class StoreURLError(ValueError):
    pass


# The port of a PostgreSQL URL that names none.
POSTGRES_PORT = 5432
# A PostgreSQL schema's name as the store's statements can hold it unquoted.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def describe_store_error(error: BaseException, url: str) -> str | None:
    """What went wrong reaching the store at `url`, in one line, if it is the kind of
    thing a setting causes (a bad URL, a server not listening, a folder that cannot
    be written); None for anything else."""
    if isinstance(error, StoreURLError):
        return str(error)
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        where = parts.path[1:]
    else:
        try:
            where = f"{parts.hostname}:{parts.port or POSTGRES_PORT}"
        except ValueError:  # a port that is not a number
            where = parts.netloc
    if isinstance(error, OSError) and error.strerror:
        return f"cannot create {error.filename or where}: {error.strerror}"
    text = " ".join(str(error).split())
    if type(error).__module__.startswith(("psycopg", "eventsourcing", "sqlite3")):
        if parts.scheme == "sqlite":
            return f"cannot open the SQLite file {where}: {text}"
        text = text.removeprefix("connection failed: ")
        return f"cannot use the PostgreSQL database at {where}: {text}"
    return None


@dataclass(frozen=True)
class Dialect:
    """What differs in the SQL of the two stores: parameters, names, collation."""

    kind: Literal["sqlite", "postgres"]
    schema: str = "public"

    def table(self, name: str) -> str:
        """A table's name as statements write it (in the store's schema on PostgreSQL)."""
        return name if self.kind == "sqlite" else f'"{self.schema}"."{name}"'

    def sql(self, statement: str) -> str:
        """A statement written with `?` parameters, in the driver's style."""
        return statement if self.kind == "sqlite" else statement.replace("?", "%s")

    @property
    def byte_order(self) -> str:
        """A collation that sorts text as Python compares it (ids, for `replay --check`)."""
        return "" if self.kind == "sqlite" else 'COLLATE "C"'


@dataclass(frozen=True)
class Store:
    kind: Literal["sqlite", "postgres"]
    env: dict[str, str]

    @property
    def schema(self) -> str:
        return self.env.get("POSTGRES_SCHEMA", "public")

    @property
    def dialect(self) -> Dialect:
        return Dialect(self.kind, self.schema)

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return Path(self.env["SQLITE_DBNAME"])


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
                "APPLICATION_RECORDER_TOPIC": "services.store:SQLiteInlineRecorder",
            },
        )
    if parts.scheme in ("postgresql", "postgres"):
        query = parse_qs(parts.query)
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise StoreURLError(f"the PostgreSQL URL names no database: {url}")
        try:
            port = parts.port or POSTGRES_PORT
        except ValueError:
            raise StoreURLError(f"the PostgreSQL URL's port is not a number: {url}") from None
        pool_size = query.get("pool_size", ["3"])[0]
        if not (pool_size.isascii() and pool_size.isdigit() and 0 < int(pool_size) <= 1000):
            raise StoreURLError(f"pool_size must be a whole number from 1 to 1000: {pool_size!r}")
        schema = query.get("schema", [None])[0]
        if schema is not None and not _IDENTIFIER.fullmatch(schema):
            # Its name goes into statements as it is.
            raise StoreURLError(
                f"schema must be letters, digits and _ (not first a digit): {schema!r}"
            )
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(port),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_CONNECT_TIMEOUT": "5",
            # Check a pooled connection before use, so a PostgreSQL restart costs
            # one failed ping rather than one failed command.
            "POSTGRES_PRE_PING": "y",
            # Pooled connections: as many as the threads that hold one at once in
            # `outdial run` (the command writer, the relay; the short reads of
            # positions wait a few ms for one), and no overflow (eventsourcing's
            # default would add ten). libpq keeps each connection's input and
            # output buffers at the largest message they have carried and never
            # shrinks them, and the pool hands connections out in turn, so every
            # connection it ever opens ends up holding the biggest write and the
            # biggest page read for the life of the process.
            "POSTGRES_POOL_SIZE": pool_size,
            "POSTGRES_MAX_OVERFLOW": "0",
            "APPLICATION_RECORDER_TOPIC": "services.store:PostgresInlineRecorder",
        }
        if schema is not None:
            env["POSTGRES_SCHEMA"] = schema
        return Store(kind="postgres", env=env)
    raise StoreURLError(f"must start with sqlite:/// or postgresql://, not {url!r}")


class ThreadReaders:
    """A connection of each reading thread's own, in autocommit, for reads that need
    no transaction: one statement is one consistent read (SQLite's WAL, PostgreSQL's
    READ COMMITTED), without the pool's locks, BEGIN and ROLLBACK, and on PostgreSQL
    without the pool's ping before each checkout (a round trip per read).

    A connection found broken (a PostgreSQL restart) is dropped, and the next read
    connects again; the read that found out fails."""

    def __init__(self, store: Store):
        self.store = store
        self._local = threading.local()

    def _connect(self) -> Any:
        if self.store.kind == "sqlite":
            connection = sqlite3.connect(
                self.store.path, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA query_only = ON")
            return connection
        import psycopg

        return psycopg.connect(postgres_conninfo(self.store), autocommit=True)

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        try:
            cursor = connection.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
        except Exception as e:
            if self.store.kind == "postgres" and _broken(e):
                self._local.connection = None
                with contextlib.suppress(Exception):
                    connection.close()
            raise

    def read(self, fn: Callable[[Any], T]) -> T:
        """`fn(cursor)`, once more on a new connection if this thread's was broken (a
        PostgreSQL restart, a failover, connections cut): a read is safe to repeat,
        and the first read after the store came back must not fail for a
        connection that died while it was away. The driver's errors of an
        unreachable or locked store are raised as eventsourcing's, as its own
        recorders raise them (`OperationalError`: the store, not the command)."""
        try:
            with self.cursor() as c:
                return fn(c)
        except Exception as e:
            if not (self.store.kind == "postgres" and _broken(e)):
                raise _as_persistence_error(e) from e
        try:
            with self.cursor() as c:
                return fn(c)
        except Exception as e:
            raise _as_persistence_error(e) from e

    def one(self, statement: str, params: Sequence[Any]) -> Any:
        """The first row of one statement, as `read` reads it; on SQLite without a
        cursor of its own (the HTTP API's reads run on the event loop there)."""
        connection = getattr(self._local, "connection", None)
        if connection is None or self.store.kind != "sqlite":
            return self.read(lambda c: c.execute(statement, params).fetchone())
        try:
            return connection.execute(statement, params).fetchone()
        except Exception as e:
            raise _as_persistence_error(e) from e

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            self._local.connection = None
            connection.close()


def _broken(error: Exception) -> bool:
    import psycopg

    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


def _as_persistence_error(error: Exception) -> Exception:
    """A driver's error as eventsourcing's kind of it (others as they are)."""
    if isinstance(error, PersistenceError):
        return error
    if isinstance(error, sqlite3.OperationalError):
        return OperationalError(error)
    if type(error).__module__.startswith("psycopg"):
        import psycopg

        if isinstance(error, psycopg.OperationalError):
            return OperationalError(error)
        if isinstance(error, psycopg.InterfaceError):
            return InterfaceError(error)
    return error


class InlineWrites(Protocol):
    """Rows to write in the transaction that inserts events."""

    def write(self, cursor: Any, dialect: Dialect, positions: Sequence[int]) -> None:
        """Write, through `cursor`; `positions` are the inserted events' notification ids."""


class SQLiteInlineRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite recorder, with the inline writes in its transaction,
    the events inserted in one statement, and an aggregate's events read on a
    connection of the reading thread's own."""

    dialect = Dialect("sqlite")

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        self.readers = ThreadReaders(Store("sqlite", {"SQLITE_DBNAME": datastore.pool.db_name}))
        self.checkpointer = WalCheckpointer(datastore.pool.db_name)

    def close(self) -> None:
        self.checkpointer.stop()

    def unwritable(self) -> str | None:
        """Why the store's files cannot be written, if they cannot (a read-only
        mount, an immutable file): SQLite opens such a file read-only without a
        word, and reads it, and only a command's commit would fail; said at start
        instead. None when they can."""
        # access(2), never open and close: closing any descriptor of the file
        # drops every POSIX lock this process holds on it, SQLite's included, and
        # then another process's SQLite may think itself the last one and delete
        # the WAL under this one.
        path = Path(self.datastore.pool.db_name)
        for file in (path, sqlite_companion(path, "wal"), path.parent):
            if file.exists() and not os.access(file, os.W_OK):
                reason = "read-only" if file.is_dir() else "not writable"
                return f"cannot write {file}: {reason} (a read-only mount or an immutable file?)"
        return None

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        inline: InlineWrites | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        with sqlite_write(self.datastore, self.checkpointer) as cursor:
            positions = self._insert_all(cursor, stored_events)
            if inline is not None:
                inline.write(cursor, self.dialect, positions)
        return positions

    def _insert_all(self, cursor: Any, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Insert the events in one statement; their positions follow one another,
        since this transaction holds SQLite's write lock and a new row's rowid is one
        more than the largest (eventsourcing runs one INSERT per event to learn each)."""
        if not stored_events:
            return []
        cursor.executemany(
            self.insert_events_statement,
            [
                (
                    s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                    s.originator_version,
                    s.topic,
                    s.state,
                )
                for s in stored_events
            ],
        )
        cursor.execute("SELECT last_insert_rowid()")
        last = int(cursor.fetchone()[0])
        return list(range(last - len(stored_events) + 1, last + 1))

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        statement, params = _select_events(
            self.events_table_name, "?", originator_id, gt, lte, desc, limit
        )
        if isinstance(originator_id, UUID):
            params[0] = originator_id.hex

        def rows(c: Any) -> list[Any]:
            c.execute(statement, params)
            return list(c.fetchall())

        return [
            StoredEvent(self.convert_originator_id(r[0]), r[1], r[2], r[3])
            for r in self.readers.read(rows)
        ]


class PostgresInlineRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL recorder, with the inline writes in its transaction,
    and its insert sent statement by statement.

    eventsourcing sends LOCK, NOTIFY and the INSERT of all the events in one
    psycopg pipeline, and psycopg (3.3) can deadlock there once the INSERT
    outgrows the socket's buffers: PostgreSQL waits for the rest of the
    statement, the client for results. A few MB of events do it (an AddTargets
    of 100 targets with 64 KiB of data each), and the writer then hangs for
    good. Without the pipeline a transaction costs two more round trips.

    The events' insert takes eventsourcing's `LOCK TABLE ... IN EXCLUSIVE MODE`,
    held to the commit: inline rows of two writers are written in the order of
    their events' positions, which the outbox relies on.
    """

    def __init__(self, datastore: Any, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        kwargs = datastore.pool.kwargs
        self.readers = ThreadReaders(
            Store(
                "postgres",
                {
                    "POSTGRES_DBNAME": kwargs["dbname"],
                    "POSTGRES_HOST": kwargs["host"],
                    "POSTGRES_PORT": str(kwargs["port"]),
                    "POSTGRES_USER": kwargs["user"],
                    "POSTGRES_PASSWORD": kwargs["password"] or "",
                    "POSTGRES_CONNECT_TIMEOUT": str(int(datastore.pool.timeout)),
                    "POSTGRES_SCHEMA": datastore.schema,
                },
            )
        )

    @property
    def dialect(self) -> Dialect:
        return Dialect("postgres", self.datastore.schema)

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """eventsourcing's insert (the table's lock, NOTIFY, one INSERT of every event,
        returning their positions in order), with the events sent as four binary
        arrays rather than one array of eventsourcing's composite type, which
        psycopg dumps as text in Python: 66 µs of this process's CPU an event,
        against 5 (measured with 1,000).

        Only the events: the read-model rows, outbox and receipts sent this way
        too (30 µs a row by `executemany`, 4 so) left the consumer 50-70 MB larger
        after the hostile-input test's stream, its bound crossed; the events alone
        did not (measured, three runs each)."""
        self._lock_table(curs)
        self._notify_channel(curs)
        table = self.dialect.table(self.events_table_name)
        curs.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            f"SELECT * FROM unnest(%b::{self.datastore.originator_id_type}[], %b::bigint[], "
            "%b::text[], %b::bytea[]) RETURNING notification_id",
            [
                [s.originator_id for s in stored_events],
                [s.originator_version for s in stored_events],
                [s.topic for s in stored_events],
                [s.state for s in stored_events],
            ],
        )

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        table = self.dialect.table(self.events_table_name)
        statement, params = _select_events(table, "%s", originator_id, gt, lte, desc, limit)

        def rows(c: Any) -> list[Any]:
            c.execute(statement, params, prepare=True)
            return list(c.fetchall())

        try:
            return [StoredEvent(r[0], r[1], r[2], bytes(r[3])) for r in self.readers.read(rows)]
        except Exception as e:
            import psycopg

            if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
                raise OperationalError(e) from e
            raise

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        inline: InlineWrites | None = None,
        **kwargs: Any,
    ) -> Sequence[int] | None:
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            positions: Sequence[int] = []
            if stored_events:
                self._insert_stored_events(cursor, stored_events, **kwargs)
                positions = self._fetch_ids_after_insert_events(cursor, stored_events) or []
            if inline is not None:
                inline.write(cursor, self.dialect, positions)
            return positions


def _select_events(
    table: str,
    mark: str,
    originator_id: UUID | str,
    gt: int | None,
    lte: int | None,
    desc: bool,
    limit: int | None,
) -> tuple[str, list[Any]]:
    """eventsourcing's query of one aggregate's events."""
    statement = (
        "SELECT originator_id, originator_version, topic, state "
        f"FROM {table} WHERE originator_id = {mark}"
    )
    params: list[Any] = [originator_id]
    if gt is not None:
        statement += f" AND originator_version > {mark}"
        params.append(gt)
    if lte is not None:
        statement += f" AND originator_version <= {mark}"
        params.append(lte)
    statement += " ORDER BY originator_version " + ("DESC" if desc else "ASC")
    if limit is not None:
        statement += f" LIMIT {mark}"
        params.append(limit)
    return statement, params


@contextlib.contextmanager
def sqlite_write(
    datastore: SQLiteDatastore, checkpointer: WalCheckpointer | None = None
) -> Iterator[Any]:
    """A write transaction on SQLite that takes the write lock first.

    BEGIN IMMEDIATE, not eventsourcing's plain BEGIN: a deferred transaction
    that reads first and then writes gets SQLITE_BUSY at once, without
    waiting, when another process committed in between (its snapshot is
    stale). Taking the write lock first waits for it (SQLITE_LOCK_TIMEOUT)
    and reads only what is current.

    With a `checkpointer`, the log's checkpoints are its business, not the commit's.
    """
    with (
        checkpointer.writing() if checkpointer is not None else contextlib.nullcontext(),
        datastore.get_connection(commit=True) as connection,
    ):
        cursor = connection.cursor()
        changes = cursor.sqlite_cursor.connection.total_changes
        try:
            if checkpointer is not None:
                cursor.execute("PRAGMA wal_autocheckpoint = 0")
            cursor.execute("BEGIN IMMEDIATE")
            yield cursor
            connection.commit()
            # Only a transaction that wrote rows wants a checkpoint (one that found
            # its tables already there wrote nothing: a read-only store's start).
            if (
                checkpointer is not None
                and cursor.sqlite_cursor.connection.total_changes != changes
            ):
                checkpointer.committed()
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                connection.rollback()
            if isinstance(e, sqlite3.IntegrityError):
                raise IntegrityError(e) from e
            if isinstance(e, sqlite3.OperationalError):
                raise OperationalError(e) from e
            if isinstance(e, sqlite3.Error):
                raise PersistenceError(e) from e
            raise


def sqlite_companion(path: Path, kind: Literal["wal", "shm", "lock", "replay-lock"]) -> Path:
    """The log (`wal`) or shared-memory index (`shm`) SQLite keeps beside a store file,
    or the file processes starting on it take turns with (`lock`, `schema_lock`), or
    the one a replay holds (`replay-lock`, `replay_lock`)."""
    return path.with_name(f"{path.name}-{kind}")


def keep_private(path: Path) -> None:
    """A store file that others may read (the version before 0.1 made it 0644), and
    its -wal and -shm files, made private to its owner, with a line in the log."""
    for file in (path, sqlite_companion(path, "wal"), sqlite_companion(path, "shm")):
        private_files.keep_private(file, "the store file")


def prepare_store(store: Store) -> None:
    """Create what eventsourcing expects to exist: the SQLite file (private to its
    owner: it holds every customer's data) and its folder, or the schema."""
    if store.kind == "sqlite":
        store.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            store.path.touch(mode=0o600, exist_ok=False)
        except FileExistsError:
            keep_private(store.path)
        return
    from psycopg import sql

    with connect_postgres(store) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(store.schema)))


# Any fixed number: the key of the advisory lock that serialises schema changes.
_DDL_LOCK = 0x0DD1A1


class Busy(Exception):
    """A lock that was not to be waited for is held by another process."""


@contextlib.contextmanager
def schema_lock(store: Store) -> Iterator[None]:
    """Serialise creating and upgrading tables among processes starting at once on
    one store: one rebuild of an old or missing read model is enough, and two at
    once would drop each other's tables (seen on SQLite: an `outdial command` and an
    `outdial query` started together on a new file, one failed with "no such table:
    main.rm_outdials_next"); on PostgreSQL, concurrent `CREATE ... IF NOT EXISTS`
    can also fail with a unique violation. PostgreSQL: an advisory lock. SQLite:
    `flock` of a file of its own beside the store (SQLite's own locks are on the
    store's file, and closing any descriptor of that file would drop them)."""
    with _store_lock(store, "lock", _DDL_LOCK, wait=True):
        yield


@contextlib.contextmanager
def replay_lock(
    store: Store, *, wait: bool, waiting: Callable[[], None] | None = None
) -> Iterator[None]:
    """Held by a rebuild of the read model, or a `--check`, from start to end: each
    fills scratch tables of one name (`_next`, `_check`) and drops what it finds
    there first, so two at once would drop or fill each other's, and a rebuild
    could swap in a half-filled one. Not `schema_lock`, which a process starting
    meanwhile would then wait for through the whole rebuild. Without `wait`,
    raises Busy at once when another process holds it; with it, calls `waiting`
    first (to say so)."""
    # An advisory lock's key is the database's: this one is the store's schema's, so
    # replays of two stores in one database do not wait for each other.
    digest = hashlib.blake2b(f"outdial replay {store.schema}".encode(), digest_size=8)
    key = int.from_bytes(digest.digest(), "big", signed=True)
    with _store_lock(store, "replay-lock", key, wait=wait, waiting=waiting):
        yield


@contextlib.contextmanager
def _store_lock(
    store: Store,
    companion: Literal["lock", "replay-lock"],
    key: int,
    *,
    wait: bool,
    waiting: Callable[[], None] | None = None,
) -> Iterator[None]:
    """An exclusive lock among the processes on `store`: on SQLite a `flock` of the
    file `companion` beside it, on PostgreSQL the advisory lock `key` (both let go
    when the process dies). Held by another: Busy without `wait`, else `waiting()`
    and then wait for it."""
    if store.kind == "sqlite":
        with _file_lock(sqlite_companion(store.path, companion), wait=wait, waiting=waiting):
            yield
        return
    with connect_postgres(store) as conn:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if not wait:
                raise Busy
            if waiting is not None:
                waiting()
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@contextlib.contextmanager
def _file_lock(
    path: Path, *, wait: bool = True, waiting: Callable[[], None] | None = None
) -> Iterator[None]:
    """An exclusive `flock` of `path` (made private if missing) until the block ends;
    none where the file cannot be made (a read-only folder, whose store no process
    can upgrade: the store's own checks say so)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise Busy from None
            if waiting is not None:
                waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


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

    return psycopg.connect(postgres_conninfo(store), autocommit=True)


def _tuple_rows(cursor: Any) -> Any:
    from psycopg.rows import tuple_row

    return tuple_row(cursor)


@contextlib.contextmanager
def write_transaction(recorder: Any, *, lock_writers: bool = False) -> Iterator[Any]:
    """A write transaction on the recorder's store, its cursor giving plain tuples.

    `lock_writers`: hold every command's writes off until the commit (SQLite's
    write lock; on PostgreSQL the lock eventsourcing takes to insert events), for
    work that must see the events and the inline rows stand still (a replay's swap).
    """
    datastore = recorder.datastore
    if isinstance(datastore, SQLiteDatastore):
        with sqlite_write(datastore, getattr(recorder, "checkpointer", None)) as cursor:
            yield cursor
        return
    with (
        datastore.get_connection() as conn,
        conn.transaction(),
        conn.cursor(row_factory=_tuple_rows) as cursor,
    ):
        if lock_writers:
            for statement in recorder.lock_table_statements:
                cursor.execute(statement)
        yield cursor


@contextlib.contextmanager
def read_transaction(recorder: Any) -> Iterator[Any]:
    """A read-only transaction that sees one moment of the store, tuples as rows."""
    datastore = recorder.datastore
    if isinstance(datastore, SQLiteDatastore):
        # WAL: a deferred transaction reads one snapshot from its first SELECT on.
        with datastore.transaction(commit=False) as cursor:
            yield cursor
        return
    with (
        datastore.get_connection() as conn,
        conn.transaction(force_rollback=True),
        conn.cursor(row_factory=_tuple_rows) as cursor,
    ):
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield cursor


def insert_rows(
    cursor: Any, dialect: Dialect, name: str, columns: tuple[str, ...], rows: Sequence[Any]
) -> None:
    """Insert new rows into table `name` (its name as `dialect.table` makes it).

    On PostgreSQL by COPY: one stream, where `executemany` sends a statement a row
    and PostgreSQL runs each (an AddTargets of 1,000 wrote its read-model and
    outbox rows in 90-100 µs a target that way, 45-55 by COPY, measured in the
    writer's thread).
    """
    if not rows:
        return
    statement = insert_statement(dialect.kind, name, columns)
    if dialect.kind == "postgres":
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        return
    cursor.executemany(statement, rows)


@functools.cache  # a few statements in all; made once, not on every commit
def insert_statement(kind: str, name: str, columns: tuple[str, ...]) -> str:
    if kind == "postgres":
        return f"COPY {name} ({', '.join(columns)}) FROM STDIN"
    return f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def table_exists(cursor: Any, dialect: Dialect, name: str) -> bool:
    if dialect.kind == "sqlite":
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return cursor.fetchone() is not None
    cursor.execute("SELECT to_regclass(%s)", (dialect.table(name),))
    row = cursor.fetchone()
    return row is not None and row[0] is not None


# ---- named positions --------------------------------------------------------
# How far something derived from the events has got: the read model (always the
# last event, since it is written inline) and the relay (the last event published).


def create_positions_table(cursor: Any, dialect: Dialect) -> None:
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {dialect.table('outdial_positions')} "
        "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
    )


def read_position(cursor: Any, dialect: Dialect, name: str) -> int | None:
    cursor.execute(
        dialect.sql(f"SELECT position FROM {dialect.table('outdial_positions')} WHERE name = ?"),
        (name,),
    )
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def write_position(cursor: Any, dialect: Dialect, name: str, position: int) -> None:
    """Move a named position forward (never back: two writers may race)."""
    table = dialect.table("outdial_positions")
    cursor.execute(
        dialect.sql(
            f"INSERT INTO {table} (name, position) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
            f"SET position = excluded.position WHERE {table}.position < excluded.position"
        ),
        (name, position),
    )


def head(recorder: Any) -> int:
    """The position of the last stored event (0 for an empty store)."""
    return int(recorder.max_notification_id() or 0)
