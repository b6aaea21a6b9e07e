"""Integration fixtures: the real RabbitMQ and the real stores, no mocks.

Every test that talks to the bus starts from empty `outdial.commands` and
`outdial.commands.dead` queues and runs its own consumer in this process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import pytest

from services.command.application import OutdialApplication
from services.command.consumer import CommandConsumer
from shared.bus import COMMAND_QUEUE, DEAD_LETTER_QUEUE
from shared.client import OutdialClient
from shared.config import DEFAULT_AMQP_URL

# OUTDIAL_AMQP_URL may name another virtual host, so that two runs of the suite on one
# broker (say, two checkouts) do not purge each other's queues.
AMQP_URL = os.environ.get("OUTDIAL_AMQP_URL", DEFAULT_AMQP_URL)


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session", autouse=True)
def _services_run() -> None:
    # Fail loudly rather than skip: a green run that tested nothing is worse than red.
    for name, port in [("RabbitMQ", 5672), ("PostgreSQL", 5432)]:
        assert _reachable(port), f"{name} is not listening on 127.0.0.1:{port}; start it first"


async def purge_command_queues() -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in (COMMAND_QUEUE, DEAD_LETTER_QUEUE):
            queue = await channel.declare_queue(name, durable=True)
            await queue.purge()


async def dead_letters() -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message out of the dead-letter queue."""
    connection = await aio_pika.connect(AMQP_URL)
    taken = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            taken.append(message)
    return taken


@dataclass
class Service:
    app: OutdialApplication
    consumer: CommandConsumer


@pytest.fixture
async def service(store_url: str) -> AsyncIterator[Service]:
    """The command side on a fresh store, consuming the real queue."""
    await purge_command_queues()
    app = OutdialApplication.from_url(store_url)
    consumer = CommandConsumer(app, AMQP_URL, prefetch=32)
    await consumer.start()
    yield Service(app, consumer)
    await consumer.stop()
    app.close()


@pytest.fixture
async def client() -> AsyncIterator[OutdialClient]:
    async with OutdialClient(AMQP_URL) as c:
        yield c
