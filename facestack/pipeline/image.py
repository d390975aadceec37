"""Image decoding and the detector's letterbox."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Formats the pipeline accepts, by their leading bytes. Checked before decoding so that a PDF or a GIF
# gets a clear "unsupported" error instead of whatever OpenCV makes of it.
_SIGNATURES: tuple[tuple[str, bytes], ...] = (
    ("jpeg", b"\xff\xd8\xff"),
    ("png", b"\x89PNG\r\n\x1a\n"),
)
MAX_PIXELS_DEFAULT = 40_000_000


class ImageError(ValueError):
    """Bytes that are not a decodable image. `code` is the stable error code the gateway reports."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def sniff_format(data: bytes) -> str | None:
    """'jpeg', 'png' or 'webp' from the magic bytes, else None."""
    for name, magic in _SIGNATURES:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode(data: bytes, max_pixels: int = MAX_PIXELS_DEFAULT) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes to a BGR uint8 image (alpha dropped, grey expanded, EXIF rotation applied).

    OpenCV refuses images above its own pixel cap (OPENCV_IO_MAX_IMAGE_PIXELS) before allocating, so a
    decompression bomb fails fast; `max_pixels` is the pipeline's tighter limit, checked after decoding.
    """
    if not data:
        raise ImageError("invalid_image", "empty image")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError("invalid_image", "not a JPEG, PNG or WebP image")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError("invalid_image", f"could not decode the {fmt} data (corrupt or truncated)")
    height, width = image.shape[:2]
    if height * width > max_pixels:
        raise ImageError("image_too_large", f"{width}x{height} pixels is above the limit of {max_pixels}")
    return image


@dataclass(frozen=True)
class Letterbox:
    """An image scaled into a size x size canvas at the top-left; `scale` maps canvas -> original."""

    canvas: np.ndarray  # size x size x 3, BGR uint8
    scale: float  # original = canvas / scale


def letterbox(image: np.ndarray, size: int) -> Letterbox:
    """Scale the image so its longer side is `size` and pad bottom/right with black.

    A fixed square input lets Triton batch detector requests from images of any shape together.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return Letterbox(canvas, scale)


def to_nchw(images: list[np.ndarray] | np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """HWC uint8 image(s) -> NCHW `dtype` (float32 for the embedders, uint8 for the detector), channels unchanged."""
    batch = np.stack(images) if isinstance(images, list) else images
    if batch.ndim == 3:
        batch = batch[None]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=dtype)
