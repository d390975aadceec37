"""Gateway fixtures: real gateways (uvicorn on a free port) in front of the real Triton and Milvus.

The shared gateway (`gw`) stores in the real Milvus 2.3.5 server from the `milvus` wheel (one per test
session, `milvus_server`), the production path; `spawn` gives gateways of their own on Milvus Lite files.

Keys: tenant "acme" has an admin key, a verify-only key and an enrol-only key; tenant "globex" has an admin
key. They are hashed into a keys file exactly as a Kubernetes Secret would mount them.
"""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image, ImageEnhance, ImageFilter

from facestack.artifacts import photo_bytes
from facestack.settings import THRESHOLDS_FILE, Settings
from facestack.triton.launcher import free_port
from gateway.app import create_app
from gateway.auth import hash_key, new_key
from localstack.milvus_server import MilvusServer

KEYS = {  # name -> (tenant, scopes)
    "acme": ("acme", ["admin"]),
    "acme_verify": ("acme", ["verify"]),
    "acme_enrol": ("acme", ["enrol"]),
    "globex": ("globex", ["admin"]),
}


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name -> plaintext key; `keys["file"]` is the hashed keys file."""
    plain = {name: new_key() for name in KEYS}
    records = [{"id": f"{name}-key", "tenant": tenant, "scopes": scopes, "hash": hash_key(plain[name])}
               for name, (tenant, scopes) in KEYS.items()]
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps({"keys": records}))
    return {**plain, "file": str(path)}


def gateway_settings(data_dir: Path, triton_url: str, keys_file: str, **overrides) -> Settings:
    values = {"data_dir": data_dir, "milvus_uri": str(data_dir / "milvus.db"), "triton_grpc_url": triton_url,
              "api_keys_file": Path(keys_file), "api_key": None, "log_level": "warning", **overrides}
    return Settings(**values)


class LiveGateway:
    """create_app(settings) served by uvicorn in a thread, over real HTTP on 127.0.0.1."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=10))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"gateway-{self.port}")

    def __enter__(self) -> LiveGateway:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


# The test server's Bounded staleness (common.gracefulTime): short, so erasure receipts wait 1 s, not 5 s.
SERVER_STALENESS_S = 1.0
# Its proxy time tick: 50 ms (Milvus' default 200), so a Strong read waits ~50 ms for the write it must see:
# the server's tests assert what is read, never how fast (localstack/milvus_server.py DEFAULT_TIME_TICK_MS).
SERVER_TIME_TICK_MS = 50


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator[MilvusServer]:
    """The real Milvus 2.3.5 standalone server (own data directory, free ports), killed at the end."""
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"), graceful_ms=int(SERVER_STALENESS_S * 1000),
                          time_tick_ms=SERVER_TIME_TICK_MS)
    with server:
        yield server


def server_settings(server: MilvusServer) -> dict:
    """Settings overrides for a gateway storing in `server`."""
    return {"milvus_uri": server.uri, "milvus_bounded_staleness_s": SERVER_STALENESS_S}


@pytest.fixture(scope="session")
def gw(triton, keys, milvus_server, tmp_path_factory) -> Iterator[LiveGateway]:
    """The shared gateway (default settings, the Milvus server); tests use unique gallery ids so they never
    collide."""
    data = tmp_path_factory.mktemp("gateway")
    with LiveGateway(gateway_settings(data, triton.grpc_url, keys["file"], **server_settings(milvus_server))) \
            as gateway:
        yield gateway


@pytest.fixture(scope="session")
def spawn(triton, keys, tmp_path_factory):
    """spawn(**settings overrides) -> a LiveGateway of its own (own Milvus Lite), to use in a with block."""

    def make(**overrides) -> LiveGateway:
        data = tmp_path_factory.mktemp("gw")
        triton_url = overrides.pop("triton_grpc_url", triton.grpc_url)
        return LiveGateway(gateway_settings(data, triton_url, keys["file"], **overrides))

    return make


