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

import contextlib
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
from eventsourcing.utils import get_topic

from bench.harness import fresh_store
from services.bootstrap import Runtime
from services.command import outbox
from services.command.domain import OutdialTarget
from services.command.handlers import Incoming, handle, new_target_args
from services.command.receipts import command_digest
from services.query.writes import ReadModelWriter, insert_new_rows
from services.store import Dialect
from shared import shapes
from shared.commands import AddTargets, parse_command
from shared.config import Settings

# The bytes of an AddTargets of 1,000 for (customer_id, outdial_id).
BodyMaker = Callable[[str, str], bytes]

STAGES = ("parse", "events", "states", "encode", "render", "store")


class _Inline:
    """The rows written in the events' transaction (`services.store.InlineWrites`)."""

    def __init__(self, rows: list[Any], messages: list[list[outbox.OutboxMessage]]):
        self.rows, self.messages = rows, messages

    def write(self, cursor: Any, dialect: Dialect, positions: Sequence[int]) -> None:
        insert_new_rows(cursor, dialect, self.rows)
        outbox.insert(cursor, dialect, zip(positions, self.messages, strict=True))


@contextlib.contextmanager
def _runtime(store: str, secret: str) -> Iterator[Runtime]:
    """The service's runtime, in this process, on a fresh store of kind `store`."""
    with fresh_store(store) as (url, _):
        rt = Runtime(Settings(database_url=url, jwt_secret=secret))
        try:
            yield rt
        finally:
            rt.queries.close()
            rt.app.close()


def _handled(rt: Runtime, body: bytes) -> dict[str, Any]:
    """A command's bytes parsed and handled as the consumer does, in this thread: the
    reply's data."""
    incoming = Incoming(parse_command(body), str(uuid.uuid4()), command_digest(body))
    reply = handle(incoming, rt.new_uow)
    assert reply.status_code == 200 and reply.data is not None, reply.error
    return reply.data


def addtargets_handler(store: str, make_body: BodyMaker, batches: int, secret: str) -> float:
    """µs a target of parsing and handling an AddTargets of 1,000 (the median of
    `batches`, after two to warm up), on a fresh store of kind `store`."""
    customer = str(uuid.uuid4())
    new_outdial = {
        "type": "CreateOutdial",
        "customer_id": customer,
        "name": "",
        "detail": "",
        "data": "",
    }
    with _runtime(store, secret) as rt:
        outdial = _handled(rt, orjson.dumps(new_outdial))
        body = make_body(customer, str(outdial["id"]))
        timings: list[float] = []
        for batch in range(batches + 2):
            began = time.perf_counter()
            added = _handled(rt, body)["result"]
            if batch >= 2:
                timings.append((time.perf_counter() - began) * 1e6 / len(added))
    return statistics.median(timings)


def addtargets_floor(
    store: str, make_body: BodyMaker, batches: int, secret: str
) -> dict[str, float]:
    """µs a target of each stage (the median of `batches` AddTargets of 1,000, after
    two to warm up), on a fresh store of kind `store`."""
    body = make_body(str(uuid.uuid4()), str(uuid.uuid4()))
    created: Any = OutdialTarget.Created  # made by `@event`: mypy knows not its fields
    topic = get_topic(OutdialTarget)
    read_model = ReadModelWriter()
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with _runtime(store, secret) as rt:
        app = rt.app
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
                    **new_target_args(cmd, f),
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
    return {stage: statistics.median(values) for stage, values in timings.items()}
