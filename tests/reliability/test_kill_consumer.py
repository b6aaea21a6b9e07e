"""`kill -9` of `outdial command` under a steady load of confirmed commands, then a
restart: every command the broker confirmed takes effect exactly once, with one
receipt, and every reply that was sent (before a kill or after, first or
repeated) says what the store holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.integration.processes import ReplyRecorder
from tests.reliability.fleet import SteadyLoad, fleet, new_outdial, read_log

pytestmark = pytest.mark.integration


async def test_a_consumer_killed_mid_load_applies_every_confirmed_command_once(
    tmp_path: Path, store_url: str, scale: int
) -> None:
    count, kills = 400 * scale, 3 * scale
    async with fleet(tmp_path, store_url) as children, ReplyRecorder() as recorder:
        consumer = await children.start("command")
        customer, outdial_id = await new_outdial(recorder)
        load = SteadyLoad(recorder, customer, outdial_id, rate=300)
        load.start(most=count)
        in_flight = []  # confirmed but not yet answered, at each kill
        for k in range(kills):
            # Spread over the load, so each kill lands with commands in flight.
            await load.wait_confirmed(count * (k + 1) // (kills + 1))
            children.kill(consumer)
            in_flight.append(len(load.confirmed) - len(recorder.replies) + 1)
            consumer = await children.start("command")
        await load.finish()
        await recorder.wait_until(count + 1, timeout=60)  # + the outdial's own
    log = await asyncio.to_thread(read_log, store_url)

    confirmed = set(load.confirmed)
    assert len(confirmed) == count
    assert set(log.created) == confirmed, "a confirmed command lost, or a stranger stored"
    assert [m for m, n in log.created.items() if n != 1] == [], "applied more than once"
    # One receipt per command (the load's and the outdial's), and no other.
    assert len(log.receipts) == count + 1
    repeated = 0
    for message_id in confirmed:
        receipt = log.receipt(customer, message_id)
        assert receipt is not None and receipt.status_code == 200, message_id
        assert receipt.body is not None and receipt.position is not None
        [target_id] = log.target_ids[message_id]
        # The receipt names the command's own event: the target's creation.
        [created] = [n for n in log.notifications if n.id == receipt.position]
        assert str(created.originator_id) == target_id and created.originator_version == 1
        replies = recorder.replies[message_id]
        repeated += len(replies) - 1
        for reply in replies:
            assert reply == {
                "status_code": 200,
                "data": orjson.loads(receipt.body),
                "position": receipt.position,
            }
            assert reply["data"]["id"] == target_id
    print(
        f"confirmed {len(confirmed)}, applied {sum(log.created.values())}, "
        f"kills {children.kills} with {in_flight} in flight, "
        f"replies {count + repeated} ({repeated} repeated)"
    )
