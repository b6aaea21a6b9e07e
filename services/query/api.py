"""The HTTP API of CONTRACT 5.

Reads come from the read model, already rendered: a GET answers the stored
body as it is. Writes are commands sent over the bus with the same client
other services use (there is no second write path), and answer with the
command's reply and its `X-Outdial-Position`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jwt
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.query.positions import PositionBoard
from services.query.queries import Page, Queries
from shared import tokens
from shared.bus import JSON
from shared.client import OutdialClient
from shared.metrics import HTTP_REQUESTS

log = logging.getLogger("outdial.api")

BASE = "/v1.0"
MAX_BODY = 1024 * 1024
MAX_PAGE_SIZE = 100
MAX_AVAILABLE = 1000
MAX_WAIT_SECONDS = 5.0
BUS_TIMEOUT_SECONDS = 10.0
# Slow clients (slowloris): a client has HEADER_TIMEOUT_SECONDS from connecting, or
# from its last answer, to send a whole request head, else the connection is
# closed; and BODY_TIMEOUT_SECONDS to send a body once its head is in, else 408.
# aiohttp's server has no header-read timeout of its own, but its keep-alive
# timer starts at connect and closes a connection still waiting for a whole
# request head when it fires, so bootstrap passes this as `keepalive_timeout`.
HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 30.0
# "/" is the progress page: open, it asks the API with the token in its own URL.
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json"})
# ASCII digits ([0-9], not \d, which takes any script's): the OpenAPI document
# gives this pattern to clients, and JSON Schema reads it as ECMA-262 does.
PAGE_TOKEN_PATTERN = (
    r"([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6})"  # the last tm_create
    r"(?:\|([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}))?"  # and its id
)
_PAGE_TOKEN = re.compile(PAGE_TOKEN_PATTERN)
# A UUID as OpenAPI's `format: uuid` means it (RFC 4122 text, either case); uuid.UUID
# alone would also take 32 bare hex digits, braces and `urn:uuid:`.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
# ASCII digits only: int() alone would take " 5", "1_0" and other scripts' digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Services:
    """What the API needs, wired by bootstrap."""

    queries: Queries
    bus: OutdialClient
    positions: PositionBoard
    secret: str
    body_timeout: float = BODY_TIMEOUT_SECONDS
    head: Callable[[], int] | None = None  # the store's last position, for the progress page
    readiness: list[Callable[[], Awaitable[str | None]]] = field(default_factory=list)
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="outdial-read")
    )


SERVICES = web.AppKey("services", Services)
CUSTOMER = web.RequestKey("customer_id", str)


class ApiError(Exception):
    """An error answered as `{"error": {"code": ..., "message": ...}}`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.body = orjson.dumps({"error": {"code": code, "message": message}})

    def response(self) -> web.Response:
        return json_response(self.body, self.status)


def json_response(body: bytes, status: int = 200, **headers: str) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


# ---- middlewares -------------------------------------------------------------


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    response: web.StreamResponse
    try:
        response = await handler(request)
    except ApiError as e:
        response = e.response()
    except web.HTTPRequestEntityTooLarge:
        response = ApiError(413, "body_too_large", f"the body is over {MAX_BODY} bytes").response()
    except web.HTTPNotFound:
        response = ApiError(
            404, "not_found", f"no route {request.method} {request.path}"
        ).response()
    except web.HTTPMethodNotAllowed as e:
        response = ApiError(
            405, "method_not_allowed", f"{request.method} is not allowed here"
        ).response()
        response.headers["Allow"] = ",".join(sorted(e.allowed_methods))
    except web.HTTPException as e:
        response = ApiError(e.status, "http_error", e.reason).response()
    except Exception:
        log.exception("request failed", extra={"fields": {"path": request.path}})
        response = ApiError(500, "internal_error", "internal error").response()
    if request.method != "GET" and "X-Outdial-Position" not in response.headers:
        # Every answer to a write carries a position, refused ones included:
        # nothing was stored, so what the read model shows now is as good as any.
        response.headers["X-Outdial-Position"] = str(request.app[SERVICES].positions.position)
    HTTP_REQUESTS.labels(route_name, str(response.status)).inc()
    return response


