"""Wires the components to their adapters and runs them until SIGTERM/SIGINT.

The one place that knows which component needs what: the domain and handlers
never import from here, and tests start components the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from services.command.application import OutdialApplication
from services.command.consumer import CommandConsumer
from services.query.api import make_app
from shared.config import Settings

log = logging.getLogger("outdial")


@dataclass
class Component:
    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


def command_consumer(settings: Settings) -> Component:
    app = OutdialApplication.from_url(settings.database_url)
    consumer = CommandConsumer(app, settings.amqp_url, prefetch=settings.prefetch)

    async def stop() -> None:
        await consumer.stop()
        app.close()

    return Component("command", consumer.start, stop)


def http_api(settings: Settings) -> Component:
    runner = web.AppRunner(make_app(), access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", settings.http_port).start()
        print(f"outdial: HTTP API on http://127.0.0.1:{settings.http_port}/", flush=True)

    return Component("query", start, runner.cleanup)


async def serve(components: list[Component]) -> None:
    """Start the components in order, wait for a stop signal, stop them in reverse."""
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
            with contextlib.suppress(Exception):
                await component.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
