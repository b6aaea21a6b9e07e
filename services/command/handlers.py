"""One handler per command, and the loop that runs them exactly once.

A handler takes its command and the unit of work, applies the rules through the
aggregates, and says what it changed and how its reply reads; it stores
nothing. `decide` wraps every handler the same way:

1. a command whose receipt exists (same customer, same `message_id`) is answered
   from the receipt and changes nothing; the same `message_id` on another command
   is refused (409 `idempotency_key_reused`);
2. the handler's changes and the command's receipt are recorded in the unit of
   work, which `handle` (one command) or `handle_group` (group commit) commits;
3. a commit that loses an optimistic-concurrency race is run again from fresh
   state, so no update is lost and a rule that now refuses (a target already
   progressing) answers 409.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from services.command import receipts
from services.command.domain import (
    Conflict,
    DomainError,
    NoAvailableTarget,
    Outdial,
    OutdialTarget,
)
from services.command.receipts import Receipt
from services.command.unit_of_work import Change, Recorded, UnitOfWork
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
from shared.errors import ErrorCode

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
    def refused(cls, code: ErrorCode | str, message: str, **more: Any) -> Reply:
        code = ErrorCode(code)
        return cls(code.status, error={"code": str(code), "message": message, **more})


def _one_resource(changes: list[Change]) -> dict[str, Any]:
    return changes[0].with_customer


@dataclass
class Outcome:
    """What a handler decided: the aggregates it changed, and its reply's data as a
    function of their changes (each resource is rendered once, by the unit of work)."""

    changed: list[Aggregate]
    data: Callable[[list[Change]], dict[str, Any]] = _one_resource


@dataclass(frozen=True)
class Incoming:
    """A command as it arrived: with its `message_id` (the idempotency key) and a
    digest of the bytes it came in."""

    command: Command
    message_id: str | None = None
    # How the previous version told commands apart: a re-send of a command it
    # stored is still the same command.
    body_digest: str | None = None

    def command_digest(self) -> str:
        """What makes a key's reuse on another command known (CONTRACT 3: another
        type or other fields): the command as parsed, so a re-send whose JSON has
        its keys in another order, other spacing or unknown keys is the same."""
        return receipts.command_digest(self.command.model_dump_json().encode())


C = TypeVar("C")
Handler = Callable[[Any, UnitOfWork], Outcome]
HANDLERS: dict[type, Handler] = {}


def handles(command_type: type[C]) -> Callable[[Callable[[C, UnitOfWork], Outcome]], Any]:
    def register(handler: Callable[[C, UnitOfWork], Outcome]) -> Any:
        HANDLERS[command_type] = handler
        return handler

    return register


@handles(CreateOutdial)
def create_outdial(cmd: CreateOutdial, uow: UnitOfWork) -> Outcome:
    if cmd.id is not None and uow.exists(cmd.id):
        raise Conflict("outdial_exists", f"outdial {cmd.id} already exists")
    outdial = Outdial(
        id=cmd.id,
        customer_id=cmd.customer_id,
        campaign_id=cmd.campaign_id,
        name=cmd.name,
        detail=cmd.detail,
        data=cmd.data,
    )
    return Outcome([outdial])


@handles(UpdateOutdial)
def update_outdial(cmd: UpdateOutdial, uow: UnitOfWork) -> Outcome:
    outdial = uow.outdial_of(cmd.customer_id, cmd.outdial_id)
    outdial.update(name=cmd.name, detail=cmd.detail)
    return Outcome([outdial])


@handles(UpdateOutdialCampaign)
def update_outdial_campaign(cmd: UpdateOutdialCampaign, uow: UnitOfWork) -> Outcome:
    outdial = uow.outdial_of(cmd.customer_id, cmd.outdial_id)
    outdial.update_campaign(cmd.campaign_id)
    return Outcome([outdial])


@handles(UpdateOutdialData)
def update_outdial_data(cmd: UpdateOutdialData, uow: UnitOfWork) -> Outcome:
    outdial = uow.outdial_of(cmd.customer_id, cmd.outdial_id)
    outdial.update_data(cmd.data)
    return Outcome([outdial])


@handles(DeleteOutdial)
def delete_outdial(cmd: DeleteOutdial, uow: UnitOfWork) -> Outcome:
    outdial = uow.outdial_of(cmd.customer_id, cmd.outdial_id)
    outdial.delete()
    return Outcome([outdial])


def new_target_args(cmd: AddTarget | AddTargets, fields: TargetFields) -> dict[str, Any]:
    """What a target of `cmd` is created with (`OutdialTarget.__init__`), its id aside."""
    return {
        "customer_id": cmd.customer_id,
        "outdial_id": cmd.outdial_id,
        "name": fields.name,
        "detail": fields.detail,
        "data": fields.data,
        "destinations": fields.destination_dicts(),
    }


def _new_target(cmd: AddTarget | AddTargets, fields: TargetFields) -> OutdialTarget:
    return OutdialTarget(id=fields.id, **new_target_args(cmd, fields))


def _refuse_taken_ids(uow: UnitOfWork, fields: list[TargetFields]) -> None:
    for f in fields:
        if f.id is not None and uow.exists(f.id):
            raise Conflict("target_exists", f"target {f.id} already exists")


@handles(AddTarget)
def add_target(cmd: AddTarget, uow: UnitOfWork) -> Outcome:
    uow.outdial_of(cmd.customer_id, cmd.outdial_id)
    _refuse_taken_ids(uow, [cmd])
    target = _new_target(cmd, cmd)
    return Outcome([target])


@handles(AddTargets)
def add_targets(cmd: AddTargets, uow: UnitOfWork) -> Outcome:
    uow.outdial_of(cmd.customer_id, cmd.outdial_id)
    _refuse_taken_ids(uow, cmd.targets)
    targets = [_new_target(cmd, fields) for fields in cmd.targets]
    return Outcome(list(targets), lambda changes: {"result": [c.with_customer for c in changes]})


@handles(DeleteTarget)
def delete_target(cmd: DeleteTarget, uow: UnitOfWork) -> Outcome:
    target = uow.target_of(cmd.customer_id, cmd.outdial_id, cmd.target_id)
    target.delete()
    return Outcome([target])


@handles(MarkTargetProgressing)
def mark_target_progressing(cmd: MarkTargetProgressing, uow: UnitOfWork) -> Outcome:
    target = uow.target_of(cmd.customer_id, cmd.outdial_id, cmd.target_id)
    target.start_try(cmd.destination_index)
    return Outcome([target])


@handles(UpdateTargetStatus)
def update_target_status(cmd: UpdateTargetStatus, uow: UnitOfWork) -> Outcome:
    target = uow.target_of(cmd.customer_id, cmd.outdial_id, cmd.target_id)
    target.update_status(cmd.status)
    return Outcome([target])


@handles(ClaimNextTarget)
def claim_next_target(cmd: ClaimNextTarget, uow: UnitOfWork) -> Outcome:
    """The least recently updated available target, progressing on its next
    destination. The read model proposes candidates (written in the same
    transactions as the events, so a target released by an answered command is
    among them); each is checked against its aggregate, and two claimers of one
    target collide on its version at commit, so no target is ever handed out
    twice (the loser is run again by `handle`)."""
    uow.outdial_of(cmd.customer_id, cmd.outdial_id)
    most = cmd.max_try_counts
    cutoff = None
    if cmd.try_interval_ms:
        cutoff = datetime.now(UTC) - timedelta(milliseconds=cmd.try_interval_ms)
    for target in uow.available_targets(cmd.outdial_id, most, cutoff):
        if (
            target.belongs_to(cmd.customer_id, cmd.outdial_id)
            and target.is_available(most)
            and not _tried_since(target, cutoff)
        ):
            index = target.next_destination(most)
            assert index is not None
            target.start_try(index)

            def claimed(changes: list[Change], index: int = index) -> dict[str, Any]:
                return {
                    "target": changes[0].with_customer,
                    "destination_index": index,
                    "destination": changes[0].shape[f"destination_{index}"],
                }

            return Outcome([target], claimed)
    raise NoAvailableTarget(f"no target of outdial {cmd.outdial_id} is available")


def _tried_since(target: OutdialTarget, cutoff: datetime | None) -> bool:
    """A try, or its result, after `cutoff` (a target never tried was not)."""
    return cutoff is not None and any(target.try_counts) and target.modified_on > cutoff


@dataclass
class Decision:
    """A command decided: its reply, and (unless answered from a receipt) what it
    recorded in the unit of work, whose position the reply names once committed."""

    reply: Reply
    recorded: Recorded | None = None

    def stored(self) -> Reply:
        if self.recorded is None or self.reply.error is not None:
            return self.reply
        return Reply(200, data=self.reply.data, position=self.recorded.position)


def decide(incoming: Incoming, uow: UnitOfWork) -> Decision:
    """Run a command's handler and record it, with its receipt, in `uow`."""
    cmd, message_id = incoming.command, incoming.message_id
    key = receipts.receipt_key(cmd.customer_id, message_id) if message_id else None
    digest = incoming.command_digest() if key else None
    if key is not None:
        receipt = uow.receipt(key)
        if receipt is not None:
            # None: a receipt of a store older still, which kept no digest.
            known = (None, digest, incoming.body_digest)
            if receipt.command not in known:
                return Decision(
                    Reply.refused(
                        ErrorCode.IDEMPOTENCY_KEY_REUSED,
                        f"message_id {message_id!r} was used before for another command",
                    )
                )
            return Decision(answer_again(receipt, uow))
    try:
        outcome = HANDLERS[type(cmd)](cmd, uow)
        changes = uow.record(outcome.changed)
        reply = Reply(200, data=outcome.data(changes))
    except DomainError as refusal:
        uow.check_nothing_uncollected()
        uow.record([])
        reply = Reply.refused(refusal.code, refusal.message)
    if key is not None:
        uow.add_receipt(_receipt(key, digest, cmd, reply))
    return Decision(reply, uow.last_recorded())


