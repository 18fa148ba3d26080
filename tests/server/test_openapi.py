"""The served OpenAPI document matches the app: every route and method both ways, parameters, security.

Response bodies are checked against the document's schemas by every call in test_api.py
and test_isolation.py (``ApiClient.check_documented``); here the document's structure is
compared with the router and with what the handlers accept.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from openapi_spec_validator import validate

import thermo_bridge_server
from tests.server.api_stack import ADMIN, DocumentSchemas, ServerStack, pointer_to, resolve
from thermo_bridge_server.http import ROUTES as api_routes
from thermo_bridge_server.http.openapi import build_document
from thermo_bridge_server.realtime import routes as realtime_routes

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

DOCUMENT = build_document()
METHODS = ("get", "put", "post", "delete", "patch")


def router_operations(app: web.Application) -> set[tuple[str, str]]:
    ops: set[tuple[str, str]] = set()
    heads: set[str] = set()
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD":
            heads.add(canonical)
            continue
        ops.add((canonical, route.method.lower()))
    # aiohttp adds HEAD next to every GET; a HEAD without a GET would be undocumented.
    assert heads <= {path for path, method in ops if method == "get"}
    return ops


def documented_operations() -> set[tuple[str, str]]:
    return {(path, method) for path, item in DOCUMENT["paths"].items() for method in item if method in METHODS}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    app = web.Application()
    app.router.add_routes(api_routes)
    app.router.add_routes(realtime_routes)
    assert router_operations(app) == documented_operations()


def test_path_parameters_match_the_templates() -> None:
    for path, item in DOCUMENT["paths"].items():
        in_template = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_template, f"{method.upper()} {path}"
            assert all(p["required"] for p in operation.get("parameters", []) if p["in"] == "path")


def test_document_is_valid_openapi_structure() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    op_ids = [op["operationId"] for item in DOCUMENT["paths"].values() for op in item.values()]
    assert len(op_ids) == len(set(op_ids)), "operationIds must be unique"
    # Every $ref resolves.
    text = json.dumps(DOCUMENT)
    for ref in set(re.findall(r'"\$ref": "([^"]+)"', text)):
        assert resolve(DOCUMENT, {"$ref": ref}) is not None, ref
    for path, item in DOCUMENT["paths"].items():
        for operation in item.values():
            secured = operation["security"] != []
            assert ("401" in operation["responses"]) == secured
            for status, raw in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status)
                response = resolve(DOCUMENT, raw)
                if int(status) >= 400 and path != "/health":  # /health answers 503 with its own body
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_document_is_valid_for_openapi_spec_validator() -> None:
    """The OpenAPI 3.1 meta-schema and its rules, as the validator made for them checks them."""
    validate(json.loads(json.dumps(DOCUMENT)))  # raises OpenAPIValidationError with the first problem
    served_shape = json.loads((Path(thermo_bridge_server.__file__).parent / "http" / "openapi.json").read_text())
    validate(served_shape)


def test_sub_pattern_is_exactly_str_isprintable() -> None:
    """Every code point the document's sub pattern takes is one the server's check takes, and back."""
    schema = DOCUMENT["paths"]["/api/v1/admin/grants/{sub}"]["get"]["parameters"][0]["schema"]
    assert schema["maxLength"] == 256
    one = re.compile(schema["pattern"].removeprefix("^").removesuffix("$").replace("{1,256}", ""))
    mismatched = [c for c in map(chr, range(sys.maxunicode + 1)) if bool(one.fullmatch(c)) != c.isprintable()]
    assert mismatched == []


def test_stream_list_patterns_match_the_sse_limits() -> None:
    from thermo_bridge_server.realtime.sse import _LISTS  # noqa: PLC0415 - the limits the handler enforces

    params = {p["name"]: p for p in DOCUMENT["paths"]["/api/v1/events"]["get"]["parameters"]}
    for name, (most, _longest) in _LISTS.items():
        pattern = params[name]["schema"]["pattern"]
        assert pattern.endswith(f"{{0,{most - 1}}}$"), name


def test_response_validation_follows_references_and_rejects_what_the_document_forbids() -> None:
    """``ApiClient.check_documented`` would prove nothing if validation passed everything."""
    schemas = DocumentSchemas(DOCUMENT)
    devices_ok = pointer_to(
        "paths", "/api/v1/devices", "get", "responses", "200", "content", "application/json", "schema"
    )
    assert schemas.errors({"devices": [], "next": None}, devices_ok) == []
    assert schemas.errors({"devices": [{"id": 1}]}, devices_ok)  # through $ref to DeviceList and on to Device
    error = "/components/responses/NotFound" + pointer_to("content", "application/json", "schema")
    good = {"error": {"status": 404, "code": "not_found", "message": "no such device"}}
    assert schemas.errors(good, error) == []
    assert schemas.errors({**good, "extra": 1}, error) == [
        "/: Additional properties are not allowed ('extra' was unexpected)"
    ]
    assert schemas.errors({"error": {**good["error"], "status": "404"}}, error) == [
        "/error/status: '404' is not of type 'integer'"
    ]


def test_committed_document_is_current() -> None:
    committed = Path(thermo_bridge_server.__file__).parent / "http" / "openapi.json"
    assert json.loads(committed.read_text()) == json.loads(json.dumps(DOCUMENT)), (
        "addon/thermo_bridge_server/http/openapi.json is stale: run "
        "`.venv/bin/python -m thermo_bridge_server.http.openapi > addon/thermo_bridge_server/http/openapi.json`"
    )


# --------------------------------------------------------------------------- against the running server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerStack]:
    server = ServerStack(tmp_path_factory.mktemp("openapi"), simulate=False)
    await server.start()
    yield server
    await server.stop()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "unknown_1", path)


def _sample(schema: dict[str, Any]) -> str:
    schema = resolve(DOCUMENT, schema)
    if "enum" in schema:
        return str(schema["enum"][0])
    kind = schema.get("type")
    if kind == "boolean":
        return "true"
    if kind == "integer":
        return str(schema.get("minimum", 1))
    if "pattern" in schema and "ms|s|m|h|d" in schema["pattern"]:
        return "1h"
    if "description" in schema and "epoch" in schema["description"]:
        return "0"
    return "alpha"


@MODULE_LOOP
async def test_the_app_serves_exactly_the_documented_routes(stack: ServerStack) -> None:
    assert stack.app is not None
    served = router_operations(stack.app)
    # Dev auth adds /.well-known routes; this stack uses the JWKS server, so none here.
    assert served == documented_operations()


@MODULE_LOOP
async def test_documented_query_parameters_are_accepted_and_others_refused(stack: ServerStack) -> None:
    auth0 = stack.api.token("auth0|docs", ADMIN)
    for path, item in DOCUMENT["paths"].items():
        operation = item.get("get")
        if operation is None or operation["security"] == [] or "text/event-stream" in json.dumps(operation):
            continue  # public documents, and streams (their parameters: tests/server/test_sse.py)
        token = stack.components.internal_token if {"internalToken": []} in operation["security"] else auth0
        url = _concrete(path)
        for param in (p for p in operation.get("parameters", []) if p["in"] == "query"):
            resp = await stack.api.call("GET", url, token=token, params={param["name"]: _sample(param["schema"])})
            if resp.status == 400:
                pytest.fail(f"GET {path} refuses its documented parameter {param['name']}: {resp.json()}")
        resp = await stack.api.call("GET", url, token=token, params={"undocumented": "1"})
        assert resp.status == 400, path
        assert resp.error["details"] == {"parameter": "undocumented"}


@MODULE_LOOP
async def test_secured_operations_need_a_token_and_public_ones_do_not(stack: ServerStack) -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            resp = await stack.api.call(method.upper(), _concrete(path), json_body={})
            if operation["security"]:
                assert resp.status == 401, f"{method.upper()} {path}"
            else:  # a documented answer (the WebSocket asks for an upgrade), never a 401
                assert str(resp.status) in operation["responses"], f"{method.upper()} {path}: {resp.status}"
                refused = {("/assets/{name}", 404), ("/api/v1/ingress/token", 403)}  # no such file; not ingress
                assert resp.status in (200, 426, 503) or (path, resp.status) in refused, f"{method.upper()} {path}"


@MODULE_LOOP
async def test_served_document_equals_the_built_one(stack: ServerStack) -> None:
    resp = await stack.api.call("GET", "/api/v1/openapi.json")
    served = resp.json()
    served["info"]["version"] = DOCUMENT["info"]["version"]
    assert served == json.loads(json.dumps(DOCUMENT))
