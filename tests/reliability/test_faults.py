"""Backend faults injected for real, under load: a Triton of the module's own frozen (SIGSTOP) and killed
(SIGKILL of its process group), and a Milvus server (Milvus Lite's server mode) killed mid-run.

- Frozen Triton: deadlines are honoured (504 `timeout`), the bulkhead does not pile up (429 at once past the
  queue; waiting never above it), no slot leaks, and service resumes when Triton does.
- Killed Triton under load: every request in flight, and every new one, is a 503 `backend_unavailable`
  within 1 s; /readyz turns false within 1 s; when Triton is back the same gateway serves again by itself.
- Killed Milvus: 503 at once for reads, writes and searches, /dependencies false (/readyz stays ready,
  "degraded": verify needs no Milvus); when Milvus is back the gateway
  reloads its collections by itself and every acknowledged enrolment is still there.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.reliability.harness import MilvusLiteServer

pytestmark = pytest.mark.triton
ROUNDS = int(os.environ.get("FACESTACK_FAULT_ROUNDS", "1"))  # kill/restart cycles (docs: deep runs)


@dataclass
class Call:
    started: float
    ended: float
    status: int
    code: str | None
    retry_after: str | None


def timed_post(client: httpx.Client, path: str, **kw) -> Call:
    started = time.monotonic()
    try:
        response = client.post(path, **kw)
    except httpx.TransportError:
        return Call(started, time.monotonic(), 0, "transport", None)
    code = response.json().get("code") if response.status_code >= 400 else None
    return Call(started, time.monotonic(), response.status_code, code, response.headers.get("retry-after"))


def gauge(url: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", httpx.get(f"{url}/metrics", timeout=10).text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_frozen_triton_deadlines_honoured_and_no_pile_up(own_triton, spawn, keys, img) -> None:
    timeout, slots, queue, burst = 1.5, 2, 2, 12
    photo = img.resized("biden.jpg", 320)
    with spawn(triton_grpc_url=own_triton.grpc_url, gateway_triton_concurrency=slots, gateway_triton_queue=queue,
               gateway_triton_timeout_s=timeout) as gateway, gateway.client(keys["acme"]) as client:
        assert client.post("/v1/detect", files={"image": photo}).status_code == 200
        waiting_seen: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                waiting_seen.append(gauge(gateway.url, "facestack_triton_waiting"))
                time.sleep(0.05)

        os.kill(own_triton.pid, signal.SIGSTOP)  # a Triton that accepts connections and never answers
        try:
            watcher = threading.Thread(target=watch)
            watcher.start()
            with ThreadPoolExecutor(burst) as pool:
                calls = list(pool.map(lambda _: timed_post(client, "/v1/detect", files={"image": photo}),
                                      range(burst)))
            ready_started = time.monotonic()
            ready = client.get("/readyz")
            ready_elapsed = time.monotonic() - ready_started
            stop.set()
            watcher.join()
        finally:
            os.kill(own_triton.pid, signal.SIGCONT)
        rejected = [c for c in calls if c.status == 429]
        timed_out = [c for c in calls if c.status == 504]
        assert len(rejected) + len(timed_out) == burst, [(c.status, c.code) for c in calls]
        assert len(rejected) >= burst - slots - queue  # past slots + queue: refused, not queued
        assert all(c.code == "rate_limited" and c.retry_after for c in rejected), [(c.code, c.retry_after)
                                                                                 for c in rejected]
        # Refused at once, not after queueing: a queued call would wait for a slot until `timeout`; half of it
        # leaves room for a burst of 12 uploads on two shared cores (0.5 s was missed once in CI-like load).
        assert max(c.ended - c.started for c in rejected) < timeout / 2, sorted(c.ended - c.started for c in rejected)
        assert all(c.code == "timeout" for c in timed_out)
        # A call waits at most `timeout` for a slot, then at most `timeout` in Triton.
        assert max(c.ended - c.started for c in timed_out) < 2 * timeout + 1.0
        assert max(waiting_seen) <= queue
        assert ready.status_code == 503 and ready.json()["triton"] is False and ready_elapsed < 3.0
        # Nothing leaked: no slot held, nobody waiting, and all slots serve again once Triton runs.
        assert gauge(gateway.url, "facestack_triton_inflight") == 0
        assert gauge(gateway.url, "facestack_triton_waiting") == 0
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with ThreadPoolExecutor(slots) as pool:
            after = list(pool.map(lambda _: client.post("/v1/detect", files={"image": photo}), range(slots)))
        assert [r.status_code for r in after] == [200] * slots
        print(f"\nFIGURE frozen_triton calls={burst} 429={len(rejected)} "
              f"(max {max(c.ended - c.started for c in rejected):.3f}s) 504={len(timed_out)} "
              f"(max {max(c.ended - c.started for c in timed_out):.2f}s, timeout {timeout}s) "
              f"max_waiting={max(waiting_seen):.0f} readyz_s={ready_elapsed:.2f}")


@dataclass
class Round:
    killed: float
    unready: float  # seconds from the kill to /readyz 503
    restarting: float
    triton_up: float
    ready: float


def test_triton_killed_under_load_503_within_1s_and_recovers_by_itself(own_triton, spawn, keys, img) -> None:
    photo = img.resized("obama2.jpg", 320)
    calls: list[Call] = []
    rounds: list[Round] = []
    stop = threading.Event()
    with spawn(triton_grpc_url=own_triton.grpc_url) as gateway, gateway.client(keys["acme"]) as client:
        assert client.post("/v1/detect", files={"image": photo}).status_code == 200

        def load() -> None:
            with gateway.client(keys["acme"]) as own:
                while not stop.is_set():
                    calls.append(timed_post(own, "/v1/detect", files={"image": photo}))

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            for _ in range(ROUNDS):
                time.sleep(1.0)  # steady state
                killed = time.monotonic()
                own_triton.kill()
                while client.get("/readyz").status_code != 503:
                    time.sleep(0.02)
                unready = time.monotonic() - killed
                time.sleep(1.0)  # load against a dead Triton
                restarting = time.monotonic()
                own_triton.start()  # same ports
                triton_up = time.monotonic()
                while client.get("/readyz").status_code != 200:
                    assert time.monotonic() - triton_up < 15, "the gateway did not find the restarted Triton"
                    time.sleep(0.05)
                rounds.append(Round(killed, unready, restarting, triton_up, time.monotonic()))
            time.sleep(1.0)  # load against the restarted Triton
        finally:
            stop.set()
            for worker in workers:
                worker.join(60)
    bounds = [r.killed for r in rounds[1:]] + [float("inf")]
    answered, slowest_dead, n_in_flight, n_dead, n_after = [], [], 0, 0, 0
    for r, next_kill in zip(rounds, bounds, strict=True):
        in_flight = [c for c in calls if c.started < r.killed <= c.ended]
        dead = [c for c in calls if r.killed <= c.started and c.ended < r.restarting]
        after = [c for c in calls if r.ready <= c.started and c.ended < next_kill]
        assert all(c.status in (200, 503) for c in in_flight), [(c.status, c.code) for c in in_flight]
        assert dead and all(c.status == 503 and c.code == "backend_unavailable" and c.retry_after for c in dead)
        answered.append(max((c.ended - r.killed for c in in_flight), default=0.0))
        slowest_dead.append(max(c.ended - c.started for c in dead))
        assert answered[-1] < 1.0 and slowest_dead[-1] < 1.0 and r.unready < 1.0, (answered, slowest_dead, r)
        assert after and all(c.status == 200 for c in after), [(c.status, c.code) for c in after]
        n_in_flight, n_dead, n_after = n_in_flight + len(in_flight), n_dead + len(dead), n_after + len(after)
    before = [c for c in calls if c.ended < rounds[0].killed]
    assert before and all(c.status == 200 for c in before)
    print(f"\nFIGURE triton_kill rounds={ROUNDS} calls={len(calls)} in_flight_at_kill={n_in_flight} "
          f"(all answered within {max(answered):.2f}s) dead_503={n_dead} (slowest {max(slowest_dead):.2f}s) "
          f"readyz_false_after<={max(r.unready for r in rounds):.2f}s "
          f"triton_restart<={max(r.triton_up - r.restarting for r in rounds):.1f}s "
          f"gateway_ready_after_triton<={max(r.ready - r.triton_up for r in rounds):.2f}s "
          f"after_recovery={n_after} all 200")


def test_milvus_killed_503_then_reloads_by_itself(spawn, keys, img, tmp_path, problem) -> None:
    milvus = MilvusLiteServer(tmp_path / "milvus").start()
    try:
        with spawn(milvus_uri=milvus.uri, gateway_milvus_timeout_s=2.0) as gateway, \
                gateway.client(keys["acme"]) as client:
            assert client.post("/v1/galleries", json={"gallery_id": "g"}).status_code == 201
            enrolled = {}
            for subject, photo in (("obama", "obama.jpg"), ("biden", "biden.jpg")):
                assert client.post("/v1/galleries/g/subjects", json={"subject_id": subject}).status_code == 201
                r = client.post(f"/v1/galleries/g/subjects/{subject}/faces", files={"image": img.resized(photo, 400)})
                enrolled[subject] = r.json()["faces"][0]["face_id"]
            milvus.kill()
            killed = time.monotonic()
            ready = client.get("/readyz")  # still ready: verify needs only Triton
            calls = {
                "dependencies": client.get("/dependencies"),
                "read": client.get("/v1/galleries/g"),
                "write": client.post("/v1/galleries/g/subjects", json={"subject_id": "late"}),
                "identify": client.post("/v1/identify", files={"probe": img.resized("obama2.jpg", 320)},
                                        data={"gallery": "g"}),
            }
            elapsed = time.monotonic() - killed
            for response in calls.values():
                problem(response, 503, "backend_unavailable")
                assert int(response.headers["retry-after"]) > 0
            assert calls["dependencies"].json()["milvus"] is False and calls["dependencies"].json()["triton"] is True
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"
            assert elapsed < 4 * 1.0, elapsed  # four calls, each refused at once (nothing listens)
            milvus.start()  # same port and data: Milvus Lite's server comes back with collections released
            back = time.monotonic()
            while client.get("/dependencies").status_code != 200:
                assert time.monotonic() - back < 30, "gateway did not reload the collections"
                time.sleep(0.1)
            recovered = time.monotonic() - back
            hit = client.post("/v1/identify", files={"probe": img.resized("obama2.jpg", 320)},
                              data={"gallery": "g"}).json()
            assert hit["decision"] == "match" and hit["subject_id"] == "obama", hit
            for subject, face_id in enrolled.items():
                faces = client.get(f"/v1/galleries/g/subjects/{subject}/faces").json()["items"]
                assert [f["face_id"] for f in faces] == [face_id]
            assert client.post("/v1/galleries/g/subjects", json={"subject_id": "late"}).status_code == 201
            print(f"\nFIGURE milvus_kill four_503s_in={elapsed:.2f}s ready_after_restart={recovered:.2f}s "
                  f"acknowledged_kept={len(enrolled)}/{len(enrolled)}")
    finally:
        milvus.kill()
