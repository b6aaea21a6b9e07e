"""Wires the components to their adapters and runs them until SIGTERM/SIGINT.

The one place that knows which component needs what: the domain, handlers and
routes never import from here, and tests start components the same way.

Components of one process share one `Runtime`: one application (one pool of
store connections), one set of read-model queries, one AMQP connection (each
adapter gets channels of its own on it), and the position board. The command
consumer tells the relay and the board of this process when it stored
something; other processes' writes are heard through PostgreSQL's NOTIFY, or,
on SQLite (which has none), by looking briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property

from aio_pika.abc import AbstractRobustConnection
from aiohttp import web

from services import upgrade
from services.command.application import OutdialApplication
from services.command.consumer import CommandConsumer
from services.command.relay import RELAY, EventRelay
from services.command.unit_of_work import UnitOfWork
from services.gateway.envelope import EnvelopeListener
from services.gateway.http import (
    BODY_TIMEOUT_SECONDS,
    HEADER_TIMEOUT_SECONDS,
    Api,
    Services,
    make_api,
)
from services.query import replay as replaying
from services.query.answer_cache import AnswerCache
from services.query.commit_stamp import CommitStamp
from services.query.positions import PositionBoard, follow_by_polling, listen
from services.query.queries import Queries
from services.query.writes import ReadModelWriter
from services.store import (
    Busy,
    SQLiteInlineRecorder,
    Store,
    StoreURLError,
    describe_store_error,
    head,
    parse_store_url,
    postgres_conninfo,
    read_position,
    read_transaction,
)
from shared.broker import connect
from shared.client import OutdialClient
from shared.config import SettingError, Settings
from shared.metrics import watch_store
from shared.queue_consumer import Replies

log = logging.getLogger("outdial")

# How often the relay looks for other processes' events on SQLite, which cannot
# tell; and on PostgreSQL, in case a NOTIFY was missed.
SQLITE_POLL_SECONDS = 0.1
POSTGRES_POLL_SECONDS = 1.0
# How often `outdial projector` checks that the read model has every event's rows.
KEEPER_SECONDS = 10.0


@dataclass
class Component:
    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


@dataclass
class Runtime:
    settings: Settings
    board: PositionBoard = field(default_factory=PositionBoard)
    # Set whenever this process stored events, or heard that another did.
    stored: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _connection: AbstractRobustConnection | None = None
    _replies: Replies | None = None
    _watching: bool = False

    @cached_property
    def store(self) -> Store:
        try:
            return parse_store_url(self.settings.database_url)
        except StoreURLError as e:
            raise SettingError("OUTDIAL_DATABASE_URL", str(e)) from e

    @cached_property
    def app(self) -> OutdialApplication:
        try:
            app = OutdialApplication(self.store)
            upgrade.prepare(app)
            if isinstance(app.recorder, SQLiteInlineRecorder):
                problem = app.recorder.unwritable()
                if problem is not None:
                    raise SettingError("OUTDIAL_DATABASE_URL", problem)
        except Exception as e:
            cause = describe_store_error(e, self.settings.database_url)
            if cause is None:
                raise
            raise SettingError("OUTDIAL_DATABASE_URL", cause) from e
        queries = Queries(self.store, readers=app.recorder.readers)  # type: ignore[attr-defined]
        self.__dict__["queries"] = queries
        watch_store(lambda: head(app.recorder), queries.position, self.relay_position)
        return app

    @property
    def queries(self) -> Queries:
        """The read model's queries, on the event store's readers (made with `app`)."""
        self.app  # noqa: B018
        return self.__dict__["queries"]  # type: ignore[no-any-return]

    def relay_position(self) -> int:
        with read_transaction(self.app.recorder) as c:
            return read_position(c, self.store.dialect, RELAY) or 0

    def new_uow(self) -> UnitOfWork:
        return UnitOfWork(
            self.app, candidates=self.queries.claim_candidates, read_model=ReadModelWriter()
        )

    def head(self) -> int:
        return head(self.app.recorder)

    async def connection(self) -> AbstractRobustConnection:
        """The process's one AMQP connection."""
        if self._connection is None:
            self._connection = await connect(self.settings.amqp_url)
        return self._connection

    async def replies(self) -> Replies:
        if self._replies is None:
            self._replies = Replies(await self.connection(), self.settings.amqp_url)
            await self._replies.start()
        return self._replies

    def stored_at(self, position: int) -> None:
        """This process stored events up to `position`."""
        self.board.advance(position)
        self.stored.set()

    def background(self, coroutine: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self.tasks.append(task)
        return task

    def watch_other_processes(self) -> None:
        """Hear other processes' writes: PostgreSQL's NOTIFY, sent by every insert of
        events; on SQLite, the board reads the store's position while a request waits
        (the relay polls on its own)."""
        if self._watching:
            return
        self._watching = True
        if self.store.kind == "sqlite":
            self.background(follow_by_polling(self.board, self.head), "positions")
            return

        async def on_notify(_: str) -> None:
            self.board.advance(await asyncio.to_thread(self.head))
            self.stored.set()

        channel = self.app.recorder.channel_name  # type: ignore[attr-defined]
        self.background(listen(postgres_conninfo(self.store), channel, on_notify), "listen")

    @property
    def poll_seconds(self) -> float:
        return SQLITE_POLL_SECONDS if self.store.kind == "sqlite" else POSTGRES_POLL_SECONDS

    async def close(self) -> None:
        await cancel(*self.tasks)
        if self._replies is not None:
            await self._replies.close()
        if self._connection is not None:
            await self._connection.close()
        if "queries" in self.__dict__:
            self.queries.close()
        if "app" in self.__dict__:
            self.app.close()


async def cancel(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


async def follow(
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
    rt.app  # noqa: B018 - the store is made ready before anything is consumed
    consumer: CommandConsumer | None = None

    async def start() -> None:
        nonlocal consumer
        consumer = CommandConsumer(
            await rt.connection(),
            await rt.replies(),
            rt.new_uow,
            prefetch=rt.settings.prefetch,
            on_stored=rt.stored_at,
        )
        await consumer.start()

    async def stop() -> None:
        if consumer is not None:
            await consumer.stop()

    return Component("command", start, stop)


def projector(rt: Runtime) -> Component:
    """The read model's keeper. Commands write the read model themselves; this brings
    a read model up to the events at start (an upgrade: `upgrade.prepare`), and then
    checks now and then that it still has every event's rows, rebuilding it if a
    process of an earlier version stored events without them meanwhile."""
    rt.app  # noqa: B018 - the upgrade, if any, happens here
    tasks: list[asyncio.Task[None]] = []

    async def keep() -> None:
        while True:
            await asyncio.sleep(KEEPER_SECONDS)
            try:
                if not await asyncio.to_thread(replaying.is_current, rt.app):
                    log.warning("the read model is behind the events; rebuilding it")
                    await asyncio.to_thread(replaying.rebuild, rt.app, quiet=True)
            except Exception:
                log.exception("checking the read model failed")

    async def start() -> None:
        tasks.append(rt.background(keep(), "projector"))

    async def stop() -> None:
        await cancel(*tasks)

    return Component("projector", start, stop)


def relay(rt: Runtime) -> Component:
    rt.app  # noqa: B018
    tasks: list[asyncio.Task[None]] = []
    event_relay: EventRelay | None = None

    async def start() -> None:
        nonlocal event_relay
        channel = await (await rt.connection()).channel(publisher_confirms=False)
        event_relay = EventRelay(rt.app, channel)
        await event_relay.declare()
        rt.watch_other_processes()
        rt.stored.set()  # whatever is in the outbox already
        loop = follow("relay", event_relay.relay_page, rt.stored, rt.poll_seconds)
        tasks.append(rt.background(loop, "relay"))

    async def stop() -> None:
        await cancel(*tasks)
        if event_relay is not None:
            await event_relay.close()
            if not event_relay.channel.is_closed:
                await event_relay.channel.close()

    return Component("relay", start, stop)


def http_api(
    rt: Runtime,
    *,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> Component:
    """The HTTP API and the platform's envelope listener; the timeouts cut slow
    clients off (tests shorten them)."""
    rt.app  # noqa: B018
    # Bound now, before any component starts: a port in use is said at once.
    sock = listening_socket(rt.settings.http_host, rt.settings.http_port)
    state: dict[str, object] = {}
    runner: web.ServerRunner | None = None

    async def start() -> None:
        nonlocal runner
        connection = await rt.connection()
        bus = OutdialClient(rt.settings.amqp_url, connection=connection)
        await bus.connect()
        services = Services(
            queries=rt.queries,
            bus=bus,
            positions=rt.board,
            secret=rt.settings.secret,
            body_timeout=body_timeout,
            head=rt.head,
        )
        if rt.store.kind == "sqlite":
            # PostgreSQL has no stamp of its commits to read without asking it.
            stamp = state["stamp"] = CommitStamp(rt.store.path)
            services.cache = AnswerCache(stamp.now)

        async def store_reachable() -> str | None:
            try:
                await asyncio.to_thread(rt.queries.position)
            except Exception as e:
                return f"store unreachable: {e}"
            return None

        async def broker_reachable() -> str | None:
            return None if bus.connected else "broker unreachable"

        services.readiness += [store_reachable, broker_reachable]
        rt.board.advance(rt.head())
        rt.watch_other_processes()
        envelope = EnvelopeListener(connection, await rt.replies(), services.backend)
        await envelope.start()
        api = make_api(services)
        api.open_reads()
        state["api"] = api
        # aiohttp's keep-alive timer runs from the connect too: it is the header timeout.
        runner = web.ServerRunner(api.server(access_log=None, keepalive_timeout=header_timeout))
        await runner.setup()
        await web.SockSite(runner, sock).start()
        state.update(bus=bus, envelope=envelope, services=services)
        host = rt.settings.http_host
        shown = f"[{host}]" if ":" in host else host
        print(f"outdial: HTTP API on http://{shown}:{rt.settings.http_port}/", flush=True)

    async def stop() -> None:
        if runner is not None:
            await runner.cleanup()
        api = state.get("api")
        if isinstance(api, Api):
            api.close_reads()
        envelope = state.get("envelope")
        if isinstance(envelope, EnvelopeListener):
            await envelope.stop()
        bus = state.get("bus")
        if isinstance(bus, OutdialClient):
            await bus.close()
        services = state.get("services")
        if isinstance(services, Services):
            services.executor.shutdown(wait=False)
        stamp = state.get("stamp")
        if isinstance(stamp, CommitStamp):
            stamp.close()

    return Component("query", start, stop)


def listening_socket(host: str, port: int) -> socket.socket:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise SettingError("OUTDIAL_HTTP_HOST", f"cannot listen on {host}: {e.strerror}") from None
    try:
        return socket.create_server((host, port), family=_family(host), backlog=1024)
    except OSError as e:
        text = e.strerror or str(e)
        if e.errno == errno.EADDRINUSE:
            raise SettingError("OUTDIAL_HTTP_PORT", f"{host}:{port} is in use") from None
        if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
            raise SettingError("OUTDIAL_HTTP_HOST", f"cannot listen on {host}: {text}") from None
        raise SettingError("OUTDIAL_HTTP_PORT", f"cannot listen on {host}:{port}: {text}") from None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


COMPONENTS: dict[str, Callable[[Runtime], Component]] = {
    "command": command_consumer,
    "projector": projector,
    "relay": relay,
    "query": http_api,
}


def replay(settings: Settings, *, check: bool) -> int:
    """`outdial replay [--check]`: the exit status is 1 when --check finds a difference."""
    rt = Runtime(settings)
    app = rt.app  # made ready (an old store upgraded) and its errors said in one line
    try:
        if not check:
            replaying.rebuild(app, wait=False)
            return 0
        comparison = replaying.check(app, wait=False)
        for difference in comparison.differences:
            print(difference)
        verdict = "equal" if comparison.equal else "DIFFERENT"
        print(
            f"replay --check: {comparison.rows} rows at position {comparison.position}: {verdict}"
        )
        return 0 if comparison.equal else 1
    except Busy:
        raise SettingError(
            "OUTDIAL_DATABASE_URL", f"{replaying.ANOTHER_REPLAY}; run this one once it has finished"
        ) from None
    finally:
        app.close()


# Allocations between two collections of the youngest generation (Python's
# default: 700). An AddTargets of 1,000 makes some 50,000 objects that all live
# until its commit: at 700 the collector runs 70 times over them, and promotes
# them to where the full collections walk everything.
YOUNG_COLLECTION_THRESHOLD = 10_000


def collect_garbage_less() -> None:
    """Once started: what the process made to start (modules, schemas, metadata)
    lives as long as it does, and the collector need not walk it again
    (`gc.freeze`); and it collects the youngest objects less often. 4% of an
    AddTargets' instructions (callgrind), without a cycle left uncollected."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


async def serve(settings: Settings, names: list[str]) -> None:
    """Start the named components in order, wait for a stop signal, stop them in reverse."""
    rt = Runtime(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    started: list[Component] = []
    try:
        components = [COMPONENTS[name](rt) for name in names]
        for component in components:
            await component.start()
            started.append(component)
        collect_garbage_less()
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
        sys.stdout.flush()
