"""The bus client: send a command to `outdial.commands` and await its reply.

One client for everyone who writes: other services, the tests, and (later) the
HTTP API. Replies come back on an exclusive queue of this client, matched to
their command by `correlation_id`. A retry must reuse the same `message_id`, so
that the service applies the command at most once.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import BaseModel

from shared.bus import COMMAND_QUEUE, JSON
from shared.config import DEFAULT_AMQP_URL


class OutdialClient:
    def __init__(self, amqp_url: str = DEFAULT_AMQP_URL, *, queue: str = COMMAND_QUEUE):
        self.amqp_url = amqp_url
        self.queue = queue  # another only to measure the bus itself (bench/)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._replies: AbstractQueue | None = None

    async def __aenter__(self) -> OutdialClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        self._channel = await self._connection.channel()
        # Declared here too, so a command sent before the service first starts waits for it.
        await self._channel.declare_queue(self.queue, durable=True)
        # A name of our own, so the robust connection redeclares the same queue after a reconnect.
        self._replies = await self._channel.declare_queue(
            f"outdial.reply.{uuid.uuid4()}", exclusive=True, auto_delete=True
        )
        await self._replies.consume(self._on_reply, no_ack=True)

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up (a robust one reconnects by itself)."""
        c = self._connection
        return c is not None and not c.is_closed and c.connected.is_set()

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        if self._connection is not None:
            await self._connection.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(orjson.loads(message.body))

    async def send(
        self,
        command: BaseModel | dict[str, Any],
        *,
        message_id: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Send one command and return its reply body (CONTRACT 3)."""
        body = (
            command.model_dump_json().encode()
            if isinstance(command, BaseModel)
            else orjson.dumps(command)
        )
        return await self.send_raw(body, message_id=message_id, timeout=timeout)

    async def send_raw(
        self, body: bytes, *, message_id: str | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send a body as it is (also one that is not a valid command) and await the reply."""
        assert self._channel is not None and self._replies is not None, "connect() first"
        correlation_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            await self.publish(body, message_id=message_id, correlation_id=correlation_id)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(correlation_id, None)

    async def publish(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply: bool = True,
    ) -> None:
        """Publish a command with a broker confirm; `reply=False` is fire and forget."""
        assert self._channel is not None and self._replies is not None, "connect() first"
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                body=body,
                content_type=JSON,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id or str(uuid.uuid4()),
                correlation_id=correlation_id,
                reply_to=self._replies.name if reply else None,
            ),
            routing_key=self.queue,
            mandatory=True,
        )
