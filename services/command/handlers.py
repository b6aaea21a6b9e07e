"""One handler per command, and the unit of work that runs them exactly once.

A handler takes its command and the application, applies the rules through the
aggregates, and returns what changed and what to answer; it saves nothing.
`handle` wraps every handler the same way:

1. a command whose receipt exists (same customer, same `message_id`) is answered
   from the receipt and changes nothing;
2. the handler's aggregates and the new receipt are saved in one transaction;
3. a save that loses an optimistic-concurrency race is run again from fresh
   state, so no update is lost and a rule that now refuses (a target already
   progressing) answers 409.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from services.command.application import OutdialApplication
from services.command.domain import (
    CommandReceipt,
    Conflict,
    DomainError,
    NoAvailableTarget,
    Outdial,
    OutdialTarget,
)
from shared import shapes
from shared.commands import (
    AddTarget,
    AddTargets,
    ClaimNextTarget,
    Command,
    CreateOutdial,
    DeleteOutdial,
    DeleteTarget,
    MarkTargetProgressing,
    TargetFields,
    UpdateOutdial,
    UpdateOutdialCampaign,
    UpdateOutdialData,
    UpdateTargetStatus,
)

log = logging.getLogger("outdial.command")

# Racing writers on one aggregate: each retry reloads, so a handful is plenty;
# past that something is wrong and the command is answered 500 (and retried later).
MAX_SAVE_ATTEMPTS = 10


@dataclass(frozen=True)
class Reply:
    """The reply body of CONTRACT 3."""

    status_code: int
    data: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    position: int | None = None

    def body(self) -> dict[str, Any]:
        if self.error is not None:
            return {"status_code": self.status_code, "error": self.error}
        return {"status_code": self.status_code, "data": self.data, "position": self.position}

    @classmethod
    def refused(cls, error: DomainError) -> Reply:
        return cls(error.status_code, error={"code": error.code, "message": error.message})


@dataclass
class Outcome:
    """What a handler decided: the reply's data and the aggregates to save."""

    data: dict[str, Any]
    changed: list[Aggregate] = field(default_factory=list)


C = TypeVar("C")
Handler = Callable[[Any, OutdialApplication], Outcome]
HANDLERS: dict[type, Handler] = {}


def handles(command_type: type[C]) -> Callable[[Callable[[C, OutdialApplication], Outcome]], Any]:
    def register(handler: Callable[[C, OutdialApplication], Outcome]) -> Any:
        HANDLERS[command_type] = handler
        return handler

    return register


def _outdial(o: Outdial) -> dict[str, Any]:
    return shapes.outdial(o, with_customer=True)


def _target(t: OutdialTarget) -> dict[str, Any]:
    return shapes.target(t, with_customer=True)


@handles(CreateOutdial)
def create_outdial(cmd: CreateOutdial, app: OutdialApplication) -> Outcome:
    if cmd.id is not None and app.exists(cmd.id):
        raise Conflict("outdial_exists", f"outdial {cmd.id} already exists")
    outdial = Outdial(
        id=cmd.id,
        customer_id=cmd.customer_id,
        campaign_id=cmd.campaign_id,
        name=cmd.name,
        detail=cmd.detail,
        data=cmd.data,
    )
    return Outcome(_outdial(outdial), [outdial])


@handles(UpdateOutdial)
def update_outdial(cmd: UpdateOutdial, app: OutdialApplication) -> Outcome:
    outdial = app.outdial_of(cmd.customer_id, cmd.outdial_id)
    outdial.update(name=cmd.name, detail=cmd.detail)
    return Outcome(_outdial(outdial), [outdial])


@handles(UpdateOutdialCampaign)
def update_outdial_campaign(cmd: UpdateOutdialCampaign, app: OutdialApplication) -> Outcome:
    outdial = app.outdial_of(cmd.customer_id, cmd.outdial_id)
    outdial.update_campaign(cmd.campaign_id)
    return Outcome(_outdial(outdial), [outdial])


@handles(UpdateOutdialData)
def update_outdial_data(cmd: UpdateOutdialData, app: OutdialApplication) -> Outcome:
    outdial = app.outdial_of(cmd.customer_id, cmd.outdial_id)
    outdial.update_data(cmd.data)
    return Outcome(_outdial(outdial), [outdial])


