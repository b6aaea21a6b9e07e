"""The store turns read-only under the running consumer, then writable again.

Made read-only for real, not by opening it differently:
- SQLite: the database file and its WAL are made immutable (`chattr +i`), which
  stops writes even by root (plain `chmod 0444` does not, for root). Not the
  `-shm` file: SQLite maps it into memory, and writing to an immutable mapping
  kills the process with SIGBUS.
- PostgreSQL: the service connects as a role of its own, which is switched to
  `default_transaction_read_only` and its sessions ended, so that it reconnects
  to a server that refuses every write (as after a failover to a standby).

While read-only, commands are neither answered nor acked: requeued with a
back-off, the error logged; nothing half-written (no event without its
receipt, its read-model row or its outbox row: one transaction). Once
writable, each is applied exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from services.bootstrap import Runtime
from services.command.consumer import CommandConsumer
from services.command.outbox import OUTBOX
from services.command.receipts import RECEIPTS
from services.query.schema import OUTDIALS, TARGETS
from services.store import connect_postgres, parse_store_url, read_transaction
from shared.bus import COMMAND_QUEUE, DEAD_LETTER_QUEUE
from tests.fixtures import purge_command_queues, settings_for
from tests.reliability.rpc import Outgoing, Replies, queue_depth

pytestmark = pytest.mark.integration

REQUEUED = "store unavailable (down, locked or read-only); command requeued"
TEL = {"type": "tel", "target": "+15559876543"}


@dataclass
class Switchable:
    """A store, and the switch that makes it read-only and writable again."""

    url: str
    read_only: Callable[[], None]
    writable: Callable[[], None]
    error: str  # what the driver says about a write refused


@pytest.fixture
def switchable(store_url: str) -> Iterator[Switchable]:
    if store_url.startswith("sqlite"):
        yield from immutable_sqlite(store_url)
    else:
        yield from read_only_role(store_url)


def immutable_sqlite(store_url: str) -> Iterator[Switchable]:
    path = Path(store_url.removeprefix("sqlite:///"))
    files = [str(path), f"{path}-wal"]

    def read_only() -> None:
        assert Path(files[1]).exists(), "the WAL is there while the store is open"
        subprocess.run(["chattr", "+i", *files], check=True)
        with pytest.raises(PermissionError):  # even for root: the switch is real
            path.open("ab").close()

    def writable() -> None:
        subprocess.run(["chattr", "-i", *files], check=True)

    try:
        yield Switchable(store_url, read_only, writable, "SQLITE_IOERR_WRITE")
    finally:
        for file in files:  # else pytest could not remove its temporary folder
            with suppress(subprocess.CalledProcessError):
                subprocess.run(["chattr", "-i", file], check=True, capture_output=True)


def read_only_role(store_url: str) -> Iterator[Switchable]:
    admin = parse_store_url(store_url)
    role = f"outdial_ro_{uuid.uuid4().hex[:10]}"
    with connect_postgres(admin) as c:
        c.execute(f'CREATE ROLE "{role}" LOGIN')
        c.execute(f'GRANT CREATE ON DATABASE "{admin.env["POSTGRES_DBNAME"]}" TO "{role}"')
    # The same database and schema, as the role (trust authentication, as in CI).
    parts = urlsplit(store_url)
    url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"))

    def switch(setting: str) -> None:
        with connect_postgres(admin) as c:
            c.execute(f'ALTER ROLE "{role}" {setting}')
            # Its sessions end; the pool reconnects to the server as it now is.
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )

    try:
        yield Switchable(
            url,
            lambda: switch("SET default_transaction_read_only = on"),
            lambda: switch("RESET default_transaction_read_only"),
            "read-only transaction",
        )
    finally:
        with connect_postgres(admin) as c:
            c.execute(f'DROP OWNED BY "{role}" CASCADE')
            c.execute(f'DROP ROLE "{role}"')


def topics(rt: Runtime) -> Counter[str]:
    """Events by topic, and the rows of every table a command writes beside them
    (the outbox's by event: an event may have several messages)."""
    notifications = rt.app.recorder.select_notifications(start=None, limit=10**9)
    counts = Counter(n.topic.rsplit(":", 1)[1] for n in notifications)
    dialect = rt.store.dialect
    with read_transaction(rt.app.recorder) as c:
        for name, rows in [
            (RECEIPTS, "*"),
            (OUTBOX, "DISTINCT position"),
            (OUTDIALS, "*"),
            (TARGETS, "*"),
        ]:
            c.execute(f"SELECT COUNT({rows}) FROM {dialect.table(name)}")
            counts[name] = int(c.fetchone()[0])
    return counts


async def consumer_on(rt: Runtime) -> CommandConsumer:
    """A command consumer of the runtime's, as `outdial command` starts it."""
    consumer = CommandConsumer(
        await rt.connection(),
        await rt.replies(),
        rt.new_uow,
        prefetch=16,
        on_stored=rt.stored_at,
    )
    await consumer.start()
    return consumer


def requeued(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == REQUEUED]


def requeued_ids(caplog: pytest.LogCaptureFixture) -> set[str]:
    """message_ids the consumer's log says the store refused (each is then requeued)."""
    return {r.fields["message_id"] for r in requeued(caplog)}  # type: ignore[attr-defined]


async def until(condition: Callable[[], Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_read_only_store_holds_commands_back_until_writable_then_applies_them_once(
    switchable: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outdial.command")
    await purge_command_queues()
    rt = Runtime(settings_for(switchable.url))
    consumer = await consumer_on(rt)
    customer = str(uuid.uuid4())
    try:
        async with Replies() as replies:
            made = await replies.send(
                {
                    "type": "CreateOutdial",
                    "customer_id": customer,
                    "name": "o",
                    "detail": "",
                    "data": "",
                },
                "setup",
                message_id="setup",
            )
            outdial = made["data"]["id"]
            before = topics(rt)

            def add_target(n: str) -> Outgoing:
                body = {
                    "type": "AddTarget",
                    "customer_id": customer,
                    "outdial_id": outdial,
                    "name": n,
                    "detail": "",
                    "data": "",
                    "destination_0": TEL,
                }
                return Outgoing(orjson.dumps(body), n, message_id=n)

            held = [add_target(f"held-{i}") for i in range(4)]
            held.append(
                Outgoing(
                    orjson.dumps(
                        {
                            "type": "CreateOutdial",
                            "customer_id": customer,
                            "name": "held-outdial",
                            "detail": "",
                            "data": "",
                        }
                    ),
                    "held-outdial",
                    message_id="held-outdial",
                )
            )

            switchable.read_only()
            await replies.publish_all(held)
            # Each is tried, refused by the store, logged and requeued; none answered.
            await until(lambda: requeued_ids(caplog) >= {o.correlation_id for o in held})
            errors = {r.fields["error"] for r in requeued(caplog)}  # type: ignore[attr-defined]
            assert all(switchable.error in e for e in errors), errors
            assert all(r.levelno == logging.ERROR for r in requeued(caplog))
            assert not any(replies.arrived.get(o.correlation_id) for o in held)
            assert topics(rt) == before  # nothing half-written

            # Not acked: a consumer stopped now leaves every one of them in the queue.
            await consumer.stop()
            assert await queue_depth(COMMAND_QUEUE) == len(held)
            assert await queue_depth(DEAD_LETTER_QUEUE) == 0
            assert not any(replies.arrived.get(o.correlation_id) for o in held)
            assert topics(rt) == before

            # Writable again: a consumer applies each, once, and answers once.
            switchable.writable()
            consumer = await consumer_on(rt)
            await replies.wait_for([o.correlation_id for o in held], timeout=60)
            for o in held:
                assert replies.one(o.correlation_id)["status_code"] == 200
            after = topics(rt)
            assert after["OutdialTarget.Created"] == before["OutdialTarget.Created"] + 4
            assert after["Outdial.Created"] == before["Outdial.Created"] + 1
            assert after[RECEIPTS] == before[RECEIPTS] + 5
            assert after[OUTDIALS] == before[OUTDIALS] + 1
            assert after[TARGETS] == before[TARGETS] + 4
            assert after[OUTBOX] == before[OUTBOX] + 5  # no relay here: they stay
            assert sum(after.values()) == sum(before.values()) + 20

            # The running consumer also comes back by itself, without a restart.
            caplog.clear()
            switchable.read_only()
            late = add_target("late")
            await replies.publish(late)
            await until(lambda: "late" in requeued_ids(caplog))
            switchable.writable()
            await replies.wait_for(["late"], timeout=60)
            assert replies.one("late")["status_code"] == 200
            assert topics(rt)["OutdialTarget.Created"] == after["OutdialTarget.Created"] + 1
            # Resent, every one answers its first reply again; nothing changes.
            final = topics(rt)
            for o in [*held, late]:
                again = await replies.send(
                    orjson.loads(o.body), f"{o.correlation_id}-again", message_id=o.message_id
                )
                assert again == replies.one(o.correlation_id)
            assert topics(rt) == final
        assert await queue_depth(COMMAND_QUEUE) == 0
        assert await queue_depth(DEAD_LETTER_QUEUE) == 0
    finally:
        switchable.writable()
        await consumer.stop()
        await rt.close()
