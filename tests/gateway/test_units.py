"""Gateway parts that need no Triton: admission of images, keys, audit chain, operating points, settings,
the store's escaping against a real Milvus Lite, and the local run's key handling."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facestack.accuracy import openset
from facestack.settings import THRESHOLDS_FILE, Settings
from gateway.app import create_app
from gateway.audit import AuditLog, verify_chain
from gateway.auth import KeyConfigError, KeyStore, hash_key
from gateway.errors import ApiError
from gateway.images import admit, decode_base64
from gateway.metrics import Metrics
from gateway.operating_points import OperatingPoints
from gateway.store import Store, quote
from gateway.timing import union_ms
from localstack import run as local

LIMITS = {"max_bytes": 1 << 20, "max_pixels": 4_000_000}


def encoded(fmt: str, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(out, fmt)
    return out.getvalue()


# ---- image admission ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,name", [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp")])
def test_admit_reads_only_the_header(fmt, name) -> None:
    image = admit(encoded(fmt), **LIMITS)
    assert (image.format, image.width, image.height) == (name, 64, 48)


@pytest.mark.parametrize("data,code", [
    (encoded("GIF"), "unsupported_media_type"), (encoded("BMP"), "unsupported_media_type"),
    (encoded("TIFF"), "unsupported_media_type"), (b"hello", "unsupported_media_type"),
    (b"", "invalid_image"), (b"\xff\xd8\xff\xe0\x00", "invalid_image"), (encoded("PNG")[:20], "invalid_image"),
    (b"\x00" * (LIMITS["max_bytes"] + 1), "image_too_large"),
])
def test_admit_refuses_with_stable_codes(data, code) -> None:
    with pytest.raises(ApiError) as err:
        admit(data, **LIMITS)
    assert err.value.code == code


def test_admit_pixel_limit_before_decoding() -> None:
    with pytest.raises(ApiError) as err:
        admit(encoded("PNG", (2100, 2000)), **LIMITS)
    assert err.value.code == "image_too_large" and "2100x2000" in err.value.detail


def test_base64_accepts_data_urls_and_wrapped_lines() -> None:
    data = encoded("PNG")
    text = base64.encodebytes(data).decode()  # wrapped at 76 columns, like `base64`
    assert decode_base64(text, max_bytes=1 << 20, field="f") == data
    assert decode_base64("data:image/png;base64," + base64.b64encode(data).decode(), max_bytes=1 << 20,
                         field="f") == data
    with pytest.raises(ApiError) as err:
        decode_base64("A" * 4000, max_bytes=1000, field="f")
    assert err.value.code == "image_too_large"


# ---- keys -----------------------------------------------------------------------------------------

def write_keys(tmp_path: Path, records) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(records))
    return path


def test_keys_file_is_hashed_and_bound_to_tenant_and_scopes(tmp_path) -> None:
    path = write_keys(tmp_path, {"keys": [{"id": "k1", "tenant": "acme", "scopes": ["verify"],
                                           "hash": hash_key("secret-1")}]})
    store = KeyStore.load(api_key="env-key", keys_file=path)
    principal = store.lookup("secret-1")
    assert (principal.key_id, principal.tenant, principal.allows("verify"), principal.allows("enrol")) == \
        ("k1", "acme", True, False)
    env = store.lookup("env-key")
    assert env.tenant == "default" and env.allows("admin") and env.allows("enrol")
    assert store.lookup("secret-2") is None
    assert "secret-1" not in path.read_text()


@pytest.mark.parametrize("record", [
    {"id": "k", "tenant": "t", "scopes": ["verify"], "hash": "plain-text-key"},
    {"id": "k", "tenant": "t", "scopes": ["root"], "hash": hash_key("x")},
    {"id": "k", "tenant": "t/../u", "scopes": ["verify"], "hash": hash_key("x")},
    {"id": "k", "scopes": ["verify"], "hash": hash_key("x")},
])
def test_bad_key_records_are_refused(tmp_path, record) -> None:
    with pytest.raises(KeyConfigError):
        KeyStore.load(api_key=None, keys_file=write_keys(tmp_path, [record]))


def test_auth_cli_mints_a_loadable_record(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway.auth", "new", "--tenant", "acme", "--scopes",
                             "verify,enrol", "--id", "ci"], capture_output=True, text=True, check=True)
    record = json.loads(result.stdout)
    key = result.stderr.split(": ")[-1].strip()
    store = KeyStore.load(api_key=None, keys_file=write_keys(tmp_path, [record]))
    assert store.lookup(key).key_id == "ci" and key not in result.stdout


def test_gateway_refuses_to_start_without_keys(tmp_path) -> None:
    app = create_app(Settings(data_dir=tmp_path, api_key=None, api_keys_file=None, milvus_uri=str(tmp_path / "m.db"),
                              audit_log=str(tmp_path / "a.jsonl")))

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(RuntimeError, match="no API keys"):
        asyncio.run(start())


# ---- audit ----------------------------------------------------------------------------------------

def test_audit_chain_survives_restart_and_detects_tampering(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.write("verify", tenant="t", similarity=0.5, vector=[0.1] * 128, image_base64="xx")
    log.close()
    log = AuditLog(path)  # a restart continues the chain
    log.write("enrol", tenant="t", faces=1)
    log.close()
    assert verify_chain(path) == 2
    first = json.loads(path.read_text().splitlines()[0])
    assert "vector" not in first and "image_base64" not in first  # only known fields are written
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace('"similarity":0.5', '"similarity":0.9'), lines[1]]) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        verify_chain(path)


# ---- operating points -----------------------------------------------------------------------------

def test_operating_points_from_a_calibrated_manifest(tmp_path) -> None:
    model_dir = tmp_path / "face_embedder" / "1"
    model_dir.mkdir(parents=True)
    (model_dir / "manifest.json").write_text(json.dumps({
        "thresholds": {"fmr_1e-3": {"threshold": 0.31, "impostor_pairs": 120000},
                       "fmr_1e-4": {"threshold": 0.42, "impostor_pairs": 120000}},
        "default_operating_point": "fmr_1e-3"}))
    points = OperatingPoints(tmp_path)
    default = points.decide("face_embedder", "1")
    assert (default.name, default.threshold, default.fmr, default.calibrated) == ("fmr_1e-3", 0.31, 1e-3, True)
    assert points.decide("face_embedder", "1", name="fmr_1e-4").fmr == 1e-4
    assert points.decide("face_embedder", "1", threshold=0.5).name == "custom"
    for bad in ({"threshold": 0.1}, {"threshold": 0.99}, {"name": "fmr_1e-9"}):
        with pytest.raises(ApiError) as err:
            points.decide("face_embedder", "1", **bad)
        assert err.value.code == "validation_error"


def test_operating_points_fall_back_to_the_committed_thresholds(tmp_path) -> None:
    points = OperatingPoints(tmp_path)  # no manifest here: facestack/thresholds.json
    committed = json.loads(THRESHOLDS_FILE.read_text())
    for model in ("face_embedder", "face_embedder_dlib"):
        decision = points.decide(model, "1")
        default = committed[model]["default_operating_point"]
        entry = committed[model]["operating_points"][default]
        assert (decision.name, decision.threshold) == (default, entry["threshold"])
        assert decision.calibrated is ("impostor_pairs" in entry)
        # no override looser than the loosest calibrated point
        loosest = min(p["threshold"] for p in committed[model]["operating_points"].values())
        with pytest.raises(ApiError):
            points.decide(model, "1", threshold=loosest - 0.01)
    with pytest.raises(ApiError) as err:
        points.decide("some_other_model", "3")
    assert err.value.code == "backend_unavailable"


def test_identify_thresholds_follow_the_gallery_size() -> None:
    """The committed calibration: identify's threshold for N templates keeps the stated FPIR by the FPIR model;
    a 1:1 point is refused for identify; a best-of-k verify gets a stricter threshold at the same FMR."""
    points = OperatingPoints(Path("/nonexistent"))  # the committed facestack/thresholds.json
    committed = json.loads(THRESHOLDS_FILE.read_text())["face_embedder"]
    ladder = committed["fmr_ladder"]
    sizes = (1, 10, 1000, 100_000, 10**9)
    decisions = [points.decide_identify("face_embedder", "1", n) for n in sizes]
    assert [d.threshold for d in decisions] == sorted(d.threshold for d in decisions)
    assert all(d.name == "fpir_1e-2" and d.fpir == 0.01 for d in decisions)
    for n, d in zip(sizes, decisions, strict=True):
        assert d.gallery_size == n
        assert openset.fpir_for(d.fmr, n) == pytest.approx(0.01)
    # one template: exactly the ladder's threshold at FMR 1e-2, which is the 1:1 point's
    assert decisions[0].threshold == committed["operating_points"]["fmr_1e-2"]["threshold"]
    assert decisions[2].calibrated and not decisions[-1].calibrated  # 1e9 templates: beyond what LFW resolves
    strict = points.decide_identify("face_embedder", "1", 1000, name="fpir_1e-3")
    assert strict.threshold > decisions[2].threshold
    with pytest.raises(ApiError) as err:
        points.decide_identify("face_embedder", "1", 1000, name="fmr_1e-3")
    assert err.value.code == "validation_error" and "1:1" in err.value.detail
    one = points.decide("face_embedder", "1")
    three = points.decide("face_embedder", "1", templates=3)
    assert three.fmr == one.fmr and three.threshold > one.threshold
    assert three.threshold == openset.threshold_at(ladder, openset.fmr_for(one.fmr, 3))[0]


def test_backend_time_counts_overlapping_calls_once() -> None:
    assert union_ms([(0.0, 0.1), (0.05, 0.15), (0.2, 0.25)]) == pytest.approx(200.0)


# ---- settings: the environment names the Helm chart relies on --------------------------------------

def test_settings_environment_names(monkeypatch, tmp_path) -> None:
    env = {"PORT": "9100", "MILVUS_URI": "http://milvus:19530", "MILVUS_TOKEN": "root:Milvus",
           "FACESTACK_API_KEY": "k", "FACESTACK_API_KEYS_FILE": str(tmp_path / "keys.json"),
           "FACESTACK_TRITON_GRPC_URL": "triton:8001", "FACESTACK_LOG_LEVEL": "debug",
           "FACESTACK_GATEWAY_TRITON_CONCURRENCY": "3"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert (s.port, s.milvus_uri, s.milvus_token.get_secret_value(), s.api_key.get_secret_value()) == \
        (9100, "http://milvus:19530", "root:Milvus", "k")
    assert (s.api_keys_file, s.triton_grpc_url, s.log_level, s.gateway_triton_concurrency) == \
        (tmp_path / "keys.json", "triton:8001", "debug", 3)


# ---- the store against a real Milvus Lite ---------------------------------------------------------

QUOTED = ["plain", 'a"b', "a\\", '\\"', "it's", 'x" or tenant != "', "ünï 字"]


def test_quote_round_trips_through_a_lite_filter(tmp_path) -> None:
    """Every awkward id matches itself, and only itself, in real Milvus Lite filters."""

    async def run() -> None:
        store = Store(str(tmp_path / "m.db"), timeout=10, workers=2, metrics=Metrics(), retry_after=1)
        try:
            vectors = np.eye(2, 128, dtype=np.float32)
            for value in QUOTED:
                await store.create_gallery("t", value, "sface", {})
                await store.create_subject("t", value, value, None, {})
                await store.add_templates("t", value, value, "face_embedder", "1", vectors, 8)
            for value in QUOTED:
                hits = await store.search("t", value, "face_embedder", "1", vectors[0], 5, 8)
                assert [h.subject for h in hits] == [value] and hits[0].similarity == pytest.approx(1.0)
                rows, total = await store.list_subjects("t", value, 10, 0)
                assert total == 1 and rows[0]["subject"] == value
                assert len(await store.subject_templates("t", value, value, "face_embedder", "1")) == 2
            assert await store.search("u", QUOTED[0], "face_embedder", "1", vectors[0], 5, 8) == []  # other tenant
        finally:
            store.close()

    asyncio.run(run())
    assert quote('a"b\\') == '"a\\"b\\\\"'


def test_search_widens_until_top_k_distinct_subjects(tmp_path) -> None:
    """One subject's many near-duplicate templates must not crowd the next subject out of the top_k."""

    async def run() -> list:
        store = Store(str(tmp_path / "m.db"), timeout=10, workers=2, metrics=Metrics(), retry_after=1)
        try:
            rng = np.random.default_rng(1)
            probe = rng.standard_normal(128).astype(np.float32)
            probe /= np.linalg.norm(probe)
            crowd = probe + 0.01 * rng.standard_normal((12, 128)).astype(np.float32)
            other = probe + 0.5 * rng.standard_normal((1, 128)).astype(np.float32)
            await store.create_gallery("t", "g", "sface", {})
            for subject, vectors in (("crowd", crowd), ("other", other), ("third", -other)):
                await store.create_subject("t", "g", subject, None, {})
                unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
                await store.add_templates("t", "g", subject, "face_embedder", "1", unit, 16)
            return await store.search("t", "g", "face_embedder", "1", probe, 2, 16)
        finally:
            store.close()

    assert [h.subject for h in asyncio.run(run())] == ["crowd", "other"]


# ---- the local run's API key ----------------------------------------------------------------------

def test_local_key_generated_once_saved_private_and_env_wins(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, api_key=None)
    key, source = local.local_key(settings)
    assert "generated" in source and key.startswith("fs_")
    path = tmp_path / "api_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert local.local_key(settings) == (key, str(path))
    assert local.local_key(Settings(data_dir=tmp_path, api_key="mine")) == ("mine", "FACESTACK_API_KEY")
