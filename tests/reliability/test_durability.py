"""kill -9 of the gateway process in the middle of concurrent bulk enrolments and erasures (Milvus Lite, the
default store), then a restart on the same data directory; FACESTACK_FAULT_ROUNDS repeats the cycle on the
same data (each round's checks cover every earlier round too).

Extends tests/gateway/test_process.py (acknowledged single-image enrolments survive) with:
- every acknowledged bulk enrolment is present exactly once (its face ids, no duplicates, nothing else);
- no unacknowledged bulk enrolment is half-written: each subject holds all of a request's faces or none;
- acknowledged erasures (subjects and single faces, before and during the storm) stay erased, and identify
  never returns them; no template is left without its subject;
- the audit log's hash chain is intact and names every acknowledged enrolment and erasure.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.audit import verify_chain
from localstack.gateway import GatewayProcess

pytestmark = pytest.mark.triton
BULK = 2  # images per enrolment request
KILL_AFTER = 6  # acknowledged enrolments per round
ROUNDS = int(os.environ.get("FACESTACK_FAULT_ROUNDS", "1"))


class Ledger:
    """What the clients were told, across rounds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enrolled: dict[str, list[str]] = {}  # subject -> face ids of its acknowledged enrolment
        self.in_flight: list[str] = []  # subjects whose enrolment was not acknowledged
        self.erased_subjects: dict[str, str] = {}  # subject -> receipt id
        self.erased_faces: dict[str, str] = {}  # face id -> receipt id
        self.victim_faces: dict[str, set[str]] = {}  # subjects enrolled before their erasure was sent
        self.kept: dict[str, set[str]] = {}  # subjects with one face erased -> the faces that must remain


def storm(gateway: GatewayProcess, key: str, photos: list[bytes], prefix: str, ledger: Ledger) -> None:
    """Enrol `victims` and one face-erasure subject, then enrol `targets` in bulk while erasing the victims,
    six at a time, and kill -9 the gateway once KILL_AFTER enrolments of this round are acknowledged."""
    targets = [f"{prefix}s{i:02d}" for i in range(18)]
    victims = [f"{prefix}x{i}" for i in range(4)]
    with gateway.client(key) as client:
        for subject in targets + victims + [f"{prefix}e0", f"{prefix}e1"]:
            assert client.post("/v1/galleries/d/subjects", json={"subject_id": subject}).status_code == 201
        for subject in victims + [f"{prefix}e0", f"{prefix}e1"]:
            r = client.post(f"/v1/galleries/d/subjects/{subject}/faces",
                            files=[("image", photos[0]), ("image", photos[3])])
            assert r.status_code == 201, r.text
            ledger.victim_faces[subject] = {f["face_id"] for f in r.json()["faces"]}
        # Acknowledged before the storm: a subject erased, one face of another erased.
        ledger.erased_subjects[f"{prefix}e0"] = client.delete(f"/v1/galleries/d/subjects/{prefix}e0").json()[
            "receipt_id"]
        gone = sorted(ledger.victim_faces[f"{prefix}e1"])[0]
        ledger.erased_faces[gone] = client.delete(f"/v1/galleries/d/subjects/{prefix}e1/faces/{gone}").json()[
            "receipt_id"]
        ledger.kept[f"{prefix}e1"] = ledger.victim_faces[f"{prefix}e1"] - {gone}

    acknowledged: list[str] = []
    killed = threading.Event()

    def enrol(i: int) -> None:
        subject = targets[i]
        files = [("image", photos[(i + k) % len(photos)]) for k in range(BULK)]
        try:
            with gateway.client(key) as own:
                r = own.post(f"/v1/galleries/d/subjects/{subject}/faces", files=files)
        except httpx.TransportError:
            return  # in flight when the process died: not acknowledged
        if r.status_code == 201:
            with ledger.lock:
                ledger.enrolled[subject] = [f["face_id"] for f in r.json()["faces"]]
                acknowledged.append(subject)
                if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    gateway.kill()  # SIGKILL, mid-stream: other enrolments and erasures are in flight

    def erase(i: int) -> None:
        try:
            with gateway.client(key) as own:
                r = own.delete(f"/v1/galleries/d/subjects/{victims[i]}")
        except httpx.TransportError:
            return
        if r.status_code == 200:
            with ledger.lock:
                ledger.erased_subjects[victims[i]] = r.json()["receipt_id"]

    jobs = [(enrol, i) for i in range(len(targets))]
    for i in range(len(victims)):  # erasures interleaved with the enrolments
        jobs.insert(3 + 4 * i, (erase, i))
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda job: job[0](job[1]), jobs))
    assert killed.is_set() and gateway.proc.returncode == -signal.SIGKILL
    ledger.in_flight += [s for s in targets if s not in ledger.enrolled]


