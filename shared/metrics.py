"""Prometheus metrics of every component, served by the HTTP API at /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

COMMANDS = Counter(
    "outdial_commands_total", "Commands handled, by type and outcome", ["type", "outcome"]
)
COMMAND_SECONDS = Histogram(
    "outdial_command_seconds",
    "Time from a command's delivery to its ack",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def command_counted(command_type: str, outcome: int | str, seconds: float) -> None:
    """Count one command and its time: `labels()` checks and locks on each call, so
    each pair's children are looked up once (the types are the commands' own, plus
    "unparseable"; the outcomes a handful)."""
    children = _COMMAND_CHILDREN.get((command_type, outcome))
    if children is None:
        children = _COMMAND_CHILDREN[command_type, outcome] = (
            COMMANDS.labels(command_type, str(outcome)),
            COMMAND_SECONDS.labels(command_type),
        )
    children[0].inc()
    children[1].observe(seconds)


_COMMAND_CHILDREN: dict[tuple[str, int | str], tuple[Any, Any]] = {}

STORE_POSITION = Gauge("outdial_store_position", "Notification id of the last stored event")
PROJECTION_POSITION = Gauge(
    "outdial_projection_position", "Last notification id whose rows the read model holds"
)
PROJECTION_LAG = Gauge(
    "outdial_projection_lag_events", "Notifications stored but not in the read model (0)"
)
RELAY_POSITION = Gauge(
    "outdial_relay_position", "Last notification id whose messages the relay published"
)
HTTP_REQUESTS = Counter(
    "outdial_http_requests_total", "HTTP requests, by route and status", ["route", "status"]
)


def watch_store(
    head: Callable[[], int], read_model: Callable[[], int], relay: Callable[[], int]
) -> None:
    """Read the positions from the store when scraped, so that every process tells
    the same, whichever components it runs."""
    STORE_POSITION.set_function(head)
    PROJECTION_POSITION.set_function(read_model)
    PROJECTION_LAG.set_function(lambda: max(head() - read_model(), 0))
    RELAY_POSITION.set_function(relay)
