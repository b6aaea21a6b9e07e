"""The read model's rows straight from stored events, for rebuilds.

A rebuild reads every event once, aggregate by aggregate. Decoding each into an
eventsourcing event object and folding it into an aggregate (as commands do)
costs several times what reading the log does; but each event of this domain
carries what the row needs, in its stored JSON. So the rows are folded from
that JSON directly: ids kept as the text they are, timestamps reformatted as
text, no aggregate built.

Every kind of event is listed in `_APPLY`; an aggregate with an event this
module does not know is folded the slow way, through its aggregate (`slow`).
The rows of both ways are the same: commands write their rows from aggregates,
and `outdial replay --check` compares those with rows folded here, row for row
(the tests do, after commands of every kind).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson

from services.query.writes import OutdialRow, TargetRow, outdial_row, present
from shared.shapes import NEVER, address, timestamp

_dumps = orjson.dumps

# A stored event: (originator_id as stored, version, topic, state).
StoredRow = tuple[Any, int, str, bytes]

_DOMAIN = "services.command.domain:"


def _hex_uuid(value: Any) -> str:
    """A UUID as eventsourcing's transcoder stores it, as canonical text."""
    h = value["_data_"]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _time(value: Any) -> str:
    """eventsourcing's ISO timestamp as CONTRACT 1's `YYYY-MM-DD HH:MM:SS.ffffff` (UTC)."""
    text: str = value["_data_"]
    if len(text) == 32 and text[19] == "." and text.endswith("+00:00"):
        return f"{text[:10]} {text[11:26]}"
    return timestamp(datetime.fromisoformat(text))  # no microseconds, or another offset


class _Outdial:
    """An outdial as its events so far left it: what `writes.outdial_row` reads."""

    __slots__ = (
        "campaign_id",
        "customer_id",
        "data",
        "deleted",
        "detail",
        "id",
        "name",
        "tm_create",
        "tm_last",
        "version",
    )
    id: str
    customer_id: str
    campaign_id: str
    name: str
    detail: str
    data: str
    deleted: bool
    tm_create: str
    tm_last: str  # of the last event so far
    version: int

    def row(self) -> OutdialRow:
        shape = {
            "id": self.id,
            "campaign_id": self.campaign_id,
            "name": self.name,
            "detail": self.detail,
            "data": self.data,
            "tm_create": self.tm_create,
            # "never" until the first change (CONTRACT 1), as `Outdial.tm_update` says.
            "tm_update": self.tm_last if self.version > 1 else NEVER,
            "tm_delete": self.tm_last if self.deleted else NEVER,
        }
        return outdial_row(self, shape)  # type: ignore[arg-type]


class _Target:
    """A target as its events so far left it: what `writes.target_row` reads."""

    __slots__ = (
        "customer_id",
        "data",
        "deleted",
        "destinations",
        "detail",
        "id",
        "name",
        "outdial_id",
        "status",
        "tm_create",
        "tm_last",
        "try_counts",
        "version",
    )
    id: str
    customer_id: str
    outdial_id: str
    name: str
    detail: str
    data: str
    status: str
    destinations: list[dict[str, str] | None]
    try_counts: list[int]
    deleted: bool
    tm_create: str
    tm_last: str
    version: int

    def row(self) -> TargetRow:
        # `writes.target_row` of the same shape, made here without its lookups (a
        # million rows): `replay --check` and the tests compare the two.
        d = self.destinations
        c = self.try_counts
        tm_last = self.tm_last
        shape = {
            "id": self.id,
            "outdial_id": self.outdial_id,
            "name": self.name,
            "detail": self.detail,
            "data": self.data,
            "status": self.status,
            "destination_0": None if d[0] is None else address(d[0]),
            "destination_1": None if d[1] is None else address(d[1]),
            "destination_2": None if d[2] is None else address(d[2]),
            "destination_3": None if d[3] is None else address(d[3]),
            "destination_4": None if d[4] is None else address(d[4]),
            "try_count_0": c[0],
            "try_count_1": c[1],
            "try_count_2": c[2],
            "try_count_3": c[3],
            "try_count_4": c[4],
            "tm_create": self.tm_create,
            "tm_update": tm_last,
            "tm_delete": tm_last if self.deleted else NEVER,
        }
        return TargetRow(
            self.id,
            self.outdial_id,
            self.customer_id,
            self.tm_create,
            int(self.deleted),
            self.status,
            tm_last,
            present(d),
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            _dumps(shape).decode(),
        )


