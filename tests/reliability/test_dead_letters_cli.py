"""`outdial dead-letters list|replay`: the real console script against the broker.

The dead letters are made the way the service makes them: junk answered 400, and
a command whose handler fails on every attempt (a fault injected into the
unit of work, faults.py, then mended) answered 500. A third is the copy of a command that was
applied before, parked by hand, to show that a replay answers from the receipt.

The CLI deals with the broker alone, so this runs on one store (SQLite); how the
consumer fails and dead-letters on each store is test_handler_failures.py's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import orjson
import pytest

from shared.bus import DEAD_LETTER_QUEUE, JSON
from tests.fixtures import AMQP_URL, CommandSide, command_side
from tests.integration.processes import OUTDIAL
from tests.reliability.faults import Faults, created_outdial_names
from tests.reliability.rpc import Outgoing, Replies, queue_depth, take_dead_letters

pytestmark = pytest.mark.integration


def dead_letters_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OUTDIAL, "dead-letters", *args],
        env={**os.environ, "OUTDIAL_AMQP_URL": AMQP_URL},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(dead_letters_cli, *args)


async def until_depth(queue: str, depth: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (now := await queue_depth(queue)) != depth:
        assert time.monotonic() < deadline, f"{queue} holds {now}, not {depth}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def faulty(store_url: str) -> AsyncIterator[tuple[Faults, CommandSide]]:
    faults = Faults()
    async with command_side(
        store_url, prefetch=8, uow_class=faults.unit_of_work, retry_delays=(0.05, 0.1)
    ) as side:
        yield faults, side


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_list_shows_without_removing_and_replay_sends_back_once_confirmed(
    faulty: tuple[Faults, CommandSide],
) -> None:
    faults, side = faulty
    faults.failures["broken"] = None
    customer = str(uuid.uuid4())

    def create(name: str) -> bytes:
        return orjson.dumps(
            {
                "type": "CreateOutdial",
                "customer_id": customer,
                "name": name,
                "detail": "",
                "data": "",
            }
        )

    began = datetime.now(UTC)
    async with Replies() as replies:
        await replies.publish(
            Outgoing(b"{not json", "junk", message_id="junk-1", headers={"x-trace": "kept"})
        )
        await replies.publish(Outgoing(create("broken"), "broken", message_id="broken-1"))
        await replies.publish(Outgoing(create("applied"), "applied", message_id="applied-1"))
        await replies.wait_for(["junk", "broken", "applied"])
        assert replies.one("broken")["status_code"] == 500
        first = replies.one("applied")
        assert first["status_code"] == 200
        # A copy of the applied command parked by hand, as if dead-lettered after its commit.
        await replies.channel.default_exchange.publish(
            aio_pika.Message(
                create("applied"),
                content_type=JSON,
                message_id="applied-1",
                correlation_id="applied-again",
                reply_to=replies.reply_to,
                headers={"x-outdial-error": "parked by the test"},
            ),
            routing_key=DEAD_LETTER_QUEUE,
        )
        await until_depth(DEAD_LETTER_QUEUE, 3)

        # list: one line each, oldest first; nothing leaves the queue.
        listed = await cli("list")
        assert listed.returncode == 0, listed.stderr
        lines = [line.split("\t") for line in listed.stdout.splitlines()]
        assert [line[0] for line in lines] == ["junk-1", "broken-1", "applied-1"]
        assert lines[0][1:3] == ["-", "-"]  # junk names no customer, no type
        assert lines[1][1:4] == [
            customer,
            "CreateOutdial",
            "RuntimeError: injected fault deciding 'broken'",
        ]
        assert began <= datetime.fromisoformat(lines[1][4]) <= datetime.now(UTC)
        assert lines[2][3:] == ["parked by the test", "-"]
        as_json = orjson.loads((await cli("list", "--json")).stdout)
        assert [d["message_id"] for d in as_json] == ["junk-1", "broken-1", "applied-1"]
        assert as_json[1]["attempts"] == 3 and as_json[1]["error_type"] == "RuntimeError"
        assert as_json[1]["reply_to"] == replies.reply_to
        assert (await cli("list")).stdout == listed.stdout  # still there, in the same order
        assert await queue_depth(DEAD_LETTER_QUEUE) == 3

        # replay of named ones; the fault is mended first.
        faults.failures.clear()
        replayed = await cli("replay", "--message-id", "broken-1", "--message-id", "applied-1")
        assert replayed.returncode == 0, replayed.stderr
        assert [line.split("\t")[1] for line in replayed.stdout.splitlines()] == [
            "broken-1",
            "applied-1",
        ]
        await replies.wait_for(["applied-again"])
        await until(lambda: len(replies.arrived["broken"]) == 2)
        # To the original reply_to and correlation_id: now applied; the one applied
        # before answers its first reply again, from its receipt.
        assert replies.arrived["broken"][1].json()["status_code"] == 200
        assert replies.one("applied-again") == first
        assert sorted(created_outdial_names(side.app)) == ["applied", "broken"]
        assert [line.split("\t")[0] for line in (await cli("list")).stdout.splitlines()] == [
            "junk-1"
        ]

        # A name not there: exit 1, nothing taken.
        missing = await cli("replay", "--message-id", "no-such-message")
        assert missing.returncode == 1 and "no-such-message" in missing.stderr
        assert await queue_depth(DEAD_LETTER_QUEUE) == 1

        # replay of all: the junk is junk still, answered 400 and parked again.
        everything = await cli("replay")
        assert everything.returncode == 0, everything.stderr
        await until(lambda: len(replies.arrived["junk"]) == 2)
        assert replies.arrived["junk"][1].json()["status_code"] == 400
        await until_depth(DEAD_LETTER_QUEUE, 1)
        again = orjson.loads((await cli("list", "--json")).stdout)
        assert [d["message_id"] for d in again] == ["junk-1"]
        assert again[0]["dead_at"] > as_json[0]["dead_at"]
        # Replayed with the sender's own headers, without the consumer's of last time.
        [parked] = await take_dead_letters(1, timeout=5)
        assert parked.headers["x-trace"] == "kept"
        assert parked.headers["x-outdial-dead-at"] == again[0]["dead_at"]


async def until(condition: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
