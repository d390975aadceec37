"""MediaPipe FaceMesh (face_landmark, 468 points, Apache-2.0) -> ONNX, checked against TensorFlow Lite.

    python -m export --only face_mesh      (part of `python -m export` / `make models`)

Sources, both pinned by version and sha256 (facestack.artifacts fetches them with pip / npm):
- the model: `mediapipe==0.10.21`'s `mediapipe/modules/face_landmark/face_landmark.tflite`, the model its
  legacy `solutions.face_mesh` runs (refine_landmarks=False);
- the canonical face (468 vertices in cm, and the 33 rigid landmarks MediaPipe's own pose fit weighs): the
  wheel does not ship it, npm `@mediapipe/face_mesh@0.4.1657299874` does, as
  `face_geometry/data/geometry_pipeline_metadata_landmarks.binarypb` packed at a fixed offset inside
  `face_mesh_solution_packed_assets.data` (offsets from that package's `..._packed_assets_loader.js`). It is
  decoded with the protobuf schema the same wheel ships (its generated `*_pb2.py` files carry the serialized
  .proto descriptors), by the protobuf library, without importing mediapipe.

Conversion is export/tflite_onnx.py's (no TensorFlow; opset 13): the fp16 weights come out dequantised to fp32;
the input is `input` [N, 192, 192, 3] (RGB in [0, 1], NHWC as MediaPipe feeds it), the outputs `landmarks`
[N, 468, 3] (crop pixels) and `face_flag` [N, 1] (a logit). Its outputs equal those of the tf2onnx 1.17
conversion this module used before (max difference 0.0 on random inputs, docs/mesh.md), so that conversion's
end-to-end check against `mediapipe.solutions.face_mesh` (0.028 px) carries over.

Parity is measured on registry photos against TensorFlow Lite's interpreter (`tflite-runtime`, the dev extra)
on the same crops, framed as MediaPipe tracks a face: a first pass on a centred square, then the tracking
rectangle of that mesh (facestack.pipeline.mesh.rect_from_mesh).
"""

from __future__ import annotations

import ast
import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from export import tflite_onnx, weights
from facestack import artifacts
from facestack.artifacts import Artifact, pypi
from facestack.pipeline import mesh

_WHEEL = ("mediapipe", "0.10.21", "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
          "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3")
FACE_LANDMARK = pypi(*_WHEEL, "mediapipe/modules/face_landmark/face_landmark.tflite",
                     "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", "Apache-2.0")
# The geometry metadata's schema, in dependency order (geometry_pipeline_metadata.proto imports mesh_3d.proto).
GEOMETRY_SCHEMA = (
    pypi(*_WHEEL, "mediapipe/modules/face_geometry/protos/mesh_3d_pb2.py",
         "ce9dc3fbdb1010ec0b1ef665612d1a6e07b9204585ce4017a9275cc3c7d73ce1", "Apache-2.0"),
    pypi(*_WHEEL, "mediapipe/modules/face_geometry/protos/geometry_pipeline_metadata_pb2.py",
         "0976bba9bb28b39e7df1a494bd1a12ab2f0c0eae5f46f3e26b6c8e574e6ca7e1", "Apache-2.0"),
)
GEOMETRY_MESSAGE = "mediapipe.face_geometry.GeometryPipelineMetadata"
FACE_MESH_NPM = Artifact("npm", "@mediapipe/face_mesh", "0.4.1657299874", "mediapipe-face_mesh-0.4.1657299874.tgz",
                         "c08a7e0742a326285da666cf81d77c8b6f3a181a2ee948cadaf166008e0d3bc7",
                         "package/face_mesh_solution_packed_assets.data",
                         "dbe5905c582c0462cdaea17e7e6ecea92edaa8cccc515c5e2e7291f2cbb5fb99", "Apache-2.0")
GEOMETRY_SLICE = (3737848, 3757224)  # geometry_pipeline_metadata_landmarks.binarypb inside the packed data
GEOMETRY_SHA256 = "bdbcda96dfcb7da883da124aaa2c55dee49770d934f0fcc71747f8c21bdc75b4"
PARITY_TOLERANCE_PX = 0.01  # float32 reordering gives ~1e-4 px; a wrong operator mapping gives pixels
PARITY_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
SOURCE_OUTPUTS = {"conv2d_21": (mesh.LANDMARKS_NAME, [-1, mesh.POINTS, 3]), "conv2d_31": (mesh.FACE_FLAG_NAME, [-1, 1])}


