"""Every command of CONTRACT 3 over the real RabbitMQ, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest

from services.command.handlers import Incoming, handle
from services.command.receipts import command_digest
from services.dead_letters import DeadLetter
from shared.client import OutdialClient
from shared.commands import parse_command
from tests.expected import BUS_OUTDIAL_KEYS, BUS_TARGET_KEYS, NEVER, TEL, TIMESTAMP
from tests.fixtures import CommandSide, dead_letters

pytestmark = pytest.mark.integration


def topics(service: CommandSide) -> Counter[str]:
    """How many events of each type the store holds, e.g. {'OutdialTarget.Created': 3}."""
    notifications = service.app.recorder.select_notifications(start=None, limit=10**9)
    return Counter(n.topic.rsplit(":", 1)[1] for n in notifications)


class As:
    """A customer sending commands over the bus."""

    def __init__(self, client: OutdialClient, customer_id: str | None = None):
        self.client = client
        self.customer_id = customer_id or str(uuid.uuid4())

    async def send(
        self, type_: str, *, message_id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        return await self.client.send(
            {"type": type_, "customer_id": self.customer_id, **fields}, message_id=message_id
        )

    async def outdial(self) -> str:
        r = await self.send(
            "CreateOutdial", name="test outdial", detail="outdial for test use.", data=""
        )
        assert r["status_code"] == 200, r
        return str(r["data"]["id"])

    async def target(self, outdial_id: str) -> str:
        r = await self.send(
            "AddTarget", outdial_id=outdial_id, name="t", detail="", data="", destination_0=TEL
        )
        assert r["status_code"] == 200, r
        return str(r["data"]["id"])


async def test_the_tutorials_values_answer_the_tutorials_shapes(
    service: CommandSide, client: OutdialClient
) -> None:
    me = As(client)
    r = await me.send("CreateOutdial", name="test outdial", detail="outdial for test use.", data="")
    assert list(r) == ["status_code", "data", "position"]
    assert r["status_code"] == 200
    outdial = r["data"]
    assert list(outdial) == BUS_OUTDIAL_KEYS
    assert outdial["campaign_id"] == "00000000-0000-0000-0000-000000000000"
    assert (outdial["name"], outdial["detail"], outdial["data"]) == (
        "test outdial",
        "outdial for test use.",
        "",
    )
    assert outdial["tm_update"] == NEVER and outdial["tm_delete"] == NEVER
    assert outdial["customer_id"] == me.customer_id
    uuid.UUID(outdial["id"])

    r2 = await me.send(
        "AddTarget",
        outdial_id=outdial["id"],
        name="test destination 0",
        detail="test detatination 0 detail",
        data="test data",
        destination_0={"type": "tel", "target": "+15559876543"},
    )
    assert r2["status_code"] == 200
    assert r2["position"] > r["position"]
    target = r2["data"]
    assert list(target) == BUS_TARGET_KEYS
    assert {
        k: target[k]
        for k in BUS_TARGET_KEYS
        if k not in ("id", "tm_create", "tm_update", "customer_id")
    } == {
        "outdial_id": outdial["id"],
        "name": "test destination 0",
        "detail": "test detatination 0 detail",
        "data": "test data",
        "status": "idle",
        "destination_0": {
            "type": "tel",
            "target": "+15559876543",
            "target_name": "",
            "name": "",
            "detail": "",
        },
        "destination_1": None,
        "destination_2": None,
        "destination_3": None,
        "destination_4": None,
        "try_count_0": 0,
        "try_count_1": 0,
        "try_count_2": 0,
        "try_count_3": 0,
        "try_count_4": 0,
        "tm_delete": NEVER,
    }
    assert target["tm_update"] == target["tm_create"]

    assert TIMESTAMP.fullmatch(target["tm_create"])


async def test_every_command(service: CommandSide, client: OutdialClient) -> None:
    me = As(client)
    outdial_id = await me.outdial()
    campaign = str(uuid.uuid4())
    positions = []

    async def ok(type_: str, **fields: Any) -> dict[str, Any]:
        r = await me.send(type_, outdial_id=outdial_id, **fields)
        assert r["status_code"] == 200, (type_, r)
        positions.append(r["position"])
        return dict(r["data"])

    assert (await ok("UpdateOutdial", name="n2", detail="d2"))["name"] == "n2"
    assert (await ok("UpdateOutdialCampaign", campaign_id=campaign))["campaign_id"] == campaign
    data = await ok("UpdateOutdialData", data="payload")
    assert (data["name"], data["campaign_id"], data["data"]) == ("n2", campaign, "payload")
    assert data["tm_update"] != NEVER

    target = await ok(
        "AddTarget",
        name="a",
        detail="",
        data="",
        destination_0=None,
        destination_2={"type": "sip", "target": "alice@example.com", "name": "office"},
    )
    assert target["destination_0"] is None
    assert target["destination_2"] == {
        "type": "sip",
        "target": "alice@example.com",
        "target_name": "",
        "name": "office",
        "detail": "",
    }
    many = await ok(
        "AddTargets",
        targets=[
            {"name": f"b{i}", "detail": "", "data": "", "destination_0": TEL} for i in range(3)
        ],
    )
    assert [t["name"] for t in many["result"]] == ["b0", "b1", "b2"]

    ids = {"target_id": target["id"]}
    t = await ok("MarkTargetProgressing", destination_index=2, **ids)
    assert (t["status"], t["try_count_2"]) == ("progressing", 1)
    t = await ok("UpdateTargetStatus", status="idle", **ids)
    assert (t["status"], t["try_count_2"]) == ("idle", 1)
    t = await ok("DeleteTarget", **ids)
    assert t["tm_delete"] != NEVER
    o = await ok("DeleteOutdial")
    assert o["tm_delete"] != NEVER
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    r = await me.send(
        "MarkTargetProgressing",
        outdial_id=outdial_id,
        target_id=many["result"][0]["id"],
        destination_index=0,
    )
    assert r == {
        "status_code": 404,
        "error": {"code": "outdial_not_found", "message": f"outdial {outdial_id} not found"},
    }


async def test_a_conflict_answers_409(service: CommandSide, client: OutdialClient) -> None:
    me = As(client)
    outdial_id = await me.outdial()
    target_id = await me.target(outdial_id)
    fields = {"outdial_id": outdial_id, "target_id": target_id, "destination_index": 0}
    assert (await me.send("MarkTargetProgressing", **fields))["status_code"] == 200
    r = await me.send("MarkTargetProgressing", **fields)
    assert r["status_code"] == 409
    assert r["error"]["code"] == "target_progressing"


async def test_the_same_message_id_twice_has_one_effect_and_equal_replies(
    service: CommandSide, client: OutdialClient
) -> None:
    me = As(client)
    outdial_id = await me.outdial()
    fields = {
        "outdial_id": outdial_id,
        "name": "once",
        "detail": "",
        "data": "",
        "destination_0": TEL,
    }
    first = await me.send("AddTarget", message_id="dup-1", **fields)
    second = await me.send("AddTarget", message_id="dup-1", **fields)
    assert first["status_code"] == 200
    assert second == first
    assert topics(service)["OutdialTarget.Created"] == 1
    # Another customer's equal message_id is another command.
    other = As(client)
    other_outdial = await other.outdial()
    third = await other.send(
        "AddTarget", message_id="dup-1", **{**fields, "outdial_id": other_outdial}
    )
    assert third["status_code"] == 200
    assert third["data"]["id"] != first["data"]["id"]
    assert topics(service)["OutdialTarget.Created"] == 2


async def test_another_customers_outdial_answers_404(
    service: CommandSide, client: OutdialClient
) -> None:
    owner, stranger = As(client), As(client)
    outdial_id = await owner.outdial()
    target_id = await owner.target(outdial_id)
    for type_, fields in [
        ("UpdateOutdial", {"name": "x", "detail": "y"}),
        ("UpdateOutdialCampaign", {"campaign_id": str(uuid.uuid4())}),
        ("UpdateOutdialData", {"data": "stolen"}),
        ("AddTarget", {"name": "", "detail": "", "data": "", "destination_0": TEL}),
        ("DeleteTarget", {"target_id": target_id}),
        ("MarkTargetProgressing", {"target_id": target_id, "destination_index": 0}),
        ("UpdateTargetStatus", {"target_id": target_id, "status": "done"}),
        ("DeleteOutdial", {}),
    ]:
        r = await stranger.send(type_, outdial_id=outdial_id, **fields)
        assert r["status_code"] == 404, (type_, r)
        assert "data" not in r
    # Nothing the stranger sent changed anything: only the owner's two events are stored.
    domain_events = {t: n for t, n in topics(service).items() if not t.startswith("CommandReceipt")}
    assert domain_events == {"Outdial.Created": 1, "OutdialTarget.Created": 1}


async def test_an_invalid_command_answers_400_with_details(
    service: CommandSide, client: OutdialClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outdial.command")
    me = As(client)
    outdial_id = await me.outdial()
    r = await me.send(
        "AddTarget",
        message_id="bad-1",
        outdial_id=outdial_id,
        name="",
        detail="",
        data="",
        destination_0={"type": "tel", "target": "+1 555 987 6543"},
    )
    assert r["status_code"] == 400
    assert r["error"]["code"] == "invalid_command"
    assert [d["loc"] for d in r["error"]["details"]] == ["destination_0.target"]
    assert await dead_letters() == []  # a known command with a bad field is only answered
    assert (await command_logged(caplog, "bad-1"))["type"] == "AddTarget"


async def command_logged(caplog: pytest.LogCaptureFixture, message_id: str) -> dict[str, Any]:
    """The fields of the consumer's "command" line for a message (written just
    after its reply and its dead-lettering)."""
    for _ in range(100):
        fields = [
            r.fields  # type: ignore[attr-defined]
            for r in caplog.records
            if r.getMessage() == "command" and r.fields["message_id"] == message_id  # type: ignore[attr-defined]
        ]
        if fields:
            [logged] = fields
            return dict(logged)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no command line logged for {message_id}")


@pytest.mark.parametrize(
    ("body", "type_"),
    [
        (b"{not json", None),
        (b"[]", None),
        (b'{"type": "Nope", "customer_id": "x"}', "Nope"),
        (b"\xff\xfe", None),
    ],
)
async def test_an_unparseable_message_is_dead_lettered_and_serving_goes_on(
    service: CommandSide,
    client: OutdialClient,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    type_: str | None,
) -> None:
    caplog.set_level(logging.INFO, logger="outdial.command")
    r = await client.send_raw(body, message_id="junk-1")
    assert r["status_code"] == 400
    assert r["error"]["code"] == "invalid_command"
    dead = await dead_letters()
    assert [(m.body, m.message_id) for m in dead] == [(body, "junk-1")]
    assert dead[0].headers["x-outdial-error"]
    # Its log line names the type it claimed, as `outdial dead-letters list` shows it.
    assert DeadLetter.of(dead[0]).type == type_
    logged = await command_logged(caplog, "junk-1")
    assert (logged["type"], logged["outcome"]) == (type_, "dead-lettered")
    # The consumer still serves.
    await As(client).outdial()


async def test_fire_and_forget_is_applied(service: CommandSide, client: OutdialClient) -> None:
    me = As(client)
    outdial_id = await me.outdial()
    body = orjson.dumps(
        {
            "type": "UpdateOutdialData",
            "customer_id": me.customer_id,
            "outdial_id": outdial_id,
            "data": "no reply wanted",
        }
    )
    await client.publish(body, reply=False)
    for _ in range(100):
        if topics(service)["Outdial.DataUpdated"]:
            break
        await asyncio.sleep(0.05)
    outdial = service.app.repository.get(uuid.UUID(outdial_id))
    assert outdial.data == "no reply wanted"


async def test_a_command_committed_but_not_acked_is_not_applied_twice(
    service: CommandSide, client: OutdialClient
) -> None:
    """A consumer that died after its commit and before its ack: the broker
    redelivers the message, which must find the receipt and change nothing."""
    me = As(client)
    outdial_id = await me.outdial()
    body = orjson.dumps(
        {
            "type": "AddTarget",
            "customer_id": me.customer_id,
            "outdial_id": outdial_id,
            "name": "once",
            "detail": "",
            "data": "",
            "destination_0": TEL,
        }
    )
    # The dead consumer's half: handled and committed, never acked nor answered.
    incoming = Incoming(parse_command(body), "crash-1", command_digest(body))
    committed = await asyncio.to_thread(handle, incoming, service.rt.new_uow)
    before = topics(service)
    redelivered = await client.send_raw(body, message_id="crash-1")
    assert redelivered == committed.body()
    assert topics(service) == before
