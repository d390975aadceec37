"""The gateway as a real process: `python -m uvicorn gateway.app:app` (as the Helm chart runs it) and
`python -m localstack.run` (as `make run` does).

- Acknowledged enrolments survive kill -9 (enrolments run concurrently, so the one-writer lock matters).
- SIGTERM lets in-flight requests finish.
- The local run prints its ready line with the key, serves, and stops Triton on Ctrl-C.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from facestack.triton.launcher import free_port
from gateway.auth import new_key
from localstack.gateway import GatewayProcess, clean_env

pytestmark = pytest.mark.triton
KEY = new_key()  # a weak FACESTACK_API_KEY is refused at start-up


def gateway_process(data_dir: Path, triton_url: str, entry: str = "uvicorn") -> GatewayProcess:
    return GatewayProcess(data_dir, triton_url, api_key=KEY, entry=entry).start(120, ready=True)


def test_acknowledged_enrolments_survive_kill_9(triton, img, tmp_path) -> None:
    gateway = gateway_process(tmp_path, triton.grpc_url)
    subjects = [f"s{i}" for i in range(4)]
    with gateway.client(KEY) as client:
        assert client.post("/v1/galleries", json={"gallery_id": "g"}).status_code == 201
        for s in subjects:
            assert client.post("/v1/galleries/g/subjects", json={"subject_id": s}).status_code == 201
    photos = [img.resized(name, 400) for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")]
    acknowledged: list[tuple[str, str]] = []
    lock = threading.Lock()
    killed = threading.Event()

    def enrol(i: int) -> None:
        subject = subjects[i % len(subjects)]
        try:
            with gateway.client(KEY) as client:
                r = client.post(f"/v1/galleries/g/subjects/{subject}/faces", files={"image": photos[i % 4]})
        except httpx.TransportError:
            return  # in flight when the process died: not acknowledged
        if r.status_code == 201:
            with lock:
                acknowledged.extend((subject, f["face_id"]) for f in r.json()["faces"])
                if len(acknowledged) >= 12 and not killed.is_set():
                    killed.set()
                    gateway.proc.send_signal(signal.SIGKILL)  # mid-stream: other enrolments are in flight

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(enrol, range(40)))
    gateway.proc.wait(10)
    assert killed.is_set() and gateway.proc.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 12

    restarted = gateway_process(tmp_path, triton.grpc_url)  # same data dir: the same Lite file
    try:
        with restarted.client(KEY) as client:
            stored = {(s, f["face_id"]) for s in subjects
                      for f in client.get(f"/v1/galleries/g/subjects/{s}/faces").json()["items"]}
            assert set(acknowledged) <= stored, f"lost: {set(acknowledged) - stored}"
            hit = client.post("/v1/identify", files={"probe": img.photo("biden.jpg")}, data={"gallery": "g"}).json()
            assert hit["decision"] == "match"
        audit = (tmp_path / "audit.jsonl").read_text()
        assert all(face_id in audit for _, face_id in acknowledged)
    finally:
        restarted.proc.terminate()
        restarted.proc.wait(30)


def test_sigterm_lets_in_flight_requests_finish(triton, img, tmp_path) -> None:
    gateway = gateway_process(tmp_path, triton.grpc_url, entry="module")
    with gateway.client(KEY) as client:
        client.post("/v1/galleries", json={"gallery_id": "g"})
        client.post("/v1/galleries/g/subjects", json={"subject_id": "s"})
        files = [("image", img.photo(name)) for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")]
        result: dict = {}
        request = threading.Thread(target=lambda: result.update(
            r=client.post("/v1/galleries/g/subjects/s/faces", files=files)))
        request.start()
        time.sleep(0.3)  # the bulk enrolment is in Triton now
        gateway.proc.send_signal(signal.SIGTERM)
        request.join(60)
    assert result["r"].status_code == 201 and len(result["r"].json()["faces"]) == 4
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete, so the status says "signal 15".
    assert gateway.proc.wait(30) in (0, -signal.SIGTERM)
    restarted = gateway_process(tmp_path, triton.grpc_url)
    try:
        with restarted.client(KEY) as client:
            assert client.get("/v1/galleries/g/subjects/s/faces").json()["total"] == 4
    finally:
        restarted.proc.terminate()
        restarted.proc.wait(30)


def test_local_run_prints_ready_line_and_stops_everything_on_ctrl_c(tmp_path, img) -> None:
    port, grpc_port = free_port(), free_port()
    env = clean_env(PORT=str(port), FACESTACK_DATA_DIR=str(tmp_path), FACESTACK_TRITON_GRPC_PORT=str(grpc_port),
                    FACESTACK_TRITON_HTTP_PORT=str(free_port()), FACESTACK_TRITON_METRICS_PORT=str(free_port()))
    proc = subprocess.Popen([sys.executable, "-m", "localstack.run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any("ready at" in line for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        key = re.search(r"API key: (\S+)", proc.stdout.readline()).group(1)
        assert key == (tmp_path / "api_key").read_text().strip()
        url = f"http://127.0.0.1:{port}"
        assert f"ready at {url}" in lines[-1]
        assert httpx.get(f"{url}/readyz").status_code == 200
        detect = httpx.post(f"{url}/v1/detect", headers={"X-API-Key": key}, files={"image": img.photo("biden.jpg")})
        assert detect.status_code == 200
        assert (tmp_path / "milvus.db").exists()
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "==> stopped" in output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)
    import socket

    with socket.socket() as sock:  # Triton's gRPC port is free again: the server is gone
        sock.bind(("127.0.0.1", grpc_port))
