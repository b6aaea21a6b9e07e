"""The OpenAPI 3.1 document of the HTTP API (CONTRACT 5), served at `/openapi.json`.

The document is built, not written: request bodies are the JSON schemas of the
very pydantic command models the service parses (`shared.commands`), minus the
fields the HTTP layer fills in itself (`type`, `customer_id`, and the
`outdial_id` of the path); addresses are `shared.addresses.Address`; limits
(body size, page size, waiting times) are the constants of `services.query.api`.
So the document cannot drift from the code: change a model and the document
follows. The response models below exist for documentation only (the API
answers bodies rendered by `shared.shapes`); unit tests hold them to the
rendered shapes and to CONTRACT 1's field order.

pydantic puts a model's nested schemas under `$defs`; they are hoisted into
`components/schemas`, and refs point there (`ref_template`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.query.api import (
    BASE,
    BODY_TIMEOUT_SECONDS,
    BUS_TIMEOUT_SECONDS,
    MAX_AVAILABLE,
    MAX_BODY,
    MAX_PAGE_SIZE,
    MAX_WAIT_SECONDS,
    PAGE_TOKEN_PATTERN,
)
from shared.addresses import E164, SIP, UUID_ADDRESS_TYPES, UUID_TEXT
from shared.bus import JSON
from shared.commands import (
    AddTarget,
    ClaimNextTarget,
    CreateOutdial,
    UpdateOutdial,
    UpdateOutdialCampaign,
    UpdateOutdialData,
)
from shared.resources import (
    ErrorBody,
    OutdialResource,
    TargetResource,
)

REF_TEMPLATE = "#/components/schemas/{model}"

TEXT = "text/plain"

# ---- response shapes (documentation only) ------------------------------------
# The resources themselves are shared.resources' (the typed client reads them too).


class _Shape(BaseModel):
    model_config = ConfigDict(frozen=True)


_NEXT_PAGE_TOKEN = Field(
    description=(
        "Pass as `page_token` for the next page. Empty when this page is empty; "
        "a non-empty token may still lead to an empty page."
    )
)


class OutdialList(_Shape):
    """One page of the customer's live outdials, newest first by `tm_create`."""

    result: list[OutdialResource]
    next_page_token: str = _NEXT_PAGE_TOKEN


class TargetList(_Shape):
    """One page of an outdial's live targets, newest first by `tm_create`.

    A deleted outdial's targets are hidden: its list is empty.
    """

    result: list[TargetResource]
    next_page_token: str = _NEXT_PAGE_TOKEN


class AvailableTargets(_Shape):
    """The targets a `ClaimNextTarget` could pick now, without claiming any."""

    result: list[TargetResource]
    next_page_token: str = Field("", description="Always empty: the list is not paged.")


class Error(_Shape):
    """The body of every error answer."""

    error: ErrorBody


class Health(_Shape):
    """The process is alive."""

    status: Literal["ok"]


class Readiness(_Shape):
    """Whether the broker and the store are reachable and the projection runs."""

    status: Literal["ready", "not ready"]
    problems: list[str] = Field(
        default_factory=list, description="Only when not ready: what is wrong."
    )


class TargetCounts(_Shape):
    """An outdial's live targets by state; `exhausted` ones are idle with no tries left
    under the request's `max_try_count_i`, and not counted as `idle`."""

    idle: int = Field(ge=0)
    progressing: int = Field(ge=0)
    done: int = Field(ge=0)
    exhausted: int = Field(ge=0)


class OutdialProgress(_Shape):
    outdial: OutdialResource
    targets: TargetCounts
    tries: list[int] = Field(
        min_length=5, max_length=5, description="Tries summed over the targets, per destination."
    )


class Progress(_Shape):
    """What the progress page shows: the newest outdials (up to 50), and the service."""

    position: int = Field(ge=0, description="The read model's position.")
    head: int = Field(ge=0, description="The event store's last position.")
    lag_events: int = Field(ge=0, description="`head - position`: events not yet projected.")
    commands_handled: int | None = Field(
        description="Commands this process has handled (null: none, or no consumer here)."
    )
    max_try_counts: list[int] = Field(min_length=5, max_length=5)
    outdials: list[OutdialProgress]


