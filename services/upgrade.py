"""Making a store ready for this version, once, when a process starts on it.

A new store gets its tables. A store made by an earlier version is brought up
to this one from its events, before anything is served from it:
- its receipts, which were events then, move to the receipts table, so a command
  sent again after the upgrade still answers its first reply;
- the outbox, new then, takes the messages of the events the relay of that
  version had not published yet, so none is lost across the upgrade;
- a read model that is missing, of another layout, or behind the events (its
  projector had not caught up) is rebuilt from the events, with a progress bar.

Processes that start at once on one PostgreSQL store take turns (an advisory
lock), so this is done by the first, and the others find it done.
"""

from __future__ import annotations

import logging
import sys
from collections import OrderedDict
from typing import Any, TextIO
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate

from services.command import outbox, receipts
from services.command.application import OutdialApplication
from services.command.domain import Outdial, OutdialTarget
from services.command.legacy import RECEIPT_TOPIC, is_receipt
from services.command.relay import RELAY
from services.query import replay
from services.store import (
    create_positions_table,
    read_transaction,
    schema_lock,
    table_exists,
    write_position,
    write_transaction,
)
from shared import shapes

log = logging.getLogger("outdial.upgrade")

PAGE = 1000


def prepare(app: OutdialApplication, *, out: TextIO = sys.stderr) -> None:
    """Create this version's tables; bring a store of an earlier version up to it."""
    dialect = app.store.dialect
    with schema_lock(app.store):
        with write_transaction(app.recorder) as c:
            new_receipts = not table_exists(c, dialect, receipts.RECEIPTS)
            new_outbox = not table_exists(c, dialect, outbox.OUTBOX)
            create_positions_table(c, dialect)
            receipts.create_table(c, dialect)
            outbox.create_table(c, dialect)
        if app.recorder.max_notification_id():
            if new_receipts:
                moved = move_old_receipts(app)
                if moved:
                    log.info("upgrade: receipts moved", extra={"fields": {"receipts": moved}})
            if new_outbox:
                filled = fill_outbox(app)
                if filled:
                    log.info("upgrade: outbox filled", extra={"fields": {"events": filled}})
        if not replay.is_current(app):
            if app.recorder.max_notification_id():
                print(
                    "outdial: the read model is missing, of an earlier version or behind "
                    "the events; rebuilding it from the events before serving",
                    file=out,
                    flush=True,
                )
                replay.rebuild(app, out=out)
            else:
                replay.rebuild(app, out=out, quiet=True)  # a new store: empty tables


def move_old_receipts(app: OutdialApplication) -> int:
    """The receipts an earlier version kept as events, into the receipts table."""
    dialect = app.store.dialect
    position, moved = 0, 0
    # Pages of a few receipts: one of an old big AddTargets holds its whole reply.
    while notifications := app.recorder.select_notifications(
        position, 20, topics=[RECEIPT_TOPIC + ".Recorded"], inclusive_of_start=False
    ):
        rows = []
        for n in notifications:
            event: Any = app.mapper.to_domain_event(n)
            ok = event.status_code == 200
            reply = orjson.dumps(event.data if ok else event.error).decode()
            body: str | None = reply
            created = None
            if ok and event.command_type == "AddTargets":  # as `handlers._receipt` keeps it
                created, body = [t["id"] for t in event.data["result"]], None
            rows.append(
                receipts.Receipt(
                    receipts.receipt_key(event.customer_id, event.message_id),
                    None,  # the command's digest was not kept: any re-send matches
                    int(event.status_code),
                    n.id if ok else None,  # the receipt was its command's last event
                    body,
                    created,
                )
            )
        with write_transaction(app.recorder) as c:
            receipts.insert(c, dialect, rows, replace=True)
        moved += len(rows)
        position = notifications[-1].id
    return moved


def _old_relay_position(app: OutdialApplication) -> int:
    """Where the relay of an earlier version had got (eventsourcing's tracking table)."""
    dialect = app.store.dialect
    name = "tracking" if dialect.kind == "sqlite" else f"{app.name.lower()}_tracking"
    with read_transaction(app.recorder) as c:
        if not table_exists(c, dialect, name):
            return 0
        c.execute(
            dialect.sql(
                f"SELECT MAX(notification_id) FROM {dialect.table(name)} WHERE application_name = ?"
            ),
            (RELAY,),
        )
        row = c.fetchone()
    return int(row[0] or 0) if row else 0


def fill_outbox(app: OutdialApplication) -> int:
    """The outbox messages of the events an earlier version's relay had not published."""
    dialect = app.store.dialect
    start = _old_relay_position(app)
    with write_transaction(app.recorder) as c:
        write_position(c, dialect, RELAY, start)
    # The state after each event: recent aggregates kept, others loaded at the
    # version before the event.
    states: OrderedDict[UUID, Aggregate] = OrderedDict()
    position, filled = start, 0
    while notifications := app.recorder.select_notifications(
        position, PAGE, inclusive_of_start=False
    ):
        messages = []
        for n in notifications:
            if is_receipt(n):
                continue
            event: Any = app.mapper.to_domain_event(n)
            aggregate = states.pop(event.originator_id, None)
            if aggregate is None or aggregate.version != event.originator_version - 1:
                aggregate = (
                    app.repository.get(event.originator_id, version=event.originator_version - 1)
                    if event.originator_version > 1
                    else None
                )
            aggregate = event.mutate(aggregate)
            assert isinstance(aggregate, Outdial | OutdialTarget)
            states[aggregate.id] = aggregate
            if len(states) > 10_000:
                states.popitem(last=False)
            shape = (
                shapes.target(aggregate, with_customer=True)
                if isinstance(aggregate, OutdialTarget)
                else shapes.outdial(aggregate, with_customer=True)
            )
            messages.append((n.id, outbox.messages_for(event, shape)))
        with write_transaction(app.recorder) as c:
            outbox.insert(c, dialect, messages)
        filled += len(messages)
        position = notifications[-1].id
    return filled
