"""A handler that fails unexpectedly: tried three times with back-off, in its own
task while the other commands go on, then answered 500 once and dead-lettered with
its error; a fault that passes costs only time.

The fault is injected into the service's own code (a unit of work whose `record`,
called while a command is decided, raises for one outdial name: faults.py), on
the real broker and the real stores.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage

from services.command import receipts
from services.command.consumer import CommandConsumer
from services.command.handlers import Incoming, Reply
from services.store import read_transaction
from shared.bus import COMMAND_QUEUE
from tests.fixtures import CommandSide, command_side
from tests.reliability.faults import Faults, created_outdial_names
from tests.reliability.rpc import Outgoing, Replies, queue_depth, take_dead_letters

pytestmark = pytest.mark.integration

# Calls of one attempt lie this close together (a failed group commit runs its
# commands again one by one at once); attempts lie a back-off apart.
SAME_ATTEMPT_SECONDS = 0.3


@dataclass
class Faulty:
    side: CommandSide
    faults: Faults
    customer: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def consumer(self) -> CommandConsumer:
        return self.side.consumer

    def create(self, name: str) -> bytes:
        return orjson.dumps(
            {
                "type": "CreateOutdial",
                "customer_id": self.customer,
                "name": name,
                "detail": "",
                "data": "",
            }
        )

    def stored_names(self) -> list[str]:
        return created_outdial_names(self.side.app)

    def has_receipt(self, message_id: str) -> bool:
        """Whether the store took the command as handled (a re-send would not be)."""
        app = self.side.app
        key = receipts.receipt_key(self.customer, message_id)
        with read_transaction(app.recorder) as c:
            return key in receipts.find(c, app.store.dialect, [key])


@pytest.fixture
async def faulty(store_url: str) -> AsyncIterator[Faulty]:
    faults = Faults()
    async with command_side(store_url, prefetch=32, uow_class=faults.unit_of_work) as side:
        yield Faulty(side, faults)


def attempts(calls: Sequence[float]) -> list[tuple[float, float]]:
    """(first, last) call of each attempt."""
    spans: list[tuple[float, float]] = []
    for at in calls:
        if spans and at - spans[-1][1] < SAME_ATTEMPT_SECONDS:
            spans[-1] = (spans[-1][0], at)
        else:
            spans.append((at, at))
    return spans


async def until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_lasting_fault_is_tried_three_times_then_answered_500_and_dead_lettered(
    faulty: Faulty, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outdial.command")
    faulty.faults.failures["broken"] = None
    began = datetime.now(UTC)
    async with Replies() as replies:
        await replies.publish(Outgoing(faulty.create("broken"), "broken", message_id="broken-1"))
        # While it waits for its next attempt, others are handled and answered.
        await until(lambda: faulty.faults.calls.get("broken"))
        others = [
            Outgoing(faulty.create(f"other {i}"), f"other-{i}", message_id=f"other-{i}")
            for i in range(20)
        ]
        await replies.publish_all(others)
        await replies.wait_for([o.correlation_id for o in others] + ["broken"])
        # A last command, to be sure nothing more comes for "broken".
        await replies.send(
            {
                "type": "DeleteOutdial",
                "customer_id": faulty.customer,
                "outdial_id": str(uuid.uuid4()),
            },
            "last",
        )

    assert replies.one("broken") == {
        "status_code": 500,
        "error": {"code": "internal_error", "message": "internal error"},
    }
    answered_at = replies.arrived["broken"][0].at
    for other in others:
        assert replies.one(other.correlation_id)["status_code"] == 200
        assert replies.arrived[other.correlation_id][0].at < answered_at

    # Three attempts, each after its back-off.
    spans = attempts(faulty.faults.calls["broken"])
    assert len(spans) == 3, faulty.faults.calls["broken"]
    for (_, failed), (retried, _), delay in zip(
        spans[:-1], spans[1:], faulty.consumer.retry_delays, strict=True
    ):
        assert retried - failed >= delay
    retrying = [r for r in caplog.records if r.getMessage() == "command failed; retrying"]
    assert [r.fields["attempt"] for r in retrying] == [1, 2]  # type: ignore[attr-defined]
    [gave_up] = [r for r in caplog.records if r.getMessage() == "command failed; dead-lettered"]
    assert gave_up.levelno == logging.ERROR and gave_up.exc_info is not None
    assert gave_up.fields["attempts"] == 3  # type: ignore[attr-defined]

    # Dead-lettered as it came, with what failed, how often and when.
    [dead] = await take_dead_letters(1, timeout=10)
    assert dead.body == faulty.create("broken")
    assert (dead.message_id, dead.correlation_id, dead.reply_to) == (
        "broken-1",
        "broken",
        replies.reply_to,
    )
    assert dead.headers["x-outdial-error"] == "RuntimeError: injected fault deciding 'broken'"
    assert dead.headers["x-outdial-error-type"] == "RuntimeError"
    assert dead.headers["x-outdial-attempts"] == 3
    dead_at = datetime.fromisoformat(str(dead.headers["x-outdial-dead-at"]))
    assert began <= dead_at <= datetime.now(UTC)
    # Nothing of it was stored, not even its receipt (a replay of the dead letter
    # applies it then); everything else was, once.
    assert sorted(faulty.stored_names()) == sorted(f"other {i}" for i in range(20))
    assert not faulty.has_receipt("broken-1")
    assert all(faulty.has_receipt(f"other-{i}") for i in range(20))
    assert await queue_depth(COMMAND_QUEUE) == 0


async def test_a_fault_that_passes_costs_time_only(faulty: Faulty) -> None:
    faulty.faults.failures["flaky"] = 2
    async with Replies() as replies:
        await replies.publish(Outgoing(faulty.create("flaky"), "flaky", message_id="flaky-1"))
        await replies.wait_for(["flaky"])
        await replies.send(
            {
                "type": "DeleteOutdial",
                "customer_id": faulty.customer,
                "outdial_id": str(uuid.uuid4()),
            },
            "last",
        )
    reply = replies.one("flaky")
    assert reply["status_code"] == 200 and reply["data"]["name"] == "flaky"
    assert len(attempts(faulty.faults.calls["flaky"])) == 3
    assert faulty.stored_names() == ["flaky"]
    assert faulty.has_receipt("flaky-1")
    assert await take_dead_letters(0, timeout=0) == []


class BrokenConsumer(CommandConsumer):
    """The consumer with a bug of its own (not a handler's) for one message."""

    async def _apply(self, incoming: Incoming) -> Reply:
        if incoming.message_id == "bug":
            raise KeyError("a bug in the consumer")
        return await super()._apply(incoming)


async def test_a_bug_in_the_consumer_itself_parks_the_message(store_url: str) -> None:
    """Left unacked, such a message would hold its prefetch slot until the channel
    closed: enough of them and the consumer would take nothing more."""
    customer = str(uuid.uuid4())
    body = orjson.dumps(
        {"type": "CreateOutdial", "customer_id": customer, "name": "n", "detail": "", "data": ""}
    )
    async with command_side(store_url, prefetch=2, consumer_class=BrokenConsumer):
        async with Replies() as replies:
            # More of them than the prefetch: each must be settled for the next to come.
            await replies.publish_all(
                [Outgoing(body, f"bug-{i}", message_id="bug") for i in range(4)]
            )
            r = await replies.send(orjson.loads(body), "fine")
            assert r["status_code"] == 200
        dead: list[AbstractIncomingMessage] = await take_dead_letters(4, timeout=10)
        assert sorted(str(m.correlation_id) for m in dead) == [f"bug-{i}" for i in range(4)]
        assert {m.headers["x-outdial-error-type"] for m in dead} == {"KeyError"}
        assert await queue_depth(COMMAND_QUEUE) == 0
