"""Events that stores made by earlier versions hold, and this version no longer writes.

Until the receipts table, a command's receipt was an aggregate of its own, whose
event sits in the log among the resources' events. Such events are still
decoded (once, when an old store is upgraded: `services.query.replay`) to move
the receipts into the table, and skipped by every reader of the log.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Notification
from eventsourcing.utils import register_topic


class CommandReceipt(Aggregate):
    """That a command was handled, and what it answered."""

    @event("Recorded")
    def __init__(
        self,
        customer_id: UUID,
        message_id: str,
        command_type: str,
        status_code: int,
        data: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> None:
        self.customer_id = customer_id
        self.message_id = message_id
        self.command_type = command_type
        self.status_code = status_code
        self.data = data
        self.error = error


# Where the class lived when those events were written.
RECEIPT_TOPIC = "services.command.domain:CommandReceipt"
register_topic(RECEIPT_TOPIC, CommandReceipt)


def is_receipt(notification: Notification) -> bool:
    """Receipts are bookkeeping, not resources: readers skip them undecoded (a
    receipt of a big AddTargets holds its whole reply)."""
    return notification.topic.startswith(RECEIPT_TOPIC + ".")
