"""The code's shape holds: routes are entry points only, and every GET answers as documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from rosetta_web.monitor.rounds import sample_sources
from rosetta_web.sources.services import after_round

from .factories import add_source, add_verification, seed_alerting, verify_table
from .seed import DESTINATION, PIPELINE, SOURCE

PACKAGE = Path(__file__).resolve().parent.parent / "rosetta_web"


def _import_statements(source: str, module: str, is_package: bool) -> list[tuple[str, set[str]]]:
    """Return each import of a module's code (also inside a function) as the absolute name it
    imports from and the absolute names it imports ("x.y" and {"x.y.z"} for `from x.y import
    z`; "x.y" and {"x.y"} for `import x.y`)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, set[str]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, {alias.name}) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            origin = f"{base}.{node.module}" if node.level and node.module else base
            origin = (node.module if not node.level else origin) or ""
            found.append((origin, {f"{origin}.{alias.name}" for alias in node.names}))
    return found


def _imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Return the absolute names of the modules a module's code imports."""
    found: set[str] = set()
    for origin, names in _import_statements(source, module, is_package):
        found |= {origin, *names}
    return found


def routes_imports(source: str, module: str, is_package: bool) -> list[str]:
    """List the routes modules a module imports that are not its own blueprint's."""
    own = f"{module}.routes" if is_package else None
    return sorted(
        name
        for name in _imported_modules(source, module, is_package)
        if name.endswith(".routes") and name != own
    )


def test_no_module_imports_another_areas_routes():
    """Only a blueprint's __init__ imports its routes; everything else goes through services."""
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        found = routes_imports(path.read_text(), module, is_package)
        if found:
            offenders[module] = found
    assert offenders == {}
    # The check sees the imports it forbids, relative and absolute alike.
    assert routes_imports(
        "from ..sources.routes import SOURCES", "rosetta_web.api.routes", False
    ) == ["rosetta_web.sources.routes"]
    assert routes_imports("import rosetta_web.pipelines.routes", "rosetta_web.cli", False) == [
        "rosetta_web.pipelines.routes"
    ]
    assert routes_imports("from . import routes", "rosetta_web.sources", True) == []


# What the work done on a source PostgreSQL never needs: a request, the ORM, the app's models.
FORBIDDEN_IN_POSTGRES = ("flask", "flask_", "werkzeug", "sqlalchemy")
FORBIDDEN_MODULES = ("rosetta_web.models", "rosetta_web.extensions")


def flask_or_model_imports(source: str, module: str) -> list[str]:
    """List what a module imports of Flask, SQLAlchemy, the models or the extensions."""
    found = _imported_modules(source, module, False)
    return sorted(
        name
        for name in found
        if name.split(".")[0].startswith(FORBIDDEN_IN_POSTGRES)
        or any(name == banned or name.startswith(f"{banned}.") for banned in FORBIDDEN_MODULES)
    )


def test_postgres_package_imports_no_flask_and_no_model():
    """postgres/ (connecting, sampling, the checks, the DDL) imports no Flask and no model, so
    the monitor, the readiness area, the sources area and the engine can all use it."""
    paths = sorted((PACKAGE / "postgres").glob("*.py"))
    assert {path.stem for path in paths} >= {
        "__init__",
        "connection",
        "sampling",
        "sampling_queries",
        "checks",
        "replication_objects",
    }
    offenders = {}
    for path in paths:
        module = f"rosetta_web.postgres.{path.stem}"
        found = flask_or_model_imports(path.read_text(), module)
        if found:
            offenders[path.name] = found
    assert offenders == {}
    # The check sees the imports it forbids, relative and absolute alike.
    module = "rosetta_web.postgres.checks"
    assert flask_or_model_imports("from ..models import Source", module) == [
        "rosetta_web.models",
        "rosetta_web.models.Source",
    ]
    assert flask_or_model_imports("from ..extensions import db", module) == [
        "rosetta_web.extensions",
        "rosetta_web.extensions.db",
    ]
    assert flask_or_model_imports("import flask", module) == ["flask"]
    assert flask_or_model_imports("from flask_login import current_user", module) == [
        "flask_login",
        "flask_login.current_user",
    ]
    assert flask_or_model_imports("from ..formatting import pg_size_pretty", module) == []


