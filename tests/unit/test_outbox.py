"""The outbox's messages of one event (CONTRACT 4 and 8), rendered once, at write time."""

from __future__ import annotations

import sqlite3
import uuid

import orjson
import pytest

from services.command import outbox
from services.command.domain import Outdial, OutdialTarget
from services.store import Dialect
from shared import shapes
from shared.bus import EVENT_EXCHANGE

NIL = uuid.UUID(int=0)
TEL = {"type": "tel", "target": "+15559876543", "target_name": "", "name": "", "detail": ""}


def outdial_events(customer: uuid.UUID = NIL) -> tuple[Outdial, list[object]]:
    outdial = Outdial(customer, NIL, "n", "d", "x")
    outdial.update("n2", "d2")
    outdial.delete()
    return outdial, list(outdial.collect_events())


def messages(aggregate: Outdial | OutdialTarget, event: object) -> list[outbox.OutboxMessage]:
    if isinstance(aggregate, OutdialTarget):
        shape = shapes.target(aggregate, with_customer=True)
    else:
        shape = shapes.outdial(aggregate, with_customer=True)
    return outbox.messages_for(event, shape)


def test_an_outdial_event_is_also_voipbins_event_and_webhook() -> None:
    customer = uuid.uuid4()
    outdial, events = outdial_events(customer)
    created = messages(outdial, events[0])
    assert [(m.exchange, m.routing_key) for m in created] == [
        (EVENT_EXCHANGE, "outdial_created"),
        ("bin-manager.outdial-manager.event", ""),
        ("", "bin-manager.webhook-manager.request"),
    ]
    contract, event, webhook = (orjson.loads(m.stored_body(7)) for m in created)
    assert contract["position"] == 7 and "position" not in event
    model = shapes.platform_outdial(outdial)
    assert event == {
        "type": "outdial_created",
        "publisher": "outdial-manager",
        "data_type": "application/json",
        "data": model,
    }
    assert webhook == {
        "uri": "/v1/webhooks",
        "method": "POST",
        "publisher": "outdial-manager",
        "data_type": "application/json",
        "data": {
            "customer_id": str(customer),
            "data_type": "application/json",
            "data": {"type": "outdial_created", "data": model},
        },
    }
    kinds = [orjson.loads(messages(outdial, e)[1].body)["type"] for e in events]
    assert kinds == ["outdial_created", "outdial_updated", "outdial_deleted"]


def test_message_ids_are_stable_and_distinct() -> None:
    outdial, events = outdial_events(uuid.uuid4())
    first = [m.message_id for e in events for m in messages(outdial, e)]
    again = [m.message_id for e in events for m in messages(outdial, e)]
    assert first == again  # equal on every publication, in every process
    assert len(set(first)) == len(first) == 9
    # As every earlier version derived them: a re-published event keeps its id.
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "urn:outdial:event")
    assert first == [
        str(uuid.uuid5(namespace, f"{e.originator_id}/{e.originator_version}{suffix}"))  # type: ignore[attr-defined]
        for e in events
        for suffix in ("", "/platform-event", "/platform-webhook")
    ]


def test_the_nil_customer_gets_no_webhook() -> None:
    outdial, events = outdial_events(NIL)
    assert [m.routing_key for m in messages(outdial, events[0])] == ["outdial_created", ""]


@pytest.mark.parametrize("step", ["created", "try", "status", "deleted"])
def test_a_target_event_is_only_contract_4s(step: str) -> None:
    target = OutdialTarget(uuid.uuid4(), uuid.uuid4(), "t", "", "", [TEL, None, None, None, None])
    if step != "created":
        target.collect_events()
        target.start_try(0)
    if step == "status":
        target.collect_events()
        target.update_status("done")
    if step == "deleted":
        target.collect_events()
        target.delete()
    (event,) = target.collect_events()
    assert [m.exchange for m in messages(target, event)] == [EVENT_EXCHANGE]


def test_a_page_is_bounded_by_bytes_and_holds_whole_events_only() -> None:
    """The relay reads at most about `max_bytes` of bodies at a time (a big AddTargets
    would otherwise be hundreds of MB in memory at once), and never some of the
    messages of one event: a position once published is published whole."""
    dialect = Dialect("sqlite")
    connection = sqlite3.connect(":memory:")
    cursor = connection.cursor()
    outbox.create_table(cursor, dialect)
    body = outbox.OutboxMessage(EVENT_EXCHANGE, "k", "id", b"x" * 100)
    # Positions 1..10, three messages each: 300 bytes an event.
    outbox.insert(cursor, dialect, [(p, [body, body, body]) for p in range(1, 11)])

    def positions(after: int, limit: int, max_bytes: int) -> list[tuple[int, int]]:
        return [(r.position, r.seq) for r in outbox.page(cursor, dialect, after, limit, max_bytes)]

    assert positions(0, 100, 10_000) == [(p, s) for p in range(1, 11) for s in range(3)]
    # 650 bytes: the events it takes to reach them, each whole.
    assert positions(0, 100, 650) == [(p, s) for p in (1, 2, 3) for s in range(3)]
    assert positions(3, 100, 650) == [(p, s) for p in (4, 5, 6) for s in range(3)]
    # One event bigger than the bound still goes, alone.
    assert positions(0, 100, 10) == [(1, 0), (1, 1), (1, 2)]
    # A row limit that would cut an event leaves that event for the next page.
    assert positions(0, 4, 10_000) == [(1, 0), (1, 1), (1, 2)]
