"""PostgreSQL stopped and started under load: commands wait unacknowledged (or are
requeued), are not dead-lettered and not lost, and `outdial run` recovers without a
restart.

The database is a private server (private_servers.py) on a free port, so stopping it
touches nobody else.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest

from shared import tokens
from shared.client import OutdialClient
from tests.fixtures import AMQP_URL, SECRET, dead_letters, purge_command_queues
from tests.integration.processes import free_port, logged, start, wait_for_log
from tests.reliability.load import (
    ConfirmedLoad,
    answered,
    every_confirmed_stored_once,
    every_stored_published,
    open_tap,
    ready,
    wait_for,
)
from tests.reliability.private_servers import private_postgres

pytestmark = pytest.mark.integration

OUTAGE = 10.0


async def read_back(port: int, customer: str, outdial_id: str, position: int) -> int:
    """The status of a read that waits for `position` (written with its events)."""
    headers = {
        "Authorization": f"Bearer {tokens.mint(uuid.UUID(customer), SECRET)}",
        "X-Outdial-Min-Position": str(position),
    }
    url = f"http://127.0.0.1:{port}/v1.0/outdials/{outdial_id}/targets?page_size=1"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        return r.status


async def test_commands_wait_for_the_database_and_nothing_is_lost(
    tmp_path: Path, scale: int
) -> None:
    await purge_command_queues()
    await open_tap(AMQP_URL)

    with private_postgres() as database:
        store = f"{database.url}?schema=outdial"
        port = free_port()
        service = start(
            ["run"],
            tmp_path,
            OUTDIAL_DATABASE_URL=store,
            OUTDIAL_HTTP_PORT=str(port),
            OUTDIAL_JWT_SECRET=SECRET,
        )
        try:
            await wait_for_log(service, "ready")
            customer = str(uuid.uuid4())
            async with OutdialClient(AMQP_URL) as client:
                created = await client.send(
                    {
                        "type": "CreateOutdial",
                        "customer_id": customer,
                        "name": "campaign",
                        "detail": "",
                        "data": "",
                    }
                )
            outdial_id = created["data"]["id"]
            load = ConfirmedLoad(AMQP_URL, customer, outdial_id, rate=40)
            stop = asyncio.Event()
            publishing = asyncio.create_task(load.run(stop, time.monotonic() + 60 * scale))
            await wait_for(lambda: len(load.confirmed) >= 40, 20, "a first load confirmed")

            for _ in range(scale):
                database.stop()
                # Longer than eventsourcing's own retries of a lost connection (10 x 0.2 s
                # and more), so the consumer's requeue path is taken.
                await asyncio.sleep(OUTAGE)
                database.start()
                seconds = await wait_for(
                    lambda: answered(AMQP_URL, customer), 30, "commands are answered again"
                )
                print(f"commands answered {seconds:.1f} s after the database came back")
                await wait_for(lambda: ready(port), 30, "/readyz is 200 again")

            stop.set()
            await publishing
            # A store outage is not the commands' fault: none was given up on (answered
            # an error, dead-lettered), which would leave it never stored. Checked first,
            # to say so at once rather than as a confirmed command missing.
            dead = await dead_letters()
            assert dead == [], (
                f"{len(dead)} commands dead-lettered for a store outage, e.g. "
                f"{dead[0].headers.get('x-outdial-error')}"
            )
            stored = await every_confirmed_stored_once(load, store, 60)
            assert await dead_letters() == []
            # The outage was felt: commands in flight waited for the database, unacked
            # (eventsourcing retries a lost connection; past its retries the consumer
            # requeues with a back-off), and none was answered with an error.
            commands = [orjson.loads(line) for line in logged(service) if '"msg":"command"' in line]
            assert {c["outcome"] for c in commands} <= {200, "requeued"}
            longest = max(c["ms"] for c in commands)
            assert longest > OUTAGE * 1000 / 2, longest

            # Reads and the relay recovered too, without a restart: the read model has
            # the last write, and every stored event was published.
            async with OutdialClient(AMQP_URL) as client:
                last = await client.send(
                    {
                        "type": "UpdateOutdialData",
                        "customer_id": customer,
                        "outdial_id": outdial_id,
                        "data": "after",
                    }
                )
            assert await read_back(port, customer, outdial_id, last["position"]) == 200
            published = await every_stored_published(AMQP_URL, stored, 30)
            print(
                f"confirmed {len(load.confirmed)}, stored {sum(stored.values())}, "
                f"published {len(published)}, longest wait {longest / 1000:.1f} s"
            )
        finally:
            service.terminate()
            service.wait(30)
