"""The write side's service layer: an eventsourcing `Application` over the store.

It loads aggregates for a customer (answering "not found" for another
customer's, never "forbidden"), saves aggregates and receipts in one
transaction, and finds the receipt of a command already handled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.utils import Environment

from services.command.domain import (
    CommandReceipt,
    Outdial,
    OutdialNotFound,
    OutdialTarget,
    TargetNotFound,
)
from shared.store import (
    Store,
    existing_originators,
    notification_id_of,
    parse_store_url,
    prepare_store,
    schema_lock,
)

# Finds candidates for a claim: ids of an outdial's available targets, least
# recently updated first, given the max try counts, an optional "not tried
# since", a limit and an offset. The read model answers (see `claim_next_target`).
AvailableTargets = Callable[[UUID, Sequence[int], datetime | None, int, int], list[UUID]]


def _no_candidates(
    outdial_id: UUID,
    max_try_counts: Sequence[int],
    updated_before: datetime | None,
    limit: int,
    offset: int,
) -> list[UUID]:
    raise RuntimeError("no read model is wired to find available targets")


class OutdialApplication(Application[UUID]):
    name = "outdial"

    def __init__(self, store: Store | None = None, env: dict[str, str] | None = None):
        if store is None:
            super().__init__(env=env)
        else:
            with schema_lock(store):
                prepare_store(store)
                super().__init__(env={**store.env, **(env or {})})
        # Wired by bootstrap to the read model of the same store.
        self.available_targets: AvailableTargets = _no_candidates
        self._pending: dict[UUID, Aggregate] | None = None
        self._read: dict[UUID, Aggregate] = {}
        self._absent: set[UUID] = set()

    @classmethod
    def from_url(cls, database_url: str) -> OutdialApplication:
        return cls(parse_store_url(database_url))

    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Only the service configures the store: eventsourcing's own environment
        # variables (PERSISTENCE_MODULE, COMPRESSOR_TOPIC, ...) set by hand in the
        # process environment must not silently change what is stored or where.
        return Environment(name, {**type(self).env, **(env or {})})

    @contextlib.contextmanager
    def batch(self) -> Iterator[dict[UUID, Aggregate]]:
        """While commands of one group commit are decided: the aggregates they changed,
        not yet stored, which later commands of the group must see (`get`), and
        those they read, which later ones need not read again."""
        self._pending, self._read, self._absent = {}, {}, set()
        try:
            yield self._pending
        finally:
            self._pending, self._read, self._absent = None, {}, set()

    def note_changed(self, aggregates: list[Aggregate]) -> None:
        """Within a batch: these were changed by a command, for the next ones to see."""
        if self._pending is not None:
            self._pending.update((aggregate.id, aggregate) for aggregate in aggregates)

    def look_ahead(self, aggregate_ids: list[UUID]) -> None:
        """Within a batch: learn in one query which of these do not exist yet (most
        receipts of a group), so that `get` need not ask for each."""
        existing = existing_originators(self.recorder, aggregate_ids)
        if existing is not None:
            self._absent.update(set(aggregate_ids) - existing)

    def get(self, aggregate_id: UUID) -> object:
        """An aggregate as the command being decided must see it, or None."""
        if self._pending is not None:
            if aggregate_id in self._pending:
                return self._pending[aggregate_id]
            if aggregate_id in self._read:
                # Unchanged since read: a group's commands share one outdial.
                return self._read[aggregate_id]
            if aggregate_id in self._absent:
                return None
        aggregate: Aggregate | None = None
        with contextlib.suppress(AggregateNotFoundError):
            aggregate = self.repository.get(aggregate_id)
        if self._pending is not None and aggregate is not None:
            self._read[aggregate_id] = aggregate
        return aggregate

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

    def exists(self, aggregate_id: UUID) -> bool:
        if self._pending is not None and aggregate_id in self._pending:
            return True
        return bool(self.recorder.select_events(aggregate_id, limit=1))

    def receipt_of(self, customer_id: UUID, message_id: str) -> CommandReceipt | None:
        receipt = self.get(CommandReceipt.create_id(customer_id, message_id))
        return receipt if isinstance(receipt, CommandReceipt) else None

    def position_of(self, receipt: CommandReceipt) -> int | None:
        """Where a receipt stands in the notification log: the position its command
        reached, since the receipt is always the last event a command saves."""
        return notification_id_of(self.recorder, receipt.id, 1)
