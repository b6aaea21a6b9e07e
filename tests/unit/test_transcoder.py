"""The orjson transcoder writes exactly what eventsourcing's JSONTranscoder writes,
and reads back what it reads."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)

from services.command.application import OutdialApplication
from services.command.transcoder import OrjsonTranscoder


class Colour(enum.StrEnum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


def registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


STATES: list[Any] = [
    {},
    {
        "timestamp": datetime(2026, 11, 27, 19, 3, 48, 123456, tzinfo=UTC),
        "customer_id": uuid.UUID("306c6187-bf01-403d-89bb-112d10284dc5"),
        "name": 't1 \u00e9\u4e2d\U0001f600 "quoted" \\ \n\t',
        "detail": "",
        "data": "x" * 70_000,
        "destinations": [
            {"type": "tel", "target": "+15551234567", "target_name": "", "name": "", "detail": ""},
            None,
            None,
        ],
        "try_counts": (0, 1, 2),
        "originator_topic": "services.command.domain:OutdialTarget",
    },
    {
        "nested": {"deeper": [uuid.uuid4(), {"at": datetime.now(timezone(timedelta(hours=-5)))}]},
        "amount": Decimal("12.50"),
        "flags": [True, False, None, 0, -7, 2**40],
        "colour": Colour.RED,
        "size": Size.BIG,
        "_type_": "not a tag: three keys",
        "_data_": 1,
        "x": 1,
    },
]


@pytest.mark.parametrize("state", STATES, ids=range(len(STATES)))
def test_the_same_bytes_and_values_as_the_json_transcoder(state: Any) -> None:
    ours, theirs = registered(OrjsonTranscoder()), registered(JSONTranscoder())
    encoded = ours.encode(state)
    assert encoded == theirs.encode(state)
    assert ours.decode(encoded) == theirs.decode(encoded)


def test_a_type_without_a_transcoding_is_refused_as_by_the_json_transcoder() -> None:
    with pytest.raises(TranscodingNotRegisteredError):
        registered(OrjsonTranscoder()).encode({"when": object()})
    with pytest.raises(TranscodingNotRegisteredError):
        registered(OrjsonTranscoder()).decode(b'{"_type_":"unknown","_data_":1}')


def test_the_application_stores_with_it(tmp_path: Any) -> None:
    app = OutdialApplication.from_url(f"sqlite:///{tmp_path}/outdial.sqlite3")
    assert isinstance(app.mapper.transcoder, OrjsonTranscoder)