# ---- request bodies: the command models, minus what the HTTP layer fills in ----

# component name -> (command model, fields the HTTP layer sets, description)
_REQUEST_BODIES: dict[str, tuple[type[BaseModel], frozenset[str], str]] = {
    "CreateOutdialBody": (
        CreateOutdial,
        frozenset({"type", "customer_id"}),
        "The fields of the `CreateOutdial` command.",
    ),
    "UpdateOutdialBody": (
        UpdateOutdial,
        frozenset({"type", "customer_id", "outdial_id"}),
        "The fields of the `UpdateOutdial` command.",
    ),
    "UpdateOutdialCampaignBody": (
        UpdateOutdialCampaign,
        frozenset({"type", "customer_id", "outdial_id"}),
        "The fields of the `UpdateOutdialCampaign` command.",
    ),
    "UpdateOutdialDataBody": (
        UpdateOutdialData,
        frozenset({"type", "customer_id", "outdial_id"}),
        "The fields of the `UpdateOutdialData` command.",
    ),
    "AddTargetBody": (
        AddTarget,
        frozenset({"type", "customer_id", "outdial_id"}),
        "The fields of the `AddTarget` command. At least one destination must be set; "
        "gaps are allowed (`destination_0` null, `destination_2` set).",
    ),
}

# What pydantic cannot render, for the document's schemas of the same name.
# `TargetFields._needs_a_destination`: a target needs one destination or more.
_AT_LEAST_ONE_DESTINATION: dict[str, Any] = {
    "anyOf": [
        {
            "required": [f"destination_{i}"],
            "properties": {f"destination_{i}": {"$ref": REF_TEMPLATE.format(model="Address")}},
        }
        for i in range(5)
    ]
}


def _anchored(pattern: re.Pattern[str]) -> str:
    # The service fullmatches; a JSON Schema pattern matches anywhere unless anchored.
    return f"^(?:{pattern.pattern})$"


# `Address._target_fits_type`: the form of `target` depends on `type`, with the
# very regexes the service checks. Some rules no schema can say are left to the
# description (a possible phone number, e-mail-validator's verdict, a port's range).
_TARGET_BY_TYPE: dict[str, Any] = {
    "oneOf": [
        {"properties": {"type": {"const": "tel"}, "target": {"pattern": _anchored(E164)}}},
        {"properties": {"type": {"const": "sip"}, "target": {"pattern": _anchored(SIP)}}},
        {"properties": {"type": {"const": "email"}, "target": {"format": "idn-email"}}},
        {
            "properties": {
                "type": {"enum": sorted(UUID_ADDRESS_TYPES)},
                "target": {"pattern": _anchored(UUID_TEXT)},
            }
        },
    ],
    "description": (
        "One destination of a target. Beyond the form of `target` for its `type` given "
        "here, a `tel` target must be a number the phonenumbers library calls possible, "
        "an `email` target must pass email-validator (no special-use domains such as "
        "`.test`), and a `sip` port must be 1 to 65535; otherwise the command is "
        "answered 400 `invalid_command` at `destination_N.target`."
    ),
}
_SCHEMA_RULES: dict[str, dict[str, Any]] = {
    "AddTargetBody": _AT_LEAST_ONE_DESTINATION,
    "Address": _TARGET_BY_TYPE,
}

_RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    OutdialResource,
    TargetResource,
    OutdialList,
    TargetList,
    AvailableTargets,
    Error,
    Health,
    Readiness,
    Progress,
)


