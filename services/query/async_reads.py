"""The read model's reads that do not run on the event loop (PostgreSQL's, and
SQLite's pages): reader threads that take the reads waiting, a batch at a time,
run them on the thread's own connection (`services.store.ThreadReaders`:
autocommit, reconnected and the read run once more when the connection was
broken), and hand the batch's results back to the event loop in one call. Equal
reads of a batch are made once, and its reads by key of one kind (outdials,
targets) go to the server as one statement (`Queries.run_many`): under load, one
round trip for many requests.

Measured on 2 cores (a primary-key SELECT at concurrency 32): an executor's hop
per read does about 10,000 reads/s at 80 µs of this process's CPU per read;
psycopg's `AsyncConnectionPool` about 7,000/s at 140 µs (its waiting on the
event loop costs more than the query); these threads about 20,000/s at 35 µs.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from services.query.queries import Queries, Read

T = TypeVar("T")

# What waits: a function to call, or a read (which may share a statement with others).
Waiting = tuple["Callable[[], Any] | Read[Any]", "asyncio.Future[Any]"]
Done = tuple["asyncio.Future[Any]", Any, Exception | None]

# Two threads: one slow read (a big progress page) does not hold up every other.
THREADS = 2
# At most this many reads per batch: the other thread takes the rest. As many as
# a loaded server has waiting: 32 made eight statements and deliveries of 256
# polls (2026-11-28, PostgreSQL, GET /outdials/{id} at 256 connections: 17,000
# req/s at 62 µs of CPU a request; 20,000 at 50 with 256).
BATCH = 256


class ReadThreads:
    def __init__(self, queries: Queries, threads: int = THREADS):
        self.queries = queries
        self._waiting: collections.deque[Waiting] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._serve, name=f"outdial-reads-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`fn(*args)` on a reader thread (its connection is `queries.readers`')."""
        return self._wait((lambda: fn(*args)) if args else fn)

    def fetch(self, read: Read[T]) -> asyncio.Future[T]:
        """`queries.run(read)` on a reader thread, in one statement with the other
        reads of its kind that wait with it."""
        return self._wait(read)

    def _wait(self, work: Callable[[], Any] | Read[Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        idle = not self._waiting  # else a thread is to take those, and this with them
        self._waiting.append((work, future))
        if idle and not self._wake.is_set():
            self._wake.set()  # a lock and a notify: once per batch, not per read
        return future

    def close(self) -> None:
        """Stop the threads once the reads waiting are done (each closes its connection)."""
        self._stopping = True
        self._wake.set()

    def _serve(self) -> None:
        try:
            while not self._stopping:
                self._wake.wait(1.0)
                self._wake.clear()
                while self._waiting:
                    batch: list[Waiting] = []
                    while self._waiting and len(batch) < BATCH:
                        try:
                            batch.append(self._waiting.popleft())
                        except IndexError:  # the other thread took the last one
                            break
                    if self._waiting:
                        self._wake.set()  # the other thread takes the rest
                    done = self._run(batch)
                    try:
                        self._loop.call_soon_threadsafe(_deliver, done)
                    except RuntimeError:  # the event loop is closed
                        return
        finally:
            self.queries.readers.close()

    def _run(self, batch: list[Waiting]) -> list[Done]:
        """Each waiting one's outcome. Equal reads are made once for all of them (a
        dashboard's polls of one page); reads by key of one kind, in one statement.
        Each statement starts after every read it answers was asked: what was
        answered before any of them is in it (CONTRACT 3)."""
        done: list[Done] = []
        waiting: dict[tuple[Any, ...], list[asyncio.Future[Any]]] = {}
        reads: dict[tuple[Any, ...], Read[Any]] = {}
        for work, future in batch:
            if not isinstance(work, Read):
                done.append((future, *_attempt(work)))
                continue
            key = _key(work, future)
            if key in waiting:
                waiting[key].append(future)
            else:
                waiting[key], reads[key] = [future], work
        outcomes: dict[tuple[Any, ...], tuple[Any, Exception | None]] = {}
        kinds: dict[str, list[tuple[Any, ...]]] = {}
        for key, read in reads.items():
            if read.many is not None:
                kinds.setdefault(read.many, []).append(key)
        for keys in kinds.values():
            if len(keys) > 1:
                try:
                    results = self.queries.run_many([reads[key] for key in keys])
                except Exception:
                    continue  # each on its own below: one read's error is its own
                outcomes.update((key, (r, None)) for key, r in zip(keys, results, strict=True))
        for key, read in reads.items():
            if key not in outcomes:
                outcomes[key] = _attempt(self.queries.run, read)
        for key, futures in waiting.items():
            result, error = outcomes[key]
            done += [(future, result, error) for future in futures]
        return done


def _key(read: Read[Any], future: asyncio.Future[Any]) -> tuple[Any, ...]:
    """Equal for equal reads; a read whose parameters cannot be compared so is read
    alone (a thread that raised here would leave every read of its batch waiting)."""
    key = (read.sql, *read.params)
    try:
        hash(key)
    except TypeError:
        return (future,)
    return key


def _attempt(fn: Callable[..., Any], *args: Any) -> tuple[Any, Exception | None]:
    """`fn(*args)`'s result, or its error."""
    try:
        return fn(*args), None
    except Exception as e:
        return None, e


def _deliver(done: list[Done]) -> None:
    for future, result, error in done:
        if future.done():
            continue  # its request was cancelled (the client went away)
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
