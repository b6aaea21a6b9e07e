"""The HTTP API's limits (CONTRACT 5) under hostile input, on the real service.

Bodies over 1 MiB are 413, chunked or not; a body not declared JSON
sent with the token cookie is 415 (CSRF);
`page_size` over 100 is capped and anything but a positive integer is 400; a
bulk-shaped body is 400 and adds nothing; a bad UUID in a path is 400, an
unknown route 404, a body that is not a JSON object 400: every refusal in the
service's JSON error shape. `Expect: 100-continue` is answered 100 once the
request is worth its body, and a refusal comes before it. A client that sends
its request head, or its body, one byte a second is cut off.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from services import bootstrap
from services.gateway.http import MAX_AVAILABLE, MAX_BODY, MAX_PAGE_SIZE
from shared.client import OutdialClient
from tests.expected import TEL
from tests.fixtures import AMQP_URL
from tests.integration.stack import Stack, running_stack
from tests.reliability.routes import BODIES, OUTDIALS, ROUTES, fill

pytestmark = pytest.mark.integration

BODY_ROUTES = [(m, p) for m, p in ROUTES if m in {"POST", "PUT"}]
ID_ROUTES = [(m, p) for m, p in ROUTES if "{id}" in p]
# Shortened for the slow-client tests only (the service's are
# HEADER_TIMEOUT_SECONDS and BODY_TIMEOUT_SECONDS of services.gateway.http).
SLOW_CLIENT_TIMEOUT = 2.0


@pytest.fixture
async def stack(store_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(store_url, tmp_path) as s:
        yield s


async def call(
    stack: Stack, method: str, path: str, token: str | None, data: Any = None, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body, headers), asserting the body is JSON whatever the status;
    a body is sent as JSON (Content-Type) unless the headers say otherwise."""
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    if data is not None:
        headers = {"Content-Type": "application/json", **headers}
    async with stack.http.request(
        method, stack.base + path, data=data, headers={**auth, **headers}
    ) as r:
        raw = await r.read()
        assert r.content_type == "application/json", (r.status, raw[:200])
        return r.status, orjson.loads(raw), dict(r.headers)


def assert_error(answer: tuple[int, Any, dict[str, str]], status: int, code: str) -> None:
    got, body, _ = answer
    assert (got, body.get("error", {}).get("code")) == (status, code), body
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str)


async def new_outdial(stack: Stack, token: str) -> tuple[str, dict[str, str]]:
    body = orjson.dumps(BODIES["POST", OUTDIALS])
    status, outdial, headers = await call(stack, "POST", OUTDIALS, token, body)
    assert status == 200, outdial
    return outdial["id"], {"X-Outdial-Min-Position": headers["X-Outdial-Position"]}


def store_position(stack: Stack) -> int:
    return stack.rt.app.recorder.max_notification_id() or 0


# ---- bodies -----------------------------------------------------------------------


def body_of_size(size: int) -> bytes:
    """A JSON object of exactly `size` bytes (a long `data`)."""
    empty = b'{"name":"n","detail":"d","data":""}'
    return empty[:-2] + b"x" * (size - len(empty)) + b'"}'