def _hoist(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    """Add `schema` and its `$defs` to `schemas`; a name must not mean two schemas."""
    for def_name, definition in schema.pop("$defs", {}).items():
        _add(schemas, def_name, definition)
    _add(schemas, name, schema)


def _add(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if schemas.setdefault(name, schema) != schema:
        raise ValueError(f"two different schemas are both named {name!r}")


def _request_schema(model: type[BaseModel], dropped: frozenset[str], name: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    properties: dict[str, Any] = schema["properties"]
    missing = dropped - properties.keys()
    if missing:
        raise ValueError(f"{model.__name__} has no fields {sorted(missing)}")
    for field_name in dropped:
        del properties[field_name]
    required = [f for f in schema.get("required", []) if f not in dropped]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    schema["title"] = name
    return schema


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _RESPONSE_MODELS:
        _hoist(schemas, model.__name__, model.model_json_schema(ref_template=REF_TEMPLATE))
    for name, (model, dropped, description) in _REQUEST_BODIES.items():
        schema = _request_schema(model, dropped, name)
        schema["description"] = description
        _hoist(schemas, name, schema)
    for name, rule in _SCHEMA_RULES.items():
        schemas[name] = {**schemas[name], **rule}
    return dict(sorted(schemas.items()))


# ---- parameters, headers, security ------------------------------------------


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> dict[str, str]:
    return _ref("schemas", name)


def _parameters() -> dict[str, Any]:
    uuid_schema = {"type": "string", "format": "uuid"}
    claim = ClaimNextTarget.model_json_schema(ref_template=REF_TEMPLATE)["properties"]
    parameters: dict[str, Any] = {
        "OutdialId": {
            "name": "id",
            "in": "path",
            "required": True,
            "description": "The outdial's id; not a UUID: 400 `invalid_id`.",
            "schema": uuid_schema,
        },
        "TargetId": {
            "name": "target_id",
            "in": "path",
            "required": True,
            "description": "The target's id; not a UUID: 400 `invalid_id`.",
            "schema": uuid_schema,
        },
        "PageSize": {
            "name": "page_size",
            "in": "query",
            "required": False,
            "description": (
                f"Items per page; values over {MAX_PAGE_SIZE} are capped to {MAX_PAGE_SIZE}. "
                "Not an integer, or below 1: 400 `invalid_page_size`."
            ),
            "schema": {"type": "integer", "minimum": 1, "default": MAX_PAGE_SIZE},
        },
        "PageToken": {
            "name": "page_token",
            "in": "query",
            "required": False,
            "description": (
                "The `next_page_token` of the page before; absent or empty for the first "
                "page. Anything else: 400 `invalid_page_token`."
            ),
            # The token's form, so that a client (or a fuzzer) can tell one from junk.
            "schema": {"type": "string", "pattern": f"^(?:{PAGE_TOKEN_PATTERN})?$"},
        },
        "MinPosition": {
            "name": "X-Outdial-Min-Position",
            "in": "header",
            "required": False,
            "description": (
                "Read your writes: wait (at most "
                f"{MAX_WAIT_SECONDS:g} s, then 504) until the read model has reached this "
                "position, the `X-Outdial-Position` of a write's answer. Not an integer: "
                "400 `invalid_header`."
            ),
            "schema": {"type": "integer"},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": (
                "Makes a write safe to re-send: the same write (same customer, method, "
                "path and body) with the same key takes effect at most once and answers "
                "as the first did. The same key on another write is another write."
            ),
            "schema": {"type": "string"},
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "At most this many targets (default 100).",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_AVAILABLE, "default": 100},
        },
    }
    for i in range(5):
        schema = {k: v for k, v in claim[f"max_try_count_{i}"].items() if k != "title"}
        parameters[f"MaxTryCount{i}"] = {
            "name": f"max_try_count_{i}",
            "in": "query",
            "required": False,
            "description": (
                f"A target whose `try_count_{i}` has reached this is not available on "
                f"`destination_{i}` (as in `ClaimNextTarget`)."
            ),
            "schema": schema,
        }
    return parameters


# Every answer to a write carries it (CONTRACT 5), refusals of the HTTP layer too
# (`services.query.api.errors`): a refused write stored nothing, so the read
# model's position then is as good as any.
POSITION_HEADER: dict[str, Any] = {
    "description": (
        "The event store's position after the command (or, when nothing was stored, "
        "the read model's): pass it as `X-Outdial-Min-Position` to read this write."
    ),
    "required": True,
    "schema": {"type": "integer"},
}


SECURITY_SCHEMES: dict[str, Any] = {
    "tokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The JWT in `?token=`.",
    },
    "tokenCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "token",
        "description": "The JWT in the `token` cookie.",
    },
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The JWT in `Authorization: Bearer`.",
    },
}
# Any one of the three (alternatives, not all together).
SECURITY: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]


