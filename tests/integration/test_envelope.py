"""The platform's request envelope on `bin-manager.outdial-manager.request`,
sent as the platform's services send it (methods upper-case, `data` an embedded
JSON value, thresholds of /available in the query string or in the data)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from services.query.envelope import REQUEST_QUEUE
from tests.expected import NEVER, TIMESTAMP
from tests.fixtures import AMQP_URL
from tests.integration.stack import running_stack

pytestmark = pytest.mark.integration


class Platform:
    """Sends request envelopes and awaits their responses, like the Go services do."""

    def __init__(self, amqp_url: str = AMQP_URL):
        self.amqp_url = amqp_url

    async def __aenter__(self) -> Platform:
        self.connection = await aio_pika.connect(self.amqp_url)
        self.channel = await self.connection.channel()
        self.replies = await self.channel.declare_queue(exclusive=True)
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        await self.replies.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.pending.pop(message.correlation_id or "").set_result(orjson.loads(message.body))

    async def raw(self, body: bytes, correlation: str | None = None) -> dict[str, Any]:
        correlation = correlation or str(uuid.uuid4())
        future = asyncio.get_running_loop().create_future()
        self.pending[correlation] = future
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                correlation_id=correlation,
                reply_to=self.replies.name,
            ),
            routing_key=REQUEST_QUEUE,
        )
        return await asyncio.wait_for(future, 15)

    async def request(
        self, method: str, uri: str, data: Any = None, correlation: str | None = None
    ) -> dict[str, Any]:
        envelope: dict[str, Any] = {
            "uri": uri,
            "method": method,
            "publisher": "campaign-manager",
            "data_type": "application/json",
        }
        if data is not None:
            envelope["data"] = data
        return await self.raw(orjson.dumps(envelope), correlation)


@pytest.fixture
async def platform(store_url: str, tmp_path: Path) -> AsyncIterator[Platform]:
    async with running_stack(store_url, tmp_path), Platform() as p:
        yield p


def ok(response: dict[str, Any]) -> Any:
    assert response["status_code"] == 200, response
    assert response["data_type"] == "application/json"
    return response["data"]


async def test_the_platforms_requests(platform: Platform) -> None:
    customer, campaign = str(uuid.uuid4()), str(uuid.uuid4())
    outdial = ok(
        await platform.request(
            "POST",
            "/v1/outdials",
            {
                "customer_id": customer,
                "campaign_id": campaign,
                "name": "test name",
                "detail": "test detail",
                "data": "test data",
            },
        )
    )
    assert list(outdial)[:3] == ["id", "customer_id", "campaign_id"]
    assert (outdial["customer_id"], outdial["campaign_id"], outdial["name"]) == (
        customer,
        campaign,
        "test name",
    )
    assert TIMESTAMP.fullmatch(outdial["tm_create"]) and outdial["tm_delete"] == NEVER
    oid = outdial["id"]

    listed = ok(
        await platform.request(
            "GET",
            "/v1/outdials?page_token=&page_size=10",
            {"customer_id": customer, "deleted": False},
        )
    )
    assert listed == [outdial]
    older = ok(
        await platform.request(
            "GET",
            f"/v1/outdials?page_token=2099-10-10T03:30:17.000000Z&page_size=10"
            f"&customer_id={customer}",
        )
    )
    assert older == [outdial]
    assert ok(await platform.request("GET", f"/v1/outdials/{oid}")) == outdial

    updated = ok(
        await platform.request("PUT", f"/v1/outdials/{oid}", {"name": "n2", "detail": "d2"})
    )
    assert (updated["name"], updated["detail"], updated["customer_id"]) == ("n2", "d2", customer)
    new_campaign = str(uuid.uuid4())
    assert (
        ok(
            await platform.request(
                "PUT", f"/v1/outdials/{oid}/campaign_id", {"campaign_id": new_campaign}
            )
        )["campaign_id"]
        == new_campaign
    )
    assert (
        ok(await platform.request("PUT", f"/v1/outdials/{oid}/data", {"data": "d"}))["data"] == "d"
    )

    target = ok(
        await platform.request(
            "POST",
            f"/v1/outdials/{oid}/targets",
            {
                "name": "t",
                "detail": "",
                "data": "",
                "destination_0": {"type": "tel", "target": "+15559876543"},
            },
        )
    )
    assert "customer_id" not in target
    assert target["tm_update"] == target["tm_create"]  # "never tried", as the platform reads it
    tid = target["id"]
    assert ok(
        await platform.request(
            "GET",
            f"/v1/outdials/{oid}/targets?page_token=2099-01-01+00%3A00%3A00.000000&page_size=10",
        )
    ) == [target]

    uri = (
        f"/v1/outdials/{oid}/available?try_count_0=2&try_count_1=2&try_count_2=2"
        "&try_count_3=2&try_count_4=2&limit=1"
    )
    assert ok(await platform.request("GET", uri)) == [target]
    body = {
        "try_count_0": 3,
        "try_count_1": 0,
        "try_count_2": 0,
        "try_count_3": 0,
        "try_count_4": 0,
        "limit": 1,
    }
    assert ok(await platform.request("GET", f"/v1/outdials/{oid}/available", body)) == [target]
    assert ok(await platform.request("GET", f"/v1/outdials/{oid}/available")) == []
    assert ok(await platform.request("GET", f"/v1/outdialtargets/{tid}")) == target

    progressing = ok(
        await platform.request(
            "POST", f"/v1/outdialtargets/{tid}/progressing", {"destination_index": 0}
        )
    )
    assert (progressing["status"], progressing["try_count_0"]) == ("progressing", 1)
    assert ok(await platform.request("GET", uri)) == []
    done = ok(await platform.request("PUT", f"/v1/outdialtargets/{tid}/status", {"status": "done"}))
    assert done["status"] == "done"
    deleted = ok(await platform.request("DELETE", f"/v1/outdialtargets/{tid}"))
    assert deleted["tm_delete"] != NEVER
    gone = ok(await platform.request("DELETE", f"/v1/outdials/{oid}"))
    assert gone["tm_delete"] != NEVER and gone["customer_id"] == customer
    assert ok(await platform.request("GET", f"/v1/outdials/{oid}")) == gone


async def test_errors_as_the_platform_expects_them(platform: Platform) -> None:
    missing = str(uuid.uuid4())
    assert await platform.request("GET", "/v1/nothing") == {"status_code": 404, "data_type": ""}
    assert await platform.request("PATCH", "/v1/outdials") == {"status_code": 404, "data_type": ""}
    assert (await platform.request("post", "/v1/outdials", {}))["status_code"] == 404
    r = await platform.request("GET", f"/v1/outdials/{missing}")
    assert r["status_code"] == 404
    assert r["data_type"] == "voipbin_error"
    assert r["data"]["reason"] == "OUTDIAL_NOT_FOUND"
    assert r["data"]["domain"] == "outdial-manager"
    assert (await platform.request("GET", f"/v1/outdialtargets/{missing}"))["status_code"] == 404
    assert (await platform.request("PUT", f"/v1/outdials/{missing}", {"name": "", "detail": ""}))[
        "status_code"
    ] == 404
    assert (await platform.request("POST", "/v1/outdials"))["status_code"] == 400  # no data
    bad = await platform.request("POST", "/v1/outdials", {"customer_id": "not-a-uuid"})
    assert bad["status_code"] == 400
    assert (await platform.raw(b"not json"))["status_code"] == 400
    outdial = ok(
        await platform.request(
            "POST",
            "/v1/outdials",
            {"customer_id": str(uuid.uuid4()), "name": "", "detail": "", "data": ""},
        )
    )
    target = ok(
        await platform.request(
            "POST",
            f"/v1/outdials/{outdial['id']}/targets",
            {
                "name": "",
                "detail": "",
                "data": "",
                "destination_0": {"type": "tel", "target": "+15559876543"},
            },
        )
    )
    r = await platform.request(
        "PUT", f"/v1/outdialtargets/{target['id']}/status", {"status": "done"}
    )
    assert (r["status_code"], r["data"]["reason"]) == (409, "TARGET_NOT_PROGRESSING")


async def test_a_redelivered_request_changes_nothing_twice(platform: Platform) -> None:
    outdial = ok(
        await platform.request(
            "POST",
            "/v1/outdials",
            {"customer_id": str(uuid.uuid4()), "name": "", "detail": "", "data": ""},
        )
    )
    add = (
        "POST",
        f"/v1/outdials/{outdial['id']}/targets",
        {
            "name": "once",
            "detail": "",
            "data": "",
            "destination_0": {"type": "tel", "target": "+15559876543"},
        },
    )
    first = ok(await platform.request(*add, correlation="request-1"))
    again = ok(await platform.request(*add, correlation="request-1"))
    assert again == first
    listed = ok(await platform.request("GET", f"/v1/outdials/{outdial['id']}/targets"))
    assert [t["id"] for t in listed] == [first["id"]]