async def test_a_body_over_1_mib_is_413_chunked_or_not(stack: Stack) -> None:
    token = stack.token()
    outdial_id, _ = await new_outdial(stack, token)
    target_id = str(uuid.uuid4())
    for method, template in BODY_ROUTES:
        path = fill(template, outdial_id, target_id)
        # At the limit: read and parsed, then a command like any other (some routes
        # refuse the long `data`, some have no use for it).
        assert len(body_of_size(MAX_BODY)) == MAX_BODY
        status, _, _ = await call(stack, method, path, token, body_of_size(MAX_BODY))
        assert status in {200, 400}, (method, template)

        before = store_position(stack)
        over = await call(stack, method, path, token, body_of_size(MAX_BODY + 1))
        assert_error(over, 413, "body_too_large")
        assert int(over[2]["X-Outdial-Position"]) >= 0

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(MAX_BODY // 65536 + 1):
                yield b" " * 65536  # whitespace: only its size can refuse it

        assert_error(await call(stack, method, path, token, chunks()), 413, "body_too_large")
        assert store_position(stack) == before  # neither reached the bus


async def test_bodies_that_are_not_a_json_object_are_400(stack: Stack) -> None:
    token = stack.token()
    outdial_id, _ = await new_outdial(stack, token)
    not_objects = [
        b"",
        b"{not json",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"42",
        b'{"name": NaN}',
        b"\xff\xfe{}",  # not UTF-8
        b"[" * 100_000,  # past any parser's depth
        b'{"name": "n"',  # cut short
    ]
    for method, template in BODY_ROUTES:
        path = fill(template, outdial_id, str(uuid.uuid4()))
        for body in not_objects:
            answer = await call(stack, method, path, token, body)
            assert_error(answer, 400, "invalid_json")
            assert int(answer[2]["X-Outdial-Position"]) >= 0
        # With the token cookie, only a body declared JSON is read: a form or
        # text/plain is what another site's page can make a browser send (CSRF).
        # Refused before it is parsed.
        valid = orjson.dumps(BODIES.get((method, template), {}))
        before = store_position(stack)
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
        ]:
            answer = await call(
                stack,
                method,
                path,
                None,
                valid,
                **{"Content-Type": content_type, "Cookie": f"token={token}"},
            )
            assert_error(answer, 415, "unsupported_media_type")
        assert store_position(stack) == before
        # An object that is not a command is the command's 400, with details.
        status, error, _ = await call(stack, method, path, token, b'{"name": 5}')
        assert (status, error["error"]["code"]) == (400, "invalid_command")
        assert error["error"]["details"]


async def test_a_bulk_body_is_refused_and_adds_nothing(stack: Stack) -> None:
    token = stack.token()
    outdial_id, wait = await new_outdial(stack, token)
    item = {"name": "t", "detail": "", "data": "", "destination_0": TEL}
    path = f"{OUTDIALS}/{outdial_id}/targets"
    # There is no bulk route (CONTRACT 5): a body shaped like AddTargets is not an
    # AddTarget, whatever its size.
    for count in (1, 1000, 1001):
        body = orjson.dumps({"targets": [item] * count})
        status, error, _ = await call(stack, "POST", path, token, body)
        assert (status, error["error"]["code"]) == (400, "invalid_command"), count
    status, listed, _ = await call(stack, "GET", path, token, **wait)
    assert listed == {"result": [], "next_page_token": ""}


async def test_add_targets_over_the_bus_takes_at_most_1000(stack: Stack) -> None:
    # The one bulk write there is: AddTargets on the bus.
    customer = uuid.uuid4()
    token = stack.token(customer)
    outdial_id, _ = await new_outdial(stack, token)
    item = {"name": "t", "detail": "", "data": "", "destination_0": TEL}
    command = {"type": "AddTargets", "customer_id": str(customer), "outdial_id": outdial_id}
    async with OutdialClient(AMQP_URL) as bus:
        reply = await bus.send({**command, "targets": [item] * 1001})
        assert reply["status_code"] == 400
        assert reply["error"]["code"] == "invalid_command"
        assert [d["loc"] for d in reply["error"]["details"]] == ["targets"]
        wait = {"X-Outdial-Min-Position": str(store_position(stack))}
    answer = await call(stack, "GET", f"{OUTDIALS}/{outdial_id}/targets", token, **wait)
    assert answer[:2] == (200, {"result": [], "next_page_token": ""})


# ---- paging -----------------------------------------------------------------------