# ---- responses ----------------------------------------------------------------

_BAD_ID = "a path id is not a UUID (`invalid_id`)"
_BAD_PAGING = "`page_size` or `page_token` is invalid (`invalid_page_size`, `invalid_page_token`)"
_BAD_HEADER = "`X-Outdial-Min-Position` is not an integer (`invalid_header`)"
_BAD_QUERY = "a query parameter is not an integer in its range"
_BAD_BODY = "the body is not a JSON object (`invalid_json`)"
_BAD_COMMAND = (
    "the command is invalid (`invalid_command`, with `details`: one `{loc, msg}` per invalid field)"
)


def _bad_request(*causes: str) -> str:
    """One sentence: "A, B or C." """
    listed = causes[0] if len(causes) == 1 else f"{', '.join(causes[:-1])} or {causes[-1]}"
    return f"{listed[0].upper()}{listed[1:]}."


_401 = "No token, or a malformed, expired or wrongly signed one (`unauthorized`)."
_408 = f"The body did not arrive within {BODY_TIMEOUT_SECONDS:g} s of the head (`body_timeout`)."
_413 = f"The body is over {MAX_BODY} bytes (`body_too_large`)."
_500 = "An internal failure (`internal_error`); it is logged."
_READ_504 = (
    f"The read model did not reach `X-Outdial-Min-Position` within {MAX_WAIT_SECONDS:g} s "
    "(`position_not_reached`)."
)
_WRITE_504 = (
    f"The command service did not answer within {BUS_TIMEOUT_SECONDS:g} s "
    "(`command_timeout`). The command may still take effect: re-send it with the same "
    "`Idempotency-Key`."
)
_OUTDIAL_404_READ = (
    "No such outdial for this customer: unknown, or another customer's "
    "(`outdial_not_found`). A deleted outdial stays readable by id."
)
_TARGET_404_READ = (
    "No such target of this outdial for this customer: unknown, or another customer's "
    "(`target_not_found`). A deleted target stays readable by id."
)
_OUTDIAL_404_WRITE = (
    "No such outdial for this customer: unknown, deleted, or another customer's "
    "(`outdial_not_found`)."
)
_TARGET_404_WRITE = (
    "No such outdial (`outdial_not_found`), or no such target of it (`target_not_found`), "
    "for this customer: unknown, deleted, or another customer's."
)
_409 = "The command conflicts with the resource's state."


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _schema(schema_name)}}}


def _responses(
    ok_schema: str, ok_description: str, errors: dict[int, str], *, write: bool
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _json(ok_schema, ok_description)}
    for status, description in sorted(errors.items()):
        responses[str(status)] = _json("Error", description)
    if write:
        for response in responses.values():
            response["headers"] = {"X-Outdial-Position": POSITION_HEADER}
    return responses


def _read(
    operation_id: str,
    summary: str,
    tag: str,
    ok_schema: str,
    ok_description: str,
    *,
    parameters: list[str],
    errors: dict[int, str],
) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": SECURITY,
        "parameters": [_ref("parameters", p) for p in [*parameters, "MinPosition"]],
        "responses": _responses(ok_schema, ok_description, errors, write=False),
    }


def _write(
    operation_id: str,
    summary: str,
    tag: str,
    ok_schema: str,
    ok_description: str,
    *,
    body: str | None,
    errors: dict[int, str],
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": (
            "Sent over the bus as a command (CONTRACT 3); answers with the command's reply."
        ),
        "tags": [tag],
        "security": SECURITY,
        "parameters": [_ref("parameters", "IdempotencyKey")],
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": _schema(body)}},
        }
    operation["responses"] = _responses(ok_schema, ok_description, errors, write=True)
    return operation


