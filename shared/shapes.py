"""The one place that renders a resource in the documented JSON shape (CONTRACT 1).

Replies, events and the HTTP API all render through here, so field names, field
order, `null` destinations and the timestamp format cannot drift apart. Anything
with the attributes of `OutdialState` or `TargetState` can be rendered: the
aggregates of the write side and the rows of the read model alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

NEVER = "9999-01-01 00:00:00.000000"


def timestamp(moment: datetime | None) -> str:
    """`YYYY-MM-DD HH:MM:SS.ffffff` in UTC; None means never."""
    if moment is None:
        return NEVER
    offset = moment.utcoffset()
    if offset:
        moment = moment.astimezone(UTC)
    # %-formatting: several times faster than strftime, and replay renders
    # four timestamps for every target.
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


class OutdialState(Protocol):
    @property
    def id(self) -> UUID: ...
    @property
    def customer_id(self) -> UUID: ...
    @property
    def campaign_id(self) -> UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def data(self) -> str: ...
    @property
    def tm_create(self) -> datetime: ...
    @property
    def tm_update(self) -> datetime | None: ...
    @property
    def tm_delete(self) -> datetime | None: ...


class TargetState(Protocol):
    @property
    def id(self) -> UUID: ...
    @property
    def customer_id(self) -> UUID: ...
    @property
    def outdial_id(self) -> UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def data(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def destinations(self) -> Sequence[dict[str, str] | None]: ...
    @property
    def try_counts(self) -> Sequence[int]: ...
    @property
    def tm_create(self) -> datetime: ...
    @property
    def tm_update(self) -> datetime | None: ...
    @property
    def tm_delete(self) -> datetime | None: ...


def address(destination: dict[str, str] | None) -> dict[str, str] | None:
    """A destination in the documented field order, or None for an absent one."""
    if destination is None:
        return None
    return {
        "type": destination["type"],
        "target": destination["target"],
        "target_name": destination.get("target_name", ""),
        "name": destination.get("name", ""),
        "detail": destination.get("detail", ""),
    }


def outdial(o: OutdialState, *, with_customer: bool = False) -> dict[str, Any]:
    """An outdial as in CONTRACT 1; bus replies and events add `customer_id`."""
    shape: dict[str, Any] = {
        "id": str(o.id),
        "campaign_id": str(o.campaign_id),
        "name": o.name,
        "detail": o.detail,
        "data": o.data,
        "tm_create": timestamp(o.tm_create),
        "tm_update": timestamp(o.tm_update),
        "tm_delete": timestamp(o.tm_delete),
    }
    if with_customer:
        shape["customer_id"] = str(o.customer_id)
    return shape


def target(t: TargetState, *, with_customer: bool = False) -> dict[str, Any]:
    """An outdial target as in CONTRACT 1; bus replies and events add `customer_id`."""
    d = t.destinations
    c = t.try_counts
    shape: dict[str, Any] = {
        "id": str(t.id),
        "outdial_id": str(t.outdial_id),
        "name": t.name,
        "detail": t.detail,
        "data": t.data,
        "status": t.status,
        "destination_0": address(d[0]),
        "destination_1": address(d[1]),
        "destination_2": address(d[2]),
        "destination_3": address(d[3]),
        "destination_4": address(d[4]),
        "try_count_0": c[0],
        "try_count_1": c[1],
        "try_count_2": c[2],
        "try_count_3": c[3],
        "try_count_4": c[4],
        "tm_create": timestamp(t.tm_create),
        "tm_update": timestamp(t.tm_update),
        "tm_delete": timestamp(t.tm_delete),
    }
    if with_customer:
        shape["customer_id"] = str(t.customer_id)
    return shape
