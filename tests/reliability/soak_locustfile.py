"""Locust users for the soak run (tests/reliability/soak.py starts Locust with this file as a subprocess:
Locust's gevent monkey-patches whatever imports it).

One user class, a front-desk mix at a constant throughput per user: verify image-to-image (3), verify
against a subject (2), identify (3), detect (1), enrol a face then erase it (1; the gallery keeps its size,
so memory has no reason to grow with data; the enrolment carries an Idempotency-Key, so its records
accumulate in Milvus as they would in production). A request counts as a success only with its expected status
and answer (a genuine pair matches, identify names the right subject); anything else is an error.

Environment: SOAK_API_KEY, SOAK_GALLERY, SOAK_RATE (tasks/s per user), SOAK_IMAGES (a directory with
probe.jpg, reference.jpg, other.jpg).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from locust import FastHttpUser, constant_throughput, task

KEY = os.environ.get("SOAK_API_KEY", "")
GALLERY = os.environ.get("SOAK_GALLERY", "soak")
IMAGES = Path(os.environ.get("SOAK_IMAGES", "."))
PROBE, REFERENCE, OTHER = ((IMAGES / name).read_bytes() if (IMAGES / name).exists() else b""
                           for name in ("probe.jpg", "reference.jpg", "other.jpg"))


class FrontDesk(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("SOAK_RATE", "1")))
    network_timeout = 60.0
    connection_timeout = 10.0

    def _post(self, name: str, path: str, expect: int, check, headers: dict | None = None, **kw) -> None:
        with self.client.post(path, name=name, headers={"X-API-Key": KEY, **(headers or {})}, catch_response=True,
                              **kw) as r:
            if r.status_code != expect:
                r.failure(f"{r.status_code}: {(r.text or '')[:200]}")
            elif check is not None and not check(r.json()):
                r.failure(f"wrong answer: {(r.text or '')[:200]}")
            else:
                r.success()

    @task(3)
    def verify_image(self) -> None:
        self._post("verify (image)", "/v1/verify", 200, lambda b: b["match"] is True,
                   files={"probe": ("p.jpg", PROBE, "image/jpeg"), "reference": ("r.jpg", REFERENCE, "image/jpeg")})

    @task(2)
    def verify_subject(self) -> None:
        self._post("verify (subject)", "/v1/verify", 200, lambda b: b["match"] is True,
                   files={"probe": ("p.jpg", PROBE, "image/jpeg")}, data={"gallery": GALLERY, "subject_id": "obama"})

    @task(3)
    def identify(self) -> None:
        self._post("identify", "/v1/identify", 200, lambda b: b["subject_id"] == "obama",
                   files={"probe": ("p.jpg", PROBE, "image/jpeg")}, data={"gallery": GALLERY})

    @task(1)
    def detect(self) -> None:
        self._post("detect", "/v1/detect", 200, lambda b: len(b["faces"]) == 1,
                   files={"image": ("o.jpg", OTHER, "image/jpeg")})

    @task(1)
    def enrol_and_erase(self) -> None:
        subject = f"churn-{uuid.uuid4().hex[:6]}"
        base = f"/v1/galleries/{GALLERY}/subjects"
        with self.client.post(base, name="create subject", headers={"X-API-Key": KEY}, json={"subject_id": subject},
                              catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"{r.status_code}: {(r.text or '')[:200]}")
                return
        self._post("enrol", f"{base}/{subject}/faces", 201, lambda b: len(b["faces"]) == 1,
                   files={"image": ("o.jpg", OTHER, "image/jpeg")}, headers={"Idempotency-Key": subject})
        with self.client.delete(f"{base}/{subject}", name="erase subject", headers={"X-API-Key": KEY},
                                catch_response=True) as r:
            if r.status_code != 200 or r.json()["remaining_templates"] != 0:
                r.failure(f"{r.status_code}: {(r.text or '')[:200]}")
