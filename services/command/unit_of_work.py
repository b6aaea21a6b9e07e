"""The unit of work: one transaction, and everything the commands in it load, change
and answer.

Handlers load aggregates through it (`outdial_of`, `target_of`, `get`), ask it
for claim candidates, and tell it what they changed (`record`); the commands'
receipts are added to it. `commit` stores it all in **one database
transaction**: the events, and, written inline from the aggregates already in
hand (no second pass over the log):

- the read model's rows of every changed resource (its writer is handed in by
  bootstrap: the command side knows no read-model table);
- the outbox's messages of every event (CONTRACT 4), with the event's position;
- the receipts.

So a command's reply, sent after the commit, is visible to every read and every
claim that starts after it (CONTRACT 3), and a stored event is in the outbox.

Several commands may share a unit of work (group commit): each sees what the
ones before it changed, and their events are stored in command order, so each
reply can name its own position. A unit of work that fails to commit (a race
with another writer, a receipt already there) stored nothing; the caller runs
its commands again in fresh units of work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol, cast
from uuid import UUID

from eventsourcing.domain import Aggregate

from services.command import outbox, receipts
from services.command.application import OutdialApplication
from services.command.domain import Outdial, OutdialNotFound, OutdialTarget, TargetNotFound
from services.command.receipts import Receipt
from services.store import Dialect
from shared import shapes

# Finds candidates for a claim: ids of an outdial's available targets, least
# recently updated first, given the max try counts, an optional "not tried
# since", a limit and an offset (the read model's query, handed in by bootstrap).
CandidateFinder = Callable[[UUID, Sequence[int], datetime | None, int, int], list[UUID]]


class ReadModelRows(Protocol):
    """The read model's side of a commit (services.query.writes.ReadModelWriter)."""

    def rows(self, resource: Outdial | OutdialTarget, shape: dict[str, Any]) -> Any: ...

    def write(
        self,
        cursor: Any,
        dialect: Dialect,
        created: Sequence[Any],
        changed: Sequence[Any],
        position: int,
    ) -> None: ...


def load(app: OutdialApplication, aggregate_id: UUID) -> Aggregate | None:
    """The aggregate from its events, or None: eventsourcing's repository, without
    the runtime Protocol check of each event it makes as it folds them (slow on
    Python 3.11; the events are the application's own)."""
    aggregate: Any = None
    for event in app.events.get(aggregate_id):
        aggregate = event.mutate(aggregate)  # type: ignore[attr-defined]
    return cast(Aggregate | None, aggregate)


# Candidates asked of the read model at a time.
CLAIM_CANDIDATES = 50


@dataclass
class Change:
    """One resource as a command left it: its state, rendered once, and its new events."""

    resource: Outdial | OutdialTarget
    shape: dict[str, Any]  # the tutorial's shape (CONTRACT 1)
    events: Sequence[Any]

    @property
    def created(self) -> bool:
        """The command created the resource."""
        return bool(self.events[0].originator_version == 1)

    @cached_property
    def with_customer(self) -> dict[str, Any]:
        """The bus's shape: replies and events carry the customer. Made once: the
        outbox renders each event from it, and the reply puts it in too."""
        return {**self.shape, "customer_id": str(self.resource.customer_id)}


@dataclass
class Recorded:
    """What one command stored: where its events are among the unit's, and its
    position once committed."""

    first_event: int
    event_count: int
    position: int | None = None


@dataclass
class _Pending:
    events: list[Any] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    outbox: list[list[outbox.OutboxMessage]] = field(default_factory=list)  # one per event
    receipts: list[tuple[Receipt, Recorded]] = field(default_factory=list)
    recorded: list[Recorded] = field(default_factory=list)


