"""The event relay of CONTRACT 4: every stored event on `outdial.events`, once per
delivery, in order, with a message_id that is the same on every delivery."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from services.command import outbox
from services.command.relay import EventRelay
from services.store import read_transaction
from shared.bus import EVENT_EXCHANGE
from shared.client import OutdialClient
from tests.expected import BUS_OUTDIAL_KEYS, TEL
from tests.fixtures import AMQP_URL
from tests.integration.stack import running_stack

pytestmark = pytest.mark.integration


class Subscriber:
    """A consumer of outdial.events, bound to every routing key."""

    async def __aenter__(self) -> Subscriber:
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            EVENT_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.queue = await channel.declare_queue(exclusive=True)
        await self.queue.bind(exchange, "#")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def take(
        self, count: int, timeout: float = 20
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def loop() -> None:
            while len(taken) < count:
                message = await self.queue.get(fail=False, no_ack=True)
                if message is None:
                    await asyncio.sleep(0.02)
                else:
                    taken.append(message)

        await asyncio.wait_for(loop(), timeout)
        await asyncio.sleep(0.2)
        assert await self.queue.get(fail=False, no_ack=True) is None, "more events than expected"
        return taken


async def commands(bus: OutdialClient, customer: str) -> None:
    """Nine events, of every type."""

    async def ok(**fields: Any) -> dict[str, Any]:
        reply = await bus.send({"customer_id": customer, **fields})
        assert reply["status_code"] == 200, reply
        return dict(reply["data"])

    o = (await ok(type="CreateOutdial", name="n", detail="", data=""))["id"]
    await ok(type="UpdateOutdial", outdial_id=o, name="n2", detail="d2")
    await ok(type="UpdateOutdialCampaign", outdial_id=o, campaign_id=str(uuid.uuid4()))
    await ok(type="UpdateOutdialData", outdial_id=o, data="x")
    t = (await ok(type="AddTarget", outdial_id=o, name="t", detail="", data="", destination_0=TEL))[
        "id"
    ]
    await ok(type="MarkTargetProgressing", outdial_id=o, target_id=t, destination_index=0)
    await ok(type="UpdateTargetStatus", outdial_id=o, target_id=t, status="done")
    await ok(type="DeleteTarget", outdial_id=o, target_id=t)
    await ok(type="DeleteOutdial", outdial_id=o)


@pytest.fixture
async def bus() -> AsyncIterator[OutdialClient]:
    async with OutdialClient(AMQP_URL) as client:
        yield client


async def test_every_event_is_published_in_order_with_the_documented_body(
    store_url: str, tmp_path: Path, bus: OutdialClient
) -> None:
    customer = str(uuid.uuid4())
    async with Subscriber() as events, running_stack(store_url, tmp_path):
        await commands(bus, customer)
        taken = await events.take(9)
    bodies = [orjson.loads(m.body) for m in taken]
    assert [b["type"] for b in bodies] == [
        "outdial_created",
        "outdial_updated",
        "outdial_updated",
        "outdial_updated",
        "outdialtarget_created",
        "outdialtarget_updated",
        "outdialtarget_updated",
        "outdialtarget_deleted",
        "outdial_deleted",
    ]
    assert [m.routing_key for m in taken] == [b["type"] for b in bodies]
    for body in bodies:
        assert list(body) == ["type", "publisher", "data_type", "data", "position"]
        assert (body["publisher"], body["data_type"]) == ("outdial-manager", "application/json")
        assert body["data"]["customer_id"] == customer
    assert list(bodies[0]["data"]) == BUS_OUTDIAL_KEYS
    assert bodies[0]["data"]["tm_update"] == "9999-01-01 00:00:00.000000"
    assert bodies[1]["data"]["name"] == "n2"
    assert bodies[5]["data"]["status"] == "progressing"
    assert bodies[5]["data"]["try_count_0"] == 1
    assert bodies[6]["data"]["status"] == "done"
    assert bodies[8]["data"]["tm_delete"] != "9999-01-01 00:00:00.000000"
    positions = [b["position"] for b in bodies]
    assert positions == sorted(set(positions))
    assert len({m.message_id for m in taken}) == 9
    assert all(m.content_type == "application/json" for m in taken)


async def test_the_relay_resumes_without_gaps_and_republishes_with_equal_message_ids(
    store_url: str, tmp_path: Path, bus: OutdialClient
) -> None:
    customer = str(uuid.uuid4())
    async with Subscriber() as events, running_stack(store_url, tmp_path, ["command"]) as stack:
        connection = await aio_pika.connect_robust(AMQP_URL)
        channel = await connection.channel(publisher_confirms=False)

        async def relay_all(relay: EventRelay | None = None) -> None:
            relay = relay or EventRelay(stack.rt.app, channel, page_size=4)
            await relay.declare()
            while await relay.relay_page():
                pass

        await commands(bus, customer)
        await relay_all()
        first = await events.take(9)
        await commands(bus, customer)

        class Crashing(EventRelay):
            """Dies after the broker confirmed a page, before it is recorded."""

            def _record(self, position: int) -> None:
                raise RuntimeError("killed")

        with pytest.raises(RuntimeError):
            await relay_all(Crashing(stack.rt.app, channel, page_size=20))
        second = await events.take(9)
        # A new relay carries on from the recorded position: the crashed page again,
        # the same events in the same order, with equal message_ids.
        await relay_all()
        again = await events.take(9)
        await connection.close()
        # Published and recorded: the outbox keeps nothing.
        with read_transaction(stack.rt.app.recorder) as c:
            assert outbox.page(c, stack.rt.app.store.dialect, 0, 100) == []
    positions = [orjson.loads(m.body)["position"] for m in first + second]
    assert positions == sorted(set(positions))
    assert [m.message_id for m in again] == [m.message_id for m in second]
    assert [m.body for m in again] == [m.body for m in second]


async def test_an_event_larger_than_a_frame_arrives_whole(
    store_url: str, tmp_path: Path, bus: OutdialClient
) -> None:
    """65,536 four-byte characters of `data`: a body of over 256 KiB, in more than
    one body frame (RabbitMQ's frame_max is 128 KiB), beside small ones."""
    customer = str(uuid.uuid4())
    data = "\U0001f600" * 65_536
    async with Subscriber() as events, running_stack(store_url, tmp_path):
        created = await bus.send(
            {
                "customer_id": customer,
                "type": "CreateOutdial",
                "name": "n",
                "detail": "",
                "data": data,
            }
        )
        assert created["status_code"] == 200, created
        updated = await bus.send(
            {
                "customer_id": customer,
                "type": "UpdateOutdial",
                "outdial_id": created["data"]["id"],
                "name": "n2",
                "detail": "",
            }
        )
        assert updated["status_code"] == 200, updated
        taken = await events.take(2)
    assert len(taken[0].body) > 256 * 1024
    first, second = (orjson.loads(m.body) for m in taken)
    assert first["data"]["data"] == data
    assert (second["data"]["name"], second["data"]["data"]) == ("n2", data)
