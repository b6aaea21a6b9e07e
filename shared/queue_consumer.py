"""A durable queue's consumer that stops cleanly: the lifecycle both front doors
on the bus share (the command consumer and the platform's envelope listener).

aio-pika's robust connection restores channels, QoS and consumers after a
reconnect but holds channels weakly, so this keeps strong references. Stopping
cancels the subscription, lets every message already being processed finish
(and be acked), and leaves any delivery that arrives meanwhile unacked, for the
broker to hand to the next consumer when the channel closes.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from shared.bus import JSON

log = logging.getLogger("outdial.bus")


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
        if self._connection is not None:
            await self._connection.close()
        log.info("stopped", extra={"fields": {"queue": self.queue_name}})

    async def process(self, message: AbstractIncomingMessage) -> None:
        """Handle one message and ack it (or leave it for redelivery)."""
        raise NotImplementedError

    async def publish_reply(self, message: AbstractIncomingMessage, body: bytes) -> None:
        """Answer to `reply_to`, if the sender asked for an answer."""
        if message.reply_to:
            await self.channel.default_exchange.publish(
                aio_pika.Message(body, content_type=JSON, correlation_id=message.correlation_id),
                routing_key=message.reply_to,
            )

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # unacked: nothing of it was done, the broker redelivers it
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            await self.process(message)
        finally:
            self._in_flight.discard(task)
