"""The client against /openapi.json: every /v1 route, parameter and answer schema, and every error code.

`drift(openapi)` lists every difference; the test asserts none, and the mutation tests show it catches a
new route, a changed parameter and a changed field (so an API change without the client fails here).
"""

from __future__ import annotations

import copy
import functools
import inspect
import operator
import re
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal, get_args, get_origin, get_type_hints, is_typeddict

import pytest

from facestack import client as fc
from facestack.settings import Settings
from gateway.app import create_app
from gateway.errors import CODES

REF = "#/components/schemas/"


@pytest.fixture(scope="module")
def openapi() -> dict:
    """The document the gateway serves at /openapi.json (built without starting anything)."""
    return create_app(Settings(api_key="unused-key", log_level="warning")).openapi()


# ---- canonical types: the schema's and the client's annotations in one notation ----------------------

def schema_kind(schema: dict) -> str:
    if "$ref" in schema:
        return "ref:" + schema["$ref"].removeprefix(REF)
    if "anyOf" in schema:
        return "|".join(sorted({part for s in schema["anyOf"] for part in schema_kind(s).split("|")}))
    if "enum" in schema:
        return "enum:" + ",".join(sorted(map(str, schema["enum"])))
    kind = schema.get("type")
    if kind == "array":
        return f"array[{schema_kind(schema.get('items', {}))}]"
    if kind == "string" and schema.get("format") == "binary":
        return "binary"
    return kind or "any"


def hint_kind(hint: Any) -> str:
    if hint in (fc.ImageInput, fc.ImageInput | Sequence[fc.ImageInput]):
        return "binary"  # a file part (repeated for several photos)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) < len(args):  # X | None: X's kind, nullable
            return "|".join(sorted({*hint_kind(functools.reduce(operator.or_, rest)).split("|"), "null"}))
        return "|".join(sorted({part for a in args for part in hint_kind(a).split("|")}))
    if origin is Literal:
        return "enum:" + ",".join(sorted(map(str, args)))
    if origin is list:
        return f"array[{hint_kind(args[0])}]"
    if origin is dict or hint is dict:
        return "object"
    if is_typeddict(hint):
        return "ref:" + hint.__name__
    return {type(None): "null", str: "string", int: "integer", float: "number", bool: "boolean"}.get(hint, "any")


def without_null(kind: str) -> str:
    return "|".join(p for p in kind.split("|") if p != "null")


# ---- the comparison ----------------------------------------------------------------------------------

def schema_drift(openapi: dict, name: str, seen: set[str]) -> list[str]:
    """Differences between component schema `name` and the client's TypedDict of that name (and below)."""
    if name in seen:
        return []
    seen.add(name)
    schema = openapi["components"]["schemas"][name]
    typed = getattr(fc, name, None)
    if not is_typeddict(typed):
        return [f"schema {name}: no TypedDict in facestack.client"]
    problems = []
    props, required = schema.get("properties", {}), set(schema.get("required", []))
    hints = get_type_hints(typed)
    for field in sorted(set(props) | set(hints)):
        if field not in hints:
            problems.append(f"schema {name}: field {field!r} missing from the client")
        elif field not in props:
            problems.append(f"schema {name}: client field {field!r} is not in the API")
        else:
            want, have = schema_kind(props[field]), hint_kind(hints[field])
            if want != have:
                problems.append(f"schema {name}.{field}: API {want}, client {have}")
            if (field in required) != (field in typed.__required_keys__):
                problems.append(f"schema {name}.{field}: required in the API: {field in required}")
    for ref in re.findall(r"#/components/schemas/(\w+)", str(props)):
        problems += schema_drift(openapi, ref, seen)
    return problems


def python_name(param: dict) -> str:
    """A header such as Idempotency-Key is the keyword argument idempotency_key."""
    return param["name"].lower().replace("-", "_") if param["in"] == "header" else param["name"]


def operation_params(openapi: dict, op: dict) -> dict[str, tuple[str, bool]]:
    """name -> (canonical type, required) over path, query and header parameters and body fields."""
    params = {python_name(p): (schema_kind(p["schema"]), p.get("required", False)) for p in op.get("parameters", [])}
    content = op.get("requestBody", {}).get("content", {})
    # multipart last: its types win (an image is a file part there, an {"image_base64"} object in JSON)
    bodies = [c["schema"] for _, c in sorted(content.items(), key=lambda item: item[0] == "multipart/form-data")]
    bodies = [openapi["components"]["schemas"][b["$ref"].removeprefix(REF)] if "$ref" in b else b for b in bodies]
    required = {name for body in bodies for name in body.get("required", [])}  # multipart lists only its files
    for body in bodies:
        params.update({k: (schema_kind(v), k in required) for k, v in body.get("properties", {}).items()})
    return params


def method_drift(openapi: dict, cls: type, name: str, op: dict, answer: str) -> list[str]:
    where = f"{cls.__name__}.{name}"
    method = getattr(cls, name, None)
    if method is None:
        return [f"{where}: missing"]
    problems = []
    hints = get_type_hints(method)
    if hints.get("return") is not getattr(fc, answer, None):
        problems.append(f"{where}: returns {hints.get('return')}, the API answers {answer}")
    signature = inspect.signature(method)
    have = {p.name: (without_null(hint_kind(hints[p.name])), p.default is inspect.Parameter.empty)
            for p in signature.parameters.values() if p.name != "self"}
    want = {k: (without_null(kind), required) for k, (kind, required) in operation_params(openapi, op).items()}
    for param in sorted(set(want) | set(have)):
        if param not in have:
            problems.append(f"{where}: no parameter {param!r}")
        elif param not in want:
            problems.append(f"{where}: parameter {param!r} is not in the API")
        elif want[param] != have[param]:
            problems.append(f"{where}({param}): API (type, required) {want[param]}, client {have[param]}")
    return problems


