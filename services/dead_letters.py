"""`outdial dead-letters`: look at, and replay, the commands parked on
`outdial.commands.dead` (junk nobody could parse, and commands whose handler
failed on every attempt; see services/command/consumer.py).

Both read the queue the same way: each message is taken without an ack, so
that whatever is not acked goes back to the queue, in its place, when the
channel closes. `list` acks nothing. `replay` publishes a copy of each chosen
message to `outdial.commands`, as it first came (body, message_id,
correlation_id, reply_to, content type, its own headers without the consumer's
`x-outdial-*`), and acks the dead one only once the broker has confirmed the
copy: a crash in between leaves it in both queues, never in neither. A replayed
command that had been applied before is answered from its receipt, as the
first time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from shared.broker import connect
from shared.bus import COMMAND_QUEUE, declare_dead_letter_queue
from shared.commands import sender_said
from shared.queue_consumer import copy_of

HEADER_PREFIX = "x-outdial-"


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    customer_id: str | None
    type: str | None
    error: str | None
    error_type: str | None
    attempts: int | None
    dead_at: str | None
    correlation_id: str | None
    reply_to: str | None
    size: int

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> DeadLetter:
        headers = message.headers or {}
        customer_id, command_type = sender_said(message.body)
        attempts = headers.get("x-outdial-attempts")
        return cls(
            message_id=message.message_id,
            customer_id=customer_id,
            type=command_type,
            error=_text(headers.get("x-outdial-error")),
            error_type=_text(headers.get("x-outdial-error-type")),
            attempts=attempts if isinstance(attempts, int) else None,
            dead_at=_text(headers.get("x-outdial-dead-at")),
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            size=len(message.body),
        )

    def line(self) -> str:
        """message_id, customer, type, error, time: tab-separated, "-" for none, each
        on one line and without control characters (a sender's text could carry
        terminal escape sequences)."""
        fields = [self.message_id, self.customer_id, self.type, self.error, self.dead_at]
        return "\t".join(_printable(" ".join((f or "-").split())) for f in fields)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)


@asynccontextmanager
async def _dead_queue(
    amqp_url: str,
) -> AsyncIterator[tuple[AbstractRobustConnection, AbstractQueue, int]]:
    """The dead-letter queue and how many messages it held; closing the
    connection puts back every message taken and not acked."""
    connection = await connect(amqp_url)
    async with connection:
        queue = await declare_dead_letter_queue(connection)
        yield connection, queue, int(queue.declaration_result.message_count or 0)


async def _taken(queue: AbstractQueue, count: int) -> AsyncIterator[AbstractIncomingMessage]:
    """The first `count` messages, unacked. Bounded by the count the queue had, so
    that messages dead-lettered meanwhile (a replayed one failing again) wait
    for the next run instead of being taken round and round."""
    for _ in range(count):
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            return
        yield message


async def list_dead_letters(amqp_url: str) -> list[DeadLetter]:
    """What the dead-letter queue holds, oldest first; it keeps every message."""
    async with _dead_queue(amqp_url) as (_, queue, count):
        return [DeadLetter.of(message) async for message in _taken(queue, count)]


async def replay(
    amqp_url: str,
    chosen: Callable[[DeadLetter], bool] = lambda _: True,
) -> list[DeadLetter]:
    """Send the chosen dead letters back to `outdial.commands`; return them."""
    replayed = []
    async with _dead_queue(amqp_url) as (connection, queue, count):
        # Confirmed, and refused when unroutable (no outdial.commands yet), before
        # the dead one is acked.
        publisher = await connection.channel(on_return_raises=True)
        async for message in _taken(queue, count):
            dead = DeadLetter.of(message)
            if not chosen(dead):
                continue
            await publisher.default_exchange.publish(
                _as_first_sent(message), routing_key=COMMAND_QUEUE, mandatory=True
            )
            await message.ack()  # only now: the broker has confirmed the copy
            replayed.append(dead)
    return replayed


def _as_first_sent(message: AbstractIncomingMessage) -> aio_pika.Message:
    headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith(HEADER_PREFIX)}
    return copy_of(message, headers)
