"""Image admission: byte limit, format sniffing and pixel limit, all before anything decodes pixels.

Pillow parses only the header here (`Image.open` is lazy), so a 100-megapixel bomb costs a few hundred
bytes of parsing, and Triton never receives an image the gateway would refuse.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image

from facestack.pipeline.image import sniff_format
from gateway import exif
from gateway.errors import ApiError

_SUPPORTED = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}  # sniffed name -> Pillow format
_OTHER_IMAGE_MAGIC = (b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00", b"%PDF")
_DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ImageData:
    data: bytes
    format: str  # jpeg | png | webp
    width: int
    height: int
    orientation: int = 1  # EXIF orientation, 1-8 (gateway/exif.py)


def admit(data: bytes, *, max_bytes: int, max_pixels: int, field: str = "image") -> ImageData:
    """Check an encoded image against the limits; raise ApiError with the matching code if it fails."""
    if len(data) > max_bytes:
        raise ApiError("image_too_large", f"{field}: {len(data)} bytes is above the limit of {max_bytes}",
                       field=field)
    if not data:
        raise ApiError("invalid_image", f"{field}: empty image", field=field)
    fmt = sniff_format(data)  # the Triton pipeline's own rule
    if fmt is None:
        kind = "an image format" if data.startswith(_OTHER_IMAGE_MAGIC) else "a format"
        raise ApiError("unsupported_media_type", f"{field}: {kind} other than JPEG, PNG or WebP", field=field)
    try:
        with warnings.catch_warnings():  # our pixel limit is below Pillow's bomb warning; it would only echo it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_SUPPORTED[fmt]]) as im:
                width, height = im.size
                # Only where Triton's decoder ignores it (WebP): Pillow's PNG getexif() decodes every pixel.
                rotation = exif.orientation(im) if fmt not in exif.DECODER_ORIENTS else 1
    except Image.DecompressionBombError:
        raise ApiError("image_too_large", f"{field}: too many pixels", field=field) from None
    except Exception:  # any header Pillow cannot parse is the client's bad bytes, never a 500
        raise ApiError("invalid_image", f"{field}: the {fmt} header is corrupt or truncated", field=field) from None
    if width <= 0 or height <= 0:
        raise ApiError("invalid_image", f"{field}: {width}x{height} pixels", field=field)
    if width * height > max_pixels:
        raise ApiError("image_too_large", f"{field}: {width}x{height} pixels is above the limit of {max_pixels}",
                       field=field)
    return ImageData(data, fmt, width, height, rotation)


def decode_base64(text: str, *, max_bytes: int, field: str) -> bytes:
    """Base64 (optionally a data: URL) -> bytes, refusing oversized input before decoding it."""
    text = "".join(_DATA_URL.sub("", text.strip(), count=1).split())  # `base64` wraps lines at 76
    if len(text) * 3 // 4 > max_bytes + 2:
        raise ApiError("image_too_large", f"{field}: about {len(text) * 3 // 4} bytes is above the limit of "
                       f"{max_bytes}", field=field)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("invalid_image", f"{field}: image_base64 is not valid base64", field=field) from None
