"""Read an image request, multipart or JSON, into validated fields and admitted images.

Parsed by hand rather than with FastAPI's Form/File parameters because one endpoint takes both
encodings, and so that authentication runs before a byte of the body is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sized
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from facestack.settings import Settings
from gateway import exif
from gateway.errors import ApiError
from gateway.images import ImageData, admit, decode_base64

F = TypeVar("F", bound=BaseModel)
OFFLOAD_BYTES = 256 * 1024  # JSON bodies above this are parsed and decoded in a worker thread
JSON_COMMA_SLACK = 512  # fields, and ids (up to 128 characters each) that may contain commas


def _check_json_size(payload: bytes, max_images: int) -> None:
    """Refuse a JSON body with far more values than any valid request before parsing it (milliseconds, where
    parsing 200k list items takes most of a second and ~150 MB). Each value after the first in an array or
    object needs a comma; a valid body has a few per image (list separator, data: URL) plus the commas ids
    may contain, so the count of comma bytes bounds it cheaply."""
    commas = payload.count(b",")
    allowed = 3 * max_images + JSON_COMMA_SLACK
    if commas > allowed:
        raise ApiError("validation_error", f"the JSON body holds too many values ({commas} separators; a request "
                       f"of at most {max_images} images has at most {allowed})")


def _check_count(settings: Settings, found: Mapping[str, Sized], image_fields: dict[str, str]) -> None:
    count = sum(len(v) for v in found.values())
    if count > settings.gateway_max_images_per_request:
        raise ApiError("validation_error", f"{count} images; at most {settings.gateway_max_images_per_request} "
                       "per request")
    for key, kind in image_fields.items():
        if kind != "optional" and not found.get(key):
            raise ApiError("validation_error", f"the {key!r} image is required", errors=[
                {"loc": ["body", key], "msg": "field required", "type": "missing"}])
        if kind != "many" and len(found.get(key, ())) > 1:
            raise ApiError("validation_error", f"one {key!r} image, not {len(found[key])}")


def _validation(exc: ValidationError) -> ApiError:
    errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return ApiError("validation_error", "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors), errors=errors)


async def read_images(request: Request, form_model: type[F], json_model: type[BaseModel],
                      image_fields: dict[str, str]) -> tuple[F, dict[str, list[ImageData]]]:
    """image_fields: field name -> "required", "optional" or "many" (bulk enrolment repeats `image` parts).
    Returns the non-image fields and the admitted images by field."""
    settings = request.app.state.settings
    limits = {"max_bytes": settings.gateway_max_image_bytes, "max_pixels": settings.gateway_max_image_pixels}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw: dict[str, list[bytes]] = {}
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=settings.gateway_max_images_per_request + 1, max_fields=32,
                                      max_part_size=64 * 1024)
        except HTTPException as exc:  # malformed multipart
            raise ApiError("validation_error", f"multipart body: {exc.detail}") from None
        fields: dict[str, str] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in image_fields:
                    raise ApiError("validation_error", f"unexpected file part {key!r}; "
                                   f"image parts are {sorted(image_fields)}")
                raw.setdefault(key, []).append(await value.read(settings.gateway_max_image_bytes + 1))
            elif key in image_fields:
                raise ApiError("validation_error", f"{key!r} must be a file part (curl: -F '{key}=@photo.jpg')")
            else:
                fields[key] = value
        try:
            options = form_model.model_validate(fields)
        except ValidationError as exc:
            raise _validation(exc) from None
    elif content_type == "application/json":
        payload = await request.body()
        _check_json_size(payload, settings.gateway_max_images_per_request)
        offload = len(payload) > OFFLOAD_BYTES
        try:  # a large body is parsed off the event loop, so other requests keep being answered meanwhile
            body = await asyncio.to_thread(json_model.model_validate_json, payload) if offload \
                else json_model.model_validate_json(payload)
        except ValidationError as exc:
            raise _validation(exc) from None
        options = form_model.model_validate(body.model_dump(exclude=set(image_fields)))
        encoded: dict[str, list[tuple[str, str]]] = {}
        for key in image_fields:
            value = getattr(body, key, None)
            for i, item in enumerate(value if isinstance(value, list) else [value] if value is not None else []):
                encoded.setdefault(key, []).append((f"{key}[{i}]" if isinstance(value, list) else key,
                                                    item.image_base64))
        _check_count(settings, encoded, image_fields)  # before a byte of base64 is decoded

        def decode_all() -> dict[str, list[bytes]]:
            return {key: [decode_base64(text, max_bytes=limits["max_bytes"], field=name) for name, text in items]
                    for key, items in encoded.items()}

        raw = await asyncio.to_thread(decode_all) if offload else decode_all()
    else:
        raise ApiError("unsupported_media_type", f"send multipart/form-data or application/json, not "
                       f"{content_type or 'no content type'!r}")

    _check_count(settings, raw, image_fields)
    admitted = {key: [admit(data, field=f"{key}[{i}]" if len(items) > 1 else key, **limits)
                      for i, data in enumerate(items)] for key, items in raw.items()}

    def upright() -> dict[str, list[ImageData]]:
        return {key: [exif.upright(image) for image in found] for key, found in admitted.items()}

    if any(exif.needs_upright(image) for found in admitted.values() for image in found):  # a rotated WebP
        return options, await asyncio.to_thread(upright)
    return options, admitted
