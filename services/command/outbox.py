"""The outbox: the integration events of each stored event, rendered once, when the
event is stored, in the same transaction.

Every event is published to `outdial.events` (CONTRACT 4). An outdial's
created, updated and deleted events are also published as VoIPbin's
outdial-manager publishes them (CONTRACT 8), in its model's shape: to its
fanout event exchange, and as the customer's webhook, a request to
webhook-manager's queue (fire and forget). VoIPbin publishes nothing for
targets, and neither does this, there.

Each row is one message to publish: its exchange, routing key, `message_id`
(derived from the event's aggregate and version, and which message of the
event it is, so equal on every publication) and body. Rows are keyed by the
event's position and a sequence number within it, and are written under the
lock that orders the events, so their key order is the log's order. The relay
publishes them in that order and deletes what the broker has taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson

from services.store import Dialect, insert_rows
from shared import platform, shapes
from shared.bus import EVENT_EXCHANGE, JSON

OUTBOX = "outdial_outbox"
PUBLISHER = platform.SERVICE_NAME
NIL_CUSTOMER = "00000000-0000-0000-0000-000000000000"
EVENT_IDS = uuid5(NAMESPACE_URL, "urn:outdial:event")

# The event class's name on each aggregate, to the routing key of CONTRACT 4.
ROUTING_KEYS = {
    "Outdial.Created": "outdial_created",
    "Outdial.Updated": "outdial_updated",
    "Outdial.CampaignUpdated": "outdial_updated",
    "Outdial.DataUpdated": "outdial_updated",
    "Outdial.Deleted": "outdial_deleted",
    "OutdialTarget.Created": "outdialtarget_created",
    "OutdialTarget.TryStarted": "outdialtarget_updated",
    "OutdialTarget.StatusUpdated": "outdialtarget_updated",
    "OutdialTarget.Deleted": "outdialtarget_deleted",
}


class OutboxMessage(NamedTuple):
    exchange: str
    routing_key: str
    message_id: str
    body: bytes
    # CONTRACT 4's bodies end with the event's position, known once it is stored.
    with_position: bool = False

    def stored_body(self, position: int) -> bytes:
        if not self.with_position:
            return self.body
        return self.body[:-1] + b',"position":%d}' % position


class OutboxRow(NamedTuple):
    position: int
    seq: int
    exchange: str
    routing_key: str
    message_id: str
    body: bytes


def event_message_id(originator_id: UUID | str, version: int, suffix: str = "") -> str:
    """The same on every publication of one event, in every process: the text of
    `uuid5(EVENT_IDS, f"{originator_id}/{version}{suffix}")`, made without the UUID
    objects (a third of the cost: every stored event needs one)."""
    name = f"{originator_id}/{version}{suffix}".encode()
    digest = bytearray(hashlib.sha1(EVENT_IDS.bytes + name, usedforsecurity=False).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_name(event: Any) -> str:
    return type(event).__qualname__


def messages_for(event: Any, resource_with_customer: dict[str, Any]) -> list[OutboxMessage]:
    """What one stored event publishes: `resource_with_customer` is the resource as it
    stands after the event, in the bus's shape (CONTRACT 1 plus `customer_id`)."""
    key = ROUTING_KEYS[event_name(event)]
    body = orjson.dumps(
        {"type": key, "publisher": PUBLISHER, "data_type": JSON, "data": resource_with_customer}
    )
    message_id = event_message_id(event.originator_id, event.originator_version)
    messages = [OutboxMessage(EVENT_EXCHANGE, key, message_id, body, with_position=True)]
    if key in platform.OUTDIAL_EVENTS:
        messages += platform_messages(event, key, resource_with_customer)
    return messages


