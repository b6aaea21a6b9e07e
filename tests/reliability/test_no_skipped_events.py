"""No event skipped by the relay on PostgreSQL, while commits are slow.

The classic bug of an outbox read by position: writer A takes position 10,
writer B takes 11 and commits first; the relay reads 11, records its position
past 10, and never publishes 10 when A commits. Here two `outdial command`
processes write to one store while a trigger on the events table (on this
test's schema only) sleeps a random 0-50 ms inside every inserting transaction,
after its positions are taken and before its outbox rows are written and it
commits, with a relay following the outbox all along. Every stored event must
reach the exchange exactly once, in the store's order, and the read model
(written in the same transactions) must equal a rebuild. (The events' insert
takes a lock on the events table held to the commit, so that commit order is
position order; this checks that it holds for the service as deployed.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.command.application import OutdialApplication
from services.store import connect_postgres, parse_store_url
from tests.integration.processes import ReplyRecorder
from tests.reliability.fleet import (
    EventTap,
    Positions,
    SteadyLoad,
    check_deliveries,
    fleet,
    new_outdial,
    read_log,
    until,
)

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
async def test_writers_with_slow_commits_make_the_relay_skip_nothing(
    tmp_path: Path, store_url: str, scale: int
) -> None:
    await asyncio.to_thread(slow_commits, store_url)
    at = Positions(store_url)
    async with (
        fleet(tmp_path, store_url) as children,
        ReplyRecorder() as recorder,
        EventTap() as tap,
    ):
        for component in ("command", "command", "relay"):
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
        # The relay followed the outbox while the writers were slowed, not after.
        published_meanwhile = len(tap.deliveries)
        confirmed = {m for load in loads for m in load.confirmed}
        await recorder.wait_until(len(confirmed) + 1, timeout=120)
        log = await asyncio.to_thread(read_log, store_url)
        await until(lambda: at.relay() == log.head, 60, "the relay caught up")
        await tap.wait_for({n.id for n in log.events}, timeout=10)
        await asyncio.sleep(0.5)  # anything published twice has arrived too
        model, head = await asyncio.to_thread(at.read_model_and_head)
        rows = await asyncio.to_thread(at.target_rows)
        outbox = await asyncio.to_thread(at.outbox)
        check = await asyncio.to_thread(children.run, "replay", "--check")
    at.close()

    assert set(log.created) == confirmed
    assert [m for m, n in log.created.items() if n != 1] == []
    assert published_meanwhile > 0
    # Every stored event published once, in the store's order (one relay, no kill).
    assert check_deliveries(tap.deliveries, log.events) == 0, "an event published twice"
    positions = [body["position"] for _, body in tap.deliveries]
    assert positions == sorted(positions), "published out of the store's order"
    assert outbox == 0, "the outbox keeps published rows"
    assert model == head == log.head
    assert rows == sum(log.created.values()), "a target missing from the read model"
    assert check.returncode == 0, check.stdout + check.stderr
    transactions = await asyncio.to_thread(slowed, store_url)
    assert transactions > 50, transactions  # the trigger did slow the writers
    print(
        f"confirmed {len(confirmed)} through 2 consumers, {transactions} slowed transactions, "
        f"head {log.head}, {len(log.events)} events, {rows} target rows, "
        f"{len(tap.deliveries)} published ({published_meanwhile} during the load)"
    )
