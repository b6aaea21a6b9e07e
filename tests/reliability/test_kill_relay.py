"""`kill -9` of `outdial relay` mid-stream under a steady load of confirmed commands,
then a restart: a consumer of `outdial.events` sees every stored event at least
once, first in the store's order per resource, and a repeated event only with an
equal `message_id` and body (CONTRACT 4)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Notification

from tests.integration.processes import ReplyRecorder
from tests.reliability.fleet import (
    EventTap,
    Positions,
    SteadyLoad,
    fleet,
    new_outdial,
    read_log,
    until,
)

pytestmark = pytest.mark.integration

PAGE = 200  # notifications the relay publishes before it records its position


def check_deliveries(
    deliveries: list[tuple[str | None, dict[str, Any]]], events: list[Notification]
) -> int:
    """Assert CONTRACT 4's promises of what a consumer saw; return the repeats."""
    stored = {n.id: n for n in events}
    first: dict[int, tuple[str | None, dict[str, Any]]] = {}
    order: dict[str, list[int]] = defaultdict(list)  # resource -> positions, first sightings
    for message_id, body in deliveries:
        position = body["position"]
        assert position in stored, f"published {position}, which is no stored event"
        if position in first:
            assert (message_id, body) == first[position], "a repeat that differs"
            continue
        first[position] = (message_id, body)
        assert body["data"]["id"] == str(stored[position].originator_id)
        order[body["data"]["id"]].append(position)
    assert set(first) == set(stored), f"never published: {sorted(set(stored) - set(first))}"
    assert len({m for m, _ in first.values()}) == len(first), "two events, one message_id"
    for resource, positions in order.items():
        assert positions == sorted(positions), f"out of the store's order: {resource}"
    return len(deliveries) - len(first)


async def test_a_relay_killed_mid_stream_publishes_every_stored_event_in_order(
    tmp_path: Path, store_url: str, scale: int
) -> None:
    kills = 3 * scale
    at = Positions(store_url)
    async with (
        fleet(tmp_path, store_url) as children,
        ReplyRecorder() as recorder,
        EventTap() as tap,
    ):
        await children.start("command")
        customer, outdial_id = await new_outdial(recorder)
        load = SteadyLoad(recorder, customer, outdial_id, rate=150)
        load.start()

        # Each kill once the relay has recorded a page beyond the last kill and the
        # tap already has an event it has not recorded: mid-page, between publishing
        # and recording, so the page must be published again. Each relay starts
        # with a backlog of pages, so the next page follows the recorded one at
        # once; more tries if the race is lost.
        killed_at, mid_page = [0], 0

        def moved_and_publishing(after: int) -> bool:
            recorded = at.relay()
            return recorded > after and tap.latest > recorded

        for _ in range(kills + 10):
            await until(lambda: at.head() > killed_at[-1] + 3 * PAGE, 60, "a backlog")
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
        log = await asyncio.to_thread(read_log, store_url)
        await tap.wait_for({n.id for n in log.events})
        await asyncio.sleep(0.5)  # anything published twice has arrived too
    at.close()
    assert set(log.created) == set(load.confirmed)
    assert killed_at[-1] < log.head, killed_at  # each kill landed mid-stream

    repeats = check_deliveries(tap.deliveries, log.events)
    assert repeats > 0, "a page published before a kill was not published again"
    print(
        f"confirmed {len(load.confirmed)}, stored events {len(log.events)}, "
        f"relay killed at {killed_at[1:]} ({mid_page} mid-page), "
        f"delivered {len(tap.deliveries)} ({repeats} repeated)"
    )
