"""The store's position as this process knows it, for `X-Outdial-Min-Position`.

The read model is written in the commands' own transactions, so it is always
at the store's last position: a read sees every answered write. A request may
still name a position this process has not heard of yet (a write answered by
another process an instant ago, or a position from the future); it waits on
the board until the store has reached it. The board is moved by whoever learns
of progress first: the command consumer of this process after each commit,
else a follower that listens to eventsourcing's NOTIFY on every insert
(PostgreSQL) or, on SQLite (which has no notifications), reads the store's
position only while somebody waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("outdial.positions")


class PositionBoard:
    def __init__(self) -> None:
        self.position = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._someone_waits = asyncio.Event()

    def advance(self, position: int) -> None:
        if position <= self.position:
            return
        self.position = position
        still = []
        for wanted, future in self._waiters:
            if wanted <= position:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((wanted, future))
        self._waiters = still
        if not still:
            self._someone_waits.clear()

    async def wait_for(self, position: int, timeout: float) -> bool:
        """True once the store has reached `position`, False after `timeout`."""
        if self.position >= position:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((position, future))
        self._someone_waits.set()
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not future]
            if not self._waiters:
                self._someone_waits.clear()

    async def someone_waits(self) -> None:
        await self._someone_waits.wait()


async def follow_by_polling(
    board: PositionBoard, read_position: Callable[[], int], *, interval: float = 0.02
) -> None:
    """SQLite across processes: read the store's position, but only while a request waits."""
    while True:
        await board.someone_waits()
        try:
            board.advance(await asyncio.to_thread(read_position))
        except Exception:
            log.warning("could not read the store's position", exc_info=True)
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
