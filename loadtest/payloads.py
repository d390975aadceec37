"""Request bodies, encoded once per process (the load generator's encoding is not the gateway's cost).

Images: the registry test photos (one face: obama*, biden; several faces: sample1-6) at their own size and
downscaled (several sizes, never upscaled), a gradient with no face, and deliberately bad files. Nothing is
written to disk. No Locust import: the seeder and the tests use this module too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from urllib3.filepost import encode_multipart_formdata

from facestack.artifacts import photo_bytes

WIDTHS = (None, 640, 400)  # None = the photo as published (626-1434 px wide, 180-600 KB)
GENUINE = ("obama2.jpg", "obama3.jpg")  # probes of the subject enrolled from REFERENCE
GENUINE_PNG = "32bit.png"  # obama2 as a 32-bit RGBA PNG (890 KB): the other accepted format, a larger body
REFERENCE = "obama.jpg"
IMPOSTOR = "biden.jpg"
GROUPS = tuple(f"sample{i}.jpg" for i in range(1, 7))  # 3-5 faces each
# A valid 1x1 GIF: the gateway answers 415 (only JPEG, PNG and WebP are accepted, by their bytes).
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


@dataclass(frozen=True)
class Photo:
    label: str  # e.g. "obama2.jpg@400"
    data: bytes
    mime: str = "image/jpeg"


@dataclass(frozen=True)
class Body:
    label: str
    data: bytes
    content_type: str


def resize(data: bytes, width: int) -> bytes:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image.shape[1] <= width:
        return data
    height = round(image.shape[0] * width / image.shape[1])
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


@cache
def photo(name: str, width: int | None = None) -> Photo:
    data = photo_bytes(name)
    if width is not None:
        return Photo(f"{name}@{width}", resize(data, width))
    return Photo(f"{name}@orig", data, "image/png" if name.endswith(".png") else "image/jpeg")


def sizes(name: str) -> list[Photo]:
    return [photo(name, w) for w in WIDTHS]


@cache
def no_face(width: int = 640, height: int = 480) -> Photo:
    """A smooth colour gradient: a valid image the detector finds no face in."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    image = np.dstack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                       np.broadcast_to((x + y) / 2, (height, width))]).astype(np.uint8)
    return Photo(f"gradient@{width}", cv2.imencode(".png", image)[1].tobytes(), "image/png")


@cache
def corrupt() -> Photo:
    """A JPEG whose header is intact (the size is readable) but whose pixel data is garbage: 400 invalid_image."""
    data = photo_bytes(REFERENCE)
    return Photo("corrupt.jpg", data[:2000] + bytes(range(256)) * 8)


def unsupported() -> Photo:
    return Photo("pixel.gif", GIF, "image/gif")


def multipart(label: str, fields: list[tuple[str, Photo | str]]) -> Body:
    encoded: list[tuple[str, str | tuple[str, bytes, str]]] = [
        (name, (value.label, value.data, value.mime) if isinstance(value, Photo) else value) for name, value in fields]
    data, content_type = encode_multipart_formdata(encoded)
    return Body(label, data, content_type)


class Payloads:
    """Every body the users send, by scenario; built once per Locust process (init event)."""

    def __init__(self, gallery: str, subject: str = "obama", impostor_subject: str = "biden",
                 missing_subject: str = "loadtest-no-such-subject") -> None:
        genuine = [p for name in GENUINE for p in sizes(name)] + [photo(GENUINE_PNG)]
        references, impostors = sizes(REFERENCE), sizes(IMPOSTOR)
        self.gallery, self.subject, self.impostor_subject = gallery, subject, impostor_subject

        def verify(probe: Photo, reference: Photo) -> Body:
            return multipart(f"{probe.label} vs {reference.label}", [("probe", probe), ("reference", reference)])

        def against(probe: Photo, subject: str, field: str = "subject_id") -> Body:
            return multipart(f"{probe.label} vs {subject}", [("probe", probe), ("gallery", gallery), (field, subject)])

        self.scenarios: dict[str, list[Body]] = {
            "verify_genuine": [verify(p, r) for p in genuine for r in references],
            "verify_impostor": [verify(p, r) for p in impostors for r in references],
            "verify_no_face": [verify(no_face(), references[1])],
            "subject_genuine": [against(p, subject) for p in genuine],
            "subject_impostor": [against(p, subject) for p in impostors],
            "subject_missing": [against(genuine[1], missing_subject)],
            "identify_genuine": [multipart(p.label, [("probe", p), ("gallery", gallery), ("top_k", "5")])
                                 for p in genuine],
            "identify_impostor": [multipart(p.label, [("probe", p), ("gallery", gallery), ("top_k", "5")])
                                  for p in impostors[1:]],  # the enrolled photo itself is not a probe
            "identify_no_face": [multipart("gradient", [("probe", no_face()), ("gallery", gallery)])],
            "detect_one": [multipart(p.label, [("image", p)]) for p in genuine + impostors],
            "detect_group": [multipart(p.label, [("image", p)]) for name in GROUPS for p in (photo(name),
                                                                                              photo(name, 1280))],
            "detect_none": [multipart(p.label, [("image", p)]) for p in (no_face(), no_face(1280, 960))],
            "detect_unsupported": [multipart("gif", [("image", unsupported())])],
            # bulk enrolment of one or two photos of one person
            "enrol_faces": [multipart(p.label, [("image", p)]) for p in genuine]
                           + [multipart(f"{a.label}+{b.label}", [("image", a), ("image", b)])
                              for a, b in zip(genuine[:3], genuine[3:6], strict=True)],
            "enrol_corrupt": [multipart("corrupt", [("image", corrupt())])],
        }

    def pick(self, scenario: str) -> Body:
        return random.choice(self.scenarios[scenario])

    def size_bytes(self) -> int:
        return sum(len(b.data) for bodies in self.scenarios.values() for b in bodies)
