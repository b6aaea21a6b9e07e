"""The one table of operations, and what the doors generate from it (no I/O): the
HTTP routes, the envelope's routes as VoIPbin's listen handler matches them, and
the parsing both doors share (page tokens, numbers, list filters)."""

from __future__ import annotations

import inspect
import uuid
from typing import Any

import pytest

from services.gateway import envelope, operations
from services.gateway.envelope import Request, body_of, call_of, find
from services.gateway.operations import (
    LIMIT,
    MAX_TRY_COUNTS,
    OPERATIONS,
    Call,
    Refused,
    outdial_filters,
    page_token,
    paging,
)
from shared.errors import ErrorCode

ID = str(uuid.uuid4())
# VoIPbin's listen handler (bin-outdial-manager/pkg/listenhandler/main.go), all 14.
VOIPBIN_ROUTES = {
    ("POST", "/v1/outdials"),
    ("GET", "/v1/outdials"),
    ("GET", "/v1/outdials/<outdial_id>"),
    ("PUT", "/v1/outdials/<outdial_id>"),
    ("DELETE", "/v1/outdials/<outdial_id>"),
    ("GET", "/v1/outdials/<outdial_id>/available"),
    ("POST", "/v1/outdials/<outdial_id>/targets"),
    ("GET", "/v1/outdials/<outdial_id>/targets"),
    ("PUT", "/v1/outdials/<outdial_id>/campaign_id"),
    ("PUT", "/v1/outdials/<outdial_id>/data"),
    ("GET", "/v1/outdialtargets/<target_id>"),
    ("DELETE", "/v1/outdialtargets/<target_id>"),
    ("POST", "/v1/outdialtargets/<target_id>/progressing"),
    ("PUT", "/v1/outdialtargets/<target_id>/status"),
}


def test_each_operation_is_declared_once() -> None:
    names = [op.name for op in OPERATIONS]
    assert len(names) == len(set(names))
    http = [(op.http.method, op.http.path) for op in OPERATIONS if op.http]
    assert len(http) == len(set(http))
    platform = [(op.envelope.method, op.envelope.path) for op in OPERATIONS if op.envelope]
    assert len(platform) == len(set(platform))
    assert set(platform) == VOIPBIN_ROUTES
    for op in OPERATIONS:
        assert op.handler.__name__ == op.name
        assert inspect.iscoroutinefunction(op.handler)
        assert op.http or op.envelope
        if op.write:
            assert op.command is not None and op.command.__name__ in op.summary


def test_a_writes_body_is_its_command_but_what_the_door_fills_in() -> None:
    by_name = {op.name: op for op in OPERATIONS}
    assert by_name["create_outdial"].body_fields == ["id", "campaign_id", "name", "detail", "data"]
    assert by_name["delete_outdial"].body_fields == []
    assert by_name["mark_target_progressing"].body_fields == ["destination_index"]
    assert by_name["get_outdial"].body_fields == []


@pytest.mark.parametrize(
    ("method", "uri", "name"),
    [
        ("POST", "/v1/outdials", "create_outdial"),
        ("GET", "/v1/outdials", "list_outdials"),
        ("GET", "/v1/outdials?page_token=&page_size=10", "list_outdials"),
        ("GET", f"/v1/outdials/{ID}", "get_outdial"),
        ("PUT", f"/v1/outdials/{ID}", "update_outdial"),
        ("DELETE", f"/v1/outdials/{ID}", "delete_outdial"),
        ("GET", f"/v1/outdials/{ID}/available?try_count_0=1&limit=1", "available_targets"),
        ("GET", f"/v1/outdials/{ID}/available", "available_targets"),
        ("POST", f"/v1/outdials/{ID}/targets", "add_target"),
        ("GET", f"/v1/outdials/{ID}/targets?page_size=1", "list_targets"),
        ("PUT", f"/v1/outdials/{ID}/campaign_id", "update_outdial_campaign"),
        ("PUT", f"/v1/outdials/{ID}/data", "update_outdial_data"),
        ("GET", f"/v1/outdialtargets/{ID}", "get_target"),
        ("DELETE", f"/v1/outdialtargets/{ID}", "delete_target"),
        ("POST", f"/v1/outdialtargets/{ID}/progressing", "mark_target_progressing"),
        ("PUT", f"/v1/outdialtargets/{ID}/status", "update_target_status"),
    ],
)
def test_the_envelope_routes_as_voipbin_does(method: str, uri: str, name: str) -> None:
    found = find(Request(uri, method, None))
    assert found is not None and found[0].name == name


