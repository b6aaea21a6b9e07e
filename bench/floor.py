"""The least an AddTargets of 1,000 costs a target with this design, timed in-process.

Issue 11 asks AddTargets of 1,000 to add targets at ten times the AddTarget rate. This
is what bounds that figure from below: only the work no way of handling the
command can skip under its design, each stage by the shortest call there is,
with no broker, no relay, no unit of work and no aggregate call path:

- parse: the command validated by pydantic (CONTRACT 3's checks);
- events: one eventsourcing `Created` event per target, made directly;
- states: each folded into its aggregate (`mutate`), which the shape is read from;
- encode: each turned into its stored form by the application's mapper;
- render: the tutorial's shape once per target, its read-model row, and its outbox
  message (CONTRACT 4: the body and its stable message_id);
- store: events, rows and outbox inserted in one transaction, and committed.

The handler does all of this and a little more; the service also receives the
command, answers it and publishes the outbox beside it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from eventsourcing.utils import get_topic

from bench.harness import fresh_store
from services.bootstrap import Runtime
from services.command import outbox
from services.command.domain import OutdialTarget
from services.query.writes import ReadModelWriter, insert_new_rows
from services.store import Dialect
from shared import shapes
from shared.commands import AddTargets, parse_command
from shared.config import Settings

STAGES = ("parse", "events", "states", "encode", "render", "store")


class _Inline:
    """The rows written in the events' transaction (`services.store.InlineWrites`)."""

    def __init__(self, rows: list[Any], messages: list[list[outbox.OutboxMessage]]):
        self.rows, self.messages = rows, messages

    def write(self, cursor: Any, dialect: Dialect, positions: Sequence[int]) -> None:
        insert_new_rows(cursor, dialect, self.rows)
        outbox.insert(cursor, dialect, zip(positions, self.messages, strict=True))


def addtargets_floor(store: str, body: bytes, batches: int, secret: str) -> dict[str, float]:
    """µs a target of each stage (the median of `batches` AddTargets `body`, after two
    to warm up), on a fresh store of kind `store`."""
    created: Any = OutdialTarget.Created  # made by `@event`: mypy knows not its fields
    topic = get_topic(OutdialTarget)
    read_model = ReadModelWriter()
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with fresh_store(store) as (url, _):
        rt = Runtime(Settings(database_url=url, jwt_secret=secret))
        app = rt.app
        try:
            for batch in range(batches + 2):
                moments = [time.perf_counter()]
                cmd = parse_command(body)
                assert isinstance(cmd, AddTargets)
                moments.append(time.perf_counter())
                events = [
                    created(
                        originator_id=uuid.uuid4(),
                        originator_version=1,
                        timestamp=created.create_timestamp(),
                        originator_topic=topic,
                        customer_id=cmd.customer_id,
                        outdial_id=cmd.outdial_id,
                        name=f.name,
                        detail=f.detail,
                        data=f.data,
                        destinations=f.destination_dicts(),
                    )
                    for f in cmd.targets
                ]
                moments.append(time.perf_counter())
                states: list[OutdialTarget] = [e.mutate(None) for e in events]
                moments.append(time.perf_counter())
                stored = [app.mapper.to_stored_event(e) for e in events]
                moments.append(time.perf_counter())
                rows, messages = [], []
                customer = str(cmd.customer_id)
                for e, state in zip(events, states, strict=True):
                    shape = shapes.target(state)
                    rows.append(read_model.rows(state, shape))
                    messages.append(outbox.messages_for(e, {**shape, "customer_id": customer}))
                moments.append(time.perf_counter())
                app.recorder.insert_events(stored, inline=_Inline(rows, messages))
                moments.append(time.perf_counter())
                if batch >= 2:
                    for stage, began, ended in zip(STAGES, moments, moments[1:], strict=False):
                        timings[stage].append((ended - began) * 1e6 / len(events))
        finally:
            rt.queries.close()
            app.close()
    return {stage: statistics.median(values) for stage, values in timings.items()}
