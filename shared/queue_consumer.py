"""A durable queue's consumer that stops cleanly: the lifecycle both front doors
on the bus share (the command consumer and the platform's envelope listener).

aio-pika's robust connection restores channels, QoS and consumers after a
reconnect but holds channels weakly, so this keeps strong references. Replies
go out on a connection of their own (see `start`). Stopping
cancels the subscription, lets every message already being processed finish
(and be acked), and leaves any delivery that arrives meanwhile unacked, for the
broker to hand to the next consumer when the channel closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from shared.bus import JSON

log = logging.getLogger("outdial.bus")

# Seconds a reply waits for its connection to come back before it is given up.
REPLY_RECONNECT_WAIT = 5.0
# Seconds for a broken connection's close to reach its channel, so that `ready()`
# waits for the reconnection instead of answering at once.
REPLY_CLOSE_SETTLES = 0.2
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def copy_of(message: AbstractIncomingMessage, headers: dict[str, Any] | None) -> aio_pika.Message:
    """A persistent copy of `message`: its body and the properties a replay needs
    (to the dead-letter queue, and back from it), with `headers` instead of its own."""
    return aio_pika.Message(
        body=message.body,
        headers=headers or None,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class QueueConsumer:
    queue_name: str

    def __init__(self, amqp_url: str, *, prefetch: int):
        self.amqp_url = amqp_url
        self.prefetch = prefetch
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._reply_connection: AbstractRobustConnection | None = None
        self._reply_channel: AbstractRobustChannel | None = None

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None, "start() first"
        return self._channel

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare what else the subclass publishes to."""

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await self._channel.declare_queue(self.queue_name, durable=True)
        await self.declare(self._channel)
        # `reply_to` is the sender's to choose, and RabbitMQ closes the connection
        # that publishes to a forged direct reply-to name (541 INTERNAL_ERROR). On
        # the consuming connection that would requeue every unacked delivery, the
        # forged one too, again after each reconnect: the consumer would be stuck.
        self._reply_connection = await aio_pika.connect_robust(
            self.amqp_url, reconnect_interval=0.5
        )
        self._reply_channel = await self._reply_connection.channel()
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consuming", extra={"fields": {"queue": self.queue_name}})

    async def stop(self) -> None:
        """Stop taking messages, finish and ack the ones in flight, then close."""
        self._stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception:  # the broker may already be gone; the channel close requeues
                log.warning("could not cancel the consumer", exc_info=True)
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        for connection in (self._reply_connection, self._connection):
            if connection is not None:
                await connection.close()
        log.info("stopped", extra={"fields": {"queue": self.queue_name}})

    async def process(self, message: AbstractIncomingMessage) -> None:
        """Handle one message and ack it (or leave it for redelivery)."""
        raise NotImplementedError

    async def give_up(self, message: AbstractIncomingMessage, error: Exception) -> None:
        """`process` raised: settle the message so that it does not hold a prefetch
        slot until the channel closes (enough of them would stall the consumer).
        Tried once more, then dropped: a message that always breaks must not loop."""
        await message.reject(requeue=not message.redelivered)

    async def publish_reply(self, message: AbstractIncomingMessage, body: bytes) -> None:
        """Answer to `reply_to`, if the sender asked for an answer.

        A reply lost because the reply connection broke under it (maybe under
        another message's forged reply_to) is sent once more when the connection
        is back; direct reply-to replies are not, being the suspects and, by
        RabbitMQ's design, at most once anyway."""
        if not message.reply_to:
            return
        assert self._reply_channel is not None, "start() first"
        reply = aio_pika.Message(body, content_type=JSON, correlation_id=message.correlation_id)
        for last in (message.reply_to.startswith(DIRECT_REPLY_TO), True):
            await asyncio.wait_for(self._reply_channel.ready(), REPLY_RECONNECT_WAIT)
            try:
                await self._reply_channel.default_exchange.publish(
                    reply, routing_key=message.reply_to
                )
                return
            except Exception:
                if last:
                    raise
                log.warning(
                    "reply failed; sending it again once reconnected",
                    extra={"fields": {"message_id": message.message_id}},
                )
                await asyncio.sleep(REPLY_CLOSE_SETTLES)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # unacked: nothing of it was done, the broker redelivers it
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            await self.process(message)
        except Exception as e:
            log.exception(
                "processing a message failed",
                extra={"fields": {"queue": self.queue_name, "message_id": message.message_id}},
            )
            if not message.processed:
                try:
                    await self.give_up(message, e)
                except Exception:  # the channel is gone: the broker redelivers the message
                    log.exception("could not settle the message")
        finally:
            self._in_flight.discard(task)
