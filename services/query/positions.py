"""How far the read model has got, for readers that must see their own writes.

A request with `X-Outdial-Min-Position: N` waits on the board until the
projection has reached N. The board is moved by whoever learns of progress
first: the projector itself when it runs in this process, otherwise a
follower that listens to PostgreSQL's NOTIFY or, on SQLite (which has no
notifications), reads the tracking row only while somebody is waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("outdial.positions")


class PositionBoard:
    def __init__(self) -> None:
        self.position = 0
        self._changed = asyncio.Condition()
        self.waiting = 0
        self._someone_waits = asyncio.Event()

    async def advance(self, position: int) -> None:
        if position > self.position:
            self.position = position
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, position: int, timeout: float) -> bool:
        """True once the read model has reached `position`, False after `timeout`."""
        if self.position >= position:
            return True
        self.waiting += 1
        self._someone_waits.set()
        try:
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.position >= position), timeout
                )
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
            if not self.waiting:
                self._someone_waits.clear()

    async def someone_waits(self) -> None:
        await self._someone_waits.wait()


async def follow_by_polling(
    board: PositionBoard, read_position: Callable[[], int], *, interval: float = 0.02
) -> None:
    """SQLite across processes: read the tracking row, but only while a request waits."""
    while True:
        await board.someone_waits()
        try:
            await board.advance(await asyncio.to_thread(read_position))
        except Exception:
            log.warning("could not read the projection's position", exc_info=True)
        await asyncio.sleep(interval)


async def listen(conninfo: str, channel: str, on_notify: Callable[[str], Awaitable[None]]) -> None:
    """Call `on_notify(payload)` for each PostgreSQL NOTIFY on `channel`, for ever,
    reconnecting after a failure; once also on each (re)connect, for whatever
    happened before LISTEN took effect."""
    import psycopg

    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f'LISTEN "{channel}"')
                await on_notify("")
                async for notify in conn.notifies():
                    await on_notify(notify.payload)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("lost the LISTEN connection; reconnecting", exc_info=True)
            await asyncio.sleep(1)


async def follow_by_listening(
    board: PositionBoard, conninfo: str, channel: str, read_position: Callable[[], int]
) -> None:
    """PostgreSQL: the projector NOTIFYs its position at each commit."""

    async def on_notify(payload: str) -> None:
        try:
            await board.advance(int(payload))
        except ValueError:
            await board.advance(await asyncio.to_thread(read_position))

    await listen(conninfo, channel, on_notify)
