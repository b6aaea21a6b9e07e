"""Helpers every integration and reliability test may use (tests never import each
other): the run's broker URL, clean queues, and the command side of the service
on a store, wired as `outdial command` wires it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson

from services.bootstrap import Runtime
from services.command.application import OutdialApplication
from services.command.consumer import CommandConsumer
from services.command.handlers import Incoming, Reply, handle
from services.command.receipts import command_digest
from services.command.unit_of_work import UnitOfWork
from services.query.writes import ReadModelWriter
from shared.bus import COMMAND_QUEUE, declare_dead_letter_queue
from shared.commands import parse_command
from shared.config import DEFAULT_AMQP_URL, Settings

# The test run's own vhost (tests/conftest.py sets it before any test module loads).
AMQP_URL = os.environ.get("OUTDIAL_AMQP_URL", DEFAULT_AMQP_URL)
SECRET = "integration-test-secret-of-at-least-32-bytes"


async def purge_command_queues() -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(COMMAND_QUEUE, durable=True)
        await queue.purge()
        # Declared as the service declares it (bounded), or the service's own
        # declaration would be refused.
        await (await declare_dead_letter_queue(connection)).purge()


async def dead_letters() -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message out of the dead-letter queue."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    taken = []
    async with connection:
        queue = await declare_dead_letter_queue(connection)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            taken.append(message)
    return taken


def settings_for(store_url: str, **more: Any) -> Settings:
    return Settings(amqp_url=AMQP_URL, database_url=store_url, jwt_secret=SECRET, **more)


@dataclass
class CommandSide:
    rt: Runtime
    consumer: CommandConsumer

    @property
    def app(self) -> OutdialApplication:
        return self.rt.app


@asynccontextmanager
async def command_side(
    store_url: str,
    *,
    prefetch: int = 32,
    uow_class: Callable[..., UnitOfWork] = UnitOfWork,
    consumer_class: type[CommandConsumer] = CommandConsumer,
    purge: bool = True,
    **consumer_options: Any,
) -> AsyncIterator[CommandSide]:
    """The command consumer on a store, consuming the real queue (emptied first)."""
    if purge:
        await purge_command_queues()
    rt = Runtime(settings_for(store_url))

    def new_uow() -> UnitOfWork:
        return uow_class(
            rt.app, candidates=rt.queries.claim_candidates, read_model=ReadModelWriter()
        )

    consumer = consumer_class(
        await rt.connection(),
        await rt.replies(),
        new_uow,
        prefetch=prefetch,
        on_stored=rt.stored_at,
        **consumer_options,
    )
    await consumer.start()
    try:
        yield CommandSide(rt, consumer)
    finally:
        await consumer.stop()
        await rt.close()


class Writer:
    """The command side without a broker: commands handled as the consumer handles
    them (a unit of work each, its receipt under a fresh message_id unless given)."""

    def __init__(self, store_url: str):
        self.rt = Runtime(settings_for(store_url))

    @property
    def app(self) -> OutdialApplication:
        return self.rt.app

    def send(self, customer: str, type_: str, message_id: str | None = "", **fields: Any) -> Reply:
        body = orjson.dumps({"type": type_, "customer_id": customer, **fields})
        if message_id == "":
            message_id = str(uuid.uuid4())
        incoming = Incoming(parse_command(body), message_id, command_digest(body))
        return handle(incoming, self.rt.new_uow)

    def close(self) -> None:
        if "queries" in self.rt.__dict__:
            self.rt.queries.close()
        self.rt.app.close()
