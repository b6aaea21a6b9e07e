"""`/readyz` and a stuck projection: not ready while the read model is more than
100 events behind the store *and* has not moved for the stall time
(`OUTDIAL_READY_STALL_SECONDS`), ready again by itself once it moves.

Run split, as deployed at scale: `outdial command` and `outdial query` with no
projector anywhere, so the query process can only judge from the store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.query.readiness import ProjectionWatch
from tests.integration.processes import ReplyRecorder, free_port
from tests.reliability.fleet import SteadyLoad, fleet, new_outdial

STALL = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_only_a_projection_far_behind_and_not_moving_is_a_problem() -> None:
    clock = Clock()
    watch = ProjectionWatch(lambda: 0, lambda: 0, lag_limit=100, stall_seconds=30, clock=clock)
    assert watch.judge(0, 500) is None  # first seen now
    clock.now = 29
    assert watch.judge(0, 500) is None  # behind, not yet stuck long enough
    clock.now = 30
    problem = watch.judge(0, 500)
    assert problem is not None and "500 events behind" in problem and "30 s" in problem
    assert watch.judge(0, 100) is None  # stuck, but only 100 behind
    assert watch.judge(1, 500) is None  # it moved: the stall is timed from now
    clock.now = 59
    assert watch.judge(1, 500) is None
    clock.now = 60
    assert watch.judge(1, 500) is not None


async def readyz(port: int) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(5)) as r,
    ):
        return r.status, await r.json()


async def readyz_becomes(port: int, status: int, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        answer, body = await readyz(port)
        if answer == status:
            return body
        assert time.monotonic() < deadline, f"/readyz still {answer} {body} after {timeout} s"
        await asyncio.sleep(0.2)


@pytest.mark.integration
async def test_readyz_fails_while_the_projection_is_stuck_and_recovers_by_itself(
    tmp_path: Path, store_url: str
) -> None:
    port = free_port()
    async with (
        fleet(tmp_path, store_url, OUTDIAL_READY_STALL_SECONDS=str(STALL)) as children,
        ReplyRecorder() as recorder,
    ):
        await children.start("command")
        query = await children.start("query", OUTDIAL_HTTP_PORT=str(port))
        assert (await readyz(port))[0] == 200
        customer, outdial_id = await new_outdial(recorder)

        # 41 commands: 82 notifications (events and their receipts) behind, stuck
        # for longer than the stall time, and still ready: behind is not stuck.
        load = SteadyLoad(recorder, customer, outdial_id, rate=200)
        load.start(most=40)
        await load.finish()
        await recorder.wait_until(41)
        await asyncio.sleep(STALL + 1)
        assert (await readyz(port))[0] == 200

        # 60 more: over 100 behind, and not moving.
        more = SteadyLoad(recorder, customer, outdial_id, rate=200, prefix="more")
        more.start(most=60)
        await more.finish()
        await recorder.wait_until(101)
        began = time.monotonic()
        body = await readyz_becomes(port, 503, STALL + 30)
        stalled_after = time.monotonic() - began
        assert any("projection stalled: 202 events behind" in p for p in body["problems"]), body

        # A projector appears: the same query process is ready again, by itself.
        began = time.monotonic()
        await children.start("projector")
        await readyz_becomes(port, 200, 30)
        recovered_after = time.monotonic() - began
        assert query.poll() is None, "the query process was restarted"
    print(
        f"/readyz 503 {stalled_after:.1f} s after the last command ({body['problems']}), "
        f"200 {recovered_after:.1f} s after a projector started"
    )
