"""The outbox's messages of one event (CONTRACT 4 and 8), rendered once, at write time."""

from __future__ import annotations

import uuid

import orjson
import pytest

from services.command import outbox
from services.command.domain import Outdial, OutdialTarget
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
