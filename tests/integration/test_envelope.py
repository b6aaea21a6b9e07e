"""The platform's request envelope (CONTRACT 8), as VoIPbin's callers use it.

Every request is sent as `bin-common-handler/pkg/requesthandler` sends it
(`tests.platform_caller`: text/plain, a private reply queue, no correlation id
and no message id; Go's field names, values and query strings), and every reply
is read by the Go structs' rules (`tests.go_decoding`): strict RFC 3339 or
`null` times, UUID strings, integer try counts, addresses without empty fields,
`VoipbinError` with a string status. Every route, and every error a caller can
be answered, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from services.gateway.envelope import EnvelopeListener
from services.gateway.operations import Backend
from shared.client import OutdialClient
from shared.queue_consumer import Replies
from tests import go_decoding as go
from tests.fixtures import AMQP_URL
from tests.integration.stack import Stack, running_stack
from tests.platform_caller import (
    REQUEST_QUEUE,
    Caller,
    address,
    go_time,
    now_token,
    query_escape,
)

pytestmark = pytest.mark.integration

NIL = "00000000-0000-0000-0000-000000000000"
TEL = address("tel", "+15559876543")
NO_ROUTE = {"status_code": 404, "data_type": ""}


@pytest.fixture
async def stack(store_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(store_url, tmp_path) as s:
        yield s


@pytest.fixture
async def api_manager(stack: Stack) -> AsyncIterator[Caller]:
    async with Caller("api-manager") as caller:
        yield caller


@pytest.fixture
async def campaign_manager(stack: Stack) -> AsyncIterator[Caller]:
    async with Caller("campaign-manager") as caller:
        yield caller


def refused(response: go.Response) -> go.VoipbinError:
    """The typed error a Go caller gets from `parseResponse`."""
    with pytest.raises(go.VoipbinError) as e:
        response.parse(lambda data: data)
    assert e.value.domain == "outdial-manager"
    return e.value


def assert_refused(
    response: go.Response, status: str, reason: str, message: str | None = None
) -> go.VoipbinError:
    error = refused(response)
    assert (error.status, error.reason) == (status, reason), error
    if message is not None:
        assert error.message == message
    return error


def assert_no_route(response: go.Response) -> None:
    assert (response.status_code, response.data_type, response.data) == (404, "", None)
    with pytest.raises(go.StatusError):
        response.parse(lambda data: data)


def recent(moment: datetime | None) -> bool:
    return moment is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


async def new_outdial(caller: Caller, customer: str, **fields: str) -> dict[str, Any]:
    values = {"campaign_id": NIL, "name": "n", "detail": "d", "data": "x", **fields}
    reply = await caller.outdial_create(
        customer, values["campaign_id"], values["name"], values["detail"], values["data"]
    )
    return reply.parse(go.outdial)  # type: ignore[no-any-return]


# ---- outdials ------------------------------------------------------------------------


async def test_an_outdials_life_as_the_platform_sees_it(
    api_manager: Caller, campaign_manager: Caller, stack: Stack
) -> None:
    customer, campaign = str(uuid.uuid4()), str(uuid.uuid4())
    created = (
        await api_manager.outdial_create(customer, campaign, "test name", "test detail", "x")
    ).parse(go.outdial)
    assert (created["customer_id"], created["campaign_id"]) == (customer, campaign)
    assert (created["name"], created["detail"], created["data"]) == (
        "test name",
        "test detail",
        "x",
    )
    assert recent(go.time(created["tm_create"], "tm_create"))
    assert created["tm_update"] is None and created["tm_delete"] is None  # never: null
    outdial_id = created["id"]
    assert (await campaign_manager.outdial_get(outdial_id)).parse(go.outdial) == created
    without_campaign = await new_outdial(api_manager, customer)
    assert without_campaign["campaign_id"] == NIL

    renamed = (
        await api_manager.outdial_update_basic_info(outdial_id, "renamed", "new detail")
    ).parse(go.outdial)
    assert (renamed["name"], renamed["detail"], renamed["tm_create"]) == (
        "renamed",
        "new detail",
        created["tm_create"],
    )
    assert renamed["tm_update"] is not None and renamed["tm_delete"] is None
    new_campaign = str(uuid.uuid4())
    moved = (await campaign_manager.outdial_update_campaign_id(outdial_id, new_campaign)).parse(
        go.outdial
    )
    assert moved["campaign_id"] == new_campaign and moved["name"] == "renamed"
    with_data = (await api_manager.outdial_update_data(outdial_id, '{"k": 1}')).parse(go.outdial)
    assert with_data["data"] == '{"k": 1}' and with_data["campaign_id"] == new_campaign
    assert (await api_manager.outdial_get(outdial_id)).parse(go.outdial) == with_data

    # The HTTP API's resource is the same one, in the tutorial's shape.
    token = stack.token(uuid.UUID(customer))
    status, http_shape, _ = await stack.call("GET", f"/v1.0/outdials/{outdial_id}", token)
    assert status == 200
    assert http_shape["tm_create"].replace(" ", "T") + "Z" == created["tm_create"]
    assert http_shape["tm_delete"] == "9999-01-01 00:00:00.000000"

    deleted = (await api_manager.outdial_delete(outdial_id)).parse(go.outdial)
    assert deleted["tm_delete"] is not None and deleted["tm_delete"] == deleted["tm_update"]
    assert (await api_manager.outdial_get(outdial_id)).parse(go.outdial) == deleted
    # Kept on purpose (docs/envelope.md): a deleted outdial takes no more commands.
    for again in (
        api_manager.outdial_delete(outdial_id),
        api_manager.outdial_update_basic_info(outdial_id, "n", "d"),
        api_manager.outdial_update_data(outdial_id, "x"),
        api_manager.outdial_update_campaign_id(outdial_id, campaign),
    ):
        assert_refused(await again, "NOT_FOUND", "OUTDIAL_NOT_FOUND", "The outdial was not found.")


async def test_lists_of_outdials_page_and_filter_as_voipbins(api_manager: Caller) -> None:
    customer, other = str(uuid.uuid4()), str(uuid.uuid4())
    campaigns = [str(uuid.uuid4()), str(uuid.uuid4())]
    mine = [
        await new_outdial(
            api_manager, customer, campaign_id=campaigns[i % 2], name=f"n{i}", data=f"x{i}"
        )
        for i in range(5)
    ]
    theirs = [await new_outdial(api_manager, other, campaign_id=campaigns[0]) for _ in range(2)]
    gone = (await api_manager.outdial_delete(mine[2]["id"])).parse(go.outdial)
    live = [o for o in reversed(mine) if o["id"] != gone["id"]]  # newest first

    # api-manager's paging: the first token is now, the next the last item's tm_create.
    seen: list[dict[str, Any]] = []
    token = now_token()
    while page := (await api_manager.outdial_list(token, 2, {"customer_id": customer})).parse(
        go.outdials
    ):
        assert len(page) <= 2
        seen += page
        last = go.time(page[-1]["tm_create"], "tm_create")
        assert last is not None
        token = go_time(last)
    assert seen == live

    async def listed(filters: dict[str, Any], size: int = 100) -> list[str]:
        reply = await api_manager.outdial_list(now_token(), size, filters)
        return [o["id"] for o in reply.parse(go.outdials)]

    ids = [o["id"] for o in live]
    assert await listed({"customer_id": customer, "campaign_id": campaigns[0]}) == [
        o["id"] for o in live if o["campaign_id"] == campaigns[0]
    ]
    assert await listed({"customer_id": customer, "name": "n3"}) == [mine[3]["id"]]
    assert await listed({"customer_id": customer, "data": "x4", "detail": "d"}) == [mine[4]["id"]]
    assert await listed({"id": mine[1]["id"]}) == [mine[1]["id"]]
    assert await listed({"customer_id": customer, "deleted": False}) == ids
    # Deleted ones only when asked for (CONTRACT 1: lists leave them out).
    assert await listed({"customer_id": customer, "deleted": True}) == [gone["id"]]
    assert await listed({"customer_id": customer, "deleted": "true"}) == [gone["id"]]
    assert await listed({"customer_id": customer, "deleted": "no"}) == ids
    # No customer: every customer's (the callers are trusted services).
    assert await listed({"campaign_id": campaigns[0]}) == [
        o["id"] for o in [*reversed(theirs), *live] if o["campaign_id"] == campaigns[0]
    ]
    assert set(await listed({})) >= {*ids, *(o["id"] for o in theirs)}
    assert await listed({"customer_id": ""}) == []  # Go's nil UUID: nobody's
    assert await listed({"customer_id": customer.upper()}) == ids

    # Page tokens: VoIPbin's, the legacy format, and this service's own with an id.
    newest = go.time(live[0]["tm_create"], "tm_create")
    assert newest is not None
    for token in (
        go_time(newest),
        newest.strftime("%Y-%m-%d %H:%M:%S.%f"),
        f"{newest.strftime('%Y-%m-%d %H:%M:%S.%f')}|{live[0]['id']}",
    ):
        reply = await api_manager.outdial_list(token, 100, {"customer_id": customer})
        assert [o["id"] for o in reply.parse(go.outdials)] == ids[1:], token


async def test_a_list_refuses_what_voipbin_cannot_filter_on(api_manager: Caller) -> None:
    customer = str(uuid.uuid4())
    for filters in [
        {"tm_create": "2026-01-01T00:00:00.000000Z"},
        {"tm_delete": None},
        {"status": "idle"},
        {"customer_id": "not-a-uuid"},
        {"customer_id": "\u0000"},
        {"campaign_id": f"{customer}\u0000"},
        {"customer_id": 5},
        {"id": None},
        {"deleted": 1},
        {"deleted": None},
        {"name": 5},
        {"name\u0000": "x"},
        [customer],
        7,
    ]:
        reply = await api_manager.outdial_list(now_token(), 10, filters)  # type: ignore[arg-type]
        assert_refused(reply, "INVALID_ARGUMENT", "INVALID_FILTER")
    # A NUL in a text filter is no error: nothing has it.
    reply = await api_manager.outdial_list(now_token(), 10, {"name": "a\u0000b"})
    assert reply.parse(go.outdials) == []
    for token in ["yesterday", "\u0000", "2026-01-01T00:00:00.000000Z\u0000", "2026-13"]:
        reply = await api_manager.outdial_list(token, 10, {"customer_id": customer})
        assert_refused(reply, "INVALID_ARGUMENT", "INVALID_PAGE_TOKEN")
    for size in ["0", "-1", "abc", "9" * 30]:
        if size == "9" * 30:
            continue  # capped, not refused
        reply = await api_manager.request("GET", f"/v1/outdials?page_size={size}", {})
        assert_refused(reply, "INVALID_ARGUMENT", "INVALID_PAGE_SIZE")
    reply = await api_manager.request("GET", f"/v1/outdials?page_size={'9' * 30}", {})
    assert reply.parse(go.outdials) is not None


# ---- targets ------------------------------------------------------------------------


async def test_targets_as_the_platform_adds_and_dials_them(
    api_manager: Caller, campaign_manager: Caller
) -> None:
    customer = str(uuid.uuid4())
    outdial_id = (await new_outdial(api_manager, customer))["id"]
    # The Go client, as its test sends it: nil destinations left out.
    first = (
        await api_manager.outdialtarget_create(
            outdial_id,
            "test name",
            "test detail",
            "test data",
            address("tel", "+821100000001"),
            address("tel", "+821100000002"),
            None,
            None,
            address("tel", "+821100000005"),
        )
    ).parse(go.target)
    assert first["outdial_id"] == outdial_id and first["status"] == "idle"
    assert [first[f"destination_{i}"] for i in range(5)] == [
        {"type": "tel", "target": "+821100000001"},
        {"type": "tel", "target": "+821100000002"},
        None,
        None,
        {"type": "tel", "target": "+821100000005"},
    ]
    assert [first[f"try_count_{i}"] for i in range(5)] == [0] * 5
    # campaign-manager's "never tried": tm_update equals tm_create.
    assert first["tm_update"] == first["tm_create"] and first["tm_delete"] is None
    # api-manager: all five, the absent ones as {}.
    named = address("tel", "+15559876543", target_name="Alice", detail="mobile")
    second = (
        await api_manager.outdialtarget_create_as_api_manager(outdial_id, "n", "d", "x", named)
    ).parse(go.target)
    assert second["destination_0"] == named
    assert [second[f"destination_{i}"] for i in range(1, 5)] == [None] * 4
    assert (await campaign_manager.outdialtarget_get(first["id"])).parse(go.target) == first

    # Every address type of VoIPbin's address model.
    some = str(uuid.uuid4())
    for destination in [
        address("sip", "alice@example.com"),
        address("email", "someone@example.com"),
        address("agent", some),
        address("conference", some),
        address("ai", some),
        address("ai_team", some),
        address("extension", "2000"),
        address("line", "U4af4980629f1e2d3c4b5a69788796a5b"),
        address("web_session", some),
        address("webchat", "widget-1"),
        address("whatsapp", "+821012345678"),
    ]:
        added = (
            await api_manager.outdialtarget_create(outdial_id, "t", "", "", None, destination)
        ).parse(go.target)
        assert added["destination_1"] == destination and added["destination_0"] is None

    # api-manager's paging of the targets: every one once, newest first.
    seen: list[str] = []
    token = now_token()
    while page := (await api_manager.outdialtarget_gets_by_outdial_id(outdial_id, token, 5)).parse(
        go.targets
    ):
        seen += [t["id"] for t in page]
        last = go.time(page[-1]["tm_create"], "tm_create")
        assert last is not None
        token = go_time(last)
    assert len(seen) == len(set(seen)) == 13
    assert seen[-2:] == [second["id"], first["id"]]

    # campaign-manager's dialing: available (thresholds in the query string, as its
    # client sends them; or in data, as VoIPbin's server reads them), least recently
    # updated first; then progressing, then the result.
    available = await campaign_manager.outdialtarget_gets_available(outdial_id, [2] * 5, 1)
    assert available.parse(go.targets) == [first]
    body = {f"try_count_{i}": n for i, n in enumerate([3, 0, 0, 0, 0])} | {"limit": 1}
    by_data = await campaign_manager.request("GET", f"/v1/outdials/{outdial_id}/available", body)
    assert by_data.parse(go.targets) == [first]
    zero = await campaign_manager.outdialtarget_gets_available(outdial_id, [0] * 5, 10)
    assert zero.parse(go.targets) == []

    dialing = (
        await campaign_manager.outdialtarget_update_status_progressing(first["id"], 1)
    ).parse(go.target)
    assert (dialing["status"], dialing["try_count_1"], dialing["try_count_0"]) == (
        "progressing",
        1,
        0,
    )
    assert dialing["tm_update"] > dialing["tm_create"]
    again = await campaign_manager.outdialtarget_update_status_progressing(first["id"], 1)
    assert_refused(again, "FAILED_PRECONDITION", "OUTDIAL_TARGET_PROGRESSING")
    listed = await campaign_manager.outdialtarget_gets_available(outdial_id, [2] * 5, 1)
    assert listed.parse(go.targets) == [second]
    retry = (await campaign_manager.outdialtarget_update_status(first["id"], "idle")).parse(
        go.target
    )
    assert retry["status"] == "idle" and retry["try_count_1"] == 1
    await campaign_manager.outdialtarget_update_status_progressing(first["id"], 0)
    done = (await campaign_manager.outdialtarget_update_status(first["id"], "done")).parse(
        go.target
    )
    assert (done["status"], done["try_count_0"], done["try_count_1"]) == ("done", 1, 1)
    # Kept on purpose (docs/envelope.md): a result for a target not progressing.
    late = await campaign_manager.outdialtarget_update_status(first["id"], "done")
    assert late.status_code == 409
    assert_refused(late, "FAILED_PRECONDITION", "OUTDIAL_TARGET_NOT_PROGRESSING")
    absent = await campaign_manager.outdialtarget_update_status_progressing(second["id"], 3)
    assert_refused(absent, "FAILED_PRECONDITION", "OUTDIAL_TARGET_DESTINATION_ABSENT")
    for index in (-1, 5):
        bad = await campaign_manager.outdialtarget_update_status_progressing(second["id"], index)
        error = assert_refused(bad, "INVALID_ARGUMENT", "INVALID_COMMAND")
        assert error.details == [
            {"loc": "destination_index", "msg": error.details[0]["msg"]}  # type: ignore[index]
        ]
    status = await campaign_manager.outdialtarget_update_status(second["id"], "progressing")
    assert_refused(status, "INVALID_ARGUMENT", "INVALID_COMMAND")

    removed = (await api_manager.outdialtarget_delete(second["id"])).parse(go.target)
    assert removed["tm_delete"] is not None
    assert (await api_manager.outdialtarget_get(second["id"])).parse(go.target) == removed
    gone = await api_manager.outdialtarget_delete(second["id"])
    assert_refused(gone, "NOT_FOUND", "OUTDIAL_TARGET_NOT_FOUND")
    page = await api_manager.outdialtarget_gets_by_outdial_id(outdial_id, now_token(), 100)
    assert second["id"] not in [t["id"] for t in page.parse(go.targets)]

    # A deleted outdial's targets: listed and available none; added none.
    await api_manager.outdial_delete(outdial_id)
    page = await api_manager.outdialtarget_gets_by_outdial_id(outdial_id, now_token(), 100)
    assert page.parse(go.targets) == []
    available = await campaign_manager.outdialtarget_gets_available(outdial_id, [9] * 5, 10)
    assert available.parse(go.targets) == []
    late_add = await api_manager.outdialtarget_create(outdial_id, "n", "d", "x", TEL)
    assert_refused(late_add, "NOT_FOUND", "OUTDIAL_NOT_FOUND")


# ---- errors -------------------------------------------------------------------------


async def test_no_route_is_404_with_no_data(api_manager: Caller) -> None:
    customer = str(uuid.uuid4())
    outdial_id = (await new_outdial(api_manager, customer))["id"]
    for method, uri in [
        ("GET", "/v1/nothing"),
        ("PATCH", "/v1/outdials"),
        ("post", "/v1/outdials"),
        ("GET", f"/v1/outdials/{outdial_id.upper()}"),
        ("GET", f"/v1/outdials/{outdial_id}?x=1"),  # only lists and /available take one
        ("POST", "/v1/outdials?x=1"),
        ("PUT", "/v1/outdials"),
        ("GET", f"/v1/outdials/{outdial_id}/nothing"),
        ("GET", f"/v1/outdialtargets/{outdial_id}/progressing"),
        ("POST", f"/v1/outdialtargets/{outdial_id}"),
        ("GET", "/v1/outdialtargets"),
        ("GET", "/v1.0/outdials"),
    ]:
        reply = await api_manager.request(method, uri, {})
        assert_no_route(reply)
    raw = await api_manager.raw(api_manager.envelope("GET", "/v1/nothing"))
    assert raw == go.Response(**NO_ROUTE, data=None)


async def test_every_refusal_is_a_typed_error(api_manager: Caller) -> None:
    customer = str(uuid.uuid4())
    outdial_id = (await new_outdial(api_manager, customer))["id"]
    missing = str(uuid.uuid4())
    not_found = "The outdial was not found."
    for reply in [
        await api_manager.outdial_get(missing),
        await api_manager.outdial_delete(missing),
        await api_manager.outdial_update_basic_info(missing, "n", "d"),
        await api_manager.outdial_update_campaign_id(missing, NIL),
        await api_manager.outdial_update_data(missing, "x"),
        await api_manager.outdialtarget_create(missing, "n", "d", "x", TEL),
        await api_manager.outdialtarget_gets_by_outdial_id(missing, now_token(), 10),
        await api_manager.outdialtarget_gets_available(missing, [1] * 5, 1),
    ]:
        assert reply.status_code == 404
        assert_refused(reply, "NOT_FOUND", "OUTDIAL_NOT_FOUND", not_found)
    target_not_found = "The outdial target was not found."
    for reply in [
        await api_manager.outdialtarget_get(missing),
        await api_manager.outdialtarget_delete(missing),
        await api_manager.outdialtarget_update_status_progressing(missing, 0),
        await api_manager.outdialtarget_update_status(missing, "idle"),
    ]:
        assert_refused(reply, "NOT_FOUND", "OUTDIAL_TARGET_NOT_FOUND", target_not_found)

    # The request itself.
    for body in [b"not json", b"[1]", b"{}", b'{"uri": 5, "method": "GET"}']:
        assert_refused(await api_manager.raw(body), "INVALID_ARGUMENT", "INVALID_REQUEST")
    no_data = await api_manager.request("POST", "/v1/outdials")
    assert_refused(no_data, "INVALID_ARGUMENT", "INVALID_REQUEST")
    not_object = await api_manager.request("PUT", f"/v1/outdials/{outdial_id}", ["n", "d"])
    assert_refused(not_object, "INVALID_ARGUMENT", "INVALID_REQUEST")

    # The command's fields: details name each.
    for fields, loc in [
        ({"customer_id": "not-a-uuid"}, "customer_id"),
        ({"customer_id": f"{customer}\u0000"}, "customer_id"),
        ({"customer_id": None}, "customer_id"),
        ({"campaign_id": "x"}, "campaign_id"),
        ({"name": "x" * 1025}, "name"),
    ]:
        body = {"customer_id": customer, "campaign_id": NIL, "name": "", "detail": "", "data": ""}
        reply = await api_manager.request("POST", "/v1/outdials", body | fields)
        error = assert_refused(reply, "INVALID_ARGUMENT", "INVALID_COMMAND")
        assert error.details is not None and [d["loc"] for d in error.details] == [loc]
    taken = {"customer_id": customer, "name": "", "detail": "", "data": "", "id": outdial_id}
    reply = await api_manager.request("POST", "/v1/outdials", taken)
    assert reply.status_code == 409
    assert_refused(reply, "ALREADY_EXISTS", "OUTDIAL_ALREADY_EXISTS")
    nothing = await api_manager.outdialtarget_create_as_api_manager(outdial_id, "n", "d", "x")
    assert_refused(nothing, "INVALID_ARGUMENT", "INVALID_COMMAND")
    bad_tel = address("tel", "+1 555 987 6543")
    reply = await api_manager.outdialtarget_create(outdial_id, "n", "d", "x", bad_tel)
    error = assert_refused(reply, "INVALID_ARGUMENT", "INVALID_COMMAND")
    assert error.details == [
        {"loc": "destination_0.target", "msg": "a tel target must be E.164: '+' then digits only"}
    ]

    # /available's numbers: out of range or not integers are 400, never 500.
    available = f"/v1/outdials/{outdial_id}/available"
    for query, reason in [
        ("try_count_0=99999999999999999999999", "INVALID_TRY_COUNT_0"),
        ("try_count_1=-1", "INVALID_TRY_COUNT_1"),
        ("try_count_4=2147483648", "INVALID_TRY_COUNT_4"),
        ("try_count_2=abc", "INVALID_TRY_COUNT_2"),
        (f"try_count_3={query_escape(chr(0))}", "INVALID_TRY_COUNT_3"),
        ("limit=0", "INVALID_LIMIT"),
        ("limit=1001", "INVALID_LIMIT"),
        ("limit=1.5", "INVALID_LIMIT"),
    ]:
        reply = await api_manager.request("GET", f"{available}?{query}")
        assert_refused(reply, "INVALID_ARGUMENT", reason)
    for data, reason in [
        ({"try_count_0": 1e30}, "INVALID_TRY_COUNT_0"),
        ({"try_count_0": 2**63 - 1}, "INVALID_TRY_COUNT_0"),
        ({"try_count_0": 1.5}, "INVALID_TRY_COUNT_0"),
        ({"try_count_0": "3"}, "INVALID_TRY_COUNT_0"),
        ({"try_count_0": True}, "INVALID_TRY_COUNT_0"),
        ({"limit": -1}, "INVALID_LIMIT"),
    ]:
        reply = await api_manager.request("GET", available, data)
        assert_refused(reply, "INVALID_ARGUMENT", reason)
    reply = await api_manager.request("GET", available, [1])
    assert_refused(reply, "INVALID_ARGUMENT", "INVALID_REQUEST")
    huge = api_manager.envelope("GET", available, {"try_count_0": 0}).replace(
        b"0}", b"9" * 30 + b"}"
    )
    assert refused(await api_manager.raw(huge)).status == "INVALID_ARGUMENT"
    # Integral floats are numbers as Go reads them (float64).
    reply = await api_manager.request("GET", available, {"try_count_0": 3.0, "limit": 1.0})
    assert reply.parse(go.targets) == []


# ---- the transport -------------------------------------------------------------------


async def test_many_callers_at_once_each_get_their_own_reply(api_manager: Caller) -> None:
    customer = str(uuid.uuid4())
    outdial_id = (await new_outdial(api_manager, customer))["id"]
    replies = await asyncio.gather(
        *(api_manager.outdialtarget_create(outdial_id, f"t{i}", "", "", TEL) for i in range(20))
    )
    assert sorted(r.parse(go.target)["name"] for r in replies) == sorted(f"t{i}" for i in range(20))


async def test_a_reply_that_cannot_be_published_runs_its_request_once(
    store_url: str, tmp_path: Path
) -> None:
    # The envelope listener alone, its replies' channel gone (as after a broker
    # hiccup): the request is done, its reply fails, and it is settled all the same,
    # never handed out and run a second time.
    async with (
        running_stack(store_url, tmp_path, ["command", "projector", "relay"]) as stack,
        Caller() as caller,
    ):
        connection = await stack.rt.connection()
        bus = OutdialClient(AMQP_URL, connection=connection)
        await bus.connect()
        replies = Replies(connection, AMQP_URL)
        await replies.start()
        await replies.close()
        executor = ThreadPoolExecutor(2)
        listener = EnvelopeListener(
            connection, replies, Backend(stack.rt.queries, bus, executor), prefetch=1
        )
        await listener.start()
        try:
            created = await bus.send(
                {"type": "CreateOutdial", "customer_id": str(uuid.uuid4())}
                | {"name": "", "detail": "", "data": ""}
            )
            outdial_id = created["data"]["id"]
            body = {"name": "once", "detail": "", "data": "", "destination_0": TEL}
            queue = await caller.channel.declare_queue("", exclusive=True, auto_delete=True)
            await caller.publish(
                caller.envelope("POST", f"/v1/outdials/{outdial_id}/targets", body), queue.name
            )

            def names() -> list[str]:
                page = stack.rt.queries.targets_page(outdial_id, None, 10)
                return [orjson.loads(body)["name"] for body in page.bodies]

            for _ in range(100):
                if names():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(2)  # time enough for a redelivery to be run
            print("NAMES", names(), stack.rt.queries.outdial(None, outdial_id))
            assert names() == ["once"]
            assert await queue.get(fail=False) is None  # no reply could be sent
        finally:
            await listener.stop()
            await bus.close()
            executor.shutdown()
        requests = await caller.channel.declare_queue(REQUEST_QUEUE, passive=True)
        assert requests.declaration_result.message_count == 0  # settled, not requeued


async def test_a_request_with_a_message_id_takes_effect_once(api_manager: Caller) -> None:
    # VoIPbin's callers set none; a sender that does can re-send safely.
    customer = str(uuid.uuid4())
    outdial_id = (await new_outdial(api_manager, customer))["id"]
    body = {"name": "once", "detail": "", "data": "", "destination_0": TEL}
    envelope = api_manager.envelope("POST", f"/v1/outdials/{outdial_id}/targets", body)
    answers = []
    for _ in range(2):
        queue = await api_manager.channel.declare_queue("", exclusive=True, auto_delete=True)
        await api_manager.channel.default_exchange.publish(
            aio_pika.Message(envelope, message_id="request-1", reply_to=queue.name),
            routing_key=REQUEST_QUEUE,
        )
        message = None
        for _ in range(150):
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None
        answers.append(go.response(message.body).parse(go.target))
    assert answers[0] == answers[1]
    page = await api_manager.outdialtarget_gets_by_outdial_id(outdial_id, now_token(), 10)
    assert [t["id"] for t in page.parse(go.targets)] == [answers[0]["id"]]
    assert orjson.loads(envelope)["publisher"] == "api-manager"
