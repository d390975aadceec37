"""`helm test` check: every gateway URL given must be ready and answer one verify call.

    python check.py http://release-facestack-gateway:8000 [http://release-facestack-gateway-canary:8000 ...]

For each URL: GET /readyz until 200 (up to READY_TIMEOUT_S), then POST /v1/verify with the multipart parts
`probe` and `reference` and the `X-API-Key` header from $FACESTACK_TEST_API_KEY. The call must return 200 with a
JSON object; if that object carries a match decision (`match`, `verified`, `same_person` or `is_match`), it must
be true.

The two photos are two different photos of one person, `obama.jpg` and `obama2.jpg` from PyPI
face-recognition==1.3.0, read with the project's pinned, sha256-checked fetcher (`facestack.artifacts.photo`). The
gateway image fetches them at build time into $FACESTACK_CACHE_DIR (/opt/facestack/.cache), so the pod (which
runs that image) only reads them; photos are never committed to the repository. Otherwise standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

READY_TIMEOUT_S = float(os.environ.get("READY_TIMEOUT_S", "120"))
READY_POLL_S = float(os.environ.get("READY_POLL_S", "2"))
DECISION_KEYS = ("match", "verified", "same_person", "is_match")
PHOTOS = {"probe": "obama.jpg", "reference": "obama2.jpg"}  # two photos of one person


def wait_ready(base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    print(f"{base}/readyz: 200")
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL {base}/readyz not ready after {timeout_s:.0f}s: {last}")
        time.sleep(READY_POLL_S)


def multipart(parts: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = bytearray()
    for name, (filename, data, ctype) in parts.items():
        body += f"--{boundary}\r\n".encode()
        body += f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
        body += f"Content-Type: {ctype}\r\n\r\n".encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f"multipart/form-data; boundary={boundary}"


def load_photos() -> dict[str, tuple[str, bytes, str]]:
    """The multipart parts: each photo's bytes as the pinned fetcher returns them (sha256-checked)."""
    try:
        from facestack.artifacts import photo_bytes
    except ImportError as exc:
        raise SystemExit(f"FAIL cannot import facestack.artifacts ({exc}): run this in the gateway image") from exc
    try:
        return {part: (name, photo_bytes(name), "image/jpeg") for part, name in PHOTOS.items()}
    except Exception as exc:  # ArtifactError, OSError: missing from the image's cache, or altered
        raise SystemExit(f"FAIL cannot read the test photos {sorted(PHOTOS.values())} "
                         f"(FACESTACK_CACHE_DIR={os.environ.get('FACESTACK_CACHE_DIR', '')!r}): {exc}") from exc


def verify(base: str, api_key: str, photos: dict[str, tuple[str, bytes, str]]) -> dict:
    body, ctype = multipart(photos)
    req = urllib.request.Request(f"{base}/v1/verify", data=body, method="POST",
                                 headers={"Content-Type": ctype, "X-API-Key": api_key})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"FAIL {base}/v1/verify: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
    if status != 200:
        raise SystemExit(f"FAIL {base}/v1/verify: HTTP {status}")
    try:
        result = json.loads(payload)
    except ValueError as exc:
        raise SystemExit(f"FAIL {base}/v1/verify: not JSON: {payload[:200]!r}") from exc
    if not isinstance(result, dict):
        raise SystemExit(f"FAIL {base}/v1/verify: expected a JSON object, got {type(result).__name__}")
    for key in DECISION_KEYS:
        if key in result and result[key] is not True:
            raise SystemExit(f"FAIL {base}/v1/verify: {key}={result[key]!r} for two photos of one person")
    print(f"{base}/v1/verify: 200 {json.dumps(result, sort_keys=True)[:300]}")
    return result


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: check.py GATEWAY_URL [GATEWAY_URL ...]", file=sys.stderr)
        return 2
    api_key = os.environ.get("FACESTACK_TEST_API_KEY", "")
    if not api_key:
        secret = os.environ.get("FACESTACK_TEST_API_KEY_SECRET", "the test API key Secret")
        print(f"FAIL no API key for the verify call: create Secret {secret} with a plain API key "
              "(see the chart README, `helm test`)", file=sys.stderr)
        return 1
    photos = load_photos()
    for base in argv:
        base = base.rstrip("/")
        wait_ready(base, READY_TIMEOUT_S)
        verify(base, api_key, photos)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
