"""The campaign-progress page at `/`, and the JSON it polls at `/v1.0/progress`.

The page is one static HTML file with a little JavaScript (no build step). It
takes the customer's token from its own URL (`/?token=…`, as the tutorial's
requests do; without one, or with one refused, it names `outdial token` that
makes one) and polls the JSON every two seconds: per outdial, the targets
idle, progressing, done and exhausted, and the tries per destination; for the
service, the read model's and the store's positions, from which the page derives
events per second (and how far the read model is behind: 0, as commands write it
in their own transaction, but while one of an earlier version is rebuilt), and
the commands this process has handled, from which it derives commands per second.

"Exhausted" depends on the dialer's limits, which the service does not store:
the page takes them as `max_try_count_0` … `max_try_count_4` (default 3 each) in
its URL, like `/available` does, and passes them on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from importlib import resources

import orjson
from aiohttp import web

from services.gateway.http import (
    Handler,
    Services,
    json_response,
    query_params,
    reached_min_position,
)
from services.gateway.operations import MAX_TRY_COUNTS, Param
from shared.metrics import COMMANDS

PAGE = resources.files("services.gateway").joinpath("static/progress.html").read_bytes()


def _sha256(element: str) -> str:
    """The CSP source of the page's one inline `<script>` or `<style>`."""
    text = PAGE.decode()
    start = text.index(">", text.index(f"<{element}")) + 1
    inline = text[start : text.index(f"</{element}>", start)]
    return "'sha256-" + base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode() + "'"


# Only the page's own script and style run, it talks to this origin alone, and
# nothing may frame it.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256('script')}; style-src {_sha256('style')}; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
DEFAULT_MAX_TRIES = 3
MAX_OUTDIALS = 50
# As `/available` takes them, but 3 tries each unless said.
MAX_TRIES = tuple(
    Param(
        p.name,
        p.code,
        DEFAULT_MAX_TRIES,
        p.low,
        p.high,
        f"Tries of `destination_{i}` a dialer allows (default {DEFAULT_MAX_TRIES}).",
    )
    for i, p in enumerate(MAX_TRY_COUNTS)
)


def commands_handled() -> int | None:
    """Commands this process has handled so far; None before the first (or with no
    consumer in this process, as in a lone `outdial query`)."""
    counts = [
        sample.value
        for metric in COMMANDS.collect()
        for sample in metric.samples
        if sample.name == "outdial_commands_total"
    ]
    return int(sum(counts)) if counts else None


async def page(request: web.BaseRequest, values: dict[str, str], _: str) -> web.Response:
    response = web.Response(body=PAGE, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def progress(services: Services) -> Handler:
    async def progress(
        request: web.BaseRequest, values: dict[str, str], customer: str
    ) -> web.Response:
        most = list(query_params(request, MAX_TRIES).values())
        await reached_min_position(request, services.positions)
        queries = services.queries
        outdials = await services.backend.read(queries.progress, customer, most, MAX_OUTDIALS)
        position = services.positions.position
        head = await asyncio.to_thread(services.head) if services.head else position
        body = {
            "position": position,
            "head": head,
            "lag_events": max(head - position, 0),
            "commands_handled": commands_handled(),
            "max_try_counts": most,
            "outdials": outdials,
        }
        return json_response(orjson.dumps(body))

    return progress
