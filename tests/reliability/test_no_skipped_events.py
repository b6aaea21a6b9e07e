"""No event skipped by a follower of the log on PostgreSQL, while commits are slow.

The classic bug of an outbox read by notification id: writer A takes id 10, writer
B takes id 11 and commits first; a follower reads 11, moves its position past 10,
and never sees 10 when A commits. Here two `outdial command` processes write to
one store while a trigger on the events table (on this test's schema only) sleeps
a random 0-50 ms inside every inserting transaction, after its ids are taken and
before it commits, with a projector and a relay following. Every stored event
must reach the read model and the exchange. (eventsourcing's PostgreSQL recorder
locks the events table for each insert so that commit order is id order; this
checks that it holds for the service as deployed.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.command.application import OutdialApplication
from shared.store import connect_postgres, parse_store_url
from tests.integration.processes import ReplyRecorder
from tests.reliability.fleet import (
    EventTap,
    Positions,
    SteadyLoad,
    fleet,
    new_outdial,
    read_log,
    until,
)
from tests.reliability.test_kill_projector import count_targets

pytestmark = pytest.mark.integration


def slow_commits(store_url: str) -> None:
    """Make every insert into the events table wait 0-50 ms before its commit,
    counting them in the sequence `slow_commits`."""
    app = OutdialApplication.from_url(store_url)  # the tables, first
    table = app.recorder.events_table_name  # type: ignore[attr-defined]
    app.close()
    store = parse_store_url(store_url)
    schema = store.schema
    with connect_postgres(store) as conn:
        conn.execute(f'CREATE SEQUENCE "{schema}".slow_commits')
        conn.execute(
            f'CREATE FUNCTION "{schema}".slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ '
            f"BEGIN PERFORM nextval('\"{schema}\".slow_commits'); "
            "PERFORM pg_sleep(random() * 0.05); RETURN NULL; END $$"
        )
        conn.execute(
            f'CREATE TRIGGER slow_commit AFTER INSERT ON "{schema}"."{table}" '
            f'FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".slow_commit()'
        )


def slowed(store_url: str) -> int:
    store = parse_store_url(store_url)
    with connect_postgres(store) as conn:
        row = conn.execute(f'SELECT last_value FROM "{store.schema}".slow_commits').fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
async def test_writers_with_slow_commits_make_followers_skip_nothing(
    tmp_path: Path, store_url: str, scale: int
) -> None:
    await asyncio.to_thread(slow_commits, store_url)
    at = Positions(store_url)
    async with (
        fleet(tmp_path, store_url) as children,
        ReplyRecorder() as recorder,
        EventTap() as tap,
    ):
        for component in ("command", "command", "projector", "relay"):
            await children.start(component)
        customer, outdial_id = await new_outdial(recorder)
        # Two publishers, so both consumers have commands at once.
        loads = [
            SteadyLoad(recorder, customer, outdial_id, rate=60, prefix=f"p{k}") for k in range(2)
        ]
        for load in loads:
            load.start(most=250 * scale)
        for load in loads:
            await load.finish(timeout=120)
        confirmed = {m for load in loads for m in load.confirmed}
        await recorder.wait_until(len(confirmed) + 1, timeout=120)
        log = await asyncio.to_thread(read_log, store_url)
        await until(lambda: at.projection() == log.head, 60, "the projector caught up")
        await until(lambda: at.relay() == log.head, 60, "the relay caught up")
        await tap.wait_for({n.id for n in log.events}, timeout=10)
        rows = await asyncio.to_thread(count_targets, at)
        check = await asyncio.to_thread(children.run, "replay", "--check")
    at.close()

    assert set(log.created) == confirmed
    assert [m for m, n in log.created.items() if n != 1] == []
    assert rows == sum(log.created.values()), "a target missing from the read model"
    assert check.returncode == 0, check.stdout + check.stderr
    published = {body["position"] for _, body in tap.deliveries}
    skipped = sorted({n.id for n in log.events} - published)
    assert published == {n.id for n in log.events}, f"the relay skipped {skipped[:20]}"
    transactions = await asyncio.to_thread(slowed, store_url)
    assert transactions > 50, transactions  # the trigger did slow the writers
    print(
        f"confirmed {len(confirmed)} through 2 consumers, {transactions} slowed transactions, "
        f"head {log.head}, {len(log.events)} events, {rows} target rows, "
        f"{len(published)} published"
    )
