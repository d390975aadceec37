"""Abuse controls: the per-key rate limit (429 `rate_limited` with Retry-After) and per-route body limits."""

from __future__ import annotations

import base64
import json
import re
import time

import httpx
import pytest

from gateway.ratelimit import RateLimiter

pytestmark = pytest.mark.triton


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_rate_and_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    key, other = ("t", "a"), ("t", "b")
    assert [limiter.take(key) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    wait = limiter.take(key)
    assert wait == pytest.approx(0.5) and limiter.retry_after(wait) == 1
    assert limiter.take(other) == 0.0  # buckets are per key
    clock.now += 0.5  # one token back at 2/s
    assert limiter.take(key) == 0.0 and limiter.take(key) > 0
    clock.now += 60  # refills to the burst, never above it
    assert [limiter.take(key) for _ in range(4)].count(0.0) == 3
    assert RateLimiter(rate=0, burst=1).take(key) == 0.0  # 0 = off
    slow = RateLimiter(rate=0.1, burst=1, clock=clock)
    slow.take(key)
    assert slow.retry_after(slow.take(key)) == 10


def metric(url: str, line: str) -> float:
    match = re.search(rf"^{re.escape(line)} (\S+)$", httpx.get(f"{url}/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_rate_limit_per_key_before_any_work(spawn, keys, img, problem) -> None:
    rate = 0.5  # one token per 2 s: nothing refills between the checks below, however loaded the machine
    with spawn(gateway_rate_limit_rps=rate, gateway_rate_limit_burst=3) as gateway, \
            gateway.client(keys["acme"]) as acme, gateway.client(keys["acme_verify"]) as verify, \
            gateway.client(keys["globex"]) as globex, gateway.client() as anonymous:
        calls = metric(gateway.url, 'facestack_triton_request_duration_seconds_count{outcome="ok"}')
        assert [acme.get("/v1/galleries").status_code for _ in range(3)] == [200] * 3  # the burst
        limited = acme.get("/v1/galleries")
        body = problem(limited, 429, "rate_limited")
        retry_after = int(limited.headers["retry-after"])
        assert 1 <= retry_after <= 2 and "0.5 requests/s" in body["detail"]
        # Refused before the body is read or Triton is called (no pipeline call is counted).
        problem(acme.post("/v1/detect", files={"image": img.photo("obama.jpg")}), 429, "rate_limited")
        assert metric(gateway.url, 'facestack_triton_request_duration_seconds_count{outcome="ok"}') == calls
        assert metric(gateway.url, 'facestack_rejected_total{reason="key_rate_limit"}') == 2
        # Per key: another key of the same tenant, and another tenant, are unaffected.
        assert globex.get("/v1/galleries").status_code == 200
        assert verify.post("/v1/detect", files={"image": img.resized("biden.jpg", 320)}).status_code == 200
        # Requests without a valid key cost no key anything (they never reach a bucket).
        assert all(anonymous.get("/v1/galleries").status_code == 401 for _ in range(5))
        # Operations endpoints carry no key and are never limited.
        assert all(acme.get("/healthz").status_code == 200 for _ in range(10))
        time.sleep(retry_after + 0.1)  # the token Retry-After promised is there
        assert acme.get("/v1/galleries").status_code == 200


def test_body_limits_follow_the_route(spawn, keys, img, problem) -> None:
    """With 100 kB images: detect and identify take one image's worth (plus 1 MiB of fields), verify two,
    bulk enrolment sixteen; galleries and subjects 64 KiB."""
    image = img.resized("obama.jpg", 200)
    encoded = base64.b64encode(image).decode()
    one_image = 100_000 * 4 // 3 + (1 << 20)

    def padded(body: dict, size: int) -> bytes:  # valid JSON, padded with whitespace to `size` bytes
        raw = json.dumps(body).encode()
        return raw[:-1] + b" " * (size - len(raw)) + b"}"

    json_header = {"Content-Type": "application/json"}
    with spawn(gateway_max_image_bytes=100_000) as gateway, gateway.client(keys["acme"]) as client:
        verify = {"probe": {"image_base64": encoded}, "reference": {"image_base64": encoded}}
        detect = {"image": {"image_base64": encoded}}
        problem(client.post("/v1/detect", content=padded(detect, one_image + 10), headers=json_header),
                413, "image_too_large")
        assert client.post("/v1/detect", content=padded(detect, one_image - 10), headers=json_header
                           ).status_code == 200
        assert client.post("/v1/verify", content=padded(verify, one_image + 10), headers=json_header
                           ).status_code == 200  # two images' worth is allowed there
        problem(client.post("/v1/verify", content=padded(verify, 2 * one_image), headers=json_header),
                413, "image_too_large")
        gallery = {"gallery_id": "padded"}
        problem(client.post("/v1/galleries", content=padded(gallery, 65_537), headers=json_header),
                413, "image_too_large")
        assert client.post("/v1/galleries", content=padded(gallery, 65_000), headers=json_header).status_code == 201
        problem(client.patch("/v1/galleries/padded/subjects/x", content=padded({}, 70_000), headers=json_header),
                413, "image_too_large")
