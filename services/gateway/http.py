"""The HTTP API of CONTRACT 5: the operations of `operations` served by aiohttp.

A route per operation with an HTTP method and path, generated from the table:
the door checks the token (the caller's customer), the path's ids, the query's
parameters and paging, and the body of a write, then runs the operation's
handler and answers in the tutorial's shapes (CONTRACT 1). A read answers the
read model's stored body as it is; a write answers the command's reply and its
`X-Outdial-Position`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway.operations import (
    MAX_AVAILABLE,
    MAX_PAGE_SIZE,
    OPERATIONS,
    PAGE_TOKEN_PATTERN,
    Backend,
    Call,
    Listing,
    Operation,
    Param,
    Refused,
    Resource,
    integer,
    paging,
)
from services.query.async_reads import ReadThreads
from services.query.positions import PositionBoard
from services.query.queries import Cursor, Queries
from shared import tokens
from shared.bus import JSON
from shared.client import OutdialClient
from shared.errors import ErrorCode
from shared.metrics import HTTP_REQUESTS

__all__ = [
    "BASE",
    "BODY_TIMEOUT_SECONDS",
    "HEADER_TIMEOUT_SECONDS",
    "MAX_AVAILABLE",
    "MAX_BODY",
    "MAX_PAGE_SIZE",
    "MAX_WAIT_SECONDS",
    "OPEN_PATHS",
    "PAGE_TOKEN_PATTERN",
    "Services",
    "make_app",
]

log = logging.getLogger("outdial.api")

BASE = "/v1.0"
MAX_BODY = 1024 * 1024
MAX_WAIT_SECONDS = 5.0
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
# A UUID as OpenAPI's `format: uuid` means it (RFC 4122 text, either case); uuid.UUID
# alone would also take 32 bare hex digits, braces and `urn:uuid:`.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
# The paths whose GETs dialers and dashboards poll, routed first.
HOT_PATHS = ("/outdials/{id}/targets/{target_id}", "/outdials/{id}/targets", "/outdials/{id}")
# The path's names of the ids an operation takes.
PATH_IDS = {"id": "outdial_id", "target_id": "target_id"}

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
    backend: Backend = field(init=False)

    def __post_init__(self) -> None:
        # The operations' collaborators; the envelope listener runs on the same.
        self.backend = Backend(self.queries, self.bus, self.executor)


SERVICES = web.AppKey("services", Services)
CUSTOMER = web.RequestKey("customer_id", str)
# That the request's token came in the `token` cookie: what a browser sends by
# itself, with requests another site's page makes too (CSRF).
BY_COOKIE = web.RequestKey("by_cookie", bool)


# Every answer (`errors` sees each): nothing sniffed, nothing framed, nothing referred,
# and no software versions for an attacker to look up.
SECURITY_HEADERS = {
    "Server": "outdial",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_JSON_HEADERS = {"Content-Type": JSON, **SECURITY_HEADERS}


def json_response(body: bytes, status: int = 200, **headers: str) -> web.Response:
    """A JSON answer, with the security headers (set here rather than by `errors`
    after the fact: most answers are these)."""
    return web.Response(body=body, status=status, headers={**_JSON_HEADERS, **headers})


def error_response(refused: Refused) -> web.Response:
    """CONTRACT 5's error answer: `{"error": {"code", "message", "details"?}}`."""
    return json_response(orjson.dumps({"error": refused.error()}), refused.status)


# ---- middlewares -------------------------------------------------------------


# The answers of each route by status since the last scrape of /metrics, which adds
# them to the counter: a plain dict per answer, not the counter's lock and labels.
_COUNTS: dict[tuple[str, int], int] = {}


def _count(route_name: str, status: int) -> None:
    key = (route_name, status)
    _COUNTS[key] = _COUNTS.get(key, 0) + 1