@handles(DeleteOutdial)
def delete_outdial(cmd: DeleteOutdial, app: OutdialApplication) -> Outcome:
    outdial = app.outdial_of(cmd.customer_id, cmd.outdial_id)
    outdial.delete()
    return Outcome(_outdial(outdial), [outdial])


def _new_target(cmd: AddTarget | AddTargets, fields: TargetFields) -> OutdialTarget:
    return OutdialTarget(
        id=fields.id,
        customer_id=cmd.customer_id,
        outdial_id=cmd.outdial_id,
        name=fields.name,
        detail=fields.detail,
        data=fields.data,
        destinations=[None if d is None else d.model_dump() for d in fields.destinations],
    )


def _refuse_taken_ids(app: OutdialApplication, fields: list[TargetFields]) -> None:
    for f in fields:
        if f.id is not None and app.exists(f.id):
            raise Conflict("target_exists", f"target {f.id} already exists")


@handles(AddTarget)
def add_target(cmd: AddTarget, app: OutdialApplication) -> Outcome:
    app.outdial_of(cmd.customer_id, cmd.outdial_id)
    _refuse_taken_ids(app, [cmd])
    target = _new_target(cmd, cmd)
    return Outcome(_target(target), [target])


@handles(AddTargets)
def add_targets(cmd: AddTargets, app: OutdialApplication) -> Outcome:
    app.outdial_of(cmd.customer_id, cmd.outdial_id)
    _refuse_taken_ids(app, cmd.targets)
    targets = [_new_target(cmd, fields) for fields in cmd.targets]
    return Outcome({"result": [_target(t) for t in targets]}, list(targets))


@handles(DeleteTarget)
def delete_target(cmd: DeleteTarget, app: OutdialApplication) -> Outcome:
    target = app.target_of(cmd.customer_id, cmd.outdial_id, cmd.target_id)
    target.delete()
    return Outcome(_target(target), [target])


@handles(MarkTargetProgressing)
def mark_target_progressing(cmd: MarkTargetProgressing, app: OutdialApplication) -> Outcome:
    target = app.target_of(cmd.customer_id, cmd.outdial_id, cmd.target_id)
    target.start_try(cmd.destination_index)
    return Outcome(_target(target), [target])


@handles(UpdateTargetStatus)
def update_target_status(cmd: UpdateTargetStatus, app: OutdialApplication) -> Outcome:
    target = app.target_of(cmd.customer_id, cmd.outdial_id, cmd.target_id)
    target.update_status(cmd.status)
    return Outcome(_target(target), [target])


# Candidates asked of the read model at a time. It may lag the store by a few
# events, so some candidates may turn out taken; the aggregate has the last word.
CLAIM_CANDIDATES = 50


@handles(ClaimNextTarget)
def claim_next_target(cmd: ClaimNextTarget, app: OutdialApplication) -> Outcome:
    """The least recently updated available target, progressing on its next
    destination. The read model proposes candidates, page after page; each is
    checked against its aggregate, and two claimers of one target collide on its
    version at save, so no target is ever handed out twice (the loser is run
    again by `handle`)."""
    app.outdial_of(cmd.customer_id, cmd.outdial_id)
    most = cmd.max_try_counts
    cutoff = None
    if cmd.try_interval_ms:
        cutoff = datetime.now(UTC) - timedelta(milliseconds=cmd.try_interval_ms)
    offset = 0
    while candidates := app.available_targets(
        cmd.outdial_id, most, cutoff, CLAIM_CANDIDATES, offset
    ):
        for target_id in candidates:
            target = app.get(target_id)
            if (
                isinstance(target, OutdialTarget)
                and target.belongs_to(cmd.customer_id, cmd.outdial_id)
                and target.is_available(most)
                and not _tried_since(target, cutoff)
            ):
                index = target.next_destination(most)
                assert index is not None
                target.start_try(index)
                data = {
                    "target": _target(target),
                    "destination_index": index,
                    "destination": shapes.address(target.destinations[index]),
                }
                return Outcome(data, [target])
        offset += len(candidates)
    raise NoAvailableTarget(f"no target of outdial {cmd.outdial_id} is available")