async def test_page_size_is_capped_at_100_and_must_be_a_positive_integer(stack: Stack) -> None:
    customer = uuid.uuid4()
    token = stack.token(customer)
    outdial_id, _ = await new_outdial(stack, token)
    item = {"name": "t", "detail": "", "data": "", "destination_0": TEL}
    async with OutdialClient(AMQP_URL) as bus:
        creates = [
            bus.send(
                {**BODIES["POST", OUTDIALS], "type": "CreateOutdial", "customer_id": str(customer)}
            )
            for _ in range(MAX_PAGE_SIZE + 1)
        ]
        replies = await asyncio.gather(*creates)
        reply = await bus.send(
            {
                "type": "AddTargets",
                "customer_id": str(customer),
                "outdial_id": outdial_id,
                "targets": [item] * (MAX_PAGE_SIZE + 1),
            }
        )
    assert {r["status_code"] for r in [*replies, reply]} == {200}
    wait = {"X-Outdial-Min-Position": str(max(r["position"] for r in [*replies, reply]))}
    for path in (OUTDIALS, f"{OUTDIALS}/{outdial_id}/targets"):
        for size, wanted in [
            ("", None),  # default: as many as the cap
            ("1", 1),
            ("+7", 7),
            ("100", 100),
            ("101", 100),
            ("1000", 100),
            ("9" * 40, 100),
        ]:
            query = f"?page_size={quote(size)}" if size else ""
            status, page, _ = await call(stack, "GET", path + query, token, **wait)
            assert status == 200, (path, size, page)
            assert len(page["result"]) == (wanted or MAX_PAGE_SIZE), (path, size)
            assert page["next_page_token"]
        for size in ["0", "-1", "-0", "abc", "1.5", "1e3", "0x10", " 5", "5 ", "1_0", "\u0665"]:
            query = f"?page_size={quote(size)}"
            status, error, _ = await call(stack, "GET", path + query, token, **wait)
            assert (status, error["error"]["code"]) == (400, "invalid_page_size"), (path, size)
        answer = await call(stack, "GET", f"{path}?page_size=&page_size=5", token, **wait)
        assert_error(answer, 400, "invalid_page_size")  # the first one counts
        answer = await call(stack, "GET", f"{path}?page_size={'9' * 5000}", token, **wait)
        assert_error(answer, 400, "invalid_page_size")  # past int()'s 4,300 digits
    available = f"{OUTDIALS}/{outdial_id}/available"
    for limit in ["0", "-1", str(MAX_AVAILABLE + 1), "x"]:
        answer = await call(stack, "GET", f"{available}?limit={limit}", token, **wait)
        assert_error(answer, 400, "invalid_limit")


# ---- paths --------------------------------------------------------------------------


async def test_a_bad_uuid_in_any_path_is_400(stack: Stack) -> None:
    token = stack.token()
    outdial_id, _ = await new_outdial(stack, token)
    some = str(uuid.uuid4())
    bad = [
        "not-a-uuid",
        "123",
        some.replace("-", ""),  # bare hex
        "{" + some + "}",
        "urn:uuid:" + some,
        some + "0",
        some[:-1] + "g",
        "%00",
        "%20" + some,
        "..",
    ]
    tried = 0
    for method, template in ID_ROUTES:
        body = orjson.dumps(BODIES.get((method, template), {}))
        for name in ("{id}", "{target_id}"):
            if name not in template:
                continue
            for value in bad:
                path = template.replace(name, value)
                path = fill(path, outdial_id, some)
                answer = await call(stack, method, path, token, body)
                if value == "..":  # the client or server resolves it: another path
                    assert answer[0] in {400, 404, 405}
                    continue
                assert_error(answer, 400, "invalid_id")
                tried += 1
            # Upper case is still a UUID: not found, not malformed.
            path = fill(template.replace(name, some.upper()), outdial_id, some)
            status, error, _ = await call(stack, method, path, token, body)
            assert status == 404, (method, path, error)
    assert tried >= len(ID_ROUTES) * 9


