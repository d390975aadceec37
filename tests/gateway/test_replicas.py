"""Two gateway processes (replicas) on one real Milvus 2.3.5 server, racing each other for half a minute.

Each cycle creates one subject on both replicas at the same instant (exactly one 201), then enrols it on one
replica while the other erases it (the erasure lands before, during or after the enrolment). A watcher keeps
identifying on both replicas. The bars: no identify or verify ever returns a subject after its erasure
receipt (on either replica), and no template of the gallery remains at the end (every subject was erased).
FACESTACK_RACE_S sets the length (default 30 s; with the test server's 50 ms time tick a cycle takes ~1 s).
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pymilvus import MilvusClient

from gateway.auth import new_key
from gateway.store import SUBJECTS, template_collection
from localstack.gateway import GatewayProcess

from .conftest import SERVER_STALENESS_S, unique

pytestmark = pytest.mark.triton
KEY = new_key()  # FACESTACK_API_KEY must be strong (gateway.auth.check_env_key)
RACE_S = float(os.environ.get("FACESTACK_RACE_S", "30"))


def replica(data_dir: Path, triton_url: str, milvus_uri: str) -> GatewayProcess:
    return GatewayProcess(data_dir, triton_url, api_key=KEY, gateway_rate_limit_rps=0, MILVUS_URI=milvus_uri,
                          milvus_bounded_staleness_s=SERVER_STALENESS_S).start(120, ready=True)


def test_erasure_holds_across_two_replicas(triton, milvus_server, img, tmp_path) -> None:
    replicas = [replica(tmp_path / name, triton.grpc_url, milvus_server.uri) for name in ("a", "b")]
    clients = [r.client(KEY, timeout=120) for r in replicas]
    enrol_photo, probe = img.resized("obama.jpg", 400), img.resized("obama2.jpg", 400)
    gallery = unique("race")
    erased: dict[str, float] = {}  # subject -> monotonic time its receipt arrived
    violations: list[str] = []
    stats = {"cycles": 0, "creates_201": 0, "creates_409": 0, "enrol_201": 0, "enrol_404": 0, "identify": 0,
             "verify_after_receipt": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def count(key: str) -> None:
        with lock:
            stats[key] += 1

    def check_identify(client: httpx.Client) -> None:
        started = time.monotonic()
        r = client.post("/v1/identify", files={"probe": probe}, data={"gallery": gallery, "top_k": "10"})
        assert r.status_code == 200, r.text
        count("identify")
        with lock:
            for c in r.json()["candidates"]:
                if erased.get(c["subject_id"], float("inf")) < started:
                    violations.append(f"identify returned {c['subject_id']} after its erasure receipt")

    def cycle(worker: int) -> None:
        i = 0
        while not stop.is_set():
            subject = f"s{worker}-{i}"
            i += 1
            with ThreadPoolExecutor(2) as pool:  # both replicas create the same subject at once
                created = list(pool.map(lambda c, s=subject: c.post(f"/v1/galleries/{gallery}/subjects",
                                                                     json={"subject_id": s}).status_code, clients))
            if sorted(created) != [201, 409]:
                with lock:
                    violations.append(f"double create of {subject}: {created}")
            for status in created:
                count("creates_201" if status == 201 else "creates_409")
            enroller, eraser = (clients[0], clients[1]) if i % 2 else (clients[1], clients[0])

            def enrol(client: httpx.Client = enroller, s: str = subject) -> int:
                return client.post(f"/v1/galleries/{gallery}/subjects/{s}/faces",
                                   files={"image": enrol_photo}).status_code

            def erase(client: httpx.Client = eraser, s: str = subject) -> httpx.Response:
                time.sleep(random.uniform(0.0, 1.2))  # before, during or after the enrolment
                return client.delete(f"/v1/galleries/{gallery}/subjects/{s}")

            with ThreadPoolExecutor(2) as pool:
                enrolled, receipt = pool.submit(enrol), pool.submit(erase)
                receipt = receipt.result()
                assert receipt.status_code == 200, receipt.text
                with lock:
                    erased[subject] = time.monotonic()
                enrolled = enrolled.result()
            assert enrolled in (201, 404), enrolled
            count("enrol_201" if enrolled == 201 else "enrol_404")
            for client in clients:  # right after the receipt, on both replicas
                r = client.post("/v1/verify", files={"probe": probe}, data={"gallery": gallery, "subject_id": subject})
                count("verify_after_receipt")
                if r.status_code != 404:
                    with lock:
                        violations.append(f"verify of erased {subject}: {r.status_code} {r.text[:200]}")
            count("cycles")

    def watch() -> None:
        n = 0
        while not stop.is_set():
            check_identify(clients[n % 2])
            n += 1

    try:
        assert clients[0].post("/v1/galleries", json={"gallery_id": gallery}).status_code == 201
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(cycle, 0), pool.submit(cycle, 1), pool.submit(watch)]
            time.sleep(RACE_S)
            stop.set()
            for f in futures:
                f.result()
        for client in clients:
            check_identify(client)
        print(f"\nrace stats: {stats}")
        assert not violations, violations[:10]
        assert stats["cycles"] >= 5 and stats["identify"] >= 10, stats
        # no template (orphan or not) and no subject record of the gallery remains: every subject was erased
        milvus = MilvusClient(milvus_server.uri, timeout=30)
        flt = f'tenant == "default" and gallery == "{gallery}"'
        left = milvus.query(template_collection("face_embedder", "1"), filter=flt, output_fields=["subject"],
                            consistency_level="Strong", timeout=30)
        records = milvus.query(SUBJECTS, filter=flt, output_fields=["subject"], consistency_level="Strong",
                               timeout=30)
        milvus.close()
        assert (len(left), len(records)) == (0, 0), (left[:5], records[:5])
    finally:
        for client in clients:
            client.close()
        for r in replicas:
            r.stop()
