"""Helpers to run the real `outdial` console script as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import aio_pika
import orjson

from shared.bus import COMMAND_QUEUE, JSON
from tests.fixtures import AMQP_URL

OUTDIAL = str(Path(sys.executable).parent / "outdial")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [OUTDIAL, *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def logged(process: subprocess.Popen[str]) -> deque[str]:
    """The child's log lines after the one `wait_for_log` waited for (the latest 10,000)."""
    return _LOGGED.setdefault(process.pid, deque(maxlen=10_000))


_LOGGED: dict[int, deque[str]] = {}


async def wait_for_log(process: subprocess.Popen[str], msg: str, timeout: float = 20) -> None:
    """Read the child's JSON log lines until one has `"msg": msg`."""
    assert process.stderr is not None
    stderr = process.stderr

    def drain() -> None:
        # Until the child ends, or the test closes the pipe (the child stopped).
        with contextlib.suppress(ValueError):
            logged(process).extend(stderr)

    def read() -> None:
        lines = []
        for line in stderr:
            if f'"msg":"{msg}"' in line:
                # Keep draining, or a busy child blocks on a full pipe; keep the
                # latest lines for tests that look for what the child said.
                threading.Thread(target=drain, daemon=True).start()
                return
            lines.append(line)
        raise AssertionError(f"the process ended before logging {msg!r}:\n{''.join(lines)}")

    await asyncio.wait_for(asyncio.to_thread(read), timeout)


class ReplyRecorder:
    """Publishes commands and records every reply, duplicates included."""

    def __init__(self) -> None:
        self.replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.arrived = asyncio.Event()

    async def __aenter__(self) -> ReplyRecorder:
        self.connection = await aio_pika.connect_robust(AMQP_URL)
        self.channel = await self.connection.channel()
        self.queue = await self.channel.declare_queue(exclusive=True)
        await self.queue.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.replies[message.correlation_id or ""].append(orjson.loads(message.body))
        self.arrived.set()

    async def publish(self, command: dict[str, Any], message_id: str) -> None:
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                orjson.dumps(command),
                content_type=JSON,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
                correlation_id=message_id,
                reply_to=self.queue.name,
            ),
            routing_key=COMMAND_QUEUE,
        )

    async def wait_until(self, count: int, timeout: float = 60) -> None:
        async def loop() -> None:
            while len(self.replies) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(loop(), timeout)
