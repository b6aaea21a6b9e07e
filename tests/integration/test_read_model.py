"""The read model on both stores: paging with ties, rebuilds while commands write,
`--check`, and the upgrade of a store made by the previous version (306e7bf)."""

from __future__ import annotations

import asyncio
import io
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from services import upgrade
from services.command import outbox
from services.command.application import OutdialApplication
from services.gateway.http import list_body
from services.gateway.operations import Listing
from services.query import replay, schema
from services.query.queries import Queries
from services.query.writes import OutdialRow, TargetRow, write_rows
from services.store import (
    connect_postgres,
    parse_store_url,
    read_transaction,
    write_transaction,
)
from tests.expected import TEL
from tests.fixtures import Writer
from tests.integration.stack import running_stack

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data"


def fill(writer: Writer, outdials: int = 3, targets: int = 40) -> int:
    """Commands of every kind; returns the head position."""
    customer = str(uuid.uuid4())

    def send(**fields: Any) -> dict[str, Any]:
        reply = writer.send(customer, **fields)
        assert reply.status_code == 200, reply
        assert reply.data is not None
        return reply.data

    for n in range(outdials):
        o = send(type_="CreateOutdial", name=f"o{n}", detail="", data="")["id"]
        ids = [
            t["id"]
            for t in send(
                type_="AddTargets",
                outdial_id=o,
                targets=[
                    {
                        "name": f"t{i}",
                        "detail": "",
                        "data": "",
                        "destination_0": TEL,
                        "destination_3": {"type": "email", "target": "a@example.com"},
                    }
                    for i in range(targets)
                ],
            )["result"]
        ]
        for i, t in enumerate(ids[: targets // 2]):
            send(
                type_="MarkTargetProgressing",
                outdial_id=o,
                target_id=t,
                destination_index=0 if i % 2 else 3,
            )
            send(
                type_="UpdateTargetStatus",
                outdial_id=o,
                target_id=t,
                status="done" if i % 3 else "idle",
            )
        send(type_="DeleteTarget", outdial_id=o, target_id=ids[-1])
        send(type_="UpdateOutdial", outdial_id=o, name="renamed", detail="d")
        if n == 0:
            send(type_="DeleteOutdial", outdial_id=o)
    return writer.app.recorder.max_notification_id() or 0


@pytest.fixture
def writer(store_url: str) -> Any:
    w = Writer(store_url)
    yield w
    w.close()


@pytest.mark.parametrize("page_size", [1, 7, 25, 100])
def test_paging_breaks_ties_of_tm_create_by_id(writer: Writer, page_size: int) -> None:
    app = writer.app
    outdial = str(uuid.uuid4())
    stamps = ["2026-01-01 00:00:00.000001"] * 30 + ["2026-01-01 00:00:00.000002"] * 20
    rows = []
    for i, tm in enumerate(stamps):
        target_id = str(uuid.uuid4())
        body = orjson.dumps({"id": target_id}).decode()
        rows.append(
            TargetRow(
                target_id, outdial, "c", tm, int(i % 10 == 0), "idle", tm, 1, 0, 0, 0, 0, 0, body
            )
        )
    with write_transaction(app.recorder) as c:
        write_rows(c, app.store.dialect, [], rows)
    live = {r.id for r in rows if not r.deleted}
    queries = Queries(app.store)
    seen: list[str] = []
    after = None
    while True:
        page = queries.targets_page(outdial, after, page_size)
        body = orjson.loads(list_body(Listing.of_page("target", page, "c")))
        if not body["result"]:
            break
        seen += [item["id"] for item in body["result"]]
        tm, _, row_id = body["next_page_token"].partition("|")
        after = (tm, row_id or None)
    queries.close()
    assert len(seen) == len(set(seen))
    assert set(seen) == live  # deleted rows are left out, every live one comes once


@pytest.mark.parametrize("page_size", [1, 7, 25, 49, 50, 100])
def test_a_joined_page_is_the_page_of_rows(writer: Writer, page_size: int) -> None:
    """The HTTP API's page (the outdial and its targets in one statement, the bodies
    joined by the store) answers the same bytes and tokens as the page of rows,
    page after page, through ties of tm_create; for its customer only."""
    app = writer.app
    outdial, customer = str(uuid.uuid4()), str(uuid.uuid4())
    stamps = ["2026-01-01 00:00:00.000001"] * 30 + ["2026-01-01 00:00:00.000002"] * 20
    targets = []
    for i, tm in enumerate(stamps):
        target_id = str(uuid.uuid4())
        body = orjson.dumps({"id": target_id, "name": f't{i} é,"}}{{'}).decode()
        targets.append(
            TargetRow(
                target_id,
                outdial,
                customer,
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
                body,
            )
        )
    row = OutdialRow(outdial, customer, "c", '""', '""', '""', stamps[0], 0, "{}")
    with write_transaction(app.recorder) as c:
        write_rows(c, app.store.dialect, [row], targets)
    queries = Queries(app.store)
    try:
        assert queries.run(queries.targets_page_read(str(uuid.uuid4()), outdial, None, 5)) is None
        pages = 0
        after = None
        while True:
            expected = list_body(
                Listing.of_page("target", queries.targets_page(outdial, after, page_size), customer)
            )
            for caller in (customer, None):
                joined = queries.run(queries.targets_page_read(caller, outdial, after, page_size))
                assert joined is not None
                assert joined.customer_id == customer and not joined.deleted
                assert list_body(Listing.of_joined("target", joined)) == expected
            body = orjson.loads(expected)
            pages += 1
            if not body["result"]:
                break
            tm, _, row_id = body["next_page_token"].partition("|")
            after = (tm, row_id or None)
        assert pages == -(-45 // page_size) + 1  # 45 live targets, then an empty page
    finally:
        queries.close()


def test_a_rebuild_while_commands_write_loses_no_row(writer: Writer) -> None:
    """Commands write their rows into the live tables while the rebuild reads the
    log; what they stored meanwhile is brought over under the writers' lock."""
    fill(writer, outdials=2, targets=200)
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_writing() -> None:
        try:
            while not stop.is_set():
                fill(writer, outdials=1, targets=5)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        for _ in range(2):
            replay.rebuild(writer.app, out=io.StringIO())
    finally:
        stop.set()
        thread.join()
    assert errors == []
    comparison = replay.check(writer.app, out=io.StringIO())
    assert comparison.equal, comparison.differences
    assert comparison.position == writer.app.recorder.max_notification_id()
    assert comparison.rows > 400


def test_check_reports_a_corrupted_row_and_a_rebuild_mends_it(writer: Writer) -> None:
    fill(writer, outdials=1, targets=5)
    app = writer.app
    assert replay.check(app, out=io.StringIO()).equal
    d = app.store.dialect
    targets, outdials = d.table(schema.TARGETS), d.table(schema.OUTDIALS)
    with write_transaction(app.recorder) as c:
        c.execute(f"UPDATE {targets} SET body = '{{}}' WHERE id = (SELECT MIN(id) FROM {targets})")
        c.execute(f"DELETE FROM {outdials}")
    comparison = replay.check(app, out=io.StringIO())
    assert not comparison.equal
    assert any("live {} != rebuilt" in d for d in comparison.differences)
    assert any("missing from the live model" in d for d in comparison.differences)
    replay.rebuild(app, out=io.StringIO())
    assert replay.check(app, out=io.StringIO()).equal
    # A column a list filters on or a claim picks by, its body unchanged, differs too.
    with write_transaction(app.recorder) as c:
        c.execute(f"UPDATE {outdials} SET name = '\"changed\"'")
        first = f"(SELECT MIN(id) FROM {targets})"
        c.execute(f"UPDATE {targets} SET try_count_3 = 7 WHERE id = {first}")
    differences = replay.check(app, out=io.StringIO()).differences
    assert len(differences) == 2, differences
    assert any(": name: live '\"changed\"' != rebuilt '\"" in d for d in differences), differences
    assert any(": try_count_3: live 7 != rebuilt " in d for d in differences), differences
    replay.rebuild(app, out=io.StringIO())
    assert replay.check(app, out=io.StringIO()).equal


async def test_a_rebuild_during_reads_serves_every_read(store_url: str, tmp_path: Path) -> None:
    async with running_stack(store_url, tmp_path) as stack:
        writer = Writer(store_url)
        await asyncio.to_thread(fill, writer, 3, 300)
        token = stack.token()
        statuses: list[int] = []
        done = asyncio.Event()

        async def reader() -> None:
            while not done.is_set():
                status, _, _ = await stack.call("GET", "/v1.0/outdials", token)
                statuses.append(status)

        readers = [asyncio.create_task(reader()) for _ in range(3)]
        await asyncio.to_thread(replay.rebuild, stack.rt.app, out=io.StringIO())
        await asyncio.to_thread(fill, writer, 1, 10)  # commands go on, on the new tables
        done.set()
        await asyncio.gather(*readers)
        writer.close()
        assert statuses and set(statuses) == {200}
        comparison = await asyncio.to_thread(replay.check, stack.rt.app, out=io.StringIO())
        assert comparison.equal, comparison.differences


# ---- the upgrade of a store made by the previous version ---------------------


def old_store(store_url: str) -> None:
    """Make `store_url` the store 306e7bf left (tests/data): six targets, one claimed
    and done, one refused result, one deleted, its projector and relay at 16 of 20
    (receipts then were events of their own)."""
    store = parse_store_url(store_url)
    if store.kind == "sqlite":
        store.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / "store-306e7bf.sqlite3", store.path)
        return
    dump = (DATA / "store-306e7bf.postgres.sql").read_text()
    with connect_postgres(store) as conn:
        conn.execute(dump.replace("__SCHEMA__", store.schema))


OLD_OUTDIAL = "11111111-1111-4111-8111-111111111111"
OLD_TARGETS = [f"22222222-2222-4222-8222-22222222222{i}" for i in range(6)]
OLD_CUSTOMER = "5e4a0680-804e-11ec-8477-2fea5968d85b"
TEL_6 = {"type": "tel", "target": "+15559876543"}
EMAIL = {"type": "email", "target": "a@example.com"}


def test_a_store_of_the_previous_version_is_brought_up_to_date(store_url: str) -> None:
    old_store(store_url)
    err = io.StringIO()
    app = OutdialApplication(parse_store_url(store_url))
    upgrade.prepare(app, out=err)
    writer = Writer(store_url)
    try:
        # The read model was rebuilt (it had another layout, and was 4 events behind).
        assert "rebuilding it from the events" in err.getvalue()
        # Its bar counts what is replayed: 12 events, not the old receipts' 8.
        assert "12/12 events" in err.getvalue(), err.getvalue()
        assert replay.is_current(app)
        assert replay.check(app, out=io.StringIO()).equal
        queries = Queries(app.store)
        found = queries.outdial(OLD_CUSTOMER, OLD_OUTDIAL)
        assert found is not None and orjson.loads(found[0])["name"] == "renamed"
        target = queries.target(OLD_CUSTOMER, OLD_OUTDIAL, OLD_TARGETS[1])
        assert target is not None and orjson.loads(target)["status"] == "progressing"
        queries.close()

        # Receipts moved: the same message answers its first reply, position included.
        def again(message_id: str, **fields: Any) -> Any:
            return writer.send(OLD_CUSTOMER, message_id=message_id, **fields)

        added = again(
            "m-add",
            type_="AddTargets",
            outdial_id=OLD_OUTDIAL,
            targets=[
                {
                    "id": t,
                    "name": f"t{i}",
                    "detail": "",
                    "data": "",
                    "destination_0": TEL_6,
                    "destination_2": EMAIL,
                }
                for i, t in enumerate(OLD_TARGETS)
            ],
        )
        assert added.status_code == 200 and added.position == 9  # its receipt, then
        assert [t["id"] for t in added.data["result"]] == OLD_TARGETS
        refused = again(
            "m-refused",
            type_="UpdateTargetStatus",
            outdial_id=OLD_OUTDIAL,
            target_id=OLD_TARGETS[1],
            status="done",
        )
        assert refused.status_code == 409
        assert refused.error["code"] == "target_not_progressing"
        assert app.recorder.max_notification_id() == 20  # neither stored anything

        # The outbox holds what the old relay had not published: events 17 and 19
        # (the outdial's also as the platform's event and webhook, CONTRACT 8).
        with read_transaction(app.recorder) as c:
            rows = outbox.page(c, app.store.dialect, 0, 100)
        assert [(r.position, r.exchange, r.routing_key) for r in rows] == [
            (17, "outdial.events", "outdialtarget_updated"),
            (19, "outdial.events", "outdial_updated"),
            (19, "bin-manager.outdial-manager.event", ""),
            (19, "", "bin-manager.webhook-manager.request"),
        ]
        assert orjson.loads(rows[1].body)["data"]["name"] == "renamed"

        # Nothing of it is done twice by the next process.
        again_err = io.StringIO()
        upgrade.prepare(app, out=again_err)
        assert again_err.getvalue() == ""
    finally:
        writer.close()
        app.close()
