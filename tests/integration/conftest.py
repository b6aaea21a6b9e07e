"""Integration fixtures: the real RabbitMQ and the real stores, no mocks.

Every test that talks to the bus starts from empty `outdial.commands` and
`outdial.commands.dead` queues and runs its own consumer in this process.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from shared.client import OutdialClient
from tests.fixtures import AMQP_URL, CommandSide, command_side


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


@pytest.fixture
async def service(store_url: str) -> AsyncIterator[CommandSide]:
    """The command side on a fresh store, consuming the real queue."""
    async with command_side(store_url) as side:
        yield side


@pytest.fixture
async def client() -> AsyncIterator[OutdialClient]:
    async with OutdialClient(AMQP_URL) as c:
        yield c
