"""The OpenAPI 3.1 document of the HTTP API (CONTRACT 5), served at `/openapi.json`.

The document is built, not written: its paths are the table of operations
(`services.gateway.operations`), each with the HTTP route it has there; request
bodies are the JSON schemas of the very pydantic command models the service
parses (`shared.commands`), minus the fields the HTTP layer fills in itself
(`type`, `customer_id`, and the ids of the path); answers are the models of
`shared.resources`; each error answer lists the codes of `shared.errors` the
operation and the HTTP door may answer with that status; limits (body size,
page size, waiting times) are the constants of `services.gateway`. So the
document cannot drift from the code: change a model or the table and the
document follows. Unit tests hold the models to the rendered shapes and to
CONTRACT 1's field order.

pydantic puts a model's nested schemas under `$defs`; they are hoisted into
`components/schemas`, and refs point there (`ref_template`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections import defaultdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.gateway import progress
from services.gateway.http import (
    BASE,
    BODY_TIMEOUT_SECONDS,
    MAX_BODY,
    MAX_PAGE_SIZE,
    MAX_WAIT_SECONDS,
)
from services.gateway.operations import (
    BUS_TIMEOUT_SECONDS,
    FILLED_IN,
    OPERATIONS,
    PAGE_TOKEN_PATTERN,
    Operation,
    Param,
)
from shared.addresses import (
    E164,
    PHONE_ADDRESS_TYPES,
    SIP,
    TEXT_ADDRESS_TYPES,
    UUID_ADDRESS_TYPES,
    UUID_TEXT,
)
from shared.bus import JSON
from shared.errors import ErrorCode
from shared.resources import ErrorBody, OutdialResource

REF_TEMPLATE = "#/components/schemas/{model}"

TEXT = "text/plain"

# ---- response shapes (documentation only) ------------------------------------
# The resources and their lists are shared.resources' (the typed client reads them too).


class _Shape(BaseModel):
    model_config = ConfigDict(frozen=True)


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
    lag_events: int = Field(
        ge=0,
        description="`head - position`: events the read model does not hold yet "
        "(0, but while a read model of an earlier version is rebuilt at start).",
    )
    commands_handled: int | None = Field(
        description="Commands this process has handled (null: none, or no consumer here)."
    )
    max_try_counts: list[int] = Field(min_length=5, max_length=5)
    outdials: list[OutdialProgress]


# Answers of the HTTP API besides the operations' own (`Operation.answers`).
_OTHER_ANSWERS: tuple[type[BaseModel], ...] = (Error, Health, Readiness, Progress)


# ---- request bodies: the command models, minus what the HTTP layer fills in ----

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
_BODY_NOTES = {
    "AddTarget": "At least one destination must be set; gaps are allowed "
    "(`destination_0` null, `destination_2` set).",
}


def _anchored(pattern: re.Pattern[str]) -> str:
    # The service fullmatches; a JSON Schema pattern matches anywhere unless anchored.
    return f"^(?:{pattern.pattern})$"


# `Address._target_fits_type`: the form of `target` depends on `type`, with the
# very regexes the service checks. Some rules no schema can say are left to the
# description (a possible phone number, e-mail-validator's verdict, a port's range).
_TARGET_BY_TYPE: dict[str, Any] = {
    "oneOf": [
        {
            "properties": {
                "type": {"enum": sorted(PHONE_ADDRESS_TYPES)},
                "target": {"pattern": _anchored(E164)},
            }
        },
        {"properties": {"type": {"const": "sip"}, "target": {"pattern": _anchored(SIP)}}},
        {"properties": {"type": {"const": "email"}, "target": {"format": "idn-email"}}},
        {
            "properties": {
                "type": {"enum": sorted(UUID_ADDRESS_TYPES)},
                "target": {"pattern": _anchored(UUID_TEXT)},
            }
        },
        # What the platform's services dial for these is theirs to check: any text.
        {"properties": {"type": {"enum": sorted(TEXT_ADDRESS_TYPES)}}},
    ],
    "description": (
        "One destination of a target. Beyond the form of `target` for its `type` given "
        "here, a `tel` or `whatsapp` target must be a number the phonenumbers library "
        "calls possible, an `email` target must pass email-validator (no special-use "
        "domains such as `.test`), and a `sip` port must be 1 to 65535; otherwise the "
        "command is answered 400 `invalid_command` at `destination_N.target`."
    ),
}
_SCHEMA_RULES: dict[str, dict[str, Any]] = {
    "AddTargetBody": _AT_LEAST_ONE_DESTINATION,
    "Address": _TARGET_BY_TYPE,
}


def _http_operations() -> list[tuple[Operation, str, str]]:
    """(operation, its documented path, its method) of every operation the HTTP API serves."""
    return [
        (op, BASE + op.http.path, op.http.method.lower())
        for op in OPERATIONS
        if op.http is not None
    ]


def _body_name(op: Operation) -> str | None:
    if op.command is None or not op.body_fields:
        return None
    return f"{op.command.__name__}Body"


def _hoist(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    """Add `schema` and its `$defs` to `schemas`; a name must not mean two schemas."""
    for def_name, definition in schema.pop("$defs", {}).items():
        _add(schemas, def_name, definition)
    _add(schemas, name, schema)


def _add(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if schemas.setdefault(name, schema) != schema:
        raise ValueError(f"two different schemas are both named {name!r}")


def _request_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    properties: dict[str, Any] = schema["properties"]
    for field_name in FILLED_IN & properties.keys():
        del properties[field_name]
    required = [f for f in schema.get("required", []) if f not in FILLED_IN]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    schema["title"] = name
    return schema


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    answers = {op.answers for op, _, _ in _http_operations()}
    for model in (*sorted(answers, key=lambda m: m.__name__), *_OTHER_ANSWERS):
        _hoist(schemas, model.__name__, model.model_json_schema(ref_template=REF_TEMPLATE))
    for op, _, _ in _http_operations():
        name = _body_name(op)
        if name is None or op.command is None:
            continue
        schema = _request_schema(op.command, name)
        note = _BODY_NOTES.get(op.command.__name__)
        schema["description"] = f"The fields of the `{op.command.__name__}` command." + (
            f" {note}" if note else ""
        )
        _hoist(schemas, name, schema)
    for name, rule in _SCHEMA_RULES.items():
        schemas[name] = {**schemas[name], **rule}
    return dict(sorted(schemas.items()))


# ---- parameters, headers, security ------------------------------------------


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> dict[str, str]:
    return _ref("schemas", name)


def _param_name(param: Param) -> str:
    """`max_try_count_0` as the component `MaxTryCount0`."""
    return "".join(part.capitalize() for part in param.name.split("_"))


def _query_parameter(param: Param) -> dict[str, Any]:
    return {
        "name": param.name,
        "in": "query",
        "required": False,
        "description": f"{param.description} Otherwise: 400 `{param.code}`.",
        "schema": {
            "type": "integer",
            "minimum": param.low,
            "maximum": param.high,
            "default": param.default,
        },
    }


def _parameters() -> dict[str, Any]:
    uuid_schema = {"type": "string", "format": "uuid"}
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
                "page. VoIPbin's tokens are taken too: the last item's `tm_create` as "
                "`2006-01-02T15:04:05.000000Z` (CONTRACT 5); the next page holds what "
                "was created strictly before it. Anything else: 400 `invalid_page_token`."
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
    }
    for op, _, _ in _http_operations():
        for param in op.params:
            parameters[_param_name(param)] = _query_parameter(param)
    return parameters


# Every answer to a write carries it (CONTRACT 5), refusals of the HTTP layer too
# (`services.gateway.http.errors`): a refused write stored nothing, so the read
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


# ---- responses: the codes each may answer, by status ------------------------------

_TRY_COUNT = "`max_try_count_{}` is not an integer from 0 to its maximum"
# Why each code is answered, as the HTTP API's client sees it; a pair: (for a read,
# for a write).
_WHY: dict[ErrorCode, str | tuple[str, str]] = {
    ErrorCode.INVALID_ID: "a path id is not a UUID",
    ErrorCode.INVALID_JSON: "the body is not a JSON object",
    ErrorCode.INVALID_COMMAND: (
        "the command is invalid, with `details`: one `{loc, msg}` per invalid field"
    ),
    ErrorCode.INVALID_HEADER: "`X-Outdial-Min-Position` is not an integer",
    ErrorCode.INVALID_PAGE_SIZE: "`page_size` is not a positive integer",
    ErrorCode.INVALID_PAGE_TOKEN: "`page_token` is not a `next_page_token`",
    ErrorCode.INVALID_LIMIT: "`limit` is not an integer in its range",
    **{ErrorCode(f"invalid_max_try_count_{i}"): _TRY_COUNT.format(i) for i in range(5)},
    ErrorCode.UNAUTHORIZED: "no token, or a malformed, expired or wrongly signed one",
    ErrorCode.OUTDIAL_NOT_FOUND: (
        "no such outdial for this customer: unknown, or another customer's "
        "(a deleted outdial stays readable by id)",
        "no such outdial for this customer: unknown, deleted, or another customer's",
    ),
    ErrorCode.TARGET_NOT_FOUND: (
        "no such target of this outdial for this customer: unknown, or another "
        "customer's (a deleted target stays readable by id)",
        "no such target of this outdial for this customer: unknown, deleted, or another customer's",
    ),
    ErrorCode.OUTDIAL_EXISTS: "an outdial with this `id` already exists",
    ErrorCode.TARGET_EXISTS: "a target with this `id` already exists",
    ErrorCode.BODY_TIMEOUT: f"the body did not arrive within {BODY_TIMEOUT_SECONDS:g} s "
    "of the head",
    ErrorCode.BODY_TOO_LARGE: f"the body is over {MAX_BODY} bytes",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: f"the token is in the cookie and the body is not declared "
    f"`{JSON}` (what another site's page could make a browser send)",
    ErrorCode.INTERNAL_ERROR: "an internal failure; it is logged",
    ErrorCode.POSITION_NOT_REACHED: "the read model did not reach `X-Outdial-Min-Position` "
    f"within {MAX_WAIT_SECONDS:g} s",
    ErrorCode.COMMAND_TIMEOUT: f"the command service did not answer within "
    f"{BUS_TIMEOUT_SECONDS:g} s; the command may still take effect: re-send it with "
    "the same `Idempotency-Key`",
}


def http_errors(op: Operation) -> list[ErrorCode]:
    """Every code the HTTP API may answer a call of `op` with: the operation's own,
    and the door's (token, ids, parameters, paging, body, waiting)."""
    assert op.http is not None
    codes = [ErrorCode.UNAUTHORIZED, ErrorCode.INTERNAL_ERROR]
    if "{" in op.http.path:
        codes.append(ErrorCode.INVALID_ID)
    codes += [param.code for param in op.params]
    if op.paged:
        codes += [ErrorCode.INVALID_PAGE_SIZE, ErrorCode.INVALID_PAGE_TOKEN]
    if op.body_fields:
        codes += [
            ErrorCode.INVALID_JSON,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            ErrorCode.BODY_TOO_LARGE,
            ErrorCode.BODY_TIMEOUT,
        ]
    if op.write:
        codes.append(ErrorCode.COMMAND_TIMEOUT)
    else:
        codes += [ErrorCode.INVALID_HEADER, ErrorCode.POSITION_NOT_REACHED]
    return [*codes, *op.errors]


