"""The platform's request envelope (CONTRACT 8): the operations of `operations`,
served on the queue `bin-manager.outdial-manager.request` as VoIPbin's
outdial-manager serves them, so that its callers (api-manager, campaign-manager)
switch to this service unchanged.

A request, published by the platform's `RequestPublish` (default exchange,
`content_type` text/plain, a private `reply_to` queue, and no `correlation_id`
or `message_id`),

    {"uri": "/v1/outdials/<id>", "method": "GET", "publisher": "campaign-manager",
     "data_type": "application/json", "data": {...}}

is answered to `reply_to`, with the request's (empty) `correlation_id`, by

    {"status_code": 200, "data_type": "application/json", "data": {...} or [...]}

in VoIPbin's models (`shapes.platform_outdial`, `shapes.platform_target`), or by
a typed error, `{"status_code": 404, "data_type": "voipbin_error", "data":
{"status": "NOT_FOUND", "reason": "OUTDIAL_NOT_FOUND", ...}}`. An unknown route
or method is `{"status_code": 404, "data_type": ""}`, as VoIPbin's answers.

The routes are the table's: matched as VoIPbin's listen handler matches them, on
the whole `uri` (only the routes that take parameters take a query string; ids
are lower-case UUIDs; methods upper-case). The door translates the wire's habits
(Go's zero values for fields left out, `{}` for an absent destination,
parameters in the query string or in `data`) and nothing else: the callers are
trusted services naming bare ids, and each operation looks the owner up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from services.gateway.operations import (
    MAX_PAGE_SIZE,
    OPERATIONS,
    Backend,
    Call,
    Listing,
    Operation,
    Refused,
    Resource,
    paging,
)
from services.query.queries import Cursor
from shared.bus import JSON
from shared.errors import ErrorCode
from shared.platform import ERROR_DATA_TYPE, REQUEST_QUEUE, SERVICE_NAME
from shared.queue_consumer import QueueConsumer, Replies, Settle

__all__ = ["REQUEST_QUEUE", "EnvelopeListener"]

log = logging.getLogger("outdial.envelope")

# VoIPbin's listen handler takes only these (`regUUID`): an upper-case id is no route.
_ID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# The answer to a request no route takes: `json.Marshal(&sock.Response{StatusCode: 404})`.
NO_ROUTE: dict[str, Any] = {"status_code": 404, "data_type": ""}
_DESTINATIONS = tuple(f"destination_{i}" for i in range(5))


@dataclass(frozen=True)
class Route:
    operation: Operation
    pattern: re.Pattern[str]


def _route(op: Operation) -> Route:
    assert op.envelope is not None
    pattern = re.sub(r"<(\w+)>", rf"(?P<\1>{_ID})", op.envelope.path)
    if op.params or op.paged:
        pattern += r"(?:\?(?P<query>.*))?"  # the only routes VoIPbin lets take one
    return Route(op, re.compile(pattern, re.DOTALL))


ROUTES: tuple[Route, ...] = tuple(_route(op) for op in OPERATIONS if op.envelope is not None)


def route_summaries() -> list[tuple[str, str]]:
    """Each route, with the query string it takes, and what it does (for the docs)."""
    lines = []
    for route in ROUTES:
        op = route.operation
        assert op.envelope is not None
        query = [p.platform_name or p.name for p in op.params]
        if op.paged:
            query += ["page_token", "page_size"]
        uri = op.envelope.path + ("?" + "&".join(f"{q}=…" for q in query) if query else "")
        lines.append((f"{op.envelope.method} {uri}", op.summary))
    return lines


@dataclass(frozen=True)
class Request:
    """A request envelope (`sock.Request`) as far as the door reads it."""

    uri: str
    method: str
    data: Any  # the embedded JSON value of `data`; None when absent


def parse_request(raw: bytes) -> Request:
    try:
        envelope = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refused(ErrorCode.INVALID_REQUEST, "the request is not JSON") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("uri"), str):
        raise Refused(ErrorCode.INVALID_REQUEST, "the request has no uri")
    data = envelope.get("data")
    if isinstance(data, str):
        # Some senders put the JSON text of the data in a string.
        try:
            data = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            raise Refused(ErrorCode.INVALID_REQUEST, "data is not JSON") from None
    return Request(envelope["uri"], str(envelope.get("method", "")), data)


def find(request: Request) -> tuple[Operation, re.Match[str]] | None:
    for route in ROUTES:
        assert route.operation.envelope is not None
        if route.operation.envelope.method != request.method:
            continue
        match = route.pattern.fullmatch(request.uri)
        if match is not None:
            return route.operation, match
    return None


def call_of(op: Operation, match: re.Match[str], request: Request, key: str | None) -> Call:
    """The operation's call, from the request as VoIPbin's callers send it."""
    route = op.envelope
    assert route is not None
    groups = match.groupdict()
    query_text = groups.pop("query", None) or ""
    # The first of each name, as Go's `url.Values.Get` takes it.
    query = {k: v[0] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
    data = request.data
    if route.params_in_data and data is not None and not isinstance(data, dict):
        raise Refused(ErrorCode.INVALID_REQUEST, "the request's data must be a JSON object")
    params = {}
    for param in op.params:
        name = param.platform_name or param.name
        raw: object = query.get(name)
        if raw is None and route.params_in_data and data is not None:
            raw = data.get(name)
            if isinstance(raw, str):  # in JSON, a number is no string
                raise Refused(param.code, f"{name} is not a number")
        params[param.name] = param.parse(raw, name)
    page: tuple[Cursor | None, int] = (None, MAX_PAGE_SIZE)
    if op.paged:
        page = paging(query.get("page_size"), query.get("page_token"))
    return Call(None, groups, params, page, body_of(op, data), key)


def body_of(op: Operation, data: Any) -> Mapping[str, Any]:
    """What the operation reads of `data`: list filters, or a write's fields as Go's
    decoder leaves them (a field left out or null is its zero value; a destination
    with nothing in it, `{}`, is absent)."""
    route = op.envelope
    assert route is not None
    if op.filters:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise Refused(ErrorCode.INVALID_FILTER, "the filters (data) must be a JSON object")
        return data
    if not op.body_fields:
        return {}
    if not isinstance(data, dict):
        raise Refused(ErrorCode.INVALID_REQUEST, "the request's data must be a JSON object")
    body = dict(data)
    for name, zero in route.zero.items():
        if body.get(name) is None:
            body[name] = zero
    for name in _DESTINATIONS:
        value = body.get(name)
        if isinstance(value, dict) and all(v in ("", None) for v in value.values()):
            body[name] = None  # api-manager sends all five; the absent ones as {}
    return body


def platform_data(result: Resource | Listing) -> Any:
    if isinstance(result, Listing):
        return [item.platform() for item in result.items]
    return result.platform()


def error_reply(refused: Refused) -> dict[str, Any]:
    """A VoIPbin typed error (`cerrors.ToResponse`): `status_code` is its status's."""
    code = refused.code
    error: dict[str, Any] = {
        "status": str(code.platform_status),
        "reason": code.reason,
        "domain": SERVICE_NAME,
        "message": code.platform_message or refused.message,
    }
    if refused.details:
        error["details"] = refused.details
    return {
        "status_code": code.platform_status.status_code,
        "data_type": ERROR_DATA_TYPE,
        "data": error,
    }