def _read_errors(*causes: str, not_found: str | None) -> dict[int, str]:
    errors = {400: _bad_request(*causes, _BAD_HEADER), 401: _401, 500: _500, 504: _READ_504}
    if not_found is not None:
        errors[404] = not_found
    return errors


def _write_errors(
    *causes: str, not_found: str | None, body: bool, conflict: str = _409
) -> dict[int, str]:
    errors = {400: _bad_request(*causes), 401: _401, 409: conflict, 500: _500, 504: _WRITE_504}
    if not_found is not None:
        errors[404] = not_found
    if body:
        errors[408] = _408
        errors[413] = _413
    return errors


def _paths() -> dict[str, Any]:
    outdials = f"{BASE}/outdials"
    outdial = f"{outdials}/{{id}}"
    targets = f"{outdial}/targets"
    target = f"{targets}/{{target_id}}"
    outdial_id = [_ref("parameters", "OutdialId")]
    both_ids = [*outdial_id, _ref("parameters", "TargetId")]
    update_errors = _write_errors(
        _BAD_ID, _BAD_BODY, _BAD_COMMAND, not_found=_OUTDIAL_404_WRITE, body=True
    )
    return {
        outdials: {
            "get": _read(
                "list_outdials",
                "List the customer's outdials",
                "outdials",
                "OutdialList",
                "One page of outdials.",
                parameters=["PageSize", "PageToken"],
                errors=_read_errors(_BAD_PAGING, not_found=None),
            ),
            "post": _write(
                "create_outdial",
                "Create an outdial (`CreateOutdial`)",
                "outdials",
                "OutdialResource",
                "The new outdial.",
                body="CreateOutdialBody",
                errors=_write_errors(
                    _BAD_BODY,
                    _BAD_COMMAND,
                    not_found=None,
                    body=True,
                    conflict="An outdial with this `id` already exists (`outdial_exists`).",
                ),
            ),
        },
        outdial: {
            "parameters": outdial_id,
            "get": _read(
                "get_outdial",
                "Get an outdial",
                "outdials",
                "OutdialResource",
                "The outdial (also when deleted).",
                parameters=[],
                errors=_read_errors(_BAD_ID, not_found=_OUTDIAL_404_READ),
            ),
            "put": _write(
                "update_outdial",
                "Update an outdial's name and detail (`UpdateOutdial`)",
                "outdials",
                "OutdialResource",
                "The updated outdial.",
                body="UpdateOutdialBody",
                errors=update_errors,
            ),
            "delete": _write(
                "delete_outdial",
                "Delete an outdial, hiding its targets (`DeleteOutdial`)",
                "outdials",
                "OutdialResource",
                "The deleted outdial.",
                body=None,
                errors=_write_errors(_BAD_ID, not_found=_OUTDIAL_404_WRITE, body=False),
            ),
        },
        f"{outdial}/campaign_id": {
            "parameters": outdial_id,
            "put": _write(
                "update_outdial_campaign",
                "Set an outdial's campaign (`UpdateOutdialCampaign`)",
                "outdials",
                "OutdialResource",
                "The updated outdial.",
                body="UpdateOutdialCampaignBody",
                errors=update_errors,
            ),
        },
        f"{outdial}/data": {
            "parameters": outdial_id,
            "put": _write(
                "update_outdial_data",
                "Set an outdial's data (`UpdateOutdialData`)",
                "outdials",
                "OutdialResource",
                "The updated outdial.",
                body="UpdateOutdialDataBody",
                errors=update_errors,
            ),
        },
        targets: {
            "parameters": outdial_id,
            "get": _read(
                "list_targets",
                "List an outdial's targets",
                "targets",
                "TargetList",
                "One page of targets.",
                parameters=["PageSize", "PageToken"],
                errors=_read_errors(_BAD_ID, _BAD_PAGING, not_found=_OUTDIAL_404_READ),
            ),
            "post": _write(
                "add_target",
                "Add a target to an outdial (`AddTarget`)",
                "targets",
                "TargetResource",
                "The new target.",
                body="AddTargetBody",
                errors=_write_errors(
                    _BAD_ID,
                    _BAD_BODY,
                    _BAD_COMMAND,
                    not_found=_OUTDIAL_404_WRITE,
                    body=True,
                    conflict="A target with this `id` already exists (`target_exists`).",
                ),
            ),
        },
        target: {
            "parameters": both_ids,
            "get": _read(
                "get_target",
                "Get a target",
                "targets",
                "TargetResource",
                "The target (also when deleted).",
                parameters=[],
                errors=_read_errors(_BAD_ID, not_found=_TARGET_404_READ),
            ),
            "delete": _write(
                "delete_target",
                "Delete a target (`DeleteTarget`)",
                "targets",
                "TargetResource",
                "The deleted target.",
                body=None,
                errors=_write_errors(_BAD_ID, not_found=_TARGET_404_WRITE, body=False),
            ),
        },
        f"{outdial}/available": {
            "parameters": outdial_id,
            "get": {
                **_read(
                    "available_targets",
                    "List the targets available for dialing, without claiming any",
                    "targets",
                    "AvailableTargets",
                    "The available targets, as `ClaimNextTarget` would pick them.",
                    parameters=[*(f"MaxTryCount{i}" for i in range(5)), "Limit"],
                    errors=_read_errors(_BAD_ID, _BAD_QUERY, not_found=_OUTDIAL_404_READ),
                ),
                "description": (
                    "Idle, not deleted targets with a present destination whose try count is "
                    "below its `max_try_count_i` (a missing `max_try_count_i` is 0: that "
                    "destination is never tried), least recently updated first. A deleted "
                    "outdial has none."
                ),
            },
        },
        **_operations_paths(),
    }


