"""The HTTP API of CONTRACT 5 over the real broker and stores, every route and status."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest

from shared.client import OutdialClient
from tests.expected import NEVER, OUTDIAL_KEYS, TARGET_KEYS, TIMESTAMP
from tests.fixtures import AMQP_URL
from tests.integration.stack import SECRET, Stack, running_stack

pytestmark = pytest.mark.integration

TUTORIAL_OUTDIAL = {"name": "test outdial", "detail": "outdial for test use.", "data": "test data"}
TUTORIAL_TARGET = {
    "name": "test destination 0",
    "detail": "test detatination 0 detail",
    "data": "test data",
    "destination_0": {"type": "tel", "target": "+15559876543"},
}


@pytest.fixture
async def stack(store_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(store_url, tmp_path) as s:
        yield s


def seen(headers: dict[str, str]) -> dict[str, str]:
    """Read-your-writes: the header that makes a read wait for a write's position."""
    return {"X-Outdial-Min-Position": headers["X-Outdial-Position"]}


async def new_outdial(stack: Stack, token: str) -> tuple[dict[str, Any], dict[str, str]]:
    status, body, headers = await stack.call("POST", "/v1.0/outdials", token, json=TUTORIAL_OUTDIAL)
    assert status == 200, body
    return body, headers


async def test_the_tutorials_flow_field_by_field(stack: Stack) -> None:
    token = stack.token()
    outdial, headers = await new_outdial(stack, token)
    assert list(outdial) == OUTDIAL_KEYS
    assert outdial["campaign_id"] == "00000000-0000-0000-0000-000000000000"
    assert {k: outdial[k] for k in ("name", "detail", "data")} == TUTORIAL_OUTDIAL
    assert TIMESTAMP.fullmatch(outdial["tm_create"])
    assert outdial["tm_update"] == NEVER and outdial["tm_delete"] == NEVER
    assert int(headers["X-Outdial-Position"]) > 0

    status, listed, _ = await stack.call("GET", "/v1.0/outdials", token, headers=seen(headers))
    assert status == 200
    assert list(listed) == ["result", "next_page_token"]
    assert listed["result"] == [outdial]
    assert listed["next_page_token"] == outdial["tm_create"]

    status, got, _ = await stack.call("GET", f"/v1.0/outdials/{outdial['id']}", token)
    assert (status, got) == (200, outdial)

    status, target, headers = await stack.call(
        "POST", f"/v1.0/outdials/{outdial['id']}/targets", token, json=TUTORIAL_TARGET
    )
    assert status == 200, target
    assert list(target) == TARGET_KEYS
    assert target["outdial_id"] == outdial["id"]
    assert target["status"] == "idle"
    assert target["destination_0"] == {
        "type": "tel",
        "target": "+15559876543",
        "target_name": "",
        "name": "",
        "detail": "",
    }
    assert [target[f"destination_{i}"] for i in range(1, 5)] == [None] * 4
    assert [target[f"try_count_{i}"] for i in range(5)] == [0] * 5
    assert target["tm_update"] == target["tm_create"]
    assert target["tm_delete"] == NEVER

    status, targets, _ = await stack.call(
        "GET", f"/v1.0/outdials/{outdial['id']}/targets", token, headers=seen(headers)
    )
    assert status == 200
    assert targets == {"result": [target], "next_page_token": target["tm_create"]}
    status, got, _ = await stack.call(
        "GET", f"/v1.0/outdials/{outdial['id']}/targets/{target['id']}", token
    )
    assert (status, got) == (200, target)


