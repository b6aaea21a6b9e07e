"""The store adapter's own queries, on both stores."""

from __future__ import annotations

import uuid

import orjson
import pytest

from services.command.application import OutdialApplication
from services.command.handlers import handle
from shared.commands import parse_command
from shared.store import existing_originators, notification_id_of

pytestmark = pytest.mark.integration


def test_which_aggregates_exist_and_where_an_event_stands(store_url: str) -> None:
    app = OutdialApplication.from_url(store_url)
    customer = str(uuid.uuid4())
    created = []
    for _ in range(3):
        body = {
            "type": "CreateOutdial",
            "customer_id": customer,
            "name": "",
            "detail": "",
            "data": "",
        }
        reply = handle(parse_command(orjson.dumps(body)), None, app)
        created.append((uuid.UUID(reply.data["id"]), reply.position))  # type: ignore[index]
    absent = [uuid.uuid4(), uuid.uuid4()]
    ids = [i for i, _ in created]
    assert existing_originators(app.recorder, ids + absent) == set(ids)
    assert existing_originators(app.recorder, absent) == set()
    assert existing_originators(app.recorder, []) == set()
    for aggregate_id, position in created:
        assert notification_id_of(app.recorder, aggregate_id, 1) == position
    assert notification_id_of(app.recorder, absent[0], 1) is None
    app.close()
