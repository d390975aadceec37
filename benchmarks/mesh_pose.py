"""`python -m benchmarks.mesh_pose`: FaceMesh head pose and eye openness on LFW View 1 (docs/mesh.md).

Per face (YuNet's face nearest the photo's centre): the mesh's yaw/pitch (facestack.pipeline.mesh, framed from
YuNet's box and eyes), facestack's 5-point pose (facestack.pipeline.quality.pose) and, when `make peer` is
installed, the independent dlib 68-point reference (benchmarks/reference_pose.py, a measuring tool only).
Agreement is Pearson r, mean difference, mean |difference| and the slope of a fit, for each pair of estimators,
on the angles themselves and on their change from a person's first photo (what the liveness challenge reads).
Also: the mesh's latency per face at one thread, the eye-openness distribution, and how YuNet's framing compares with
MediaPipe's own tracking framing (the mesh's bounding box; the fit behind mesh.YUNET_SIDE / YUNET_SHIFT).

Needs the exported model (`make models`, default `model_repository/face_mesh/1`).
Prints a table and writes JSON (default docs/bench/mesh_pose.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks import reference_pose
from facestack.accuracy.dataset import LfwFolder
from facestack.pipeline import detection, mesh, quality
from facestack.pipeline.image import fit, to_nchw
from facestack.pipeline.runtime import latest_version
from facestack.pipeline.sessions import onnx_session, session_options
from facestack.settings import REPO_ROOT
from facestack.triton.model_config import DETECTOR_MODEL

DETECTOR_SIZES = (320, 640)
ESTIMATORS = ("mesh", "five_point", "reference")


class Detector:
    """YuNet in process (the exported face_detector), one thread."""

    def __init__(self, repository: Path) -> None:
        version, _ = latest_version(repository / DETECTOR_MODEL)
        self.session = onnx_session(repository / DETECTOR_MODEL / version / "model.onnx", session_options(1))

    def central_face(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(box, 5 landmarks) of the face nearest the image's centre, in image pixels, or None."""
        boxed = fit(bgr, DETECTOR_SIZES)
        size = boxed.canvas.shape[0]
        outputs = self.session.run(list(detection.OUTPUT_NAMES), {"input": to_nchw(boxed.canvas, np.uint8)})
        faces = detection.decode({k: v[0] for k, v in zip(detection.OUTPUT_NAMES, outputs, strict=True)},
                                 size, size).scaled(1 / boxed.scale)
        if not len(faces):
            return None
        centre = np.array([bgr.shape[1], bgr.shape[0]]) / 2
        mid = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
        i = int(np.argmin(np.linalg.norm(mid - centre, axis=1)))
        return faces.boxes[i], faces.landmarks[i]


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3:
        return {"n": int(len(a))}
    return {"n": int(len(a)), "r": round(float(np.corrcoef(a, b)[0, 1]), 3),
            "mean_diff": round(float(np.mean(a - b)), 2), "mean_abs_diff": round(float(np.mean(np.abs(a - b))), 2),
            "slope": round(float(np.polyfit(b, a, 1)[0]), 3)}


def percentiles(values: np.ndarray, qs: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)) -> dict:
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in qs}


