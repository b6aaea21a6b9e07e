"""The bus client: send a command to `outdial.commands` and await its reply.

One client for everyone who writes: other services, the tests, the HTTP API and
the envelope listener. Replies come back on an exclusive queue of this client,
matched to their command by `correlation_id`. A command that gets no reply in
time is sent again with the same `message_id`, so the service applies it at most
once and answers the retry with the first reply.

Two layers: `send` takes a command (a model or a plain dict) and returns the
reply body as it is; the typed methods (`create_outdial`, `add_target`, ...)
take typed arguments, check them with the very models the service parses, and
return a `Written` resource model or raise the `OutdialError` of the reply's
`error.code`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import BaseModel

from shared import commands, errors
from shared.broker import connect
from shared.bus import COMMAND_QUEUE, JSON
from shared.commands import TargetFields, parse_command
from shared.config import DEFAULT_AMQP_URL
from shared.resources import (
    AddedTargets,
    ClaimedTarget,
    CustomerOutdial,
    CustomerTarget,
    ErrorDetail,
)

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Written(Generic[R]):
    """What a command did: the resource as it is now, and the store's position after it.

    A read that sends `X-Outdial-Min-Position: position` sees the write.
    """

    data: R
    position: int


class TypedCommands:
    """One method per command of CONTRACT 3, on top of `send`.

    Arguments are checked by the command models the service itself parses, so a
    mistake raises pydantic's ValidationError here, before anything is sent. A
    refused command raises the `shared.errors` class of its code. Each call may be
    retried (`retries`) on a timeout under the same `message_id`.
    """

    async def send_raw(
        self, body: bytes, *, message_id: str | None, timeout: float, retries: int
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def execute(
        self,
        command: dict[str, Any],
        result: type[R],
        *,
        message_id: str | None,
        timeout: float,
        retries: int,
    ) -> Written[R]:
        """Check a command as the service will, send it, and read the reply's data."""
        body = orjson.dumps({k: v for k, v in command.items() if v is not None}, default=_model)
        try:
            parse_command(body)
        except commands.InvalidCommand as e:
            details = [ErrorDetail.model_validate(d) for d in e.details]
            raise errors.InvalidCommand("invalid_command", e.message, details) from None
        reply = await self.send_raw(body, message_id=message_id, timeout=timeout, retries=retries)
        if reply.get("status_code") != 200:
            raise errors.error_of(reply)
        return Written(result.model_validate(reply["data"]), int(reply["position"]))

    async def create_outdial(
        self,
        customer_id: UUID | str,
        *,
        name: str,
        detail: str = "",
        data: str = "",
        campaign_id: UUID | str | None = None,
        id: UUID | str | None = None,
        **call: Any,
    ) -> Written[CustomerOutdial]:
        command: dict[str, Any] = {
            "type": "CreateOutdial",
            "customer_id": customer_id,
            "name": name,
        }
        command |= {"detail": detail, "data": data, "campaign_id": campaign_id, "id": id}
        return await self.execute(command, CustomerOutdial, **_call(call))

    async def update_outdial(
        self,
        customer_id: UUID | str,
        outdial_id: UUID | str,
        *,
        name: str,
        detail: str,
        **call: Any,
    ) -> Written[CustomerOutdial]:
        command: dict[str, Any] = {
            "type": "UpdateOutdial",
            "customer_id": customer_id,
            "outdial_id": outdial_id,
        }
        command |= {"name": name, "detail": detail}
        return await self.execute(command, CustomerOutdial, **_call(call))

    async def update_outdial_campaign(
        self,
        customer_id: UUID | str,
        outdial_id: UUID | str,
        campaign_id: UUID | str,
        **call: Any,
    ) -> Written[CustomerOutdial]:
        command: dict[str, Any] = {"type": "UpdateOutdialCampaign", "customer_id": customer_id}
        command |= {"outdial_id": outdial_id, "campaign_id": campaign_id}
        return await self.execute(command, CustomerOutdial, **_call(call))

    async def update_outdial_data(
        self, customer_id: UUID | str, outdial_id: UUID | str, data: str, **call: Any
    ) -> Written[CustomerOutdial]:
        command: dict[str, Any] = {"type": "UpdateOutdialData", "customer_id": customer_id}
        command |= {"outdial_id": outdial_id, "data": data}
        return await self.execute(command, CustomerOutdial, **_call(call))

    async def delete_outdial(
        self, customer_id: UUID | str, outdial_id: UUID | str, **call: Any
    ) -> Written[CustomerOutdial]:
        command: dict[str, Any] = {
            "type": "DeleteOutdial",
            "customer_id": customer_id,
            "outdial_id": outdial_id,
        }
        return await self.execute(command, CustomerOutdial, **_call(call))

    async def add_target(
        self,
        customer_id: UUID | str,
        outdial_id: UUID | str,
        target: TargetFields | dict[str, Any],
        **call: Any,
    ) -> Written[CustomerTarget]:
        command: dict[str, Any] = {
            "type": "AddTarget",
            "customer_id": customer_id,
            "outdial_id": outdial_id,
        }
        command |= _fields(target)
        return await self.execute(command, CustomerTarget, **_call(call))

    async def add_targets(
        self,
        customer_id: UUID | str,
        outdial_id: UUID | str,
        targets: Sequence[TargetFields | dict[str, Any]],
        **call: Any,
    ) -> Written[AddedTargets]:
        command: dict[str, Any] = {
            "type": "AddTargets",
            "customer_id": customer_id,
            "outdial_id": outdial_id,
        }
        command["targets"] = [_fields(t) for t in targets]
        return await self.execute(command, AddedTargets, **_call(call))

    async def delete_target(
        self, customer_id: UUID | str, outdial_id: UUID | str, target_id: UUID | str, **call: Any
    ) -> Written[CustomerTarget]:
        command: dict[str, Any] = {
            "type": "DeleteTarget",
            "customer_id": customer_id,
            "outdial_id": outdial_id,
        }
        command["target_id"] = target_id
        return await self.execute(command, CustomerTarget, **_call(call))

    async def claim_next_target(
        self,
        customer_id: UUID | str,
        outdial_id: UUID | str,
        max_try_counts: Sequence[int],
        try_interval_ms: int = 0,
        **call: Any,
    ) -> Written[ClaimedTarget]:
        """The next target to dial, now progressing; NoAvailableTarget when none is."""
        command: dict[str, Any] = {
            "type": "ClaimNextTarget",
            "customer_id": customer_id,
            "outdial_id": outdial_id,
        }
        command |= {f"max_try_count_{i}": n for i, n in enumerate(max_try_counts)}
        command["try_interval_ms"] = try_interval_ms
        return await self.execute(command, ClaimedTarget, **_call(call))

    async def mark_target_progressing(
        self,
        customer_id: UUID | str,
        outdial_id: UUID | str,
        target_id: UUID | str,
        destination_index: int,
        **call: Any,
    ) -> Written[CustomerTarget]:
        command: dict[str, Any] = {"type": "MarkTargetProgressing", "customer_id": customer_id}
        command |= {"outdial_id": outdial_id, "target_id": target_id}
        command["destination_index"] = destination_index
        return await self.execute(command, CustomerTarget, **_call(call))

    async def update_target_status(
        self,
        customer_id: UUID | str,
        outdial_id: UUID | str,
        target_id: UUID | str,
        status: Literal["idle", "done"],
        **call: Any,
    ) -> Written[CustomerTarget]:
        command: dict[str, Any] = {"type": "UpdateTargetStatus", "customer_id": customer_id}
        command |= {"outdial_id": outdial_id, "target_id": target_id, "status": status}
        return await self.execute(command, CustomerTarget, **_call(call))