def drift(openapi: dict) -> list[str]:
    problems = []
    operations = {(method.upper(), path): op for path, ops in openapi["paths"].items() if path.startswith("/v1/")
                  for method, op in ops.items()}
    by_route = {(method, path): name for name, (method, path, _) in fc.ROUTES.items()}
    for key in sorted(set(operations) - set(by_route)):
        problems.append(f"route {key[0]} {key[1]}: not in the client")
    for key in sorted(set(by_route) - set(operations)):
        problems.append(f"client route {by_route[key]} ({key[0]} {key[1]}): not in the API")
    seen: set[str] = set()
    for key, name in sorted(by_route.items()):
        if key not in operations:
            continue
        op, answer = operations[key], fc.ROUTES[name][2]
        ok = [s for s in op["responses"] if s.startswith("2")]
        ref = op["responses"][ok[0]].get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
        if ref.removeprefix(REF) != answer:
            problems.append(f"route {name}: the API answers {ref.removeprefix(REF) or 'nothing'}, the client {answer}")
        for cls in (fc.Client, fc.AsyncClient):
            problems += method_drift(openapi, cls, name, op, answer)
        problems += schema_drift(openapi, ref.removeprefix(REF) or answer, seen)
    problems += schema_drift(openapi, "Problem", seen)
    documented = {code for op in operations.values() for r in op["responses"].values()
                  for code in re.findall(r"[a-z_]+", r.get("description", "").partition("code:")[2])}
    for code in sorted((documented | set(CODES)) - set(fc.ERRORS)):
        problems.append(f"error code {code!r}: no exception class in the client")
    for code in sorted(set(fc.ERRORS) - set(CODES)):
        problems.append(f"client error code {code!r}: not in the API")
    return problems


# ---- tests -------------------------------------------------------------------------------------------

def test_client_matches_openapi(openapi):
    assert drift(openapi) == []


def test_both_clients_have_the_same_signatures():
    for name in fc.ROUTES:
        sync, asynchronous = getattr(fc.Client, name), getattr(fc.AsyncClient, name)
        assert inspect.signature(sync) == inspect.signature(asynchronous), name
        assert inspect.iscoroutinefunction(asynchronous) and not inspect.iscoroutinefunction(sync)


def _route(doc: dict, path: str, method: str) -> dict:
    return doc["paths"][path][method]


MUTATIONS = {  # what an API change would look like -> the drift it must report
    "new route": (lambda d: d["paths"].__setitem__("/v1/templates", {"get": copy.deepcopy(
        _route(d, "/v1/galleries", "get"))}), "GET /v1/templates: not in the client"),
    "removed route": (lambda d: d["paths"]["/v1/galleries/{gallery_id}"].pop("delete"),
                      "client route delete_gallery"),
    "new query parameter": (lambda d: _route(d, "/v1/galleries", "get")["parameters"].append(
        {"name": "sort", "in": "query", "required": False, "schema": {"type": "string"}}),
        "no parameter 'sort'"),
    "new header parameter": (lambda d: _route(d, "/v1/galleries", "post").setdefault("parameters", []).append(
        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}),
        "no parameter 'idempotency_key'"),
    "new form field": (lambda d: _route(d, "/v1/identify", "post")["requestBody"]["content"]["multipart/form-data"]
                       ["schema"]["properties"].__setitem__("min_quality", {"type": "number"}),
                       "no parameter 'min_quality'"),
    "renamed JSON field": (lambda d: d["components"]["schemas"]["SubjectCreate"]["properties"].__setitem__(
        "display_name", d["components"]["schemas"]["SubjectCreate"]["properties"].pop("name")),
        "no parameter 'display_name'"),
    "new answer field": (lambda d: d["components"]["schemas"]["GalleryPage"]["properties"].__setitem__(
        "previous", {"anyOf": [{"type": "string"}, {"type": "null"}]}), "GalleryPage: field 'previous' missing"),
    "changed field type": (lambda d: d["components"]["schemas"]["Candidate"]["properties"].__setitem__(
        "similarity", {"type": "string"}), "Candidate.similarity: API string, client number"),
    "field now optional": (lambda d: d["components"]["schemas"]["Quality"]["required"].remove("yaw"),
                           "Quality.yaw: required in the API: False"),
    "new enum value": (lambda d: d["components"]["schemas"]["IdentifyResponse"]["properties"]["decision"]
                       ["enum"].append("ambiguous"), "IdentifyResponse.decision"),
    "other answer schema": (lambda d: _route(d, "/v1/detect", "post")["responses"]["200"]["content"]
                            ["application/json"]["schema"].__setitem__("$ref", REF + "VerifyResponse"),
                            "route detect: the API answers VerifyResponse"),
    "new error code": (lambda d: _route(d, "/v1/galleries", "post")["responses"]["409"].__setitem__(
        "description", "problem+json, code: conflict | quota_exceeded"), "'quota_exceeded'"),
}


@pytest.mark.parametrize("change", sorted(MUTATIONS))
def test_drift_is_caught(openapi, change):
    mutate, expected = MUTATIONS[change]
    changed = copy.deepcopy(openapi)
    mutate(changed)
    found = drift(changed)
    assert any(expected in line for line in found), found