def _inline(schema: Any, spec: dict[str, Any]) -> Any:
    """Replace every $ref to the document's components with the schema it names."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(spec["components"]["schemas"][schema["$ref"].split("/")[-1]], spec)
        return {key: _inline(value, spec) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, spec) for item in schema]
    return schema


def test_every_get_endpoint_answers_its_documented_schema(app, api, source_db):
    """Each documented GET, called with real data, returns exactly what its schema describes."""
    source_id = add_source(app, "shop", source_db["port"])
    with app.app_context():
        assert after_round(sample_sources())[0].ok  # a real sample, with a real slot
    seed_alerting(app, source_id)  # alert 1, channel 1 with a delivery
    assert api.post("/api/v1/destinations", json=DESTINATION).status_code == 201
    body = {**PIPELINE, "source_id": source_id, "status": "PAUSE"}  # the source is not ready
    assert api.post("/api/v1/pipelines", json=body).status_code == 201
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201  # never sampled
    differing = {"key": {"id": 7}, "columns": ["id"], "problem": "missing at the destination"}
    table = verify_table("public.orders", destination_rows=9, differing=[differing])
    add_verification(app, source_id, [table | {"differing_keys": 1, "ok": False}])

    spec = api.get("/api/v1/openapi.json").get_json()
    checked = []
    for path, operations in spec["paths"].items():
        operation = operations.get("get")
        if operation is None:
            continue
        url = re.sub(r"\{[^}]+\}", str(source_id), path)
        query = {
            param["name"]: source_id
            for param in operation.get("parameters", [])
            if param["in"] == "query" and param.get("required")
        }
        response = api.get(url, query_string=query)
        assert response.status_code == 200, (path, response.get_data(as_text=True))
        content = operation["responses"]["200"]["content"]
        if "application/json" not in content:
            continue
        schema = _inline(content["application/json"]["schema"], spec)
        errors = [
            f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in Draft202012Validator(schema).iter_errors(response.get_json())
        ]
        assert errors == [], path
        checked.append(path)
    assert {"/api/v1/sources/{entity_id}", "/api/v1/metrics/wal", "/health"} <= set(checked)


# The modules every area may use: they import no area themselves.
SHARED_MODULES = {"models", "errors", "timeutil", "formatting", "forms", "channel_urls"}
# Imports between areas that close a cycle today, each until the move that ends it. Any other
# cycle fails the test, and so does an entry no import needs any more: prune it then.
ALLOWED_CYCLE_EDGES = {
    # monitor.scheduler runs what follows a round and the daily readiness re-check, both
    # sources' (sources.services.after_round, sources.services.recheck_stale), while the
    # sources area samples by hand through monitor.rounds. No module imports itself back
    # (scheduler -> sources -> rounds); the cycle is between areas only, and ends when the
    # scheduler stops being part of the monitor area.
    ("monitor", "sources"),
}


def _node(module: str) -> str:
    """Name a module's place in the graph: its area (first-level subpackage), its own name for
    a top-level module, or `rosetta_web` for the package itself (the app factory)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, set[str]]]:
    """Map each node to the nodes its modules import (at module level or inside a function),
    each with the importing modules and what they import, e.g. "rosetta_web.crud ->
    rosetta_web.readiness"."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    graph: dict[str, dict[str, set[str]]] = {}
    for module, (path, is_package) in modules.items():
        for _origin, names in _import_statements(path.read_text(), module, is_package):
            for name in names:
                # `from . import models` imports the module models, `from .models import
                # Source` a name of models: the longest prefix that is a module.
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if not name or _node(name) == _node(module):
                    continue
                edges = graph.setdefault(_node(module), {}).setdefault(_node(name), set())
                edges.add(f"{module} -> {name}")
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_between_areas():
    """The areas (sources, monitor, alerts, …), the top-level modules and the app factory
    import each other without a cycle, function-level imports included, but for the listed
    ones; a shared module (models, errors, timeutil, …) imports no area."""
    graph = import_graph()
    edges = {
        node: {target for target in targets if (node, target) not in ALLOWED_CYCLE_EDGES}
        for node, targets in graph.items()
    }
    found = {
        " <-> ".join(group): sorted(
            line for node in group for target in group for line in graph[node].get(target, ())
        )
        for group in cycles(edges)
    }
    assert found == {}
    stale = sorted(edge for edge in ALLOWED_CYCLE_EDGES if edge[1] not in graph.get(edge[0], {}))
    assert stale == [], "no import needs these allowed edges any more: remove them"
    areas = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    shared_imports = {
        module: sorted(line for target in graph.get(module, {}) for line in graph[module][target])
        for module in SHARED_MODULES
        if areas & set(graph.get(module, {}))
    }
    assert shared_imports == {}
    # The check sees what it forbids: a cycle through three nodes, none outside it.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
