"""The HTTP API's routes, read from its router itself (so a route added later is
in every table at once), and a valid body for each write route."""

from __future__ import annotations

import uuid
from typing import Any, cast

from services.gateway.http import OPEN_PATHS, Services, make_api
from tests.expected import TEL

OUTDIALS = "/v1.0/outdials"
# A valid body for each write route, keyed as the router names it.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", OUTDIALS): {"name": "n", "detail": "d", "data": "x"},
    ("PUT", f"{OUTDIALS}/{{id}}"): {"name": "renamed", "detail": "d"},
    ("PUT", f"{OUTDIALS}/{{id}}/campaign_id"): {"campaign_id": str(uuid.uuid4())},
    ("PUT", f"{OUTDIALS}/{{id}}/data"): {"data": "overwritten"},
    ("POST", f"{OUTDIALS}/{{id}}/targets"): {
        "name": "n",
        "detail": "d",
        "data": "x",
        "destination_0": TEL,
    },
}


def app_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the API serves, HEAD aside."""
    # The routes never run here: stand-ins are enough to build the API.
    none = cast(Any, None)
    services = Services(queries=none, bus=none, positions=none, secret="unused")
    try:
        return sorted({(method, path) for method, path, _ in make_api(services).router.routes()})
    finally:
        services.executor.shutdown()


ROUTES = app_routes()
API_ROUTES = [(m, p) for m, p in ROUTES if p not in OPEN_PATHS]


def fill(path: str, outdial_id: str, target_id: str) -> str:
    return path.replace("{id}", outdial_id).replace("{target_id}", target_id)