def serialized_descriptor(pb2_source: str) -> bytes:
    """The FileDescriptorProto a generated *_pb2.py registers (its `AddSerializedFile(b'...')` literal)."""
    for node in ast.walk(ast.parse(pb2_source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return node.args[0].value
    raise RuntimeError("no AddSerializedFile call in the generated protobuf module")


def geometry_metadata_class() -> type:
    """MediaPipe's GeometryPipelineMetadata message, built from the wheel's descriptors in a private pool."""
    pool = descriptor_pool.DescriptorPool()
    for schema in GEOMETRY_SCHEMA:
        blob = serialized_descriptor(artifacts.fetch(schema).read_text())
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(blob))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(GEOMETRY_MESSAGE))


def canonical_face(packed: Path) -> dict:
    """The canonical mesh (468 x, y, z in cm) and the Procrustes landmark ids and weights, from the binarypb."""
    blob = packed.read_bytes()[slice(*GEOMETRY_SLICE)]
    if hashlib.sha256(blob).hexdigest() != GEOMETRY_SHA256:
        raise artifacts.ArtifactError(f"the geometry metadata at {GEOMETRY_SLICE} of {packed} differs from its pin")
    metadata = geometry_metadata_class().FromString(blob)
    # vertex_buffer: x, y, z, u, v per vertex (VERTEX_PT)
    vertices = np.asarray(metadata.canonical_mesh.vertex_buffer, np.float64).reshape(-1, 5)[:, :3]
    if vertices.shape != (mesh.POINTS, 3):
        raise RuntimeError(f"canonical mesh has {vertices.shape} vertices, expected {mesh.POINTS}")
    basis = sorted((b.landmark_id, b.weight) for b in metadata.procrustes_landmark_basis)
    return {"source": "MediaPipe face_geometry geometry_pipeline_metadata_landmarks (canonical_face_model)",
            "units": "cm; x to the subject's left, y up, z out of the face",
            "vertices": np.round(vertices, 6).tolist(),
            "procrustes_ids": [i for i, _ in basis], "procrustes_weights": [round(w, 8) for _, w in basis]}


class Reference:
    """TensorFlow Lite's interpreter on the pinned .tflite: the conversion's reference."""

    def __init__(self, tflite: Path) -> None:
        from tflite_runtime.interpreter import Interpreter

        self.interpreter = Interpreter(str(tflite), num_threads=1)
        self.interpreter.allocate_tensors()

    def run(self, crop: np.ndarray) -> tuple[np.ndarray, float]:
        """One crop [192, 192, 3] -> ([468, 3] crop pixels, presence logit)."""
        it = self.interpreter
        it.set_tensor(it.get_input_details()[0]["index"], crop[None])
        it.invoke()
        by_name = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
        return by_name["conv2d_21"].reshape(mesh.POINTS, 3), float(by_name["conv2d_31"].reshape(()))


def tracked_crops(rgb: np.ndarray, model: mesh.FaceMesh, detector: cv2.FaceDetectorYN) -> list[np.ndarray]:
    """Two crops as MediaPipe tracks a face: framed from a YuNet detection (OpenCV's own FaceDetectorYN on the
    pinned YuNet weights, independent of facestack's detector code), then by the tracking rect of that mesh."""
    detector.setInputSize(rgb.shape[1::-1])
    _, faces = detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if faces is None:
        raise RuntimeError("YuNet found no face in a parity photo")
    x, y, fw, fh = faces[0][:4]
    first = mesh.rect_from_detection(np.array([x, y, x + fw, y + fh]), faces[0][4:14].reshape(5, 2))
    tracked = mesh.rect_from_mesh(model.run(rgb, first).points)
    return [mesh.crop(rgb, first), mesh.crop(rgb, tracked)]


