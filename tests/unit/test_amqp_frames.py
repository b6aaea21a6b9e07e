"""The hand-made publish frames (shared.amqp_frames) are the bytes pamqp makes of
the same publish.

pamqp (aiormq's own marshalling, what `channel.basic_publish` would send) is the
reference; the relay's events and the replies must not differ from it by a byte,
whatever the routing key, message id, correlation id, body size (split into
frames of the broker's size) or channel.
"""

from __future__ import annotations

import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.frame import unmarshal
from pamqp.header import ContentHeader

from services.command.outbox import OutboxRow
from shared import amqp_frames
from shared.bus import JSON


def pamqp_frames(channel: int, rows: list[OutboxRow], max_content_size: int) -> bytes:
    frames: list[object] = []
    for row in rows:
        frames.append(spec.Basic.Publish(exchange=row.exchange, routing_key=row.routing_key))
        properties = spec.Basic.Properties(
            content_type=JSON,
            delivery_mode=2,
            message_id=row.message_id,
            message_type=row.routing_key,
        )
        frames.append(ContentHeader(properties=properties, body_size=len(row.body)))
        body = row.body
        frames.extend(
            ContentBody(body[i : i + max_content_size])
            for i in range(0, len(body), max_content_size)
        )
    return ChannelFrame.marshall(channel, frames).payload  # type: ignore[arg-type]


def publish_frames(channel: int, rows: list[OutboxRow], max_content_size: int) -> bytes:
    """As the relay publishes a page."""
    out: list[bytes] = []
    for r in rows:
        properties = amqp_frames.event_properties(r.message_id, r.routing_key)
        flags = amqp_frames.EVENT_FLAGS
        amqp_frames.publish(
            out, channel, r.exchange, r.routing_key, flags, properties, r.body, max_content_size
        )
    return b"".join(out)


def row(
    position: int, routing_key: str, body: bytes, exchange: str = "outdial.events"
) -> OutboxRow:
    message_id = f"{position:08x}-5b7d-5f3a-9c1e-0d2b4a6c8e10"
    return OutboxRow(position, 0, exchange, routing_key, message_id, body)


ROWS = [
    row(1, "outdial_created", b'{"type":"outdial_created","data":{"name":"caf\xc3\xa9"}}'),
    row(2, "outdial_target_created", b"{}" + b" " * 5000 + b"{}"),
    row(3, "outdial_target_updated", b"x" * 20000),  # split into frames below
    row(4, "outdial_created", b'{"a":1}', exchange="bin-manager.outdial-manager.event"),
    row(5, "bin-manager.webhook-manager.request", b"", exchange=""),  # no body frame
    row(6, "outdial_created", b'{"b":2}'),  # the first's method frame, made again
]


@pytest.mark.parametrize("channel", [1, 7, 65535])
@pytest.mark.parametrize("max_content_size", [131064, 4096, 20000])
def test_the_same_bytes_as_pamqp(channel: int, max_content_size: int) -> None:
    ours = publish_frames(channel, ROWS, max_content_size)
    assert ours == pamqp_frames(channel, ROWS, max_content_size)


def test_frames_read_back_as_the_rows() -> None:
    data = publish_frames(3, ROWS[2:3], 4096)
    read = []
    while data:
        size, channel, frame = unmarshal(data)
        assert channel == 3
        read.append(frame)
        data = data[size:]
    publish, header, *bodies = read
    assert isinstance(publish, spec.Basic.Publish)
    assert (publish.exchange, publish.routing_key, publish.mandatory) == (
        "outdial.events",
        "outdial_target_updated",
        False,
    )
    assert isinstance(header, ContentHeader)
    assert header.body_size == 20000
    assert header.properties.message_id == ROWS[2].message_id
    assert header.properties.message_type == "outdial_target_updated"
    assert header.properties.delivery_mode == 2
    assert header.properties.content_type == JSON
    assert [len(b.value) for b in bodies] == [4096] * 4 + [20000 - 4 * 4096]
    assert b"".join(b.value for b in bodies) == ROWS[2].body


def test_a_routing_key_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="short string"):
        publish_frames(1, [row(1, "k" * 256, b"{}")], 4096)


@pytest.mark.parametrize("correlation_id", ["c-1", "", None, "\u00e9" * 100])
@pytest.mark.parametrize("body", [b'{"status_code":200}', b"", b"y" * 10000])
def test_a_reply_is_what_pamqp_makes_of_it(correlation_id: str | None, body: bytes) -> None:
    reply_to = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUByYWJiaXQAAA"
    out: list[bytes] = []
    flags, properties = amqp_frames.reply_properties(correlation_id)
    amqp_frames.publish(out, 2, "", reply_to, flags, properties, body, 4096)
    frames: list[object] = [
        spec.Basic.Publish(exchange="", routing_key=reply_to),
        ContentHeader(
            properties=spec.Basic.Properties(content_type=JSON, correlation_id=correlation_id),
            body_size=len(body),
        ),
        *(ContentBody(body[i : i + 4096]) for i in range(0, len(body), 4096)),
    ]
    assert b"".join(out) == ChannelFrame.marshall(2, frames).payload  # type: ignore[arg-type]
