"""Handlers and the unit of work, on a real store (an SQLite file of the test's own,
with the read model the claims take their candidates from), without a broker."""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from services import upgrade
from services.command.application import OutdialApplication
from services.command.domain import Outdial, OutdialTarget
from services.command.handlers import Incoming, Reply, handle, handle_group
from services.command.receipts import RECEIPTS
from services.command.unit_of_work import CandidateFinder, UnitOfWork
from services.query.queries import Queries
from services.query.writes import ReadModelWriter
from services.store import parse_store_url, read_transaction
from shared.commands import parse_command
from tests.expected import BUS_OUTDIAL_KEYS, BUS_TARGET_KEYS, NEVER, TEL


class Harness:
    """The command side's application and unit of work, as bootstrap wires them;
    `candidates` may be replaced to play a read model that lags."""

    def __init__(self, path: Path):
        store = parse_store_url(f"sqlite:///{path}/outdial.sqlite3")
        self.app = OutdialApplication(store)
        upgrade.prepare(self.app, out=io.StringIO())
        self.queries = Queries(store)
        self.candidates: CandidateFinder = self.queries.claim_candidates
        self.recorder = self.app.recorder
        self.repository = self.app.repository

    def new_uow(self) -> UnitOfWork:
        return UnitOfWork(
            self.app,
            candidates=lambda *args: self.candidates(*args),
            read_model=ReadModelWriter(),
        )

    def receipts(self) -> int:
        with read_transaction(self.app.recorder) as c:
            c.execute(f"SELECT COUNT(*) FROM {RECEIPTS}")
            return int(c.fetchone()[0])


