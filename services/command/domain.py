"""The aggregates: pure rules, no I/O.

`Outdial` and `OutdialTarget` are separate aggregates, so adding a target never
loads or touches the outdial's other targets: an outdial holding 100,000 targets
takes a new one as cheaply as an empty one.

Each public method checks its rule first and only then triggers its event (a
private `@event` method), so a refused command records nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

IDLE, PROGRESSING, DONE = "idle", "progressing", "done"
DESTINATION_SLOTS = 5


class DomainError(Exception):
    """A command that is well formed but refused by the rules. `code` names the
    refusal (CONTRACT 3's `error.code`); what status answers it is the doors' business."""

    code = "invalid_command"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class OutdialNotFound(DomainError):
    code = "outdial_not_found"


class TargetNotFound(DomainError):
    code = "target_not_found"


class NoAvailableTarget(DomainError):
    code = "no_available_target"


class Conflict(DomainError):
    """The resource's state refuses the command (the target is already progressing, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Outdial(Aggregate):
    """An outbound-dialing list. Its targets are aggregates of their own."""

    @event("Created")
    def __init__(
        self,
        customer_id: UUID,
        campaign_id: UUID,
        name: str,
        detail: str,
        data: str,
        id: UUID | None = None,
    ) -> None:
        self.customer_id = customer_id
        self.campaign_id = campaign_id
        self.name = name
        self.detail = detail
        self.data = data
        self.deleted = False

    @property
    def tm_create(self) -> datetime:
        return self.created_on

    @property
    def tm_update(self) -> datetime | None:
        # An outdial's tm_update reads "never" until its first change (CONTRACT 1).
        return self.modified_on if self.version > 1 else None

    @property
    def tm_delete(self) -> datetime | None:
        # Deletion is the last event an outdial ever gets.
        return self.modified_on if self.deleted else None

    def belongs_to(self, customer_id: UUID) -> bool:
        return self.customer_id == customer_id and not self.deleted

    def update(self, name: str, detail: str) -> None:
        self._updated(name=name, detail=detail)

    def update_campaign(self, campaign_id: UUID) -> None:
        self._campaign_updated(campaign_id=campaign_id)

    def update_data(self, data: str) -> None:
        self._data_updated(data=data)

    def delete(self) -> None:
        self._deleted()

    @event("Updated")
    def _updated(self, name: str, detail: str) -> None:
        self.name = name
        self.detail = detail

    @event("CampaignUpdated")
    def _campaign_updated(self, campaign_id: UUID) -> None:
        self.campaign_id = campaign_id

    @event("DataUpdated")
    def _data_updated(self, data: str) -> None:
        self.data = data

    @event("Deleted")
    def _deleted(self) -> None:
        self.deleted = True


class OutdialTarget(Aggregate):
    """One entry of an outdial: up to five destinations, each with its try count."""

    @event("Created")
    def __init__(
        self,
        customer_id: UUID,
        outdial_id: UUID,
        name: str,
        detail: str,
        data: str,
        destinations: list[dict[str, str] | None],
        id: UUID | None = None,
    ) -> None:
        if len(destinations) != DESTINATION_SLOTS or not any(destinations):
            raise ValueError("a target has five destination slots, at least one filled")
        self.customer_id = customer_id
        self.outdial_id = outdial_id
        self.name = name
        self.detail = detail
        self.data = data
        self.destinations = destinations
        self.try_counts = [0] * DESTINATION_SLOTS
        self.status = IDLE
        self.deleted = False

    @property
    def tm_create(self) -> datetime:
        return self.created_on

    @property
    def tm_update(self) -> datetime | None:
        # A new target's tm_update equals its tm_create (CONTRACT 1).
        return self.modified_on

    @property
    def tm_delete(self) -> datetime | None:
        return self.modified_on if self.deleted else None

    def belongs_to(self, customer_id: UUID, outdial_id: UUID) -> bool:
        return (
            self.customer_id == customer_id and self.outdial_id == outdial_id and not self.deleted
        )

    def next_destination(self, max_try_counts: Sequence[int]) -> int | None:
        """The first present destination with tries left (CONTRACT 2), or None."""
        for i, destination in enumerate(self.destinations):
            if destination is not None and self.try_counts[i] < max_try_counts[i]:
                return i
        return None

    def is_available(self, max_try_counts: Sequence[int]) -> bool:
        return (
            self.status == IDLE
            and not self.deleted
            and self.next_destination(max_try_counts) is not None
        )

    def start_try(self, destination_index: int) -> None:
        """Mark the target progressing on one destination, counting the try."""
        if self.status == PROGRESSING:
            raise Conflict("target_progressing", "the target is already progressing")
        if self.status == DONE:
            raise Conflict("target_done", "the target is done")
        if self.destinations[destination_index] is None:
            raise Conflict(
                "destination_absent", f"the target has no destination_{destination_index}"
            )
        self._try_started(destination_index=destination_index)

    def update_status(self, status: str) -> None:
        """Record a dialer's result of a try: `done` (answered) or `idle` (retry later)."""
        if status not in (IDLE, DONE):
            raise ValueError(f"status {status!r} is set by starting a try, not reported")
        if self.status != PROGRESSING:
            # A result without a try: a duplicate or late report, which must not
            # reopen a target already done nor close one nobody dialed.
            raise Conflict(
                "target_not_progressing", f"the target is {self.status}, not progressing"
            )
        self._status_updated(status=status)

    def delete(self) -> None:
        self._deleted()

    @event("TryStarted")
    def _try_started(self, destination_index: int) -> None:
        self.try_counts[destination_index] += 1
        self.status = PROGRESSING

    @event("StatusUpdated")
    def _status_updated(self, status: str) -> None:
        self.status = status

    @event("Deleted")
    def _deleted(self) -> None:
        self.deleted = True
