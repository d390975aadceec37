"""Client fixtures: real gateway processes (python -m uvicorn gateway.app:app) on free ports.

`stack`: in front of the session's real Triton, with Milvus Lite. `limited`: a key rate limit of 1 request/s
(burst 1) and a Triton address nothing listens on, so it answers real 429s and 503s with Retry-After.
`running_gateway` is shared with the console tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from facestack.triton.launcher import free_port
from localstack.gateway import GatewayProcess, GatewayProcessError
from tests.reliability.harness import write_keys


@dataclass
class Stack:
    url: str
    keys: list[str]  # admin keys of tenant "default", each with its own rate-limit bucket


@contextmanager
def running_gateway(data: Path, triton_url: str, keys_file: Path, **settings: object) -> Iterator[GatewayProcess]:
    """A started GatewayProcess on a free port; a port taken by another process between the pick and the bind
    (the machine is shared) is retried on a fresh one."""
    for attempt in range(3):
        gateway = GatewayProcess(data, triton_url, keys_file, **settings)
        try:
            gateway.start()
        except GatewayProcessError as exc:
            if "address already in use" in str(exc) and attempt < 2:
                continue
            raise
        try:
            yield gateway
        finally:
            gateway.stop()
        return


def _admin_keys(path: Path, count: int) -> list[str]:
    plain = write_keys(path, {f"client-{i}": ("default", ["admin"]) for i in range(count)})
    return list(plain.values())


@pytest.fixture(scope="module")
def stack(triton, tmp_path_factory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("client-gateway")
    keys = _admin_keys(data / "keys.json", 1)
    with running_gateway(data, triton.grpc_url, data / "keys.json") as gateway:
        gateway.wait_ready()
        yield Stack(gateway.url, keys)


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("client-limited")
    keys = _admin_keys(data / "keys.json", 4)
    with running_gateway(data, f"127.0.0.1:{free_port()}", data / "keys.json", gateway_rate_limit_rps=1,
                         gateway_rate_limit_burst=1, gateway_backend_retry_after_s=1) as gateway:
        yield Stack(gateway.url, keys)
