"""Authorisation is declared for every route: a route without a rule fails this suite."""

from fastapi import FastAPI
from fastapi.routing import APIRoute

from runas.runtime import Runtime
from runas.server import ServerSettings, create_app
from runas.server.security import rules_of


def routes_without_exactly_one_rule(app: FastAPI) -> list[str]:
    """Every route of the app, HTTP or not, must be an API route carrying exactly one rule
    (``require(...)`` or an explicit ``public()``)."""
    bad: list[str] = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            bad.append(f"{type(route).__name__} {getattr(route, 'path', route)!r}")
            continue
        rules = rules_of(route)
        if len(rules) != 1:
            bad.append(f"{sorted(route.methods)} {route.path}: {len(rules)} rules")
    return bad


def test_every_route_has_exactly_one_rule(runtime: Runtime) -> None:
    app = create_app(runtime, ServerSettings())
    assert len(app.routes) > 30
    assert routes_without_exactly_one_rule(app) == []


def test_a_route_added_without_a_rule_is_caught(runtime: Runtime) -> None:
    app = create_app(runtime, ServerSettings())

    @app.get("/api/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {"oops": "no rule"}

    assert routes_without_exactly_one_rule(app) == ["['GET'] /api/v1/forgotten: 0 rules"]


def test_a_plain_starlette_route_is_caught(runtime: Runtime) -> None:
    app = create_app(runtime, ServerSettings())
    app.add_route("/raw", lambda request: None)
    bad = routes_without_exactly_one_rule(app)
    assert bad == ["Route '/raw'"]


def test_the_openapi_document_states_each_operations_permission(runtime: Runtime) -> None:
    app = create_app(runtime, ServerSettings())
    doc = app.openapi()
    public = {"/api/v1/login", "/healthz", "/readyz", "/metrics"}
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert "x-permission" in op, (method, path)
            if path in public:
                assert op["x-permission"] == "public"
                assert "security" not in op
            else:
                assert op["x-permission"] != "public", (method, path)
                assert op["security"] == [{"bearer": []}]
            for status, response in op["responses"].items():
                if status[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )


def test_no_response_schema_can_carry_a_secret(runtime: Runtime) -> None:
    """Secret fields are write-only: they appear in request schemas only."""
    doc = create_app(runtime, ServerSettings()).openapi()
    schemas = doc["components"]["schemas"]

    def refs(node: object) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                found.add(ref.rsplit("/", 1)[-1])
            for value in node.values():
                found |= refs(value)
        elif isinstance(node, list):
            for value in node:
                found |= refs(value)
        return found

    def closure(names: set[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(refs(schemas[name]))
        return seen

    response_models: set[str] = set()
    for operations in doc["paths"].values():
        for op in operations.values():
            for response in op["responses"].values():
                response_models |= refs(response)
    writeonly = {name for name in closure(response_models) if "writeOnly" in str(schemas[name])}
    assert writeonly == set()
    assert "writeOnly" in str(schemas["AccountCreate"])
