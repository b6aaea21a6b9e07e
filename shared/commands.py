"""The commands of CONTRACT 3 as pydantic models, and the one parser for them.

Validation lives here, once: the consumer parses a message body into the
`Command` union, and a handler only ever sees a command that is well formed.
Whether it also makes sense against stored state (the outdial exists, the
target is idle) is the domain's business, not this module's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from shared.addresses import Address

Name = Annotated[str, StringConstraints(max_length=1024)]
Detail = Annotated[str, StringConstraints(max_length=1024)]
Data = Annotated[str, StringConstraints(max_length=65536)]
# Bounded as the HTTP API's `available` bounds it: JSON integers have no limit, and
# one past 64 bits cannot even be compared in SQLite (an OverflowError, not a 400).
MAX_TRY_COUNT = 2**31 - 1
TryCount = Annotated[int, Field(ge=0, le=MAX_TRY_COUNT)]
# A year: longer is surely a mistake, and it keeps the arithmetic on timestamps in range.
TryIntervalMs = Annotated[int, Field(ge=0, le=365 * 24 * 3600 * 1000)]
DestinationIndex = Annotated[int, Field(ge=0, le=4)]

MAX_TARGETS_PER_COMMAND = 1000
# A command message over this many bytes is refused before it is parsed (CONTRACT 3).
MAX_COMMAND_BYTES = 16 * 1024 * 1024
NO_CAMPAIGN = UUID(int=0)


class _Model(BaseModel):
    # strict: JSON `true` is not an int and `5` is not a string. Unknown keys are
    # ignored, so a sender may add fields before this service knows them.
    model_config = ConfigDict(frozen=True, strict=True)


class _Command(_Model):
    customer_id: UUID


class TargetFields(_Model):
    """What describes a target: shared by AddTarget and each item of AddTargets."""

    id: UUID | None = None
    name: Name
    detail: Detail
    data: Data
    destination_0: Address | None = None
    destination_1: Address | None = None
    destination_2: Address | None = None
    destination_3: Address | None = None
    destination_4: Address | None = None

    @model_validator(mode="after")
    def _needs_a_destination(self) -> TargetFields:
        if not any(self.destinations):
            raise ValueError("a target needs at least one destination")
        return self

    @property
    def destinations(self) -> tuple[Address | None, ...]:
        return (
            self.destination_0,
            self.destination_1,
            self.destination_2,
            self.destination_3,
            self.destination_4,
        )

    def destination_dicts(self) -> list[dict[str, str] | None]:
        """The destinations as the domain keeps them: plain dicts, None where absent."""
        return [None if d is None else d.model_dump() for d in self.destinations]


class CreateOutdial(_Command):
    type: Literal["CreateOutdial"]
    id: UUID | None = None
    campaign_id: UUID = NO_CAMPAIGN
    name: Name
    detail: Detail
    data: Data


class UpdateOutdial(_Command):
    type: Literal["UpdateOutdial"]
    outdial_id: UUID
    name: Name
    detail: Detail


class UpdateOutdialCampaign(_Command):
    type: Literal["UpdateOutdialCampaign"]
    outdial_id: UUID
    campaign_id: UUID


class UpdateOutdialData(_Command):
    type: Literal["UpdateOutdialData"]
    outdial_id: UUID
    data: Data


class DeleteOutdial(_Command):
    type: Literal["DeleteOutdial"]
    outdial_id: UUID


class AddTarget(_Command, TargetFields):
    type: Literal["AddTarget"]
    outdial_id: UUID


class AddTargets(_Command):
    type: Literal["AddTargets"]
    outdial_id: UUID
    targets: Annotated[list[TargetFields], Field(min_length=1, max_length=MAX_TARGETS_PER_COMMAND)]

    @model_validator(mode="after")
    def _ids_are_unique(self) -> AddTargets:
        ids = [t.id for t in self.targets if t.id is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("two targets of one AddTargets share an id")
        return self


class DeleteTarget(_Command):
    type: Literal["DeleteTarget"]
    outdial_id: UUID
    target_id: UUID


class ClaimNextTarget(_Command):
    type: Literal["ClaimNextTarget"]
    outdial_id: UUID
    max_try_count_0: TryCount
    max_try_count_1: TryCount
    max_try_count_2: TryCount
    max_try_count_3: TryCount
    max_try_count_4: TryCount
    try_interval_ms: TryIntervalMs = 0

    @property
    def max_try_counts(self) -> tuple[int, int, int, int, int]:
        return (
            self.max_try_count_0,
            self.max_try_count_1,
            self.max_try_count_2,
            self.max_try_count_3,
            self.max_try_count_4,
        )


class MarkTargetProgressing(_Command):
    type: Literal["MarkTargetProgressing"]
    outdial_id: UUID
    target_id: UUID
    destination_index: DestinationIndex


class UpdateTargetStatus(_Command):
    type: Literal["UpdateTargetStatus"]
    outdial_id: UUID
    target_id: UUID
    status: Literal["idle", "done"]


Command = Annotated[
    CreateOutdial
    | UpdateOutdial
    | UpdateOutdialCampaign
    | UpdateOutdialData
    | DeleteOutdial
    | AddTarget
    | AddTargets
    | DeleteTarget
    | ClaimNextTarget
    | MarkTargetProgressing
    | UpdateTargetStatus,
    Field(discriminator="type"),
]

COMMAND_TYPES: tuple[str, ...] = (
    "CreateOutdial",
    "UpdateOutdial",
    "UpdateOutdialCampaign",
    "UpdateOutdialData",
    "DeleteOutdial",
    "AddTarget",
    "AddTargets",
    "DeleteTarget",
    "ClaimNextTarget",
    "MarkTargetProgressing",
    "UpdateTargetStatus",
)

_command_adapter: TypeAdapter[Command] = TypeAdapter(Command)


class InvalidCommand(Exception):
    """A message that is not a valid command.

    `unparseable` is true when not even the command's type could be read (not
    JSON, not an object, no known `type`): such messages are dead-lettered, while
    a known command with bad fields is only answered 400.
    """

    def __init__(self, message: str, details: list[dict[str, str]], *, unparseable: bool):
        super().__init__(message)
        self.message = message
        self.details = details
        self.unparseable = unparseable


# Errors about the envelope itself, rather than about one field of a known command.
_ENVELOPE_ERRORS = frozenset(
    {
        "json_invalid",
        "json_type",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "union_tag_invalid",
        "union_tag_not_found",
        "recursion_loop",
    }
)


# An answer about bad input stays small, however much of it there was: at most
# this many details (1,000 bad targets of an AddTargets) of at most this many
# characters (pydantic quotes an unknown `type` in full).
MAX_DETAILS = 50
MAX_DETAIL_CHARS = 300


def parse_command(body: bytes | str) -> Command:
    """Parse a message body into a command, or raise InvalidCommand."""
    try:
        return _command_adapter.validate_json(body)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False)
        details = [_detail(err) for err in errors[:MAX_DETAILS]]
        unparseable = any(
            err["type"] in _ENVELOPE_ERRORS and len(err["loc"]) <= 1 for err in errors
        )
        summary = "; ".join(
            f"{d['loc']}: {d['msg']}" if d["loc"] else d["msg"] for d in details[:5]
        )
        if len(errors) > 5:
            summary += f"; and {len(errors) - 5} more"
        raise InvalidCommand(
            summary or "invalid command", details, unparseable=unparseable
        ) from None


# Characters of a sender's own text (a `type`, a customer id) repeated at most.
SHOWN = 100


def sender_said(body: bytes | str) -> tuple[str | None, str | None]:
    """The customer and the type a message body names, if it is a JSON object that
    does, valid or not: what `outdial dead-letters list` shows and the consumer's
    log says of a message it refused."""
    try:
        command = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(command, dict):
        return None, None

    def shown(key: str) -> str | None:
        value = command.get(key)
        return value[:SHOWN] if isinstance(value, str) else None

    return shown("customer_id"), shown("type")


def plain(msg: str) -> str:
    """pydantic's message without its "Value error, " prefix (a validator's own words)."""
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _detail(error: Any) -> dict[str, str]:
    loc = list(error["loc"])
    # The first element of a tagged union's location is the tag ("AddTarget"),
    # which says nothing the sender does not know; drop it.
    if loc and loc[0] in COMMAND_TYPES:
        loc = loc[1:]
    return {
        "loc": ".".join(str(part) for part in loc)[:MAX_DETAIL_CHARS],
        "msg": plain(str(error["msg"]))[:MAX_DETAIL_CHARS],
    }
