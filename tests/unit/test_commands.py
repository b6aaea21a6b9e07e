"""Parsing message bodies into the command union (CONTRACT 3)."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shared.commands import (
    AddTarget,
    AddTargets,
    CreateOutdial,
    InvalidCommand,
    UpdateTargetStatus,
    parse_command,
    sender_said,
)

CUSTOMER = str(uuid.uuid4())
OUTDIAL = str(uuid.uuid4())
TEL = {"type": "tel", "target": "+15559876543"}


def body(**fields: Any) -> bytes:
    return orjson.dumps({"customer_id": CUSTOMER, **fields})


def target(**fields: Any) -> dict[str, Any]:
    return {"name": "t", "detail": "", "data": "", "destination_0": TEL, **fields}


def invalid(raw: bytes | str) -> InvalidCommand:
    with pytest.raises(InvalidCommand) as e:
        parse_command(raw)
    return e.value


def test_parses_the_tutorials_create_outdial() -> None:
    cmd = parse_command(
        body(type="CreateOutdial", name="test outdial", detail="outdial for test use.", data="")
    )
    assert isinstance(cmd, CreateOutdial)
    assert cmd.name == "test outdial"
    assert cmd.campaign_id == uuid.UUID(int=0)
    assert cmd.id is None


def test_parses_the_tutorials_add_target() -> None:
    cmd = parse_command(
        body(type="AddTarget", outdial_id=OUTDIAL, **target(name="test destination 0"))
    )
    assert isinstance(cmd, AddTarget)
    assert cmd.destination_0 is not None and cmd.destination_0.target == "+15559876543"
    assert cmd.destinations[1:] == (None, None, None, None)


def test_a_gap_in_destinations_is_allowed() -> None:
    cmd = parse_command(
        body(type="AddTarget", outdial_id=OUTDIAL, **target(destination_0=None, destination_2=TEL))
    )
    assert isinstance(cmd, AddTarget)
    assert [d is not None for d in cmd.destinations] == [False, False, True, False, False]


def test_a_target_needs_a_destination() -> None:
    e = invalid(body(type="AddTarget", outdial_id=OUTDIAL, **target(destination_0=None)))
    assert not e.unparseable
    assert "at least one destination" in e.message


def test_a_bad_destination_is_located_by_field() -> None:
    bad = {"type": "tel", "target": "+1 555 987 6543"}
    e = invalid(body(type="AddTarget", outdial_id=OUTDIAL, **target(destination_0=bad)))
    assert [d["loc"] for d in e.details] == ["destination_0.target"]
    assert not e.unparseable


def test_a_bad_destination_inside_add_targets_is_located_by_index() -> None:
    bad = {"type": "sip", "target": "nobody"}
    raw = body(type="AddTargets", outdial_id=OUTDIAL, targets=[target(), target(destination_3=bad)])
    e = invalid(raw)
    assert [d["loc"] for d in e.details] == ["targets.1.destination_3.target"]


@pytest.mark.parametrize(("count", "ok"), [(0, False), (1, True), (1000, True), (1001, False)])
def test_add_targets_takes_1_to_1000(count: int, ok: bool) -> None:
    raw = body(type="AddTargets", outdial_id=OUTDIAL, targets=[target()] * count)
    if ok:
        cmd = parse_command(raw)
        assert isinstance(cmd, AddTargets)
        assert len(cmd.targets) == count
    else:
        assert [d["loc"] for d in invalid(raw).details] == ["targets"]


def test_add_targets_refuses_a_repeated_id() -> None:
    same = str(uuid.uuid4())
    e = invalid(
        body(type="AddTargets", outdial_id=OUTDIAL, targets=[target(id=same), target(id=same)])
    )
    assert "share an id" in e.message


@pytest.mark.parametrize(("field", "limit"), [("name", 1024), ("detail", 1024), ("data", 65536)])
def test_text_limits(field: str, limit: int) -> None:
    fields = {"name": "", "detail": "", "data": ""}
    parse_command(body(type="CreateOutdial", **{**fields, field: "x" * limit}))
    e = invalid(body(type="CreateOutdial", **{**fields, field: "x" * (limit + 1)}))
    assert [d["loc"] for d in e.details] == [field]


def test_required_fields_are_named() -> None:
    e = invalid(body(type="CreateOutdial", name="n"))
    assert sorted(d["loc"] for d in e.details) == ["data", "detail"]


def test_customer_id_is_required_and_a_uuid() -> None:
    e = invalid(orjson.dumps({"type": "DeleteOutdial", "outdial_id": OUTDIAL}))
    assert [d["loc"] for d in e.details] == ["customer_id"]
    e = invalid(orjson.dumps({"type": "DeleteOutdial", "outdial_id": OUTDIAL, "customer_id": "x"}))
    assert [d["loc"] for d in e.details] == ["customer_id"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'"CreateOutdial"',
        b"{}",
        b'{"type": "LaunchMissiles"}',
        b'{"type": 5}',
        b"[" * 100_000,
        b"",
    ],
)
def test_unparseable_messages(raw: bytes) -> None:
    assert invalid(raw).unparseable


@pytest.mark.parametrize(
    "fields",
    [
        {"name": 5, "detail": "", "data": ""},  # a number where a string belongs
        {"name": None, "detail": "", "data": ""},
        {"name": ["x"], "detail": "", "data": ""},
    ],
)
def test_wrong_types_are_invalid_but_parseable(fields: dict[str, Any]) -> None:
    e = invalid(body(type="CreateOutdial", **fields))
    assert not e.unparseable
    assert [d["loc"] for d in e.details] == ["name"]


def test_status_must_be_idle_or_done() -> None:
    base = {"type": "UpdateTargetStatus", "outdial_id": OUTDIAL, "target_id": OUTDIAL}
    assert isinstance(parse_command(body(**base, status="done")), UpdateTargetStatus)
    e = invalid(body(**base, status="progressing"))
    assert [d["loc"] for d in e.details] == ["status"]


@pytest.mark.parametrize("index", [-1, 5, True, "0"])
def test_destination_index_is_0_to_4(index: object) -> None:
    raw = body(
        type="MarkTargetProgressing", outdial_id=OUTDIAL, target_id=OUTDIAL, destination_index=index
    )
    assert [d["loc"] for d in invalid(raw).details] == ["destination_index"]


def test_unknown_fields_are_ignored() -> None:
    cmd = parse_command(body(type="DeleteOutdial", outdial_id=OUTDIAL, __proto__={"x": 1}))
    assert cmd.type == "DeleteOutdial"


def test_claim_next_target_needs_every_max_try_count() -> None:
    base = {"type": "ClaimNextTarget", "outdial_id": OUTDIAL}
    counts = {f"max_try_count_{i}": 3 for i in range(5)}
    cmd = parse_command(body(**base, **{**counts, "max_try_count_4": 2_000_000}))
    assert cmd.type == "ClaimNextTarget"
    e = invalid(body(**base, **{k: v for k, v in counts.items() if k != "max_try_count_2"}))
    assert [d["loc"] for d in e.details] == ["max_try_count_2"]
    e = invalid(body(**base, **counts, try_interval_ms=10**15))
    assert [d["loc"] for d in e.details] == ["try_interval_ms"]


def test_every_address_type_of_the_platform_makes_a_target() -> None:
    some = str(uuid.uuid4())
    destinations = [
        {"type": "whatsapp", "target": "+821012345678"},
        {"type": "ai", "target": some},
        {"type": "ai_team", "target": some},
        {"type": "webchat", "target": "widget-1"},
        {"type": "line", "target": "U4af4980629f1e2d3c4b5a69788796a5b"},
    ]
    targets = [target(destination_0=d) for d in destinations]
    cmd = parse_command(body(type="AddTargets", outdial_id=OUTDIAL, targets=targets))
    assert isinstance(cmd, AddTargets)
    assert [t.destination_0.type for t in cmd.targets if t.destination_0] == [
        d["type"] for d in destinations
    ]


def test_an_empty_destination_is_no_destination_on_the_bus() -> None:
    # `{}` is absent only on the platform's envelope (VoIPbin's api-manager sends it
    # so); a command says what it means: null, or an address.
    e = invalid(body(type="AddTarget", outdial_id=OUTDIAL, **target(destination_1={})))
    assert {d["loc"] for d in e.details} == {"destination_1.type", "destination_1.target"}


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b'{"type": "Nope", "customer_id": "x"}', ("x", "Nope")),  # an unknown type
        (body(type="AddTarget", name=""), (CUSTOMER, "AddTarget")),  # a known one, invalid
        (b'{"type": "' + b"T" * 500 + b'"}', (None, "T" * 100)),  # a sender\'s text, cut
        (b'{"type": 5, "customer_id": ["x"]}', (None, None)),  # no text
        (b"[]", (None, None)),
        (b"{not json", (None, None)),
        (b"\xff\xfe", (None, None)),
    ],
)
def test_sender_said_is_the_type_and_customer_a_body_names(
    raw: bytes, said: tuple[str | None, str | None]
) -> None:
    """What `dead-letters list` shows of a message, and the consumer's log says."""
    assert sender_said(raw) == said
