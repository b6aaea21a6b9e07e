"""The HTTP API of CONTRACT 5: the operations of `operations` served by aiohttp.

A route per operation with an HTTP method and path, generated from the table:
the door checks the token (the caller's customer), the path's ids, the query's
parameters and paging, and the body of a write, then runs the operation's
handler and answers in the tutorial's shapes (CONTRACT 1). A read answers the
read model's stored body as it is; a write answers the command's reply and its
`X-Outdial-Position`.

It runs on aiohttp's low-level server (`web.Server`, documented as such) with a
router of its own (`Router`, below): measured on 2026-11-28, a read by id through
`web.Application` (its router's regular expressions, its middleware chain, its
request objects) cost 40 µs of CPU a request against 32 µs for the same work on
the low-level server, where a constant answer costs 23 µs; the Application gave
the polled reads nothing they use.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from aiohttp import HttpVersion11, hdrs, web
from multidict import CIMultiDict, istr
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
from services.query.answer_cache import AnswerCache
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
    "Api",
    "Services",
    "make_api",
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
# The paths whose GETs dialers and dashboards poll, matched first.
HOT_PATHS = ("/outdials/{id}/targets/{target_id}", "/outdials/{id}/targets", "/outdials/{id}")
# The path's names of the ids an operation takes.
PATH_IDS = {"id": "outdial_id", "target_id": "target_id"}

# A route's handler: the request, the path's values by name (`{id}`: "id") and the
# customer of its token ("" on an open path).
Handler = Callable[[web.BaseRequest, dict[str, str], str], Awaitable[web.StreamResponse]]


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
    # The reads' answers kept while nothing is committed (SQLite only: see `answer_cache`).
    cache: AnswerCache | None = None
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="outdial-read")
    )
    backend: Backend = field(init=False)

    def __post_init__(self) -> None:
        # The operations' collaborators; the envelope listener runs on the same.
        self.backend = Backend(self.queries, self.bus, self.executor)


# That the request's token came in the `token` cookie: what a browser sends by
# itself, with requests another site's page makes too (CSRF).
BY_COOKIE = web.RequestKey("by_cookie", bool)


# Every answer (`Api` sees each): nothing sniffed, nothing framed, nothing referred,
# and no software versions for an attacker to look up.
SECURITY_HEADERS = {
    "Server": "outdial",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# A CIMultiDict: the response copies it (a third faster than making one of a dict).
_JSON_HEADERS = CIMultiDict({"Content-Type": JSON, **SECURITY_HEADERS})


def json_response(body: bytes, status: int = 200) -> web.Response:
    """A JSON answer, with the security headers (set here rather than by `Api` after
    the fact: most answers are these)."""
    return web.Response(body=body, status=status, headers=_JSON_HEADERS)


def error_response(refused: Refused) -> web.Response:
    """CONTRACT 5's error answer: `{"error": {"code", "message", "details"?}}`."""
    return json_response(orjson.dumps({"error": refused.error()}), refused.status)


# ---- counting ----------------------------------------------------------------------


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


# ---- routing -----------------------------------------------------------------------


@dataclass
class Route:
    """A path template's handlers by method (a GET's answers HEAD too)."""

    template: str  # "/v1.0/outdials/{id}": the name the metrics and the tests use
    pattern: re.Pattern[str] | None  # None: a path without variables
    handlers: dict[str, Handler] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """Answered without a token."""
        return self.template in OPEN_PATHS

    def handler(self, method: str) -> Handler | None:
        handler = self.handlers.get(method)
        if handler is None and method == hdrs.METH_HEAD:
            return self.handlers.get(hdrs.METH_GET)
        return handler

    def allowed(self) -> list[str]:
        methods = set(self.handlers)
        if hdrs.METH_GET in methods:
            methods.add(hdrs.METH_HEAD)
        return sorted(methods)


