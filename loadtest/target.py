"""Which gateway a run loads, and with which key: a given URL, `make run`'s local stack, or a private one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from facestack.settings import REPO_ROOT
from localstack.stack import LocalStack

LOCAL_URL = "http://127.0.0.1:8000"  # `make run`'s default


class TargetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str
    description: str


def probe(url: str) -> int | None:
    """/readyz status, or None when nothing listens."""
    try:
        return httpx.get(f"{url.rstrip('/')}/readyz", timeout=5).status_code
    except httpx.TransportError:
        return None


def local_key() -> str:
    """`make run`'s key: FACESTACK_API_KEY, else the one it generated into <data dir>/api_key."""
    if key := os.environ.get("FACESTACK_API_KEY"):
        return key
    path = Path(os.environ.get("FACESTACK_DATA_DIR", REPO_ROOT / ".data")) / "api_key"
    return path.read_text().strip() if path.exists() else ""


@contextmanager
def resolve(url: str, api_key: str, stack: str = "auto", triton_url: str | None = None) -> Iterator[Target]:
    """stack: "auto" starts a private local stack only when url is the local default and nothing answers
    there; "private" always starts one (url ignored); "none" never does."""
    url = url.rstrip("/")
    status = None if stack == "private" else probe(url)
    if stack == "private" or (stack == "auto" and url == LOCAL_URL and status is None):
        print(f"==> starting a private local stack (Triton on CPU + gateway on 127.0.0.1; "
              f"{'reusing Triton ' + triton_url if triton_url else 'Triton takes ~10-30 s'})", flush=True)
        with LocalStack(triton_url) as local:
            yield Target(local.url, local.api_key, f"private local stack at {local.url}")
        return
    if status is None:
        raise TargetError(f"nothing answers at {url} (start it with `make run`, or leave URL at {LOCAL_URL} "
                          "to have a private stack started)")
    if status != 200:
        raise TargetError(f"{url}/readyz answered {status}: the gateway is not ready")
    key = api_key or (local_key() if url == LOCAL_URL else "")
    if not key:
        raise TargetError(f"no API key for {url}: set API_KEY (make) / LOADTEST_API_KEY")
    yield Target(url, key, f"gateway at {url}")
