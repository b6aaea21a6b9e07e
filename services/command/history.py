"""Aggregate state after each stored event, for readers of the notification log.

The projector and the event relay both need, for every event, the whole
resource as it stood after that event. Rather than re-implementing each event's
effect, they apply the stored event to the aggregate with the aggregate's own
`mutate` (the same code that ran when the command was handled), keeping recent
aggregates in a bounded cache and loading a missed one from the event store at
the version just before the event.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Notification

from services.command.domain import CommandReceipt

RECEIPT_TOPIC_SUFFIX = ":" + CommandReceipt.__qualname__ + "."


def is_receipt(notification: Notification) -> bool:
    """Receipts are bookkeeping, not resources; readers skip them undecoded
    (a receipt of a big AddTargets holds its whole reply)."""
    return RECEIPT_TOPIC_SUFFIX in notification.topic


class AggregateHistory:
    # A thousand: enough for the events that follow each other closely (a claim,
    # then its result); 20,000 doubled the resident memory of `outdial run` over a
    # million events for no measurable speed (bench: memory).
    def __init__(self, app: Application[UUID], *, max_cached: int = 1_000):
        self.app = app
        self.max_cached = max_cached
        self._cache: OrderedDict[UUID, Aggregate] = OrderedDict()

    def decode(self, notification: Notification) -> Any:
        return self.app.mapper.to_domain_event(notification)

    def apply(self, event: Any) -> Aggregate:
        """The aggregate as it stands after `event`."""
        aggregate_id = event.originator_id
        version = event.originator_version
        aggregate: Aggregate | None = None
        if version > 1:
            aggregate = self._cache.pop(aggregate_id, None)
            if aggregate is None or aggregate.version != version - 1:
                aggregate = self.app.repository.get(aggregate_id, version=version - 1)
        aggregate = event.mutate(aggregate)
        assert aggregate is not None
        self._cache[aggregate_id] = aggregate
        if len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return aggregate