@pytest.mark.parametrize(
    ("method", "uri"),
    [
        ("get", "/v1/outdials"),  # methods are upper-case
        ("PATCH", "/v1/outdials"),
        ("GET", f"/v1/outdials/{ID.upper()}"),  # regUUID is lower-case
        ("GET", f"/v1/outdials/{ID}?x=1"),  # only the lists and /available take a query
        ("POST", "/v1/outdials?x=1"),
        ("PUT", f"/v1/outdialtargets/{ID}/status?x=1"),
        ("GET", f"/v1/outdials/{ID}/"),
        ("GET", f"/v1/outdials/{ID}x"),
        ("GET", "/v1/outdials/not-a-uuid"),
        ("GET", f"/v1/outdials/{ID}\n"),
    ],
)
def test_what_voipbin_routes_nowhere_is_no_route(method: str, uri: str) -> None:
    assert find(Request(uri, method, None)) is None


def call(uri: str, data: Any = None, method: str = "GET") -> Call:
    request = Request(uri, method, data)
    found = find(request)
    assert found is not None
    return call_of(found[0], found[1], request, None)


def test_available_takes_its_numbers_from_the_query_then_the_data() -> None:
    uri = f"/v1/outdials/{ID}/available"
    query = call(f"{uri}?try_count_0=2&try_count_4=3&limit=1", {"try_count_0": 9})
    assert dict(query.params) == {
        "max_try_count_0": 2,
        "max_try_count_1": 0,
        "max_try_count_2": 0,
        "max_try_count_3": 0,
        "max_try_count_4": 3,
        "limit": 1,
    }
    data = call(uri, {"try_count_1": 3, "limit": 2.0})
    assert (data.params["max_try_count_1"], data.params["limit"]) == (3, 2)
    assert call(uri).params["limit"] == LIMIT.default
    assert call(f"{uri}?limit=1&limit=5").params["limit"] == 1  # the first, as Go's Get
    assert call(uri).ids == {"outdial_id": ID}


@pytest.mark.parametrize(
    "raw", ["99999999999999999999999", "-1", "2147483648", "x", "", " 1", "1e3", "\u0665", "\0"]
)
def test_a_number_out_of_range_or_not_one_is_refused(raw: str) -> None:
    with pytest.raises(Refused) as e:
        MAX_TRY_COUNTS[0].parse(raw, "try_count_0")
    assert e.value.code is ErrorCode.INVALID_MAX_TRY_COUNT_0
    assert "try_count_0" in e.value.message


@pytest.mark.parametrize("raw", [1.5, True, [1], {"a": 1}, 2**64])
def test_a_json_value_that_is_no_integer_is_refused(raw: Any) -> None:
    with pytest.raises(Refused):
        LIMIT.parse(raw)
    assert LIMIT.parse(None) == LIMIT.default


@pytest.mark.parametrize(
    ("token", "cursor"),
    [
        ("", None),
        ("2022-04-28 01:41:40.503790", ("2022-04-28 01:41:40.503790", None)),
        ("2022-04-28T01:41:40.503790Z", ("2022-04-28 01:41:40.503790", None)),
        ("2022-04-28T01:41:40.5Z", ("2022-04-28 01:41:40.500000", None)),
        ("2022-04-28T01:41:40Z", ("2022-04-28 01:41:40.000000", None)),
        ("2022-04-28T01:41:40.503790", ("2022-04-28 01:41:40.503790", None)),
        (f"2022-04-28 01:41:40.503790|{ID}", ("2022-04-28 01:41:40.503790", ID)),
    ],
)
def test_page_tokens_of_either_family(token: str, cursor: Any) -> None:
    assert page_token(token) == cursor


