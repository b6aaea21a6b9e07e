"""The resources as pydantic models: what replies, events and reads carry, in both
shape families of `shared.shapes`: the tutorial's (CONTRACT 1) and the platform's
(VoIPbin's models, CONTRACT 8).

`shared.shapes` renders them (fast, without validation); these models read them
back for the typed client and document them in `/openapi.json` and
`docs/asyncapi.yaml`. Unit tests hold the two to the same fields in the same order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.addresses import Address, AddressType
from shared.commands import Data, Detail, Name
from shared.errors import PlatformStatus
from shared.shapes import NEVER

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$"

Timestamp = Annotated[
    str,
    StringConstraints(pattern=TIMESTAMP_PATTERN),
    Field(
        description=f"UTC, `YYYY-MM-DD HH:MM:SS.ffffff`; `{NEVER}` means never.",
        examples=["2022-04-28 01:41:40.503790", NEVER],
    ),
]
TryCount = Annotated[int, Field(ge=0)]


class _Shape(BaseModel):
    model_config = ConfigDict(frozen=True)


class OutdialResource(_Shape):
    """An outdial, as every route answers it (CONTRACT 1)."""

    id: UUID
    campaign_id: UUID = Field(
        description="`00000000-0000-0000-0000-000000000000` until one is set."
    )
    name: Name
    detail: Detail
    data: Data
    tm_create: Timestamp
    tm_update: Timestamp
    tm_delete: Timestamp


class TargetResource(_Shape):
    """A target of an outdial, as every route answers it (CONTRACT 1).

    Every destination is present: an address (with all five of its fields) or
    `null`, never `{}`.
    """

    id: UUID
    outdial_id: UUID
    name: Name
    detail: Detail
    data: Data
    status: Literal["idle", "progressing", "done"]
    destination_0: Address | None
    destination_1: Address | None
    destination_2: Address | None
    destination_3: Address | None
    destination_4: Address | None
    try_count_0: TryCount
    try_count_1: TryCount
    try_count_2: TryCount
    try_count_3: TryCount
    try_count_4: TryCount
    tm_create: Timestamp
    tm_update: Timestamp
    tm_delete: Timestamp


_NEXT_PAGE_TOKEN = Field(
    description=(
        "Pass as `page_token` for the next page. Empty when this page is empty; "
        "a non-empty token may still lead to an empty page."
    )
)


class OutdialList(_Shape):
    """One page of the customer's live outdials, newest first by `tm_create`."""

    result: list[OutdialResource]
    next_page_token: str = _NEXT_PAGE_TOKEN


class TargetList(_Shape):
    """One page of an outdial's live targets, newest first by `tm_create`.

    A deleted outdial's targets are hidden: its list is empty.
    """

    result: list[TargetResource]
    next_page_token: str = _NEXT_PAGE_TOKEN


class AvailableTargets(_Shape):
    """The targets a `ClaimNextTarget` could pick now, without claiming any."""

    result: list[TargetResource]
    next_page_token: str = Field("", description="Always empty: the list is not paged.")


class CustomerOutdial(OutdialResource):
    """An outdial as the bus carries it: in replies and events, with its customer."""

    customer_id: UUID


class CustomerTarget(TargetResource):
    """A target as the bus carries it: in replies and events, with its customer."""

    customer_id: UUID


class AddedTargets(_Shape):
    """The reply data of `AddTargets`: every target added, in the order sent."""

    result: list[CustomerTarget]


class ClaimedTarget(_Shape):
    """The reply data of `ClaimNextTarget`: the target, now progressing on `destination`."""

    target: CustomerTarget
    destination_index: int = Field(ge=0, le=4)
    destination: Address


class ErrorDetail(_Shape):
    """What is wrong with one field of an invalid command."""

    loc: str = Field(description="The field's dotted path, e.g. `destination_0.target`.")
    msg: str


class ErrorBody(_Shape):
    """Why a request failed: a stable `code` and a human-readable `message`."""

    code: str = Field(examples=["outdial_not_found", "invalid_command", "unauthorized"])
    message: str
    details: list[ErrorDetail] = Field(
        default_factory=list,
        description="Only with `invalid_command`: one item per invalid field.",
    )


# ---- the platform's shapes (CONTRACT 8): VoIPbin's models -------------------------

RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"

PlatformTime = Annotated[
    str,
    StringConstraints(pattern=RFC3339_PATTERN),
    Field(
        description="RFC 3339 in UTC with microseconds; `null` means never.",
        examples=["2026-11-27T11:08:56.914735Z"],
    ),
]


class PlatformAddress(_Shape):
    """VoIPbin's `address.Address`: empty fields are left out (`omitempty`)."""

    type: AddressType
    target: str
    target_name: str = ""
    name: str = ""
    detail: str = ""


class PlatformOutdial(_Shape):
    """VoIPbin's `outdial.Outdial` (and `outdial.WebhookMessage`, the same keys)."""

    id: UUID
    customer_id: UUID
    campaign_id: UUID = Field(description="`00000000-0000-0000-0000-000000000000` when none.")
    name: Name
    detail: Detail
    data: Data
    tm_create: PlatformTime
    tm_update: PlatformTime | None = Field(description="`null` until the first update.")
    tm_delete: PlatformTime | None = Field(description="`null` until deleted.")


class PlatformTarget(_Shape):
    """VoIPbin's `outdialtarget.OutdialTarget`: no `customer_id`; an absent
    destination is `null`; a new target's `tm_update` equals its `tm_create`."""

    id: UUID
    outdial_id: UUID
    name: Name
    detail: Detail
    data: Data
    status: Literal["idle", "progressing", "done"]
    destination_0: PlatformAddress | None
    destination_1: PlatformAddress | None
    destination_2: PlatformAddress | None
    destination_3: PlatformAddress | None
    destination_4: PlatformAddress | None
    try_count_0: TryCount
    try_count_1: TryCount
    try_count_2: TryCount
    try_count_3: TryCount
    try_count_4: TryCount
    tm_create: PlatformTime
    tm_update: PlatformTime
    tm_delete: PlatformTime | None = Field(description="`null` until deleted.")


class PlatformError(_Shape):
    """VoIPbin's `cerrors.VoipbinError`: the `data` of an envelope error reply."""

    status: PlatformStatus
    reason: str = Field(examples=["OUTDIAL_NOT_FOUND", "OUTDIAL_TARGET_NOT_FOUND"])
    domain: Literal["outdial-manager"] = "outdial-manager"
    message: str = Field(examples=["The outdial was not found."])
    details: list[dict[str, Any]] | None = Field(
        None,
        description="Only with `INVALID_COMMAND`: one `{loc, msg}` per invalid field.",
    )
