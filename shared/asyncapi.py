"""The AsyncAPI 3.0 document of the bus, built from the code's models: the commands,
their replies and `outdial.events` (CONTRACT 3 and 4); and the platform's side
(CONTRACT 8): VoIPbin's request envelope on `bin-manager.outdial-manager.request`
and its replies, the outdial events on VoIPbin's fanout exchange, and the
webhooks handed to webhook-manager.

Every command's payload is the JSON schema of the pydantic model the service
parses (`shared.commands`); every reply's and event's `data` is a model of
`shared.resources`, in the tutorial's shapes or VoIPbin's. So the document
follows the models; `docs/asyncapi.yaml` is this document written out (with the
envelope's routes of the table of operations, `services.docs`), and a test fails
when the two differ. Regenerate:

    python -m services.docs --write
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Sequence
from typing import Any, Literal, get_args
from uuid import UUID

from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import models_json_schema

from shared import commands, platform, resources
from shared.bus import COMMAND_QUEUE, DEAD_LETTER_QUEUE, EVENT_EXCHANGE, EVENT_TYPES, JSON
from shared.config import DEFAULT_AMQP_URL

REF = "#/components/schemas/{model}"

# The reply `data` of each command.
REPLY_DATA: dict[str, type[BaseModel]] = {
    "CreateOutdial": resources.CustomerOutdial,
    "UpdateOutdial": resources.CustomerOutdial,
    "UpdateOutdialCampaign": resources.CustomerOutdial,
    "UpdateOutdialData": resources.CustomerOutdial,
    "DeleteOutdial": resources.CustomerOutdial,
    "AddTarget": resources.CustomerTarget,
    "AddTargets": resources.AddedTargets,
    "DeleteTarget": resources.CustomerTarget,
    "ClaimNextTarget": resources.ClaimedTarget,
    "MarkTargetProgressing": resources.CustomerTarget,
    "UpdateTargetStatus": resources.CustomerTarget,
}
EVENT_DATA = {
    kind: resources.CustomerOutdial if kind.startswith("outdial_") else resources.CustomerTarget
    for kind in EVENT_TYPES
}


class ErrorReply(BaseModel):
    """A refused or failed command: 400 invalid, 404 not found, 409 conflict, 500 internal."""

    status_code: int = Field(json_schema_extra={"enum": [400, 404, 409, 500]})
    error: resources.ErrorBody


@functools.cache  # one model per kind of data, however many commands answer it
def _reply_model(data: type[BaseModel]) -> type[BaseModel]:
    return create_model(
        f"{data.__name__}Reply",
        __doc__=f"A command done: its `{data.__name__}` and the store's position after it.",
        status_code=(int, Field(json_schema_extra={"const": 200})),
        data=(data, ...),
        position=(int, Field(ge=0, description="Reads that reach it reflect the command.")),
    )


def _event_model(kind: str, data: type[BaseModel]) -> type[BaseModel]:
    return create_model(
        f"Event_{kind}",
        __doc__=f"`{kind}`: the resource as it is after the event.",
        type=(str, Field(json_schema_extra={"const": kind})),
        publisher=(str, Field(json_schema_extra={"const": "outdial-manager"})),
        data_type=(str, Field(json_schema_extra={"const": JSON})),
        data=(data, ...),
        position=(int, Field(ge=1, description="The event's position in the store.")),
    )


# ---- the platform's side (CONTRACT 8) ------------------------------------------------


class PlatformRequest(BaseModel):
    """A request envelope (VoIPbin's `sock.Request`), as the platform's callers publish
    it: to the default exchange, `content_type` text/plain, a private `reply_to`
    queue, no `correlation_id` and no `message_id`."""

    uri: str = Field(
        description="A route of VoIPbin's outdial-manager, with its query string.",
        examples=["/v1/outdials?page_token=2026-11-27T11%3A08%3A56.914735Z&page_size=10"],
    )
    method: Literal["POST", "GET", "PUT", "DELETE"]
    publisher: str = Field(examples=["api-manager", "campaign-manager"])
    data_type: str = Field(examples=[JSON])
    data: Any = Field(
        None,
        description="An embedded JSON value: a write's fields, or a list's filters. "
        "Absent for most reads.",
    )
    request_id: str | None = None


PlatformData = (
    resources.PlatformOutdial
    | resources.PlatformTarget
    | list[resources.PlatformOutdial]
    | list[resources.PlatformTarget]
)


class PlatformReply(BaseModel):
    """A request answered (VoIPbin's `sock.Response`): the outdial or target in
    VoIPbin's model, or a list of them (`[]` when empty), newest first."""

    status_code: int = Field(json_schema_extra={"const": 200})
    data_type: str = Field(json_schema_extra={"const": JSON})
    data: PlatformData


class PlatformErrorReply(BaseModel):
    """A request refused: VoIPbin's typed error; `status_code` is VoIPbin's
    `HTTPStatusFor` of `data.status`."""

    status_code: int = Field(json_schema_extra={"enum": [400, 404, 409, 500, 503]})
    data_type: str = Field(json_schema_extra={"const": platform.ERROR_DATA_TYPE})
    data: resources.PlatformError


class PlatformNoRoute(BaseModel):
    """No route takes the request's method and `uri`, as VoIPbin answers it."""

    status_code: int = Field(json_schema_extra={"const": 404})
    data_type: str = Field(json_schema_extra={"const": ""})


def _platform_event_model(kind: str) -> type[BaseModel]:
    return create_model(
        f"PlatformEvent_{kind}",
        __doc__=f"`{kind}` as VoIPbin publishes it (`sock.Event`): the outdial after it.",
        type=(str, Field(json_schema_extra={"const": kind})),
        publisher=(str, Field(json_schema_extra={"const": platform.SERVICE_NAME})),
        data_type=(str, Field(json_schema_extra={"const": JSON})),
        data=(resources.PlatformOutdial, ...),
    )


class WebhookEvent(BaseModel):
    """The event a customer's webhook carries (`webhook.Data`)."""

    type: str = Field(json_schema_extra={"enum": list(platform.OUTDIAL_EVENTS)})
    data: resources.PlatformOutdial


class WebhookData(BaseModel):
    """What webhook-manager is asked to send (`V1DataWebhooksPost`)."""

    customer_id: UUID
    data_type: str = Field(json_schema_extra={"const": JSON})
    data: WebhookEvent


class WebhookRequest(BaseModel):
    """A customer's webhook of an outdial event, handed to webhook-manager as VoIPbin's
    `WebhookV1WebhookSend` does (a request envelope, here without `reply_to`: fire
    and forget). None for the nil customer, as VoIPbin."""

    uri: str = Field(json_schema_extra={"const": platform.WEBHOOK_URI})
    method: str = Field(json_schema_extra={"const": "POST"})
    publisher: str = Field(json_schema_extra={"const": platform.SERVICE_NAME})
    data_type: str = Field(json_schema_extra={"const": JSON})
    data: WebhookData


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    """JSON schemas of `models` and of every model they use, all under components."""
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    return dict(sorted(defs.get("$defs", {}).items()))


def _message(name: str, payload: str, summary: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": JSON,
        "payload": {"$ref": REF.format(model=payload)},
        **extra,
    }


def document(envelope_routes: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """`envelope_routes`: the platform's envelope's routes, each with what it does
    (the table of operations has them), for the request's description."""
    command_models: list[type[BaseModel]] = list(get_args(get_args(commands.Command)[0]))
    reply_models = {name: _reply_model(data) for name, data in REPLY_DATA.items()}
    event_models = {kind: _event_model(kind, data) for kind, data in EVENT_DATA.items()}
    platform_events = {kind: _platform_event_model(kind) for kind in platform.OUTDIAL_EVENTS}
    platform_replies: list[type[BaseModel]] = [PlatformReply, PlatformErrorReply, PlatformNoRoute]
    schemas = _schemas(
        [
            *command_models,
            *set(reply_models.values()),
            ErrorReply,
            *event_models.values(),
            PlatformRequest,
            *platform_replies,
            *platform_events.values(),
            WebhookRequest,
        ]
    )
    correlated = {
        "correlationId": {
            "description": "The reply carries the command's `correlation_id`.",
            "location": "$message.header#/correlation_id",
        }
    }
    command_properties = {
        "headers": {
            "type": "object",
            "description": "AMQP properties of a command.",
            "properties": {
                "message_id": {
                    "type": "string",
                    "description": "The idempotency key, per customer: a command sent "
                    "again under it takes effect at most once and gets the first reply.",
                },
                "reply_to": {"type": "string", "description": "Where the one reply goes."},
                "correlation_id": {"type": "string"},
                "content_type": {"const": JSON},
                "delivery_mode": {"const": 2, "description": "persistent"},
            },
        }
    }
    messages: dict[str, Any] = {}
    for model in command_models:
        name = model.__name__
        messages[name] = _message(
            name,
            name,
            f"The `{name}` command.",
            description=f"Answered by `{reply_models[name].__name__}` or `ErrorReply`.",
            **correlated,
            **command_properties,
        )
    for name, model in sorted({m.__name__: m for m in reply_models.values()}.items()):  # once each
        messages[name] = _message(name, name, (model.__doc__ or "").strip(), **correlated)
    messages["ErrorReply"] = _message(
        "ErrorReply", "ErrorReply", (ErrorReply.__doc__ or "").strip(), **correlated
    )
    for kind, model in event_models.items():
        messages[kind] = _message(
            kind,
            model.__name__,
            (model.__doc__ or "").strip(),
            headers={
                "type": "object",
                "properties": {
                    "message_id": {
                        "type": "string",
                        "description": "The same on every redelivery of this event: "
                        "drop duplicates by it.",
                    },
                    "type": {"const": kind},
                },
            },
        )

    routes = "".join(f"\n- `{route}`: {summary}" for route, summary in envelope_routes)
    messages["PlatformRequest"] = _message(
        "PlatformRequest",
        "PlatformRequest",
        "A request of the platform's services, as VoIPbin's outdial-manager takes it.",
        description=(PlatformRequest.__doc__ or "").strip()
        + " The body is JSON whatever its `content_type` says."
        + (f"\n\nRoutes (`docs/envelope.md`):{routes}" if routes else ""),
    )
    for model in platform_replies:
        messages[model.__name__] = _message(
            model.__name__, model.__name__, (model.__doc__ or "").strip()
        )
    for kind, model in platform_events.items():
        messages[f"platform_{kind}"] = _message(
            f"platform_{kind}", model.__name__, (model.__doc__ or "").strip()
        )
    messages["WebhookRequest"] = _message(
        "WebhookRequest", "WebhookRequest", (WebhookRequest.__doc__ or "").strip()
    )
    platform_reply_names = [m.__name__ for m in platform_replies]
    platform_event_names = [f"platform_{kind}" for kind in platform.OUTDIAL_EVENTS]

    def refs(names: list[str]) -> dict[str, Any]:
        return {n: {"$ref": f"#/components/messages/{n}"} for n in names}

    command_names = [m.__name__ for m in command_models]
    reply_names = [*sorted({m.__name__ for m in reply_models.values()}), "ErrorReply"]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "outdial service: the bus",
            "version": _version(),
            "description": (
                "Commands to the outdial service over RabbitMQ, their replies, and the "
                "events it publishes; and, for the platform's services (CONTRACT 8), "
                "VoIPbin's request envelope, its outdial events and the customers' "
                "webhooks, in VoIPbin's models (`docs/envelope.md`). Built from the "
                "service's own pydantic models (`python -m services.docs --write`)."
            ),
        },
        "defaultContentType": JSON,
        "servers": {
            "rabbitmq": {
                "host": DEFAULT_AMQP_URL.split("@", 1)[1].rstrip("/"),
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "`OUTDIAL_AMQP_URL` (CONTRACT 7).",
            }
        },
        "channels": {
            "commands": {
                "address": COMMAND_QUEUE,
                "description": "Commands, published to the default exchange with the "
                "queue's name as routing key. Acknowledged once stored or answered invalid.",
                "messages": refs(command_names),
                "bindings": {
                    "amqp": {
                        "is": "queue",
                        "queue": {"name": COMMAND_QUEUE, "durable": True, "exclusive": False},
                    }
                },
            },
            "replies": {
                "address": None,
                "description": "The sender's own queue, named in the command's `reply_to`.",
                "messages": refs(reply_names),
            },
            "deadLetters": {
                "address": DEAD_LETTER_QUEUE,
                "description": "Messages that could not be parsed at all, and commands "
                "that failed inside the service after their retries; the error is in "
                "the headers. `outdial dead-letters` lists and replays them.",
                "messages": refs(command_names),
                "bindings": {
                    "amqp": {
                        "is": "queue",
                        "queue": {"name": DEAD_LETTER_QUEUE, "durable": True, "exclusive": False},
                    }
                },
            },
            "events": {
                "address": EVENT_EXCHANGE,
                "description": "Every stored event, at least once, in store order per "
                "resource; the routing key is the event type.",
                "messages": refs(list(EVENT_TYPES)),
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": EVENT_EXCHANGE, "type": "topic", "durable": True},
                    }
                },
            },
            "platformRequests": {
                "address": platform.REQUEST_QUEUE,
                "description": "The platform's request envelope (CONTRACT 8), published to "
                "the default exchange with the queue's name as routing key; each request "
                "is answered once on its `reply_to` and settled once answered.",
                "messages": refs(["PlatformRequest"]),
                "bindings": {
                    "amqp": {
                        "is": "queue",
                        "queue": {
                            "name": platform.REQUEST_QUEUE,
                            "durable": True,
                            "exclusive": False,
                        },
                    }
                },
            },
            "platformReplies": {
                "address": None,
                "description": "The caller's private queue, named in the request's "
                "`reply_to`; the reply carries the request's `correlation_id` (none, "
                "from VoIPbin's callers).",
                "messages": refs(platform_reply_names),
            },
            "platformEvents": {
                "address": platform.EVENT_EXCHANGE,
                "description": "VoIPbin's outdial events, as its outdial-manager publishes "
                "them: a fanout exchange, routing key empty; bind a queue to it with the "
                'key `""`. Only the outdial\'s three (VoIPbin publishes none for '
                "targets); at least once, in store order, each with a `message_id` that "
                "is the same on every redelivery.",
                "messages": refs(platform_event_names),
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": platform.EVENT_EXCHANGE,
                            "type": "fanout",
                            "durable": True,
                        },
                    }
                },
            },
            "webhooks": {
                "address": platform.WEBHOOK_QUEUE,
                "description": "webhook-manager's request queue: a customer's webhook of "
                "each outdial event is handed to it (default exchange), fire and forget; "
                "the queue is webhook-manager's to declare.",
                "messages": refs(["WebhookRequest"]),
                "bindings": {
                    "amqp": {
                        "is": "queue",
                        "queue": {
                            "name": platform.WEBHOOK_QUEUE,
                            "durable": True,
                            "exclusive": False,
                        },
                    }
                },
            },
        },
        "operations": {
            "receiveCommand": {
                "action": "receive",
                "channel": {"$ref": "#/channels/commands"},
                "summary": "The service takes a command and answers on `reply_to`.",
                "messages": [{"$ref": f"#/channels/commands/messages/{n}"} for n in command_names],
                "reply": {
                    "address": {"location": "$message.header#/reply_to"},
                    "channel": {"$ref": "#/channels/replies"},
                    "messages": [{"$ref": f"#/channels/replies/messages/{n}"} for n in reply_names],
                },
            },
            "deadLetterCommand": {
                "action": "send",
                "channel": {"$ref": "#/channels/deadLetters"},
                "summary": "The service sets aside what it could not process.",
                "messages": [
                    {"$ref": f"#/channels/deadLetters/messages/{n}"} for n in command_names
                ],
            },
            "publishEvent": {
                "action": "send",
                "channel": {"$ref": "#/channels/events"},
                "summary": "The service publishes every stored event.",
                "messages": [{"$ref": f"#/channels/events/messages/{k}"} for k in EVENT_TYPES],
            },
            "receivePlatformRequest": {
                "action": "receive",
                "channel": {"$ref": "#/channels/platformRequests"},
                "summary": "The service answers a request of the platform's services on "
                "`reply_to`, as VoIPbin's outdial-manager does.",
                "messages": [{"$ref": "#/channels/platformRequests/messages/PlatformRequest"}],
                "reply": {
                    "address": {"location": "$message.header#/reply_to"},
                    "channel": {"$ref": "#/channels/platformReplies"},
                    "messages": [
                        {"$ref": f"#/channels/platformReplies/messages/{n}"}
                        for n in platform_reply_names
                    ],
                },
            },
            "publishPlatformEvent": {
                "action": "send",
                "channel": {"$ref": "#/channels/platformEvents"},
                "summary": "The service publishes each outdial event as VoIPbin does.",
                "messages": [
                    {"$ref": f"#/channels/platformEvents/messages/{n}"}
                    for n in platform_event_names
                ],
            },
            "sendWebhook": {
                "action": "send",
                "channel": {"$ref": "#/channels/webhooks"},
                "summary": "The service hands each outdial event's webhook to webhook-manager.",
                "messages": [{"$ref": "#/channels/webhooks/messages/WebhookRequest"}],
            },
        },
        "components": {"schemas": schemas, "messages": messages},
    }


def _version() -> str:
    try:
        return importlib.metadata.version("outdial")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def render(envelope_routes: Sequence[tuple[str, str]] = ()) -> str:
    import yaml  # only to write the document: not needed to run the service

    text = yaml.safe_dump(document(envelope_routes), sort_keys=False, allow_unicode=True, width=100)
    return str(text)
