"""A durable queue's consumer that stops cleanly, and the replies it sends: the
lifecycle both front doors on the bus share (the command consumer and the
platform's envelope listener).

Each consumer works on channels of the process's one connection (aio-pika's
robust connection restores channels, QoS and consumers after a reconnect, but
holds channels weakly, so this keeps strong references). Stopping cancels the
subscription, lets every message already being processed finish (and be
acked), and leaves any delivery that arrives meanwhile unacked, for the broker
to hand to the next consumer when the channel closes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from enum import Enum
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.abc import AbstractChannel as AbstractAiormqChannel
from aiormq.abc import ChannelFrame

from shared import amqp_frames
from shared.bus import JSON

log = logging.getLogger("outdial.bus")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
# Seconds a reply waits for its connection to come back before it is given up.
RECONNECT_WAIT = 5.0


def copy_of(
    message: AbstractIncomingMessage,
    headers: dict[str, Any] | None,
    *,
    body: bytes | None = None,
) -> aio_pika.Message:
    """A persistent copy of `message`: its body (or `body`) and the properties a
    replay needs (to the dead-letter queue, and back from it), with `headers`
    instead of its own."""
    return aio_pika.Message(
        body=message.body if body is None else body,
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


async def raw_channel(channel: AbstractChannel) -> AbstractAiormqChannel:
    """aiormq's channel under aio-pika's (the current one, after a reconnect too)."""
    return await channel.get_underlay_channel()


async def write_frames(channel: aiormq.Channel, frames: list[bytes]) -> None:
    """Queue frames made by `shared.amqp_frames` on aiormq's channel, in one write.
    Not awaited until written: the connection's write queue is first in, first out,
    so what is queued after (an ack, a `tx.commit`) reaches the broker after them."""
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    await channel.write_queue.put(ChannelFrame(payload=b"".join(frames), should_close=False))


def reply_to_node(reply_to: str) -> bytes | None:
    """The broker node a direct reply-to name points at (the node atom of the Erlang
    pid encoded in it), or None if the name is not one RabbitMQ makes."""
    rest = reply_to.removeprefix(DIRECT_REPLY_TO + ".")
    if rest == reply_to:
        return None
    try:
        term = base64.b64decode(rest.split(".", 1)[0], validate=True)
    except (binascii.Error, ValueError):
        return None
    # External term format: 131, a pid tag (NEW_PID_EXT, PID_EXT), then the node atom.
    if len(term) < 4 or term[0] != 131 or term[1] not in (88, 103):
        return None
    tag, body = term[2], term[3:]
    if tag in (100, 118) and len(body) >= 2:  # ATOM_EXT, ATOM_UTF8_EXT: 2-byte length
        size, start = int.from_bytes(body[:2], "big"), 2
    elif tag in (115, 119) and body:  # SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT: 1-byte length
        size, start = body[0], 1
    else:
        return None
    node = body[start : start + size]
    return node if len(node) == size and node else None


class Replies:
    """Sends replies to whatever `reply_to` a sender chose, so that no sender's choice
    costs another sender its reply.

    A reply to a queue goes out on a channel of the process's connection, and so
    does a reply to a direct reply-to name (`amq.rabbitmq.reply-to.…`) of a broker
    node this process has seen make such names. Any other direct reply-to name may
    be forged: RabbitMQ 3.x closes the whole *connection* that publishes to a name
    it cannot decode (541 INTERNAL_ERROR), or one of a node it does not know. Those
    go out one at a time, each confirmed, on a connection of their own: a forged
    one breaks only that connection, and only its own reply is lost (with a log
    line); one that goes through makes its node known.
    """

    def __init__(self, connection: AbstractRobustConnection, amqp_url: str):
        self.connection = connection
        self.amqp_url = amqp_url
        self._channel: AbstractChannel | None = None
        self._known_nodes: set[bytes] = set()
        self._isolated: AbstractRobustConnection | None = None
        self._isolated_channel: AbstractRobustChannel | None = None
        self._one_at_a_time = asyncio.Lock()

    async def start(self) -> None:
        self._channel = await self.connection.channel(publisher_confirms=False)
        try:
            node = await self._own_node()
        except Exception:  # then every direct reply takes the careful way
            log.warning("could not learn the broker's node for direct reply-to", exc_info=True)
        else:
            if node is not None:
                self._known_nodes.add(node)

    async def _own_node(self) -> bytes | None:
        """The node of the direct reply-to names the broker makes on this connection:
        ask it for one, by sending a message to ourselves that asks for a reply."""
        channel = await self.connection.channel()
        try:
            pseudo = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
            await pseudo.consume(_ignore, no_ack=True)
            echo = await channel.declare_queue(exclusive=True, auto_delete=True)
            await channel.default_exchange.publish(
                aio_pika.Message(b"", reply_to=DIRECT_REPLY_TO), routing_key=echo.name
            )
            message = await echo.get(no_ack=True, timeout=5)
            return reply_to_node(message.reply_to or "")
        finally:
            await channel.close()

    async def close(self) -> None:
        if self._isolated is not None:
            await self._isolated.close()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def send(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        if (
            reply_to.startswith(DIRECT_REPLY_TO)
            and reply_to_node(reply_to) not in self._known_nodes
        ):
            async with self._one_at_a_time:
                await self._send_isolated(reply_to, correlation_id, body)
            return
        assert self._channel is not None, "start() first"
        # Frames made here and queued on aiormq's channel, not aio-pika's publish: a
        # reply is one of the few things each command costs, and aio-pika's Message
        # and Exchange add a third to it, pamqp's marshalling as much again. The
        # command's ack, queued after, still reaches the broker after its reply.
        channel = await raw_channel(self._channel)
        assert isinstance(channel, aiormq.Channel)
        frames: list[bytes] = []
        flags, properties = amqp_frames.reply_properties(correlation_id)
        amqp_frames.publish(
            frames, channel.number, "", reply_to, flags, properties, body, channel.max_content_size
        )
        await write_frames(channel, frames)

    async def _send_isolated(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        if self._isolated is None:
            self._isolated = await aio_pika.connect_robust(self.amqp_url, reconnect_interval=0.1)
            self._isolated_channel = await self._isolated.channel(publisher_confirms=True)
        assert self._isolated_channel is not None
        await asyncio.wait_for(self._isolated_channel.ready(), RECONNECT_WAIT)
        message = aio_pika.Message(body, content_type=JSON, correlation_id=correlation_id)
        try:
            await self._isolated_channel.default_exchange.publish(message, routing_key=reply_to)
        except Exception:
            log.warning(
                "the broker refused a reply_to; that reply is dropped",
                extra={"fields": {"reply_to": reply_to[:300]}},
            )
            return
        node = reply_to_node(reply_to)
        if node is not None:
            self._known_nodes.add(node)


async def _ignore(message: AbstractIncomingMessage) -> None:
    """Replies to the message `Replies._own_node` sends itself: none come."""


class Settle(Enum):
    """How a message is settled once processed (in one place: `QueueConsumer`)."""

    ACK = "ack"  # done: answered and, for a command, stored
    REQUEUE = "requeue"  # not done, through no fault of its own: the broker hands it out again
    DROP = "drop"  # never to be done (already parked elsewhere, or tried twice)


class Acks:
    """Acknowledges messages in delivery order, several with one `basic.ack
    (multiple=True)`: the acks of a group of commands answered together go out as
    one frame, at the end of the loop's turn, rather than one write each.

    Only a run of messages that are all done from the oldest outstanding one on
    is acknowledged: a message still being processed (waiting for its retry, say)
    holds back the acks of those delivered after it, never the other way round.
    """

    def __init__(self) -> None:
        self._outstanding: dict[int, tuple[AbstractIncomingMessage, bool]] = {}
        self._flushing = False
        self._due: AbstractIncomingMessage | None = None  # the newest ack not yet sent
        self._sender: asyncio.Task[None] | None = None

    def delivered(self, message: AbstractIncomingMessage) -> None:
        if self._outstanding:
            oldest, _ = next(iter(self._outstanding.values()))
            if oldest.channel is not message.channel:
                # The channel was re-opened: what it had delivered goes back to the
                # queue, and delivery tags start again.
                self._outstanding.clear()
        if message.delivery_tag is not None:
            self._outstanding[message.delivery_tag] = (message, False)

    def done(self, message: AbstractIncomingMessage) -> None:
        if message.delivery_tag in self._outstanding:
            self._outstanding[message.delivery_tag] = (message, True)
            self._flush_soon()

    def forget(self, message: AbstractIncomingMessage) -> None:
        """Settled otherwise (nacked, rejected)."""
        if self._outstanding.pop(message.delivery_tag or -1, None) is not None:
            self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        last = None
        while self._outstanding:
            tag, (message, done) = next(iter(self._outstanding.items()))
            if not done:
                break
            del self._outstanding[tag]
            last = message
        if last is not None:
            self._due = last
            if self._sender is None or self._sender.done():
                self._sender = asyncio.ensure_future(self._send())

    async def drain(self) -> None:
        """Send what is due (before the channel closes)."""
        await asyncio.sleep(0)  # the flush scheduled by the last `done`
        while self._sender is not None and not self._sender.done():
            await asyncio.gather(self._sender, return_exceptions=True)

    async def _send(self) -> None:
        """One ack in flight at a time, the newest due: each acks every earlier one,
        and two sent at once can reach the socket out of order (aiormq's bounded
        write queue lets a later writer pass one waiting for room), which the broker
        answers by closing the channel ("unknown delivery tag")."""
        while self._due is not None:
            message, self._due = self._due, None
            try:
                await message.ack(multiple=True)
            except Exception:  # the channel is gone: the broker redelivers, receipts answer
                log.warning("could not ack", exc_info=True)


class QueueConsumer:
    queue_name: str

    def __init__(self, connection: AbstractRobustConnection, replies: Replies, *, prefetch: int):
        self.connection = connection
        self.replies = replies
        self.prefetch = prefetch
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._acks = Acks()

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None, "start() first"
        return self._channel

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare what else the subclass publishes to."""

    async def start(self) -> None:
        self._channel = await self.connection.channel()
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
        await self._acks.drain()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        log.info("stopped", extra={"fields": {"queue": self.queue_name}})

    async def process(self, message: AbstractIncomingMessage) -> Settle:
        """Handle one message; say how to settle it."""
        raise NotImplementedError

    async def give_up(self, message: AbstractIncomingMessage, error: Exception) -> Settle:
        """`process` raised: settle the message so that it does not hold a prefetch
        slot until the channel closes (enough of them would stall the consumer).
        Tried once more, then dropped: a message that always breaks must not loop."""
        return Settle.DROP if message.redelivered else Settle.REQUEUE

    async def publish_reply(self, message: AbstractIncomingMessage, body: bytes) -> None:
        """Answer to `reply_to`, if the sender asked for an answer."""
        if message.reply_to:
            await self.replies.send(message.reply_to, message.correlation_id, body)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # unacked: nothing of it was done, the broker redelivers it
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        self._acks.delivered(message)
        try:
            try:
                settle = await self.process(message)
            except Exception as e:
                log.exception(
                    "processing a message failed",
                    extra={"fields": {"queue": self.queue_name, "message_id": message.message_id}},
                )
                settle = await self.give_up(message, e)
            await self._settle(message, settle)
        except Exception:  # the channel is gone: the broker redelivers the message
            log.exception("could not settle the message")
        finally:
            self._in_flight.discard(task)

    async def _settle(self, message: AbstractIncomingMessage, settle: Settle | None) -> None:
        """Where every message is settled, once (`None`: as ACK)."""
        if message.processed:  # settled by `process` itself
            self._acks.forget(message)
            return
        if settle is None or settle is Settle.ACK:
            self._acks.done(message)
            return
        # Sent before the message stops holding back later acks: an ack of a later
        # delivery (multiple) reaching the broker first would settle this one too.
        try:
            if settle is Settle.REQUEUE:
                await message.nack(requeue=True)
            else:
                await message.reject(requeue=False)
        finally:
            self._acks.forget(message)
