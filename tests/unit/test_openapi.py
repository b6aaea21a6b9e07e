"""The OpenAPI document of `/openapi.json` against the routes and models it describes (no I/O)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import openapi_spec_validator
import orjson
import pytest

from services.gateway.http import (
    BASE,
    MAX_AVAILABLE,
    MAX_PAGE_SIZE,
    OPEN_PATHS,
    Services,
    make_api,
)
from services.gateway.openapi import Error, document, http_errors
from services.gateway.operations import OPERATIONS, Refused
from shared import shapes
from shared.commands import (
    AddTarget,
    CreateOutdial,
    InvalidCommand,
    UpdateOutdial,
    UpdateOutdialCampaign,
    UpdateOutdialData,
    parse_command,
)
from shared.errors import ErrorCode
from shared.resources import (
    TIMESTAMP_PATTERN,
    OutdialList,
    OutdialResource,
    TargetList,
    TargetResource,
)
from tests.expected import OUTDIAL_KEYS, TARGET_KEYS

# CONTRACT 1, field for field and in order.
CONTRACT_OUTDIAL_FIELDS = OUTDIAL_KEYS
CONTRACT_TARGET_FIELDS = TARGET_KEYS
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
SECURITY_ALTERNATIVES: list[dict[str, list[str]]] = [
    {"tokenQuery": []},
    {"tokenCookie": []},
    {"bearerAuth": []},
]
TEL = {"type": "tel", "target": "+15559876543"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def registered_routes() -> dict[tuple[str, str], str]:
    """(method, path) -> handler name of every route of the app (HEAD aside)."""
    # Routes never run here: stand-ins are enough to build the API.
    none = cast(Any, None)
    services = Services(queries=none, bus=none, positions=none, secret="unused")
    try:
        return {
            (method.lower(), path): getattr(handler, "__name__", "")
            for method, path, handler in make_api(services).router.routes()
        }
    finally:
        services.executor.shutdown()


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(doc, node["$ref"])
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def parameters_of(doc: dict[str, Any], path: str, method: str) -> dict[tuple[str, str], Any]:
    item = doc["paths"][path]
    found = [
        deref(doc, p) for p in [*item.get("parameters", []), *item[method].get("parameters", [])]
    ]
    return {(p["in"], p["name"]): p for p in found}


def request_schema(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    body = doc["paths"][path][method]["requestBody"]
    schema: dict[str, Any] = deref(doc, body["content"]["application/json"]["schema"])
    return schema


# ---- the document as a whole ------------------------------------------------------


def test_validates_against_the_openapi_meta_schema(doc: dict[str, Any]) -> None:
    openapi_spec_validator.validate(doc)


def test_is_an_openapi_3_1_document(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "outdial"
    assert isinstance(doc["info"]["version"], str) and doc["info"]["version"]
    assert set(doc["components"]) <= {
        "schemas",
        "responses",
        "parameters",
        "examples",
        "requestBodies",
        "headers",
        "securitySchemes",
        "links",
        "callbacks",
        "pathItems",
    }
    for name in doc["components"]["schemas"]:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name


def test_is_served_as_json_and_built_once(doc: dict[str, Any]) -> None:
    assert orjson.loads(orjson.dumps(doc)) == doc
    assert document() is doc


def test_every_ref_resolves_inside_the_document(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert found
    for ref in found:
        assert not ref.startswith("#/$defs"), ref
        resolve(doc, ref)
    assert "$defs" not in orjson.dumps(doc).decode()


def test_every_component_schema_is_used(doc: dict[str, Any]) -> None:
    used = {ref.rsplit("/", 1)[1] for ref in refs(doc) if ref.startswith("#/components/schemas/")}
    assert used == set(doc["components"]["schemas"])


def test_operations_are_well_formed(doc: dict[str, Any]) -> None:
    ids = []
    for path, method, operation in operations(doc):
        ids.append(operation["operationId"])
        assert operation["summary"]
        assert operation["responses"]["200"]
        for status, response in operation["responses"].items():
            assert re.fullmatch(r"[1-5]\d\d", status), (path, method, status)
            assert response["description"], (path, method, status)
            for content in response.get("content", {}).values():
                deref(doc, content["schema"])
        params = parameters_of(doc, path, method)
        for param in params.values():
            assert param["in"] in {"path", "query", "header", "cookie"}
            assert "schema" in param
        in_template = set(re.findall(r"{(\w+)}", path))
        in_params = {name for (where, name) in params if where == "path"}
        assert in_template == in_params, path
        for where, name in params:
            if where == "path":
                assert params[where, name]["required"] is True
    assert len(ids) == len(set(ids))


# ---- the document and the app ---------------------------------------------------


def test_every_registered_route_is_documented_and_nothing_else(doc: dict[str, Any]) -> None:
    routes = registered_routes()
    documented = {(method, path) for path, method, _ in operations(doc)}
    assert documented == set(routes)


def test_operation_ids_are_the_handlers_names(doc: dict[str, Any]) -> None:
    routes = registered_routes()
    for path, method, operation in operations(doc):
        assert operation["operationId"] == routes[method, path]


def test_every_operation_of_the_table_with_an_http_route_is_documented_there(
    doc: dict[str, Any],
) -> None:
    for op in OPERATIONS:
        if op.http is None:
            continue
        operation = doc["paths"][BASE + op.http.path][op.http.method.lower()]
        assert (operation["operationId"], operation["summary"]) == (op.name, op.summary)
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{op.answers.__name__}"}
        # Each code the route may answer is named under its status.
        for code in http_errors(op):
            assert f"`{code}`" in operation["responses"][str(code.status)]["description"], (
                op.name,
                code,
            )


def test_api_routes_need_one_of_three_tokens_and_operations_routes_none(
    doc: dict[str, Any],
) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["tokenQuery"] == {**schemes["tokenQuery"], "type": "apiKey", "in": "query"}
    assert schemes["tokenCookie"] == {**schemes["tokenCookie"], "type": "apiKey", "in": "cookie"}
    assert schemes["tokenQuery"]["name"] == schemes["tokenCookie"]["name"] == "token"
    assert schemes["bearerAuth"]["type"] == "http"
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    for path, _, operation in operations(doc):
        if path in OPEN_PATHS:
            assert operation["security"] == []
            assert "401" not in operation["responses"]
        else:
            assert path.startswith(f"{BASE}/")
            assert operation["security"] == SECURITY_ALTERNATIVES
            assert "401" in operation["responses"]
    assert "security" not in doc or doc["security"] == []


def test_uuid_path_parameters(doc: dict[str, Any]) -> None:
    for path, method, _ in operations(doc):
        for (where, name), param in parameters_of(doc, path, method).items():
            if where == "path":
                assert name in {"id", "target_id"}
                assert param["schema"] == {"type": "string", "format": "uuid"}


def test_reads_wait_for_a_position_and_writes_answer_one(doc: dict[str, Any]) -> None:
    for path, method, operation in operations(doc):
        if path in OPEN_PATHS:
            continue
        params = parameters_of(doc, path, method)
        responses = operation["responses"]
        if method == "get":
            assert params["header", "X-Outdial-Min-Position"]["schema"] == {"type": "integer"}
            assert "504" in responses
            assert ("header", "Idempotency-Key") not in params
        else:
            assert ("header", "X-Outdial-Min-Position") not in params
            assert params["header", "Idempotency-Key"]["schema"] == {"type": "string"}
            header = responses["200"]["headers"]["X-Outdial-Position"]
            assert header["required"] is True
            assert header["schema"] == {"type": "integer"}
            replies = {"400", "401", "404", "500", "504"}
            if path == f"{BASE}/outdials":  # no outdial in the path: nothing to miss
                replies.remove("404")
            assert replies <= set(responses), (path, method)
            if method == "post":
                assert "409" in responses, (path, method)  # the id is taken


def test_error_statuses(doc: dict[str, Any]) -> None:
    for path, method, operation in operations(doc):
        if path in OPEN_PATHS:
            continue
        responses = operation["responses"]
        assert {"400", "401", "500", "504"} <= set(responses), (path, method)
        assert ("413" in responses) == ("requestBody" in operation), (path, method)
        if "{id}" in path:
            assert "404" in responses, (path, method)
        for status, response in responses.items():
            schema = response["content"]["application/json"]["schema"]
            if status != "200":
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)
    assert "409" in doc["paths"][f"{BASE}/outdials"]["post"]["responses"]
    assert "404" not in doc["paths"][f"{BASE}/outdials"]["post"]["responses"]
    available = doc["paths"][f"{BASE}/outdials/{{id}}/available"]["get"]["responses"]
    assert "501" not in available
    assert {"200", "400", "404"} <= set(available)
    readyz = doc["paths"]["/readyz"]["get"]["responses"]
    assert set(readyz) == {"200", "503"}
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]
    assert set(metrics["content"]) == {"text/plain"}


def test_paging_parameters(doc: dict[str, Any]) -> None:
    for path in (f"{BASE}/outdials", f"{BASE}/outdials/{{id}}/targets"):
        params = parameters_of(doc, path, "get")
        assert params["query", "page_size"]["schema"] == {
            "type": "integer",
            "minimum": 1,
            "default": MAX_PAGE_SIZE,
        }
        token = params["query", "page_token"]["schema"]
        assert token == {"type": "string", "pattern": token["pattern"]}
        pattern = token["pattern"]
        assert re.fullmatch(pattern.strip("^$"), "")
        assert re.fullmatch(pattern.strip("^$"), "2022-04-28 01:41:40.503790")
        # VoIPbin's tokens too (CONTRACT 5), and this service's with the tie's id.
        assert re.fullmatch(pattern.strip("^$"), "2022-04-28T01:41:40.503790Z")
        assert re.fullmatch(pattern.strip("^$"), f"2022-04-28 01:41:40.503790|{uuid.uuid4()}")
        assert not re.fullmatch(pattern.strip("^$"), "yesterday")
        assert not re.fullmatch(pattern.strip("^$"), "2022-04-28T01:41:40.503790Z\x00")


def test_available_parameters(doc: dict[str, Any]) -> None:
    params = parameters_of(doc, f"{BASE}/outdials/{{id}}/available", "get")
    for i in range(5):
        schema = params["query", f"max_try_count_{i}"]["schema"]
        assert schema["type"] == "integer"
        assert schema["minimum"] == 0
    limit = params["query", "limit"]["schema"]
    assert limit == {"type": "integer", "minimum": 1, "maximum": MAX_AVAILABLE, "default": 100}
    ok = doc["paths"][f"{BASE}/outdials/{{id}}/available"]["get"]["responses"]["200"]
    result = deref(doc, ok["content"]["application/json"]["schema"])["properties"]["result"]
    assert result["items"] == {"$ref": "#/components/schemas/TargetResource"}


# ---- request bodies: the command models minus what the HTTP layer fills in ----------


def test_add_target_body_is_the_command_without_the_fields_of_the_http_layer(
    doc: dict[str, Any],
) -> None:
    schema = request_schema(doc, f"{BASE}/outdials/{{id}}/targets", "post")
    properties = schema["properties"]
    assert "destination_0" in properties
    for field in ("customer_id", "type", "outdial_id"):
        assert field not in properties
        assert field not in schema.get("required", [])
    assert {"$ref": "#/components/schemas/Address"} in properties["destination_0"]["anyOf"]
    assert schema["required"] == ["name", "detail", "data"]


@pytest.mark.parametrize(
    ("path", "method", "model", "dropped"),
    [
        ("/outdials", "post", CreateOutdial, {"type", "customer_id"}),
        ("/outdials/{id}", "put", UpdateOutdial, {"type", "customer_id", "outdial_id"}),
        (
            "/outdials/{id}/campaign_id",
            "put",
            UpdateOutdialCampaign,
            {"type", "customer_id", "outdial_id"},
        ),
        ("/outdials/{id}/data", "put", UpdateOutdialData, {"type", "customer_id", "outdial_id"}),
        ("/outdials/{id}/targets", "post", AddTarget, {"type", "customer_id", "outdial_id"}),
    ],
)
def test_request_bodies_follow_the_command_models(
    doc: dict[str, Any], path: str, method: str, model: Any, dropped: set[str]
) -> None:
    schema = request_schema(doc, BASE + path, method)
    assert set(schema["properties"]) == set(model.model_fields) - dropped
    wanted = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, prop in schema["properties"].items():
        assert prop == wanted["properties"][name]


def test_a_documented_body_makes_a_valid_command(doc: dict[str, Any]) -> None:
    # What a client sends per the document, plus what the HTTP layer adds, parses.
    schema = request_schema(doc, f"{BASE}/outdials/{{id}}/targets", "post")
    body = {name: "x" for name in schema["required"]} | {"destination_0": TEL}
    command = {
        **body,
        "type": "AddTarget",
        "outdial_id": str(uuid.uuid4()),
        "customer_id": str(uuid.uuid4()),
    }
    assert isinstance(parse_command(orjson.dumps(command)), AddTarget)


# ---- response shapes ------------------------------------------------------------


def stub_outdial() -> SimpleNamespace:
    return SimpleNamespace(
        id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        campaign_id=uuid.UUID(int=0),
        name="test outdial",
        detail="",
        data="",
        tm_create=datetime.now(UTC),
        tm_update=None,
        tm_delete=None,
    )


def stub_target() -> SimpleNamespace:
    now = datetime.now(UTC)
    return SimpleNamespace(
        id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        outdial_id=uuid.uuid4(),
        name="test destination 0",
        detail="",
        data="",
        status="idle",
        destinations=[None, None, TEL, None, None],
        try_counts=[0, 0, 1, 0, 0],
        tm_create=now,
        tm_update=now,
        tm_delete=None,
    )


def test_target_resource_has_contract_1s_fields_in_order(doc: dict[str, Any]) -> None:
    documented = doc["components"]["schemas"]["TargetResource"]
    assert list(documented["properties"]) == CONTRACT_TARGET_FIELDS
    assert documented["required"] == CONTRACT_TARGET_FIELDS
    assert list(TargetResource.model_fields) == CONTRACT_TARGET_FIELDS
    assert list(shapes.target(stub_target())) == CONTRACT_TARGET_FIELDS


def test_outdial_resource_has_contract_1s_fields_in_order(doc: dict[str, Any]) -> None:
    documented = doc["components"]["schemas"]["OutdialResource"]
    assert list(documented["properties"]) == CONTRACT_OUTDIAL_FIELDS
    assert documented["required"] == CONTRACT_OUTDIAL_FIELDS
    assert list(shapes.outdial(stub_outdial())) == CONTRACT_OUTDIAL_FIELDS


def test_destinations_are_nullable_addresses(doc: dict[str, Any]) -> None:
    properties = doc["components"]["schemas"]["TargetResource"]["properties"]
    for i in range(5):
        assert properties[f"destination_{i}"]["anyOf"] == [
            {"$ref": "#/components/schemas/Address"},
            {"type": "null"},
        ]


def test_timestamps_are_patterned_strings(doc: dict[str, Any]) -> None:
    for name in ("OutdialResource", "TargetResource"):
        properties = doc["components"]["schemas"][name]["properties"]
        for field in ("tm_create", "tm_update", "tm_delete"):
            assert properties[field]["type"] == "string"
            assert properties[field]["pattern"] == TIMESTAMP_PATTERN
    assert re.search(TIMESTAMP_PATTERN, shapes.timestamp(datetime.now(UTC)))
    assert re.search(TIMESTAMP_PATTERN, shapes.NEVER)
    assert not re.search(TIMESTAMP_PATTERN, "2022-04-28T01:41:40.503790Z")


def test_rendered_resources_fit_the_documented_shapes() -> None:
    outdial = shapes.outdial(stub_outdial())
    target = shapes.target(stub_target())
    OutdialResource.model_validate_json(orjson.dumps(outdial))
    TargetResource.model_validate_json(orjson.dumps(target))
    OutdialList.model_validate_json(orjson.dumps({"result": [outdial], "next_page_token": ""}))
    TargetList.model_validate_json(orjson.dumps({"result": [target], "next_page_token": ""}))


def test_lists_have_a_result_and_a_next_page_token(doc: dict[str, Any]) -> None:
    for name, item in (("OutdialList", "OutdialResource"), ("TargetList", "TargetResource")):
        schema = doc["components"]["schemas"][name]
        assert list(schema["properties"]) == ["result", "next_page_token"]
        assert schema["properties"]["result"]["type"] == "array"
        assert schema["properties"]["result"]["items"] == {"$ref": f"#/components/schemas/{item}"}
        assert schema["properties"]["next_page_token"]["type"] == "string"


def test_error_bodies_fit_the_error_schema(doc: dict[str, Any]) -> None:
    refused = Refused(ErrorCode.OUTDIAL_NOT_FOUND, "gone")
    Error.model_validate_json(orjson.dumps({"error": refused.error()}))
    with pytest.raises(InvalidCommand) as e:
        parse_command(orjson.dumps({"type": "AddTarget", "customer_id": "not a uuid"}))
    invalid = {
        "error": {"code": "invalid_command", "message": e.value.message, "details": e.value.details}
    }
    parsed = Error.model_validate_json(orjson.dumps(invalid))
    assert parsed.error.details
    error_body = doc["components"]["schemas"]["ErrorBody"]
    assert error_body["required"] == ["code", "message"]
    assert error_body["properties"]["details"]["items"] == {
        "$ref": "#/components/schemas/ErrorDetail"
    }
    assert doc["components"]["schemas"]["ErrorDetail"]["required"] == ["loc", "msg"]
