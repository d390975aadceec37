"""What the routes share besides their dependencies (gateway/api/deps.py): timestamps, OpenAPI snippets for
problems and image bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from gateway.errors import BACKEND, CODES, PROBLEM_JSON
from gateway.schemas import Problem

__all__ = ["BACKEND", "EXTRA_SCHEMAS", "IMAGE", "image_body", "iso", "problems"]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def problems(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes (grouped by status). Every keyed route can also answer
    unauthorized, validation_error and rate_limited (the key's request rate)."""
    by_status: dict[int, list[str]] = {}
    for code in (*codes, "unauthorized", "validation_error", "rate_limited"):
        by_status.setdefault(CODES[code][0], []).append(code)
    return {status: {"model": Problem, "content": {PROBLEM_JSON: {}},
                     "description": "problem+json, code: " + " | ".join(sorted(set(names)))}
            for status, names in sorted(by_status.items())}


IMAGE = ("invalid_image", "image_too_large", "unsupported_media_type", "no_face", "multiple_faces",
         "face_too_small", "low_quality")


# JSON request models referenced from openapi_extra; app.py adds them to components/schemas.
EXTRA_SCHEMAS: list[type[BaseModel]] = []


def image_body(form: type[BaseModel], json_model: type[BaseModel], files: dict[str, str],
               json_example: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra describing both encodings of an image request (the route parses the body itself)."""
    schema = form.model_json_schema()
    props = dict(schema.get("properties", {}))
    for name, description in files.items():
        props[name] = {"type": "string", "format": "binary", "description": description}
    EXTRA_SCHEMAS.append(json_model)
    multipart = {"type": "object", "properties": props,
                 "required": [n for n, d in files.items() if "optional" not in d]}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": multipart},
        "application/json": {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"},
                             "example": json_example},
    }}}
