"""Prometheus metrics of every component, served by the HTTP API at /metrics."""

from __future__ import annotations

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
PROJECTION_POSITION = Gauge(
    "outdial_projection_position", "Last notification id applied to the read model"
)
PROJECTION_LAG = Gauge(
    "outdial_projection_lag_events", "Notifications stored but not yet in the read model"
)
RELAY_POSITION = Gauge("outdial_relay_position", "Last notification id published to outdial.events")
HTTP_REQUESTS = Counter(
    "outdial_http_requests_total", "HTTP requests, by route and status", ["route", "status"]
)