def _receipt(key: str, digest: str | None, cmd: Command, reply: Reply) -> Receipt:
    if isinstance(cmd, AddTargets) and reply.data:
        # The targets' ids, not the reply: the targets as created are rendered again
        # from their first events, which never change. A reply of 1,000 targets is
        # 600 KB, which the receipt would hold beside the same rows and events.
        ids = [target["id"] for target in reply.data["result"]]
        return Receipt(key, digest, reply.status_code, None, None, ids)
    kept = reply.data if reply.error is None else reply.error
    return Receipt(key, digest, reply.status_code, None, orjson.dumps(kept).decode())


def answer_again(receipt: Receipt, uow: UnitOfWork) -> Reply:
    """The first reply of a command, from its receipt."""
    if receipt.status_code != 200:
        return Reply(receipt.status_code, error=receipt.reply_part())
    if receipt.created_ids is not None:
        created: list[Any] = [
            uow.app.repository.get(UUID(i), version=1) for i in receipt.created_ids
        ]
        data = {"result": [shapes.target(t, with_customer=True) for t in created]}
    else:
        data = receipt.reply_part()
    return Reply(200, data=data, position=receipt.position)


UnitOfWorkFactory = Callable[[], UnitOfWork]


def handle(incoming: Incoming, new_uow: UnitOfWorkFactory) -> Reply:
    """Apply one command exactly once and return its reply (see the module's doc)."""
    for _ in range(MAX_SAVE_ATTEMPTS):
        uow = new_uow()
        decision = decide(incoming, uow)
        try:
            uow.commit()
        except IntegrityError:
            # Another writer got there first: an aggregate moved on, or the same
            # message was handled elsewhere. Start over from what is stored.
            continue
        return decision.stored()
    raise RuntimeError(f"{incoming.command.type} lost {MAX_SAVE_ATTEMPTS} races in a row")


