"""Seed a gallery of N subjects through the API: "obama" and "biden" (the probes' identities) plus fillers.

    python -m loadtest.seed --url http://127.0.0.1:8000 --subjects 100    # key: LOADTEST_API_KEY or --api-key

Fillers are enrolled from the faces of the group photos (sample1-6, cropped here), cycled: ~20 distinct
people who are neither probe identity, so identify's expected answers stay exact. Idempotent: existing
galleries and subjects are kept, so a second run only adds what is missing. Talks to the API through the
typed client (facestack.client), which retries 429/503 after Retry-After. Also creates <gallery>-enrol,
where the enrolment users create and erase their subjects. Needs an admin key to create the galleries.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import httpx
import numpy as np

from facestack.client import Client, Conflict, FaceRejected, FacestackError, Forbidden, NotFound
from loadtest.payloads import GROUPS, IMPOSTOR, REFERENCE, photo

ANCHORS = {"obama": REFERENCE, "biden": IMPOSTOR}  # subject -> the photo enrolled for it


class SeedError(RuntimeError):
    pass


@dataclass
class SeedResult:
    gallery: str
    subjects: int
    created: int
    templates: int
    seconds: float


def first_key(api_key: str) -> str:
    """The load test takes several keys of one tenant, comma-separated; seeding needs one."""
    return api_key.split(",")[0].strip()


@contextlib.contextmanager
def _client(url: str, api_key: str, timeout_s: float) -> Iterator[Client]:
    """The typed client (retries 429/503 after Retry-After); its errors surface as SeedError."""
    try:
        with Client(url, first_key(api_key), timeout=timeout_s) as client:
            yield client
    except FacestackError as exc:
        raise SeedError(str(exc)) from exc


def face_crops(client: Client) -> list[bytes]:
    """Every face of the group photos, cropped with a margin (the detector needs context around a face)."""
    crops = []
    for name in GROUPS:
        data = photo(name).data
        faces = client.detect(data)["faces"]
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        for face in faces:
            x1, y1, x2, y2 = face["box"]
            margin = 0.6 * max(x2 - x1, y2 - y1)
            top, bottom = max(0, int(y1 - margin)), min(image.shape[0], int(y2 + margin))
            left, right = max(0, int(x1 - margin)), min(image.shape[1], int(x2 + margin))
            crops.append(cv2.imencode(".jpg", image[top:bottom, left:right], [cv2.IMWRITE_JPEG_QUALITY, 92])[1]
                         .tobytes())
    return crops


def existing_subjects(client: Client, gallery: str) -> set[str]:
    found: set[str] = set()
    cursor = None
    while True:  # cursor pages: no offset cap however large the gallery
        page = client.list_subjects(gallery, limit=1000, cursor=cursor)
        found.update(item["subject_id"] for item in page["items"])
        cursor = page.get("next")
        if not cursor:
            return found


def ensure_gallery(client: Client, gallery: str) -> None:
    try:
        client.create_gallery(gallery, metadata={"purpose": "load test"})
    except Conflict:
        pass  # kept from an earlier run
    except Forbidden as exc:
        raise SeedError(f"creating gallery {gallery!r}: {exc} (creating a gallery needs an admin key)") from exc


def ensure_subject(client: Client, gallery: str, subject: str) -> None:
    with contextlib.suppress(Conflict):  # kept from an earlier run
        client.create_subject(gallery, subject)


def seed(url: str, api_key: str, subjects: int, gallery: str = "loadtest", *, workers: int = 4,
         timeout_s: float = 60.0) -> SeedResult:
    if subjects < len(ANCHORS):
        raise SeedError(f"a gallery needs at least {len(ANCHORS)} subjects (the probes' identities)")
    started = time.perf_counter()
    with _client(url, api_key, timeout_s) as client:
        ensure_gallery(client, gallery)
        ensure_gallery(client, f"{gallery}-enrol")
        have = existing_subjects(client, gallery)
        for subject in ANCHORS:  # the probes' identities must hold a template, even after an interrupted seed
            if subject in have and client.get_subject(gallery, subject)["faces"]:
                continue
            ensure_subject(client, gallery, subject)
            client.enrol(gallery, subject, photo(ANCHORS[subject]).data)
        fillers = [f"filler-{i:05d}" for i in range(1, subjects - len(ANCHORS) + 1)]
        missing = [s for s in fillers if s not in have]
        pool = face_crops(client) if missing else []
        rejected: set[int] = set()  # crops that failed a quality gate (profile, blur): not tried again

        def add(index_subject: tuple[int, str]) -> None:
            index, subject = index_subject
            ensure_subject(client, gallery, subject)
            for attempt in range(len(pool)):
                crop = (index + attempt) % len(pool)
                if crop in rejected:
                    continue
                try:
                    client.enrol(gallery, subject, pool[crop])
                    return
                except FaceRejected:
                    rejected.add(crop)
            raise SeedError(f"no face crop could be enrolled for {subject}")

        with ThreadPoolExecutor(workers) as pool_exec:  # Triton runs the enrolments in parallel
            list(pool_exec.map(add, enumerate(missing)))
        info = client.get_gallery(gallery)
    return SeedResult(gallery, info["subjects"], len(missing), info["templates"],
                      round(time.perf_counter() - started, 1))


def cleanup(url: str, api_key: str, gallery: str = "loadtest") -> None:
    with _client(url, api_key, 120) as client:
        for name in (gallery, f"{gallery}-enrol"):
            with contextlib.suppress(NotFound):
                client.delete_gallery(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.seed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=os.environ.get("LOADTEST_API_KEY", ""))
    parser.add_argument("--gallery", default="loadtest")
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--delete", action="store_true", help="erase the gallery and <gallery>-enrol instead")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("no API key: --api-key or LOADTEST_API_KEY")
    try:
        if args.delete:
            cleanup(args.url, args.api_key, args.gallery)
            print(f"erased galleries {args.gallery!r} and {args.gallery + '-enrol'!r}")
        else:
            r = seed(args.url, args.api_key, args.subjects, args.gallery)
            print(f"gallery {r.gallery!r}: {r.subjects} subjects ({r.created} added), {r.templates} templates, "
                  f"{r.seconds} s")
    except (SeedError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
