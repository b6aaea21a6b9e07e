"""The resources of CONTRACT 1 as pydantic models: what replies, events and reads carry.

`shared.shapes` renders them (fast, without validation); these models read them
back for the typed client and document them in `/openapi.json` and
`docs/asyncapi.yaml`. Unit tests hold the two to the same fields in the same order.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.addresses import Address
from shared.commands import Data, Detail, Name
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
