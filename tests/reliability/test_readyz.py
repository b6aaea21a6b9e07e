"""`/readyz` says whether a process can serve: not ready while its store is
unreachable, ready again by itself once the store is back, without a restart;
`/healthz` (alive) stays 200 all along.

Run split, as deployed at scale: an `outdial query` process alone, on a private
PostgreSQL server (private_servers.py) that the test stops and starts. The
broker's side of readiness is tested where the broker is stopped
(test_broker_restart.py). On SQLite the store is a file of the process's own
host: there is no server to become unreachable, so that case is not run.

Ready again must mean that reads are served: after PostgreSQL has cut every
connection (as its restart or a failover does), no read may fail once `/readyz`
says ready. (It did: each reading thread kept its broken connection, and its
first read answered 500; a read now runs once more on a new connection when its
thread's was broken.)

(Readiness no longer looks at a projection's lag, and the settings
OUTDIAL_READY_LAG_EVENTS / OUTDIAL_READY_STALL_SECONDS are gone: the read model is
written in the commands' own transactions, so its position is always the
store's, and there is no lag to judge.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.store import connect_postgres, parse_store_url
from shared import tokens
from tests.fixtures import SECRET
from tests.integration.processes import free_port
from tests.reliability.fleet import fleet
from tests.reliability.load import readyz
from tests.reliability.private_servers import private_postgres

pytestmark = pytest.mark.integration


async def readyz_becomes(port: int, status: int, timeout: float) -> Any:
    """Poll `/readyz` until it answers `status`; its body then."""
    deadline = time.monotonic() + timeout
    while True:
        answer, body = await readyz(port)
        if answer == status:
            return body
        assert time.monotonic() < deadline, f"/readyz still {answer} {body} after {timeout} s"
        await asyncio.sleep(0.2)


async def get(port: int, path: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r,
    ):
        return r.status


async def test_a_query_process_is_not_ready_while_its_store_is_away_and_ready_once_back(
    tmp_path: Path,
) -> None:
    port = free_port()
    token = tokens.mint(uuid.uuid4(), SECRET)
    with private_postgres() as database:
        store = f"{database.url}?schema=outdial"
        async with fleet(tmp_path, store) as children:
            query = await children.start("query", OUTDIAL_HTTP_PORT=str(port))
            assert await readyz(port) == (200, {"status": "ready"})
            assert await get(port, "/v1.0/outdials", token) == 200

            database.stop()
            began = time.monotonic()
            body = await readyz_becomes(port, 503, 10)
            noticed = time.monotonic() - began
            assert body["status"] == "not ready"
            assert [p for p in body["problems"] if p.startswith("store unreachable")], body
            assert await get(port, "/healthz") == 200  # alive: nothing to restart it for
            # Not ready stays not ready while the store is away.
            for _ in range(5):
                assert (await readyz(port))[0] == 503
                await asyncio.sleep(0.2)

            database.start()
            began = time.monotonic()
            await readyz_becomes(port, 200, 20)
            recovered = time.monotonic() - began
            # Ready means ready: every check from now on says so.
            for _ in range(10):
                assert await readyz(port) == (200, {"status": "ready"})
                await asyncio.sleep(0.1)
            assert query.poll() is None, "the query process was restarted"
    print(
        f"/readyz 503 {noticed:.1f} s after PostgreSQL stopped ({body['problems']}), "
        f"200 {recovered:.1f} s after it started again"
    )


def cut_connections(store_url: str) -> int:
    """End every session on the store's database but this one, as a restart or a
    failover of PostgreSQL does; return how many were ended."""
    with connect_postgres(parse_store_url(store_url)) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid != pg_backend_pid()"
        ).fetchall()
    return len(rows)


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
async def test_once_ready_again_every_read_is_served(tmp_path: Path, store_url: str) -> None:
    port = free_port()
    token = tokens.mint(uuid.uuid4(), SECRET)
    async with fleet(tmp_path, store_url) as children:
        await children.start("query", OUTDIAL_HTTP_PORT=str(port))
        assert await get(port, "/v1.0/outdials", token) == 200  # a read thread connected
        assert await asyncio.to_thread(cut_connections, store_url) > 0
        await readyz_becomes(port, 200, 20)
        statuses = [await get(port, "/v1.0/outdials", token) for _ in range(10)]
        assert statuses == [200] * 10
