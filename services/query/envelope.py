"""A drop-in listener for the platform's request envelope.

The platform's services already talk to an outdial manager over RabbitMQ, on
the queue `bin-manager.outdial-manager.request`, with requests

    {"uri": "/v1/outdials/<id>", "method": "GET", "publisher": "campaign-manager",
     "data_type": "application/json", "data": {...}}

answered, to `reply_to` with the request's `correlation_id`, by

    {"status_code": 200, "data_type": "application/json", "data": {...} or [...]}

This listener speaks that envelope so they can switch without changes. It is
one more front door, like the HTTP API: writes become the commands of
CONTRACT 3, sent with the same bus client; reads come from the read model. No
rule is implemented here. The callers are trusted services of the platform:
requests name ids, not customers, and the owner of a resource is looked up.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from services.query.queries import Page, Queries
from shared.bus import JSON
from shared.client import OutdialClient
from shared.queue_consumer import QueueConsumer, Replies

log = logging.getLogger("outdial.envelope")

REQUEST_QUEUE = "bin-manager.outdial-manager.request"
ERROR_TYPE = "voipbin_error"
DOMAIN = "outdial-manager"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100
MAX_AVAILABLE = 1000

_ID = r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"


class Refused(Exception):
    """An answer other than 200, as the platform's typed error."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> dict[str, Any]:
        return {
            "status_code": self.status,
            "data_type": ERROR_TYPE,
            "data": {
                "status": self.status,
                "reason": self.code.upper(),
                "domain": DOMAIN,
                "message": self.message,
            },
        }


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    data: Any
    ids: tuple[str, ...] = ()
    # The command's idempotency key: a redelivered request changes nothing twice.
    message_id: str | None = None

    def body(self) -> dict[str, Any]:
        if not isinstance(self.data, dict):
            raise Refused(400, "invalid_request", "the request's data must be a JSON object")
        return self.data

    def number(self, name: str, default: int, *, body_first: bool = False) -> int:
        """A non-negative integer from the query string or the data (either order)."""
        sources: list[Any] = [self.query.get(name)]
        from_body = self.data.get(name) if isinstance(self.data, dict) else None
        sources.insert(0 if body_first else 1, from_body)
        for value in sources:
            if value is None:
                continue
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise Refused(400, "invalid_request", f"{name} is not an integer") from None
            if number < 0:
                raise Refused(400, "invalid_request", f"{name} must not be negative")
            return number
        return default


Handler = Callable[["EnvelopeListener", Request], Awaitable[Any]]
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append((method, re.compile(pattern.replace("<id>", _ID)), handler))
        return handler

    return register


def _page_token(raw: str) -> tuple[str, str | None] | None:
    """The platform's tokens are a tm_create, in this service's format or Go's
    (`2020-10-10T03:30:17.000000Z`); this service's own `tm_create|id` works too."""
    if not raw:
        return None
    tm, _, row_id = raw.partition("|")
    tm = tm.replace("T", " ").removesuffix("Z")
    if "." not in tm:
        tm += ".000000"
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}", tm):
        raise Refused(400, "invalid_request", f"page_token is not a timestamp: {raw!r}")
    return tm, row_id or None


def _outdial(body: str, customer_id: str) -> dict[str, Any]:
    """The platform's outdial: the documented shape, with `customer_id` after `id`."""
    shape = orjson.loads(body)
    return {"id": shape.pop("id"), "customer_id": customer_id, **shape}


