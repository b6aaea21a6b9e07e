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
- the store being unreachable, locked or read-only is not the command's fault:
  the message is requeued after a back-off and retried, nothing is answered;
- any other failure (a bug, or a fault that may pass) is tried again after a
  growing back-off, in the message's own task, so other commands go on
  meanwhile; when every attempt has failed it is answered 500 once, logged with
  its traceback, and dead-lettered with the error in its headers, so it never
  blocks the queue (`outdial dead-letters replay` sends it back once fixed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import orjson
import pamqp.encode
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from eventsourcing.persistence import InterfaceError, OperationalError

from services.command.handlers import Incoming, Reply, UnitOfWorkFactory, handle_group
from services.command.receipts import command_digest
from shared.bus import COMMAND_QUEUE, DEAD_LETTER_QUEUE, declare_dead_letter_queue
from shared.commands import MAX_COMMAND_BYTES, InvalidCommand, parse_command, sender_said
from shared.errors import ErrorCode
from shared.metrics import command_counted
from shared.queue_consumer import QueueConsumer, Replies, Settle, copy_of

log = logging.getLogger("outdial.command")

# Commands stored in one transaction at most (group commit).
MAX_GROUP = 100
# Back-off before a message is requeued because the store is unavailable.
STORE_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
# Back-off before the 2nd and the 3rd attempt of a command whose handler failed
# unexpectedly: a fault that passes gets another chance, a lasting one (a bug)
# is dead-lettered after three attempts instead of being retried forever.
FAILURE_RETRY_DELAYS = (0.5, 1.0)
# PostgreSQL's "cannot execute INSERT in a read-only transaction" (a standby after
# a failover, a read-only role or database), which psycopg files as an internal error.
READ_ONLY_SQL_TRANSACTION = "25006"

# Bytes of the body of junk (a message that is not a command at all) kept on the
# dead-letter queue: enough to see what it was, not a 100 MB sample.
MAX_KEPT_JUNK = 64 * 1024
# Bytes of a message's own headers carried to the dead-letter queue, beside ours: a
# content header must fit in one frame (128 KiB on RabbitMQ), and one that does not
# makes the broker close the publishing connection, the consumer's.
MAX_CARRIED_HEADERS = 64 * 1024

INTERNAL_ERROR = Reply.refused(ErrorCode.INTERNAL_ERROR, "internal error")
TOO_LARGE_MESSAGE = f"a command is at most {MAX_COMMAND_BYTES} bytes"
TOO_LARGE = Reply.refused(ErrorCode.COMMAND_TOO_LARGE, TOO_LARGE_MESSAGE)


class StoreUnavailable(Exception):
    pass


class CommandFailed(Exception):
    """Every attempt of a command failed; `error` is the last one's."""

    def __init__(self, error: Exception, attempts: int):
        super().__init__(describe(error))
        self.error = error
        self.attempts = attempts


def store_unavailable(error: BaseException) -> bool:
    """Down, locked, read-only or full: the command may succeed later as it is."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return getattr(error.__cause__, "sqlstate", None) == READ_ONLY_SQL_TRANSACTION


def describe(error: BaseException) -> str:
    """The error and, when eventsourcing wrapped the driver's, the driver's code
    (SQLite's SQLITE_IOERR_WRITE for a file made immutable says more than its
    "disk I/O error")."""
    text = f"{type(error).__name__}: {error}"
    cause = error.__cause__
    code = getattr(cause, "sqlite_errorname", None) or getattr(cause, "sqlstate", None)
    if code:
        text += f" ({code})"
    return text


def carried_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """A message's own headers, if they can go with it to the dead-letter queue;
    else a note that they were dropped. A table too big, or with a value the
    client cannot encode again (a long string that is not UTF-8 comes back as
    bytes), would fail that publish every time the message is redelivered."""
    try:
        size = len(pamqp.encode.field_table(headers))
    except (TypeError, ValueError):
        return {"x-outdial-headers-dropped": "not encodable"}
    if size > MAX_CARRIED_HEADERS:
        return {"x-outdial-headers-dropped": f"{size} bytes"}
    return dict(headers)


class CommandConsumer(QueueConsumer):
    queue_name = COMMAND_QUEUE

    def __init__(
        self,
        connection: AbstractRobustConnection,
        replies: Replies,
        new_uow: UnitOfWorkFactory,
        *,
        prefetch: int = 64,
        on_stored: Callable[[int], None] = lambda position: None,
        retry_delays: Sequence[float] = FAILURE_RETRY_DELAYS,
    ):
        super().__init__(connection, replies, prefetch=prefetch)
        self.new_uow = new_uow
        # Told the position after each command that stored events, so the relay
        # and the readers waiting for a position in this process need not poll.
        self.on_stored = on_stored
        self.retry_delays = tuple(retry_delays)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outdial-writer")
        self._waiting: list[tuple[Incoming, asyncio.Future[Reply]]] = []
        self._drainer: asyncio.Future[None] | None = None
        self._store_failures = 0

    async def declare(self, channel: AbstractChannel) -> None:
        await declare_dead_letter_queue(self.connection)

    async def stop(self) -> None:
        await super().stop()
        self._writer.shutdown(wait=True)

    async def process(self, message: AbstractIncomingMessage) -> Settle:
        started = time.perf_counter()
        command_type: str | None = None
        if len(message.body) > MAX_COMMAND_BYTES:
            # Refused before parsing: parsing 100 MB of targets would hold the
            # writer and the memory of every process the command reaches. Parked
            # as a sample, for whoever wonders who sent it.
            await self._reply(message, TOO_LARGE)
            await self._dead_letter(
                message, "CommandTooLarge", TOO_LARGE_MESSAGE, keep=MAX_KEPT_JUNK
            )
            self._log(message, command_type, 413, started)
            return Settle.ACK
        try:
            command = parse_command(message.body)
        except InvalidCommand as invalid:
            reply = Reply.refused(
                ErrorCode.INVALID_COMMAND, invalid.message, details=invalid.details
            )
            await self._reply(message, reply)
            if invalid.unparseable:
                await self._dead_letter(
                    message, "InvalidCommand", invalid.message, keep=MAX_KEPT_JUNK
                )
                outcome: int | str = "dead-lettered"
            else:
                outcome = 400
            # The log names the type the message claims, as `dead-letters list` does;
            # the metrics count it as unparseable (a sender's text makes no label).
            self._log(message, None, outcome, started, claimed=sender_said(message.body)[1])
            return Settle.ACK

        command_type = command.type
        try:
            incoming = Incoming(command, message.message_id, command_digest(message.body))
            reply = await self._apply(incoming)
        except StoreUnavailable as e:
            delay = STORE_RETRY_DELAYS[min(self._store_failures, len(STORE_RETRY_DELAYS) - 1)]
            self._store_failures += 1
            log.error(
                "store unavailable (down, locked or read-only); command requeued",
                extra={
                    "fields": {
                        "type": command_type,
                        "message_id": message.message_id,
                        "error": str(e),
                        "retry_in_s": delay,
                    }
                },
            )
            await asyncio.sleep(delay)
            self._log(message, command_type, "requeued", started)
            return Settle.REQUEUE
        except CommandFailed as failed:
            log.error(
                "command failed; dead-lettered",
                exc_info=failed.error,
                extra={
                    "fields": {
                        "type": command_type,
                        "message_id": message.message_id,
                        "attempts": failed.attempts,
                    }
                },
            )
            await self._reply(message, INTERNAL_ERROR)
            await self._dead_letter(
                message, type(failed.error).__name__, str(failed), attempts=failed.attempts
            )
            self._log(message, command_type, "dead-lettered", started)
            return Settle.ACK
        self._store_failures = 0
        if reply.position is not None:
            self.on_stored(reply.position)
        await self._reply(message, reply)
        self._log(message, command_type, reply.status_code, started)
        return Settle.ACK

    async def give_up(self, message: AbstractIncomingMessage, error: Exception) -> Settle:
        """Processing itself broke (not a handler): park the message with the error
        rather than drop it; its sender may have had a reply or not."""
        await self._dead_letter(message, type(error).__name__, describe(error))
        return Settle.ACK

    async def _apply(self, incoming: Incoming) -> Reply:
        """The command's reply, trying again after a back-off while its handler fails
        unexpectedly. Only this message's task waits meanwhile: the writer goes on
        with the other commands. Raises CommandFailed once the attempts are spent."""
        for attempt, delay in enumerate((*self.retry_delays, None), start=1):
            try:
                return await self._handle(incoming)
            except StoreUnavailable:
                raise
            except Exception as e:
                if delay is None:
                    raise CommandFailed(e, attempt) from e
                log.warning(
                    "command failed; retrying",
                    exc_info=True,
                    extra={
                        "fields": {
                            "type": incoming.command.type,
                            "message_id": incoming.message_id,
                            "attempt": attempt,
                            "retry_in_s": delay,
                        }
                    },
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _handle(self, incoming: Incoming) -> Reply:
        """The command's reply, once its events are stored. Commands that arrive
        while the writer is busy wait, and are then stored together in one
        transaction (group commit); alone, a command is stored at once."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting.append((incoming, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        try:
            return await future
        except Exception as e:
            if store_unavailable(e):
                raise StoreUnavailable(describe(e)) from e
            raise

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            incomings = [incoming for incoming, _ in group]
            try:
                results = await loop.run_in_executor(
                    self._writer, handle_group, incomings, self.new_uow
                )
            except BaseException as e:
                results = [e] * len(group)
            for (_, future), result in zip(group, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _reply(self, message: AbstractIncomingMessage, reply: Reply) -> None:
        try:
            await self.publish_reply(message, orjson.dumps(reply.body()))
        except Exception:
            # The command is done either way; a reply that cannot be sent (too big,
            # broker hiccup, a reply_to that breaks the connection) must not keep
            # the message unacked and redelivered. The sender resends it, with its
            # message_id, and gets the same reply from the receipt.
            log.exception("reply failed", extra={"fields": {"message_id": message.message_id}})

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        error_type: str,
        error: str,
        *,
        attempts: int = 1,
        keep: int | None = None,
    ) -> None:
        """Park the message on the dead-letter queue as it came (its body and the
        properties a replay needs), with what failed, how often and when in
        `x-outdial-*` headers (see services/dead_letters.py). `keep`: at most that
        many bytes of the body (junk nobody will replay is kept as a sample)."""
        headers = carried_headers(message.headers or {})
        headers["x-outdial-error"] = error[:4096]
        headers["x-outdial-error-type"] = error_type
        headers["x-outdial-attempts"] = attempts
        headers["x-outdial-dead-at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        copy = copy_of(message, headers)
        if keep is not None and len(message.body) > keep:
            headers["x-outdial-body-bytes"] = len(message.body)
            copy = copy_of(message, headers, body=message.body[:keep])
        await self.channel.default_exchange.publish(copy, routing_key=DEAD_LETTER_QUEUE)

    @staticmethod
    def _log(
        message: AbstractIncomingMessage,
        command_type: str | None,
        outcome: int | str,
        started: float,
        *,
        claimed: str | None = None,
    ) -> None:
        """One line per message; `claimed`: the type a message that is no valid
        command names in its body."""
        seconds = time.perf_counter() - started
        command_counted(command_type or "unparseable", outcome, seconds)
        log.info(
            "command",
            extra={
                "fields": {
                    "type": command_type or claimed,
                    "message_id": message.message_id,
                    "outcome": outcome,
                    "ms": round(seconds * 1000, 3),
                }
            },
        )
