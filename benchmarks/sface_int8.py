"""Would an int8 SFace reach the 5x-the-peer bar on CPU? Static int8 quantisation of the served SFace, measured.

    .venv/bin/python -m benchmarks.sface_int8 [--lfw ../shared/datasets/lfw-view1] [--runs 40]

The served fp32 `face_embedder` is quantised with onnxruntime's own tool (`quantize_static`, QDQ, per-channel
int8 weights, uint8 activations), calibrated on aligned crops of the registry test photos (flipped and
brightness-shifted copies), never on LFW. Then, side by side on this machine:
- latency per face at 1 intra-op thread (as face_pipeline runs each instance), batch 1 and 8, the two models
  taking turns so background load hits both alike;
- LFW View 1 accuracy on the same aligned crops (the pipeline's detector, alignment and face choice): the
  threshold fitted on DevTrain, accuracy reported on DevTest; and how far each int8 embedding is from fp32.
Prints a table and writes JSON (docs/bench/sface_int8.json by default).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from onnxruntime import quantization as q

from facestack.accuracy import metrics
from facestack.accuracy.dataset import ImageRef, LfwFolder
from facestack.artifacts import PHOTOS, REPO_ROOT, photo_bytes
from facestack.pipeline import choice
from facestack.pipeline.faces import FacePipeline, Options, l2_normalise
from facestack.pipeline.image import ImageError
from facestack.pipeline.runtime import InProcessModels, embedder_specs, latest_version
from facestack.pipeline.sessions import onnx_session, session_options
from facestack.triton.model_config import pipeline_parameters

REPOSITORY = REPO_ROOT / "model_repository"
MODEL = pipeline_parameters(REPOSITORY).embedders["sface"]  # the served SFace model


def aligned_crops(images: dict[str, bytes]) -> dict[str, np.ndarray]:
    """The SFace input (NCHW float32 RGB, 112 x 112) of each image's chosen face, through the pipeline's own
    detection, alignment and face choice; images without a face are left out."""
    specs, _ = embedder_specs(REPOSITORY, {"sface": MODEL})
    models = InProcessModels(REPOSITORY, specs, threads=os.cpu_count() or 1)
    captured: list[np.ndarray] = []

    def capture(_: str, crops: np.ndarray) -> np.ndarray:  # keep the crops; embeddings are not needed here
        captured.append(crops)
        return np.ones((len(crops), specs[0].dim), np.float32)

    pipeline = FacePipeline(models.detect, capture, specs, pipeline_parameters(REPOSITORY))
    out: dict[str, np.ndarray] = {}
    for key, data in images.items():
        captured.clear()
        (faces,) = pipeline.run([data], [Options()])
        if isinstance(faces, ImageError) or not len(faces.boxes):
            continue
        index, _ = choice.choose(faces.boxes, faces.image_size, "main")
        out[key] = captured[0][index]
    return out


def calibration_batches(crops: np.ndarray) -> list[np.ndarray]:
    """Registry-photo crops, plus flipped and darker/brighter copies: a small, LFW-free calibration set."""
    flipped = crops[..., ::-1]
    variants = [crops, flipped, np.clip(crops * 0.7, 0, 255), np.clip(crops * 1.2 + 10, 0, 255)]
    return [v[i:i + 1].astype(np.float32) for v in variants for i in range(len(v))]


class _Reader(q.CalibrationDataReader):
    def __init__(self, batches: list[np.ndarray]) -> None:
        self._it = iter([{"input": b} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._it, None)


def quantise(fp32: Path, batches: list[np.ndarray], out: Path, method: q.CalibrationMethod) -> None:
    q.quantize_static(str(fp32), str(out), _Reader(batches), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, calibrate_method=method)


def ms_per_face(sessions: dict[str, ort.InferenceSession], batch: int, runs: int) -> dict[str, float]:
    x = np.random.default_rng(0).uniform(0, 255, (batch, 3, 112, 112)).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for i in range(3 + runs):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, {"input": x})
            if i >= 3:
                times[name].append((time.perf_counter() - start) / batch)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def embed_all(sess: ort.InferenceSession, crops: np.ndarray, batch: int = 32) -> np.ndarray:
    return l2_normalise(np.concatenate([sess.run(None, {"input": crops[i:i + batch]})[0]
                                        for i in range(0, len(crops), batch)]))


def view1_accuracy(folder: LfwFolder, vectors: dict[ImageRef, np.ndarray]) -> dict:
    """DevTrain fits the threshold, DevTest is scored with it (pairs with a missing face count as
    non-matches, as the accuracy tool scores them)."""
    def scores(pairs) -> tuple[np.ndarray, np.ndarray]:
        s = [float(vectors[p.first] @ vectors[p.second]) if p.first in vectors and p.second in vectors else -1.0
             for p in pairs]
        return np.array(s), np.array([p.same for p in pairs])

    tr, tr_labels = scores(folder.dev_train.pairs)
    te, te_labels = scores(folder.dev_test.pairs)
    threshold, train_acc = metrics.best_accuracy_threshold(tr, tr_labels)
    return {"threshold": threshold, "dev_train_accuracy": train_acc,
            "dev_test_accuracy": metrics.accuracy(te, te_labels, threshold)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=REPO_ROOT.parent / "shared/datasets/lfw-view1")
    parser.add_argument("--runs", type=int, default=40, help="timed runs per model at batch 1 (half at batch 8)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs/bench/sface_int8.json")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    cv2.setNumThreads(1)

    version, _ = latest_version(REPOSITORY / MODEL)
    fp32 = REPOSITORY / MODEL / version / "model.onnx"
    registry = aligned_crops({name: photo_bytes(name) for name in PHOTOS})
    calib = calibration_batches(np.stack(list(registry.values())))
    folder = LfwFolder.open(args.lfw)
    refs = folder.images()
    lfw = aligned_crops({ref: folder.path(ref).read_bytes() for ref in refs})
    keys = list(lfw)
    crops = np.stack([lfw[k] for k in keys])
    print(f"calibration: {len(registry)} registry faces x 4 = {len(calib)} crops; LFW: {len(keys)} of {len(refs)} "
          "images with a face")

    with tempfile.TemporaryDirectory() as tmp:
        models = {"fp32 (served)": fp32}
        for label, method in (("int8 QDQ, MinMax", q.CalibrationMethod.MinMax),
                              ("int8 QDQ, Percentile", q.CalibrationMethod.Percentile)):
            models[label] = Path(tmp) / f"{method.name}.onnx"
            quantise(fp32, calib, models[label], method)
        sessions = {name: onnx_session(path, session_options(1)) for name, path in models.items()}
        b1 = ms_per_face(sessions, 1, args.runs)
        b8 = ms_per_face(sessions, 8, max(5, args.runs // 2))
        sizes = {name: path.stat().st_size / 1e6 for name, path in models.items()}
        embedded = {name: embed_all(sess, crops) for name, sess in sessions.items()}

    reference = embedded["fp32 (served)"]
    rows = {}
    for name, vectors in embedded.items():
        cos = np.sum(vectors * reference, axis=1)
        rows[name] = {"ms_per_face_b1": b1[name], "ms_per_face_b8": b8[name], "size_mb": sizes[name],
                      "speedup_b1": b1["fp32 (served)"] / b1[name],
                      "cosine_to_fp32": {"p50": float(np.median(cos)), "p1": float(np.percentile(cos, 1)),
                                         "min": float(cos.min())},
                      "lfw_view1": view1_accuracy(folder, dict(zip(keys, vectors, strict=True)))}
    load_after = os.getloadavg()[0]
    print(f"onnxruntime {ort.__version__}, 1 intra-op thread, ms per face (median of {args.runs} b1 / "
          f"{max(5, args.runs // 2)} b8 runs, interleaved); load average before/after {load_before:.2f} / "
          f"{load_after:.2f}")
    print("| model | b1 ms | b8 ms | speed-up b1 | MB | cos to fp32 p50 / p1 / min | DevTrain acc | DevTest acc |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for name, r in rows.items():
        c, a = r["cosine_to_fp32"], r["lfw_view1"]
        print(f"| {name} | {r['ms_per_face_b1']:.2f} | {r['ms_per_face_b8']:.2f} | {r['speedup_b1']:.2f}x | "
              f"{r['size_mb']:.1f} | {c['p50']:.4f} / {c['p1']:.4f} / {c['min']:.4f} | "
              f"{a['dev_train_accuracy']:.2%} | {a['dev_test_accuracy']:.2%} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.sface_int8", "onnxruntime": ort.__version__,
        "cpu_flags": sorted({f for f in Path("/proc/cpuinfo").read_text().split() if "avx" in f or "vnni" in f}),
        "load_average": [load_before, load_after], "calibration_crops": len(calib), "lfw_faces": len(keys),
        "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