def parity(model_dir: Path, tflite: Path, photos: tuple[str, ...] = PARITY_PHOTOS) -> dict:
    """Max |ONNX - TFLite| per photo over both tracked crops: landmarks in crop pixels, presence logits (and the
    presence on the tracked crop, which shows the crops are faces)."""
    reference = Reference(tflite)
    ours = mesh.FaceMesh(model_dir)
    detector = cv2.FaceDetectorYN.create(str(artifacts.fetch(weights.YUNET)), "", (320, 320))  # loaded once
    rows = []
    for name in photos:
        rgb = cv2.cvtColor(cv2.imread(str(artifacts.photo(name))), cv2.COLOR_BGR2RGB)
        crops = tracked_crops(rgb, ours, detector)
        points, logits = ours.infer(np.stack(crops))
        expected = [reference.run(c) for c in crops]
        rows.append({"photo": name,
                     "max_px": float(max(np.abs(p - e).max() for p, (e, _) in zip(points, expected, strict=True))),
                     "max_logit": float(max(abs(float(g) - e) for g, (_, e) in zip(logits, expected, strict=True))),
                     "presence": round(float(1 / (1 + np.exp(-logits[-1]))), 4)})
    worst = max(r["max_px"] for r in rows)
    if worst > PARITY_TOLERANCE_PX:
        raise RuntimeError(f"face_mesh ONNX differs from TensorFlow Lite by {worst:.3g} px (> {PARITY_TOLERANCE_PX})")
    return {"photos": rows, "onnx_vs_tflite_max_px": max(r["max_px"] for r in rows),
            "onnx_vs_tflite_max_logit": max(r["max_logit"] for r in rows),
            "reference": f"tflite_runtime {__import__('tflite_runtime').__version__} Interpreter (1 thread)"}


def latency(model_dir: Path, runs: int = 200) -> dict:
    """Median and p90 ms of one face through the ONNX at 1 thread (batch 1)."""
    ours = mesh.FaceMesh(model_dir, threads=1)
    x = np.random.default_rng(0).random((1, mesh.INPUT_SIZE, mesh.INPUT_SIZE, 3), dtype=np.float32)
    for _ in range(20):
        ours.infer(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        ours.infer(x)
        times.append((time.perf_counter() - t) * 1e3)
    return {"threads": 1, "batch": 1, "runs": runs, "median_ms": round(float(np.median(times)), 3),
            "p90_ms": round(float(np.percentile(times, 90)), 3), "min_ms": round(float(np.min(times)), 3)}


def export_onnx(src: Path, out: Path) -> dict:
    """`python -m export`'s entry: model.onnx at `out`, the canonical face beside it, parity checked there."""
    model = tflite_onnx.convert(src, mesh.INPUT_NAME, SOURCE_OUTPUTS)
    out.write_bytes(model.SerializeToString(deterministic=True))
    packed = artifacts.fetch(FACE_MESH_NPM)
    canonical = out.with_name(mesh.CANONICAL_FILE)
    canonical.write_text(json.dumps(canonical_face(packed)) + "\n")
    a = FACE_MESH_NPM
    return {
        "licence_evidence": [
            "mediapipe-0.10.21.dist-info/LICENSE (Apache License, Version 2.0); METADATA 'License: Apache 2.0'",
            "@mediapipe/face_mesh package/package.json '\"license\": \"Apache-2.0\"'"],
        "canonical_source": {"registry": a.registry, "package": a.package, "version": a.version,
                             "archive": a.archive, "archive_sha256": a.archive_sha256, "member": a.member,
                             "member_sha256": a.member_sha256, "slice": list(GEOMETRY_SLICE),
                             "slice_sha256": GEOMETRY_SHA256,
                             "schema": [s.member for s in GEOMETRY_SCHEMA]},
        "canonical": {"file": mesh.CANONICAL_FILE, "sha256": artifacts.sha256_file(canonical)},
        "converter": f"export/tflite_onnx.py, opset {tflite_onnx.OPSET}",
        "input": {"name": mesh.INPUT_NAME, "shape": ["N", mesh.INPUT_SIZE, mesh.INPUT_SIZE, 3], "layout": "NHWC",
                  "colour": "RGB", "scale": "0..1 float32",
                  "framing": "square rotated to level the eyes, 1.5x the face (facestack.pipeline.mesh.Rect)"},
        "outputs": {mesh.LANDMARKS_NAME: {"shape": ["N", mesh.POINTS, 3], "units": "crop pixels (z scaled like x)"},
                    mesh.FACE_FLAG_NAME: {"shape": ["N", 1], "units": "logit of face presence"}},
        "parity": parity(out.parent, src),
        "latency": latency(out.parent),
    }
