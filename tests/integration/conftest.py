"""Integration fixtures: the real RabbitMQ and the real stores, no mocks.

Every test that talks to the bus starts from empty `outdial.commands` and
`outdial.commands.dead` queues and runs its own consumer in this process.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from services.bootstrap import Runtime
from shared.client import OutdialClient
from shared.config import Settings
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
def runtime(store_url: str) -> Iterator[Runtime]:
    """The process's wiring on a fresh store, no bus: what the command side writes
    with (`new_uow`) and the read side reads with (`queries`)."""
    rt = Runtime(Settings(database_url=store_url))
    yield rt
    rt.app.close()


@pytest.fixture
async def service(store_url: str) -> AsyncIterator[CommandSide]:
    """The command side on a fresh store, consuming the real queue."""
    async with command_side(store_url) as side:
        yield side


@pytest.fixture
async def client() -> AsyncIterator[OutdialClient]:
    async with OutdialClient(AMQP_URL) as c:
        yield c