@pytest.mark.parametrize(
    "token",
    [
        "yesterday",
        "2022-04-28",
        "2022-04-28T01:41:40.5037901Z",
        "2022-04-28T01:41:40.503790+09:00",
        "2022-04-28 01:41:40.503790|not-an-id",
        "2022-04-28 01:41:40.503790\0",
        "\0",
        "２０２２-04-28 01:41:40.503790",  # noqa: RUF001 - full-width digits
    ],
)
def test_anything_else_is_no_page_token(token: str) -> None:
    with pytest.raises(Refused) as e:
        page_token(token)
    assert e.value.code is ErrorCode.INVALID_PAGE_TOKEN


def test_page_size_is_refused_before_the_token() -> None:
    with pytest.raises(Refused) as e:
        paging("0", "yesterday")
    assert e.value.code is ErrorCode.INVALID_PAGE_SIZE
    assert paging("1000", None) == (None, operations.MAX_PAGE_SIZE)


def test_list_filters_as_voipbin_reads_them() -> None:
    customer, campaign = str(uuid.uuid4()), str(uuid.uuid4())
    filters = outdial_filters(
        Call(None, body={"customer_id": customer.upper(), "campaign_id": campaign, "name": "n"})
    )
    assert (filters.customer_id, filters.campaign_id, filters.name) == (customer, campaign, "n")
    assert filters.deleted is False  # the live ones, unless asked (CONTRACT 1)
    assert outdial_filters(Call(None, body={"deleted": "true"})).deleted is True
    assert outdial_filters(Call(None, body={"deleted": "yes"})).deleted is False
    assert outdial_filters(Call(None, body={"id": ""})).id == str(uuid.UUID(int=0))
    # The HTTP API's caller sees its own, whatever the body says.
    mine = outdial_filters(Call(customer, body={"customer_id": campaign}))
    assert mine.customer_id == customer


@pytest.mark.parametrize(
    "body",
    [
        {"tm_create": "2022-04-28T01:41:40.503790Z"},
        {"tm_update": None},
        {"unknown": 1},
        {"customer_id": "not-a-uuid"},
        {"customer_id": f"{ID}\0"},
        {"customer_id": None},
        {"campaign_id": 5},
        {"deleted": 0},
        {"deleted": None},
        {"detail": ["x"]},
    ],
)
def test_other_filters_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(Refused) as e:
        outdial_filters(Call(None, body=body))
    assert e.value.code is ErrorCode.INVALID_FILTER


def test_a_body_as_gos_decoder_leaves_it() -> None:
    by_name = {op.name: op for op in OPERATIONS}
    add = by_name["add_target"]
    body = body_of(
        add,
        {
            "name": None,
            "destination_0": {"type": "tel", "target": "+15559876543"},
            "destination_1": {},
            "destination_2": {"type": "", "target": ""},
            "destination_3": {"type": "tel"},
        },
    )
    assert body == {
        "name": "",
        "detail": "",
        "data": "",
        "destination_0": {"type": "tel", "target": "+15559876543"},
        "destination_1": None,
        "destination_2": None,
        "destination_3": {"type": "tel"},  # not empty: the command says what is wrong
    }
    assert body_of(by_name["delete_outdial"], {"anything": 1}) == {}
    with pytest.raises(Refused) as e:
        body_of(add, None)
    assert e.value.code is ErrorCode.INVALID_REQUEST
    assert body_of(by_name["list_outdials"], None) == {}


def test_the_envelope_module_names_the_platforms_queue() -> None:
    assert envelope.REQUEST_QUEUE == "bin-manager.outdial-manager.request"
