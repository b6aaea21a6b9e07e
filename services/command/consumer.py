"""The command consumer: AMQP in, handler, reply out, ack. It knows no rules.

eventsourcing is synchronous, so every command runs in one writer thread: the
event loop keeps the AMQP heartbeats and replies going while the store writes,
and commands are applied in the order the broker delivered them.

What happens to a message:
- a valid command is handled; its reply is published to `reply_to`, then the
  message is acked, never before its events are committed;
- a known command with bad fields is answered 400 and acked;
- a message that cannot be parsed at all is answered 400 and dead-lettered to
  `outdial.commands.dead` (published with a broker confirm, then acked);
- the store being unreachable is not the command's fault: the message is
  requeued after a back-off and retried, nothing is answered;
- any other failure (a bug) is answered 500, logged with its traceback, and
  dead-lettered with the error in its headers, so it never blocks the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
)
from eventsourcing.persistence import InterfaceError, OperationalError

from services.command.application import OutdialApplication
from services.command.handlers import Reply, handle_group
from shared.bus import COMMAND_QUEUE, DEAD_LETTER_QUEUE
from shared.commands import Command, InvalidCommand, parse_command
from shared.metrics import COMMAND_SECONDS, COMMANDS
from shared.queue_consumer import QueueConsumer

log = logging.getLogger("outdial.command")

# Commands stored in one transaction at most (group commit).
MAX_GROUP = 100
# Back-off before a message is requeued because the store is unavailable.
STORE_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


class StoreUnavailable(Exception):
    pass


class CommandConsumer(QueueConsumer):
    queue_name = COMMAND_QUEUE

    def __init__(
        self,
        app: OutdialApplication,
        amqp_url: str,
        *,
        prefetch: int = 64,
        on_stored: Callable[[], None] = lambda: None,
    ):
        super().__init__(amqp_url, prefetch=prefetch)
        self.app = app
        # Told after each command that stored events, so readers of the log in
        # this process (projector, relay) need not poll for them.
        self.on_stored = on_stored
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outdial-writer")
        self._waiting: list[tuple[Command, str | None, asyncio.Future[Reply]]] = []
        self._drainer: asyncio.Future[None] | None = None
        self._store_failures = 0

    async def declare(self, channel: AbstractChannel) -> None:
        await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True)

    async def stop(self) -> None:
        await super().stop()
        self._writer.shutdown(wait=True)

    async def process(self, message: AbstractIncomingMessage) -> None:
        started = time.perf_counter()
        command_type: str | None = None
        try:
            command = parse_command(message.body)
        except InvalidCommand as invalid:
            reply = Reply(
                400,
                error={
                    "code": "invalid_command",
                    "message": invalid.message,
                    "details": invalid.details,
                },
            )
            await self._reply(message, reply)
            if invalid.unparseable:
                await self._dead_letter(message, invalid.message)
                outcome: int | str = "dead-lettered"
            else:
                outcome = 400
            await message.ack()
            self._log(message, command_type, outcome, started)
            return

        command_type = command.type
        try:
            reply = await self._handle(command, message.message_id)
        except StoreUnavailable as e:
            delay = STORE_RETRY_DELAYS[min(self._store_failures, len(STORE_RETRY_DELAYS) - 1)]
            self._store_failures += 1
            log.error(
                "store unavailable; command requeued",
                extra={"fields": {"type": command_type, "error": str(e), "retry_in_s": delay}},
            )
            await asyncio.sleep(delay)
            await message.nack(requeue=True)
            self._log(message, command_type, "requeued", started)
            return
        except Exception as e:
            log.exception(
                "command failed",
                extra={"fields": {"type": command_type, "message_id": message.message_id}},
            )
            await self._reply(
                message,
                Reply(500, error={"code": "internal_error", "message": "internal error"}),
            )
            await self._dead_letter(message, f"{type(e).__name__}: {e}")
            await message.ack()
            self._log(message, command_type, "dead-lettered", started)
            return
        self._store_failures = 0
        if reply.position is not None:
            self.on_stored()
        await self._reply(message, reply)
        await message.ack()
        self._log(message, command_type, reply.status_code, started)

    async def _handle(self, command: Command, message_id: str | None) -> Reply:
        """The command's reply, once its events are stored. Commands that arrive
        while the writer is busy wait, and are then stored together in one
        transaction (group commit); alone, a command is stored at once."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting.append((command, message_id, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        try:
            return await future
        except (OperationalError, InterfaceError) as e:
            # Down, locked, read-only or full: the command may succeed later.
            raise StoreUnavailable(str(e)) from e

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            commands = [(command, message_id) for command, message_id, _ in group]
            try:
                results = await loop.run_in_executor(self._writer, handle_group, commands, self.app)
            except BaseException as e:
                results = [e] * len(group)
            for (_, _, future), result in zip(group, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _reply(self, message: AbstractIncomingMessage, reply: Reply) -> None:
        try:
            await self.publish_reply(message, orjson.dumps(reply.body()))
        except aio_pika.exceptions.AMQPError:
            # The command is done either way; a reply that cannot be sent (too big,
            # broker hiccup) must not keep the message unacked and redelivered.
            log.exception("reply failed", extra={"fields": {"message_id": message.message_id}})

    async def _dead_letter(self, message: AbstractIncomingMessage, error: str) -> None:
        headers: dict[str, Any] = dict(message.headers or {})
        headers["x-outdial-error"] = error[:4096]
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                body=message.body,
                headers=headers,
                content_type=message.content_type,
                message_id=message.message_id,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=DEAD_LETTER_QUEUE,
        )

    @staticmethod
    def _log(
        message: AbstractIncomingMessage,
        command_type: str | None,
        outcome: int | str,
        started: float,
    ) -> None:
        seconds = time.perf_counter() - started
        COMMANDS.labels(command_type or "unparseable", str(outcome)).inc()
        COMMAND_SECONDS.labels(command_type or "unparseable").observe(seconds)
        log.info(
            "command",
            extra={
                "fields": {
                    "type": command_type,
                    "message_id": message.message_id,
                    "outcome": outcome,
                    "ms": round(seconds * 1000, 3),
                }
            },
        )
