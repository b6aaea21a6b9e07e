"""The tools of the kill tests: real `outdial` processes, a steady load of confirmed
commands, a tap on `outdial.events`, and what the store holds afterwards (the
events, the receipts, the read model and the relay's position)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from eventsourcing.persistence import Notification, ProgrammingError

from services.command.application import OutdialApplication
from services.command.domain import OutdialTarget
from services.command.legacy import is_receipt
from services.command.receipts import RECEIPTS, Receipt, receipt_key
from services.command.relay import RELAY
from services.query.schema import NEXT, READ_MODEL, TARGETS, table
from services.store import read_position, read_transaction, table_exists, write_transaction
from shared.bus import EVENT_EXCHANGE
from tests.expected import TEL
from tests.fixtures import AMQP_URL, SECRET, Writer, purge_command_queues
from tests.integration.processes import OUTDIAL, ReplyRecorder, start, wait_for_log


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


BACKLOG = "backlog"  # the prefix of the names of the targets `backlog` adds


def backlog(store_url: str, thousands: int) -> int:
    """Events of every kind, then `thousands` x 1,000 targets (named `backlog-…`),
    written as `outdial command` writes them (no broker): a log that takes a
    replay, or a relay, a while. Returns the head."""
    writer = Writer(store_url)
    customer = str(uuid.uuid4())

    def ok(type_: str, **fields: Any) -> dict[str, Any]:
        reply = writer.send(customer, type_, **fields)
        assert reply.status_code == 200 and reply.data is not None, reply
        return reply.data

    try:
        for n in range(2):  # every kind of event, deleted resources included
            o = ok("CreateOutdial", name=f"o{n}", detail="", data="")["id"]
            made = ok(
                "AddTargets",
                outdial_id=o,
                targets=[
                    {"name": f"{BACKLOG}-o{n}-{i}", "detail": "", "data": "", "destination_0": TEL}
                    for i in range(20)
                ],
            )
            ids = [t["id"] for t in made["result"]]
            for i, t in enumerate(ids[:10]):
                ok("MarkTargetProgressing", outdial_id=o, target_id=t, destination_index=0)
                ok(
                    "UpdateTargetStatus",
                    outdial_id=o,
                    target_id=t,
                    status="done" if i % 2 else "idle",
                )
            ok("DeleteTarget", outdial_id=o, target_id=ids[-1])
            ok("UpdateOutdial", outdial_id=o, name="renamed", detail="d")
            ok("UpdateOutdialCampaign", outdial_id=o, campaign_id=str(uuid.uuid4()))
            ok("UpdateOutdialData", outdial_id=o, data="x")
            if n == 0:
                ok("DeleteOutdial", outdial_id=o)
        big = ok("CreateOutdial", name="big", detail="", data="")["id"]
        for k in range(thousands):
            targets = [
                {"name": f"{BACKLOG}-{k}-{i}", "detail": "", "data": "", "destination_0": TEL}
                for i in range(1000)
            ]
            ok("AddTargets", outdial_id=big, targets=targets)
        return writer.rt.head()
    finally:
        writer.close()


@dataclass
class StoredLog:
    """The whole notification log and every receipt, read back from the store."""

    notifications: list[Notification]
    created: Counter[str]  # OutdialTarget.Created events per target name
    target_ids: dict[str, set[str]]  # target name -> ids of the targets so named
    receipts: dict[str, Receipt]  # by key (customer and message_id)

    @property
    def head(self) -> int:
        return self.notifications[-1].id if self.notifications else 0

    @property
    def events(self) -> list[Notification]:
        """The notifications that are resources' events (a store of this version
        holds no others: receipts have a table of their own)."""
        return [n for n in self.notifications if not is_receipt(n)]

    def receipt(self, customer_id: str, message_id: str) -> Receipt | None:
        return self.receipts.get(receipt_key(customer_id, message_id))


def read_log(store_url: str) -> StoredLog:
    app = OutdialApplication.from_url(store_url)
    log = StoredLog([], Counter(), defaultdict(set), {})
    try:
        position = 0
        while page := app.recorder.select_notifications(position, 1000, inclusive_of_start=False):
            for notification in page:
                log.notifications.append(notification)
                if is_receipt(notification):
                    continue
                event = app.mapper.to_domain_event(notification)
                if isinstance(event, OutdialTarget.Created):
                    name = event.name  # type: ignore[attr-defined]
                    log.created[name] += 1
                    log.target_ids[name].add(str(event.originator_id))
            position = page[-1].id
        dialect = app.store.dialect
        with read_transaction(app.recorder) as c:
            c.execute(
                "SELECT key, command, status_code, position, body, created_ids "
                f"FROM {dialect.table(RECEIPTS)}"
            )
            for row in c.fetchall():
                log.receipts[row[0]] = Receipt(
                    row[0],
                    row[1],
                    int(row[2]),
                    None if row[3] is None else int(row[3]),
                    row[4],
                    None if row[5] is None else orjson.loads(row[5]),
                )
    finally:
        app.close()
    return log


class Positions:
    """What other processes leave in a store, read as they go: the last event, the
    read model's and the relay's positions, and a rebuild's progress."""

    def __init__(self, store_url: str):
        self.app = OutdialApplication.from_url(store_url)
        self.dialect = self.app.store.dialect
        self.events = self.dialect.table(self.app.recorder.events_table_name)  # type: ignore[attr-defined]
        self.id_column = "rowid" if self.dialect.kind == "sqlite" else "notification_id"

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        with read_transaction(self.app.recorder) as c:
            yield c

    def _head(self, c: Any) -> int:
        c.execute(f"SELECT MAX({self.id_column}) FROM {self.events}")
        return int(c.fetchone()[0] or 0)

    def head(self) -> int:
        with self._read() as c:
            return self._head(c)

    def relay(self) -> int:
        with self._read() as c:
            return read_position(c, self.dialect, RELAY) or 0

    def outbox(self) -> int:
        """Rows in the outbox: messages of events stored and not yet published."""
        with self._read() as c:
            c.execute(f"SELECT COUNT(*) FROM {self.dialect.table('outdial_outbox')}")
            return int(c.fetchone()[0])

    def read_model_and_head(self) -> tuple[int, int]:
        """The read model's position and the last event's, as of one moment."""
        with self._read() as c:
            return read_position(c, self.dialect, READ_MODEL) or 0, self._head(c)

    def rebuilt_rows(self) -> int | None:
        """Target rows a rebuild has written aside so far (None: no rebuild's tables)."""
        try:
            with self._read() as c:
                if not table_exists(c, self.dialect, TARGETS + NEXT):
                    return None
                c.execute(f"SELECT COUNT(*) FROM {table(self.dialect, TARGETS, NEXT)}")
                return int(c.fetchone()[0])
        except ProgrammingError:  # swapped in between the two (PostgreSQL: no snapshot of DDL)
            return None

    def target_rows(self) -> int:
        with self._read() as c:
            c.execute(f"SELECT COUNT(*) FROM {table(self.dialect, TARGETS)}")
            return int(c.fetchone()[0])

    def corrupt_one_target(self) -> str:
        """Overwrite the body of one row of the live read model; return its id."""
        rm_targets = table(self.dialect, TARGETS)
        with write_transaction(self.app.recorder) as c:
            c.execute(f"SELECT MIN(id) FROM {rm_targets}")
            target_id = str(c.fetchone()[0])
            c.execute(
                self.dialect.sql(f"UPDATE {rm_targets} SET body = '{{}}' WHERE id = ?"),
                (target_id,),
            )
        return target_id

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


def check_deliveries(
    deliveries: list[tuple[str | None, dict[str, Any]]], events: list[Notification]
) -> int:
    """Assert CONTRACT 4's promises of what a consumer of `outdial.events` saw: every
    stored event, no other; each repeat equal to the first delivery (message_id and
    body); one message_id per event; per resource, first deliveries in the store's
    order. Returns how many deliveries were repeats."""
    stored = {n.id: n for n in events}
    first: dict[int, tuple[str | None, dict[str, Any]]] = {}
    order: dict[str, list[int]] = defaultdict(list)  # resource -> positions, first sightings
    for message_id, body in deliveries:
        position = body["position"]
        assert position in stored, f"published {position}, which is no stored event"
        if position in first:
            assert (message_id, body) == first[position], "a repeat that differs"
            continue
        first[position] = (message_id, body)
        assert body["data"]["id"] == str(stored[position].originator_id)
        order[body["data"]["id"]].append(position)
    assert set(first) == set(stored), f"never published: {sorted(set(stored) - set(first))[:20]}"
    assert len({m for m, _ in first.values()}) == len(first), "two events, one message_id"
    for resource, positions in order.items():
        assert positions == sorted(positions), f"out of the store's order: {resource}"
    return len(deliveries) - len(first)
