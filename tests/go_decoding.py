"""A strict checker of what the platform's Go callers decode (CONTRACT 8).

VoIPbin's callers read a reply with `parseResponse` (`bin-common-handler/pkg/
requesthandler/common.go`): a typed error (`cerrors.FromResponse`) when the
status is 400 or more, `data_type` is `voipbin_error` and `data` decodes as a
`VoipbinError`; any other status of 300 or more is a bare error; otherwise
`json.Unmarshal(data, &model)`. Events are `json.Unmarshal(body, &sock.Event)`.

Each function here takes a value decoded from JSON and raises `GoDecodeError`
where Go's decoder would fail on it (a number for a string, a non-integer for an
`int`, a time that is not RFC 3339, a UUID that is not one), and also where it
is not what VoIPbin's own `json.Marshal` emits (every key, in its struct's
order; addresses without their empty fields; `[]`, not `null`, for an empty
list), so that a reply decoded here is one a Go caller reads as VoIPbin's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

# VoIPbin's OutdialTarget has the tutorial target's keys, in its order.
from tests.expected import TARGET_KEYS

# Go's strict RFC 3339 (`time.Time.UnmarshalJSON`): `T`, a zone of `Z` or ±hh:mm.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-](\d{2}):(\d{2}))"
)
# What gofrs/uuid marshals: canonical, lower case.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

OUTDIAL_KEYS = [
    "id",
    "customer_id",
    "campaign_id",
    "name",
    "detail",
    "data",
    "tm_create",
    "tm_update",
    "tm_delete",
]
ADDRESS_KEYS = ["type", "target", "target_name", "name", "detail"]
ADDRESS_TYPES = {
    "agent",
    "ai",
    "ai_team",
    "conference",
    "email",
    "extension",
    "line",
    "sip",
    "tel",
    "webchat",
    "web_session",
    "whatsapp",
}
TARGET_STATUSES = {"idle", "progressing", "done"}
# cerrors.Status and HTTPStatusFor.
STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PAYMENT_REQUIRED": 402,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}


class GoDecodeError(AssertionError):
    """Go's decoder would fail here, or this is not what VoIPbin emits."""


def _fail(where: str, why: str, value: Any) -> GoDecodeError:
    return GoDecodeError(f"{where}: {why}: {value!r}"[:500])


def string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, "not a JSON string", value)
    return value


def integer(value: Any, where: str) -> int:
    """Go's `int`: a JSON number without fraction or exponent, in 64 bits."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, "not a JSON integer", value)
    if not -(2**63) <= value < 2**63:
        raise _fail(where, "overflows an int", value)
    return value


def uuid(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise _fail(where, "not a UUID as gofrs/uuid marshals it", value)
    return value


def time(value: Any, where: str, *, nullable: bool = True) -> datetime | None:
    """A `*time.Time`: `null`, or strict RFC 3339; and, as VoIPbin's come from
    MySQL's datetime(6), in UTC with at most microseconds."""
    if value is None:
        if not nullable:
            raise _fail(where, "null where a time is always set", value)
        return None
    match = _RFC3339.fullmatch(string(value, where))
    if match is None:
        raise _fail(where, "not RFC 3339 (Go's Time.UnmarshalJSON refuses it)", value)
    year, month, day, hour, minute, second, fraction, zone = match.groups()[:8]
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        raise _fail(where, "out of range", value) from None
    if zone != "Z":
        raise _fail(where, "not in UTC", value)
    if fraction is not None and len(fraction) - 1 > 6:
        raise _fail(where, "finer than microseconds", value)
    micros = int((fraction or ".0")[1:].ljust(6, "0"))
    return moment.replace(microsecond=micros, tzinfo=UTC)


def _keys(value: Any, keys: list[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "not a JSON object", value)
    if list(value) != keys:
        raise _fail(where, f"keys are not {keys}", list(value))
    return value


def address(value: Any, where: str) -> dict[str, str] | None:
    """A `*address.Address`: `null`, or an object whose fields are all `omitempty`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(where, "not a JSON object", value)
    order = [k for k in ADDRESS_KEYS if k in value]
    if list(value) != order:
        raise _fail(where, f"keys are not some of {ADDRESS_KEYS}, in order", list(value))
    for key, field in value.items():
        if string(field, f"{where}.{key}") == "":
            raise _fail(where, f"{key} is empty: VoIPbin leaves it out (omitempty)", value)
    if not value:
        raise _fail(where, "{} decodes to a non-nil address, which a dialer would dial", value)
    if value.get("type") not in ADDRESS_TYPES:
        raise _fail(where, "not an address type of VoIPbin", value)
    return value


def outdial(value: Any, where: str = "outdial") -> dict[str, Any]:
    """An `outdial.Outdial` (and its `WebhookMessage`)."""
    value = _keys(value, OUTDIAL_KEYS, where)
    for key in ("id", "customer_id", "campaign_id"):
        uuid(value[key], f"{where}.{key}")
    for key in ("name", "detail", "data"):
        string(value[key], f"{where}.{key}")
    created = time(value["tm_create"], f"{where}.tm_create", nullable=False)
    updated = time(value["tm_update"], f"{where}.tm_update")
    deleted = time(value["tm_delete"], f"{where}.tm_delete")
    assert created is not None
    if updated is not None and updated < created:
        raise _fail(where, "updated before created", value)
    if deleted is not None and deleted != updated:
        raise _fail(where, "a delete sets tm_update and tm_delete alike", value)
    return value


def target(value: Any, where: str = "target") -> dict[str, Any]:
    """An `outdialtarget.OutdialTarget` (no `customer_id`)."""
    value = _keys(value, TARGET_KEYS, where)
    uuid(value["id"], f"{where}.id")
    uuid(value["outdial_id"], f"{where}.outdial_id")
    for key in ("name", "detail", "data"):
        string(value[key], f"{where}.{key}")
    if string(value["status"], f"{where}.status") not in TARGET_STATUSES:
        raise _fail(where, "not a status of a target", value["status"])
    for i in range(5):
        address(value[f"destination_{i}"], f"{where}.destination_{i}")
        if integer(value[f"try_count_{i}"], f"{where}.try_count_{i}") < 0:
            raise _fail(where, "a negative try count", value)
    created = time(value["tm_create"], f"{where}.tm_create", nullable=False)
    updated = time(value["tm_update"], f"{where}.tm_update", nullable=False)
    time(value["tm_delete"], f"{where}.tm_delete")
    assert created is not None and updated is not None
    if updated < created:
        raise _fail(where, "updated before created", value)
    return value


def listed(value: Any, item: Any, where: str) -> list[Any]:
    """A `[]Model` as VoIPbin's handlers emit it: an array, `[]` when empty."""
    if not isinstance(value, list):
        raise _fail(where, "not a JSON array", value)
    return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]