def _outdial_created(resource_id: str, s: dict[str, Any]) -> _Outdial:
    o = _Outdial()
    o.id = resource_id
    o.customer_id = _hex_uuid(s["customer_id"])
    o.campaign_id = _hex_uuid(s["campaign_id"])
    o.name, o.detail, o.data = s["name"], s["detail"], s["data"]
    o.deleted = False
    return o


def _target_created(resource_id: str, s: dict[str, Any]) -> _Target:
    t = _Target()
    t.id = resource_id
    t.customer_id = _hex_uuid(s["customer_id"])
    t.outdial_id = _hex_uuid(s["outdial_id"])
    t.name, t.detail, t.data = s["name"], s["detail"], s["data"]
    t.destinations = s["destinations"]
    t.try_counts = [0, 0, 0, 0, 0]
    t.status = "idle"
    t.deleted = False
    return t


def _updated(o: Any, s: dict[str, Any]) -> None:
    o.name, o.detail = s["name"], s["detail"]


def _campaign_updated(o: Any, s: dict[str, Any]) -> None:
    o.campaign_id = _hex_uuid(s["campaign_id"])


def _data_updated(o: Any, s: dict[str, Any]) -> None:
    o.data = s["data"]


def _deleted(o: Any, s: dict[str, Any]) -> None:
    o.deleted = True


def _try_started(t: Any, s: dict[str, Any]) -> None:
    t.try_counts[s["destination_index"]] += 1
    t.status = "progressing"


def _status_updated(t: Any, s: dict[str, Any]) -> None:
    t.status = s["status"]


# Each event of the domain, and what it does to a row (the aggregates' own
# `@event` methods, for the fields the read model keeps).
_CREATE: dict[str, Callable[[str, dict[str, Any]], Any]] = {
    _DOMAIN + "Outdial.Created": _outdial_created,
    _DOMAIN + "OutdialTarget.Created": _target_created,
}
_APPLY: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    _DOMAIN + "Outdial.Updated": _updated,
    _DOMAIN + "Outdial.CampaignUpdated": _campaign_updated,
    _DOMAIN + "Outdial.DataUpdated": _data_updated,
    _DOMAIN + "Outdial.Deleted": _deleted,
    _DOMAIN + "OutdialTarget.TryStarted": _try_started,
    _DOMAIN + "OutdialTarget.StatusUpdated": _status_updated,
    _DOMAIN + "OutdialTarget.Deleted": _deleted,
}


def fold(
    events: Iterable[StoredRow],
    slow: Callable[[list[StoredRow]], OutdialRow | TargetRow | None],
) -> Iterator[OutdialRow | TargetRow]:
    """The row of each aggregate of `events` (sorted by aggregate, then version), as
    its last event left it. `slow` folds an aggregate this module cannot."""
    current: Any = None
    group: list[StoredRow] = []
    resource: Any = None
    known = True
    loads, creates, applies = orjson.loads, _CREATE.get, _APPLY.get
    for event in events:
        originator_id, version, topic, stored = event
        if originator_id != current:
            if group:
                row = resource.row() if known and resource is not None else slow(group)
                if row is not None:
                    yield row
            current, group, resource, known = originator_id, [], None, True
        group.append(event)
        if not known:
            continue
        state = loads(stored)
        if version == 1 and (create := creates(topic)) is not None:
            resource = create(_text_id(originator_id), state)
            resource.tm_create = resource.tm_last = _time(state["timestamp"])
        elif resource is not None and (apply := applies(topic)) is not None:
            apply(resource, state)
            resource.tm_last = _time(state["timestamp"])
        else:
            known = False
            continue
        resource.version = version
    if group:
        row = resource.row() if known and resource is not None else slow(group)
        if row is not None:
            yield row


def _text_id(originator_id: Any) -> str:
    """An id as the events table holds it (SQLite: 32 hex digits; PostgreSQL: a UUID)."""
    if isinstance(originator_id, str) and len(originator_id) == 32:
        h = originator_id
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return str(originator_id)
