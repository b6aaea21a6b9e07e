"""`kill -9` of `outdial relay` mid-stream under a steady load of confirmed commands,
then a restart: a consumer of `outdial.events` sees every stored event at least
once, first in the store's order per resource, and a repeated event only with an
equal `message_id` and body (CONTRACT 4); the outbox ends empty.

The relay reads the outbox, which the commands fill in their own transactions;
it publishes page after page, and only once the broker has confirmed them does
it record the last position published and delete what it published (now and
then). Each kill here lands between the two (the tap has an event the relay has
not recorded), so the next relay must publish those events again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.command import relay as relaying
from tests.integration.processes import ReplyRecorder
from tests.reliability.fleet import (
    BACKLOG,
    EventTap,
    Positions,
    SteadyLoad,
    backlog,
    check_deliveries,
    fleet,
    new_outdial,
    read_log,
    until,
)

pytestmark = pytest.mark.integration

# The service's own: outbox rows the relay reads at a time, and messages it
# publishes at most before it records its position (or after half a second).
PAGE = relaying.EventRelay.__init__.__kwdefaults__["page_size"]
RECORDED_AFTER = relaying.RECORD_MESSAGES
# Events each relay started here needs ahead of it: to record once, then publish more.
AHEAD = RECORDED_AFTER + 2 * PAGE


async def test_a_relay_killed_mid_stream_publishes_every_stored_event_in_order(
    tmp_path: Path, store_url: str, scale: int
) -> None:
    kills = 2 * scale
    # A backlog in the outbox before any relay runs, so that each relay starts
    # with pages to publish one after another.
    await asyncio.to_thread(backlog, store_url, -(-kills * AHEAD // 1000))
    at = Positions(store_url)
    async with (
        fleet(tmp_path, store_url) as children,
        ReplyRecorder() as recorder,
        EventTap() as tap,
    ):
        await children.start("command")
        customer, outdial_id = await new_outdial(recorder)
        load = SteadyLoad(recorder, customer, outdial_id, rate=50)
        load.start()

        # Each kill once the relay has recorded a page beyond the last kill and the
        # tap already has an event it has not recorded: mid-page, between publishing
        # and recording, so the page must be published again. More tries if the
        # race is lost.
        killed_at, mid_page = [0], 0

        def moved_and_publishing(after: int) -> bool:
            recorded = at.relay()
            return recorded > after and tap.latest > recorded

        for _ in range(kills + 10):
            short = killed_at[-1] + AHEAD - at.head()
            if short > 0:  # the last relay ran past the backlog: more of it, at once (the
                # steady load would take a minute to write as much)
                await asyncio.to_thread(backlog, store_url, -(-short // 1000))
            await until(lambda: at.head() > killed_at[-1] + AHEAD, 60, "a backlog")
            relay = children.spawn_to_be_killed("relay")
            await until(
                lambda: moved_and_publishing(killed_at[-1]), 60, "a page", 0.002, alive=relay
            )
            children.kill(relay)
            killed_at.append(at.relay())
            mid_page += tap.latest > killed_at[-1]
            if len(killed_at) > kills and mid_page:
                break
        assert mid_page, "no kill landed between a publication and its recording"
        await children.start("relay")

        await load.stop()
        await recorder.wait_until(len(load.confirmed) + 1, timeout=60)
        await until(lambda: at.relay() == at.head(), 60, "the relay caught up")
        await until(lambda: at.outbox() == 0, 10, "the outbox emptied")
        log = await asyncio.to_thread(read_log, store_url)
        await tap.wait_for({n.id for n in log.events})
        await asyncio.sleep(0.5)  # anything published twice has arrived too
    at.close()
    assert {n for n in log.created if not n.startswith(BACKLOG)} == set(load.confirmed)
    assert killed_at[-1] < log.head, killed_at  # each kill landed mid-stream

    repeats = check_deliveries(tap.deliveries, log.events)
    assert repeats > 0, "a page published before a kill was not published again"
    print(
        f"confirmed {len(load.confirmed)}, stored events {len(log.events)}, "
        f"relay killed at {killed_at[1:]} ({mid_page} mid-page), "
        f"delivered {len(tap.deliveries)} ({repeats} repeated)"
    )