def measure(lfw: Path, model_dir: Path, limit: int, repository: Path) -> tuple[int, list[dict], bool]:
    """(images read, one row per face found, whether the dlib reference ran)."""
    folder = LfwFolder.open(lfw)
    refs = folder.images()
    step = max(1, len(refs) // limit) if limit else 1
    refs = refs[::step][:limit or None]
    detector = Detector(repository)
    face_mesh = mesh.FaceMesh(model_dir, threads=1)
    reference = reference_pose.ReferencePose() if reference_pose.available() else None
    rows = []
    for ref in refs:
        bgr = cv2.imread(str(folder.path(ref)))
        found = detector.central_face(bgr) if bgr is not None else None
        if found is None:
            continue
        box, five = found
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        t = time.perf_counter()
        m = face_mesh.run_face(rgb, box, five)
        run_ms = (time.perf_counter() - t) * 1e3
        rect = mesh.rect_from_detection(box, five)
        t = time.perf_counter()
        face_mesh.infer(mesh.crop(rgb, rect)[None])
        infer_ms = (time.perf_counter() - t) * 1e3
        # MediaPipe's own framing (from the mesh) against YuNet's: side ratio and centre offset in box heights.
        tracked = mesh.rect_from_mesh(m.points)
        w, h = box[2] - box[0], box[3] - box[1]
        retracked = face_mesh.run(rgb, tracked)
        yaw5, pitch5, _ = quality.pose(five)
        row = {"image": ref.relative, "presence": round(m.presence, 4),
               "mesh": [round(m.yaw, 2), round(m.pitch, 2), round(m.roll, 2)],
               "mesh_tracked": [round(retracked.yaw, 2), round(retracked.pitch, 2)],
               "five_point": [round(yaw5, 2), round(pitch5, 2)],
               "eyes": [round(v, 4) for v in m.eyes], "reference": None,
               "framing": [round(tracked.side / max(w, h), 4), round((tracked.cx - rect.cx) / h, 4),
                           round((tracked.cy - rect.cy) / h, 4)],
               "ms": [round(run_ms, 3), round(infer_ms, 3)]}
        if reference is not None:
            reading = reference.read(bgr, near=((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
            if reading is not None:
                row["reference"] = [round(reading.yaw, 2), round(reading.pitch, 2)]
        rows.append(row)
    return len(refs), rows, reference is not None


def changes(rows: list[dict], name: str, k: int) -> np.ndarray:
    """Per person with several photos: each later photo's angle minus the first photo's (what the liveness
    challenge reads: movement from the first frame), NaN where the estimator has no reading."""
    by_person: dict[str, list[dict]] = {}
    for r in rows:
        by_person.setdefault(r["image"].split("/")[0], []).append(r)
    out = []
    for photos in by_person.values():
        first = photos[0][name]
        out.extend(np.nan if first is None or p[name] is None else p[name][k] - first[k] for p in photos[1:])
    return np.array(out, np.float64)


def openness_ratios(rows: list[dict]) -> np.ndarray:
    """Per person with several photos: the lowest eye openness over the highest (what expression and lighting
    do to it across photos, with no blink asked for)."""
    by_person: dict[str, list[float]] = {}
    for r in rows:
        by_person.setdefault(r["image"].split("/")[0], []).append(float(np.mean(r["eyes"])))
    return np.array([min(v) / max(v) for v in by_person.values() if len(v) > 1])


def summarise(rows: list[dict]) -> dict:
    def column(name: str, k: int) -> np.ndarray:
        return np.array([r[name][k] if r[name] is not None else np.nan for r in rows], np.float64)

    angles = ("yaw", "pitch")
    pairs = [("mesh", "five_point"), ("mesh", "reference"), ("five_point", "reference"), ("mesh", "mesh_tracked")]
    table = {f"{a}_vs_{b}": {angle: agreement(column(a, k), column(b, k)) for k, angle in enumerate(angles)}
             for a, b in pairs}
    moved = {f"{a}_vs_reference": {angle: agreement(changes(rows, a, k), changes(rows, "reference", k))
                                   for k, angle in enumerate(angles)} for a in ("mesh", "five_point")}
    eyes = np.array([r["eyes"] for r in rows]).mean(axis=1)
    lowest = sorted((round(float(e), 4), r["image"]) for e, r in zip(eyes, rows, strict=True))[:8]
    ratios = openness_ratios(rows)
    ratio_shares = {f"share_below_{t}": round(float((ratios < t).mean()), 4) for t in (0.5, 0.6, 0.7) if len(ratios)}
    framing = np.array([r["framing"] for r in rows])
    ms = np.array([r["ms"] for r in rows])
    return {
        "agreement": table,
        "change_from_first_photo": moved,
        "latency_ms": {"threads": 1, "run_face": percentiles(ms[:, 0], (50, 90, 99)),
                       "model_only": percentiles(ms[:, 1], (50, 90, 99))},
        "eye_openness": {"mean_of_both": percentiles(eyes),
                         "share_below": {str(t): round(float((eyes < t).mean()), 4) for t in (0.12, 0.15, 0.18)},
                         "lowest": lowest,
                         "same_person_min_over_max": {"people": len(ratios), **ratio_shares}},
        "presence": percentiles(np.array([r["presence"] for r in rows]), (1, 5, 50)),
        "framing_vs_tracking": {"side_ratio": percentiles(framing[:, 0], (5, 50, 95)),
                                "dx_box_heights": percentiles(framing[:, 1], (5, 50, 95)),
                                "dy_box_heights": percentiles(framing[:, 2], (5, 50, 95))},
    }


def print_table(result: dict) -> None:
    print(f"{result['faces']} faces of {result['images']} LFW images; reference: {result['reference']}")
    print(f"{'estimators':<28} {'angle':<6} {'n':>5} {'r':>6} {'mean diff':>10} {'mean |diff|':>12} {'slope':>6}")
    table = {**result["agreement"], **{f"change: {k}": v for k, v in result["change_from_first_photo"].items()}}
    for name, angles in table.items():
        for angle, a in angles.items():
            if "r" in a:
                print(f"{name:<28} {angle:<6} {a['n']:>5} {a['r']:>6.3f} {a['mean_diff']:>10.2f} "
                      f"{a['mean_abs_diff']:>12.2f} {a['slope']:>6.3f}")
    lat = result["latency_ms"]
    print(f"latency per face at 1 thread: model {lat['model_only']} ms; crop+model+pose {lat['run_face']} ms")
    print(f"eye openness (mean of both eyes): {result['eye_openness']['mean_of_both']}; "
          f"share below: {result['eye_openness']['share_below']}; same person, lowest over highest: "
          f"{result['eye_openness']['same_person_min_over_max']}")
    print(f"lowest eye openness: {result['eye_openness']['lowest']}")
    print(f"presence: {result['presence']}")
    print(f"YuNet framing vs MediaPipe tracking framing: {result['framing_vs_tracking']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mesh_pose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=REPO_ROOT.parent / "shared" / "datasets" / "lfw-view1")
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "model_repository" / "face_mesh" / "1")
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--limit", type=int, default=1000, help="images, spread evenly over the sorted list (0 = all)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "bench" / "mesh_pose.json")
    parser.add_argument("--rows", action="store_true", help="also write every face's readings into the JSON")
    args = parser.parse_args(argv)
    if not (args.model / mesh.MODEL_FILE).exists():
        print(f"error: no {mesh.MODEL_FILE} in {args.model}: run `make models`",
              file=sys.stderr)
        return 1
    started = time.perf_counter()
    images, rows, with_reference = measure(args.lfw, args.model, args.limit, args.repository)
    result = {"data": str(args.lfw), "images": images, "faces": len(rows),
              "reference": "benchmarks/reference_pose.py (dlib 68 points, HOG)" if with_reference else None,
              **summarise(rows)}
    if args.rows:
        result["rows"] = rows
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["command"] = "python -m benchmarks.mesh_pose " + " ".join(argv if argv is not None else sys.argv[1:])
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
