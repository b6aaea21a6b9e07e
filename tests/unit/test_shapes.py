"""Both shape families of `shared.shapes` from the same resource representation: the
tutorial's (CONTRACT 1) and VoIPbin's models (CONTRACT 8), no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from services.command.domain import Outdial, OutdialTarget
from shared import shapes
from shared.resources import PlatformOutdial, PlatformTarget
from tests import go_decoding as go

NIL = uuid.UUID(int=0)
TEL = {"type": "tel", "target": "+15559876543", "target_name": "", "name": "", "detail": ""}


def go_tel() -> dict[str, str]:
    return {"type": "tel", "target": "+15559876543"}


def test_times_are_rfc_3339_in_utc_with_microseconds_or_null() -> None:
    moment = datetime(2026, 11, 27, 11, 8, 56, 914735, tzinfo=UTC)
    assert shapes.rfc3339(moment) == "2026-11-27T11:08:56.914735Z"
    assert shapes.rfc3339(moment.replace(microsecond=0)) == "2026-11-27T11:08:56.000000Z"
    plus_nine = moment.astimezone(timezone(timedelta(hours=9)))
    assert shapes.rfc3339(plus_nine) == "2026-11-27T11:08:56.914735Z"
    assert shapes.rfc3339(None) is None
    assert shapes.parse_timestamp(shapes.timestamp(moment)) == moment
    assert shapes.parse_timestamp(shapes.NEVER) is None


def test_an_outdial_in_voipbins_model() -> None:
    outdial = Outdial(uuid.uuid4(), NIL, "n", "d", "x")
    model = shapes.platform_outdial(outdial)
    assert list(model) == go.OUTDIAL_KEYS
    assert model["customer_id"] == str(outdial.customer_id)
    assert model["campaign_id"] == str(NIL)
    assert model["tm_update"] is None and model["tm_delete"] is None  # never
    go.outdial(orjson.loads(orjson.dumps(model)))
    outdial.update("n2", "d2")
    outdial.delete()
    model = shapes.platform_outdial(outdial)
    assert model["tm_delete"] == model["tm_update"] is not None
    assert list(PlatformOutdial.model_fields) == go.OUTDIAL_KEYS
    PlatformOutdial.model_validate(model)


def test_a_target_in_voipbins_model() -> None:
    named = {**TEL, "target_name": "Alice"}
    target = OutdialTarget(uuid.uuid4(), uuid.uuid4(), "t", "", "", [None, named, None, None, TEL])
    model = shapes.platform_target(target)
    assert list(model) == go.TARGET_KEYS  # no customer_id
    assert model["destination_0"] is None
    assert model["destination_1"] == {
        "type": "tel",
        "target": "+15559876543",
        "target_name": "Alice",
    }
    assert model["destination_4"] == go_tel()
    assert model["tm_update"] == model["tm_create"]  # new: "never tried"
    go.target(orjson.loads(orjson.dumps(model)))
    assert list(PlatformTarget.model_fields) == go.TARGET_KEYS
    PlatformTarget.model_validate(model)


@pytest.mark.parametrize("deleted", [False, True])
def test_both_families_render_the_same_state(deleted: bool) -> None:
    """What the read model stores (the tutorial's shape), read back, renders as
    VoIPbin's model exactly as the aggregate itself does."""
    outdial = Outdial(uuid.uuid4(), uuid.uuid4(), "n", "d", "x")
    target = OutdialTarget(
        outdial.customer_id, outdial.id, "t", "", "", [TEL, None, TEL, None, None]
    )
    target.start_try(2)
    if deleted:
        outdial.delete()
        target.delete()
    outdial_record = shapes.outdial_record(shapes.outdial(outdial), str(outdial.customer_id))
    target_record = shapes.target_record(shapes.target(target), str(target.customer_id))
    assert shapes.platform_outdial(outdial_record) == shapes.platform_outdial(outdial)
    assert shapes.platform_target(target_record) == shapes.platform_target(target)
    assert shapes.outdial(outdial_record) == shapes.outdial(outdial)
    assert shapes.target(target_record) == shapes.target(target)


def test_an_address_leaves_its_empty_fields_out() -> None:
    assert shapes.platform_address(None) is None
    assert shapes.platform_address(TEL) == {"type": "tel", "target": "+15559876543"}
    full = {"type": "sip", "target": "a@b.c", "target_name": "A", "name": "N", "detail": "D"}
    assert shapes.platform_address(full) == full
