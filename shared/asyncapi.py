"""The AsyncAPI 3.0 document of the bus (CONTRACT 3 and 4), built from the code's models.

Every command's payload is the JSON schema of the pydantic model the service
parses (`shared.commands`); every reply's and event's `data` is a model of
`shared.resources`. So the document follows the models; `docs/asyncapi.yaml` is
this document written out, and a test fails when the two differ. Regenerate:

    python -m services.docs --write
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any, get_args

from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import models_json_schema

from shared import commands, resources
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


def document() -> dict[str, Any]:
    command_models: list[type[BaseModel]] = list(get_args(get_args(commands.Command)[0]))
    reply_models = {name: _reply_model(data) for name, data in REPLY_DATA.items()}
    event_models = {kind: _event_model(kind, data) for kind, data in EVENT_DATA.items()}
    schemas = _schemas(
        [*command_models, *set(reply_models.values()), ErrorReply, *event_models.values()]
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
                "events it publishes. Built from the service's own pydantic models "
                "(`python -m services.docs --write`)."
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
        },
        "components": {"schemas": schemas, "messages": messages},
    }


def _version() -> str:
    try:
        return importlib.metadata.version("outdial")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def render() -> str:
    import yaml  # only to write the document: not needed to run the service

    return str(yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=100))