class EnvelopeListener(QueueConsumer):
    queue_name = REQUEST_QUEUE

    def __init__(
        self,
        connection: AbstractRobustConnection,
        replies: Replies,
        backend: Backend,
        *,
        prefetch: int = 32,
    ):
        super().__init__(connection, replies, prefetch=prefetch)
        self.backend = backend

    async def process(self, message: AbstractIncomingMessage) -> Settle:
        """Answer the request; it is settled once answered, whatever the answer: a
        reply that cannot be published is logged, never a reason to run the request
        again (a caller waits 3 s for its reply, then gives up on it)."""
        # The platform's callers set no message_id; one that is set makes a
        # redelivered or re-sent write take effect once.
        response = await self.respond(message.body, message.message_id)
        try:
            await self.publish_reply(message, orjson.dumps(response))
        except Exception:
            log.exception(
                "could not publish the reply", extra={"fields": {"reply_to": message.reply_to}}
            )
        return Settle.ACK

    async def respond(self, raw: bytes, key: str | None = None) -> dict[str, Any]:
        """The response envelope to one request envelope."""
        try:
            request = parse_request(raw)
            found = find(request)
            if found is None:
                return NO_ROUTE
            op, match = found
            result = await op.handler(call_of(op, match, request, key), self.backend)
            return {"status_code": 200, "data_type": JSON, "data": platform_data(result)}
        except Refused as refused:
            return error_reply(refused)
        except Exception:
            log.exception("envelope request failed")
            return error_reply(Refused(ErrorCode.INTERNAL_ERROR, "internal error"))