def _tried_since(target: OutdialTarget, cutoff: datetime | None) -> bool:
    """A try, or its result, after `cutoff` (a target never tried was not)."""
    return cutoff is not None and any(target.try_counts) and target.modified_on > cutoff


@dataclass
class Decision:
    """A command decided but not stored: its reply, and the events to store for it
    (its receipt's last, so that the receipt's position is the command's)."""

    reply: Reply
    events: list[Any]
    done: bool = False  # answered from a receipt: nothing to store

    def stored_at(self, position: int | None) -> Reply:
        if self.reply.error is not None or position is None:
            return self.reply
        return Reply(200, data=self.reply.data, position=position)


def decide(cmd: Command, message_id: str | None, app: OutdialApplication) -> Decision:
    """Run a command's handler and make its receipt; store nothing."""
    if message_id:
        receipt = app.receipt_of(cmd.customer_id, message_id)
        if receipt is not None:
            return Decision(_replay(receipt, app), [], done=True)
    try:
        outcome = HANDLERS[type(cmd)](cmd, app)
        reply = Reply(200, data=outcome.data)
        changed = outcome.changed
    except DomainError as refusal:
        reply = Reply.refused(refusal)
        changed = []
    if message_id:
        changed.append(
            CommandReceipt(
                customer_id=cmd.customer_id,
                message_id=message_id,
                command_type=cmd.type,
                status_code=reply.status_code,
                data=reply.data,
                error=reply.error,
            )
        )
    app.note_changed(changed)
    events = [event for aggregate in changed for event in aggregate.collect_events()]
    return Decision(reply, events)


def handle(cmd: Command, message_id: str | None, app: OutdialApplication) -> Reply:
    """Apply one command exactly once and return its reply (see the module's doc)."""
    for _ in range(MAX_SAVE_ATTEMPTS):
        decision = decide(cmd, message_id, app)
        if decision.done or not decision.events:
            return decision.reply
        try:
            recordings = app.save(*decision.events)
        except IntegrityError:
            # Another writer got there first: an aggregate moved on, or the same
            # message is being handled elsewhere. Start over from what is stored.
            continue
        return decision.stored_at(recordings[-1].notification.id)
    raise RuntimeError(f"{cmd.type} lost {MAX_SAVE_ATTEMPTS} races in a row; giving up")


def handle_group(
    commands: Sequence[tuple[Command, str | None]], app: OutdialApplication
) -> list[Reply | BaseException]:
    """Group commit: commands that arrived together, stored in one transaction.

    Each is decided in order, seeing what the ones before it changed; their
    events are stored together, in command order, so one fsync serves them
    all. If anything goes wrong (a race with another writer, a bug in one
    handler), nothing of the group was stored, and each command is run again
    on its own, so one failure is that command's alone.
    """
    keys = [(cmd.customer_id, message_id) for cmd, message_id in commands if message_id]
    # One message twice in a group (a re-send): the second's reply must repeat
    # the first's position, known only once stored, so such a group goes one by one.
    if len(commands) > 1 and len(keys) == len(set(keys)):
        try:
            with app.batch():
                app.look_ahead([CommandReceipt.create_id(*key) for key in keys])
                decisions = [decide(cmd, message_id, app) for cmd, message_id in commands]
            events = [event for decision in decisions for event in decision.events]
            recordings = app.save(*events) if events else []
        except Exception:  # a race, a bug, the store: each command on its own, below
            log.debug("group commit failed; one by one", exc_info=True)
        else:
            positions = iter(recording.notification.id for recording in recordings)
            replies: list[Reply | BaseException] = []
            for decision in decisions:
                position = None
                for _ in decision.events:
                    position = next(positions)
                replies.append(decision.stored_at(position))
            return replies
    results: list[Reply | BaseException] = []
    for cmd, message_id in commands:
        try:
            results.append(handle(cmd, message_id, app))
        except Exception as e:
            results.append(e)
    return results


def _replay(receipt: CommandReceipt, app: OutdialApplication) -> Reply:
    if receipt.error is not None:
        return Reply(receipt.status_code, error=receipt.error)
    return Reply(receipt.status_code, data=receipt.data, position=app.position_of(receipt))
