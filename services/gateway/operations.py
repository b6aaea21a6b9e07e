"""The one table of operations: each declared once, and done once, whichever door
it comes in by.

An operation is what a client may ask (list the outdials, add a target, ...). Its
entry in `OPERATIONS` says

- where each door serves it: the HTTP API (CONTRACT 5: method and path under
  `/v1.0`; the caller's customer comes from its token) and the platform's
  request envelope (CONTRACT 8: method and path as VoIPbin's listen handler has
  them; the callers are trusted services naming bare ids, so the owner of a
  resource is looked up);
- what it takes: path ids, integer query parameters, paging, and, for a write,
  the fields of its command (CONTRACT 3), which the request's body carries;
- what it answers (an outdial or a target, or a list of them) and which errors;
- its handler: the one implementation, on the read model's queries and the bus.

The doors are generated from the table: `http` registers the aiohttp routes,
`openapi` documents them, `envelope` routes the platform's requests. A door
parses its own wire format into a `Call`, runs the handler, and renders the
`Resource` or `Listing` (or the `Refused`) in its own shapes. No rule lives
here: writes are the commands of CONTRACT 3, decided by the command side, and
reads are `services.query.queries`.

Adding an operation: its entry in `OPERATIONS`, and its handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel

from services.query.async_reads import ReadThreads
from services.query.queries import (
    ID,
    TM_CREATE,
    Cursor,
    FoundOutdial,
    FoundTarget,
    JoinedPage,
    OutdialFilters,
    Page,
    Queries,
    Read,
)
from shared import commands, shapes
from shared.addresses import UUID_TEXT
from shared.client import OutdialClient
from shared.errors import ErrorCode
from shared.resources import (
    AvailableTargets,
    OutdialList,
    OutdialResource,
    TargetList,
    TargetResource,
)

T = TypeVar("T")
Kind = Literal["outdial", "target"]

MAX_PAGE_SIZE = 100
MAX_AVAILABLE = 1000
BUS_TIMEOUT_SECONDS = 10.0
NO_ID = str(commands.NO_CAMPAIGN)

# ASCII digits ([0-9], not \d, which takes any script's): the OpenAPI document
# gives this pattern to clients, and JSON Schema reads it as ECMA-262 does. A
# page token is a `tm_create`: this service's (`2022-04-28 01:41:40.503790`) or
# VoIPbin's (`2022-04-28T01:41:40.503790Z`), optionally with the id of the last
# item, which breaks a tie of `tm_create` (`...|<id>`).
PAGE_TOKEN_PATTERN = (
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[ T]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,6}))?Z?"
    r"(?:\|([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}))?"
)
_PAGE_TOKEN = re.compile(PAGE_TOKEN_PATTERN)
# ASCII digits only: int() alone would take " 5", "1_0" and other scripts' digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
# What an error message quotes of the caller's input, at most.
_QUOTED = 60


class Refused(Exception):
    """An operation refused (or failed): its code, answered by each door in its shape,
    with the code's status (or `status`, for the HTTP server's own refusals)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        status: int | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status = status or code.status

    def error(self) -> dict[str, Any]:
        """CONTRACT 3's `error` object."""
        error: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return error


# ---- what a handler answers ------------------------------------------------------


@dataclass(slots=True)  # not frozen, as Call: one per read, and a frozen one is slower to make
class Resource:
    """An outdial or a target: its tutorial shape (CONTRACT 1), as the read model
    stores it and the HTTP API answers it, and its customer; after a write, the
    store's position."""

    kind: Kind
    body: bytes
    customer_id: str
    position: int | None = None

    @classmethod
    def of_reply(cls, kind: Kind, data: Mapping[str, Any], position: int | None) -> Resource:
        """From a command's reply `data` (the bus's shape: CONTRACT 1 plus `customer_id`)."""
        shape = dict(data)
        customer_id = str(shape.pop("customer_id"))
        return cls(kind, orjson.dumps(shape), customer_id, position)

    def platform(self) -> dict[str, Any]:
        """The platform's shape (VoIPbin's model) of the same resource."""
        shape = orjson.loads(self.body)
        if self.kind == "outdial":
            return shapes.platform_outdial(shapes.outdial_record(shape, self.customer_id))
        return shapes.platform_target(shapes.target_record(shape, self.customer_id))