class UnitOfWork:
    def __init__(
        self,
        app: OutdialApplication,
        *,
        candidates: CandidateFinder,
        read_model: ReadModelRows,
    ):
        self.app = app
        self.candidates = candidates
        self.read_model = read_model
        self.dialect = app.store.dialect
        self._pending = _Pending()
        self._changed: dict[UUID, Aggregate] = {}  # changed by an earlier command here
        self._read: dict[UUID, Aggregate | None] = {}  # read, unchanged
        self._receipts: dict[str, Receipt | None] = {}
        self.committed = False

    # ---- loading -----------------------------------------------------------
    def get(self, aggregate_id: UUID) -> Aggregate | None:
        """An aggregate as the command being decided must see it, or None."""
        if aggregate_id in self._changed:
            return self._changed[aggregate_id]
        if aggregate_id in self._read:
            return self._read[aggregate_id]
        aggregate = load(self.app, aggregate_id)
        self._read[aggregate_id] = aggregate
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        return self.get(aggregate_id) is not None

    def outdial_of(self, customer_id: UUID, outdial_id: UUID) -> Outdial:
        """The customer's live outdial; another customer's is as good as absent."""
        outdial = self.get(outdial_id)
        if not isinstance(outdial, Outdial) or not outdial.belongs_to(customer_id):
            raise OutdialNotFound(f"outdial {outdial_id} not found")
        return outdial

    def target_of(self, customer_id: UUID, outdial_id: UUID, target_id: UUID) -> OutdialTarget:
        """The customer's live target of a live outdial."""
        self.outdial_of(customer_id, outdial_id)
        target = self.get(target_id)
        if not isinstance(target, OutdialTarget) or not target.belongs_to(customer_id, outdial_id):
            raise TargetNotFound(f"target {target_id} not found")
        return target

    def available_targets(
        self, outdial_id: UUID, max_try_counts: Sequence[int], updated_before: datetime | None
    ) -> Iterator[OutdialTarget]:
        """The outdial's targets that may be available, least recently updated first:
        the read model's candidates (committed state), page after page, then the
        targets commands of this unit changed (newer than anything committed). The
        caller checks each against the rules; the store's version check at commit
        settles a race with another writer."""
        changed_here = {
            t.id
            for t in self._changed.values()
            if isinstance(t, OutdialTarget) and t.outdial_id == outdial_id
        }
        offset = 0
        while ids := self.candidates(
            outdial_id, max_try_counts, updated_before, CLAIM_CANDIDATES, offset
        ):
            for target_id in ids:
                if target_id not in changed_here:
                    target = self.get(target_id)
                    if isinstance(target, OutdialTarget):
                        yield target
            offset += len(ids)
        mine = [self._changed[i] for i in changed_here]
        yield from sorted(mine, key=lambda t: (t.modified_on, str(t.id)))  # type: ignore[misc]

    # ---- receipts ----------------------------------------------------------
    def look_ahead(self, keys: Sequence[str]) -> None:
        """Learn in one query the receipts of the commands about to be decided."""
        wanted = [k for k in keys if k not in self._receipts]
        if not wanted:
            return
        readers = self.app.recorder.readers  # type: ignore[attr-defined]
        found = readers.read(lambda c: receipts.find(c, self.dialect, wanted))
        for key in wanted:
            self._receipts[key] = found.get(key)

    def receipt(self, key: str) -> Receipt | None:
        """The receipt of a command handled before (or earlier in this unit)."""
        self.look_ahead([key])
        return self._receipts[key]

    # ---- recording ---------------------------------------------------------
    def record(self, changed: Sequence[Aggregate]) -> list[Change]:
        """Take what one command changed: its events, and each resource rendered once."""
        pending = self._pending
        first = len(pending.events)
        changes = []
        for aggregate in changed:
            events = aggregate.collect_events()
            if not events:
                continue
            assert isinstance(aggregate, Outdial | OutdialTarget)
            shape = (
                shapes.target(aggregate)
                if isinstance(aggregate, OutdialTarget)
                else shapes.outdial(aggregate)
            )
            change = Change(aggregate, shape, events)
            changes.append(change)
            bus_shape = change.with_customer
            for event in events:
                pending.events.append(event)
                pending.outbox.append(outbox.messages_for(event, bus_shape))
            pending.changes.append(change)
            self._changed[aggregate.id] = aggregate
            self._read.pop(aggregate.id, None)
        pending.recorded.append(Recorded(first, len(pending.events) - first))
        return changes

    def add_receipt(self, receipt: Receipt) -> None:
        """The receipt of the command recorded last."""
        self._pending.receipts.append((receipt, self._pending.recorded[-1]))
        self._receipts[receipt.key] = receipt

    def last_recorded(self) -> Recorded:
        return self._pending.recorded[-1]

    def check_nothing_uncollected(self) -> None:
        """After a refusal: no aggregate in hand may hold an event its command did not
        record (a handler that changed one and then refused), or the next command of
        the unit would store it."""
        for aggregate in (*self._changed.values(), *self._read.values()):
            if aggregate is not None and aggregate.pending_events:
                raise RuntimeError(f"{aggregate.id} holds events of a refused command")

    # ---- the transaction ---------------------------------------------------
    def commit(self) -> None:
        """Store everything recorded, in one transaction; fills in each command's position.
        Raises eventsourcing's IntegrityError when another writer got there first.

        The events go to the application's event store as `Application.save` would
        send them (its keyword arguments reach the recorder's `insert_events`), minus
        what this application does not use (snapshots, notifications) and its check
        of each event against a runtime Protocol, which costs ~90 µs an event on
        Python 3.11: a third of a lone AddTarget's writing."""
        pending = self._pending
        if pending.events or pending.receipts:
            self.app.events.put(pending.events, inline=self)
        self.committed = True

    def write(self, cursor: Any, dialect: Dialect, positions: Sequence[int]) -> None:
        """Called by the store's recorder inside the transaction, once the events are
        inserted at `positions` (InlineWrites)."""
        pending = self._pending
        for recorded in pending.recorded:
            if recorded.event_count:
                recorded.position = positions[recorded.first_event + recorded.event_count - 1]
        if positions:
            # Each resource's row as its last change left it; inserted when one of
            # this unit's commands created it, written over otherwise.
            last: dict[UUID, Change] = {c.resource.id: c for c in pending.changes}
            created = {c.resource.id for c in pending.changes if c.created}
            new: list[Any] = []
            changed: list[Any] = []
            for i, c in last.items():
                (new if i in created else changed).append(self.read_model.rows(c.resource, c.shape))
            self.read_model.write(cursor, dialect, new, changed, positions[-1])
            outbox.insert(cursor, dialect, zip(positions, pending.outbox, strict=True))
        receipts.insert(
            cursor,
            dialect,
            (
                Receipt(r.key, r.command, r.status_code, recorded.position, r.body, r.created_ids)
                for r, recorded in pending.receipts
            ),
            replace=False,
        )
