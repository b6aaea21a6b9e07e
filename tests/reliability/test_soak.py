"""A soak: `outdial run` under a moderate, mixed load for 30 s at scale 1 (five
minutes at scale 10: `pytest --reliability-scale 10` for a soak worth the name).

Dialers claim targets and finish them, producers add more, readers page through the
targets and wait for what they just wrote. Nothing may fail, the resident memory
must stay flat once warm, and a read that waits for the write just answered must
be served at once (the read model is written with the events).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared import tokens
from shared.client import OutdialClient
from tests.fixtures import AMQP_URL, SECRET, purge_command_queues
from tests.integration.processes import free_port, logged, start, wait_for_log

pytestmark = pytest.mark.integration

TEL = {"type": "tel", "target": "+15559876543"}
WARM_UP = 10.0  # seconds before the first memory reading counts
LAG_LIMIT = 2.0  # seconds from a reply to the answer of a read that waits for it


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_steady_mixed_load_runs_clean(tmp_path: Path, scale: int) -> None:
    await purge_command_queues()
    port = free_port()
    service = start(
        ["run"],
        tmp_path,
        OUTDIAL_DATABASE_URL=f"sqlite:///{tmp_path}/outdial.sqlite3",
        OUTDIAL_HTTP_PORT=str(port),
        OUTDIAL_JWT_SECRET=SECRET,
    )
    duration = 30.0 * scale
    customer = uuid.uuid4()
    auth = {"Authorization": f"Bearer {tokens.mint(customer, SECRET)}"}
    base = f"http://127.0.0.1:{port}/v1.0/outdials"
    counts = {"commands": 0, "claims": 0, "reads": 0}
    errors: list[Any] = []
    lags: list[float] = []
    memory: list[tuple[float, float]] = []
    try:
        await wait_for_log(service, "ready")
        async with OutdialClient(AMQP_URL) as bus, aiohttp.ClientSession() as http:

            async def command(body: dict[str, Any]) -> dict[str, Any]:
                reply = await bus.send({"customer_id": str(customer), **body}, timeout=30)
                counts["commands"] += 1
                if reply["status_code"] != 200 and reply.get("error", {}).get("code") != (
                    "no_available_target"
                ):
                    errors.append(reply)
                return reply

            outdial_id = (
                await command({"type": "CreateOutdial", "name": "soak", "detail": "", "data": ""})
            )["data"]["id"]
            began = time.monotonic()
            deadline = began + duration

            async def producer() -> None:
                i = 0
                while time.monotonic() < deadline:
                    targets = [
                        {"name": f"t{i}-{k}", "detail": "", "data": "", "destination_0": TEL}
                        for k in range(20)
                    ]
                    await command(
                        {"type": "AddTargets", "outdial_id": outdial_id, "targets": targets}
                    )
                    i += 1
                    await asyncio.sleep(0.5)

            async def dialer(n: int) -> None:
                while time.monotonic() < deadline:
                    claim = await command(
                        {
                            "type": "ClaimNextTarget",
                            "outdial_id": outdial_id,
                            **{f"max_try_count_{i}": 2 for i in range(5)},
                        }
                    )
                    if claim["status_code"] == 200:
                        counts["claims"] += 1
                        await asyncio.sleep(0.05)  # the call
                        await command(
                            {
                                "type": "UpdateTargetStatus",
                                "outdial_id": outdial_id,
                                "target_id": claim["data"]["target"]["id"],
                                "status": "done" if n % 2 else "idle",
                            }
                        )
                    await asyncio.sleep(0.1)

            async def reader() -> None:
                while time.monotonic() < deadline:
                    reply = await command(
                        {"type": "UpdateOutdialData", "outdial_id": outdial_id, "data": "x"}
                    )
                    replied = time.monotonic()
                    headers = {**auth, "X-Outdial-Min-Position": str(reply["position"])}
                    async with http.get(
                        f"{base}/{outdial_id}/targets?page_size=100", headers=headers
                    ) as r:
                        await r.read()
                        if r.status != 200:
                            errors.append(("GET", r.status))
                    lags.append(time.monotonic() - replied)
                    counts["reads"] += 1
                    await asyncio.sleep(0.2)

            async def watch_memory() -> None:
                while time.monotonic() < deadline:
                    memory.append((time.monotonic() - began, rss_mib(service.pid)))
                    await asyncio.sleep(1)

            await asyncio.wait_for(
                asyncio.gather(
                    producer(), *(dialer(n) for n in range(4)), reader(), watch_memory()
                ),
                duration + 60,
            )
    finally:
        service.terminate()
        service.wait(30)

    complaints = [
        line for line in logged(service) if '"level":"error"' in line or '"level":"warning"' in line
    ]
    warm = [mib for at, mib in memory if at >= WARM_UP]
    half = len(warm) // 2
    first, second = max(warm[:half]), max(warm[half:])
    print(
        f"{duration:.0f} s: {counts['commands']} commands, {counts['claims']} claims, "
        f"{counts['reads']} reads; RSS {first:.1f} -> {second:.1f} MiB; "
        f"lag max {max(lags) * 1000:.0f} ms"
    )
    assert errors == []
    assert complaints == [], complaints[:3]
    assert counts["claims"] > 0 and counts["reads"] > 0
    # Flat: the second half of the run holds no more than a little over the first.
    assert second <= first * 1.15 + 5, memory
    assert max(lags) < LAG_LIMIT, sorted(lags)[-5:]
