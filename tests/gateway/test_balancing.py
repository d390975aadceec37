"""gRPC balancing over several Triton servers, as the Helm chart deploys it (a headless Service: one name, every
Triton pod's address): two real `tritonserver` processes on 127.0.0.1 and 127.0.0.2 (both loopback, same ports),
one real gateway process whose Triton target names both. Under load both servers' own statistics show work;
killing one keeps requests succeeding on the other, and the restarted one gets traffic again.

Each Triton takes about 2 GB and a core's worth of start-up: the test is kept short (one module, ~60 requests).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from facestack.artifacts import photo_bytes
from facestack.triton.launcher import TritonServer, free_port
from gateway.auth import new_key
from gateway.metrics import Metrics
from gateway.triton_client import TritonPipeline, resolve_endpoints
from localstack.gateway import GatewayProcess

HOSTS = ("127.0.0.1", "127.0.0.2")
PIPELINE = "face_pipeline"


def served(server: TritonServer) -> int:
    """face_pipeline requests this server executed successfully (its own statistics)."""
    url = f"http://{server.http_url}/v2/models/{PIPELINE}/stats"
    with urllib.request.urlopen(url, timeout=5) as resp:
        stats = json.load(resp)
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats["model_stats"])


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}


@pytest.fixture(scope="module")
def tritons(ports) -> Iterator[list[TritonServer]]:
    servers = [TritonServer(host=host, **ports) for host in HOSTS]
    with ThreadPoolExecutor(len(servers)) as pool:  # start both at once: each takes seconds to load its models
        starts = [pool.submit(s.start, 300) for s in servers]
        errors = [f.exception() for f in starts]
    try:
        if any(errors):
            raise next(e for e in errors if e)
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def gateway(tritons, ports, tmp_path_factory) -> Iterator[tuple[GatewayProcess, str]]:
    key = new_key()
    target = "ipv4:" + ",".join(f"{host}:{ports['grpc_port']}" for host in HOSTS)
    data: Path = tmp_path_factory.mktemp("balancing")
    gw = GatewayProcess(data, target, api_key=key, gateway_rate_limit_rps=0).start(ready=True)
    try:
        yield gw, key
    finally:
        gw.stop()


def detect_many(gw: GatewayProcess, key: str, count: int, workers: int = 4) -> list[int]:
    image = photo_bytes("obama.jpg")
    with gw.client(key) as client:
        def one(_: int) -> int:
            return client.post("/v1/detect", files={"image": image}).status_code

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(count)))


def test_resolve_endpoints() -> None:
    assert resolve_endpoints("ipv4:127.0.0.1:8001,127.0.0.2:8001") == ["127.0.0.1:8001", "127.0.0.2:8001"]
    assert resolve_endpoints("dns:///localhost:8001") == resolve_endpoints("localhost:8001") != []
    assert "127.0.0.1:8001" in resolve_endpoints("localhost:8001")
    assert resolve_endpoints("dns:///no-such-host.invalid:8001") == []


def test_channel_is_renewed_for_fresh_resolution() -> None:
    """With a max channel age the pipeline opens a new channel (a new DNS resolution) every so often, and the
    endpoints gauge follows the target's resolution; close() leaves no task behind. No server is needed:
    channels connect lazily."""

    async def run() -> None:
        metrics = Metrics()
        pipeline = TritonPipeline("ipv4:127.0.0.1:1,127.0.0.2:1,127.0.0.3:1", timeout=0.1, concurrency=1,
                                  queue=1, retry_after=1, backend_retry_after=1, metrics=metrics,
                                  channel_max_age=0.2)
        await pipeline.start()
        try:
            first = pipeline.client
            assert metrics.registry.get_sample_value("facestack_triton_endpoints") == 3
            await asyncio.sleep(0.6)
            assert pipeline.client is not first and first in pipeline._retired  # closed after the deadline
            await asyncio.sleep(1.2)
            assert first not in pipeline._retired
        finally:
            await pipeline.close()
        assert not pipeline._tasks and not pipeline._retired

    asyncio.run(run())


def test_calls_spread_over_both_servers_and_survive_one_dying(gateway, tritons, ports) -> None:
    gw, key = gateway
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert "facestack_triton_endpoints 2.0" in metrics

    # Under load, both servers execute a fair share of the calls (round_robin, not one pinned connection).
    before = [served(s) for s in tritons]
    statuses = detect_many(gw, key, 30)
    assert statuses == [200] * 30
    shares = [served(s) - b for s, b in zip(tritons, before, strict=True)]
    assert sum(shares) >= 30, shares
    print(f"face_pipeline calls per server under load: {shares}")
    assert min(shares) >= 0.3 * sum(shares), f"unbalanced: {shares}"

    # One server dies while calls are in flight: every request still succeeds (the retry goes to the other).
    results: list[int] = []
    loader = threading.Thread(target=lambda: results.extend(detect_many(gw, key, 24)))
    loader.start()
    survivor_before = served(tritons[0])
    tritons[1].kill()
    loader.join()
    assert results == [200] * 24, results
    assert served(tritons[0]) - survivor_before >= 20

    # It comes back on the same address: the channel reconnects (backoff capped at 2 s, so within a few
    # seconds) and it serves its share again; every request meanwhile succeeds.
    tritons[1] = TritonServer(host=HOSTS[1], **ports).start(300)
    back = time.monotonic()
    while served(tritons[1]) < 4:
        assert time.monotonic() - back < 15, "the restarted server got no traffic within 15 s"
        assert detect_many(gw, key, 8) == [200] * 8
    before = [served(s) for s in tritons]
    assert detect_many(gw, key, 20) == [200] * 20
    shares = [served(s) - b for s, b in zip(tritons, before, strict=True)]
    assert min(shares) >= 0.3 * sum(shares), f"unbalanced after the restart: {shares}"
