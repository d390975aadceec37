"""Image decoding (with JPEG reduced-resolution decoding for large photos) and the detector's letterbox."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

# Formats the pipeline accepts, by their leading bytes. Checked before decoding so that a PDF or a GIF
# gets a clear "unsupported" error instead of whatever OpenCV makes of it.
_SIGNATURES: tuple[tuple[str, bytes], ...] = (
    ("jpeg", b"\xff\xd8\xff"),
    ("png", b"\x89PNG\r\n\x1a\n"),
)
# libjpeg decodes directly at 1/2, 1/4 or 1/8 of the size (far less work than a full decode + resize).
_REDUCED_FLAGS = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2}


class ImageError(ValueError):
    """Bytes that are not a decodable image. `code` is the stable error code the gateway reports."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def sniff_format(data: bytes) -> str | None:
    """'jpeg', 'png' or 'webp' from the magic bytes, else None (the one sniffer: the gateway admits by it too)."""
    for name, magic in _SIGNATURES:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


@dataclass(frozen=True)
class Decoded:
    """A decoded image, possibly at a reduced resolution: original pixel = `image` pixel x `factor`."""

    image: np.ndarray  # BGR uint8
    factor: int  # 1, 2, 4 or 8
    size: tuple[int, int]  # the original's height, width (EXIF rotation applied)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the JPEG header without decoding, or None if the header does not parse."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            return header.size
    except Exception:  # Pillow raises several types for a bad header; OpenCV then reports it properly
        return None


def reduction(long_side: int, min_long_side: int) -> int:
    """The largest JPEG decoding factor (8, 4, 2) that keeps the longer side >= min_long_side, else 1."""
    return next((f for f in _REDUCED_FLAGS if min_long_side and -(-long_side // f) >= min_long_side), 1)


def decode_reduced(data: bytes, max_pixels: int, min_long_side: int = 0) -> Decoded:
    """Decode JPEG/PNG/WebP bytes to a BGR uint8 image (alpha dropped, grey expanded, EXIF rotation applied).

    A JPEG whose longer side is at least twice `min_long_side` is decoded at 1/2, 1/4 or 1/8 of its size
    (the longer side staying >= min_long_side; 0 = always full size): a 12 MP photo needs neither its
    full resolution for detection nor for 112-150 px face crops. OpenCV refuses images above its own
    pixel cap (OPENCV_IO_MAX_IMAGE_PIXELS) before allocating, so a decompression bomb fails fast;
    `max_pixels` is the pipeline's tighter limit, on the original size.
    """
    if not data:
        raise ImageError("invalid_image", "empty image")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError("invalid_image", "not a JPEG, PNG or WebP image")
    header = _jpeg_size(data) if fmt == "jpeg" and min_long_side else None
    factor = reduction(max(header), min_long_side) if header else 1
    if header and header[0] * header[1] > max_pixels:
        raise ImageError("image_too_large", f"{header[0]}x{header[1]} pixels is above the limit of {max_pixels}")
    flag = _REDUCED_FLAGS.get(factor, cv2.IMREAD_COLOR)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if image is None or image.size == 0:
        raise ImageError("invalid_image", f"could not decode the {fmt} data (corrupt or truncated)")
    height, width = image.shape[:2]
    if factor > 1:
        assert header is not None
        # The header's size is before EXIF rotation: swap it if the decoded image came out turned.
        unturned = (-(-header[1] // factor), -(-header[0] // factor))
        height, width = (header[1], header[0]) if (height, width) == unturned else (header[0], header[1])
    if height * width > max_pixels:
        raise ImageError("image_too_large", f"{width}x{height} pixels is above the limit of {max_pixels}")
    return Decoded(image, factor, (height, width))


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """The image at full resolution (see decode_reduced)."""
    return decode_reduced(data, max_pixels).image


@dataclass(frozen=True)
class Letterbox:
    """An image scaled into a size x size canvas at the top-left; `scale` maps canvas -> original."""

    canvas: np.ndarray  # size x size x 3, BGR uint8
    scale: float  # original = canvas / scale


def letterbox(image: np.ndarray, size: int) -> Letterbox:
    """Scale the image so its longer side is `size` and pad bottom/right with black.

    A square input lets Triton batch detector requests from images of any shape together.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = image if scale == 1 else cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return Letterbox(canvas, scale)


def detector_size(height: int, width: int, sizes: tuple[int, ...]) -> int:
    """The smallest detector size that holds the image's longer side, else the largest (the image shrinks)."""
    return next((s for s in sorted(sizes) if max(height, width) <= s), max(sizes))


def fit(image: np.ndarray, sizes: tuple[int, ...]) -> Letterbox:
    """The detector input at about the image's own scale: the image is letterboxed into the smallest size that
    holds its longer side (so never upscaled beyond it: a 250 px photo goes into 320, not 640, a fifth of
    the detector's work), or shrunk into the largest."""
    return letterbox(image, detector_size(*image.shape[:2], sizes))


def to_nchw(images: list[np.ndarray] | np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """HWC uint8 image(s) -> NCHW `dtype` (float32 for the embedders, uint8 for the detector), channels unchanged."""
    batch = np.stack(images) if isinstance(images, list) else images
    if batch.ndim == 3:
        batch = batch[None]
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=dtype)
