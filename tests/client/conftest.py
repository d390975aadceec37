"""Client fixtures: real gateway processes (python -m uvicorn gateway.app:app) on free ports.

`stack`: in front of the session's real Triton, with Milvus Lite. `limited`: a key rate limit of 1 request/s
(burst 1) and a Triton address nothing listens on, so it answers real 429s and 503s with Retry-After.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from facestack.triton.launcher import free_port
from gateway.auth import hash_key, new_key
from gateway.process import GatewayProcess


@dataclass
class Stack:
    url: str
    keys: list[str]  # admin keys of tenant "default", each with its own rate-limit bucket


def _keys_file(path, count: int) -> list[str]:
    keys = [new_key() for _ in range(count)]
    path.write_text(json.dumps({"keys": [{"id": f"client-{i}", "tenant": "default", "scopes": ["admin"],
                                          "hash": hash_key(k)} for i, k in enumerate(keys)]}))
    return keys


@pytest.fixture(scope="module")
def stack(triton, tmp_path_factory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("client-gateway")
    keys = _keys_file(data / "keys.json", 1)
    with GatewayProcess(data, triton.grpc_url, data / "keys.json") as gateway:
        gateway.wait_ready()
        yield Stack(gateway.url, keys)


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("client-limited")
    keys = _keys_file(data / "keys.json", 4)
    with GatewayProcess(data, f"127.0.0.1:{free_port()}", data / "keys.json", gateway_rate_limit_rps=1,
                        gateway_rate_limit_burst=1, gateway_backend_retry_after_s=1) as gateway:
        yield Stack(gateway.url, keys)
