"""The reader threads of PostgreSQL's reads (services.query.async_reads)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from services.query.async_reads import ReadThreads


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
