"""Dialing over the real bus and stores: claims, the available query, and twenty
dialers racing through two processes of the service on one PostgreSQL store."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
import pytest

from services.command.application import OutdialApplication
from shared.client import OutdialClient
from tests.expected import TEL
from tests.fixtures import AMQP_URL, purge_command_queues
from tests.integration.processes import start, wait_for_log
from tests.integration.stack import SECRET, running_stack

pytestmark = pytest.mark.integration

SIP = {"type": "sip", "target": "alice@example.com"}


def targets(count: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"t{i}",
            "detail": "",
            "data": "",
            "destination_0": TEL,
            **({"destination_1": SIP} if i % 2 else {}),
        }
        for i in range(count)
    ]


async def test_claim_and_available_over_the_bus_and_http(store_url: str, tmp_path: Path) -> None:
    async with running_stack(store_url, tmp_path) as stack, OutdialClient(AMQP_URL) as bus:
        token = stack.token()
        customer = jwt.decode(token, SECRET, algorithms=["HS256"])["customer_id"]

        async def send(**fields: Any) -> dict[str, Any]:
            return await bus.send({"customer_id": customer, **fields})

        outdial = (await send(type="CreateOutdial", name="", detail="", data=""))["data"]["id"]
        added = await send(type="AddTargets", outdial_id=outdial, targets=targets(4))
        ids = [t["id"] for t in added["data"]["result"]]
        wait = {"X-Outdial-Min-Position": str(added["position"])}
        query = "max_try_count_0=1&max_try_count_1=1"
        status, available, _ = await stack.call(
            "GET", f"/v1.0/outdials/{outdial}/available?{query}", token, headers=wait
        )
        assert status == 200
        assert [t["id"] for t in available["result"]] == ids  # least recently updated first
        most = {
            "max_try_count_0": 1,
            "max_try_count_1": 1,
            "max_try_count_2": 0,
            "max_try_count_3": 0,
            "max_try_count_4": 0,
        }
        claimed = await send(type="ClaimNextTarget", outdial_id=outdial, **most)
        assert claimed["status_code"] == 200
        assert list(claimed["data"]) == ["target", "destination_index", "destination"]
        assert claimed["data"]["target"]["id"] == ids[0]
        assert claimed["data"]["destination_index"] == 0
        assert claimed["data"]["target"]["customer_id"] == customer
        wait = {"X-Outdial-Min-Position": str(claimed["position"])}
        status, available, _ = await stack.call(
            "GET", f"/v1.0/outdials/{outdial}/available?{query}&limit=2", token, headers=wait
        )
        assert [t["id"] for t in available["result"]] == ids[1:3]
        status, none, _ = await stack.call(
            "GET", f"/v1.0/outdials/{outdial}/available", token, headers=wait
        )
        assert none == {"result": [], "next_page_token": ""}  # every max_try_count is 0
        status, _, _ = await stack.call("GET", f"/v1.0/outdials/{outdial}/available?limit=0", token)
        assert status == 400
        status, _, _ = await stack.call(
            "GET", f"/v1.0/outdials/{outdial}/available?{query}", stack.token()
        )
        assert status == 404  # another customer's outdial
        r = await send(type="ClaimNextTarget", outdial_id=outdial, **{k: 0 for k in most})
        assert (r["status_code"], r["error"]["code"]) == (404, "no_available_target")


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
async def test_twenty_dialers_in_two_processes_never_share_a_target(
    store_url: str, tmp_path: Path
) -> None:
    await purge_command_queues()
    env = {"OUTDIAL_DATABASE_URL": store_url}
    processes = [start(["command"], tmp_path, **env) for _ in range(2)]
    processes.append(start(["projector"], tmp_path, **env))
    try:
        for process in processes:
            await wait_for_log(process, "ready")
        await run_dialers(store_url)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.communicate(timeout=30)
    assert [p.returncode for p in processes] == [0, 0, 0]


async def run_dialers(store_url: str) -> None:
    customer = str(uuid.uuid4())
    most = {
        "max_try_count_0": 2,
        "max_try_count_1": 1,
        "max_try_count_2": 0,
        "max_try_count_3": 0,
        "max_try_count_4": 0,
    }
    holders: dict[str, int] = {}
    tries: Counter[tuple[str, int]] = Counter()
    violations: list[str] = []
    rng = random.Random(7)
    async with OutdialClient(AMQP_URL) as bus:

        async def send(**fields: Any) -> dict[str, Any]:
            return await bus.send({"customer_id": customer, **fields}, timeout=30)

        outdial = (await send(type="CreateOutdial", name="", detail="", data=""))["data"]["id"]
        added = await send(type="AddTargets", outdial_id=outdial, targets=targets(40))
        assert added["status_code"] == 200

        async def dialer(number: int) -> None:
            misses = 0
            while misses < 5:
                r = await send(type="ClaimNextTarget", outdial_id=outdial, **most)
                if r["status_code"] == 404:
                    # Nothing now; a target another dialer holds may come back.
                    misses = 0 if holders else misses + 1
                    await asyncio.sleep(0.05)
                    continue
                assert r["status_code"] == 200, r
                target = r["data"]["target"]["id"]
                if target in holders:
                    violations.append(f"{target} held by {holders[target]} and {number}")
                holders[target] = number
                tries[target, r["data"]["destination_index"]] += 1
                await asyncio.sleep(rng.random() * 0.01)  # on the phone
                del holders[target]
                result = "done" if rng.random() < 0.3 else "idle"
                reported = await send(
                    type="UpdateTargetStatus", outdial_id=outdial, target_id=target, status=result
                )
                assert reported["status_code"] == 200, reported

        await asyncio.gather(*(dialer(n) for n in range(20)))
    assert violations == []
    assert sum(tries.values()) >= 40  # every target was dialed at least once
    app = OutdialApplication.from_url(store_url)
    try:
        for t in added["data"]["result"]:
            target = app.repository.get(uuid.UUID(t["id"]))
            counts = target.try_counts
            # Every try was counted exactly once.
            assert [tries[t["id"], i] for i in range(5)] == counts
            assert counts[0] <= 2 and counts[1] <= 1 and counts[2:] == [0, 0, 0]
            exhausted = target.next_destination(list(most.values())) is None
            assert target.status == "done" or (target.status == "idle" and exhausted), (
                target.status,
                counts,
            )
    finally:
        app.close()
