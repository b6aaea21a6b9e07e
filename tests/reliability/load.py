"""A steady load of confirmed commands, what the event store says became of it, and
probes of whether each component of `outdial run` is working (the restart tests)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import orjson

from services.command.application import OutdialApplication
from services.command.domain import OutdialTarget
from shared.bus import COMMAND_QUEUE, EVENT_EXCHANGE, JSON
from shared.client import OutdialClient
from shared.platform import REQUEST_QUEUE


@dataclass
class ConfirmedLoad:
    """Publishes `AddTarget`s named after their message_id, each until the broker confirms it.

    A publish that fails (the broker is away) is tried again with the same
    message_id, as a careful producer would; only a confirm counts.
    """

    amqp_url: str
    customer_id: str
    outdial_id: str
    rate: float = 50.0
    confirmed: list[str] = field(default_factory=list)
    failed_publishes: int = 0

    def body(self, message_id: str) -> bytes:
        return orjson.dumps(
            {
                "type": "AddTarget",
                "customer_id": self.customer_id,
                "outdial_id": self.outdial_id,
                "name": message_id,
                "detail": "",
                "data": "",
                "destination_0": {"type": "tel", "target": "+15559876543"},
            }
        )

    async def run(self, stop: asyncio.Event, deadline: float) -> None:
        connection = await aio_pika.connect_robust(self.amqp_url, reconnect_interval=0.5)
        async with connection:
            channel = await connection.channel()  # publisher confirms are on by default
            i = 0
            while not stop.is_set() and time.monotonic() < deadline:
                message_id = f"load-{i}"
                while time.monotonic() < deadline:
                    try:
                        await asyncio.wait_for(
                            channel.default_exchange.publish(
                                aio_pika.Message(
                                    self.body(message_id),
                                    content_type=JSON,
                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                    message_id=message_id,
                                ),
                                routing_key=COMMAND_QUEUE,
                            ),
                            timeout=5,
                        )
                    except Exception:  # any failure: not confirmed, try again
                        self.failed_publishes += 1
                        await asyncio.sleep(0.2)
                        continue
                    self.confirmed.append(message_id)
                    break
                i += 1
                await asyncio.sleep(1 / self.rate)


def stored_target_names(store_url: str) -> Counter[str]:
    """How many targets the event store holds per name, read from the events themselves."""
    app = OutdialApplication.from_url(store_url)
    names: Counter[str] = Counter()
    try:
        position = 0
        while page := app.recorder.select_notifications(position, 1000, inclusive_of_start=False):
            for notification in page:
                event = app.mapper.to_domain_event(notification)
                if isinstance(event, OutdialTarget.Created):
                    names[event.name] += 1  # type: ignore[attr-defined]
            position = page[-1].id
    finally:
        app.close()
    return names


async def wait_for(predicate: object, timeout: float, what: str) -> float:
    """Seconds until the (sync or async) `predicate()` holds; fails after `timeout`."""
    assert callable(predicate)
    began = time.monotonic()
    while True:
        outcome = predicate()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)


async def every_confirmed_stored_once(
    load: ConfirmedLoad, store_url: str, timeout: float
) -> Counter[str]:
    """Wait until every confirmed command is stored; fail if any is stored twice."""
    confirmed = set(load.confirmed)
    await wait_for(
        lambda: confirmed <= set(stored_target_names(store_url)),
        timeout,
        "every confirmed command stored",
    )
    stored = stored_target_names(store_url)
    assert {name for name, n in stored.items() if n > 1} == set(), "applied twice"
    return stored


async def every_stored_published(amqp_url: str, stored: Counter[str], timeout: float) -> set[str]:
    """Wait until the tap on `outdial.events` has seen every stored target created."""
    published: set[str] = set()

    async def all_seen() -> bool:
        published.update(await tapped_names(amqp_url))
        return set(stored) <= published

    await wait_for(all_seen, timeout, "the relay published every stored target")
    return published


TAP = "test.events.tap"  # durable, so it keeps what the relay published across a restart


async def open_tap(url: str) -> None:
    """The durable tap on `outdial.events` (every routing key), emptied."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EVENT_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        tap = await channel.declare_queue(TAP, durable=True)
        await tap.bind(exchange, "#")
        await tap.purge()


async def tapped_names(url: str) -> list[str]:
    """Names of the targets whose `outdialtarget_created` the relay published."""
    names = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(TAP, durable=True)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            if message.routing_key == "outdialtarget_created":
                names.append(orjson.loads(message.body)["data"]["name"])
    return names


# ---- probes: is the component working now? ---------------------------------------


async def answered(amqp_url: str, customer: str) -> bool:
    """Whether the command consumer answers a fresh command now."""
    try:
        async with OutdialClient(amqp_url) as client:
            reply = await client.send(
                {
                    "type": "CreateOutdial",
                    "customer_id": customer,
                    "name": "probe",
                    "detail": "",
                    "data": "",
                },
                timeout=2,
            )
    except Exception:  # not yet
        return False
    return bool(reply["status_code"] == 200)


async def envelope_request(amqp_url: str, method: str, uri: str, timeout: float) -> Any:
    """The platform's request envelope (as the platform's services send it), and the
    response the envelope listener sends back."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        correlation = str(uuid.uuid4())
        envelope = {
            "uri": uri,
            "method": method,
            "publisher": "campaign-manager",
            "data_type": "application/json",
        }
        await channel.default_exchange.publish(
            aio_pika.Message(
                orjson.dumps(envelope),
                content_type=JSON,
                correlation_id=correlation,
                reply_to=replies.name,
            ),
            routing_key=REQUEST_QUEUE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = await replies.get(fail=False, no_ack=True)
            if message is not None and message.correlation_id == correlation:
                return orjson.loads(message.body)
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no response to {method} {uri} in {timeout} s")


async def envelope_answered(amqp_url: str) -> bool:
    """Whether the platform's envelope listener answers a request now."""
    try:
        response = await envelope_request(
            amqp_url, "GET", f"/v1/outdials?customer_id={uuid.uuid4()}", timeout=2
        )
    except Exception:  # not yet
        return False
    return bool(response["status_code"] == 200)


async def readyz(port: int, timeout: float = 5) -> tuple[int, Any]:
    """(status, body) of `GET /readyz`."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(timeout)) as r,
    ):
        return r.status, await r.json()


async def ready(port: int) -> bool:
    try:
        return (await readyz(port, timeout=2))[0] == 200
    except (aiohttp.ClientError, TimeoutError):
        return False
