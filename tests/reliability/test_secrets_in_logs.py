"""No secrets and no templates in the logs, at the most verbose level the gateway can run.

The fuzz gateway (conftest `fuzz_target`) runs with uvicorn's `trace` level (every ASGI message) and the
access log, and has served every fuzz case by the time this module runs (it sorts after test_fuzz_*).
Its log and audit trail must hold no API key (plaintext or hash), no template (the embedding of the image
it enrolled, computed here by calling Triton directly; no run of many floats), and no base64 image data.
"""

from __future__ import annotations

import asyncio
import base64
import re

import numpy as np
import pytest

from gateway.auth import hash_key
from gateway.metrics import Metrics
from gateway.triton_client import TritonPipeline

pytestmark = pytest.mark.triton
FLOAT_RUN = re.compile(r"(?:-?\d+\.\d{3,}(?:e-?\d+)?[,\s]+){8,}")  # eight or more floats in a row
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}")


def embedding(triton_url: str, image: bytes) -> np.ndarray:
    async def run() -> np.ndarray:
        pipeline = TritonPipeline(triton_url, timeout=30, concurrency=1, queue=1, retry_after=1,
                                  backend_retry_after=1, metrics=Metrics())
        await pipeline.start()
        try:
            return (await pipeline.analyze(image, embedder="sface")).faces[0].embedding
        finally:
            await pipeline.close()

    return asyncio.run(run())


def test_logs_hold_no_keys_templates_or_images(fuzz_target, keys, img, triton) -> None:
    gateway = fuzz_target.gateway
    wrong = "fs_" + "Q" * 43  # a key-shaped secret the gateway does not know
    probe = img.resized("obama2.jpg", 300)
    with gateway.client(keys["acme"]) as client:  # this module's own traffic, besides all the fuzzing
        assert client.post("/v1/identify", json={"probe": {"image_base64": base64.b64encode(probe).decode()},
                                                 "gallery": "warm"}).status_code == 200
        assert client.post("/v1/verify", files={"probe": probe}, data={"gallery": "warm", "subject_id": "s"},
                           headers={"X-Request-ID": "secrets-check"}).status_code == 200
        assert client.get("/v1/galleries", headers={"X-API-Key": wrong}).status_code == 401
    log = gateway.log_text()
    audit = (gateway.data_dir / "audit.jsonl").read_text()
    assert "secrets-check" in audit and "TRACE" in log and '"GET /v1/galleries' in log  # the logs are live

    for name in ("acme", "acme_verify", "acme_enrol", "globex"):
        for secret in (keys[name], hash_key(keys[name]), hash_key(keys[name]).split(":")[1]):
            assert secret not in log and secret not in audit, f"{name}'s key ({secret[:8]}...) is in a log"
    assert wrong not in log and wrong not in audit

    template = embedding(triton.grpc_url, img.resized("obama.jpg", 300))  # what the warm-up enrolled
    for value in template[:16]:
        for text in (repr(float(value)), f"{value:.6f}", f"{value:.4f}"):
            if len(text.lstrip("-0.")) >= 4:  # long enough to be this template's, not a coincidence
                assert text not in log and text not in audit, f"template component {text} is in a log"
    for name, text in (("log", log), ("audit", audit)):
        assert not FLOAT_RUN.search(text), f"a run of floats in the {name}: {FLOAT_RUN.search(text).group()[:200]}"
        # Long runs of one letter are fuzzed ids ("xxxx..."), not data: data uses most of the alphabet.
        runs = [m.group() for m in BASE64_RUN.finditer(text) if len(set(m.group())) > 20]
        assert not runs, f"base64 data in the {name}: {runs[0][:80]}..."
    print(f"\nFIGURE logs_checked log_bytes={len(log)} log_lines={log.count(chr(10))} "
          f"audit_lines={audit.count(chr(10))}")