def check(gateway: GatewayProcess, key: str, probe: bytes, ledger: Ledger) -> dict[str, list[str]]:
    with gateway.client(key) as client:
        stored: dict[str, list[str]] = {}
        for subject in list(ledger.enrolled) + ledger.in_flight + list(ledger.victim_faces):
            r = client.get(f"/v1/galleries/d/subjects/{subject}/faces")
            assert r.status_code in (200, 404), r.text
            stored[subject] = [f["face_id"] for f in r.json()["items"]] if r.status_code == 200 else []
            if subject in ledger.erased_subjects:
                assert r.status_code == 404 and r.json()["code"] == "subject_not_found", (subject, r.text)
        # Exactly once: the acknowledged face ids, each once, nothing else.
        for subject, face_ids in ledger.enrolled.items():
            assert sorted(stored[subject]) == sorted(face_ids), (subject, stored[subject], face_ids)
        # All or nothing for what was in flight.
        half = {s: stored[s] for s in ledger.in_flight if len(stored[s]) not in (0, BULK)}
        assert not half, f"half-written enrolments: {half}"
        # Erasures stay erased; an unacknowledged erasure is all or nothing too (templates go first).
        for subject, faces in ledger.victim_faces.items():
            if subject in ledger.kept:
                assert set(stored[subject]) == ledger.kept[subject], (subject, stored[subject])
            elif subject not in ledger.erased_subjects:
                assert set(stored[subject]) in (faces, set()), (subject, stored[subject])
        # No orphan templates: the gallery's count is the sum over the subjects that exist.
        assert client.get("/v1/galleries/d").json()["templates"] == sum(len(v) for v in stored.values())
        # identify never returns an erased subject, nor an erased face.
        found = client.post("/v1/identify", files={"probe": probe}, data={"gallery": "d", "top_k": "100"})
        candidates = found.json()["candidates"]
        assert candidates and not {c["subject_id"] for c in candidates} & set(ledger.erased_subjects)
        assert not {c["face_id"] for c in candidates} & set(ledger.erased_faces)
    audit = gateway.data_dir / "audit.jsonl"
    verify_chain(audit)  # the kill did not break the hash chain
    text = audit.read_text()
    assert all(f in text for ids in ledger.enrolled.values() for f in ids)
    assert all(r in text for r in [*ledger.erased_subjects.values(), *ledger.erased_faces.values()])
    return stored


def test_kill_9_during_bulk_enrolment_and_erasure(triton, keys, img, tmp_path) -> None:
    key = keys["acme"]
    photos = [img.resized(name, 320) for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")]
    ledger = Ledger()
    gateway = GatewayProcess(tmp_path / "gw", triton.grpc_url, keys["file"]).start()
    try:
        gateway.wait_ready()
        with gateway.client(key) as client:
            assert client.post("/v1/galleries", json={"gallery_id": "d"}).status_code == 201
        for round_ in range(ROUNDS):
            storm(gateway, key, photos, f"r{round_}", ledger)
            gateway = GatewayProcess(tmp_path / "gw", triton.grpc_url, keys["file"]).start()  # same Lite file
            gateway.wait_ready()
            stored = check(gateway, key, photos[1], ledger)
    finally:
        gateway.stop()
    whole = sum(1 for s in ledger.in_flight if stored[s])
    print(f"\nFIGURE kill9 rounds={ROUNDS} acknowledged_enrolments={len(ledger.enrolled)} (x{BULK} faces, all present "
          f"exactly once) unacknowledged={len(ledger.in_flight)} (stored whole: {whole}, half-written: 0) "
          f"acknowledged_erasures={len(ledger.erased_subjects) + len(ledger.erased_faces)} (resurrected: 0)")
