"""Wires the components to their adapters and runs them until SIGTERM/SIGINT.

The one place that knows which component needs what: the domain, handlers and
routes never import from here, and tests start components the same way.

Components of one process share one `Runtime`: one application (one pool of
store connections), one read model, and the signals between them. When the
command consumer and the readers of the log (projector, relay) share a process,
the consumer tells them when it stored something; otherwise they listen to
PostgreSQL's NOTIFY, or poll SQLite briefly (it has no notifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from uuid import UUID

from aiohttp import web

from services.command.application import OutdialApplication
from services.command.consumer import CommandConsumer
from services.command.relay import EventRelay
from services.query.api import (
    BODY_TIMEOUT_SECONDS,
    HEADER_TIMEOUT_SECONDS,
    Services,
    make_app,
)
from services.query.envelope import EnvelopeListener
from services.query.positions import (
    PositionBoard,
    follow_by_listening,
    follow_by_polling,
    listen,
)
from services.query.projection import Projection
from services.query.read_model import PostgresReadModel, ReadModelMixin, SQLiteReadModel
from services.query.readiness import ProjectionWatch
from shared import shapes
from shared.client import OutdialClient
from shared.config import Settings
from shared.metrics import PROJECTION_LAG, PROJECTION_POSITION
from shared.store import Store, parse_store_url, postgres_conninfo, schema_lock

log = logging.getLogger("outdial")

# How often a reader of the log looks for new events when nothing tells it.
SQLITE_POLL_SECONDS = 0.1
POSTGRES_POLL_SECONDS = 1.0


@dataclass
class Component:
    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


class Wakeup:
    """A pulse from writers to readers of the log in this process."""

    def __init__(self) -> None:
        self._events: list[asyncio.Event] = []

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.append(event)
        return event

    def notify(self) -> None:
        for event in self._events:
            event.set()


@dataclass
class Runtime:
    settings: Settings
    stored: Wakeup = field(default_factory=Wakeup)
    board: PositionBoard = field(default_factory=PositionBoard)
    projector_here: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @cached_property
    def store(self) -> Store:
        return parse_store_url(self.settings.database_url)

    @cached_property
    def app(self) -> OutdialApplication:
        return OutdialApplication(self.store)

    @cached_property
    def read_model(self) -> ReadModelMixin:
        cls: type[SQLiteReadModel | PostgresReadModel] = (
            SQLiteReadModel if self.store.kind == "sqlite" else PostgresReadModel
        )
        factory = self.app.factory  # first: making the app takes the lock itself
        with schema_lock(self.store):
            read_model = factory.tracking_recorder(cls)
            assert isinstance(read_model, ReadModelMixin)
            read_model.create_views()
        return read_model

    def background(self, coroutine: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self.tasks.append(task)
        return task

    def new_events(self) -> asyncio.Event:
        """An event set whenever the store may hold new notifications."""
        wakeup = self.stored.subscribe()
        if self.store.kind == "postgres":  # other processes' writes too
            channel = self.app.recorder.events_table_name.replace(".", "_")  # type: ignore[attr-defined]

            async def on_notify(_: str) -> None:
                wakeup.set()

            self.background(listen(postgres_conninfo(self.store), channel, on_notify), "listen")
        return wakeup

    @property
    def poll_seconds(self) -> float:
        """How long a reader of the log waits for news before it looks anyway:
        briefly on SQLite, which cannot tell other processes' writes."""
        return SQLITE_POLL_SECONDS if self.store.kind == "sqlite" else POSTGRES_POLL_SECONDS

    async def close(self) -> None:
        await cancel(*self.tasks)
        if "app" in self.__dict__:
            self.app.close()


async def cancel(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


async def follow_log(
    name: str, step: Callable[[], Awaitable[int]], wakeup: asyncio.Event, poll: float
) -> None:
    """Run `step` until it finds nothing new, then wait for news (or `poll`)."""
    failures = 0
    while True:
        wakeup.clear()
        try:
            found = await step()
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            log.exception(f"{name} failed; retrying", extra={"fields": {"failures": failures}})
            await asyncio.sleep(min(0.1 * 2**failures, 5.0))
            continue
        if not found:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), poll)


def command_consumer(rt: Runtime) -> Component:
    read_model = rt.read_model

    def available_targets(
        outdial_id: UUID,
        most: Sequence[int],
        updated_before: datetime | None,
        limit: int,
        offset: int,
    ) -> list[UUID]:
        before = None if updated_before is None else shapes.timestamp(updated_before)
        rows = read_model.available(str(outdial_id), most, before, limit, offset)
        return [UUID(target_id) for target_id, _ in rows]

    rt.app.available_targets = available_targets
    consumer = CommandConsumer(
        rt.app, rt.settings.amqp_url, prefetch=rt.settings.prefetch, on_stored=rt.stored.notify
    )
    return Component("command", consumer.start, consumer.stop)


