"""Reliability fixtures: the gateway suite's fixtures (real Triton, real gateways, registry photos), plus
a Triton of the module's own that tests may kill or freeze, and gateways as real processes.

The shared session Triton (`triton`, tests/conftest.py) is never killed or stopped here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from facestack.triton.launcher import TritonServer
from localstack.gateway import GatewayProcess
from tests.gateway.conftest import KEYS, assert_problem, img, keys, problem, seg, spawn, uid, unique
from tests.reliability.harness import FuzzTarget

__all__ = ["KEYS", "assert_problem", "img", "keys", "problem", "seg", "spawn", "uid", "unique", "own_triton",
           "fuzz_target"]


class OwnTriton:
    """A Triton for one test module, on fixed ports so that a restarted server is the same address."""

    def __init__(self) -> None:
        self.server = TritonServer()
        self.grpc_port = self.server.grpc_port
        self.grpc_url = self.server.grpc_url

    def start(self) -> OwnTriton:
        if not self.server.is_running():
            self.server = TritonServer(grpc_port=self.grpc_port, http_port=self.server.http_port,
                                       metrics_port=self.server.metrics_port).start()
        return self

    @property
    def pid(self) -> int:
        assert self.server._process is not None
        return self.server._process.pid

    def kill(self) -> None:
        self.server.kill()  # SIGKILL to the server's process group (server and python stubs)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def own_triton() -> Iterator[OwnTriton]:
    triton = OwnTriton().start()
    try:
        yield triton
    finally:
        triton.kill()  # nothing to drain, and a graceful stop takes seconds


@pytest.fixture(scope="session")
def fuzz_target(triton, keys, tmp_path_factory, img) -> Iterator[FuzzTarget]:
    """One gateway process (default limits) that the fuzz modules share, so its RSS is measured across all
    of them: warmed up first (Triton, collections, every kind of route), then the baseline is taken.
    The warm-up enrols img.resized("obama.jpg", 300) as warm/s: test_secrets_in_logs.py looks for that
    template in the logs."""
    # The most verbose logging there is (uvicorn's trace: every ASGI message) and the access log, so that
    # test_secrets_in_logs.py can check what all of the fuzzing wrote. The key limiter is off: it has its
    # own tests, and here it would only answer 429.
    gateway = GatewayProcess(tmp_path_factory.mktemp("fuzz"), triton.grpc_url, keys["file"], log_level="trace",
                             access_log=True, gateway_rate_limit_rps=0)
    gateway.start()
    try:
        gateway.wait_ready()
        with gateway.client(keys["acme"]) as client:
            client.post("/v1/galleries", json={"gallery_id": "warm"})
            client.post("/v1/galleries/warm/subjects", json={"subject_id": "s"})
            client.post("/v1/galleries/warm/subjects/s/faces", files={"image": img.resized("obama.jpg", 300)})
            client.post("/v1/identify", files={"probe": img.resized("obama2.jpg", 300)}, data={"gallery": "warm"})
            client.post("/v1/verify", files={"probe": img.resized("obama2.jpg", 300),
                                             "reference": img.resized("obama.jpg", 300)})
            client.post("/v1/detect", json={"image": {"image_base64": "AAAA"}})
        yield FuzzTarget(gateway, gateway.rss_mb(), gateway.open_fds())
    finally:
        gateway.stop()