@pytest.fixture(scope="session")
def uid():
    return unique


@pytest.fixture(scope="session")
def acme(gw, keys) -> Iterator[httpx.Client]:
    with gw.client(keys["acme"]) as client:
        yield client


@pytest.fixture(scope="session")
def globex(gw, keys) -> Iterator[httpx.Client]:
    with gw.client(keys["globex"]) as client:
        yield client


def unique(prefix: str = "g") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Images:
    """Registry photos and real variants of them (blurred, dark, tiny...), encoded as files."""

    photo = staticmethod(photo_bytes)

    @staticmethod
    def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
        out = io.BytesIO()
        image.save(out, fmt)
        return out.getvalue()

    def _base(self, name: str = "obama.jpg") -> Image.Image:
        return Image.open(io.BytesIO(photo_bytes(name))).convert("RGB")

    def blurred(self) -> bytes:  # sharpness ~9 (variance of Laplacian of the aligned crop)
        return self.encode(self._base().filter(ImageFilter.GaussianBlur(10)))

    def dark(self) -> bytes:  # mean grey of the face ~14
        return self.encode(ImageEnhance.Brightness(self._base()).enhance(0.1))

    def tiny_face(self) -> bytes:  # the face is ~25 px
        base = self._base()
        return self.encode(base.resize((90, round(90 * base.height / base.width))))

    def resized(self, name: str, width: int = 480) -> bytes:  # a smaller file, the face still large
        base = self._base(name)
        return self.encode(base.resize((width, round(width * base.height / base.width))))

    def blank(self) -> bytes:
        return self.encode(Image.new("RGB", (320, 240), (128, 128, 128)))

    def webp(self) -> bytes:
        return self.encode(self._base(), "WEBP")

    @staticmethod
    def png_header(width: int, height: int) -> bytes:
        """A 69-byte PNG whose header claims width x height (its pixel data is a few zero rows)."""

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))

    def corrupt_jpeg(self) -> bytes:
        """A valid JPEG header (Pillow reads the size) followed by garbage (the decoder fails)."""
        data = photo_bytes("obama.jpg")
        return data[:2000] + bytes(range(256)) * 8

    @staticmethod
    def gif() -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (8, 8)).save(out, "GIF")
        return out.getvalue()


@pytest.fixture(scope="session")
def img() -> Images:
    return Images()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status and body["title"] and "detail" in body
    return body


@pytest.fixture(scope="session")
def problem():
    return assert_problem


@pytest.fixture(scope="session")
def make_gallery(acme):
    """Create a gallery (unique id) with subjects enrolled from photos: {"subject": ["photo.jpg", ...]}."""

    def make(subjects: dict[str, list[str]] | None = None, client: httpx.Client | None = None,
             gallery: str | None = None, **body) -> str:
        client = client or acme
        gallery = gallery or unique()
        assert client.post("/v1/galleries", json={"gallery_id": gallery, **body}).status_code == 201
        for subject, photos in (subjects or {}).items():
            assert client.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": subject}).status_code == 201
            files = [("image", (p, photo_bytes(p))) for p in photos]
            r = client.post(f"/v1/galleries/{gallery}/subjects/{_path(subject)}/faces", files=files)
            assert r.status_code == 201, r.text
        return gallery

    return make


def _path(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


@pytest.fixture(scope="session")
def seg():
    """Percent-encode a path segment (ids may hold quotes, spaces, backslashes)."""
    return _path


@pytest.fixture(scope="session")
def default_point() -> dict[str, tuple[str, float]]:
    """Each embedder's committed default operating point (facestack/thresholds.json): model -> (name, threshold)."""
    committed = json.loads(THRESHOLDS_FILE.read_text())
    return {model: (entry["default_operating_point"],
                    entry["operating_points"][entry["default_operating_point"]]["threshold"])
            for model, entry in committed.items()}
