"""The read model's paging on both stores, where many rows share one tm_create."""

from __future__ import annotations

import uuid

import orjson
import pytest

from services.command.application import OutdialApplication
from services.query.api import list_body
from services.query.read_model import PostgresReadModel, SQLiteReadModel

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("page_size", [1, 7, 25, 100])
def test_paging_breaks_ties_of_tm_create_by_id(store_url: str, page_size: int) -> None:
    app = OutdialApplication.from_url(store_url)
    cls = SQLiteReadModel if store_url.startswith("sqlite") else PostgresReadModel
    rm = app.factory.tracking_recorder(cls)
    rm.create_views()
    outdial = str(uuid.uuid4())
    stamps = ["2026-01-01 00:00:00.000001"] * 30 + ["2026-01-01 00:00:00.000002"] * 20
    rows = []
    for i, tm in enumerate(stamps):
        target_id = str(uuid.uuid4())
        rows.append(
            (
                target_id,
                outdial,
                "c",
                tm,
                int(i % 10 == 0),
                "idle",
                tm,
                1,
                0,
                0,
                0,
                0,
                0,
                orjson.dumps({"id": target_id}).decode(),
            )
        )
    rm.write([], rows, 1)
    live = {r[0] for r in rows if not r[4]}

    seen: list[str] = []
    after = None
    while True:
        page = rm.targets_page(outdial, after, page_size)
        body = orjson.loads(list_body(page))
        if not body["result"]:
            break
        seen += [item["id"] for item in body["result"]]
        tm, _, row_id = body["next_page_token"].partition("|")
        after = (tm, row_id or None)
    assert len(seen) == len(set(seen))
    assert set(seen) == live  # deleted rows are left out, every live one comes once
    app.close()
