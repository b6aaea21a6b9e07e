"""The event relay: every stored event, published to the `outdial.events` exchange.

The event store is the outbox. The relay reads the notification log after its
tracked position, publishes each event with a broker confirm, and only then
records the page's last position (eventsourcing's tracking table, under the name
"relay"). A crash in between publishes the page again: delivery is at least
once, each event with a `message_id` that never changes, so consumers can drop
duplicates. Events are published in log order, so in order per resource.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from eventsourcing.persistence import IntegrityError, Notification, Tracking

from services.command.application import OutdialApplication
from services.command.domain import Outdial, OutdialTarget
from services.command.history import AggregateHistory, is_receipt
from shared import shapes
from shared.bus import EVENT_EXCHANGE, JSON
from shared.metrics import RELAY_POSITION

log = logging.getLogger("outdial.relay")

TRACKING_NAME = "relay"
PUBLISHER = "outdial-manager"
EVENT_IDS = uuid5(NAMESPACE_URL, "urn:outdial:event")

# The event class's name on each aggregate, to the routing key of CONTRACT 4.
ROUTING_KEYS = {
    "Outdial.Created": "outdial_created",
    "Outdial.Updated": "outdial_updated",
    "Outdial.CampaignUpdated": "outdial_updated",
    "Outdial.DataUpdated": "outdial_updated",
    "Outdial.Deleted": "outdial_deleted",
    "OutdialTarget.Created": "outdialtarget_created",
    "OutdialTarget.TryStarted": "outdialtarget_updated",
    "OutdialTarget.StatusUpdated": "outdialtarget_updated",
    "OutdialTarget.Deleted": "outdialtarget_deleted",
}


def event_message_id(originator_id: UUID | str, version: int) -> str:
    """The same on every publication of one event, in every process."""
    return str(uuid5(EVENT_IDS, f"{originator_id}/{version}"))


class EventRelay:
    def __init__(self, app: OutdialApplication, amqp_url: str, *, page_size: int = 200):
        self.app = app
        self.amqp_url = amqp_url
        self.page_size = page_size
        self.history = AggregateHistory(app)
        self.tracking = app.factory.tracking_recorder()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    @property
    def position(self) -> int:
        return self.tracking.max_tracking_id(TRACKING_NAME) or 0

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.declare_exchange(
            EVENT_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    def _messages(self, after: int) -> tuple[list[tuple[str, aio_pika.Message]], int | None]:
        """The next page of events as (routing key, message), and the page's last position."""
        notifications = self.app.recorder.select_notifications(
            after, self.page_size, inclusive_of_start=False
        )
        messages = []
        for notification in notifications:
            if not is_receipt(notification):
                messages.append(self._message(notification))
        return messages, (notifications[-1].id if notifications else None)

    def _message(self, notification: Notification) -> tuple[str, aio_pika.Message]:
        event = self.history.decode(notification)
        aggregate = self.history.apply(event)
        key = ROUTING_KEYS[type(event).__qualname__]
        data: dict[str, Any]
        if isinstance(aggregate, Outdial):
            data = shapes.outdial(aggregate, with_customer=True)
        else:
            assert isinstance(aggregate, OutdialTarget)
            data = shapes.target(aggregate, with_customer=True)
        body = {
            "type": key,
            "publisher": PUBLISHER,
            "data_type": JSON,
            "data": data,
            "position": notification.id,
        }
        return key, aio_pika.Message(
            orjson.dumps(body),
            content_type=JSON,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event_message_id(
                notification.originator_id, notification.originator_version
            ),
            type=key,
        )

    async def relay_page(self) -> int:
        """Publish the next page; return how many notifications it covered."""
        assert self._exchange is not None
        after = await asyncio.to_thread(lambda: self.position)
        messages, last = await asyncio.to_thread(self._messages, after)
        if last is None:
            return 0
        # Started in log order on one channel, so the broker receives them in order;
        # awaited together, so the page costs one round of confirms, not one each.
        await asyncio.gather(
            *(self._exchange.publish(message, routing_key=key) for key, message in messages)
        )
        try:
            await asyncio.to_thread(self.tracking.insert_tracking, Tracking(TRACKING_NAME, last))
        except IntegrityError:
            log.info("page already relayed elsewhere", extra={"fields": {"after": after}})
        RELAY_POSITION.set(last)
        return last - after
