"""Read an image request, multipart or JSON, into validated fields and admitted images.

Parsed by hand rather than with FastAPI's Form/File parameters because one endpoint takes both
encodings, and so that authentication runs before a byte of the body is read.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from gateway.errors import ApiError
from gateway.images import ImageData, admit, decode_base64

F = TypeVar("F", bound=BaseModel)


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
        try:
            body = json_model.model_validate_json(await request.body())
        except ValidationError as exc:
            raise _validation(exc) from None
        options = form_model.model_validate(body.model_dump(exclude=set(image_fields)))
        for key in image_fields:
            value = getattr(body, key, None)
            for i, item in enumerate(value if isinstance(value, list) else [value] if value is not None else []):
                name = f"{key}[{i}]" if isinstance(value, list) else key
                raw.setdefault(key, []).append(decode_base64(item.image_base64, max_bytes=limits["max_bytes"],
                                                             field=name))
    else:
        raise ApiError("unsupported_media_type", f"send multipart/form-data or application/json, not "
                       f"{content_type or 'no content type'!r}")

    count = sum(len(v) for v in raw.values())
    if count > settings.gateway_max_images_per_request:
        raise ApiError("validation_error", f"{count} images; at most {settings.gateway_max_images_per_request} "
                       "per request")
    for key, kind in image_fields.items():
        if kind != "optional" and not raw.get(key):
            raise ApiError("validation_error", f"the {key!r} image is required", errors=[
                {"loc": ["body", key], "msg": "field required", "type": "missing"}])
        if kind != "many" and len(raw.get(key, [])) > 1:
            raise ApiError("validation_error", f"one {key!r} image, not {len(raw[key])}")
    images = {key: [admit(data, field=f"{key}[{i}]" if len(items) > 1 else key, **limits)
                    for i, data in enumerate(items)] for key, items in raw.items()}
    return options, images