async def test_updates_and_deletes(stack: Stack) -> None:
    token = stack.token()
    outdial, _ = await new_outdial(stack, token)
    path = f"/v1.0/outdials/{outdial['id']}"
    campaign = str(uuid.uuid4())
    status, body, _ = await stack.call("PUT", path, token, json={"name": "n2", "detail": "d2"})
    assert status == 200 and (body["name"], body["detail"]) == ("n2", "d2")
    assert body["tm_update"] != NEVER
    status, body, _ = await stack.call(
        "PUT", f"{path}/campaign_id", token, json={"campaign_id": campaign}
    )
    assert status == 200 and body["campaign_id"] == campaign
    status, body, headers = await stack.call("PUT", f"{path}/data", token, json={"data": "x"})
    assert status == 200 and body["data"] == "x" and body["name"] == "n2"
    status, got, _ = await stack.call("GET", path, token, headers=seen(headers))
    assert got == body

    status, target, _ = await stack.call("POST", f"{path}/targets", token, json=TUTORIAL_TARGET)
    status, deleted, headers = await stack.call("DELETE", f"{path}/targets/{target['id']}", token)
    assert status == 200 and deleted["tm_delete"] != NEVER
    status, got, _ = await stack.call(
        "GET", f"{path}/targets/{target['id']}", token, headers=seen(headers)
    )
    assert (status, got) == (200, deleted)  # still readable by id
    status, listed, _ = await stack.call("GET", f"{path}/targets", token)
    assert listed == {"result": [], "next_page_token": ""}
    status, _, _ = await stack.call("DELETE", f"{path}/targets/{target['id']}", token)
    assert status == 404

    status, deleted, headers = await stack.call("DELETE", path, token)
    assert status == 200 and deleted["tm_delete"] != NEVER
    status, got, _ = await stack.call("GET", path, token, headers=seen(headers))
    assert (status, got) == (200, deleted)
    status, listed, _ = await stack.call("GET", "/v1.0/outdials", token)
    assert listed["result"] == []
    for method, sub, body in [
        ("PUT", "", {"name": "", "detail": ""}),
        ("DELETE", "", None),
        ("PUT", "/data", {"data": ""}),
        ("POST", "/targets", TUTORIAL_TARGET),
    ]:
        status, error, _ = await stack.call(method, path + sub, token, json=body)
        assert status == 404, (method, sub)
        assert error["error"]["code"] == "outdial_not_found"


async def test_another_customer_sees_nothing_on_any_route(stack: Stack) -> None:
    owner, stranger = stack.token(), stack.token()
    outdial, _ = await new_outdial(stack, owner)
    path = f"/v1.0/outdials/{outdial['id']}"
    _, target, headers = await stack.call("POST", f"{path}/targets", owner, json=TUTORIAL_TARGET)
    wait = seen(headers)
    for method, sub, body in [
        ("GET", "", None),
        ("PUT", "", {"name": "x", "detail": "y"}),
        ("DELETE", "", None),
        ("PUT", "/campaign_id", {"campaign_id": str(uuid.uuid4())}),
        ("PUT", "/data", {"data": "x"}),
        ("GET", "/targets", None),
        ("POST", "/targets", TUTORIAL_TARGET),
        ("GET", f"/targets/{target['id']}", None),
        ("DELETE", f"/targets/{target['id']}", None),
    ]:
        status, error, _ = await stack.call(method, path + sub, stranger, json=body, headers=wait)
        assert status == 404, (method, sub, error)
        assert set(error) == {"error"}
    _, listed, _ = await stack.call("GET", "/v1.0/outdials", stranger)
    assert listed == {"result": [], "next_page_token": ""}
    status, got, _ = await stack.call("GET", path, owner)
    assert (status, got) == (200, outdial)  # untouched