def outdials(value: Any) -> list[dict[str, Any]]:
    return listed(value, outdial, "outdials")


def targets(value: Any) -> list[dict[str, Any]]:
    return listed(value, target, "targets")


@dataclass(frozen=True)
class VoipbinError(Exception):
    """`*cerrors.VoipbinError`, as `parseResponse` returns it."""

    status_code: int
    status: str
    reason: str
    domain: str
    message: str
    details: list[dict[str, Any]] | None


@dataclass(frozen=True)
class StatusError(Exception):
    """The bare sentinel of a status code (`ErrNotFound`, ...): a reply with no typed error."""

    status_code: int


def voipbin_error(value: Any, status_code: int) -> VoipbinError:
    if not isinstance(value, dict):
        raise _fail("error", "not a JSON object", value)
    required = ["status", "reason", "domain", "message"]
    if list(value) not in (required, [*required, "details"]):
        raise _fail("error", f"keys are not {required} (and details)", list(value))
    status = string(value["status"], "error.status")
    if status not in STATUS_CODES:
        raise _fail("error.status", "not a cerrors.Status", status)
    if STATUS_CODES[status] != status_code:
        raise _fail("error", f"status_code {status_code} is not HTTPStatusFor({status})", value)
    details = value.get("details")
    if details is not None:
        if not isinstance(details, list) or not details:
            raise _fail("error.details", "not a non-empty array (omitempty)", details)
        for detail in details:
            if not isinstance(detail, dict):
                raise _fail("error.details", "not an array of objects", details)
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", string(value["reason"], "error.reason")):
        raise _fail("error.reason", "not in VoIPbin's style, UPPER_SNAKE", value["reason"])
    return VoipbinError(
        status_code,
        status,
        value["reason"],
        string(value["domain"], "error.domain"),
        string(value["message"], "error.message"),
        details,
    )


@dataclass(frozen=True)
class Response:
    """A `sock.Response`."""

    status_code: int
    data_type: str
    data: Any  # None when absent

    def parse(self, into: Any) -> Any:
        """`parseResponse(resp, &out)`: the decoded model, or raise the error Go returns."""
        if self.status_code >= 400 and self.data_type == "voipbin_error" and self.data:
            raise voipbin_error(self.data, self.status_code)
        if self.status_code >= 300:
            raise StatusError(self.status_code)
        if self.data_type != "application/json":
            raise _fail("response", "a success that is not application/json", self.data_type)
        return into(self.data)


def response(body: bytes) -> Response:
    """`json.Unmarshal(body, &sock.Response)`, keys as VoIPbin's marshal them."""
    value = orjson.loads(body)
    if not isinstance(value, dict) or list(value) not in (
        ["status_code", "data_type"],
        ["status_code", "data_type", "data"],
    ):
        raise _fail("response", "not a sock.Response", value)
    return Response(
        integer(value["status_code"], "response.status_code"),
        string(value["data_type"], "response.data_type"),
        value.get("data"),
    )


def event(body: bytes) -> tuple[str, dict[str, Any]]:
    """`json.Unmarshal(body, &sock.Event)` of an outdial event: (type, outdial)."""
    value = _keys(orjson.loads(body), ["type", "publisher", "data_type", "data"], "event")
    if value["publisher"] != "outdial-manager" or value["data_type"] != "application/json":
        raise _fail("event", "not published as outdial-manager publishes", value)
    return string(value["type"], "event.type"), outdial(value["data"], "event.data")


def webhook(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """A `POST /v1/webhooks` request to webhook-manager (`sock.Request` of
    `V1DataWebhooksPost`): (customer_id, event type, outdial)."""
    value = _keys(
        orjson.loads(body), ["uri", "method", "publisher", "data_type", "data"], "webhook"
    )
    if (value["uri"], value["method"], value["publisher"], value["data_type"]) != (
        "/v1/webhooks",
        "POST",
        "outdial-manager",
        "application/json",
    ):
        raise _fail("webhook", "not WebhookV1WebhookSend's request", value)
    data = _keys(value["data"], ["customer_id", "data_type", "data"], "webhook.data")
    if data["data_type"] != "application/json":
        raise _fail("webhook.data.data_type", "not application/json", data["data_type"])
    inner = _keys(data["data"], ["type", "data"], "webhook.data.data")
    return (
        uuid(data["customer_id"], "webhook.data.customer_id"),
        string(inner["type"], "webhook.data.data.type"),
        outdial(inner["data"], "webhook.data.data.data"),
    )