def platform_messages(event: Any, key: str, outdial: dict[str, Any]) -> list[OutboxMessage]:
    """VoIPbin's `PublishWebhookEvent` of an outdial event: the event on its fanout
    exchange (`sock.Event`), and the customer's webhook handed to webhook-manager
    (a `POST /v1/webhooks` request, skipped, as VoIPbin skips it, for the nil
    customer). `outdial`: the bus's shape, rendered again in VoIPbin's model."""
    customer_id = outdial["customer_id"]
    model = shapes.platform_outdial(shapes.outdial_record(outdial, customer_id))
    event_body = orjson.dumps(
        {"type": key, "publisher": PUBLISHER, "data_type": JSON, "data": model}
    )
    of_event = (event.originator_id, event.originator_version)
    messages = [
        OutboxMessage(
            platform.EVENT_EXCHANGE,
            platform.EVENT_ROUTING_KEY,
            event_message_id(*of_event, "/platform-event"),
            event_body,
        )
    ]
    if customer_id != NIL_CUSTOMER:
        webhook = {
            "uri": platform.WEBHOOK_URI,
            "method": "POST",
            "publisher": PUBLISHER,
            "data_type": JSON,
            "data": {
                "customer_id": customer_id,
                "data_type": JSON,
                "data": {"type": key, "data": model},
            },
        }
        messages.append(
            OutboxMessage(
                "",  # the default exchange: straight to the queue
                platform.WEBHOOK_QUEUE,
                event_message_id(*of_event, "/platform-webhook"),
                orjson.dumps(webhook),
            )
        )
    return messages


def create_table(cursor: Any, dialect: Dialect) -> None:
    blob = "BLOB" if dialect.kind == "sqlite" else "BYTEA"
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {dialect.table(OUTBOX)} ("
        "position BIGINT NOT NULL, seq INTEGER NOT NULL, exchange TEXT NOT NULL, "
        f"routing_key TEXT NOT NULL, message_id TEXT NOT NULL, body {blob} NOT NULL, "
        "PRIMARY KEY (position, seq))"
    )


def insert(
    cursor: Any, dialect: Dialect, messages: Iterable[tuple[int, Sequence[OutboxMessage]]]
) -> None:
    """Insert the messages of each (position, messages of the event at that position)."""
    rows = [
        (position, seq, m.exchange, m.routing_key, m.message_id, m.stored_body(position))
        for position, of_event in messages
        for seq, m in enumerate(of_event)
    ]
    insert_rows(cursor, dialect, dialect.table(OUTBOX), OutboxRow._fields, rows)


# A page of the outbox holds at most this many bytes of bodies (and at least one
# event): 500 events of a big AddTargets would otherwise be 200 MB in memory at once.
PAGE_BYTES = 4 * 1024 * 1024


def page(
    cursor: Any, dialect: Dialect, after: int, limit: int, max_bytes: int = PAGE_BYTES
) -> list[OutboxRow]:
    """The next rows after `after`, in order, at most `limit` rows and about
    `max_bytes` of bodies, whole events only (never some of the messages of one
    event, so a position once published is published whole)."""
    cursor.execute(
        dialect.sql(
            "SELECT position, seq, exchange, routing_key, message_id, body "
            f"FROM {dialect.table(OUTBOX)} WHERE position > ? ORDER BY position, seq LIMIT ?"
        ),
        (after, limit),
    )
    rows: list[OutboxRow] = []
    size = 0
    cut = False
    for r in cursor.fetchall():
        row = OutboxRow(int(r[0]), int(r[1]), r[2], r[3], r[4], bytes(r[5]))
        if size >= max_bytes and row.position != rows[-1].position:
            cut = True
            break
        rows.append(row)
        size += len(row.body)
    # Cut by bytes, the page ends at an event's end. Cut by the row limit, its
    # last event may have more rows: that event waits for the next page.
    if not cut and len(rows) == limit and rows[0].position != rows[-1].position:
        last = rows[-1].position
        rows = [r for r in rows if r.position != last]
    return rows


def delete_through(cursor: Any, dialect: Dialect, position: int) -> None:
    """Forget the rows of events up to `position`: published, and taken by the broker."""
    cursor.execute(
        dialect.sql(f"DELETE FROM {dialect.table(OUTBOX)} WHERE position <= ?"), (position,)
    )
