"""docs/asyncapi.yaml: valid AsyncAPI 3.0, built from the code's models, and up to date."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services import docs
from services.command.outbox import ROUTING_KEYS
from services.gateway.operations import OPERATIONS
from shared import asyncapi, shapes
from shared.bus import EVENT_TYPES
from shared.commands import COMMAND_TYPES
from shared.errors import ErrorCode
from shared.resources import CustomerOutdial, CustomerTarget
from tests import go_decoding

SCHEMA = Path(__file__).parents[1] / "schemas" / "asyncapi-3.0.0.json"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.document()


def test_the_checked_in_documents_are_the_generated_ones() -> None:
    for path, text in docs.generated().items():
        assert path.read_text() == text, f"{path} is stale: run `python -m services.docs --write`"


def test_validates_against_the_asyncapi_3_schema(doc: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    assert [e.message for e in validator.iter_errors(doc)] == []
    # The schema bites: an operation without its action is not AsyncAPI.
    broken = copy.deepcopy(doc)
    del broken["operations"]["receiveCommand"]["action"]
    assert list(validator.iter_errors(broken))


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_every_command_event_and_reply_is_there(doc: dict[str, Any]) -> None:
    channels = doc["channels"]
    assert list(channels["commands"]["messages"]) == list(COMMAND_TYPES)
    assert list(channels["events"]["messages"]) == list(EVENT_TYPES)
    assert set(ROUTING_KEYS.values()) == set(EVENT_TYPES)
    assert "ErrorReply" in channels["replies"]["messages"]
    schemas = doc["components"]["schemas"]
    # A command's payload is its pydantic model's schema: the strict fields are there.
    add_target = schemas["AddTarget"]
    assert {"customer_id", "outdial_id", "name", "destination_0"} <= set(add_target["properties"])
    assert schemas["AddTargets"]["properties"]["targets"]["maxItems"] == 1000


def test_the_platforms_side_is_there(doc: dict[str, Any]) -> None:
    channels = doc["channels"]
    requests = channels["platformRequests"]
    assert requests["address"] == "bin-manager.outdial-manager.request"
    assert requests["bindings"]["amqp"]["queue"]["durable"] is True
    events = channels["platformEvents"]
    assert events["address"] == "bin-manager.outdial-manager.event"
    assert events["bindings"]["amqp"]["exchange"] == {
        "name": "bin-manager.outdial-manager.event",
        "type": "fanout",
        "durable": True,
    }
    assert list(events["messages"]) == [
        "platform_outdial_created",
        "platform_outdial_updated",
        "platform_outdial_deleted",
    ]
    assert channels["webhooks"]["address"] == "bin-manager.webhook-manager.request"
    assert set(channels["platformReplies"]["messages"]) == {
        "PlatformReply",
        "PlatformErrorReply",
        "PlatformNoRoute",
    }
    schemas = doc["components"]["schemas"]
    assert list(schemas["PlatformOutdial"]["properties"]) == go_decoding.OUTDIAL_KEYS
    assert "customer_id" not in schemas["PlatformTarget"]["properties"]
    assert schemas["PlatformError"]["properties"]["status"]["$ref"].endswith("/PlatformStatus")
    event = schemas["PlatformEvent_outdial_created"]["properties"]
    assert event["data"] == {"$ref": "#/components/schemas/PlatformOutdial"}


def test_the_checked_in_document_lists_every_route_of_the_envelope() -> None:
    checked_in = yaml.safe_load((docs.DOCS / "asyncapi.yaml").read_text())
    text = checked_in["components"]["messages"]["PlatformRequest"]["description"]
    for op in OPERATIONS:
        if op.envelope is not None:
            assert f"{op.envelope.method} {op.envelope.path}" in text, op.name


def test_docs_envelope_md_names_every_route_and_reason() -> None:
    text = (docs.DOCS / "envelope.md").read_text()
    for op in OPERATIONS:
        if op.envelope is not None:
            assert f"`{op.envelope.method} {op.envelope.path}" in text, op.name
    for code in ErrorCode:
        assert f"`{code.reason}`" in text, code


def test_resources_name_the_rendered_fields_in_order() -> None:
    now = datetime.now(UTC)
    outdial = shapes.outdial(
        _Row(
            id=uuid.uuid4(),
            customer_id=uuid.uuid4(),
            campaign_id=uuid.uuid4(),
            name="n",
            detail="d",
            data="x",
            tm_create=now,
            tm_update=None,
            tm_delete=None,
        ),
        with_customer=True,
    )
    target = shapes.target(
        _Row(
            id=uuid.uuid4(),
            customer_id=uuid.uuid4(),
            outdial_id=uuid.uuid4(),
            name="n",
            detail="d",
            data="x",
            status="idle",
            destinations=[{"type": "tel", "target": "+15559876543"}, None, None, None, None],
            try_counts=[0, 0, 0, 0, 0],
            tm_create=now,
            tm_update=None,
            tm_delete=None,
        ),
        with_customer=True,
    )
    assert list(CustomerOutdial.model_fields) == list(outdial)
    assert list(CustomerTarget.model_fields) == list(target)
    # And they read what is rendered.
    assert CustomerOutdial.model_validate(outdial).name == "n"
    assert CustomerTarget.model_validate(target).destination_0 is not None


class _Row:
    def __init__(self, **fields: Any):
        self.__dict__.update(fields)


def test_the_document_is_yaml_of_json_types() -> None:
    assert yaml.safe_load(asyncapi.render()) == json.loads(json.dumps(asyncapi.document()))
    routes = [("GET /v1/outdials", "a list")]
    rendered = yaml.safe_load(asyncapi.render(routes))
    assert rendered == json.loads(json.dumps(asyncapi.document(routes)))