def _operations_paths() -> dict[str, Any]:
    def open_get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "tags": ["operations"],
                "security": [],
                "responses": responses,
            }
        }

    progress_parameters = [
        {
            "name": f"max_try_count_{i}",
            "in": "query",
            "required": False,
            "description": f"Tries of `destination_{i}` a dialer allows (default 3).",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1, "default": 3},
        }
        for i in range(5)
    ]
    return {
        "/": open_get(
            "page",
            "The campaign-progress page; open it as `/?token=…`",
            {
                "200": {
                    "description": "An HTML page that polls `/v1.0/progress` with its token.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        ),
        f"{BASE}/progress": {
            "get": {
                **_read(
                    "progress",
                    "Progress of the customer's newest outdials, for the progress page",
                    "operations",
                    "Progress",
                    "Targets by state and tries per destination, per outdial.",
                    parameters=[],
                    errors=_read_errors(_BAD_QUERY, not_found=None),
                ),
                "parameters": [*progress_parameters, _ref("parameters", "MinPosition")],
            }
        },
        "/healthz": open_get(
            "healthz", "Liveness: the process is alive", {"200": _json("Health", "Alive.")}
        ),
        "/readyz": open_get(
            "readyz",
            "Readiness: broker and store reachable, projection running",
            {
                "200": _json("Readiness", "Ready."),
                "503": _json("Readiness", "Not ready; `problems` says why."),
            },
        ),
        "/metrics": open_get(
            "metrics",
            "Prometheus metrics",
            {
                "200": {
                    "description": "The Prometheus text exposition format.",
                    "content": {TEXT: {"schema": {"type": "string"}}},
                }
            },
        ),
        "/openapi.json": open_get(
            "openapi",
            "This document",
            {
                "200": {
                    "description": "The OpenAPI 3.1 document of the service.",
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
        ),
    }


def _version() -> str:
    try:
        return importlib.metadata.version("outdial")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of every route; built once, do not mutate it."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "outdial",
            "version": _version(),
            "description": (
                "Outbound-dialing lists (outdials) and their targets. Writes are commands "
                "over the bus and answer with `X-Outdial-Position`; reads come from the "
                "read model and can wait for a position with `X-Outdial-Min-Position`."
            ),
        },
        "tags": [
            {"name": "outdials", "description": "Outbound-dialing lists."},
            {"name": "targets", "description": "The targets of an outdial."},
            {"name": "operations", "description": "Health, metrics and this document."},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "parameters": _parameters(),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