def projector(rt: Runtime) -> Component:
    rt.projector_here = True
    projection = Projection(rt.app, rt.read_model)
    # eventsourcing is synchronous: the projection runs in a thread of its own.
    thread = ThreadPoolExecutor(1, "outdial-projector")
    tasks: list[asyncio.Task[None]] = []

    def page() -> tuple[int, int, int]:
        count = projection.catch_up_page()
        return count, rt.read_model.position(), rt.app.recorder.max_notification_id() or 0

    async def step() -> int:
        count, position, head = await asyncio.get_running_loop().run_in_executor(thread, page)
        PROJECTION_POSITION.set(position)
        PROJECTION_LAG.set(max(head - position, 0))
        await rt.board.advance(position)
        return count

    async def start() -> None:
        follow = follow_log("projector", step, rt.new_events(), rt.poll_seconds)
        tasks.append(rt.background(follow, "projector"))

    async def stop() -> None:
        await cancel(*tasks)
        thread.shutdown(wait=True)

    return Component("projector", start, stop)


def relay(rt: Runtime) -> Component:
    app = rt.app  # first: making the app takes the lock itself
    with schema_lock(rt.store):  # the relay's tracking table may be new
        event_relay = EventRelay(app, rt.settings.amqp_url)
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        await event_relay.connect()
        follow = follow_log("relay", event_relay.relay_page, rt.new_events(), rt.poll_seconds)
        tasks.append(rt.background(follow, "relay"))

    async def stop() -> None:
        await cancel(*tasks)
        await event_relay.close()

    return Component("relay", start, stop)


def http_api(
    rt: Runtime,
    *,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> Component:
    """The HTTP API; the timeouts cut slow clients off (tests shorten them)."""
    bus = OutdialClient(rt.settings.amqp_url)

    def head() -> int:
        """The store's last position."""
        return rt.app.recorder.max_notification_id() or 0

    services = Services(
        read_model=rt.read_model,
        bus=bus,
        positions=rt.board,
        secret=rt.settings.secret,
        body_timeout=body_timeout,
        head=head,
    )
    # aiohttp's keep-alive timer runs from the connect too: it is the header timeout.
    runner = web.AppRunner(make_app(services), access_log=None, keepalive_timeout=header_timeout)

    async def store_reachable() -> str | None:
        try:
            await asyncio.to_thread(rt.read_model.position)
        except Exception as e:
            return f"store unreachable: {e}"
        return None

    async def broker_reachable() -> str | None:
        return None if bus.connected else "broker unreachable"

    async def projection_running() -> str | None:
        for task in rt.tasks:
            if task.get_name() == "projector" and task.done():
                return "projection stopped"
        return None

    # Judged from the tracking row and the log's head, so it also holds in a
    # query process whose projector runs elsewhere.
    projection_moving = ProjectionWatch(
        rt.read_model.position,
        head,
        lag_limit=rt.settings.ready_lag_events,
        stall_seconds=rt.settings.ready_stall_seconds,
    )
    services.readiness += [
        store_reachable,
        broker_reachable,
        projection_running,
        projection_moving.problem,
    ]
    # The platform's request envelope: the same bus client, read model and positions.
    envelope = EnvelopeListener(
        rt.settings.amqp_url,
        rt.read_model,
        bus,
        rt.board,
        lambda: rt.app.recorder.max_notification_id() or 0,
    )

    async def start() -> None:
        await projection_moving.problem()  # the first look: a stall is timed from here
        await bus.connect()
        if not rt.projector_here:
            if rt.store.kind == "postgres":
                channel = rt.read_model.channel  # type: ignore[attr-defined]
                follower = follow_by_listening(
                    rt.board, postgres_conninfo(rt.store), channel, rt.read_model.position
                )
            else:
                follower = follow_by_polling(rt.board, rt.read_model.position)
            rt.background(follower, "positions")
        await envelope.start()
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", rt.settings.http_port).start()
        print(f"outdial: HTTP API on http://127.0.0.1:{rt.settings.http_port}/", flush=True)

    async def stop() -> None:
        await runner.cleanup()
        await envelope.stop()
        await bus.close()
        services.executor.shutdown(wait=False)

    return Component("query", start, stop)


COMPONENTS: dict[str, Callable[[Runtime], Component]] = {
    "command": command_consumer,
    "projector": projector,
    "relay": relay,
    "query": http_api,
}


def replay(settings: Settings, *, check: bool) -> int:
    """`outdial replay [--check]`: the exit status is 1 when --check finds a difference."""
    from services.query import replay as replaying

    rt = Runtime(settings)
    try:
        if not check:
            replaying.rebuild(rt.app, rt.read_model)
            return 0
        comparison = replaying.check(rt.app, rt.read_model)
        for difference in comparison.differences:
            print(difference)
        verdict = "equal" if comparison.equal else "DIFFERENT"
        print(
            f"replay --check: {comparison.rows} rows at position {comparison.position}: {verdict}"
        )
        return 0 if comparison.equal else 1
    finally:
        rt.app.close()


async def serve(settings: Settings, names: list[str]) -> None:
    """Start the named components in order, wait for a stop signal, stop them in reverse."""
    rt = Runtime(settings)
    components = [COMPONENTS[name](rt) for name in names]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    started: list[Component] = []
    try:
        for component in components:
            await component.start()
            started.append(component)
        log.info("ready", extra={"fields": {"components": [c.name for c in started]}})
        await stopping.wait()
        log.info("stopping")
    finally:
        for component in reversed(started):
            try:
                await component.stop()
            except Exception:
                log.exception(f"stopping {component.name} failed")
        await rt.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