async def test_unknown_routes_are_404_and_wrong_methods_405(stack: Stack) -> None:
    token = stack.token()
    outdial_id, _ = await new_outdial(stack, token)
    for path in [
        "/index.html",  # "/" is the progress page
        "/v1.0",
        "/v1.0/",
        "/v1.0/nothing-here",
        "/v2.0/outdials",
        f"{OUTDIALS}/",
        f"{OUTDIALS}/{outdial_id}/nothing",
        f"{OUTDIALS}/{outdial_id}/targets/{uuid.uuid4()}/more",
        "/healthz/x",
    ]:
        for who in (token, None):
            assert_error(await call(stack, "GET", path, who), 404, "not_found")
    answer = await call(stack, "PATCH", f"{OUTDIALS}/{outdial_id}", token, b"{}")
    assert_error(answer, 405, "method_not_allowed")
    assert set(answer[2]["Allow"].split(",")) == {"GET", "HEAD", "PUT", "DELETE"}


async def expecting(stack: Stack, head: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Send a request head that says `Expect: 100-continue`; read what the server says
    before the body is sent, send the body if it said 100, read its answer."""
    port = int(stack.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if not first.startswith(b"HTTP/1.1 100 "):
            return first, b""
        writer.write(body)
        return first, await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


async def test_expect_100_continue_is_answered_once_the_request_is_worth_its_body(
    stack: Stack,
) -> None:
    # curl sends `Expect: 100-continue` with any body over 1 KiB and waits a second
    # for the 100 before sending the body anyway.
    body = body_of_size(2048)

    def head(token: str, expect: str = "100-continue") -> bytes:
        return (
            f"POST {OUTDIALS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Expect: {expect}\r\nConnection: close\r\n\r\n"
        ).encode()

    first, answer = await expecting(stack, head(stack.token()), body)
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    # Refused before its body: no 100, the refusal at once.
    first, answer = await expecting(stack, head("not-a-token"), body)
    assert first.startswith(b"HTTP/1.1 401 "), first
    assert answer == b""
    first, _ = await expecting(stack, head(stack.token(), "something-else"), body)
    assert first.startswith(b"HTTP/1.1 417 "), first


async def test_an_oversized_request_head_is_400_and_harms_nothing(stack: Stack) -> None:
    # aiohttp's parser refuses a request line or header field over 8,190 bytes
    # before the app sees it, so its 400 is plain text, not the JSON error shape.
    token = stack.token()
    for path, headers in [
        (f"{OUTDIALS}?x={'a' * 9000}", {}),
        (OUTDIALS, {"X-Big": "a" * 9000}),
        (OUTDIALS, {f"X-Many-{i}": "a" * 100 for i in range(200)}),
    ]:
        async with stack.http.get(
            stack.base + path, headers={"Authorization": f"Bearer {token}", **headers}
        ) as r:
            assert r.status == 400, path[:40]
    status, _, _ = await call(stack, "GET", OUTDIALS, token)
    assert status == 200


# ---- slow clients ---------------------------------------------------------------------


@pytest.fixture
async def slow_stack(store_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """The service with its slow-client timeouts shortened, to test them in seconds."""
    async with running_stack(store_url, tmp_path, ["command", "projector", "relay"]) as s:
        query = bootstrap.http_api(
            s.rt, header_timeout=SLOW_CLIENT_TIMEOUT, body_timeout=SLOW_CLIENT_TIMEOUT
        )
        await query.start()  # on the stack's port
        try:
            yield s
        finally:
            await query.stop()


async def trickle(stack: Stack, request: bytes, *, head_at_once: bool) -> tuple[float, int, bytes]:
    """Send `request` one byte a second (after its head, if `head_at_once`) until the
    server answers or hangs up: (seconds until then, bytes sent, what it answered)."""
    port = int(stack.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head_end = request.index(b"\r\n\r\n") + 4 if head_at_once else 0
    sent = 0

    async def send() -> None:
        nonlocal sent
        writer.write(request[:head_end])
        sent = head_end
        for i in range(head_end, len(request)):
            await asyncio.sleep(1.0)
            writer.write(request[i : i + 1])
            sent += 1

    started = time.monotonic()
    sending = asyncio.create_task(send())
    try:
        # The test's bound: the server must act well before the trickle would end.
        answer = await asyncio.wait_for(reader.read(65536), SLOW_CLIENT_TIMEOUT + 5)
        return time.monotonic() - started, sent, answer
    finally:
        sending.cancel()
        writer.close()


async def test_a_client_sending_one_byte_a_second_is_cut_off(slow_stack: Stack) -> None:
    token = slow_stack.token()
    head = (
        b"POST /v1.0/outdials HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
    )
    body = orjson.dumps(BODIES["POST", OUTDIALS])
    whole = head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    slow_head, slow_body, silent, _ = await asyncio.gather(
        trickle(slow_stack, whole, head_at_once=False),
        trickle(slow_stack, whole, head_at_once=True),
        trickle(slow_stack, b"\r\n\r\n", head_at_once=True),  # connects, then nothing
        # Meanwhile the service answers everyone else at once.
        ordinary_requests(slow_stack, token),
    )
    # A head that does not arrive in time: the connection is closed, unanswered.
    seconds, sent, answer = slow_head
    assert answer == b"", answer
    assert sent < whole.index(b"\r\n\r\n")
    assert SLOW_CLIENT_TIMEOUT - 0.5 < seconds < SLOW_CLIENT_TIMEOUT + 3
    # A body that does not: 408, in the JSON error shape.
    seconds, sent, answer = slow_body
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer
    error = orjson.loads(rest.partition(b"\r\n\r\n")[2])
    assert error["error"]["code"] == "body_timeout"
    assert sent < len(whole)
    assert SLOW_CLIENT_TIMEOUT - 0.5 < seconds < SLOW_CLIENT_TIMEOUT + 3
    # Connected and silent: closed too.
    seconds, _, answer = silent
    assert answer == b""
    assert seconds < SLOW_CLIENT_TIMEOUT + 3


async def ordinary_requests(stack: Stack, token: str) -> None:
    for _ in range(4):
        status, _, _ = await call(stack, "GET", OUTDIALS, token)
        assert status == 200
        await asyncio.sleep(0.5)


# ---- Idempotency-Key ------------------------------------------------------------------


async def test_an_idempotency_key_is_the_key_of_one_request(stack: Stack) -> None:
    token = stack.token()
    body = orjson.dumps(BODIES["POST", OUTDIALS])
    key = {"Idempotency-Key": "k-1"}
    first = await call(stack, "POST", OUTDIALS, token, body, **key)
    again = await call(stack, "POST", OUTDIALS, token, body, **key)
    assert first[0] == 200 and again[:2] == first[:2]  # taken once, answered the same
    outdial_id = first[1]["id"]
    # The same key on another write is that write, answered for itself.
    path = f"{OUTDIALS}/{outdial_id}/data"
    status, updated, _ = await call(stack, "PUT", path, token, b'{"data": "second"}', **key)
    assert (status, updated["id"], updated["data"]) == (200, outdial_id, "second")
    other = await call(stack, "POST", OUTDIALS, token, orjson.dumps({"name": "b"}), **key)
    assert_error(other, 400, "invalid_command")
    # Any key fits, however long or whatever its characters (AMQP's message_id cannot).
    for long_key in ["k" * 300, "\u00fc" * 200, "x" * 8000]:
        status, created, _ = await call(
            stack, "POST", OUTDIALS, token, body, **{"Idempotency-Key": long_key}
        )
        assert status == 200, created
    wait = {"X-Outdial-Min-Position": str(store_position(stack))}
    status, listed, _ = await call(stack, "GET", OUTDIALS, token, **wait)
    assert len(listed["result"]) == 1 + 3
