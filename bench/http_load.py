"""HTTP load from a process of its own, against one URL: wrk when installed, else a
Python aiohttp client (slower than the servers it loads: its figures understate
them, and a ratio of two of them says less than wrk's).

    python -m bench.http_load URL REQUESTS CONCURRENCY [HEADER=VALUE ...]
prints {"requests": N, "seconds": S, "per_second": R, "errors": E} as JSON (the
Python client; `load` below runs wrk instead when it can).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time

import aiohttp


def wrk() -> str | None:
    """wrk's path, if installed."""
    return shutil.which("wrk")


def load(
    url: str, concurrency: int, headers: dict[str, str], *, seconds: float, requests: int
) -> float:
    """Requests per second of GETs of `url` at `concurrency` connections: wrk for
    `seconds` (after a warm-up of a second), else the Python client for `requests`.
    Every answer must be a 200."""
    path = wrk()
    if path is None:
        return python_load(url, requests, concurrency, headers)
    args = [path, "-t1", f"-c{concurrency}", *(f"-H{k}: {v}" for k, v in headers.items())]
    subprocess.run([*args, "-d1s", url], capture_output=True, check=True, timeout=60)
    out = subprocess.run(
        [*args, f"-d{max(1, round(seconds))}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    assert rate is not None, out
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    assert bad is None, out
    return float(rate.group(1))


def python_load(url: str, requests: int, concurrency: int, headers: dict[str, str]) -> float:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.http_load",
            url,
            str(requests),
            str(concurrency),
            *(f"{k}={v}" for k, v in headers.items()),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    result = json.loads(out)
    assert result["errors"] == 0, result
    return float(result["per_second"])


async def _load(url: str, requests: int, concurrency: int, headers: dict[str, str]) -> None:
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
    asyncio.run(_load(url, n, c, headers))
