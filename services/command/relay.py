"""The event relay: the outbox's messages, published to RabbitMQ.

The outbox is written in the commands' own transactions (`outbox`), so a stored
event has its messages there even if the process dies right after the commit.
The relay reads the next page of them, publishes each with a broker confirm,
and only then, in one transaction, records the page's last position (the
"relay" position) and deletes the page. A crash in between publishes the page
again: delivery is at least once, each message with a `message_id` that never
changes, so consumers can drop duplicates. Messages are published in the order
of the log, so in order per resource. It needs no aggregate: the bodies were
rendered when the events were stored.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from services.command import outbox
from services.command.application import OutdialApplication
from services.store import read_position, read_transaction, write_position, write_transaction
from shared.bus import EVENT_EXCHANGE, JSON

log = logging.getLogger("outdial.relay")

RELAY = "relay"


class EventRelay:
    def __init__(self, app: OutdialApplication, channel: AbstractChannel, *, page_size: int = 500):
        """`channel`: a channel with publisher confirms, of the process's connection."""
        self.app = app
        self.channel = channel
        self.page_size = page_size
        self.dialect = app.store.dialect
        self._exchanges: dict[str, AbstractExchange] = {}

    async def declare(self) -> None:
        self._exchanges[EVENT_EXCHANGE] = await self.channel.declare_exchange(
            EVENT_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )

    def position(self) -> int:
        with read_transaction(self.app.recorder) as c:
            return read_position(c, self.dialect, RELAY) or 0

    def _page(self) -> list[outbox.OutboxRow]:
        with read_transaction(self.app.recorder) as c:
            after = read_position(c, self.dialect, RELAY) or 0
            return outbox.page(c, self.dialect, after, self.page_size)

    def _done(self, position: int) -> None:
        with write_transaction(self.app.recorder) as c:
            write_position(c, self.dialect, RELAY, position)
            outbox.delete_through(c, self.dialect, position)

    async def relay_page(self) -> int:
        """Publish the next page; return how many messages it held."""
        rows = await asyncio.to_thread(self._page)
        if not rows:
            return 0
        # Started in log order on one channel, so the broker receives them in order;
        # awaited together, so the page costs one round of confirms, not one each.
        await asyncio.gather(
            *(
                self._exchanges[row.exchange].publish(
                    aio_pika.Message(
                        row.body,
                        content_type=JSON,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=row.message_id,
                        type=row.routing_key,
                    ),
                    routing_key=row.routing_key,
                    # An event no queue is bound for is not an error (publish/subscribe);
                    # mandatory would have the broker send each such one back.
                    mandatory=False,
                )
                for row in rows
            )
        )
        last = rows[-1].position
        await asyncio.to_thread(self._done, last)
        return len(rows)
