"""A bounded HTTP load from its own process: N GETs at concurrency C, then it stops.

    python -m bench.http_load URL REQUESTS CONCURRENCY [HEADER=VALUE ...]
prints {"requests": N, "seconds": S, "per_second": R, "errors": E} as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def load(url: str, requests: int, concurrency: int, headers: dict[str, str]) -> None:
    errors = 0
    remaining = requests

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            async with session.get(url, headers=headers) as r:
                await r.read()
                errors += r.status != 200

    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async with session.get(url, headers=headers) as r:  # warm up
            await r.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "requests": requests,
                "seconds": seconds,
                "per_second": requests / seconds,
                "errors": errors,
            }
        )
    )


if __name__ == "__main__":
    url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    headers = dict(arg.split("=", 1) for arg in sys.argv[4:])
    asyncio.run(load(url, n, c, headers))