@dataclass(frozen=True)
class Listing:
    """Outdials or targets in order, each as the read model stores it: its tutorial
    shape (the HTTP API answers these as they are) and its customer; and the token
    of the next page (empty: none, or not paged)."""

    kind: Kind
    bodies: Sequence[str] = ()
    customer_ids: Sequence[str] = ()
    next_page_token: str = ""
    # Instead of `bodies`: the bodies joined by commas as the store joined them (the
    # HTTP API answers them as they are), all of `customer_id`.
    joined: bytes | None = None
    customer_id: str = ""

    @classmethod
    def of_page(cls, kind: Kind, page: Page, customer_id: str | None = None) -> Listing:
        """`customer_id`: the customer of every row (a targets' page), else each row's."""
        rows = page.rows
        customers = page.customer_ids if customer_id is None else [customer_id] * len(rows)
        if not rows:
            return cls(kind)
        tm_create, row_id = rows[-1][TM_CREATE], rows[-1][ID]
        # The last tm_create alone resumes correctly unless the next row shares it
        # (many targets of one AddTargets may): then the id breaks the tie.
        tied = page.more and page.next_tm_create == tm_create
        token = f"{tm_create}|{row_id}" if tied else tm_create
        return cls(kind, page.bodies, customers, token)

    @classmethod
    def of_joined(cls, kind: Kind, page: JoinedPage) -> Listing:
        if page.last is None:
            return cls(kind)
        tm_create = page.last.split("|", 1)[0]
        # As `of_page`: the last tm_create, and the id when the next row shares it.
        token = page.last if page.next_tm_create == tm_create else tm_create
        return cls(kind, next_page_token=token, joined=page.joined, customer_id=page.customer_id)

    @property
    def items(self) -> list[Resource]:
        if self.joined is not None:
            return [
                Resource(self.kind, orjson.dumps(shape), self.customer_id)
                for shape in orjson.loads(b"[" + self.joined + b"]")
            ]
        return [
            Resource(self.kind, body.encode(), customer)
            for body, customer in zip(self.bodies, self.customer_ids, strict=True)
        ]


# ---- what a handler takes --------------------------------------------------------


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to make, once per request
class Call:
    """One call of an operation, parsed by the door it came in by."""

    # The caller's customer (the HTTP API: its token's). None: a trusted caller (the
    # platform's envelope) that names bare ids; the owner is looked up.
    customer_id: str | None
    ids: Mapping[str, str] = field(default_factory=dict)  # outdial_id, target_id
    params: Mapping[str, int] = field(default_factory=dict)
    page: tuple[Cursor | None, int] = (None, MAX_PAGE_SIZE)
    # The request's JSON object: a write's command fields, or the envelope's list filters.
    body: Mapping[str, Any] = field(default_factory=dict)
    # Makes a write safe to re-send: HTTP's Idempotency-Key, an envelope's message_id.
    key: str | None = None


def integer(raw: str) -> int:
    """A decimal integer in ASCII digits, or ValueError."""
    if not _INTEGER.fullmatch(raw):
        raise ValueError(raw)
    return int(raw)  # ValueError past 4,300 digits too


