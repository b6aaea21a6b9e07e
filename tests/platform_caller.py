"""The platform's callers of the outdial manager, as VoIPbin's Go code sends
(CONTRACT 8): `bin-common-handler/pkg/requesthandler/outdial_*.go`, used by
api-manager and campaign-manager, over `rabbitmqhandler.RequestPublish`.

Each request is published to the default exchange, routing key
`bin-manager.outdial-manager.request`, `content_type` text/plain, `reply_to` a
fresh server-named exclusive queue of its own, and no `correlation_id` and no
`message_id`; the first message on that queue is the reply. Bodies are what
Go's `json.Marshal` makes of VoIPbin's structs: keys in struct order, `data` an
embedded JSON value, absent when nil; query strings are built with `%d` and
`url.QueryEscape`, as the Go code builds them. Replies come back as
`go_decoding.Response`, to be read by the Go structs' rules.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import aio_pika
import orjson
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.header import ContentHeader

from tests import go_decoding as go
from tests.fixtures import AMQP_URL

REQUEST_QUEUE = "bin-manager.outdial-manager.request"
# Go's requestTimeoutDefault is 3 s; a test machine under load gets more.
REPLY_SECONDS = 15.0


def query_escape(text: str) -> str:
    """Go's `url.QueryEscape`."""
    return quote_plus(text, safe="")


