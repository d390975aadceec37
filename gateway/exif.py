"""EXIF orientation (tag 0x0112, values 1-8) for every accepted format.

Phones store pixels as the sensor read them and record the rotation in EXIF. `cv2.imdecode` applies it for
JPEG and PNG but ignores it in WebP (OpenCV 4.11, measured), so a rotated WebP reached the detector on
its side and gave `no_face`.

- `orient(pixels, orientation)`: pixels as stored -> as meant to be seen (numpy only; the Triton
  pipeline can call it after cv2.imdecode for the formats that decoder does not orient:
  `if fmt not in DECODER_ORIENTS: image = orient(image, orientation_of(data))`).
- `orientation_of(data)` / `orientation(im)`: the tag (Pillow reads it from the header of JPEG and WebP
  without decoding pixels; for PNG its getexif() decodes the whole image, so the gateway asks only WebP).
- `upright(image)`: what the gateway does today, before Triton: a WebP with an orientation other than 1
  is decoded, turned upright and re-encoded (JPEG quality 95, no EXIF); every other image passes
  untouched. Once the pipeline orients WebP itself, this step becomes a no-op to remove.

This module imports neither FastAPI nor the rest of the gateway, so the pipeline can import it.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from gateway.images import ImageData

ORIENTATION_TAG = 0x0112
DECODER_ORIENTS = frozenset({"jpeg", "png"})  # cv2.imdecode applies their EXIF orientation itself
REENCODE_QUALITY = 95


def orientation(im: Image.Image) -> int:
    """The EXIF orientation of an opened (not decoded) Pillow image; 1 when absent or invalid."""
    try:
        value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a corrupt EXIF block is no reason to refuse the image: treat it as upright
        return 1
    return value if 1 <= value <= 8 else 1


def orientation_of(data: bytes) -> int:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return orientation(im)
    except Exception:
        return 1


def orient(pixels: np.ndarray, value: int) -> np.ndarray:
    """Apply EXIF orientation `value` to H x W (x C) pixels (the same result as PIL.ImageOps.exif_transpose)."""
    if value == 2:
        out = pixels[:, ::-1]
    elif value == 3:
        out = pixels[::-1, ::-1]
    elif value == 4:
        out = pixels[::-1]
    elif value == 5:
        out = pixels.swapaxes(0, 1)
    elif value == 6:
        out = np.rot90(pixels, -1)
    elif value == 7:
        out = np.rot90(pixels, 2).swapaxes(0, 1)
    elif value == 8:
        out = np.rot90(pixels, 1)
    else:
        return pixels
    return np.ascontiguousarray(out)


def needs_upright(image: ImageData) -> bool:
    return image.orientation != 1 and image.format not in DECODER_ORIENTS


def upright(image: ImageData) -> ImageData:
    """The image as Triton must receive it to see it upright (CPU work only for a rotated WebP)."""
    if not needs_upright(image):
        return image
    pixels = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:  # undecodable: let the pipeline report it as it does for any corrupt image
        return image
    pixels = orient(pixels, image.orientation)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, REENCODE_QUALITY])
    if not ok:
        return image
    height, width = pixels.shape[:2]
    return replace(image, data=encoded.tobytes(), format="jpeg", width=width, height=height, orientation=1)
