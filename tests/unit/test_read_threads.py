"""The reader threads of PostgreSQL's reads (services.query.async_reads)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from services.query.async_reads import ReadThreads
from services.query.queries import Read


class FakeReaders:
    def __init__(self) -> None:
        self.closed: list[str] = []

    def close(self) -> None:
        self.closed.append(threading.current_thread().name)


class FakeQueries:
    def __init__(self) -> None:
        self.readers = FakeReaders()


async def test_reads_run_on_the_threads_and_answer_each_its_own() -> None:
    queries: Any = FakeQueries()
    reads = ReadThreads(queries)
    try:
        loop_thread = threading.current_thread().name

        def where(i: int) -> tuple[int, str]:
            return i, threading.current_thread().name

        results = await asyncio.gather(*(reads.call(where, i) for i in range(500)))
        assert [i for i, _ in results] == list(range(500))
        assert {name for _, name in results} <= {"outdial-reads-0", "outdial-reads-1"}
        assert loop_thread not in {name for _, name in results}
    finally:
        reads.close()


async def test_a_failed_read_raises_its_error_and_the_others_are_answered() -> None:
    queries: Any = FakeQueries()
    reads = ReadThreads(queries)

    def read(i: int) -> int:
        if i == 3:
            raise ValueError("broken")
        return i

    try:
        results = await asyncio.gather(
            *(reads.call(read, i) for i in range(8)), return_exceptions=True
        )
        assert [r for r in results if not isinstance(r, Exception)] == [0, 1, 2, 4, 5, 6, 7]
        assert isinstance(results[3], ValueError)
        with pytest.raises(ValueError, match="broken"):
            await reads.call(read, 3)
    finally:
        reads.close()


async def test_closed_threads_close_their_connections() -> None:
    queries: Any = FakeQueries()
    reads = ReadThreads(queries)
    assert await reads.call(lambda: 1) == 1
    reads.close()
    for _ in range(100):
        if len(queries.readers.closed) == 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(queries.readers.closed) == ["outdial-reads-0", "outdial-reads-1"]


class CountingQueries(FakeQueries):
    """Answers a read with its params; records the statements it was asked to run."""

    def __init__(self, *, many_fails: bool = False) -> None:
        super().__init__()
        self.statements: list[tuple[str, int]] = []
        self.many_fails = many_fails

    def run(self, read: Read[Any]) -> Any:
        self.statements.append((read.sql, 1))
        if "bad" in read.params:
            raise ValueError("refused")
        return read.convert(read.params)

    def run_many(self, reads: list[Read[Any]]) -> list[Any]:
        self.statements.append((str(reads[0].many), len(reads)))
        if self.many_fails and any("bad" in r.params for r in reads):
            raise ValueError("refused")
        return [read.convert(read.params) for read in reads]


def by_key(kind: str, key: str) -> Read[Any]:
    return Read(f"one {kind}", (key,), tuple, f"many {kind}")


def page(n: int) -> Read[Any]:
    return Read("page", (n,), tuple, None, inline=False)


async def test_a_batch_reads_equal_reads_once_and_each_kind_in_one_statement() -> None:
    queries: Any = CountingQueries()
    threads = ReadThreads(queries, threads=0)  # `_run` called here, no thread takes it
    loop = asyncio.get_running_loop()
    work = [
        by_key("outdial", "a"),
        by_key("target", "x"),
        by_key("outdial", "b"),
        page(1),
        by_key("outdial", "a"),
        page(1),
        page(2),
        by_key("target", "y"),
        by_key("other", "z"),
        Read("odd", ([1],), tuple),  # parameters that cannot be hashed: read alone
        Read("odd", ([1],), tuple),
    ]
    batch = [(w, loop.create_future()) for w in work]
    batch.append((lambda: "called", loop.create_future()))
    done = {id(f): (r, e) for f, r, e in threads._run(batch)}
    assert [done[id(f)] for _, f in batch] == [
        *((w.params, None) for w in work),
        ("called", None),
    ]
    assert sorted(queries.statements) == [
        ("many outdial", 2),  # a and b; the second a shares the first's answer
        ("many target", 2),
        ("odd", 1),
        ("odd", 1),
        ("one other", 1),  # alone of its kind: its own statement
        ("page", 1),
        ("page", 1),  # page 1 once for both, page 2
    ]


async def test_a_read_that_fails_its_kind_statement_fails_alone() -> None:
    queries: Any = CountingQueries(many_fails=True)
    threads = ReadThreads(queries, threads=0)
    loop = asyncio.get_running_loop()
    batch = [(by_key("target", k), loop.create_future()) for k in ("x", "bad", "y")]
    done = {id(f): (r, e) for f, r, e in threads._run(batch)}
    outcomes = [done[id(f)] for _, f in batch]
    assert outcomes[0] == (("x",), None) and outcomes[2] == (("y",), None)
    assert outcomes[1][0] is None and isinstance(outcomes[1][1], ValueError)
    assert ("many target", 3) in queries.statements