@pytest.fixture
def app(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


class Customer:
    """Sends commands as one customer, each with a fresh message_id unless given."""

    def __init__(self, app: Harness):
        self.app = app
        self.id = str(uuid.uuid4())

    def send(self, type_: str, message_id: str | None = "", **fields: Any) -> Reply:
        body = orjson.dumps({"type": type_, "customer_id": self.id, **fields})
        if message_id == "":
            message_id = str(uuid.uuid4())
        return handle(Incoming(parse_command(body), message_id), self.app.new_uow)

    def outdial(self, **fields: Any) -> str:
        r = self.send(
            "CreateOutdial",
            **{"name": "test outdial", "detail": "outdial for test use.", "data": "", **fields},
        )
        assert r.status_code == 200, r
        assert r.data is not None
        return str(r.data["id"])

    def target(self, outdial_id: str, **fields: Any) -> dict[str, Any]:
        r = self.send(
            "AddTarget",
            outdial_id=outdial_id,
            **{
                "name": "test destination 0",
                "detail": "test detatination 0 detail",
                "data": "test data",
                "destination_0": TEL,
                **fields,
            },
        )
        assert r.status_code == 200, r
        assert r.data is not None
        return r.data


def test_create_outdial_answers_the_tutorials_shape(app: Harness) -> None:
    c = Customer(app)
    r = c.send("CreateOutdial", name="test outdial", detail="outdial for test use.", data="")
    assert r.status_code == 200
    assert r.data is not None and r.position is not None and r.position > 0
    assert list(r.data) == BUS_OUTDIAL_KEYS
    assert r.data["campaign_id"] == "00000000-0000-0000-0000-000000000000"
    assert r.data["tm_update"] == NEVER and r.data["tm_delete"] == NEVER
    assert r.data["customer_id"] == c.id
    assert list(r.body()) == ["status_code", "data", "position"]


def test_add_target_answers_the_tutorials_shape(app: Harness) -> None:
    c = Customer(app)
    t = c.target(c.outdial())
    assert list(t) == BUS_TARGET_KEYS
    assert t["destination_0"] == {
        "type": "tel",
        "target": "+15559876543",
        "target_name": "",
        "name": "",
        "detail": "",
    }
    assert t["destination_1"] is None
    assert t["status"] == "idle"
    assert t["tm_update"] == t["tm_create"] != NEVER
    assert t["tm_delete"] == NEVER


def test_the_same_message_id_twice_has_one_effect_and_equal_replies(
    app: Harness,
) -> None:
    c = Customer(app)
    outdial_id = c.outdial()
    fields = {"outdial_id": outdial_id, "name": "x", "detail": "", "data": "", "destination_0": TEL}
    first = c.send("AddTarget", message_id="m-1", **fields)
    events_before = app.recorder.max_notification_id()
    second = c.send("AddTarget", message_id="m-1", **fields)
    assert second == first
    assert app.recorder.max_notification_id() == events_before


def test_a_redelivered_refusal_is_refused_again_even_if_state_changed(
    app: Harness,
) -> None:
    c = Customer(app)
    missing = str(uuid.uuid4())
    first = c.send("UpdateOutdialData", message_id="m-2", outdial_id=missing, data="x")
    assert first.status_code == 404
    c.outdial(id=missing)
    assert c.send("UpdateOutdialData", message_id="m-2", outdial_id=missing, data="x") == first


def test_message_ids_are_scoped_to_the_customer(app: Harness) -> None:
    a, b = Customer(app), Customer(app)
    ra = a.send("CreateOutdial", message_id="same", name="a", detail="", data="")
    rb = b.send("CreateOutdial", message_id="same", name="b", detail="", data="")
    assert ra.data is not None and rb.data is not None
    assert ra.data["id"] != rb.data["id"]
    assert rb.data["customer_id"] == b.id


def test_another_customers_outdial_is_not_found(app: Harness) -> None:
    owner, other = Customer(app), Customer(app)
    outdial_id = owner.outdial()
    target_id = owner.target(outdial_id)["id"]
    for type_, fields in [
        ("UpdateOutdial", {"name": "x", "detail": "y"}),
        ("UpdateOutdialCampaign", {"campaign_id": str(uuid.uuid4())}),
        ("UpdateOutdialData", {"data": "x"}),
        ("DeleteOutdial", {}),
        ("AddTarget", {"name": "", "detail": "", "data": "", "destination_0": TEL}),
        ("AddTargets", {"targets": [{"name": "", "detail": "", "data": "", "destination_0": TEL}]}),
        ("DeleteTarget", {"target_id": target_id}),
        ("MarkTargetProgressing", {"target_id": target_id, "destination_index": 0}),
        ("UpdateTargetStatus", {"target_id": target_id, "status": "done"}),
    ]:
        r = other.send(type_, outdial_id=outdial_id, **fields)
        assert r.status_code == 404, type_
        assert r.error is not None and r.error["code"] == "outdial_not_found"
    assert (
        owner.send("UpdateOutdialData", outdial_id=outdial_id, data="still mine").status_code == 200
    )


def test_a_target_of_another_outdial_is_not_found(app: Harness) -> None:
    c = Customer(app)
    first, second = c.outdial(), c.outdial()
    target_id = c.target(first)["id"]
    r = c.send("DeleteTarget", outdial_id=second, target_id=target_id)
    assert r.status_code == 404
    assert r.error == {"code": "target_not_found", "message": f"target {target_id} not found"}


def test_updates_of_an_outdial(app: Harness) -> None:
    c = Customer(app)
    outdial_id = c.outdial()
    campaign = str(uuid.uuid4())
    r = c.send("UpdateOutdial", outdial_id=outdial_id, name="renamed", detail="again")
    assert r.data is not None and (r.data["name"], r.data["detail"]) == ("renamed", "again")
    assert r.data["tm_update"] != NEVER
    r = c.send("UpdateOutdialCampaign", outdial_id=outdial_id, campaign_id=campaign)
    assert r.data is not None and r.data["campaign_id"] == campaign
    r = c.send("UpdateOutdialData", outdial_id=outdial_id, data="payload")
    assert r.data is not None and r.data["data"] == "payload"
    assert r.data["name"] == "renamed"


def test_deleting_an_outdial_is_soft_and_final(app: Harness) -> None:
    c = Customer(app)
    outdial_id = c.outdial()
    target_id = c.target(outdial_id)["id"]
    r = c.send("DeleteOutdial", outdial_id=outdial_id)
    assert r.status_code == 200 and r.data is not None
    assert r.data["tm_delete"] != NEVER and r.data["tm_update"] == r.data["tm_delete"]
    assert c.send("DeleteOutdial", outdial_id=outdial_id).status_code == 404
    assert c.send("UpdateOutdial", outdial_id=outdial_id, name="", detail="").status_code == 404
    # Its targets go with it.
    r = c.send("UpdateTargetStatus", outdial_id=outdial_id, target_id=target_id, status="done")
    assert r.status_code == 404
    assert isinstance(app.repository.get(uuid.UUID(outdial_id)), Outdial)


def test_deleting_a_target(app: Harness) -> None:
    c = Customer(app)
    outdial_id = c.outdial()
    target_id = c.target(outdial_id)["id"]
    r = c.send("DeleteTarget", outdial_id=outdial_id, target_id=target_id)
    assert r.data is not None and r.data["tm_delete"] != NEVER
    for type_, fields in [
        ("DeleteTarget", {}),
        ("MarkTargetProgressing", {"destination_index": 0}),
        ("UpdateTargetStatus", {"status": "idle"}),
    ]:
        r = c.send(type_, outdial_id=outdial_id, target_id=target_id, **fields)
        assert r.status_code == 404, type_
        assert r.error is not None and r.error["code"] == "target_not_found"


def test_progressing_then_result(app: Harness) -> None:
    c = Customer(app)
    outdial_id = c.outdial()
    target_id = c.target(outdial_id)["id"]
    ids = {"outdial_id": outdial_id, "target_id": target_id}
    r = c.send("MarkTargetProgressing", destination_index=0, **ids)
    assert r.data is not None and (r.data["status"], r.data["try_count_0"]) == ("progressing", 1)
    r = c.send("MarkTargetProgressing", destination_index=0, **ids)
    assert r.status_code == 409
    assert r.error is not None and r.error["code"] == "target_progressing"
    r = c.send("UpdateTargetStatus", status="done", **ids)
    assert r.data is not None and r.data["status"] == "done"
    assert r.data["try_count_0"] == 1
    r = c.send("UpdateTargetStatus", status="idle", **ids)
    assert r.status_code == 409
    assert r.error is not None and r.error["code"] == "target_not_progressing"


def test_add_targets_is_all_or_none(app: Harness) -> None:
    c = Customer(app)
    outdial_id = c.outdial()
    taken = c.target(outdial_id)["id"]
    before = app.recorder.max_notification_id()
    items = [{"name": str(i), "detail": "", "data": "", "destination_0": TEL} for i in range(5)]
    items[3]["id"] = taken
    receipts = app.receipts()
    r = c.send("AddTargets", outdial_id=outdial_id, targets=items)
    assert r.status_code == 409
    assert r.error is not None and r.error["code"] == "target_exists"
    # Only the receipt of the refusal was stored: no event.
    assert app.recorder.max_notification_id() == before
    assert app.receipts() == receipts + 1
    del items[3]["id"]
    r = c.send("AddTargets", outdial_id=outdial_id, targets=items)
    assert r.status_code == 200 and r.data is not None
    assert [t["name"] for t in r.data["result"]] == ["0", "1", "2", "3", "4"]
    for t in r.data["result"]:
        assert isinstance(app.repository.get(uuid.UUID(t["id"])), OutdialTarget)


def test_an_existing_id_is_a_conflict(app: Harness) -> None:
    c = Customer(app)
    outdial_id = c.outdial()
    r = c.send("CreateOutdial", id=outdial_id, name="", detail="", data="")
    assert r.status_code == 409
    assert r.error is not None and r.error["code"] == "outdial_exists"


def test_a_command_without_message_id_is_applied_without_receipt(app: Harness) -> None:
    c = Customer(app)
    r = c.send("CreateOutdial", message_id=None, name="", detail="", data="")
    assert r.status_code == 200
    assert app.receipts() == 0


def test_claims_hand_out_each_target_once_least_recently_updated_first(
    app: Harness,
) -> None:
    c = Customer(app)
    outdial_id = c.outdial()
    gap = {"destination_0": None, "destination_2": TEL}
    first = c.target(outdial_id)["id"]
    second = c.target(outdial_id, **gap)["id"]
    most = {f"max_try_count_{i}": 1 for i in range(5)}
    r = c.send("ClaimNextTarget", outdial_id=outdial_id, **most)
    assert r.status_code == 200 and r.data is not None
    assert list(r.data) == ["target", "destination_index", "destination"]
    assert (r.data["target"]["id"], r.data["destination_index"]) == (first, 0)
    assert r.data["destination"] == {
        "type": "tel",
        "target": "+15559876543",
        "target_name": "",
        "name": "",
        "detail": "",
    }
    assert r.data["target"]["status"] == "progressing"
    assert r.data["target"]["try_count_0"] == 1
    r = c.send("ClaimNextTarget", outdial_id=outdial_id, **most)
    assert r.data is not None
    assert (r.data["target"]["id"], r.data["destination_index"]) == (second, 2)  # the gap skipped
    r = c.send("ClaimNextTarget", outdial_id=outdial_id, **most)
    assert r.status_code == 404
    assert r.error is not None and r.error["code"] == "no_available_target"
    # A failed try returns the target; with its one try used it is exhausted.
    ids = {"outdial_id": outdial_id, "target_id": first}
    assert c.send("UpdateTargetStatus", status="idle", **ids).status_code == 200
    assert c.send("ClaimNextTarget", outdial_id=outdial_id, **most).status_code == 404
    r = c.send("ClaimNextTarget", outdial_id=outdial_id, **{**most, "max_try_count_0": 2})
    assert r.data is not None and r.data["target"]["id"] == first
    assert r.data["target"]["try_count_0"] == 2


def test_claims_respect_zero_maxima_intervals_and_deletion(app: Harness) -> None:
    c = Customer(app)
    outdial_id = c.outdial()
    target_id = c.target(outdial_id)["id"]
    none = {f"max_try_count_{i}": 0 for i in range(5)}
    r = c.send("ClaimNextTarget", outdial_id=outdial_id, **none)
    assert r.status_code == 404  # a destination with max 0 is never tried
    one = {**none, "max_try_count_0": 5}
    r = c.send("ClaimNextTarget", outdial_id=outdial_id, try_interval_ms=60_000, **one)
    assert r.status_code == 200  # never tried: the interval does not hold it back
    ids = {"outdial_id": outdial_id, "target_id": target_id}
    assert c.send("UpdateTargetStatus", status="idle", **ids).status_code == 200
    r = c.send("ClaimNextTarget", outdial_id=outdial_id, try_interval_ms=60_000, **one)
    assert r.status_code == 404  # tried less than a minute ago
    assert c.send("ClaimNextTarget", outdial_id=outdial_id, **one).status_code == 200
    c.send("UpdateTargetStatus", status="idle", **ids)
    c.send("DeleteTarget", outdial_id=outdial_id, target_id=target_id)
    assert c.send("ClaimNextTarget", outdial_id=outdial_id, **one).status_code == 404
    c.target(outdial_id)
    c.send("DeleteOutdial", outdial_id=outdial_id)
    r = c.send("ClaimNextTarget", outdial_id=outdial_id, **one)
    assert r.status_code == 404
    assert r.error is not None and r.error["code"] == "outdial_not_found"


def test_a_read_model_lagging_by_many_claims_is_paged_through(
    app: Harness,
) -> None:
    """More stale candidates than one page: the claim reads on, it does not give up."""
    c = Customer(app)
    outdial_id = c.outdial()
    ids = [c.target(outdial_id)["id"] for _ in range(60)]
    most = {f"max_try_count_{i}": 1 for i in range(5)}
    snapshot = app.candidates(uuid.UUID(outdial_id), [1] * 5, None, 100, 0)
    app.candidates = lambda outdial, m, cutoff, limit, offset: snapshot[offset:][:limit]
    claimed = [c.send("ClaimNextTarget", outdial_id=outdial_id, **most) for _ in range(60)]
    assert sorted(r.data["target"]["id"] for r in claimed if r.data) == sorted(ids)
    assert c.send("ClaimNextTarget", outdial_id=outdial_id, **most).status_code == 404


def test_a_stale_candidate_is_checked_against_its_aggregate(app: Harness) -> None:
    """The read model may lag: a candidate it still shows idle is taken already."""
    c = Customer(app)
    outdial_id = c.outdial()
    taken = c.target(outdial_id)["id"]
    free = c.target(outdial_id)["id"]
    c.send("MarkTargetProgressing", outdial_id=outdial_id, target_id=taken, destination_index=0)
    stale = [uuid.UUID(taken), uuid.UUID(free)]
    app.candidates = lambda outdial, most, cutoff, limit, offset: stale[offset:][:limit]
    most = {f"max_try_count_{i}": 3 for i in range(5)}
    r = c.send("ClaimNextTarget", outdial_id=outdial_id, **most)
    assert r.data is not None and r.data["target"]["id"] == free


def parsed(customer: str, **fields: Any) -> Any:
    return parse_command(orjson.dumps({"customer_id": customer, **fields}))


def test_a_group_is_stored_at_once_each_command_seeing_the_ones_before(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="outdial")
    c = Customer(app)
    outdial_id = str(uuid.uuid4())
    target_id = str(uuid.uuid4())
    ids = {"outdial_id": outdial_id, "target_id": target_id}
    group = [
        Incoming(
            parsed(c.id, type="CreateOutdial", id=outdial_id, name="", detail="", data=""), "g1"
        ),
        Incoming(
            parsed(
                c.id,
                type="AddTarget",
                outdial_id=outdial_id,
                id=target_id,
                name="",
                detail="",
                data="",
                destination_0=TEL,
            ),
            "g2",
        ),
        Incoming(parsed(c.id, type="MarkTargetProgressing", destination_index=0, **ids), "g3"),
        Incoming(parsed(c.id, type="MarkTargetProgressing", destination_index=0, **ids), "g4"),
        Incoming(parsed(c.id, type="UpdateTargetStatus", status="done", **ids), None),
    ]
    before = app.recorder.max_notification_id() or 0
    replies = handle_group(group, app.new_uow)
    assert [r.status_code for r in replies] == [200, 200, 200, 409, 200]  # type: ignore[union-attr]
    positions = [r.position for r in replies]  # type: ignore[union-attr]
    assert positions[3] is None  # a refusal has none
    assert before < positions[0] < positions[1] < positions[2] < positions[4]  # type: ignore[operator]
    assert replies[4].data["status"] == "done"  # type: ignore[union-attr,index]
    # Each reply is what the same message answers again, position included.
    for incoming, reply in zip(group[:4], replies[:4], strict=True):
        assert handle(incoming, app.new_uow) == reply
    target = app.repository.get(uuid.UUID(target_id))
    assert (target.status, target.try_counts[0]) == ("done", 1)
    # In one transaction (not one by one after a failure), the outdial and target
    # created by it inserted once, as its last command left them.
    assert "group commit failed" not in caplog.text
    body = app.queries.target(c.id, outdial_id, target_id)
    assert body is not None
    assert (orjson.loads(body)["status"], orjson.loads(body)["try_count_0"]) == ("done", 1)
    assert app.queries.outdial(c.id, outdial_id) is not None


def test_a_group_with_a_message_twice_goes_one_by_one(app: Harness) -> None:
    c = Customer(app)
    create = parsed(c.id, type="CreateOutdial", name="", detail="", data="")
    first, second = handle_group([Incoming(create, "same"), Incoming(create, "same")], app.new_uow)
    assert first == second
    topics = [n.topic for n in app.recorder.select_notifications(start=None, limit=100)]
    assert sum(t.endswith("Outdial.Created") for t in topics) == 1


def test_an_add_targets_keeps_only_its_ids_and_answers_a_resend_equally(
    app: Harness,
) -> None:
    """An AddTargets' reply is not kept in its receipt (up to 16 MB a command, kept
    forever beside the targets' own events and rows); its re-send is rendered again
    from the targets' first events, equal to the first reply."""
    c = Customer(app)
    outdial_id = c.outdial()
    targets = [{"name": f"t{i}", "detail": "", "data": "d", "destination_0": TEL} for i in range(3)]
    first = c.send("AddTargets", message_id="batch", outdial_id=outdial_id, targets=targets)
    assert first.status_code == 200 and first.data is not None
    with read_transaction(app.app.recorder) as cursor:
        cursor.execute(f"SELECT body, created_ids FROM {RECEIPTS}")
        kept = {row[0]: row[1] for row in cursor.fetchall()}
    ids = [t["id"] for t in first.data["result"]]
    ids_only = [created for body, created in kept.items() if body is None]
    assert len(ids_only) == 1 and orjson.loads(ids_only[0]) == ids
    # Changed since: the re-send still answers the targets as the command made them.
    assert c.send("DeleteTarget", outdial_id=outdial_id, target_id=ids[0]).status_code == 200
    assert c.send("AddTargets", message_id="batch", outdial_id=outdial_id, targets=targets) == first