def counted() -> None:
    """Add the answers counted since the last call to the counter (on the event loop,
    where they are counted)."""
    counts = dict(_COUNTS)
    _COUNTS.clear()
    for (route_name, status), n in counts.items():
        HTTP_REQUESTS.labels(route_name, str(status)).inc(n)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answered in CONTRACT 5's shape, every answer counted; and the
    token checked (`authenticated`) before a route's handler runs (one middleware:
    each costs a coroutine per request)."""
    match_info = request.match_info
    route = match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    response: web.StreamResponse
    try:
        if match_info.http_exception is None and request.path not in OPEN_PATHS:
            # Operations routes are open; an unknown route is 404 whoever asks.
            request[CUSTOMER] = authenticated(request)
        response = await handler(request)
    except Refused as refused:
        response = error_response(refused)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(
            Refused(ErrorCode.BODY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
        )
    except web.HTTPNotFound:
        response = error_response(
            Refused(ErrorCode.NOT_FOUND, f"no route {request.method} {request.path}")
        )
    except web.HTTPMethodNotAllowed as e:
        response = error_response(
            Refused(ErrorCode.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here")
        )
        response.headers["Allow"] = ",".join(sorted(e.allowed_methods))
    except web.HTTPException as e:
        response = error_response(Refused(ErrorCode.HTTP_ERROR, e.reason, status=e.status))
    except Exception:
        log.exception("request failed", extra={"fields": {"path": request.path}})
        response = error_response(Refused(ErrorCode.INTERNAL_ERROR, "internal error"))
    if "X-Frame-Options" not in response.headers:
        response.headers.update(SECURITY_HEADERS)  # answers other than json_response's
    if request.method != "GET" and "X-Outdial-Position" not in response.headers:
        # Every answer to a write carries a position, refused ones included:
        # nothing was stored, so what the read model shows now is as good as any.
        response.headers["X-Outdial-Position"] = str(request.app[SERVICES].positions.position)
    _count(route_name, response.status)
    return response


def authenticated(request: web.Request) -> str:
    """The customer of the request's token (its query's `token`, else its cookie's,
    else its bearer token); Refused if it has none, or none valid."""
    token = request.query.get("token") if request.query_string else None
    if not token and hdrs.COOKIE in request.headers:
        token = request.cookies.get("token")
        if token:
            request[BY_COOKIE] = True
    if not token:
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
    if not token:
        raise Refused(ErrorCode.UNAUTHORIZED, "a token is required")
    try:
        return tokens.customer_id_of(token, request.app[SERVICES].secret)
    except (jwt.InvalidTokenError, ValueError) as e:
        raise Refused(ErrorCode.UNAUTHORIZED, f"invalid token: {e}") from None


# ---- what a request carries ------------------------------------------------------


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not _UUID.fullmatch(value):
        raise Refused(ErrorCode.INVALID_ID, f"{name} is not a UUID: {value!r}")
    return value.lower()


def query_params(request: web.Request, params: Sequence[Param]) -> dict[str, int]:
    """The integer query parameters, each the first of its name (else its default)."""
    return {p.name: p.parse(request.query.get(p.name)) for p in params}


async def reached_min_position(request: web.Request) -> None:
    raw = request.headers.get("X-Outdial-Min-Position")
    if raw is None:
        return
    positions = request.app[SERVICES].positions
    if raw.isascii() and raw.isdigit() and len(raw) < 19 and int(raw) <= positions.position:
        return  # reached, the common case
    try:
        wanted = integer(raw)
    except ValueError:
        raise Refused(
            ErrorCode.INVALID_HEADER, "X-Outdial-Min-Position is not an integer"
        ) from None
    if not await positions.wait_for(wanted, MAX_WAIT_SECONDS):
        raise Refused(
            ErrorCode.POSITION_NOT_REACHED,
            f"the read model did not reach position {wanted} within {MAX_WAIT_SECONDS:g} s",
        )


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != JSON and request.get(BY_COOKIE, False):
        # With the cookie, only a body declared JSON: a form or text/plain is what
        # another site's page can make a browser send with it (CSRF), and a page
        # cannot declare JSON without the browser asking this server first (CORS,
        # which it does not allow). A token in the query or the header was sent by
        # whoever holds it: its body is read whatever it is declared (not JSON: 400).
        raise Refused(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"the body must be {JSON}, not {request.content_type}",
        )
    timeout = request.app[SERVICES].body_timeout
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise Refused(
            ErrorCode.BODY_TIMEOUT, f"the body did not arrive within {timeout:g} s"
        ) from None
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as e:
        raise Refused(ErrorCode.INVALID_JSON, f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise Refused(ErrorCode.INVALID_JSON, "the body must be a JSON object")
    return body


# ---- answers -----------------------------------------------------------------------


def list_body(listing: Listing) -> bytes:
    """`{"result": [...], "next_page_token": "..."}`, of the stored bodies as they are."""
    items = listing.joined if listing.joined is not None else ",".join(listing.bodies).encode()
    token = orjson.dumps(listing.next_page_token)
    # One copy of the page's bytes, not one per `+`.
    return b"".join((b'{"result":[', items, b'],"next_page_token":', token, b"}"))


def answer(request: web.Request, op: Operation, result: Resource | Listing) -> web.Response:
    if isinstance(result, Listing):
        return json_response(list_body(result))
    if not op.write:
        return json_response(result.body)
    position = result.position
    if position is None:
        position = request.app[SERVICES].positions.position
    response = json_response(result.body)
    response.headers["X-Outdial-Position"] = str(position)
    return response


def route_handler(op: Operation) -> Handler:
    """The aiohttp handler of an operation: its request checked in the order ids,
    parameters, paging, body (all refused at once), then, for a read, the wait for
    `X-Outdial-Min-Position`; then the operation."""

    params_of, paged, body_of, write = op.params, op.paged, bool(op.body_fields), op.write

    async def handle(request: web.Request) -> web.Response:
        ids = {PATH_IDS[name]: path_id(request, name) for name in request.match_info}
        params = query_params(request, params_of) if params_of else {}
        page: tuple[Cursor | None, int] = (None, MAX_PAGE_SIZE)
        if paged:
            query = request.query
            page = paging(query.get("page_size"), query.get("page_token"))
        body = await json_body(request) if body_of else {}
        if not write:
            await reached_min_position(request)
        key = request.headers.get("Idempotency-Key") if write else None
        call = Call(request[CUSTOMER], ids, params, page, body, key)
        result = await op.handler(call, request.app[SERVICES].backend)
        return answer(request, op, result)

    handle.__name__ = handle.__qualname__ = op.name
    return handle


def aiohttp_path(path: str) -> str:
    """`{id}` as `{id:[^/]+}`: every segment reaches its handler, so that `{...}` or
    `a{b` is a bad id (400) rather than no route (aiohttp's default refuses braces)."""
    return BASE + re.sub(r"{(\w+)}", r"{\1:[^/]+}", path)


# ---- operations of the process -----------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return json_response(b'{"status":"ok"}')


async def readyz(request: web.Request) -> web.Response:
    problems = [p for check in request.app[SERVICES].readiness if (p := await check())]
    if problems:
        return json_response(orjson.dumps({"status": "not ready", "problems": problems}), 503)
    return json_response(b'{"status":"ready"}')


async def metrics(request: web.Request) -> web.Response:
    counted()
    # In a thread: the positions are read from the store when scraped.
    body = await asyncio.to_thread(generate_latest)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    from services.gateway.openapi import document  # it builds on this module

    return json_response(orjson.dumps(document()))


async def open_reads(app: web.Application) -> None:
    """The reads that do not run on the event loop go to the reader threads from
    now on (until then, and after the API stops, to the executor's: the envelope
    listener starts before it and stops after it)."""
    services = app[SERVICES]
    if services.backend.reads is None:
        services.backend.reads = ReadThreads(services.queries)


async def close_reads(app: web.Application) -> None:
    backend = app[SERVICES].backend
    reads, backend.reads = backend.reads, None
    if reads is not None:
        reads.close()


def make_app(services: Services) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors])
    app.on_startup.append(open_reads)
    app.on_cleanup.append(close_reads)
    app[SERVICES] = services
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi)
    # The methods of one path together (one resource: a wrong method is 405 with
    # `Allow`), in the table's order; the paths the dialers poll first (aiohttp tries
    # the resources under `/v1.0/outdials` one by one, a regular expression each).
    served = [(op, op.http) for op in OPERATIONS if op.http is not None]
    paths = sorted(
        dict.fromkeys(http.path for _, http in served),
        key=lambda path: HOT_PATHS.index(path) if path in HOT_PATHS else len(HOT_PATHS),
    )
    for op, http in sorted(served, key=lambda served: paths.index(served[1].path)):
        if http.method == "GET":
            r.add_get(aiohttp_path(http.path), route_handler(op))  # and HEAD
        else:
            r.add_route(http.method, aiohttp_path(http.path), route_handler(op))
    from services.gateway import progress  # it builds on this module

    r.add_get("/", progress.page)
    r.add_get(f"{BASE}/progress", progress.progress)
    return app
