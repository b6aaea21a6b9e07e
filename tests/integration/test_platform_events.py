"""The platform's events (CONTRACT 8), received as VoIPbin's subscribers receive them.

A queue bound the way timeline-manager binds (`QueueSubscribe`: a durable queue
bound to the fanout exchange `bin-manager.outdial-manager.event` with the key
`""`) gets each outdial event as VoIPbin's notify handler publishes it, decoded
as `sock.Event` with the outdial in VoIPbin's model; nothing for targets. A
consumer of webhook-manager's queue gets each event's customer webhook, as
`WebhookV1WebhookSend` hands it over. Whichever door made the change: the
platform's envelope, the HTTP API or a command on the bus.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from shared.client import OutdialClient
from tests import go_decoding as go
from tests.fixtures import AMQP_URL
from tests.integration.stack import Stack, running_stack
from tests.platform_caller import Caller, address

pytestmark = pytest.mark.integration

EVENT_EXCHANGE = "bin-manager.outdial-manager.event"
WEBHOOK_QUEUE = "bin-manager.webhook-manager.request"
NIL = "00000000-0000-0000-0000-000000000000"


class Subscriber:
    """timeline-manager's subscription, and webhook-manager's request queue."""

    async def __aenter__(self) -> Subscriber:
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel()
        # As VoIPbin declares it (`TopicCreate`): another kind or flag is refused.
        exchange = await channel.declare_exchange(
            EVENT_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        self.events = await channel.declare_queue(f"test.timeline.{uuid.uuid4()}", durable=True)
        await self.events.bind(exchange, routing_key="")
        self.webhooks = await channel.declare_queue(WEBHOOK_QUEUE, durable=True)
        await self.webhooks.purge()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.events.delete(if_unused=False, if_empty=False)
        await self.webhooks.delete(if_unused=False, if_empty=False)
        await self.connection.close()

    @staticmethod
    async def take(queue: AbstractQueue, count: int) -> list[AbstractIncomingMessage]:
        """`count` messages, then a moment to be sure no more come."""
        taken: list[AbstractIncomingMessage] = []
        for _ in range(300):
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                taken.append(message)
            if len(taken) >= count:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
        return taken


@pytest.fixture
async def stack(store_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(store_url, tmp_path) as s:
        yield s


async def test_each_outdial_event_reaches_voipbins_subscribers(stack: Stack) -> None:
    async with Subscriber() as subscriber, Caller("api-manager") as caller:
        customer = str(uuid.uuid4())
        created = (await caller.outdial_create(customer, NIL, "n", "d", "x")).parse(go.outdial)
        outdial_id = created["id"]
        renamed = (await caller.outdial_update_basic_info(outdial_id, "n2", "d2")).parse(go.outdial)
        campaign = str(uuid.uuid4())
        moved = (await caller.outdial_update_campaign_id(outdial_id, campaign)).parse(go.outdial)
        # A target's life: nothing for the platform's subscribers (VoIPbin publishes none).
        target = (
            await caller.outdialtarget_create(
                outdial_id, "t", "", "", address("tel", "+15559876543")
            )
        ).parse(go.target)
        await caller.outdialtarget_update_status_progressing(target["id"], 0)
        await caller.outdialtarget_update_status(target["id"], "done")
        await caller.outdialtarget_delete(target["id"])
        # The same events, whichever door the change came in by: the HTTP API ...
        token = stack.token(uuid.UUID(customer))
        status, _, _ = await stack.call(
            "PUT", f"/v1.0/outdials/{outdial_id}/data", token, json={"data": "by http"}
        )
        assert status == 200
        # ... or a command on the bus.
        async with OutdialClient(AMQP_URL) as bus:
            reply = await bus.send(
                {"type": "DeleteOutdial", "customer_id": customer, "outdial_id": outdial_id}
            )
        assert reply["status_code"] == 200
        now = (await caller.outdial_get(outdial_id)).parse(go.outdial)

        events = await subscriber.take(subscriber.events, 5)
        received = [go.event(m.body) for m in events]
        assert [kind for kind, _ in received] == [
            "outdial_created",
            "outdial_updated",
            "outdial_updated",
            "outdial_updated",
            "outdial_deleted",
        ]
        outdials = [outdial for _, outdial in received]
        # Each is the outdial as the event left it, in VoIPbin's model.
        assert outdials[:3] == [created, renamed, moved]
        assert outdials[3]["data"] == "by http" and outdials[3]["tm_delete"] is None
        assert outdials[4] == now and now["tm_delete"] is not None
        # At least once, with a message_id to drop duplicates by.
        ids = [m.message_id for m in events]
        assert all(ids) and len(set(ids)) == 5
        assert {m.routing_key for m in events} == {""}
        assert {m.exchange for m in events} == {EVENT_EXCHANGE}

        webhooks = await subscriber.take(subscriber.webhooks, 5)
        handed = [go.webhook(m.body) for m in webhooks]
        assert handed == [(customer, kind, outdial) for kind, outdial in received]
        assert not set(ids) & {m.message_id for m in webhooks}
        assert all(not m.reply_to for m in webhooks)  # fire and forget


async def test_a_nil_customers_outdial_has_events_and_no_webhook(stack: Stack) -> None:
    # VoIPbin's PublishWebhook skips the nil customer; its event is published still.
    async with Subscriber() as subscriber, Caller() as caller:
        created = (await caller.outdial_create(NIL, NIL, "n", "d", "x")).parse(go.outdial)
        events = await subscriber.take(subscriber.events, 1)
        assert [go.event(m.body) for m in events] == [("outdial_created", created)]
        assert await subscriber.take(subscriber.webhooks, 0) == []
