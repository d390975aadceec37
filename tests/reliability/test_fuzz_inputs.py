"""Bad input, generated (hypothesis, seeded) and hand-made, against the image admission code and the
gateway process: truncated and corrupt JPEG/PNG/WebP, headers declaring huge dimensions, decompression
bombs inside and outside the pixel limit, zero bytes, non-images sent as images, giant and broken base64,
wrong content types, odd Unicode and very long ids, oversized and deeply nested metadata.

Every answer is a documented 4xx (or a 2xx for input that is in fact valid), never a 5xx; the gateway
process stays up and its RSS stays bounded (checked at the end, across both fuzz modules).
"""

from __future__ import annotations

import base64
import collections
import io
import os
import struct
import time
import zlib
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image

from facestack.artifacts import photo_bytes
from gateway.errors import CODES, ApiError
from gateway.images import admit
from gateway.schemas import valid_id
from tests.reliability.harness import check_bounded

pytestmark = pytest.mark.triton

SCALE = int(os.environ.get("FACESTACK_FUZZ_SCALE", "1"))  # multiplies every example count (docs: deep runs)
IMAGE_CODES = {"invalid_image", "image_too_large", "unsupported_media_type", "no_face", "multiple_faces",
               "face_too_small", "low_quality", "validation_error"}
STATS: collections.Counter[str] = collections.Counter()
SEEDED = settings(derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck), print_blob=True)


# ---- image bytes ----------------------------------------------------------------------------------

def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def _face(width: int = 160) -> Image.Image:
    image = Image.open(io.BytesIO(photo_bytes("obama.jpg"))).convert("RGB")
    return image.resize((width, round(width * image.height / image.width)))


BASES = {fmt: _encode(_face(), fmt) for fmt in ("JPEG", "PNG", "WEBP")}


def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 declaring width x height, a scan header, a few bytes, EOI."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    sos = b"\xff\xda" + struct.pack(">H", 12) + b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00"
    return b"\xff\xd8" + sof + sos + b"\x00" * 64 + b"\xff\xd9"


def webp_vp8x(width: int, height: int) -> bytes:
    payload = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