@dataclass(frozen=True)
class Param:
    """An integer query parameter, in a range."""

    name: str
    code: ErrorCode
    default: int
    low: int
    high: int
    description: str
    platform_name: str | None = None  # the envelope's callers' name, where it differs

    def parse(self, raw: object, name: str | None = None) -> int:
        """From query-string text, a JSON number (the envelope's `data`), or None
        (the default); `name` is what the caller called it."""
        name = name or self.name
        if raw is None:
            return self.default
        if isinstance(raw, str):
            try:
                value = integer(raw)
            except ValueError:
                raise Refused(self.code, f"{name} is not an integer") from None
        elif isinstance(raw, int) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, float) and raw.is_integer():  # Go reads JSON numbers as float64
            value = int(raw)
        else:
            raise Refused(self.code, f"{name} is not an integer")
        if not self.low <= value <= self.high:
            raise Refused(self.code, f"{name} must be {self.low} to {self.high}")
        return value


def paging(size: str | None, token: str | None) -> tuple[Cursor | None, int]:
    """The cursor and size of a page, from `page_size` and `page_token` as sent."""
    size_of_page = page_size(size)
    return page_token(token), size_of_page


def page_size(raw: str | None) -> int:
    if raw is None:
        return MAX_PAGE_SIZE
    try:
        size = integer(raw)
    except ValueError:
        raise Refused(ErrorCode.INVALID_PAGE_SIZE, "page_size is not an integer") from None
    if size < 1:
        raise Refused(ErrorCode.INVALID_PAGE_SIZE, "page_size must be at least 1")
    return min(size, MAX_PAGE_SIZE)


def page_token(raw: str | None) -> Cursor | None:
    """A `next_page_token` (this service's, or VoIPbin's `tm_create` in RFC 3339) as
    the cursor the read model pages by: after `tm_create` (and the id, if any)."""
    if not raw:
        return None
    match = _PAGE_TOKEN.fullmatch(raw)
    if match is None:
        raise Refused(ErrorCode.INVALID_PAGE_TOKEN, "page_token is not a next_page_token")
    date, time, fraction, row_id = match.groups()
    return f"{date} {time}.{(fraction or '').ljust(6, '0')}", row_id


def message_id_of(key: str | None, command: Mapping[str, Any]) -> str | None:
    """The command's `message_id` for an idempotency key: the key of this very
    request. With the key alone, the same key on another route or body would be
    answered the first request's reply (another resource, even another kind), and
    a key over 255 bytes would not fit AMQP's message_id. Any bytes make a key
    (aiohttp hands over what is not UTF-8 as surrogates)."""
    if not key:
        return None
    request = orjson.dumps(command, option=orjson.OPT_SORT_KEYS)
    raw = key.encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw + b"\0" + request).hexdigest()


