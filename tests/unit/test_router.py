"""The HTTP API's router (services/gateway/http.py): what path reaches which handler,
with which values, as aiohttp's own router would route it."""

from __future__ import annotations

from typing import Any

import pytest

from services.gateway.http import Router


async def handler(*_: Any) -> Any:
    raise AssertionError("never called here")


async def other(*_: Any) -> Any:
    raise AssertionError("never called here")


@pytest.fixture
def router() -> Router:
    r = Router()
    r.add("GET", "/healthz", handler)
    r.add("GET", "/v1.0/outdials/{id}/targets/{target_id}", handler)
    r.add("GET", "/v1.0/outdials/{id}", handler)
    r.add("PUT", "/v1.0/outdials/{id}", other)
    r.add("PUT", "/v1.0/outdials/{id}/data", other)
    return r


def test_a_fixed_path_is_looked_up(router: Router) -> None:
    found = router.resolve("/healthz")
    assert found is not None
    assert found[0].template == "/healthz" and found[1] == {}
    assert router.resolve("/healthz/x") is None
    assert router.resolve("/healthzx") is None


def test_variables_take_one_segment_each(router: Router) -> None:
    found = router.resolve("/v1.0/outdials/a/targets/b")
    assert found is not None
    assert found[0].template == "/v1.0/outdials/{id}/targets/{target_id}"
    assert found[1] == {"id": "a", "target_id": "b"}
    found = router.resolve("/v1.0/outdials/a/data")
    assert found is not None and found[0].template == "/v1.0/outdials/{id}/data"
    assert router.resolve("/v1.0/outdials/a/targets/b/more") is None
    assert router.resolve("/v1.0/outdials/a/nothing") is None


def test_an_empty_segment_is_no_value(router: Router) -> None:
    assert router.resolve("/v1.0/outdials/") is None
    assert router.resolve("/v1.0/outdials//targets/b") is None


def test_anything_else_in_a_segment_reaches_the_handler(router: Router) -> None:
    # A malformed id is the handler's to refuse (400), not "no route" (404).
    for value in ("{x}", "a{b", "..", " x", "\x00"):
        found = router.resolve(f"/v1.0/outdials/{value}")
        assert found is not None and found[1] == {"id": value}


def test_quoted_slash_and_percent_are_read_as_aiohttp_reads_them(router: Router) -> None:
    # aiohttp's path_safe leaves %2F and %25 quoted; a variable holds them unquoted.
    found = router.resolve("/v1.0/outdials/a%2Fb%25c")
    assert found is not None and found[1] == {"id": "a/b%c"}


def test_methods_of_a_path(router: Router) -> None:
    found = router.resolve("/v1.0/outdials/a")
    assert found is not None
    route = found[0]
    assert route.handler("GET") is handler
    assert route.handler("HEAD") is handler  # a GET answers HEAD
    assert route.handler("PUT") is other
    assert route.handler("PATCH") is None
    assert route.allowed() == ["GET", "HEAD", "PUT"]
    data = router.resolve("/v1.0/outdials/a/data")
    assert data is not None
    assert data[0].handler("HEAD") is None and data[0].allowed() == ["PUT"]


def test_routes_lists_each_method_and_template_once(router: Router) -> None:
    assert sorted((m, t) for m, t, _ in router.routes()) == [
        ("GET", "/healthz"),
        ("GET", "/v1.0/outdials/{id}"),
        ("GET", "/v1.0/outdials/{id}/targets/{target_id}"),
        ("PUT", "/v1.0/outdials/{id}"),
        ("PUT", "/v1.0/outdials/{id}/data"),
    ]


def test_a_route_is_added_once() -> None:
    r = Router()
    r.add("GET", "/v1.0/outdials/{id}", handler)
    with pytest.raises(ValueError, match="routed twice"):
        r.add("GET", "/v1.0/outdials/{id}", other)