def _call(options: dict[str, Any]) -> dict[str, Any]:
    """The per-call options every typed method takes: message_id, timeout, retries."""
    unknown = set(options) - {"message_id", "timeout", "retries"}
    if unknown:
        raise TypeError(f"unexpected arguments: {sorted(unknown)}")
    return {"message_id": None, "timeout": 10.0, "retries": 2} | options


def _model(value: object) -> Any:
    """orjson's fallback: a pydantic model (an Address in a dict) as its JSON data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _fields(target: TargetFields | dict[str, Any]) -> dict[str, Any]:
    if isinstance(target, TargetFields):
        return target.model_dump(mode="json", exclude_none=True)
    return dict(target)


class OutdialClient(TypedCommands):
    """The bus client. `amqp_url` defaults to `OUTDIAL_AMQP_URL` (else the local
    broker); a process that has a connection already passes it as `connection`,
    and the client then opens a channel on it and closes only that."""

    def __init__(
        self,
        amqp_url: str | None = None,
        *,
        queue: str = COMMAND_QUEUE,
        connection: AbstractRobustConnection | None = None,
    ):
        self.amqp_url = amqp_url or os.environ.get("OUTDIAL_AMQP_URL") or DEFAULT_AMQP_URL
        self.queue = queue  # another only to measure the bus itself (bench/)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._own_connection = connection is None
        self._connection: AbstractRobustConnection | None = connection
        self._channel: AbstractChannel | None = None
        self._replies: AbstractQueue | None = None

    async def __aenter__(self) -> OutdialClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._connection is None:
            self._connection = await connect(self.amqp_url)
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
        if not self._own_connection:
            if self._channel is not None and not self._channel.is_closed:
                await self._channel.close()
        elif self._connection is not None:
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
        retries: int = 0,
    ) -> dict[str, Any]:
        """Send one command and return its reply body (CONTRACT 3)."""
        body = (
            command.model_dump_json(exclude_none=True).encode()
            if isinstance(command, BaseModel)
            else orjson.dumps(command)
        )
        return await self.send_raw(body, message_id=message_id, timeout=timeout, retries=retries)

    async def send_raw(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        timeout: float = 10.0,
        retries: int = 0,
    ) -> dict[str, Any]:
        """Send a body as it is (also one that is not a valid command) and await the reply.

        With `retries`, a command unanswered after `timeout` is sent again, up to
        that many times, under the same `message_id`; then TimeoutError.
        """
        message_id = message_id or str(uuid.uuid4())
        for attempt in range(retries + 1):
            try:
                return await self._call(body, message_id, timeout)
            except TimeoutError:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    async def _call(self, body: bytes, message_id: str, timeout: float) -> dict[str, Any]:
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
