"""The peer a user would otherwise pick: face_recognition 1.3.0 (dlib HOG detector + dlib ResNet), on one core.

    python -m benchmarks.peer --seconds 10 PHOTO...          # images/s on one core, JSON on stdout
    python -m benchmarks.peer --lfw DIR                       # + LFW View 1 DevTest accuracy (its 0.6 rule)

Run by `python -m benchmarks.pipeline` (`make bench` installs the peer first: `make peer`). The process pins
itself to one CPU: face_recognition is single-threaded, so its rate per core is its rate.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np

TOLERANCE = 0.6  # face_recognition's documented rule: same person if the L2 distance is at most 0.6


def encode(face_recognition, data: bytes) -> np.ndarray | None:
    """The peer's usual call sequence for one photo: decode, HOG detection, 128-D encoding of the first face."""
    image = face_recognition.load_image_file(io.BytesIO(data))
    locations = face_recognition.face_locations(image)
    encodings = face_recognition.face_encodings(image, locations)
    return encodings[0] if encodings else None


def rate(face_recognition, photos: list[bytes], seconds: float) -> dict:
    encode(face_recognition, photos[0])  # warm-up
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds or done < len(photos):
        encode(face_recognition, photos[done % len(photos)])
        done += 1
    elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    return {"images": done, "seconds": round(elapsed, 2), "images_per_s": round(done / elapsed, 2),
            "images_per_cpu_s": round(done / cpu_s, 2)}


def lfw_accuracy(face_recognition, root: Path) -> dict:
    """DevTest accuracy with the peer's own rule (L2 <= 0.6); a photo where HOG finds no face counts as 'different'."""
    from facestack.accuracy.dataset import LfwFolder

    folder = LfwFolder.open(root)
    assert folder.dev_test is not None, f"{root} has no pairsDevTest.txt"
    cache: dict = {}

    def vector(ref) -> np.ndarray | None:
        if ref not in cache:
            cache[ref] = encode(face_recognition, folder.path(ref).read_bytes())
        return cache[ref]

    correct, no_face = 0, 0
    pairs = folder.dev_test.pairs
    for pair in pairs:
        a, b = vector(pair.first), vector(pair.second)
        if a is None or b is None:
            no_face += 1
            correct += not pair.same
            continue
        correct += (float(np.linalg.norm(a - b)) <= TOLERANCE) == pair.same
    return {"pairs": len(pairs), "accuracy": round(correct / len(pairs), 4), "pairs_without_face": no_face,
            "rule": f"L2 <= {TOLERANCE}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="*", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--lfw", type=Path, help="also LFW View 1 DevTest accuracy (about 3 minutes)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import face_recognition  # noqa: PLC0415  (optional: `make peer`)

    out: dict = {"package": "face_recognition 1.3.0 (HOG + dlib ResNet)", "cpus": 1}
    if args.photos:
        out["throughput"] = rate(face_recognition, [p.read_bytes() for p in args.photos], args.seconds)
    if args.lfw:
        out["lfw_dev_test"] = lfw_accuracy(face_recognition, args.lfw)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