class Router:
    """Each path's handlers by method. A variable (`{id}`) matches one segment that is
    not empty, whatever it holds (a malformed id reaches its handler, which answers
    400 rather than no route), with `%2F` and `%25` in it read as `/` and `%` (the
    path is matched as aiohttp's `path_safe` gives it, as aiohttp's own router does).
    Paths without variables are looked up; the others with as many segments as the
    path are tried in the order added."""

    def __init__(self) -> None:
        self._fixed: dict[str, Route] = {}
        # By the number of `/` in the path: the polled reads meet one pattern or two.
        self._variable: dict[int, list[Route]] = {}

    def add(self, method: str, template: str, handler: Handler) -> None:
        same_length = self._variable.setdefault(template.count("/"), [])
        route = self._fixed.get(template) or next(
            (r for r in same_length if r.template == template), None
        )
        if route is None:
            parts = re.split(r"{(\w+)}", template)  # literal, name, literal, …
            if len(parts) == 1:
                route = self._fixed[template] = Route(template, None)
            else:
                pattern = "".join(
                    f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
                    for i, part in enumerate(parts)
                )
                route = Route(template, re.compile(pattern))
                same_length.append(route)
        if method in route.handlers:
            raise ValueError(f"{method} {template} is routed twice")
        route.handlers[method] = handler

    def resolve(self, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route of a path, and the path's values by name; None if none."""
        route = self._fixed.get(path)
        if route is not None:
            return route, {}
        for route in self._variable.get(path.count("/"), ()):
            assert route.pattern is not None
            match = route.pattern.fullmatch(path)
            if match is not None:
                values = match.groupdict()
                if "%" in path:
                    values = {k: _unquote_path_safe(v) for k, v in values.items()}
                return route, values
        return None

    def routes(self) -> Iterator[tuple[str, str, Handler]]:
        """(method, path template, handler) of every route, HEAD aside."""
        for route in itertools.chain(self._fixed.values(), *self._variable.values()):
            for method, handler in route.handlers.items():
                yield method, route.template, handler


def _unquote_path_safe(value: str) -> str:
    # What `path_safe` left quoted, as aiohttp's router reads a variable.
    return value.replace("%2F", "/").replace("%25", "%")


# ---- the server's handler ------------------------------------------------------------


class Api:
    """The HTTP API as the low-level server's one handler: each request routed, its
    token checked before its route's handler runs (open paths aside; an unknown
    route is 404 whoever asks), every error answered in CONTRACT 5's shape, the
    security headers on every answer, and every answer counted: here, once."""

    def __init__(self, services: Services, router: Router) -> None:
        self.services = services
        self.router = router

    def server(self, **kwargs: Any) -> web.Server:
        """aiohttp's low-level server of this API, on the running loop (`kwargs`: its
        connections' settings)."""
        loop = asyncio.get_running_loop()

        def request(
            message: Any, payload: Any, protocol: Any, writer: Any, task: asyncio.Task[None]
        ) -> web.BaseRequest:
            # A body over MAX_BODY raises HTTPRequestEntityTooLarge when read: 413.
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY
            )

        return web.Server(self, request_factory=request, loop=loop, **kwargs)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        found = self.router.resolve(request.rel_url.path_safe)
        route_name = "unmatched"
        response: web.StreamResponse
        try:
            if found is None:
                raise Refused(ErrorCode.NOT_FOUND, f"no route {method} {request.path}")
            route, values = found
            route_name = route.template
            handler = route.handler(method)
            if handler is None:
                response = error_response(
                    Refused(ErrorCode.METHOD_NOT_ALLOWED, f"{method} is not allowed here")
                )
                response.headers["Allow"] = ",".join(route.allowed())
            else:
                customer = "" if route.open else authenticated(request, self.services.secret)
                response = await handler(request, values, customer)
        except Refused as refused:
            response = error_response(refused)
        except web.HTTPRequestEntityTooLarge:
            response = error_response(
                Refused(ErrorCode.BODY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
            )
        except web.HTTPException as e:
            response = error_response(Refused(ErrorCode.HTTP_ERROR, e.reason, status=e.status))
        except Exception:
            log.exception("request failed", extra={"fields": {"path": request.path}})
            response = error_response(Refused(ErrorCode.INTERNAL_ERROR, "internal error"))
        if _FRAME_OPTIONS not in response.headers:
            response.headers.update(SECURITY_HEADERS)  # answers other than json_response's
        if method != "GET" and _POSITION not in response.headers:
            # Every answer to a write carries a position, refused ones included:
            # nothing was stored, so what the read model shows now is as good as any.
            response.headers["X-Outdial-Position"] = str(self.services.positions.position)
        _count(route_name, response.status)
        return response

    def open_reads(self) -> None:
        """The reads that do not run on the event loop go to the reader threads from
        now on (until then, and after the API stops, to the executor's: the envelope
        listener starts before it and stops after it)."""
        backend = self.services.backend
        if backend.reads is None:
            backend.reads = ReadThreads(self.services.queries)

    def close_reads(self) -> None:
        backend = self.services.backend
        reads, backend.reads = backend.reads, None
        if reads is not None:
            reads.close()


def authenticated(request: web.BaseRequest, secret: str) -> str:
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
        return tokens.customer_id_of(token, secret)
    except (jwt.InvalidTokenError, ValueError) as e:
        raise Refused(ErrorCode.UNAUTHORIZED, f"invalid token: {e}") from None


# ---- what a request carries ------------------------------------------------------


def path_id(name: str, value: str) -> str:
    if not _UUID.fullmatch(value):
        raise Refused(ErrorCode.INVALID_ID, f"{name} is not a UUID: {value!r}")
    return value.lower()


def query_params(request: web.BaseRequest, params: Sequence[Param]) -> dict[str, int]:
    """The integer query parameters, each the first of its name (else its default)."""
    return {p.name: p.parse(request.query.get(p.name)) for p in params}


# Header names as istr: a case-insensitive lookup of one needs no case folding.
MIN_POSITION = istr("X-Outdial-Min-Position")
_FRAME_OPTIONS = istr("X-Frame-Options")
_POSITION = istr("X-Outdial-Position")


def already_reached(raw: str | None, positions: PositionBoard) -> bool:
    """No `X-Outdial-Min-Position` (`raw`), or one already reached: the common case."""
    if raw is None:
        return True
    return raw.isascii() and raw.isdigit() and len(raw) < 19 and int(raw) <= positions.position


async def reached_min_position(request: web.BaseRequest, positions: PositionBoard) -> None:
    raw = request.headers.get(MIN_POSITION)
    if raw is None or already_reached(raw, positions):
        return
    try:
        wanted = integer(raw)
    except ValueError:
        raise Refused(ErrorCode.INVALID_HEADER, f"{MIN_POSITION} is not an integer") from None
    if not await positions.wait_for(wanted, MAX_WAIT_SECONDS):
        raise Refused(
            ErrorCode.POSITION_NOT_REACHED,
            f"the read model did not reach position {wanted} within {MAX_WAIT_SECONDS:g} s",
        )


async def continued(request: web.BaseRequest) -> None:
    """A client that sent `Expect: 100-continue` (curl does, for a body over 1 KiB)
    is told to send its body, once the request was found worth reading (its route,
    token and ids checked: a refusal comes before the body is sent); an Expect of
    anything else is 417. aiohttp's `web.Application` did this for every route; its
    low-level server leaves it to the handler."""
    expect = request.headers.get(hdrs.EXPECT)
    if expect is None or request.version != HttpVersion11:
        return
    if expect.lower() != "100-continue":
        raise Refused(ErrorCode.HTTP_ERROR, f"unknown Expect: {expect}", status=417)
    writer = request.writer
    await writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    writer.output_size = 0  # the answer's own bytes start after it


async def json_body(request: web.BaseRequest, timeout: float) -> dict[str, Any]:
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
    await continued(request)
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


def answer(op: Operation, result: Resource | Listing, positions: PositionBoard) -> web.Response:
    if isinstance(result, Listing):
        return json_response(list_body(result))
    if not op.write:
        return json_response(result.body)
    position = result.position
    if position is None:
        position = positions.position
    response = json_response(result.body)
    response.headers["X-Outdial-Position"] = str(position)
    return response


def route_handler(op: Operation, services: Services) -> Handler:
    """The handler of an operation: its request checked in the order ids, parameters,
    paging, body (all refused at once), then, for a read, the wait for
    `X-Outdial-Min-Position`; then the operation.

    A read's answer is kept (`Services.cache`) under its customer and its request's
    path and query, which are all it depends on besides the read model; a request
    that an answer was kept for was found valid then, and is again."""

    params_of, paged, body_of, write = op.params, op.paged, bool(op.body_fields), op.write
    backend, positions, timeout = services.backend, services.positions, services.body_timeout
    cache = None if write else services.cache

    async def handle(
        request: web.BaseRequest, values: dict[str, str], customer: str
    ) -> web.Response:
        stamp = None
        if cache is not None and already_reached(request.headers.get(MIN_POSITION), positions):
            kept_as = (op.name, customer, request.raw_path)
            kept, stamp = cache.lookup(kept_as)
            if kept is not None:
                return json_response(kept)
        ids = {PATH_IDS[name]: path_id(name, value) for name, value in values.items()}
        params = query_params(request, params_of) if params_of else {}
        page: tuple[Cursor | None, int] = (None, MAX_PAGE_SIZE)
        if paged:
            query = request.query
            page = paging(query.get("page_size"), query.get("page_token"))
        body = await json_body(request, timeout) if body_of else {}
        if not write and MIN_POSITION in request.headers:
            await reached_min_position(request, positions)
        key = request.headers.get("Idempotency-Key") if write else None
        call = Call(customer, ids, params, page, body, key)
        response = answer(op, await op.handler(call, backend), positions)
        if cache is not None and stamp is not None and isinstance(response.body, bytes):
            cache.keep(kept_as, stamp, response.body)
        return response

    handle.__name__ = handle.__qualname__ = op.name
    return handle


# ---- operations of the process -----------------------------------------------------


async def healthz(request: web.BaseRequest, values: dict[str, str], _: str) -> web.Response:
    return json_response(b'{"status":"ok"}')


def readyz(services: Services) -> Handler:
    async def readyz(request: web.BaseRequest, values: dict[str, str], _: str) -> web.Response:
        problems = [p for check in services.readiness if (p := await check())]
        if problems:
            body = orjson.dumps({"status": "not ready", "problems": problems})
            return json_response(body, 503)
        return json_response(b'{"status":"ready"}')

    return readyz


async def metrics(request: web.BaseRequest, values: dict[str, str], _: str) -> web.Response:
    counted()
    # In a thread: the positions are read from the store when scraped.
    body = await asyncio.to_thread(generate_latest)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.BaseRequest, values: dict[str, str], _: str) -> web.Response:
    from services.gateway.openapi import document  # it builds on this module

    return json_response(orjson.dumps(document()))


def make_api(services: Services) -> Api:
    """Every route of the API: the process's own, then the operations' (each path's
    methods together, the paths the dialers poll first), then the progress page's."""
    from services.gateway import progress  # it builds on this module

    router = Router()
    router.add("GET", "/healthz", healthz)
    router.add("GET", "/readyz", readyz(services))
    router.add("GET", "/metrics", metrics)
    router.add("GET", "/openapi.json", openapi)
    served = [(op, op.http) for op in OPERATIONS if op.http is not None]
    paths = sorted(
        dict.fromkeys(http.path for _, http in served),
        key=lambda path: HOT_PATHS.index(path) if path in HOT_PATHS else len(HOT_PATHS),
    )
    for op, http in sorted(served, key=lambda served: paths.index(served[1].path)):
        router.add(http.method, BASE + http.path, route_handler(op, services))
    router.add("GET", "/", progress.page)
    router.add("GET", f"{BASE}/progress", progress.progress(services))
    return Api(services, router)
