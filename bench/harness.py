"""What the benchmarks stand on: child processes, their CPU time, fresh stores, RPC load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from services.store import connect_postgres, parse_store_url
from shared.client import OutdialClient
from shared.config import Settings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPOSITORY = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    process: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(
    args: list[str], env: dict[str, str], cwd: Path, ready: str, timeout: float = 30
) -> Child:
    """A child process, once it has printed (or logged) `ready`."""
    # The bench package is not installed: its children find it from the repository.
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    said = []
    for line in process.stdout:
        if ready in line:
            break
        said.append(line)
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{args} did not get ready:\n{''.join(said)}")
    else:
        raise RuntimeError(f"{args} ended before it was ready:\n{''.join(said)}")
    # Keep draining its output so it never blocks on a full pipe.
    stdout = process.stdout
    threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()
    return Child(process)


def outdial(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "outdial"), *args]


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@contextlib.contextmanager
def fresh_store(kind: str) -> Iterator[tuple[str, Path]]:
    """(OUTDIAL_DATABASE_URL of an empty store, a working directory)."""
    with tempfile.TemporaryDirectory(prefix="outdial-bench-") as tmp:
        if kind == "sqlite":
            yield f"sqlite:///{tmp}/outdial.sqlite3", Path(tmp)
            return
        base = os.environ.get("OUTDIAL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        url = f"{base}?schema={schema}"
        try:
            yield url, Path(tmp)
        finally:
            with connect_postgres(parse_store_url(url)) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@dataclass
class Load:
    count: int
    seconds: float
    latencies: list[float]
    replies: list[dict[str, Any]]

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def rpc_load(
    client: OutdialClient, bodies: list[bytes], concurrency: int, *, timeout: float = 60
) -> Load:
    """Send every body as an RPC, `concurrency` at a time; time each round trip."""
    latencies: list[float] = []
    replies: list[dict[str, Any]] = []
    queue = list(reversed(bodies))

    async def worker() -> None:
        while queue:
            body = queue.pop()
            began = time.perf_counter()
            replies.append(await client.send_raw(body, timeout=timeout))
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Load(len(bodies), time.perf_counter() - started, latencies, replies)


def amqp_url() -> str:
    return Settings().amqp_url


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
