"""Whether the projection keeps up: the part of `/readyz` that needs a memory.

A projection some events behind is normal under load. One far behind *and* not
moving is stuck (its process dead, a page that always fails, a held lock), and
a reader asking for its own write would wait for nothing, so the API reports
itself not ready until the projection moves again.

It is judged from the store alone, the read model's tracked position against
the log's head, so it works the same in `outdial run` and in an `outdial query`
process that has no projector of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class ProjectionWatch:
    def __init__(
        self,
        position: Callable[[], int],
        head: Callable[[], int],
        *,
        lag_limit: int,
        stall_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.position = position
        self.head = head
        self.lag_limit = lag_limit
        self.stall_seconds = stall_seconds
        self.clock = clock
        self._seen: int | None = None
        self._since = clock()

    def judge(self, position: int, head: int) -> str | None:
        """The problem with the projection at `position` when the log ends at
        `head`, or None. Positions only increase, so one unchanged since it was
        first seen has made no progress for at least that long."""
        now = self.clock()
        if position != self._seen:
            self._seen, self._since = position, now
        lag = head - position
        stalled = now - self._since
        if lag > self.lag_limit and stalled >= self.stall_seconds:
            return (
                f"projection stalled: {lag} events behind the store, "
                f"no progress for {stalled:.0f} s"
            )
        return None

    async def problem(self) -> str | None:
        """Look now: a readiness check (an unreachable store is another check's problem)."""

        def read() -> tuple[int, int]:
            return self.position(), self.head()

        try:
            position, head = await asyncio.to_thread(read)
        except Exception:
            return None
        # Judged on the event loop, so concurrent checks do not race on the memory.
        return self.judge(position, head)
