"""Authentication and isolation on every HTTP route (CONTRACT 5), under hostile tokens.

The table's rows are the routes of the aiohttp app itself, so a route added
later is in it at once (and a write route without a body here fails the test
until one is written). For every API route: no token, malformed, expired,
`alg: none`, another algorithm, wrong secret, a forged payload, a token without
or with a bad `customer_id` or `exp`, each in the query, the cookie and the
Bearer header, is 401 `unauthorized`; another customer's resource is 404, on
reads and writes alike, and changes nothing; the operations paths stay open.
No answer carries a byte of another customer's data.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest

from services.command.receipts import RECEIPTS
from services.gateway.http import OPEN_PATHS
from services.store import read_transaction
from tests.expected import TEL
from tests.integration.stack import SECRET, Stack, running_stack
from tests.reliability.routes import API_ROUTES, BODIES, OUTDIALS, ROUTES, fill

pytestmark = pytest.mark.integration


@dataclass
class Customer:
    id: uuid.UUID
    token: str
    outdial: dict[str, Any]
    target: dict[str, Any]

    def markers(self) -> list[str]:
        """What of this customer must never reach another: ids and the texts we stored."""
        return [
            self.outdial["id"],
            self.target["id"],
            self.outdial["name"],
            self.outdial["data"],
            self.target["name"],
            self.target["data"],
        ]


def assert_error(status: int, body: Any, headers: dict[str, str], wanted: int, code: str) -> None:
    assert status == wanted, body
    assert headers["Content-Type"].startswith("application/json")
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)


def assert_nothing_of(customer: Customer, raw: bytes, sent: str = "") -> None:
    """No id or stored text of `customer` in `raw`, unless the request itself carried it."""
    for marker in customer.markers():
        if marker not in sent:
            assert marker.encode() not in raw, f"{marker!r} of another customer leaked: {raw!r}"


async def new_customer(stack: Stack, label: str) -> tuple[Customer, int]:
    customer_id = uuid.uuid4()
    token = stack.token(customer_id)
    secret = f"{label}-secret-{uuid.uuid4()}"
    body = {"name": f"{secret}-name", "detail": "", "data": f"{secret}-data"}
    status, outdial, _ = await stack.call("POST", OUTDIALS, token, json=body)
    assert status == 200, outdial
    target_body = {**body, "destination_0": TEL}
    status, target, headers = await stack.call(
        "POST", f"{OUTDIALS}/{outdial['id']}/targets", token, json=target_body
    )
    assert status == 200, target
    return Customer(customer_id, token, outdial, target), int(headers["X-Outdial-Position"])


@dataclass
class World:
    stack: Stack
    owner: Customer
    stranger: Customer
    wait: dict[str, str]  # makes a read wait until the seeds are readable

    async def raw(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        json = BODIES.get((method, self.template(path)))
        async with self.stack.http.request(
            method,
            self.stack.base + path,
            json=json,
            headers={**self.wait, **(headers or {})},
        ) as r:
            return r.status, await r.read(), dict(r.headers)

    def template(self, path: str) -> str:
        path = path.split("?")[0]
        for c in (self.owner, self.stranger):
            path = path.replace(c.target["id"], "{target_id}").replace(c.outdial["id"], "{id}")
        return path

    def store_position(self) -> int:
        return self.stack.rt.app.recorder.max_notification_id() or 0

    def receipts(self) -> int:
        """Commands the store took as handled (refused ones included)."""
        app = self.stack.rt.app
        with read_transaction(app.recorder) as c:
            c.execute(f"SELECT COUNT(*) FROM {app.store.dialect.table(RECEIPTS)}")
            return int(c.fetchone()[0])

    def stored_since(self, position: int) -> list[tuple[str, str]]:
        """(aggregate id, event topic) of every event stored after `position`."""
        notifications = self.stack.rt.app.recorder.select_notifications(
            position + 1, 10_000, inclusive_of_start=True
        )
        return [(str(n.originator_id), n.topic) for n in notifications]


@pytest.fixture
async def world(store_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with running_stack(store_url, tmp_path) as stack:
        owner, _ = await new_customer(stack, "owner")
        stranger, position = await new_customer(stack, "stranger")
        yield World(stack, owner, stranger, {"X-Outdial-Min-Position": str(position)})


# ---- bad tokens ------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bad_tokens(owner: Customer, stranger: Customer) -> Iterator[tuple[str, str]]:
    """(what is wrong, token): every one must be 401."""
    soon = int(time.time()) + 600
    mine = {"customer_id": str(owner.id), "exp": soon}

    def signed(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
        return jwt.encode(claims, key, algorithm=algorithm)

    yield "empty", ""
    yield "garbage", "garbage"
    yield "three dots", "a.b.c"
    yield "truncated", owner.token[:-6]
    yield "signature flipped", owner.token[:-2] + ("AA" if owner.token[-2:] != "AA" else "BB")
    yield "expired", signed({**mine, "exp": int(time.time()) - 10})
    yield "alg none", jwt.encode(mine, None, algorithm="none")
    yield (
        "alg none, upper case",
        (_b64(b'{"alg":"NONE","typ":"JWT"}') + "." + _b64(orjson.dumps(mine)) + "."),
    )
    yield "HS512 with the right secret", signed(mine, SECRET, "HS512")
    yield "wrong secret", signed(mine, "another-secret-of-at-least-32-bytes-long")
    # The stranger's genuine header and signature on the owner's claims.
    header, _, signature = stranger.token.split(".")
    yield "forged payload", f"{header}.{_b64(orjson.dumps(mine))}.{signature}"
    yield "no customer_id", signed({"exp": soon})
    yield "no exp", signed({"customer_id": str(owner.id)})
    yield "exp not a number", signed({**mine, "exp": "tomorrow"})
    for bad in ["", "x", 5, None, [str(owner.id)], {"id": str(owner.id)}, f"{owner.id}x"]:
        yield f"customer_id {bad!r}", signed({**mine, "customer_id": bad})


def carriers(token: str) -> Iterator[tuple[str, dict[str, str], str]]:
    """(where, headers, query) to send `token` in each of the three places."""
    yield "query", {}, f"token={token}"
    yield "cookie", {"Cookie": f"token={token}"}, ""
    yield "bearer", {"Authorization": f"Bearer {token}"}, ""


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512's
async def test_every_api_route_refuses_every_bad_token(world: World) -> None:
    owner, stranger = world.owner, world.stranger
    before = world.store_position()
    tried = 0
    for method, template in API_ROUTES:
        path = fill(template, owner.outdial["id"], owner.target["id"])
        status, raw, headers = await world.raw(method, path)
        assert_error(status, orjson.loads(raw), headers, 401, "unauthorized")
        for what, token in bad_tokens(owner, stranger):
            for where, carrier, query in carriers(token):
                url = f"{path}?{query}" if query else path
                status, raw, headers = await world.raw(method, url, carrier)
                context = (method, template, what, where)
                assert status == 401, (context, raw)
                assert_error(status, orjson.loads(raw), headers, 401, "unauthorized")
                assert_nothing_of(owner, raw, sent=url)
                assert_nothing_of(stranger, raw, sent=url)
                tried += 1
    assert tried >= len(API_ROUTES) * 20 * 3
    assert world.store_position() == before  # no refused write reached the store


async def test_a_signed_token_with_an_absurd_exp_is_not_a_server_error(world: World) -> None:
    far = jwt.encode({"customer_id": str(world.owner.id), "exp": 10**400}, SECRET)
    status, body, _ = await world.stack.call("GET", OUTDIALS, far, headers=world.wait)
    assert status == 200, body  # valid for ever, but valid
    assert [o["id"] for o in body["result"]] == [world.owner.outdial["id"]]


async def test_operations_paths_stay_open_and_tell_nothing(world: World) -> None:
    for method, path in ROUTES:
        if path not in OPEN_PATHS:
            continue
        for headers in ({}, {"Authorization": "Bearer garbage"}, {"Cookie": "token=x"}):
            status, raw, _ = await world.raw(method, path, headers)
            # /readyz may say 503 (not ready) but never asks who is there.
            assert status == 200 or (path == "/readyz" and status == 503), (path, raw)
            assert_nothing_of(world.owner, raw)
            assert_nothing_of(world.stranger, raw)


# ---- another customer's resources ----------------------------------------------------


async def owner_view(world: World) -> list[bytes]:
    """Everything the owner can read of its own resources, as bytes."""
    owner = world.owner
    views = []
    for path in [
        OUTDIALS,
        f"{OUTDIALS}/{owner.outdial['id']}",
        f"{OUTDIALS}/{owner.outdial['id']}/targets",
        f"{OUTDIALS}/{owner.outdial['id']}/targets/{owner.target['id']}",
        f"{OUTDIALS}/{owner.outdial['id']}/available?max_try_count_0=1",
    ]:
        status, raw, _ = await world.raw("GET", path, {"Authorization": f"Bearer {owner.token}"})
        assert status == 200, (path, raw)
        views.append(raw)
    return views


async def test_another_customers_resources_are_404_on_every_route(world: World) -> None:
    owner, stranger = world.owner, world.stranger
    before, seen_before = world.store_position(), await owner_view(world)
    receipts_before = world.receipts()
    as_stranger = {"Authorization": f"Bearer {stranger.token}"}
    mixed = [
        # The owner's everything; the stranger's outdial with the owner's target;
        # the owner's outdial with the stranger's target (the stranger may know its own).
        (owner.outdial["id"], owner.target["id"]),
        (stranger.outdial["id"], owner.target["id"]),
        (owner.outdial["id"], stranger.target["id"]),
    ]
    probed = 0
    for method, template in API_ROUTES:
        if "{id}" not in template:
            continue
        for outdial_id, target_id in mixed:
            if "{target_id}" not in template and outdial_id != owner.outdial["id"]:
                continue  # the stranger's own outdial: not a probe
            path = fill(template, outdial_id, target_id)
            status, raw, headers = await world.raw(method, path, as_stranger)
            body = orjson.loads(raw)
            # A target's route may answer for the outdial it names or for the target.
            code = body["error"]["code"] if "{target_id}" in template else "outdial_not_found"
            assert code in {"outdial_not_found", "target_not_found"}
            assert_error(status, body, headers, 404, code)
            assert_nothing_of(owner, raw, sent=path)
            probed += 1
    assert probed >= 10
    # Nothing of the owner's changed: no event at all, and it reads all of its own
    # as it was. (Each refused write keeps its reply, for the stranger: a receipt,
    # which is no event.)
    assert world.stored_since(before) == []
    writes = [m for m, t in API_ROUTES if m != "GET" and "{id}" in t]
    assert world.receipts() >= receipts_before + len(writes)
    assert await owner_view(world) == seen_before


async def test_routes_without_an_id_answer_with_the_callers_own_only(world: World) -> None:
    owner, stranger = world.owner, world.stranger
    as_stranger = {"Authorization": f"Bearer {stranger.token}"}
    status, raw, _ = await world.raw("GET", OUTDIALS, as_stranger)
    assert status == 200
    assert [o["id"] for o in orjson.loads(raw)["result"]] == [stranger.outdial["id"]]
    assert_nothing_of(owner, raw)

    # A body cannot speak for another customer, nor move a write to another outdial:
    # the token says who, the path says where.
    claim = {"customer_id": str(owner.id), "type": "DeleteOutdial", "outdial_id": "x"}
    body = {**BODIES["POST", OUTDIALS], **claim}
    status, created, headers = await world.stack.call("POST", OUTDIALS, stranger.token, json=body)
    assert status == 200, created
    wait = {"X-Outdial-Min-Position": headers["X-Outdial-Position"]}
    status, _, _ = await world.stack.call(
        "GET", f"{OUTDIALS}/{created['id']}", owner.token, headers=wait
    )
    assert status == 404
    status, listed, _ = await world.stack.call("GET", OUTDIALS, owner.token, headers=wait)
    assert [o["id"] for o in listed["result"]] == [owner.outdial["id"]]

    body = {**BODIES["POST", f"{OUTDIALS}/{{id}}/targets"], "outdial_id": owner.outdial["id"]}
    path = f"{OUTDIALS}/{stranger.outdial['id']}/targets"
    status, target, _ = await world.stack.call("POST", path, stranger.token, json=body)
    assert status == 200, target
    assert target["outdial_id"] == stranger.outdial["id"]


async def test_an_id_of_another_customer_cannot_be_taken_and_tells_nothing(world: World) -> None:
    # Ids are global: the stranger cannot create under the owner's id. The answer
    # is the same 409 it would get for its own, and carries nothing of the owner's.
    owner, stranger = world.owner, world.stranger
    before = await owner_view(world)
    for path, body in [
        (OUTDIALS, {**BODIES["POST", OUTDIALS], "id": owner.outdial["id"]}),
        (
            f"{OUTDIALS}/{stranger.outdial['id']}/targets",
            {**BODIES["POST", f"{OUTDIALS}/{{id}}/targets"], "id": owner.target["id"]},
        ),
    ]:
        status, error, _ = await world.stack.call("POST", path, stranger.token, json=body)
        assert status == 409, error
        assert_nothing_of(owner, orjson.dumps(error), sent=orjson.dumps(body).decode())
    assert await owner_view(world) == before
