"""The one place that renders a resource, in each of its two shape families.

- The tutorial's (CONTRACT 1): replies, `outdial.events` and the HTTP API
  (`outdial`, `target`).
- The platform's (CONTRACT 8): VoIPbin's current models, as its `json.Marshal`
  emits them, for the request envelope and the platform's events
  (`platform_outdial`, `platform_target`).

Both render the same resource representation, anything with the attributes of
`OutdialState` or `TargetState`: the aggregates of the write side, or the
records of a rendered tutorial shape (`outdial_record`, `target_record`: what
the read model stores, and what a command's reply carries). So field names,
field order, `null` destinations and the timestamp formats cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, NamedTuple, Protocol
from uuid import UUID

NEVER = "9999-01-01 00:00:00.000000"


# A moment's fields, for %-formatting: several times faster than strftime, and
# replay renders four timestamps for every target.
_FIELDS = attrgetter("year", "month", "day", "hour", "minute", "second", "microsecond")


def _utc_fields(moment: datetime) -> tuple[int, ...]:
    offset = moment.utcoffset()
    return _FIELDS(moment.astimezone(UTC) if offset else moment)


def timestamp(moment: datetime | None) -> str:
    """`YYYY-MM-DD HH:MM:SS.ffffff` in UTC; None means never."""
    if moment is None:
        return NEVER
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % _utc_fields(moment)  # noqa: UP031


def rfc3339(moment: datetime | None) -> str | None:
    """The platform's time: RFC 3339 in UTC, always six fractional digits and `Z`
    (`2026-11-27T11:08:56.914735Z`, what Go's decoder reads); None (`null`) for never."""
    if moment is None:
        return None
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % _utc_fields(moment)  # noqa: UP031


def parse_timestamp(text: str) -> datetime | None:
    """A `timestamp` back to its moment (UTC); `NEVER` is None."""
    if text == NEVER:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


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
    shape = _target(t, address, timestamp)
    if with_customer:
        shape["customer_id"] = str(t.customer_id)
    return shape


def _target(
    t: TargetState,
    address: Callable[[dict[str, str] | None], dict[str, str] | None],
    moment: Callable[[datetime | None], str | None],
) -> dict[str, Any]:
    """A target's keys in the order both families share, its destinations and times
    in the family's own format."""
    d = t.destinations
    c = t.try_counts
    return {
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
        "tm_create": moment(t.tm_create),
        "tm_update": moment(t.tm_update),
        "tm_delete": moment(t.tm_delete),
    }


# ---- the resource representation of a rendered tutorial shape ------------------------


class OutdialRecord(NamedTuple):
    """An outdial's state, read back from its tutorial shape (an `OutdialState`)."""

    id: UUID
    customer_id: UUID
    campaign_id: UUID
    name: str
    detail: str
    data: str
    tm_create: datetime
    tm_update: datetime | None
    tm_delete: datetime | None


class TargetRecord(NamedTuple):
    """A target's state, read back from its tutorial shape (a `TargetState`)."""

    id: UUID
    customer_id: UUID
    outdial_id: UUID
    name: str
    detail: str
    data: str
    status: str
    destinations: Sequence[dict[str, str] | None]
    try_counts: Sequence[int]
    tm_create: datetime
    tm_update: datetime | None
    tm_delete: datetime | None


def _moment(text: str) -> datetime:
    moment = parse_timestamp(text)
    if moment is None:
        raise ValueError(f"{NEVER} is no creation time")
    return moment


def outdial_record(shape: Mapping[str, Any], customer_id: str) -> OutdialRecord:
    """The state an outdial's tutorial shape (`outdial`) was rendered from."""
    return OutdialRecord(
        UUID(shape["id"]),
        UUID(customer_id),
        UUID(shape["campaign_id"]),
        shape["name"],
        shape["detail"],
        shape["data"],
        _moment(shape["tm_create"]),
        parse_timestamp(shape["tm_update"]),
        parse_timestamp(shape["tm_delete"]),
    )


def target_record(shape: Mapping[str, Any], customer_id: str) -> TargetRecord:
    """The state a target's tutorial shape (`target`) was rendered from."""
    return TargetRecord(
        UUID(shape["id"]),
        UUID(customer_id),
        UUID(shape["outdial_id"]),
        shape["name"],
        shape["detail"],
        shape["data"],
        shape["status"],
        [shape[f"destination_{i}"] for i in range(5)],
        [shape[f"try_count_{i}"] for i in range(5)],
        _moment(shape["tm_create"]),
        parse_timestamp(shape["tm_update"]),
        parse_timestamp(shape["tm_delete"]),
    )


# ---- the platform's shapes (CONTRACT 8) ------------------------------------------------

_ADDRESS_FIELDS = ("type", "target", "target_name", "name", "detail")


def platform_address(destination: Mapping[str, str] | None) -> dict[str, str] | None:
    """VoIPbin's `address.Address`: its fields in its order, the empty ones left out
    (every tag is `omitempty`); None for an absent destination."""
    if destination is None:
        return None
    return {k: v for k in _ADDRESS_FIELDS if (v := destination.get(k, ""))}


def platform_outdial(o: OutdialState) -> dict[str, Any]:
    """VoIPbin's `outdial.Outdial` (and its identical `WebhookMessage`): every key, in
    its order; times RFC 3339, `null` for never."""
    return {
        "id": str(o.id),
        "customer_id": str(o.customer_id),
        "campaign_id": str(o.campaign_id),
        "name": o.name,
        "detail": o.detail,
        "data": o.data,
        "tm_create": rfc3339(o.tm_create),
        "tm_update": rfc3339(o.tm_update),
        "tm_delete": rfc3339(o.tm_delete),
    }


def platform_target(t: TargetState) -> dict[str, Any]:
    """VoIPbin's `outdialtarget.OutdialTarget`: every key, in its order (it has no
    `customer_id`); times RFC 3339, `null` for never; a new target's `tm_update` is
    its `tm_create`, which the platform reads as "never tried"."""
    return _target(t, platform_address, rfc3339)