def _why(code: ErrorCode, write: bool) -> str:
    why = _WHY[code]
    if isinstance(why, tuple):
        why = why[write]
    return f"{why} (`{code}`)"


def _sentence(causes: list[str]) -> str:
    """One sentence: "A, B or C." """
    listed = causes[0] if len(causes) == 1 else f"{', '.join(causes[:-1])} or {causes[-1]}"
    return f"{listed[0].upper()}{listed[1:]}."


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _schema(schema_name)}}}


def _responses(
    ok_schema: str, ok_description: str, codes: list[ErrorCode], *, write: bool
) -> dict[str, Any]:
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in codes:
        why = _why(code, write)
        if why not in by_status[code.status]:
            by_status[code.status].append(why)
    responses: dict[str, Any] = {"200": _json(ok_schema, ok_description)}
    for status, causes in sorted(by_status.items()):
        responses[str(status)] = _json("Error", _sentence(causes))
    if write:
        for response in responses.values():
            response["headers"] = {"X-Outdial-Position": POSITION_HEADER}
    return responses


def _operation(op: Operation) -> dict[str, Any]:
    parameters = [_ref("parameters", _param_name(p)) for p in op.params]
    if op.paged:
        parameters += [_ref("parameters", "PageSize"), _ref("parameters", "PageToken")]
    parameters.append(_ref("parameters", "IdempotencyKey" if op.write else "MinPosition"))
    description = op.description
    if op.write:
        sent = "Sent over the bus as a command (CONTRACT 3); answers with the command's reply."
        description = f"{sent} {description}".strip()
    operation: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        **({"description": description} if description else {}),
        "tags": [op.tag],
        "security": SECURITY,
        "parameters": parameters,
    }
    body = _body_name(op)
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": _schema(body)}}}
    operation["responses"] = _responses(op.answers.__name__, op.ok, http_errors(op), write=op.write)
    return operation


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for op, path, method in _http_operations():
        item = paths.setdefault(path, {})
        ids = [
            _ref("parameters", name)
            for name, placeholder in (("OutdialId", "{id}"), ("TargetId", "{target_id}"))
            if placeholder in path
        ]
        if ids:
            item["parameters"] = ids
        item[method] = _operation(op)
    return {**paths, **_operations_paths()}


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

    progress_codes = [
        ErrorCode.UNAUTHORIZED,
        ErrorCode.INTERNAL_ERROR,
        *(param.code for param in progress.MAX_TRIES),
        ErrorCode.INVALID_HEADER,
        ErrorCode.POSITION_NOT_REACHED,
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
                "operationId": "progress",
                "summary": "Progress of the customer's newest outdials, for the progress page",
                "tags": ["operations"],
                "security": SECURITY,
                "parameters": [
                    *(_query_parameter(param) for param in progress.MAX_TRIES),
                    _ref("parameters", "MinPosition"),
                ],
                "responses": _responses(
                    "Progress",
                    "Targets by state and tries per destination, per outdial.",
                    progress_codes,
                    write=False,
                ),
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
                "read model and can wait for a position with `X-Outdial-Min-Position`. "
                "The same operations are served to the platform's services over "
                "RabbitMQ, in VoIPbin's request envelope and models (CONTRACT 8): see "
                "`docs/envelope.md` and `docs/asyncapi.yaml`."
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