@web.middleware
async def authentication(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS or request.match_info.http_exception is not None:
        # Operations routes are open; an unknown route is 404 whoever asks.
        return await handler(request)
    token = request.query.get("token") or request.cookies.get("token")
    header = request.headers.get("Authorization", "")
    if not token and header.lower().startswith("bearer "):
        token = header[7:].strip()
    if not token:
        raise ApiError(401, "unauthorized", "a token is required")
    try:
        request[CUSTOMER] = str(tokens.customer_of(token, request.app[SERVICES].secret))
    except (jwt.InvalidTokenError, ValueError) as e:
        raise ApiError(401, "unauthorized", f"invalid token: {e}") from None
    return await handler(request)


# ---- helpers -----------------------------------------------------------------


async def read(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a read of the read model: inline where it cannot block for long (a local
    SQLite file answers an indexed read in well under a millisecond, less than a
    hop to a thread costs, and threads would fight over the GIL), else in a thread."""
    services = request.app[SERVICES]
    if services.queries.local:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(services.executor, fn, *args)


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not _UUID.fullmatch(value):
        raise ApiError(400, "invalid_id", f"{name} is not a UUID: {value!r}")
    return value.lower()


def integer(raw: str) -> int:
    """A decimal integer in ASCII digits, or ValueError."""
    if not _INTEGER.fullmatch(raw):
        raise ValueError(raw)
    return int(raw)  # ValueError past 4,300 digits too


async def reached_min_position(request: web.Request) -> None:
    raw = request.headers.get("X-Outdial-Min-Position")
    if raw is None:
        return
    try:
        wanted = integer(raw)
    except ValueError:
        raise ApiError(400, "invalid_header", "X-Outdial-Min-Position is not an integer") from None
    if not await request.app[SERVICES].positions.wait_for(wanted, MAX_WAIT_SECONDS):
        raise ApiError(
            504,
            "position_not_reached",
            f"the read model did not reach position {wanted} within {MAX_WAIT_SECONDS:g} s",
        )


def paging(request: web.Request) -> tuple[tuple[str, str | None] | None, int]:
    raw_size = request.query.get("page_size", str(MAX_PAGE_SIZE))
    try:
        size = integer(raw_size)
    except ValueError:
        raise ApiError(400, "invalid_page_size", "page_size is not an integer") from None
    if size < 1:
        raise ApiError(400, "invalid_page_size", "page_size must be at least 1")
    token = request.query.get("page_token", "")
    if not token:
        return None, min(size, MAX_PAGE_SIZE)
    match = _PAGE_TOKEN.fullmatch(token)
    if match is None:
        raise ApiError(400, "invalid_page_token", "page_token is not a next_page_token")
    return (match[1], match[2]), min(size, MAX_PAGE_SIZE)


def list_body(page: Page) -> bytes:
    if not page.rows:
        token = ""
    else:
        tm, row_id, _ = page.rows[-1]
        # The last tm_create alone resumes correctly unless the next row shares
        # it (many targets of one AddTargets may): then the id breaks the tie.
        token = f"{tm}|{row_id}" if page.more and page.next_tm_create == tm else tm
    items = b",".join(body.encode() for _, _, body in page.rows)
    return b'{"result":[' + items + b'],"next_page_token":' + orjson.dumps(token) + b"}"


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != JSON:
        # Only JSON: a form or text/plain is what another site's page can make a
        # browser send with the `token` cookie (CSRF), and never a client of this API.
        raise ApiError(
            415, "unsupported_media_type", f"the body must be {JSON}, not {request.content_type}"
        )
    timeout = request.app[SERVICES].body_timeout
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(
            408, "body_timeout", f"the body did not arrive within {timeout:g} s"
        ) from None
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as e:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def message_id_of(key: str | None, command: dict[str, Any]) -> str | None:
    """The command's `message_id` for an `Idempotency-Key`: the key of this very
    request. With the key alone, the same key on another route or body would be
    answered the first request's reply (another resource, even another kind), and
    a key over 255 bytes would not fit AMQP's message_id. Any bytes make a key
    (aiohttp hands over what is not UTF-8 as surrogates)."""
    if not key:
        return None
    request = orjson.dumps(command, option=orjson.OPT_SORT_KEYS)
    raw = key.encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw + b"\0" + request).hexdigest()


async def send_command(request: web.Request, command: dict[str, Any]) -> web.Response:
    services = request.app[SERVICES]
    command = {**command, "customer_id": request[CUSTOMER]}
    try:
        reply = await services.bus.send(
            command,
            message_id=message_id_of(request.headers.get("Idempotency-Key"), command),
            timeout=BUS_TIMEOUT_SECONDS,
        )
    except TimeoutError:
        raise ApiError(504, "command_timeout", "the command service did not answer") from None
    status = int(reply.get("status_code", 500))
    position = reply.get("position")
    if position is None:
        position = services.positions.position
    headers = {"X-Outdial-Position": str(position)}
    if status != 200:
        return json_response(orjson.dumps({"error": reply.get("error", {})}), status, **headers)
    data = reply["data"]
    for resource in data.get("result", [data]) if isinstance(data, dict) else []:
        resource.pop("customer_id", None)
    return json_response(orjson.dumps(data), 200, **headers)


# ---- routes ------------------------------------------------------------------


async def list_outdials(request: web.Request) -> web.Response:
    after, size = paging(request)
    await reached_min_position(request)
    rm = request.app[SERVICES].queries
    page = await read(request, rm.outdials_page, request[CUSTOMER], after, size)
    return json_response(list_body(page))


async def get_outdial(request: web.Request) -> web.Response:
    outdial_id = path_id(request, "id")
    await reached_min_position(request)
    rm = request.app[SERVICES].queries
    found = await read(request, rm.outdial, request[CUSTOMER], outdial_id)
    if found is None:
        raise ApiError(404, "outdial_not_found", f"outdial {outdial_id} not found")
    return json_response(found[0].encode())


async def list_targets(request: web.Request) -> web.Response:
    outdial_id = path_id(request, "id")
    after, size = paging(request)
    await reached_min_position(request)
    rm = request.app[SERVICES].queries
    found = await read(request, rm.outdial, request[CUSTOMER], outdial_id)
    if found is None:
        raise ApiError(404, "outdial_not_found", f"outdial {outdial_id} not found")
    if found[1]:  # a deleted outdial's targets are hidden from lists
        page = Page([], False, None)
    else:
        page = await read(request, rm.targets_page, outdial_id, after, size)
    return json_response(list_body(page))


async def get_target(request: web.Request) -> web.Response:
    outdial_id = path_id(request, "id")
    target_id = path_id(request, "target_id")
    await reached_min_position(request)
    rm = request.app[SERVICES].queries
    body = await read(request, rm.target, request[CUSTOMER], outdial_id, target_id)
    if body is None:
        raise ApiError(404, "target_not_found", f"target {target_id} not found")
    return json_response(body.encode())


async def create_outdial(request: web.Request) -> web.Response:
    body = await json_body(request)
    return await send_command(request, {**body, "type": "CreateOutdial"})


async def update_outdial(request: web.Request) -> web.Response:
    outdial_id = path_id(request, "id")
    body = await json_body(request)
    return await send_command(request, {**body, "type": "UpdateOutdial", "outdial_id": outdial_id})


async def update_outdial_campaign(request: web.Request) -> web.Response:
    outdial_id = path_id(request, "id")
    body = await json_body(request)
    return await send_command(
        request, {**body, "type": "UpdateOutdialCampaign", "outdial_id": outdial_id}
    )


async def update_outdial_data(request: web.Request) -> web.Response:
    outdial_id = path_id(request, "id")
    body = await json_body(request)
    return await send_command(
        request, {**body, "type": "UpdateOutdialData", "outdial_id": outdial_id}
    )


async def delete_outdial(request: web.Request) -> web.Response:
    outdial_id = path_id(request, "id")
    return await send_command(request, {"type": "DeleteOutdial", "outdial_id": outdial_id})


async def add_target(request: web.Request) -> web.Response:
    outdial_id = path_id(request, "id")
    body = await json_body(request)
    return await send_command(request, {**body, "type": "AddTarget", "outdial_id": outdial_id})


async def delete_target(request: web.Request) -> web.Response:
    outdial_id = path_id(request, "id")
    target_id = path_id(request, "target_id")
    return await send_command(
        request, {"type": "DeleteTarget", "outdial_id": outdial_id, "target_id": target_id}
    )


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = integer(raw)
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"{name} is not an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"invalid_{name}", f"{name} must be {low} to {high}")
    return value


async def available_targets(request: web.Request) -> web.Response:
    """The targets a claim could get now (CONTRACT 2), without claiming them."""
    outdial_id = path_id(request, "id")
    most = [query_int(request, f"max_try_count_{i}", 0, 0, 2**31 - 1) for i in range(5)]
    limit = query_int(request, "limit", MAX_PAGE_SIZE, 1, MAX_AVAILABLE)
    await reached_min_position(request)
    rm = request.app[SERVICES].queries
    found = await read(request, rm.outdial, request[CUSTOMER], outdial_id)
    if found is None:
        raise ApiError(404, "outdial_not_found", f"outdial {outdial_id} not found")
    rows = [] if found[1] else await read(request, rm.available, outdial_id, most, None, limit)
    items = b",".join(body.encode() for _, body in rows)
    return json_response(b'{"result":[' + items + b'],"next_page_token":""}')


# ---- operations --------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return json_response(b'{"status":"ok"}')


async def readyz(request: web.Request) -> web.Response:
    problems = [p for check in request.app[SERVICES].readiness if (p := await check())]
    if problems:
        return json_response(orjson.dumps({"status": "not ready", "problems": problems}), 503)
    return json_response(b'{"status":"ready"}')


async def metrics(request: web.Request) -> web.Response:
    # In a thread: the positions are read from the store when scraped.
    body = await asyncio.to_thread(generate_latest)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    from services.query.openapi import document

    return json_response(orjson.dumps(document()))


# Every answer: nothing sniffed, nothing framed, nothing referred, and no software
# versions for an attacker to look up.
SECURITY_HEADERS = {
    "Server": "outdial",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def make_app(services: Services) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors, authentication])
    app.on_response_prepare.append(security_headers)
    app[SERVICES] = services
    r = app.router
    # `{id:[^/]+}`: every segment reaches its handler, so that `{...}` or `a{b` is a
    # bad id (400) rather than no route (aiohttp's default pattern refuses braces).
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi)
    r.add_get(f"{BASE}/outdials", list_outdials)
    r.add_post(f"{BASE}/outdials", create_outdial)
    r.add_get(f"{BASE}/outdials/{{id:[^/]+}}", get_outdial)
    r.add_put(f"{BASE}/outdials/{{id:[^/]+}}", update_outdial)
    r.add_delete(f"{BASE}/outdials/{{id:[^/]+}}", delete_outdial)
    r.add_put(f"{BASE}/outdials/{{id:[^/]+}}/campaign_id", update_outdial_campaign)
    r.add_put(f"{BASE}/outdials/{{id:[^/]+}}/data", update_outdial_data)
    r.add_get(f"{BASE}/outdials/{{id:[^/]+}}/targets", list_targets)
    r.add_post(f"{BASE}/outdials/{{id:[^/]+}}/targets", add_target)
    r.add_get(f"{BASE}/outdials/{{id:[^/]+}}/targets/{{target_id:[^/]+}}", get_target)
    r.add_delete(f"{BASE}/outdials/{{id:[^/]+}}/targets/{{target_id:[^/]+}}", delete_target)
    r.add_get(f"{BASE}/outdials/{{id:[^/]+}}/available", available_targets)
    from services.query import progress  # it builds on this module

    r.add_get("/", progress.page)
    r.add_get(f"{BASE}/progress", progress.progress)
    return app