class EnvelopeListener(QueueConsumer):
    queue_name = REQUEST_QUEUE

    def __init__(
        self,
        connection: AbstractRobustConnection,
        replies: Replies,
        read_model: Queries,
        bus: OutdialClient,
        *,
        prefetch: int = 32,
    ):
        super().__init__(connection, replies, prefetch=prefetch)
        self.read_model = read_model
        self.bus = bus

    async def process(self, message: AbstractIncomingMessage) -> None:
        # The platform's callers make a correlation_id per request (aio-pika makes
        # a message_id per publish): a redelivery, or a re-send, repeats it.
        key = message.correlation_id or message.message_id
        response = await self.respond(message.body, f"envelope:{key}" if key else None)
        await self.publish_reply(message, orjson.dumps(response))
        await message.ack()

    async def respond(self, raw: bytes, message_id: str | None = None) -> dict[str, Any]:
        """The response envelope to one request envelope."""
        try:
            request = self._request(raw)
            request.message_id = message_id
            for method, pattern, handler in ROUTES:
                match = pattern.fullmatch(request.path)
                if match and method == request.method:
                    request.ids = match.groups()
                    data = await handler(self, request)
                    return {"status_code": 200, "data_type": JSON, "data": data}
            # As the platform's own manager: an unknown route, or a known one
            # with another method, is 404 with no data.
            return {"status_code": 404, "data_type": ""}
        except Refused as refused:
            return refused.response()
        except Exception:
            log.exception("envelope request failed")
            return Refused(500, "internal_error", "internal error").response()

    @staticmethod
    def _request(raw: bytes) -> Request:
        try:
            envelope = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Refused(400, "invalid_request", "the request is not JSON") from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("uri"), str):
            raise Refused(400, "invalid_request", "the request has no uri")
        data = envelope.get("data")
        if isinstance(data, str) and data:
            # Some senders put the JSON text of the data in a string.
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise Refused(400, "invalid_request", "data is not JSON") from None
        parts = urlsplit(envelope["uri"])
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        return Request(str(envelope.get("method", "")), parts.path, query, data)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def command(self, request: Request, command: dict[str, Any]) -> dict[str, Any]:
        reply = await self.bus.send(command, message_id=request.message_id)
        if reply.get("status_code") != 200:
            error = reply.get("error") or {}
            raise Refused(
                int(reply.get("status_code", 500)),
                str(error.get("code", "error")),
                str(error.get("message", "")),
            )
        return dict(reply["data"])

    async def outdial(self, outdial_id: str) -> tuple[str, str, bool]:
        """Any customer's outdial: (body, customer_id, deleted), or 404."""
        found = await self._read(self.read_model.outdial_by_id, outdial_id)
        if found is None:
            raise Refused(404, "outdial_not_found", f"outdial {outdial_id} not found")
        return found  # type: ignore[no-any-return]

    async def owner_of_outdial(self, outdial_id: str) -> str:
        return (await self.outdial(outdial_id))[1]

    async def target_of(self, target_id: str) -> tuple[str, str]:
        """(outdial_id, customer_id) of a target."""
        found = await self._read(self.read_model.target_by_id, target_id)
        if found is None:
            raise Refused(404, "target_not_found", f"target {target_id} not found")
        return found[1], found[2]

    async def outdial_command(self, request: Request, type_: str, fields: dict[str, Any]) -> Any:
        outdial_id = request.ids[0]
        customer = await self.owner_of_outdial(outdial_id)
        data = await self.command(
            request, {**fields, "type": type_, "customer_id": customer, "outdial_id": outdial_id}
        )
        return {"id": data.pop("id"), "customer_id": data.pop("customer_id"), **data}

    async def target_command(self, request: Request, type_: str, fields: dict[str, Any]) -> Any:
        target_id = request.ids[0]
        outdial_id, customer = await self.target_of(target_id)
        data = await self.command(
            request,
            {
                **fields,
                "type": type_,
                "customer_id": customer,
                "outdial_id": outdial_id,
                "target_id": target_id,
            },
        )
        data.pop("customer_id", None)  # the platform's targets carry none
        return data

    def paging(self, request: Request) -> tuple[tuple[str, str | None] | None, int]:
        size = request.number("page_size", DEFAULT_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        return _page_token(request.query.get("page_token", "")), min(size, MAX_PAGE_SIZE)


def _bodies(page: Page) -> list[Any]:
    return [orjson.loads(body) for _, _, body in page.rows]


@route("POST", r"/v1/outdials")
async def create_outdial(listener: EnvelopeListener, request: Request) -> Any:
    body = request.body()
    fields: dict[str, Any] = {
        k: body[k] for k in ("customer_id", "name", "detail", "data", "id") if k in body
    }
    if body.get("campaign_id"):
        fields["campaign_id"] = body["campaign_id"]
    fields.setdefault("name", "")
    fields.setdefault("detail", "")
    fields.setdefault("data", "")
    data = await listener.command(request, {**fields, "type": "CreateOutdial"})
    return {"id": data.pop("id"), "customer_id": data.pop("customer_id"), **data}


@route("GET", r"/v1/outdials")
async def list_outdials(listener: EnvelopeListener, request: Request) -> Any:
    filters = request.data if isinstance(request.data, dict) else {}
    customer = request.query.get("customer_id") or filters.get("customer_id")
    if not customer:
        raise Refused(400, "invalid_request", "customer_id is required")
    after, size = listener.paging(request)
    page = await listener._read(listener.read_model.outdials_page, str(customer), after, size)
    return [_outdial(body, str(customer)) for _, _, body in page.rows]


@route("GET", r"/v1/outdials/<id>")
async def get_outdial(listener: EnvelopeListener, request: Request) -> Any:
    body, customer, _ = await listener.outdial(request.ids[0])
    return _outdial(body, customer)


@route("PUT", r"/v1/outdials/<id>")
async def update_outdial(listener: EnvelopeListener, request: Request) -> Any:
    body = request.body()
    return await listener.outdial_command(
        request, "UpdateOutdial", {"name": body.get("name", ""), "detail": body.get("detail", "")}
    )


@route("DELETE", r"/v1/outdials/<id>")
async def delete_outdial(listener: EnvelopeListener, request: Request) -> Any:
    return await listener.outdial_command(request, "DeleteOutdial", {})


@route("PUT", r"/v1/outdials/<id>/campaign_id")
async def update_outdial_campaign(listener: EnvelopeListener, request: Request) -> Any:
    body = request.body()
    return await listener.outdial_command(
        request, "UpdateOutdialCampaign", {"campaign_id": body.get("campaign_id")}
    )


@route("PUT", r"/v1/outdials/<id>/data")
async def update_outdial_data(listener: EnvelopeListener, request: Request) -> Any:
    body = request.body()
    return await listener.outdial_command(request, "UpdateOutdialData", {"data": body.get("data")})


@route("POST", r"/v1/outdials/<id>/targets")
async def add_target(listener: EnvelopeListener, request: Request) -> Any:
    body = request.body()
    data = await listener.outdial_command(request, "AddTarget", body)
    data.pop("customer_id", None)
    return data


@route("GET", r"/v1/outdials/<id>/targets")
async def list_targets(listener: EnvelopeListener, request: Request) -> Any:
    outdial_id = request.ids[0]
    if (await listener.outdial(outdial_id))[2]:
        return []  # a deleted outdial's targets are hidden
    after, size = listener.paging(request)
    page = await listener._read(listener.read_model.targets_page, outdial_id, after, size)
    return _bodies(page)


@route("GET", r"/v1/outdials/<id>/available")
async def available_targets(listener: EnvelopeListener, request: Request) -> Any:
    outdial_id = request.ids[0]
    # The platform's client sends these in the query string; its newest server
    # read them from the data: either works here, the query string first.
    most = [request.number(f"try_count_{i}", 0) for i in range(5)]
    limit = min(request.number("limit", DEFAULT_PAGE_SIZE) or DEFAULT_PAGE_SIZE, MAX_AVAILABLE)
    if (await listener.outdial(outdial_id))[2]:
        return []  # a deleted outdial's targets are never available
    rows = await listener._read(listener.read_model.available, outdial_id, most, None, limit)
    return [orjson.loads(body) for _, body in rows]


@route("GET", r"/v1/outdialtargets/<id>")
async def get_target(listener: EnvelopeListener, request: Request) -> Any:
    found = await listener._read(listener.read_model.target_by_id, request.ids[0])
    if found is None:
        raise Refused(404, "target_not_found", f"target {request.ids[0]} not found")
    return orjson.loads(found[0])


@route("DELETE", r"/v1/outdialtargets/<id>")
async def delete_target(listener: EnvelopeListener, request: Request) -> Any:
    return await listener.target_command(request, "DeleteTarget", {})


@route("POST", r"/v1/outdialtargets/<id>/progressing")
async def mark_target_progressing(listener: EnvelopeListener, request: Request) -> Any:
    body = request.body()
    return await listener.target_command(
        request, "MarkTargetProgressing", {"destination_index": body.get("destination_index")}
    )


@route("PUT", r"/v1/outdialtargets/<id>/status")
async def update_target_status(listener: EnvelopeListener, request: Request) -> Any:
    body = request.body()
    return await listener.target_command(
        request, "UpdateTargetStatus", {"status": body.get("status")}
    )
