"""The projection: follows the notification log and keeps the read model.

It reads notifications in pages after its tracked position, turns each event
into the row of the resource it changed (the aggregate after the event, rendered
by `shared.shapes`), and writes a page's rows with the page's last position in
one transaction. Receipts are skipped but still advance the position, since a
command's reply names its receipt's position.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from eventsourcing.persistence import IntegrityError, Notification

from services.command.application import OutdialApplication
from services.command.domain import Outdial, OutdialTarget
from services.command.history import AggregateHistory, is_receipt
from services.query.read_model import OutdialRow, ReadModelMixin, TargetRow
from shared import shapes

log = logging.getLogger("outdial.projection")


def outdial_row(o: Outdial) -> OutdialRow:
    shape = shapes.outdial(o)
    return str(o.id), str(o.customer_id), shape["tm_create"], int(o.deleted), _json(shape)


def target_row(t: OutdialTarget) -> TargetRow:
    shape = shapes.target(t)
    present = sum(1 << i for i, d in enumerate(t.destinations) if d is not None)
    c = t.try_counts
    return (
        shape["id"],
        shape["outdial_id"],
        str(t.customer_id),
        shape["tm_create"],
        int(t.deleted),
        t.status,
        shape["tm_update"],
        present,
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        _json(shape),
    )


def _json(shape: dict[str, Any]) -> str:
    return orjson.dumps(shape).decode()


class Projection:
    def __init__(
        self, app: OutdialApplication, read_model: ReadModelMixin, *, page_size: int = 500
    ):
        self.app = app
        self.read_model = read_model
        self.page_size = page_size
        self.history = AggregateHistory(app)

    def rows(
        self, notifications: Sequence[Notification]
    ) -> tuple[list[OutdialRow], list[TargetRow]]:
        """The rows these notifications leave behind: each resource's last state."""
        outdials: dict[Any, OutdialRow] = {}
        targets: dict[Any, TargetRow] = {}
        for notification in notifications:
            if is_receipt(notification):
                continue
            aggregate = self.history.apply(self.history.decode(notification))
            if isinstance(aggregate, OutdialTarget):
                targets[aggregate.id] = target_row(aggregate)
            elif isinstance(aggregate, Outdial):
                outdials[aggregate.id] = outdial_row(aggregate)
        return list(outdials.values()), list(targets.values())

    def page_after(self, position: int, stop: int | None = None) -> Sequence[Notification]:
        return self.app.recorder.select_notifications(
            position, self.page_size, stop=stop, inclusive_of_start=False
        )

    def catch_up_page(self, stop: int | None = None) -> int:
        """Apply the next page of the log (up to `stop`); return how many
        notifications it held, 0 when there was nothing new."""
        position = self.read_model.position()
        notifications = self.page_after(position, stop)
        if not notifications:
            return 0
        outdials, targets = self.rows(notifications)
        try:
            self.read_model.write(outdials, targets, notifications[-1].id)
        except IntegrityError:
            if self.read_model.position() <= position:
                raise  # not another projector's doing: tracking refused for another reason
            # Another projector wrote this page first; carry on from its position.
            log.info("page already applied elsewhere", extra={"fields": {"after": position}})
        return len(notifications)

    def catch_up_in(self, c: Any, start: int, stop: int) -> int:
        """Inside a caller's transaction `c`, apply the log from `start` to `stop`
        to this projection's tables (without tracking); return the position reached."""
        position = start
        while notifications := self.page_after(position, stop):
            outdials, targets = self.rows(notifications)
            self.read_model.write_rows(c, outdials, targets)
            position = notifications[-1].id
        return position

    def catch_up(self, stop: int | None = None) -> int:
        """Apply every page up to `stop` (or the head); return the notifications read."""
        total = 0
        while count := self.catch_up_page(stop):
            total += count
        return total
