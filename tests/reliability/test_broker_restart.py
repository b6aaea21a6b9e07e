"""RabbitMQ stopped and started under load: `/readyz` says not ready while the broker
is away, every component of `outdial run` comes back by itself within 10 s, and no
confirmed command is lost.

A robust connection that reconnects but silently loses its consumer is the bug to
catch, so each component is probed for work done after the restart, not for a
connection that is merely open. The broker is a private node (private_servers.py):
stopping the machine's own would break everyone else's tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from shared.client import OutdialClient
from tests.fixtures import SECRET
from tests.integration.processes import free_port, start, wait_for_log
from tests.reliability.load import (
    ConfirmedLoad,
    answered,
    envelope_answered,
    every_confirmed_stored_once,
    every_stored_published,
    open_tap,
    ready,
    readyz,
    wait_for,
)
from tests.reliability.private_servers import private_rabbitmq

pytestmark = pytest.mark.integration

RECONNECT_WITHIN = 10.0
OUTAGE = 3.0


async def not_ready_for_the_broker(port: int) -> bool:
    status, body = await readyz(port)
    return status == 503 and "broker unreachable" in body["problems"]


async def test_every_component_comes_back_and_nothing_confirmed_is_lost(
    tmp_path: Path, scale: int
) -> None:
    with private_rabbitmq() as broker:
        await open_tap(broker.url)

        store = f"sqlite:///{tmp_path}/outdial.sqlite3"
        port = free_port()
        service = start(
            ["run"],
            tmp_path,
            OUTDIAL_AMQP_URL=broker.url,
            OUTDIAL_DATABASE_URL=store,
            OUTDIAL_HTTP_PORT=str(port),
            OUTDIAL_JWT_SECRET=SECRET,
        )
        try:
            await wait_for_log(service, "ready")
            customer = str(uuid.uuid4())
            async with OutdialClient(broker.url) as client:
                created = await client.send(
                    {
                        "type": "CreateOutdial",
                        "customer_id": customer,
                        "name": "campaign",
                        "detail": "",
                        "data": "",
                    }
                )
            load = ConfirmedLoad(broker.url, customer, created["data"]["id"], rate=40)
            stop = asyncio.Event()
            publishing = asyncio.create_task(load.run(stop, time.monotonic() + 60 * scale))
            await wait_for(lambda: len(load.confirmed) >= 40, 20, "a first load confirmed")

            for _ in range(scale):
                broker.stop_app()
                stopped = time.monotonic()
                seconds = await wait_for(
                    lambda: not_ready_for_the_broker(port), OUTAGE, "/readyz is 503"
                )
                print(f"/readyz 503 {seconds:.1f} s after the broker stopped")
                await asyncio.sleep(max(0.0, stopped + OUTAGE - time.monotonic()))
                broker.start_app()
                for what, probe in [
                    ("the command consumer answers", lambda: answered(broker.url, customer)),
                    ("the envelope listener answers", lambda: envelope_answered(broker.url)),
                    ("/readyz is 200", lambda: ready(port)),
                ]:
                    seconds = await wait_for(probe, RECONNECT_WITHIN, what)
                    print(f"{what}: {seconds:.1f} s after the broker came back")
                resumed = len(load.confirmed) + 40
                await wait_for(
                    lambda: len(load.confirmed) >= resumed,  # noqa: B023 - awaited at once
                    20,
                    "the load resumed",
                )

            stop.set()
            await publishing
            stored = await every_confirmed_stored_once(load, store, 30)
            # The relay came back too: every stored target was published at least once.
            published = await every_stored_published(broker.url, stored, 30)
            print(
                f"confirmed {len(load.confirmed)}, stored {sum(stored.values())}, "
                f"published {len(published)}, publishes retried {load.failed_publishes}"
            )
        finally:
            service.terminate()
            service.wait(30)
