"""The tools of the kill tests: real `outdial` processes, a steady load of confirmed
commands, a tap on `outdial.events`, and what the event store holds afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from eventsourcing.persistence import Notification

from services.command.application import OutdialApplication
from services.command.domain import OutdialTarget
from services.command.history import is_receipt
from services.command.relay import TRACKING_NAME as RELAY
from services.query.read_model import (
    NEXT,
    PostgresReadModel,
    ReadModelMixin,
    SQLiteReadModel,
)
from shared.bus import EVENT_EXCHANGE
from tests.expected import TEL
from tests.fixtures import AMQP_URL, purge_command_queues
from tests.integration.processes import OUTDIAL, ReplyRecorder, start, wait_for_log

SECRET = "reliability-test-secret-of-at-least-32-bytes"


class Fleet:
    """`outdial` child processes on one store; whatever is still running at the end
    is stopped (SIGTERM, then SIGKILL)."""

    def __init__(self, cwd: Path, store_url: str, **env: str):
        self.cwd = cwd
        self.env = {"OUTDIAL_DATABASE_URL": store_url, "OUTDIAL_JWT_SECRET": SECRET, **env}
        self.children: list[subprocess.Popen[str]] = []
        self.kills = 0

    def spawn(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """Start `outdial <args>`; its log stays unread (run only what logs little)."""
        process = start([*args], self.cwd, **{**self.env, **env})
        self.children.append(process)
        return process

    def spawn_to_be_killed(self, *args: str) -> subprocess.Popen[str]:
        """Start `outdial <args>` at the lowest CPU priority: on a busy machine, a
        test that means to kill it mid-way must see it mid-way, not at its end."""
        process = subprocess.Popen(
            ["nice", "-n", "19", OUTDIAL, *args],
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.children.append(process)
        return process

    async def start(self, component: str, **env: str) -> subprocess.Popen[str]:
        """Start `outdial <component>` and wait until it logs that it is ready."""
        process = self.spawn(component, **env)
        await wait_for_log(process, "ready", timeout=30)
        return process

    def kill(self, process: subprocess.Popen[str]) -> None:
        process.kill()  # SIGKILL: no clean shutdown of any kind
        process.wait(10)
        self.kills += 1

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`outdial <args>` to its end (e.g. `replay --check`)."""
        return subprocess.run(
            [OUTDIAL, *args],
            cwd=self.cwd,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        for process in self.children:
            if process.poll() is None:
                process.terminate()
        for process in self.children:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@contextlib.asynccontextmanager
async def fleet(tmp_path: Path, store_url: str, **env: str) -> AsyncIterator[Fleet]:
    await purge_command_queues()
    children = Fleet(tmp_path, store_url, **env)
    try:
        yield children
    finally:
        await asyncio.to_thread(children.stop)


@dataclass
class SteadyLoad:
    """`AddTarget`s at a steady rate, each named after its message_id, published on
    the recorder's own connection with a broker confirm; the recorder keeps the
    replies. Only a confirmed command is owed an effect."""

    recorder: ReplyRecorder
    customer_id: str
    outdial_id: str
    rate: float = 100.0
    prefix: str = "load"
    confirmed: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def command(self, message_id: str) -> dict[str, Any]:
        return {
            "type": "AddTarget",
            "customer_id": self.customer_id,
            "outdial_id": self.outdial_id,
            "name": message_id,
            "detail": "",
            "data": "",
            "destination_0": TEL,
        }

    async def _run(self, most: int) -> None:
        began = time.monotonic()
        for i in range(most):
            if self._stop.is_set():
                return
            message_id = f"{self.prefix}-{i}"
            await self.recorder.publish(self.command(message_id), message_id)  # awaits the confirm
            self.confirmed.append(message_id)
            # Paced against the clock, so a slow confirm is made up for.
            await asyncio.sleep(max(0.0, began + (i + 1) / self.rate - time.monotonic()))

    def start(self, most: int = 100_000) -> None:
        self._task = asyncio.create_task(self._run(most))

    async def stop(self) -> None:
        self._stop.set()
        await self.finish()

    async def finish(self, timeout: float = 60) -> None:
        assert self._task is not None
        await asyncio.wait_for(self._task, timeout)

    async def wait_confirmed(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.confirmed) < count:
            assert self._task is not None and not self._task.done(), "the load stopped"
            assert time.monotonic() < deadline, f"not {count} confirmed in {timeout} s"
            await asyncio.sleep(0.02)


async def new_outdial(recorder: ReplyRecorder) -> tuple[str, str]:
    """A new customer and an outdial of theirs: (customer_id, outdial_id)."""
    customer = str(uuid.uuid4())
    await recorder.publish(
        {"type": "CreateOutdial", "customer_id": customer, "name": "", "detail": "", "data": ""},
        message_id="outdial",
    )
    await recorder.wait_until(1, timeout=30)
    return customer, str(recorder.replies["outdial"][0]["data"]["id"])


@dataclass
class StoredLog:
    """The whole notification log, read back from the store."""

    notifications: list[Notification]
    created: Counter[str]  # OutdialTarget.Created events per target name
    target_ids: dict[str, set[str]]  # target name -> ids of the targets so named
    receipts: dict[str, list[tuple[int, Any]]]  # message_id -> (position, Recorded event)

    @property
    def head(self) -> int:
        return self.notifications[-1].id if self.notifications else 0

    @property
    def events(self) -> list[Notification]:
        """The notifications that are resources' events (not receipts)."""
        return [n for n in self.notifications if not is_receipt(n)]


def read_log(store_url: str) -> StoredLog:
    app = OutdialApplication.from_url(store_url)
    log = StoredLog([], Counter(), defaultdict(set), defaultdict(list))
    try:
        position = 0
        while page := app.recorder.select_notifications(position, 1000, inclusive_of_start=False):
            for notification in page:
                log.notifications.append(notification)
                event = app.mapper.to_domain_event(notification)
                if isinstance(event, OutdialTarget.Created):
                    name = event.name  # type: ignore[attr-defined]
                    log.created[name] += 1
                    log.target_ids[name].add(str(event.originator_id))
                elif is_receipt(notification):
                    message_id = event.message_id  # type: ignore[attr-defined]
                    log.receipts[message_id].append((notification.id, event))
            position = page[-1].id
    finally:
        app.close()
    return log


class Positions:
    """The trackers' positions in a store, as other processes leave them."""

    def __init__(self, store_url: str):
        self.app = OutdialApplication.from_url(store_url)
        cls = SQLiteReadModel if store_url.startswith("sqlite") else PostgresReadModel
        read_model = self.app.factory.tracking_recorder(cls)
        assert isinstance(read_model, ReadModelMixin)
        self.read_model = read_model

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def projection(self) -> int:
        return self.read_model.position()

    def replay(self) -> int:
        return self.read_model.variant(NEXT).position()

    def relay(self) -> int:
        return self.read_model.max_tracking_id(RELAY) or 0

    def close(self) -> None:
        self.app.close()


async def until(
    predicate: Any,
    timeout: float,
    what: str,
    interval: float = 0.05,
    *,
    alive: subprocess.Popen[str] | None = None,
) -> None:
    """Wait until the sync `predicate()` holds (run in a thread), or fail; with
    the log of the process `alive`, and at once if that process ends."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        late = time.monotonic() > deadline
        if alive is not None and (late or alive.poll() is not None):
            alive.kill()
            log = alive.stderr.read() if alive.stderr else ""
            raise AssertionError(f"{what}: not within {timeout} s, exit {alive.poll()}:\n{log}")
        assert not late, f"not within {timeout} s: {what}"
        await asyncio.sleep(interval)


class EventTap:
    """A queue bound to `outdial.events` with `#`, consumed as messages arrive:
    everything the relay publishes, in arrival order, as (message_id, body)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str | None, dict[str, Any]]] = []
        self.latest = 0  # the highest position seen so far

    async def __aenter__(self) -> EventTap:
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            EVENT_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.queue = await channel.declare_queue(exclusive=True)
        await self.queue.bind(exchange, "#")
        await self.queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = orjson.loads(message.body)
        self.deliveries.append((message.message_id, body))
        self.latest = max(self.latest, body["position"])

    async def wait_for(self, positions: set[int], timeout: float = 30) -> None:
        """Until every one of `positions` has arrived at least once, or `timeout`
        (the caller's assertions then say what is missing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if positions <= {body["position"] for _, body in self.deliveries}:
                return
            await asyncio.sleep(0.05)
