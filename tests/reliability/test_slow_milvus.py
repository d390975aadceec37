"""Issue 15: a slow Milvus. Gateways in front of a real Milvus Lite server (`milvus-lite server`) reached
through a TCP proxy on 127.0.0.1 that adds latency (harness.DelayProxy).

- Admission control: Milvus work is bounded (workers + queue); beyond it the gateway sheds at once with
  503 + Retry-After instead of queueing work that outlives its requests, and the readiness ping has its own
  lane, so a saturated pool does not make a pod look unready while Milvus answers.
- Idempotency records live in Milvus: a retry sent to another replica is answered from the first one's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import LiveGateway, gateway_settings
from tests.reliability.harness import DelayProxy, MilvusLiteServer

pytestmark = pytest.mark.triton
WORKERS, QUEUE = 2, 2
LATENCY = 0.4  # seconds each way: a Milvus round trip takes ~0.8 s, a gallery listing (count + query) ~1.6 s


@pytest.fixture(scope="module")
def slow_milvus(tmp_path_factory) -> Iterator[DelayProxy]:
    milvus = MilvusLiteServer(tmp_path_factory.mktemp("milvus-server") / "data").start()
    proxy = DelayProxy(milvus.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        milvus.kill()


def _gateway(data_dir: Path, triton, keys, proxy: DelayProxy) -> LiveGateway:
    return LiveGateway(gateway_settings(data_dir, triton.grpc_url, keys["file"], milvus_uri=proxy.uri,
                                        gateway_milvus_workers=WORKERS, gateway_milvus_queue=QUEUE,
                                        gateway_milvus_timeout_s=10.0, gateway_rate_limit_rps=0))


def test_slow_milvus_sheds_with_503_and_readiness_keeps_its_own_lane(triton, keys, slow_milvus, tmp_path,
                                                                      problem) -> None:
    slow_milvus.delay = 0.0
    with _gateway(tmp_path / "gw", triton, keys, slow_milvus) as gw, gw.client(keys["acme"]) as client:
        assert client.post("/v1/galleries", json={"gallery_id": "slow"}).status_code == 201
        assert client.get("/readyz").status_code == 200
        pool = gw.app.state.services.store._pool
        slow_milvus.delay = LATENCY

        def list_galleries(_: int) -> tuple[httpx.Response, float]:
            with gw.client(keys["acme"]) as c:
                started = time.perf_counter()
                response = c.get("/v1/galleries")
                return response, time.perf_counter() - started

        peak = 0
        with ThreadPoolExecutor(16) as executor:
            futures = [executor.submit(list_galleries, i) for i in range(16)]
            time.sleep(0.5)  # the pool is full now
            started = time.perf_counter()
            ready = client.get("/readyz")
            ready_s = time.perf_counter() - started
            while not all(f.done() for f in futures):
                peak = max(peak, pool.admitted)
                time.sleep(0.01)
            results = [f.result() for f in futures]
        slow_milvus.delay = 0.0

        shed = [(r, s) for r, s in results if r.status_code == 503]
        served = [(r, s) for r, s in results if r.status_code == 200]
        assert len(shed) + len(served) == len(results), [r.text for r, _ in results]
        assert len(shed) >= 16 - 2 * (WORKERS + QUEUE), f"only {len(shed)} of 16 shed"  # the rest waited their turn
        for response, seconds in shed:
            problem(response, 503, "backend_unavailable")
            assert response.headers["Retry-After"] and seconds < 0.5, seconds  # at once, not after a wait
        assert served and peak <= WORKERS + QUEUE
        # The readiness ping did not wait behind the backlog: one round trip through the slow network.
        assert ready.status_code == 200 and ready.json()["milvus"] is True, ready.text
        assert ready_s < 2.5, f"/readyz took {ready_s:.2f} s behind the backlog"
        # And the gateway recovers as soon as Milvus is fast again.
        assert client.get("/v1/galleries").status_code == 200


def test_idempotent_retry_to_another_replica_is_replayed(triton, keys, slow_milvus, tmp_path, problem) -> None:
    slow_milvus.delay = 0.0
    key = {"Idempotency-Key": "replica-retry-1"}
    replica_a, replica_b = (_gateway(tmp_path / name, triton, keys, slow_milvus) for name in "ab")
    with replica_a as a, replica_b as b, a.client(keys["acme"]) as first, b.client(keys["acme"]) as second:
        created = first.post("/v1/galleries", json={"gallery_id": "replicated"}, headers=key)
        assert created.status_code == 201
        retried = second.post("/v1/galleries", json={"gallery_id": "replicated"}, headers=key)
        assert retried.status_code == 201 and retried.headers["Idempotent-Replayed"] == "true"
        assert retried.json() == created.json()
        problem(second.post("/v1/galleries", json={"gallery_id": "other"}, headers=key), 409,
                "idempotency_conflict")