def go_time(moment: datetime) -> str:
    """`t.UTC().Format("2006-01-02T15:04:05.000000Z")`: api-manager's page token."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_token() -> str:
    """`utilhandler.TimeGetCurTime()`: the page token of a first page."""
    return go_time(datetime.now(UTC))


async def publish_as_go(
    channel: aio_pika.abc.AbstractChannel, body: bytes, *, reply_to: str, routing_key: str
) -> None:
    """Publish as Go's amqp091 does for `RequestPublish`: `content_type` text/plain,
    `reply_to`, and nothing else. aiormq's `basic_publish` gives every message a
    `message_id` of its own making, which VoIPbin's callers never send (and which
    this service would take as an idempotency key), so the frames are written here.
    `channel`: one without publisher confirms (the broker's acks would not match
    aiormq's count of what it published)."""
    raw = await channel.get_underlay_channel()
    assert not raw.publisher_confirms
    properties = spec.Basic.Properties(content_type="text/plain", reply_to=reply_to)
    frames = [
        spec.Basic.Publish(exchange="", routing_key=routing_key),
        ContentHeader(properties=properties, body_size=len(body)),
        *raw._split_body(body),
    ]
    async with raw.lock:
        await raw.write_queue.put(
            ChannelFrame.marshall(frames=frames, channel_number=raw.number, drain_future=None)
        )


def address(type_: str, target: str, **more: str) -> dict[str, str]:
    """An `address.Address` as Go marshals it: empty fields left out."""
    fields = {"type": type_, "target": target, **more}
    order = ["type", "target", "target_name", "name", "detail"]
    return {k: fields[k] for k in order if fields.get(k)}


class Caller:
    """One of the platform's services (`publisher`), sending requests one at a time
    or many at once, each on its own reply queue."""

    def __init__(self, publisher: str = "api-manager", amqp_url: str = AMQP_URL):
        self.publisher = publisher
        self.amqp_url = amqp_url

    async def __aenter__(self) -> Caller:
        self.connection = await aio_pika.connect(self.amqp_url)
        self.channel = await self.connection.channel()
        # Requests go out on a channel of their own, as Go publishes them.
        self.requests = await self.connection.channel(publisher_confirms=False)
        return self

    async def publish(self, body: bytes, reply_to: str) -> None:
        """Publish a request envelope as VoIPbin's callers do (`publish_as_go`)."""
        await publish_as_go(self.requests, body, reply_to=reply_to, routing_key=REQUEST_QUEUE)

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    def envelope(self, method: str, uri: str, data: Any = None) -> bytes:
        """`json.Marshal(sock.Request{...})`."""
        request: dict[str, Any] = {
            "uri": uri,
            "method": method,
            "publisher": self.publisher,
            "data_type": "application/json",
        }
        if data is not None:
            request["data"] = data
        return orjson.dumps(request)

    async def raw(self, body: bytes, *, reply_to: str | None = None) -> go.Response:
        """`RequestPublish`: the reply, as `sock.Response`."""
        queue = await self.channel.declare_queue(
            "", durable=False, auto_delete=True, exclusive=True
        )
        replies: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        tag = await queue.consume(replies.put, no_ack=True)
        try:
            await self.publish(body, reply_to or queue.name)
            message = await asyncio.wait_for(replies.get(), REPLY_SECONDS)
        finally:
            await queue.cancel(tag)
            await queue.delete(if_unused=False, if_empty=False)
        assert not message.correlation_id, "the request had none; the reply has the same"
        return go.response(message.body)

    async def request(self, method: str, uri: str, data: Any = None) -> go.Response:
        return await self.raw(self.envelope(method, uri, data))

    # ---- outdial_outdials.go -------------------------------------------------------

    async def outdial_create(
        self, customer_id: str, campaign_id: str, name: str, detail: str, data: str
    ) -> go.Response:
        body = {
            "customer_id": customer_id,
            "campaign_id": campaign_id,
            "name": name,
            "detail": detail,
            "data": data,
        }
        return await self.request("POST", "/v1/outdials", body)

    async def outdial_list(
        self, page_token: str, page_size: int, filters: dict[str, Any]
    ) -> go.Response:
        uri = f"/v1/outdials?page_token={query_escape(page_token)}&page_size={page_size}"
        return await self.request("GET", uri, filters)

    async def outdial_get(self, outdial_id: str) -> go.Response:
        return await self.request("GET", f"/v1/outdials/{outdial_id}")

    async def outdial_delete(self, outdial_id: str) -> go.Response:
        return await self.request("DELETE", f"/v1/outdials/{outdial_id}")

    async def outdial_update_basic_info(
        self, outdial_id: str, name: str, detail: str
    ) -> go.Response:
        body = {"name": name, "detail": detail}
        return await self.request("PUT", f"/v1/outdials/{outdial_id}", body)

    async def outdial_update_campaign_id(self, outdial_id: str, campaign_id: str) -> go.Response:
        body = {"campaign_id": campaign_id}
        return await self.request("PUT", f"/v1/outdials/{outdial_id}/campaign_id", body)

    async def outdial_update_data(self, outdial_id: str, data: str) -> go.Response:
        return await self.request("PUT", f"/v1/outdials/{outdial_id}/data", {"data": data})

    # ---- outdial_outdialtargets.go -------------------------------------------------

    async def outdialtarget_create(
        self,
        outdial_id: str,
        name: str,
        detail: str,
        data: str,
        *destinations: dict[str, str] | None,
    ) -> go.Response:
        """The Go client: nil destinations left out (`omitempty` pointers)."""
        body: dict[str, Any] = {"name": name, "detail": detail, "data": data}
        for i, destination in enumerate(destinations):
            if destination is not None:
                body[f"destination_{i}"] = destination
        return await self.request("POST", f"/v1/outdials/{outdial_id}/targets", body)

    async def outdialtarget_create_as_api_manager(
        self, outdial_id: str, name: str, detail: str, data: str, *destinations: dict[str, str]
    ) -> go.Response:
        """api-manager's `PostOutdialsIdTargets`: all five, the absent ones as `{}`."""
        body: dict[str, Any] = {"name": name, "detail": detail, "data": data}
        padded = [*destinations, *[{}] * (5 - len(destinations))]
        for i, destination in enumerate(padded):
            body[f"destination_{i}"] = destination
        return await self.request("POST", f"/v1/outdials/{outdial_id}/targets", body)

    async def outdialtarget_gets_available(
        self, outdial_id: str, try_counts: list[int], limit: int
    ) -> go.Response:
        counts = "&".join(f"try_count_{i}={n}" for i, n in enumerate(try_counts))
        uri = f"/v1/outdials/{outdial_id}/available?{counts}&limit={limit}"
        return await self.request("GET", uri)

    async def outdialtarget_delete(self, target_id: str) -> go.Response:
        return await self.request("DELETE", f"/v1/outdialtargets/{target_id}")

    async def outdialtarget_gets_by_outdial_id(
        self, outdial_id: str, page_token: str, page_size: int
    ) -> go.Response:
        uri = (
            f"/v1/outdials/{outdial_id}/targets?page_token={query_escape(page_token)}"
            f"&page_size={page_size}"
        )
        return await self.request("GET", uri)

    async def outdialtarget_get(self, target_id: str) -> go.Response:
        return await self.request("GET", f"/v1/outdialtargets/{target_id}")

    async def outdialtarget_update_status_progressing(
        self, target_id: str, destination_index: int
    ) -> go.Response:
        body = {"destination_index": destination_index}
        return await self.request("POST", f"/v1/outdialtargets/{target_id}/progressing", body)

    async def outdialtarget_update_status(self, target_id: str, status: str) -> go.Response:
        body = {"status": status}
        return await self.request("PUT", f"/v1/outdialtargets/{target_id}/status", body)
