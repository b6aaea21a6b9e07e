"""Commands in bulk over the real broker, for the reliability tests.

`Replies` publishes messages with whatever properties a test chooses (each one
confirmed by the broker, many at a time) and keeps every reply that comes back,
raw, with its arrival time, by `correlation_id`: duplicates are kept, so a test
can assert exactly one reply per command. `BackgroundLoop` runs such a client on
an event loop of its own, for tests driven by hypothesis (which is synchronous).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aio_pika
import orjson

from shared.bus import COMMAND_QUEUE, DEAD_LETTER_QUEUE, JSON
from tests.fixtures import AMQP_URL

T = TypeVar("T")

# Publishes awaiting their confirms at once: enough to keep the broker busy.
PUBLISH_WINDOW = 200


@dataclass
class Outgoing:
    """One message to publish; `reply=False` leaves `reply_to` unset, and
    `reply_to` names another queue than this client's."""

    body: bytes
    correlation_id: str
    message_id: str | None = None
    reply: bool = True
    content_type: str | None = JSON
    headers: dict[str, Any] = field(default_factory=dict)
    reply_to: str | None = None


@dataclass
class Arrived:
    at: float  # time.monotonic()
    body: bytes

    def json(self) -> dict[str, Any]:
        value = orjson.loads(self.body)
        assert isinstance(value, dict), self.body[:200]
        return value


class Replies:
    def __init__(self, amqp_url: str = AMQP_URL):
        self.amqp_url = amqp_url
        self.arrived: dict[str, list[Arrived]] = defaultdict(list)
        self._news = asyncio.Event()

    async def __aenter__(self) -> Replies:
        self.connection = await aio_pika.connect_robust(self.amqp_url)
        self.channel = await self.connection.channel()
        self.queue = await self.channel.declare_queue(exclusive=True)
        await self.queue.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    @property
    def reply_to(self) -> str:
        return str(self.queue.name)

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.arrived[message.correlation_id or ""].append(Arrived(time.monotonic(), message.body))
        self._news.set()

    async def publish(self, out: Outgoing, routing_key: str = COMMAND_QUEUE) -> None:
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                out.body,
                content_type=out.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                # No message_id: aiormq gives the message one of its own anyway, drawn
                # from `random`, which Hypothesis seeds alike for every example, so
                # two such messages would share one (and the second be refused as a
                # reuse of the key). Drawn here from the OS instead, as unique as a
                # sender's library makes them.
                message_id=out.message_id or uuid.uuid4().hex,
                correlation_id=out.correlation_id,
                reply_to=(out.reply_to or self.reply_to) if out.reply else None,
                headers=out.headers or None,
            ),
            routing_key=routing_key,
        )

    async def publish_all(self, messages: Iterable[Outgoing]) -> None:
        """Publish in order, up to PUBLISH_WINDOW awaiting their confirms at once."""
        window: list[asyncio.Task[None]] = []
        for out in messages:
            window.append(asyncio.ensure_future(self.publish(out)))
            if len(window) >= PUBLISH_WINDOW:
                await asyncio.gather(*window)
                window = []
        await asyncio.gather(*window)

    async def send(self, command: dict[str, Any], correlation_id: str, **kw: Any) -> dict[str, Any]:
        """One command, its reply awaited."""
        await self.publish(Outgoing(orjson.dumps(command), correlation_id, **kw))
        await self.wait_for([correlation_id])
        return self.one(correlation_id)

    async def wait_for(self, correlation_ids: Iterable[str], timeout: float = 60) -> None:
        """Until each of these has a reply (or AssertionError after `timeout`)."""
        missing = set(correlation_ids)
        deadline = time.monotonic() + timeout
        while True:
            missing = {c for c in missing if not self.arrived.get(c)}
            if not missing:
                return
            left = deadline - time.monotonic()
            assert left > 0, f"{len(missing)} replies missing, e.g. {sorted(missing)[:5]}"
            self._news.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), min(left, 1.0))

    def one(self, correlation_id: str) -> dict[str, Any]:
        """The only reply to this command."""
        replies = self.arrived.get(correlation_id, [])
        assert len(replies) == 1, (correlation_id, [r.body[:200] for r in replies])
        return replies[0].json()


async def queue_depth(name: str, amqp_url: str = AMQP_URL) -> int:
    """Messages ready in a queue (not those handed to a consumer and unacked); the
    queue as the service declared it (passively: whatever its arguments)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def take_dead_letters(
    expected: int, timeout: float = 60, amqp_url: str = AMQP_URL
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take messages out of the dead-letter queue until `expected` were taken, or
    until it has been empty for a second after `timeout`."""
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        while True:
            message = await queue.get(fail=False, no_ack=True)
            if message is not None:
                taken.append(message)
                continue
            if len(taken) >= expected or time.monotonic() > deadline:
                await asyncio.sleep(0.5)  # a straggler would show up as an extra
                while (message := await queue.get(fail=False, no_ack=True)) is not None:
                    taken.append(message)
                return taken
            await asyncio.sleep(0.1)


class BackgroundLoop:
    """An event loop in a thread of its own: `run` a coroutine on it and wait."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[BackgroundLoop]:
        background = cls()
        background._thread.start()
        try:
            yield background
        finally:
            background.loop.call_soon_threadsafe(background.loop.stop)
            background._thread.join(10)
            background.loop.close()