NON_IMAGES = [b"", b"\x00", b"\x00" * 4096, b"hello", b"<html><body>x</body></html>", b"%PDF-1.7\n%\xe2\xe3",
              b"PK\x03\x04" + b"\x00" * 26, b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"GIF89a\x01\x00\x01\x00",
              b"BM" + b"\x00" * 60, b"II*\x00" + b"\x00" * 60, "é€😀".encode() * 100, b"\xff\xd8\xff",
              b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8 "]


@st.composite
def bad_images(draw) -> bytes:
    kind = draw(st.sampled_from(["truncate", "corrupt", "splice", "png_dims", "jpeg_dims", "webp_dims",
                                 "magic_noise", "non_image"]))
    STATS[f"image:{kind}"] += 1
    base = BASES[draw(st.sampled_from(sorted(BASES)))]
    if kind == "truncate":
        return base[:draw(st.integers(0, len(base) - 1))]
    if kind == "corrupt":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 16))):
            # half the hits in the first 256 bytes (headers, tables), half anywhere
            limit = 256 if draw(st.booleans()) else len(data)
            data[draw(st.integers(0, min(limit, len(data)) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "splice":
        other = BASES[draw(st.sampled_from(sorted(BASES)))]
        return base[:draw(st.integers(0, 512))] + other[draw(st.integers(0, len(other) - 1)):]
    if kind == "png_dims":
        return png_header(draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)))
    if kind == "jpeg_dims":
        return jpeg_header(draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
    if kind == "webp_dims":
        return webp_vp8x(draw(st.integers(1, 1 << 24)), draw(st.integers(1, 1 << 24)))
    if kind == "magic_noise":
        magic = draw(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8 "]))
        return magic + draw(st.binary(max_size=2048))
    return draw(st.sampled_from(NON_IMAGES))


@settings(SEEDED, max_examples=300 * SCALE)
@given(data=bad_images())
def test_admission_never_raises_anything_but_stable_codes(data: bytes) -> None:
    """Pillow reads only headers: any bytes end as an admitted image within the limits or a stable code,
    fast (no pixel decoding), never another exception."""
    started = time.perf_counter()
    try:
        image = admit(data, max_bytes=10 << 20, max_pixels=40_000_000)
        assert image.width * image.height <= 40_000_000 and image.format in ("jpeg", "png", "webp")
    except ApiError as exc:
        assert exc.code in ("invalid_image", "image_too_large", "unsupported_media_type"), exc.code
    assert time.perf_counter() - started < 1.0


def assert_refused_properly(response: httpx.Response, allowed: set[str] = IMAGE_CODES) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json"), response.text[:300]
        body = response.json()
        assert body["code"] in allowed and CODES[body["code"]][0] == response.status_code, body
    STATS[f"status:{response.status_code}"] += 1


CONTENT_TYPES = ["image/jpeg", "image/png", "image/webp", "application/octet-stream", "text/plain", "image/gif",
                 "application/json", ""]


@settings(SEEDED, max_examples=25 * SCALE)
@given(data=bad_images(), as_json=st.booleans(), content_type=st.sampled_from(CONTENT_TYPES),
       filename=st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40),
       route=st.sampled_from(["detect", "verify", "identify", "enrol"]))
def test_bad_images_over_http(fuzz_target, keys, data, as_json, content_type, filename, route) -> None:
    """Through the whole path: admission, then Triton's decoder for what passes the header check."""
    field = {"detect": "image", "enrol": "image"}.get(route, "probe")
    path = {"detect": "/v1/detect", "verify": "/v1/verify", "identify": "/v1/identify",
            "enrol": "/v1/galleries/warm/subjects/s/faces"}[route]
    extra = {"verify": {"reference": BASES["JPEG"]}, "identify": {"gallery": "warm"}}.get(route, {})
    with fuzz_target.gateway.client(keys["acme"]) as client:
        if as_json:
            body = {field: {"image_base64": base64.b64encode(data).decode()}}
            body.update({k: ({"image_base64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v)
                         for k, v in extra.items()})
            response = client.post(path, json=body)
        else:
            files = {field: (filename, data, content_type)}
            files.update({k: ("ref.jpg", v, "image/jpeg") for k, v in extra.items() if isinstance(v, bytes)})
            response = client.post(path, files=files, data={k: v for k, v in extra.items() if isinstance(v, str)})
        assert_refused_properly(response, IMAGE_CODES | {"conflict"})  # enrol: the warm subject's template cap
        if route == "enrol" and response.status_code == 201:  # a corrupt-but-decodable face: undo it
            for face in response.json()["faces"]:
                client.delete(f"{path}/{face['face_id']}")


# ---- decompression bombs, giant base64, content types ---------------------------------------------

@pytest.mark.parametrize("name,data,code", [
    ("png 100000x100000 in 69 bytes", png_header(100_000, 100_000), "image_too_large"),
    ("png 2^31-1 square", png_header(2**31 - 1, 2**31 - 1), "image_too_large"),
    ("png 0x0", png_header(0, 0), "invalid_image"),
    ("jpeg 65535x65535 in 120 bytes", jpeg_header(65535, 65535), "image_too_large"),
    ("jpeg 7000x6000 (42 MP, above 40)", jpeg_header(7000, 6000), "image_too_large"),
    ("webp VP8X 16384x16384 canvas", webp_vp8x(16384, 16384), None),
])
def test_bombs_declared_in_headers_refused_before_decoding(fuzz_target, keys, name, data, code) -> None:
    with fuzz_target.gateway.client(keys["acme"]) as client:
        started = time.perf_counter()
        response = client.post("/v1/detect", files={"image": ("bomb", data, "image/png")})
        elapsed = time.perf_counter() - started
    assert_refused_properly(response)
    assert response.status_code in (400, 413) and (code is None or response.json()["code"] == code), response.text
    assert elapsed < 2.0, f"{name}: {elapsed:.2f}s (nothing should decode)"


def test_real_bomb_inside_the_pixel_limit_is_decoded_once_and_bounded(fuzz_target, keys) -> None:
    """1.6 KB of lossless WebP that decodes to 6320x6320 (40 MP, 120 MB of pixels): legal, so Triton
    decodes it (the gateway never decodes pixels); the answer is a normal one in bounded time."""
    bomb = _encode(Image.new("RGB", (6320, 6320)), "WEBP", lossless=True)
    assert len(bomb) < 4096
    before = fuzz_target.gateway.rss_mb()
    with fuzz_target.gateway.client(keys["acme"]) as client:
        started = time.perf_counter()
        response = client.post("/v1/detect", files={"image": bomb})
        elapsed = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["faces"] == [], response.text
    assert response.json()["image"] == {"width": 6320, "height": 6320}
    assert fuzz_target.gateway.rss_mb() - before < 20  # the pixels live in Triton, not in the gateway
    print(f"\nFIGURE bomb_40mp_webp bytes={len(bomb)} seconds={elapsed:.2f}")


def test_giant_base64(fuzz_target, keys, problem) -> None:
    with fuzz_target.gateway.client(keys["acme"]) as client:
        # Above the image limit but inside the detect body limit: refused by its length, before decoding.
        over = "A" * ((10 << 20) * 4 // 3 + 400)
        problem(client.post("/v1/detect", json={"image": {"image_base64": over}}), 413, "image_too_large")
        # 40 MB: above the body limit of a one-image route, refused from Content-Length without reading it.
        started = time.perf_counter()
        huge = b'{"image": {"image_base64": "' + b"A" * (40 << 20) + b'"}}'
        response = client.post("/v1/detect", content=huge, headers={"Content-Type": "application/json"})
        problem(response, 413, "image_too_large")
        assert time.perf_counter() - started < 5
        # Broken base64 of every kind: 400, never 500.
        for text in ("=", "A", "AB=C", "####", "data:image/png;base64,", "data:;base64,@@", " \n\t ", "é" * 50,
                     "QUJD" * 3 + "=" * 10):
            assert_refused_properly(client.post("/v1/detect", json={"image": {"image_base64": text}}))
        # A bulk enrolment of 17 (one above the limit) base64 images: validation_error, nothing stored.
        tiny = base64.b64encode(BASES["JPEG"]).decode()
        response = client.post("/v1/galleries/warm/subjects/s/faces",
                               json={"image": [{"image_base64": tiny}] * 17})
        problem(response, 422, "validation_error")


@pytest.mark.parametrize("content_type,body", [
    ("text/plain", b"hello"),
    ("application/x-www-form-urlencoded", b"image=abc"),
    ("multipart/form-data", b"--x\r\n\r\n"),  # no boundary
    ("multipart/form-data; boundary=zzz", b"--zzz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc"),
    ("multipart/mixed; boundary=zzz", b"--zzz--"),
    ("application/json; charset=utf-16", '{"image": {"image_base64": "AAAA"}}'.encode("utf-16")),
    ("application/json", b'{"image": ' * 5000 + b"1" + b"}" * 5000),  # deeply nested
    ("application/json", b"\xff\xfe\x00garbage"),
    ("image/jpeg", BASES["JPEG"]),  # a raw image body instead of multipart or JSON
    ("application/xml", b"<image/>"),
    ("", b""),
])
def test_wrong_content_types(fuzz_target, keys, content_type, body) -> None:
    with fuzz_target.gateway.client(keys["acme"]) as client:
        for path in ("/v1/detect", "/v1/identify", "/v1/galleries/warm/subjects/s/faces"):
            response = client.post(path, content=body, headers={"Content-Type": content_type})
            assert_refused_properly(response)
            assert response.status_code in (400, 413, 415, 422), (path, response.text)


# ---- ids and metadata -----------------------------------------------------------------------------

ODD = st.one_of(
    st.text(min_size=0, max_size=140),  # any Unicode but lone surrogates: controls, RTL, combining marks...
    st.text(alphabet=st.sampled_from(list("\"'\\%/?#&=+ .~\u00a0\u200b\u202e\ufeff😀ß")), max_size=20),
    st.builds(lambda n: "x" * n, st.integers(120, 20_000)),
)


@settings(SEEDED, max_examples=30 * SCALE)
@given(gallery_id=ODD)
def test_odd_ids_round_trip_or_are_refused(fuzz_target, keys, gallery_id) -> None:
    """An id the rules allow is created, read back byte-for-byte through a percent-encoded path, and erased;
    any other id is a 422 (or a 404 for a path that cannot name it), never a 5xx."""
    with fuzz_target.gateway.client(keys["acme"]) as client:
        created = client.post("/v1/galleries", json={"gallery_id": gallery_id})
        assert_refused_properly(created, {"validation_error", "conflict"})
        path = f"/v1/galleries/{quote(gallery_id, safe='')}"
        if not valid_id(gallery_id):
            assert created.status_code == 422, created.text
            # Beyond 16 kB the request line itself is refused; "", "." and ".." name no path segment.
            if len(path) < 16_000 and gallery_id not in ("", ".", ".."):
                fetched = client.get(path)
                # 307: an id with "/" is no longer one segment once decoded; the router redirects the slashes
                assert fetched.status_code in (307, 404, 405, 422), fetched.text[:200]
            STATS["id:refused"] += 1
            return
        # 409: the schema fuzzing (same gateway) created this id already; it must read back all the same.
        assert created.status_code in (201, 409) and created.json()["gallery_id"] == gallery_id, created.text
        fetched = client.get(path)
        assert fetched.status_code == 200 and fetched.json()["gallery_id"] == gallery_id, fetched.text
        listed = client.get("/v1/galleries", params={"limit": 1000}).json()["items"]
        assert gallery_id in [g["gallery_id"] for g in listed]
        erased = client.delete(path)
        assert erased.status_code == 200 and erased.json()["gallery_id"] == gallery_id
        assert client.get(path).status_code == 404
        STATS["id:round_trip"] += 1


def _deep(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("metadata,expected", [
    ({"k": "v" * 8000}, 201),
    ({"k": "v" * 8200}, 422),  # above 8192 bytes of JSON
    ({"k": "€" * 1300}, 201),  # 3900 bytes as UTF-8, 7800 escaped (the rule counts escaped JSON): within
    ({str(i): i for i in range(2000)}, 422),
    (_deep(31), 201),  # 32 objects deep
    (_deep(32), 422),  # nesting: 32 levels at most (deeper metadata was stored, then every read of it was a 500)
    (_deep(900), 422),
    ({"\u0000": "\u202e", "": None, "k": [None, True, 1.5e308, -0.0]}, 201),
])
def test_metadata_sizes_and_shapes(fuzz_target, keys, uid, metadata, expected) -> None:
    with fuzz_target.gateway.client(keys["acme"]) as client:
        response = client.post("/v1/galleries", json={"gallery_id": uid("m"), "metadata": metadata})
        assert_refused_properly(response, {"validation_error", "image_too_large"})
        STATS[f"metadata:{response.status_code}"] += 1
        if expected == 201:
            assert response.status_code == 201, response.text[:300]
            assert client.get(response.headers["location"]).json()["metadata"] == metadata
        elif expected == 422:
            assert response.status_code in (413, 422), response.text[:300]


def test_oversized_json_bodies_refused_from_their_length(fuzz_target, keys, problem) -> None:
    """Routes without images accept 64 KiB: a 60 MB JSON body used to be parsed on the event loop."""
    with fuzz_target.gateway.client(keys["acme"]) as client:
        body = b'{"gallery_id": "big", "metadata": {"k": [' + b"0," * (30 << 20) + b"0]}}"
        started = time.perf_counter()
        problem(client.post("/v1/galleries", content=body, headers={"Content-Type": "application/json"}),
                413, "image_too_large")
        assert time.perf_counter() - started < 5

        def chunks():  # the same without Content-Length: cut off at the limit while streaming
            yield b'{"gallery_id": "big", "metadata": {"k": ['
            for _ in range(200):
                yield b"0," * 32768
            yield b"0]}}"

        problem(client.post("/v1/galleries", content=chunks(), headers={"Content-Type": "application/json"}),
                413, "image_too_large")
        problem(client.patch("/v1/galleries/warm/subjects/s", content=b" " * 70_000 + b"{}",
                             headers={"Content-Type": "application/json"}), 413, "image_too_large")
        # Nested deeper than the JSON parser recurses (within the 64 KiB): a 422, not a RecursionError.
        deep = b'{"gallery_id": "deep", "metadata": ' + b'{"a":' * 10_000 + b"{}" + b"}" * 10_000 + b"}"
        problem(client.post("/v1/galleries", content=deep, headers={"Content-Type": "application/json"}),
                422, "validation_error")


def test_fuzzed_gateway_stayed_up_with_bounded_memory(fuzz_target, keys) -> None:
    rss, fds = check_bounded(fuzz_target, keys)
    print(f"\nFIGURE fuzz_inputs {dict(sorted(STATS.items()))} rss_mb={fuzz_target.baseline_rss_mb:.0f}->{rss:.0f} "
          f"fds={fuzz_target.baseline_fds}->{fds}")