async def test_tokens(stack: Stack) -> None:
    customer = uuid.uuid4()
    good = stack.token(customer)
    expired = jwt.encode(
        {"customer_id": str(customer), "exp": int(time.time()) - 10}, SECRET, algorithm="HS256"
    )
    wrong_key = jwt.encode(
        {"customer_id": str(customer), "exp": int(time.time()) + 60},
        "another-secret-also-of-at-least-32-bytes",
        algorithm="HS256",
    )
    no_exp = jwt.encode({"customer_id": str(customer)}, SECRET, algorithm="HS256")
    not_uuid = jwt.encode(
        {"customer_id": "x", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"
    )
    for token in [None, "garbage", expired, wrong_key, no_exp, not_uuid]:
        status, error, _ = await stack.call("GET", "/v1.0/outdials", token)
        assert status == 401, token
        assert error["error"]["code"] == "unauthorized"
    for url, headers in [
        (f"/v1.0/outdials?token={good}", {}),
        ("/v1.0/outdials", {"Cookie": f"token={good}"}),
        ("/v1.0/outdials", {"Authorization": f"Bearer {good}"}),
    ]:
        status, _, _ = await stack.call("GET", url, None, headers=headers)
        assert status == 200, headers


async def test_bad_requests(stack: Stack) -> None:
    token = stack.token()
    outdial, _ = await new_outdial(stack, token)
    path = f"/v1.0/outdials/{outdial['id']}"
    cases = [
        ("GET", "/v1.0/outdials/not-a-uuid", None, 400, "invalid_id"),
        ("GET", f"{path}/targets/123", None, 400, "invalid_id"),
        ("POST", "/v1.0/outdials", b"{not json", 400, "invalid_json"),
        ("POST", "/v1.0/outdials", b"[1, 2]", 400, "invalid_json"),
        ("PUT", path, b"", 400, "invalid_json"),
        (
            "POST",
            "/v1.0/outdials",
            b'{"name": 5, "detail": "", "data": ""}',
            400,
            "invalid_command",
        ),
        ("POST", "/v1.0/outdials", b"x" * (1024 * 1024 + 1), 413, "body_too_large"),
        ("GET", "/v1.0/outdials?page_size=abc", None, 400, "invalid_page_size"),
        ("GET", "/v1.0/outdials?page_size=0", None, 400, "invalid_page_size"),
        ("GET", "/v1.0/outdials?page_token=yesterday", None, 400, "invalid_page_token"),
        ("GET", "/v1.0/nothing-here", None, 404, "not_found"),
        ("PATCH", path, b"{}", 405, "method_not_allowed"),
    ]
    json_type = {"Content-Type": "application/json"}
    for method, url, data, status_wanted, code in cases:
        headers = json_type if data is not None else None
        status, error, headers = await stack.call(method, url, token, data=data, headers=headers)
        assert (status, error["error"]["code"]) == (status_wanted, code), (method, url)
        if method != "GET":  # every answer to a write carries a position
            assert int(headers["X-Outdial-Position"]) >= 0, (method, url)
    # Writes take JSON only: a form or text/plain is what a page of another site can
    # make a browser send with the token cookie (CSRF).
    body = b'{"name": "", "detail": "", "data": ""}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        sent = {"Content-Type": content_type} if content_type else {}
        status, error, _ = await stack.call(
            "POST", "/v1.0/outdials", None, data=body, headers={**sent, "Cookie": f"token={token}"}
        )
        assert (status, error["error"]["code"]) == (415, "unsupported_media_type"), content_type
    # A token sent by its holder (query or header): the body is read whatever it is
    # declared, and what is not JSON is CONTRACT 5's 400.
    for content_type in ("text/plain", None):
        sent = {"Content-Type": content_type} if content_type else {}
        status, error, _ = await stack.call(
            "POST", "/v1.0/outdials", token, data=b"{bad", headers=sent
        )
        assert (status, error["error"]["code"]) == (400, "invalid_json"), content_type
        status, created, _ = await stack.call(
            "POST", "/v1.0/outdials", token, data=body, headers=sent
        )
        assert status == 200 and created["name"] == "", (content_type, created)
    status, error, _ = await stack.call(
        "POST",
        f"{path}/targets",
        token,
        json={**TUTORIAL_TARGET, "destination_0": {"type": "tel", "target": "+1 555 987 6543"}},
    )
    assert status == 400
    assert error["error"]["details"] == [
        {
            "loc": "destination_0.target",
            "msg": "a tel target must be E.164: '+' then digits only",
        }
    ]
    status, error, _ = await stack.call(
        "POST", "/v1.0/outdials", token, json={**TUTORIAL_OUTDIAL, "id": outdial["id"]}
    )
    assert (status, error["error"]["code"]) == (409, "outdial_exists")
    status, _, _ = await stack.call("GET", "/v1.0/nothing-here", None)
    assert status == 404  # unknown is unknown, token or not


async def test_a_read_waits_for_its_position_then_gives_up(stack: Stack) -> None:
    token = stack.token()
    outdial, headers = await new_outdial(stack, token)
    status, _, _ = await stack.call(
        "GET", f"/v1.0/outdials/{outdial['id']}", token, headers=seen(headers)
    )
    assert status == 200
    far = {"X-Outdial-Min-Position": str(int(headers["X-Outdial-Position"]) + 1000)}
    started = time.monotonic()
    status, error, _ = await stack.call("GET", "/v1.0/outdials", token, headers=far)
    assert status == 504
    assert error["error"]["code"] == "position_not_reached"
    assert 4.5 < time.monotonic() - started < 10
    status, error, _ = await stack.call(
        "GET", "/v1.0/outdials", token, headers={"X-Outdial-Min-Position": "x"}
    )
    assert status == 400


async def test_operations_routes(stack: Stack) -> None:
    token = stack.token()
    await new_outdial(stack, token)
    status, body, _ = await stack.call("GET", "/healthz", None)
    assert status == 200
    status, body, _ = await stack.call("GET", "/readyz", None)
    assert (status, body) == (200, {"status": "ready"})
    async with stack.http.get(stack.base + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    for name in [
        "outdial_commands_total",
        "outdial_command_seconds_bucket",
        "outdial_projection_position",
        "outdial_projection_lag_events",
        "outdial_relay_position",
        "outdial_http_requests_total",
    ]:
        assert name in text, name
    assert 'outdial_commands_total{outcome="200",type="CreateOutdial"}' in text


async def test_voipbins_page_tokens_are_taken_too(stack: Stack) -> None:
    """CONTRACT 5: a `tm_create` as `2006-01-02T15:04:05.000000Z` (the platform's)
    resumes after it, as this service's own tokens do."""
    token = stack.token()
    created = [(await new_outdial(stack, token))[0] for _ in range(3)]
    newest = created[-1]["tm_create"]
    voipbin = newest.replace(" ", "T") + "Z"
    for page_token in (voipbin, newest, f"{newest}|{created[-1]['id']}"):
        status, page, _ = await stack.call(
            "GET", f"/v1.0/outdials?page_token={quote(page_token)}", token
        )
        assert status == 200, (page_token, page)
        assert [o["id"] for o in page["result"]] == [o["id"] for o in reversed(created[:2])]
    for bad in ("2022-04-28T01:41:40.503790+09:00", "2022-04-28T01:41:40.503790Z\x00"):
        status, error, _ = await stack.call("GET", f"/v1.0/outdials?page_token={quote(bad)}", token)
        assert (status, error["error"]["code"]) == (400, "invalid_page_token")


async def test_every_address_type_of_the_platform(stack: Stack) -> None:
    token = stack.token()
    outdial, _ = await new_outdial(stack, token)
    some = str(uuid.uuid4())
    for type_, target in [
        ("whatsapp", "+821012345678"),
        ("ai", some),
        ("ai_team", some),
        ("webchat", "widget-1"),
        ("line", "U4af4980629f1e2d3c4b5a69788796a5b"),  # a LINE user id: no UUID
        ("extension", "2000"),
        ("web_session", some),
    ]:
        destination = {"type": type_, "target": target}
        body = {**TUTORIAL_TARGET, "destination_0": destination}
        status, added, _ = await stack.call(
            "POST", f"/v1.0/outdials/{outdial['id']}/targets", token, json=body
        )
        assert status == 200, (type_, added)
        assert added["destination_0"] == {
            **destination,
            "target_name": "",
            "name": "",
            "detail": "",
        }
    body = {**TUTORIAL_TARGET, "destination_0": {"type": "ai", "target": "not-a-uuid"}}
    status, error, _ = await stack.call(
        "POST", f"/v1.0/outdials/{outdial['id']}/targets", token, json=body
    )
    assert status == 400
    assert error["error"]["details"] == [
        {"loc": "destination_0.target", "msg": "an ai target must be a UUID"}
    ]


@pytest.mark.parametrize("page_size", [1, 7, 100])
async def test_paging_visits_each_of_1000_targets_once(stack: Stack, page_size: int) -> None:
    token = stack.token()
    outdial, _ = await new_outdial(stack, token)
    customer = jwt.decode(token, SECRET, algorithms=["HS256"])["customer_id"]
    async with OutdialClient(AMQP_URL) as bus:
        reply = await bus.send(
            {
                "type": "AddTargets",
                "customer_id": customer,
                "outdial_id": outdial["id"],
                "targets": [
                    {
                        "name": f"t{i}",
                        "detail": "",
                        "data": "",
                        "destination_0": {"type": "tel", "target": "+15559876543"},
                    }
                    for i in range(1000)
                ],
            }
        )
    assert reply["status_code"] == 200
    created = reply["data"]["result"]
    wait = {"X-Outdial-Min-Position": str(reply["position"])}
    seen_ids: list[str] = []
    token_param = ""
    pages = 0
    while True:
        status, page, _ = await stack.call(
            "GET",
            f"/v1.0/outdials/{outdial['id']}/targets?page_size={page_size}{token_param}",
            token,
            headers=wait,
        )
        assert status == 200
        pages += 1
        assert len(page["result"]) <= page_size
        if not page["result"]:
            break
        seen_ids += [t["id"] for t in page["result"]]
        token_param = "&page_token=" + quote(page["next_page_token"])
    assert len(seen_ids) == len(set(seen_ids)) == 1000
    assert set(seen_ids) == {t["id"] for t in created}
    assert pages == -(-1000 // page_size) + 1
    # Newest first: tm_create never increases along the pages.
    by_id = {t["id"]: t["tm_create"] for t in created}
    stamps = [by_id[i] for i in seen_ids]
    assert stamps == sorted(stamps, reverse=True)