def handle_group(
    incomings: Sequence[Incoming], new_uow: UnitOfWorkFactory
) -> list[Reply | BaseException]:
    """Group commit: commands that arrived together, stored in one transaction.

    Each is decided in order, seeing what the ones before it changed; their
    events are stored together, in command order, so one fsync serves them
    all. If anything goes wrong (a race with another writer, a bug in one
    handler), nothing of the group was stored, and each command is run again
    on its own, so one failure is that command's alone.
    """
    keys = [
        receipts.receipt_key(i.command.customer_id, i.message_id) for i in incomings if i.message_id
    ]
    # One message twice in a group (a re-send): the second's reply must repeat
    # the first's, known only once stored, so such a group goes one by one.
    if len(incomings) > 1 and len(keys) == len(set(keys)):
        try:
            uow = new_uow()
            uow.look_ahead(keys)
            decisions = [decide(incoming, uow) for incoming in incomings]
            uow.commit()
        except Exception:  # a race, a bug, the store: each command on its own, below
            log.debug("group commit failed; one by one", exc_info=True)
        else:
            return [decision.stored() for decision in decisions]
    results: list[Reply | BaseException] = []
    for incoming in incomings:
        try:
            results.append(handle(incoming, new_uow))
        except Exception as e:
            results.append(e)
    return results