@dataclass
class Backend:
    """What every operation runs on, whichever door: the read queries and the bus."""

    queries: Queries
    bus: OutdialClient
    executor: ThreadPoolExecutor
    bus_timeout: float = BUS_TIMEOUT_SECONDS
    # PostgreSQL: the reader threads, once the HTTP API has started them (else the
    # executor's threads).
    reads: ReadThreads | None = None

    async def fetch(self, read: Read[T]) -> T:
        """One statement's read: on the event loop where it is cheap (SQLite's reads
        by key), else on the reader threads (with the reads of its kind waiting
        with it) or, before they start, the executor's."""
        if self.queries.local and read.inline:
            return self.queries.run(read)
        if self.reads is not None:
            return await self.reads.fetch(read)
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self.queries.run, read
        )

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read of the read model: inline where it cannot block for long (a
        local SQLite file answers an indexed read in well under a millisecond, less
        than a hop to a thread costs, and threads would fight over the GIL), else in
        a thread: the reader threads' batches, whose results come back to the event
        loop a batch at a time, or, before they start, the executor's."""
        if self.queries.local:
            return fn(*args)
        if self.reads is not None:
            return await self.reads.call(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def send(
        self, command: dict[str, Any], key: str | None
    ) -> tuple[dict[str, Any], int | None]:
        """Send a command over the bus (the one write path): its reply's data and
        position, or Refused with the reply's error."""
        try:
            reply = await self.bus.send(
                command, message_id=message_id_of(key, command), timeout=self.bus_timeout
            )
        except TimeoutError:
            raise Refused(ErrorCode.COMMAND_TIMEOUT, "the command service did not answer") from None
        status = int(reply.get("status_code", 500))
        if status != 200:
            error = reply.get("error") or {}
            try:
                code = ErrorCode(str(error.get("code")))
            except ValueError:
                code = ErrorCode.INTERNAL_ERROR
            details = error.get("details")
            raise Refused(code, str(error.get("message", "")), details, status=status)
        return reply["data"], reply.get("position")


# ---- the handlers: one per operation -----------------------------------------------


async def list_outdials(call: Call, backend: Backend) -> Listing:
    cursor, size = call.page
    page = await backend.read(backend.queries.outdials_page, outdial_filters(call), cursor, size)
    return Listing.of_page("outdial", page)


async def create_outdial(call: Call, backend: Backend) -> Resource:
    # A trusted caller names the customer in the body.
    customer = call.customer_id if call.customer_id is not None else call.body.get("customer_id")
    return await write(call, backend, "outdial", customer, type="CreateOutdial")


async def get_outdial(call: Call, backend: Backend) -> Resource:
    found = await visible_outdial(call, backend)
    return Resource("outdial", found.body.encode(), found.customer_id)


async def update_outdial(call: Call, backend: Backend) -> Resource:
    return await outdial_write(call, backend, "UpdateOutdial")


async def update_outdial_campaign(call: Call, backend: Backend) -> Resource:
    return await outdial_write(call, backend, "UpdateOutdialCampaign")


async def update_outdial_data(call: Call, backend: Backend) -> Resource:
    return await outdial_write(call, backend, "UpdateOutdialData")


async def delete_outdial(call: Call, backend: Backend) -> Resource:
    return await outdial_write(call, backend, "DeleteOutdial")


async def list_targets(call: Call, backend: Backend) -> Listing:
    """The outdial and a page of its targets in one read."""
    cursor, size = call.page
    outdial_id = call.ids["outdial_id"]
    read = backend.queries.targets_page_read(call.customer_id, outdial_id, cursor, size)
    page = await backend.fetch(read)
    if page is None:
        raise Refused(ErrorCode.OUTDIAL_NOT_FOUND, f"outdial {outdial_id} not found")
    if page.deleted:
        return Listing("target")  # a deleted outdial's targets are hidden from lists
    return Listing.of_joined("target", page)


async def add_target(call: Call, backend: Backend) -> Resource:
    customer = await owner_of_outdial(call, backend)
    return await write(
        call, backend, "target", customer, type="AddTarget", outdial_id=call.ids["outdial_id"]
    )


async def get_target(call: Call, backend: Backend) -> Resource:
    found = await visible_target(call, backend)
    return Resource("target", found.body.encode(), found.customer_id)


async def delete_target(call: Call, backend: Backend) -> Resource:
    return await target_write(call, backend, "DeleteTarget")


async def available_targets(call: Call, backend: Backend) -> Listing:
    """The targets a claim could get now (CONTRACT 2), without claiming them."""
    outdial = await visible_outdial(call, backend)
    if outdial.deleted:
        return Listing("target")  # a deleted outdial's targets are never available
    most = [call.params[f"max_try_count_{i}"] for i in range(5)]
    rows = await backend.read(
        backend.queries.available, call.ids["outdial_id"], most, None, call.params["limit"]
    )
    bodies = [body for _, body in rows]
    return Listing("target", bodies, [outdial.customer_id] * len(bodies))


async def mark_target_progressing(call: Call, backend: Backend) -> Resource:
    return await target_write(call, backend, "MarkTargetProgressing")


async def update_target_status(call: Call, backend: Backend) -> Resource:
    return await target_write(call, backend, "UpdateTargetStatus")


# ---- what the handlers share ---------------------------------------------------------


async def write(call: Call, backend: Backend, kind: Kind, customer: Any, **fields: str) -> Resource:
    """Send the command of the call's body and `fields`, for `customer`."""
    command = {**call.body, **fields}
    if customer is not None:
        command["customer_id"] = customer
    data, position = await backend.send(command, call.key)
    return Resource.of_reply(kind, data, position)


async def outdial_write(call: Call, backend: Backend, command_type: str) -> Resource:
    customer = await owner_of_outdial(call, backend)
    return await write(
        call, backend, "outdial", customer, type=command_type, outdial_id=call.ids["outdial_id"]
    )


async def target_write(call: Call, backend: Backend, command_type: str) -> Resource:
    customer, outdial_id = await owner_of_target(call, backend)
    fields = {"type": command_type, "outdial_id": outdial_id, "target_id": call.ids["target_id"]}
    return await write(call, backend, "target", customer, **fields)


async def visible_outdial(call: Call, backend: Backend) -> FoundOutdial:
    """The caller's outdial (any customer's, for a trusted caller), deleted or not."""
    outdial_id = call.ids["outdial_id"]
    queries = backend.queries
    found: FoundOutdial | None
    if call.customer_id is None:
        found = await backend.fetch(queries.outdial_by_id_read(outdial_id))
    else:
        mine = await backend.fetch(queries.outdial_read(call.customer_id, outdial_id))
        found = None if mine is None else FoundOutdial(*mine, call.customer_id)
    if found is None:
        raise Refused(ErrorCode.OUTDIAL_NOT_FOUND, f"outdial {outdial_id} not found")
    return found


async def visible_target(call: Call, backend: Backend) -> FoundTarget:
    """The caller's target of the outdial of the path (any customer's target, for a
    trusted caller, who names the target alone), deleted or not."""
    target_id = call.ids["target_id"]
    queries = backend.queries
    found: FoundTarget | None
    if call.customer_id is None:
        found = await backend.fetch(queries.target_by_id_read(target_id))
    else:
        outdial_id = call.ids["outdial_id"]
        body = await backend.fetch(queries.target_read(call.customer_id, outdial_id, target_id))
        found = None if body is None else FoundTarget(body, call.customer_id, outdial_id)
    if found is None:
        raise Refused(ErrorCode.TARGET_NOT_FOUND, f"target {target_id} not found")
    return found


async def owner_of_outdial(call: Call, backend: Backend) -> str:
    """Whose outdial a write is about: the caller's customer, or, for a trusted
    caller, the outdial's owner (the command side checks the rest)."""
    if call.customer_id is not None:
        return call.customer_id
    return (await visible_outdial(call, backend)).customer_id


async def owner_of_target(call: Call, backend: Backend) -> tuple[str, str]:
    """(customer, outdial_id) of the target a write is about."""
    if call.customer_id is not None:
        return call.customer_id, call.ids["outdial_id"]
    found = await visible_target(call, backend)
    return found.customer_id, found.outdial_id


_UUID_FILTERS = ("id", "customer_id", "campaign_id")
_TEXT_FILTERS = ("name", "detail", "data")
OUTDIAL_FILTERS = (*_UUID_FILTERS, *_TEXT_FILTERS, "deleted")


def outdial_filters(call: Call) -> OutdialFilters:
    """The list's filters: the caller's customer, and what the body names, as VoIPbin
    filters outdials (each an equality; `deleted` true for the deleted ones only).
    Without `deleted`, the live ones: lists leave deleted outdials out (CONTRACT 1)."""
    values: dict[str, Any] = {}
    for key, value in call.body.items():
        if key == "deleted":
            if isinstance(value, str):
                value = value == "true"  # as VoIPbin reads a string
            if not isinstance(value, bool):
                raise Refused(ErrorCode.INVALID_FILTER, "deleted must be true or false")
            values[key] = value
        elif key in _UUID_FILTERS:
            if not isinstance(value, str) or (value and not UUID_TEXT.fullmatch(value)):
                raise Refused(ErrorCode.INVALID_FILTER, f"{key} must be a UUID")
            values[key] = value.lower() or NO_ID  # "" is the nil UUID, as Go reads it
        elif key in _TEXT_FILTERS:
            if not isinstance(value, str):
                raise Refused(ErrorCode.INVALID_FILTER, f"{key} must be a string")
            values[key] = value
        else:
            raise Refused(
                ErrorCode.INVALID_FILTER,
                f"outdials are not filtered on {key[:_QUOTED]!r}; "
                f"filters are {', '.join(OUTDIAL_FILTERS)}",
            )
    if call.customer_id is not None:
        values["customer_id"] = call.customer_id  # never another customer's
    return OutdialFilters(**values)


# ---- the table -----------------------------------------------------------------------

# A command's fields that the door fills in, from the path and the caller.
FILLED_IN = frozenset({"type", "customer_id", "outdial_id", "target_id"})

Handler = Callable[[Call, Backend], Awaitable[Resource | Listing]]


@dataclass(frozen=True)
class HttpRoute:
    """Where the HTTP API serves an operation: `path` under `/v1.0`; `{id}` is the
    outdial's id, `{target_id}` the target's."""

    method: str
    path: str


@dataclass(frozen=True)
class EnvelopeRoute:
    """Where the platform's envelope serves an operation, as VoIPbin's listen handler
    routes it: `<outdial_id>` and `<target_id>` are lower-case UUIDs."""

    method: str
    path: str
    # Go's zero values of body fields a caller may leave out or send as null
    # (VoIPbin decodes them so): what the command gets instead.
    zero: Mapping[str, Any] = field(default_factory=dict)
    # VoIPbin's client sends the parameters in the query string, its server reads
    # them from `data`: both are taken, the query string first.
    params_in_data: bool = False


@dataclass(frozen=True)
class Operation:
    name: str  # the handler's, the OpenAPI operationId
    summary: str
    tag: Literal["outdials", "targets"]
    handler: Handler
    kind: Kind  # what it answers: outdials or targets
    answers: type[BaseModel]  # the HTTP API's answer (the envelope's: `kind` in its shape)
    ok: str  # what the answer is, in a sentence
    http: HttpRoute | None = None
    envelope: EnvelopeRoute | None = None
    # A write: the command it sends; its fields, but the ids and the customer, are the body.
    command: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    paged: bool = False
    filters: bool = False  # the envelope's body holds list filters (`outdial_filters`)
    # The errors of the operation itself; each door adds its own (bad ids, bodies, ...).
    errors: tuple[ErrorCode, ...] = ()
    description: str = ""

    @property
    def write(self) -> bool:
        return self.command is not None

    @property
    def body_fields(self) -> list[str]:
        """The command's fields a request's body carries: all but those the door fills
        in (the HTTP API sets the customer; the envelope's callers name it in the
        body of `POST /v1/outdials`)."""
        if self.command is None:
            return []
        return [name for name in self.command.model_fields if name not in FILLED_IN]

    @property
    def listed(self) -> bool:
        return "result" in self.answers.model_fields


MAX_TRY_COUNTS = tuple(
    Param(
        f"max_try_count_{i}",
        ErrorCode(f"invalid_max_try_count_{i}"),
        0,
        0,
        commands.MAX_TRY_COUNT,
        f"A target whose `try_count_{i}` has reached this is not available on "
        f"`destination_{i}` (as in `ClaimNextTarget`); 0: never.",
        platform_name=f"try_count_{i}",
    )
    for i in range(5)
)
LIMIT = Param("limit", ErrorCode.INVALID_LIMIT, 100, 1, MAX_AVAILABLE, "At most this many targets.")
_OUTDIAL = "/v1/outdials/<outdial_id>"
_TARGET = "/v1/outdialtargets/<target_id>"
_NAMED = {"name": "", "detail": ""}
_OUTDIAL_ERRORS = (ErrorCode.INVALID_COMMAND, ErrorCode.OUTDIAL_NOT_FOUND)
_TARGET_ERRORS = (ErrorCode.OUTDIAL_NOT_FOUND, ErrorCode.TARGET_NOT_FOUND)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "list_outdials",
        "List the customer's outdials",
        "outdials",
        list_outdials,
        "outdial",
        OutdialList,
        "One page of outdials.",
        http=HttpRoute("GET", "/outdials"),
        envelope=EnvelopeRoute("GET", "/v1/outdials"),
        paged=True,
        filters=True,
    ),
    Operation(
        "create_outdial",
        "Create an outdial (`CreateOutdial`)",
        "outdials",
        create_outdial,
        "outdial",
        OutdialResource,
        "The new outdial.",
        http=HttpRoute("POST", "/outdials"),
        envelope=EnvelopeRoute(
            "POST", "/v1/outdials", zero={**_NAMED, "data": "", "campaign_id": NO_ID}
        ),
        command=commands.CreateOutdial,
        errors=(ErrorCode.INVALID_COMMAND, ErrorCode.OUTDIAL_EXISTS),
    ),
    Operation(
        "get_outdial",
        "Get an outdial",
        "outdials",
        get_outdial,
        "outdial",
        OutdialResource,
        "The outdial (also when deleted).",
        http=HttpRoute("GET", "/outdials/{id}"),
        envelope=EnvelopeRoute("GET", _OUTDIAL),
        errors=(ErrorCode.OUTDIAL_NOT_FOUND,),
    ),
    Operation(
        "update_outdial",
        "Update an outdial's name and detail (`UpdateOutdial`)",
        "outdials",
        update_outdial,
        "outdial",
        OutdialResource,
        "The updated outdial.",
        http=HttpRoute("PUT", "/outdials/{id}"),
        envelope=EnvelopeRoute("PUT", _OUTDIAL, zero=_NAMED),
        command=commands.UpdateOutdial,
        errors=_OUTDIAL_ERRORS,
    ),
    Operation(
        "delete_outdial",
        "Delete an outdial, hiding its targets (`DeleteOutdial`)",
        "outdials",
        delete_outdial,
        "outdial",
        OutdialResource,
        "The deleted outdial.",
        http=HttpRoute("DELETE", "/outdials/{id}"),
        envelope=EnvelopeRoute("DELETE", _OUTDIAL),
        command=commands.DeleteOutdial,
        errors=(ErrorCode.OUTDIAL_NOT_FOUND,),
    ),
    Operation(
        "update_outdial_campaign",
        "Set an outdial's campaign (`UpdateOutdialCampaign`)",
        "outdials",
        update_outdial_campaign,
        "outdial",
        OutdialResource,
        "The updated outdial.",
        http=HttpRoute("PUT", "/outdials/{id}/campaign_id"),
        envelope=EnvelopeRoute("PUT", f"{_OUTDIAL}/campaign_id", zero={"campaign_id": NO_ID}),
        command=commands.UpdateOutdialCampaign,
        errors=_OUTDIAL_ERRORS,
    ),
    Operation(
        "update_outdial_data",
        "Set an outdial's data (`UpdateOutdialData`)",
        "outdials",
        update_outdial_data,
        "outdial",
        OutdialResource,
        "The updated outdial.",
        http=HttpRoute("PUT", "/outdials/{id}/data"),
        envelope=EnvelopeRoute("PUT", f"{_OUTDIAL}/data", zero={"data": ""}),
        command=commands.UpdateOutdialData,
        errors=_OUTDIAL_ERRORS,
    ),
    Operation(
        "list_targets",
        "List an outdial's targets",
        "targets",
        list_targets,
        "target",
        TargetList,
        "One page of targets.",
        http=HttpRoute("GET", "/outdials/{id}/targets"),
        envelope=EnvelopeRoute("GET", f"{_OUTDIAL}/targets"),
        paged=True,
        errors=(ErrorCode.OUTDIAL_NOT_FOUND,),
    ),
    Operation(
        "add_target",
        "Add a target to an outdial (`AddTarget`)",
        "targets",
        add_target,
        "target",
        TargetResource,
        "The new target.",
        http=HttpRoute("POST", "/outdials/{id}/targets"),
        envelope=EnvelopeRoute("POST", f"{_OUTDIAL}/targets", zero={**_NAMED, "data": ""}),
        command=commands.AddTarget,
        errors=(*_OUTDIAL_ERRORS, ErrorCode.TARGET_EXISTS),
    ),
    Operation(
        "get_target",
        "Get a target",
        "targets",
        get_target,
        "target",
        TargetResource,
        "The target (also when deleted).",
        http=HttpRoute("GET", "/outdials/{id}/targets/{target_id}"),
        envelope=EnvelopeRoute("GET", _TARGET),
        errors=(ErrorCode.TARGET_NOT_FOUND,),
    ),
    Operation(
        "delete_target",
        "Delete a target (`DeleteTarget`)",
        "targets",
        delete_target,
        "target",
        TargetResource,
        "The deleted target.",
        http=HttpRoute("DELETE", "/outdials/{id}/targets/{target_id}"),
        envelope=EnvelopeRoute("DELETE", _TARGET),
        command=commands.DeleteTarget,
        errors=_TARGET_ERRORS,
    ),
    Operation(
        "available_targets",
        "List the targets available for dialing, without claiming any",
        "targets",
        available_targets,
        "target",
        AvailableTargets,
        "The available targets, as `ClaimNextTarget` would pick them.",
        http=HttpRoute("GET", "/outdials/{id}/available"),
        envelope=EnvelopeRoute("GET", f"{_OUTDIAL}/available", params_in_data=True),
        params=(*MAX_TRY_COUNTS, LIMIT),
        errors=(ErrorCode.OUTDIAL_NOT_FOUND,),
        description=(
            "Idle, not deleted targets with a present destination whose try count is "
            "below its `max_try_count_i` (a missing `max_try_count_i` is 0: that "
            "destination is never tried), least recently updated first. A deleted "
            "outdial has none."
        ),
    ),
    Operation(
        "mark_target_progressing",
        "Start a try of a target on one destination (`MarkTargetProgressing`)",
        "targets",
        mark_target_progressing,
        "target",
        TargetResource,
        "The target, progressing, its try counted.",
        envelope=EnvelopeRoute("POST", f"{_TARGET}/progressing", zero={"destination_index": 0}),
        command=commands.MarkTargetProgressing,
        errors=(
            ErrorCode.INVALID_COMMAND,
            *_TARGET_ERRORS,
            ErrorCode.TARGET_PROGRESSING,
            ErrorCode.TARGET_DONE,
            ErrorCode.DESTINATION_ABSENT,
        ),
    ),
    Operation(
        "update_target_status",
        "Report the result of a try: `done` or `idle` (`UpdateTargetStatus`)",
        "targets",
        update_target_status,
        "target",
        TargetResource,
        "The target with its new status.",
        envelope=EnvelopeRoute("PUT", f"{_TARGET}/status"),
        command=commands.UpdateTargetStatus,
        errors=(ErrorCode.INVALID_COMMAND, *_TARGET_ERRORS, ErrorCode.TARGET_NOT_PROGRESSING),
    ),
)

BY_NAME: Mapping[str, Operation] = {op.name: op for op in OPERATIONS}


def served_by_http() -> Sequence[Operation]:
    return [op for op in OPERATIONS if op.http is not None]


def served_by_envelope() -> Sequence[Operation]:
    return [op for op in OPERATIONS if op.envelope is not None]
