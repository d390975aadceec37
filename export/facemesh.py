"""MediaPipe FaceMesh (face_landmark, 468 points, Apache-2.0) -> ONNX, checked against MediaPipe itself.

    .venv-mesh/bin/python -m export.facemesh [--out model_repository/face_mesh/1]

Not part of `python -m export` / `make models` yet (docs/mesh.md): the conversion needs TensorFlow, tf2onnx and
the reference runtime (`mediapipe`), the `mesh-export` extra, installed into a separate venv:

    python3.11 -m venv .venv-mesh && .venv-mesh/bin/pip install -e '.[mesh-export]'

Sources, both pinned by version and sha256 (facestack.artifacts fetches them with pip / npm):
- the model: `mediapipe==0.10.21`'s `mediapipe/modules/face_landmark/face_landmark.tflite`, the model its
  legacy `solutions.face_mesh` runs (refine_landmarks=False); that wheel is also the parity reference;
- the canonical face (468 vertices in cm, and the 33 rigid landmarks MediaPipe's own pose fit weighs): the
  wheel does not ship it, npm `@mediapipe/face_mesh@0.4.1657299874` does, as
  `face_geometry/data/geometry_pipeline_metadata_landmarks.binarypb` packed at a fixed offset inside
  `face_mesh_solution_packed_assets.data` (offsets from that package's `..._packed_assets_loader.js`).

Conversion is tf2onnx's (`from_tflite`, opset 13): the fp16 weights come out dequantised to fp32. Then only
names and the batch axis change: the input becomes `input` [N, 192, 192, 3] (RGB in [0, 1], NHWC as
MediaPipe feeds it), the two final Reshapes (1x1 spatial maps to [1, 1, 1, K]) get `-1` batch targets, so
the outputs are `landmarks` [N, 468, 3] (crop pixels) and `face_flag` [N, 1] (a logit).

Parity is measured twice on registry photos: the ONNX against TensorFlow Lite's interpreter on the same
crops (the conversion), and facestack.pipeline.mesh (crop, ONNX, projection) against
`mediapipe.solutions.face_mesh` end to end in image pixels, framed by MediaPipe's tracking rectangle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from facestack import artifacts
from facestack.artifacts import Artifact, pypi, sha256_file
from facestack.pipeline import mesh

OPSET = 13
FACE_LANDMARK = pypi("mediapipe", "0.10.21", "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
                     "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
                     "mediapipe/modules/face_landmark/face_landmark.tflite",
                     "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", "Apache-2.0")
FACE_MESH_NPM = Artifact("npm", "@mediapipe/face_mesh", "0.4.1657299874", "mediapipe-face_mesh-0.4.1657299874.tgz",
                         "c08a7e0742a326285da666cf81d77c8b6f3a181a2ee948cadaf166008e0d3bc7",
                         "package/face_mesh_solution_packed_assets.data",
                         "dbe5905c582c0462cdaea17e7e6ecea92edaa8cccc515c5e2e7291f2cbb5fb99", "Apache-2.0")
GEOMETRY_SLICE = (3737848, 3757224)  # geometry_pipeline_metadata_landmarks.binarypb inside the packed data
GEOMETRY_SHA256 = "bdbcda96dfcb7da883da124aaa2c55dee49770d934f0fcc71747f8c21bdc75b4"
PARITY_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
SOURCE_OUTPUTS = {"conv2d_21": (mesh.LANDMARKS_NAME, [-1, mesh.POINTS, 3]), "conv2d_31": (mesh.FACE_FLAG_NAME, [-1, 1])}


def convert(tflite: Path) -> onnx.ModelProto:
    """tf2onnx's conversion, then the names and the batch axis (see the module docstring)."""
    import tf2onnx

    model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    graph = model.graph
    (graph_input,) = graph.input
    source_input, graph_input.name = graph_input.name, mesh.INPUT_NAME
    graph_input.type.tensor_type.shape.dim[0].dim_param = "N"
    initializers = {init.name: init for init in graph.initializer}
    renamed = {source_input: mesh.INPUT_NAME} | {src: name for src, (name, _) in SOURCE_OUTPUTS.items()}
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        if node.output[0] in SOURCE_OUTPUTS:
            if node.op_type != "Reshape":
                raise RuntimeError(f"{node.output[0]} is made by {node.op_type}, expected the final Reshape")
            target = initializers[node.input[1]]
            target.CopyFrom(numpy_helper.from_array(np.array(SOURCE_OUTPUTS[node.output[0]][1], np.int64), target.name))
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for output in graph.output:
        name, shape = SOURCE_OUTPUTS[output.name]
        output.name = name
        dims = output.type.tensor_type.shape
        dims.Clear()
        for d in shape:
            dims.dim.add().dim_param = "N" if d == -1 else ""
            if d != -1:
                dims.dim[-1].dim_value = d
    canonical_names(graph)
    onnx.checker.check_model(model, full_check=True)
    return model


def canonical_names(graph: onnx.GraphProto) -> None:
    """Name nodes, intermediate tensors and initializers by their place in the graph (`conv_12`, `const_40`).

    tf2onnx's optimiser walks sets (of names and of objects), so the names it makes up, and which of two
    identical MaxPools survives the merge, change from run to run even under a fixed hash seed: without this,
    two conversions of the same file compute the same thing but differ byte-wise."""
    keep = {i.name for i in graph.input} | {o.name for o in graph.output}
    initializers = {init.name: init for init in graph.initializer}
    renamed: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name in initializers and name not in renamed:
                renamed[name] = f"const_{len(renamed)}"
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.name = f"{node.op_type.lower()}_{index}"
        for slot, name in enumerate(node.output):
            if name not in keep:
                renamed[name] = node.name if len(node.output) == 1 else f"{node.name}_{slot}"
        node.output[:] = [renamed.get(name, name) for name in node.output]
    ordered = [initializers[old] for old in renamed if old in initializers]
    for init in ordered:
        init.name = renamed[init.name]
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def canonical_face(packed: Path) -> dict:
    """The canonical mesh (468 x, y, z in cm) and the Procrustes landmark ids and weights, from the binarypb."""
    from mediapipe.modules.face_geometry.protos import geometry_pipeline_metadata_pb2

    blob = packed.read_bytes()[slice(*GEOMETRY_SLICE)]
    if hashlib.sha256(blob).hexdigest() != GEOMETRY_SHA256:
        raise artifacts.ArtifactError(f"the geometry metadata at {GEOMETRY_SLICE} of {packed} differs from its pin")
    metadata = geometry_pipeline_metadata_pb2.GeometryPipelineMetadata()
    metadata.ParseFromString(blob)
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
    """MediaPipe's own FaceMesh (tracking mode: the second call on a photo is framed by the first's mesh)."""

    def __init__(self) -> None:
        import mediapipe as mp
        import tensorflow as tf

        self._mp = mp
        self.interpreter = tf.lite.Interpreter(str(artifacts.fetch(FACE_LANDMARK)), num_threads=1)
        self.interpreter.allocate_tensors()

    def tflite(self, crop: np.ndarray) -> np.ndarray:
        """The .tflite on one crop: [468, 3] crop pixels."""
        it = self.interpreter
        it.set_tensor(it.get_input_details()[0]["index"], crop[None])
        it.invoke()
        by_name = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
        return by_name["conv2d_21"].reshape(mesh.POINTS, 3)

    def solution(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(first, tracked) meshes in image pixels, or None when MediaPipe finds no face."""
        h, w = rgb.shape[:2]
        found = []
        with self._mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                                   refine_landmarks=False, min_detection_confidence=0.5) as fm:
            for _ in range(2):
                result = fm.process(rgb)
                if not result.multi_face_landmarks:
                    return None
                lm = result.multi_face_landmarks[0].landmark
                found.append(np.array([[p.x * w, p.y * h, p.z * w] for p in lm], np.float64))
        return found[0], found[1]


def parity(model_dir: Path, photos: tuple[str, ...] = PARITY_PHOTOS) -> dict:
    """Max |difference| per photo: ONNX vs TFLite (crop pixels) and facestack vs MediaPipe (image pixels)."""
    reference = Reference()
    ours = mesh.FaceMesh(model_dir)
    rows = []
    for name in photos:
        rgb = cv2.cvtColor(cv2.imread(str(artifacts.photo(name))), cv2.COLOR_BGR2RGB)
        meshes = reference.solution(rgb)
        if meshes is None:
            raise RuntimeError(f"MediaPipe found no face in {name}")
        first, tracked = meshes
        rect = mesh.rect_from_mesh(first)
        crop = mesh.crop(rgb, rect)
        onnx_points, _ = ours.infer(crop[None])
        tflite_points = reference.tflite(crop)
        result = ours.run(rgb, rect)
        iod = float(np.linalg.norm(tracked[mesh.LEFT_EYE_OUTER, :2] - tracked[mesh.RIGHT_EYE_OUTER, :2]))
        diff = np.abs(result.points - tracked)
        rows.append({"photo": name, "onnx_vs_tflite_max_px": float(np.abs(onnx_points[0] - tflite_points).max()),
                     "pipeline_vs_mediapipe_max_px_xy": float(diff[:, :2].max()),
                     "pipeline_vs_mediapipe_mean_px_xy": float(diff[:, :2].mean()),
                     "pipeline_vs_mediapipe_max_px_z": float(diff[:, 2].max()),
                     "eye_distance_px": iod})
    return {"photos": rows,
            "onnx_vs_tflite_max_px": max(r["onnx_vs_tflite_max_px"] for r in rows),
            "pipeline_vs_mediapipe_max_px_xy": max(r["pipeline_vs_mediapipe_max_px_xy"] for r in rows),
            "reference": {"tflite": "tensorflow.lite.Interpreter (TensorFlow "
                          f"{__import__('tensorflow').__version__})",
                          "solution": f"mediapipe {reference._mp.__version__} solutions.face_mesh "
                                      "(refine_landmarks=False, second frame tracked)"}}


def latency(model_dir: Path, runs: int = 300) -> dict:
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


def source_fields() -> dict:
    def one(a: Artifact) -> dict:
        return {"registry": a.registry, "package": a.package, "version": a.version, "archive": a.archive,
                "archive_sha256": a.archive_sha256, "member": a.member, "member_sha256": a.member_sha256,
                "licence": a.licence}

    return {"source": one(FACE_LANDMARK),
            "canonical_source": {**one(FACE_MESH_NPM), "slice": list(GEOMETRY_SLICE), "slice_sha256": GEOMETRY_SHA256}}


def export(out_dir: Path) -> dict:
    timings = {}
    started = time.perf_counter()
    tflite, packed = artifacts.fetch(FACE_LANDMARK), artifacts.fetch(FACE_MESH_NPM)
    timings["fetch_s"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    model = convert(tflite)
    timings["convert_s"] = round(time.perf_counter() - t, 1)
    # Written beside the target and renamed, so a crash never leaves a half-written model.
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        (Path(tmp) / mesh.MODEL_FILE).write_bytes(model.SerializeToString(deterministic=True))
        (Path(tmp) / mesh.CANONICAL_FILE).write_text(json.dumps(canonical_face(packed)) + "\n")
        for name in (mesh.MODEL_FILE, mesh.CANONICAL_FILE):
            (Path(tmp) / name).replace(out_dir / name)
    t = time.perf_counter()
    checked = parity(out_dir)
    timings["parity_s"] = round(time.perf_counter() - t, 1)
    onnx_path = out_dir / mesh.MODEL_FILE
    manifest = {
        "name": "face_mesh", "family": "mediapipe-face-landmark-468", "licence": "Apache-2.0",
        "licence_evidence": [
            "mediapipe-0.10.21.dist-info/LICENSE (Apache License, Version 2.0); METADATA 'License: Apache 2.0'",
            "@mediapipe/face_mesh package/package.json '\"license\": \"Apache-2.0\"'"],
        **source_fields(),
        "exporter": {"module": "export/facemesh.py", "sha256": sha256_file(Path(__file__)),
                     "converter": f"tf2onnx {__import__('tf2onnx').__version__} from_tflite, opset {OPSET}"},
        "output": {"file": mesh.MODEL_FILE, "sha256": sha256_file(onnx_path), "bytes": onnx_path.stat().st_size},
        "canonical": {"file": mesh.CANONICAL_FILE, "sha256": sha256_file(out_dir / mesh.CANONICAL_FILE)},
        "input": {"name": mesh.INPUT_NAME, "shape": ["N", mesh.INPUT_SIZE, mesh.INPUT_SIZE, 3], "layout": "NHWC",
                  "colour": "RGB", "scale": "0..1 float32",
                  "framing": "square rotated to level the eyes, 1.5x the face (facestack.pipeline.mesh.Rect)"},
        "outputs": {mesh.LANDMARKS_NAME: {"shape": ["N", mesh.POINTS, 3], "units": "crop pixels (z scaled like x)"},
                    mesh.FACE_FLAG_NAME: {"shape": ["N", 1], "units": "logit of face presence"}},
        "parity": checked,
        "latency": latency(out_dir),
        "timings": timings,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.facemesh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=artifacts.REPO_ROOT / "model_repository" / "face_mesh" / "1")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        manifest = export(args.out)
    except (artifacts.ArtifactError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    p = manifest["parity"]
    print(f"face_mesh -> {args.out / mesh.MODEL_FILE} ({manifest['output']['bytes'] / 1e6:.1f} MB, "
          f"{time.perf_counter() - started:.1f} s): ONNX vs TFLite max {p['onnx_vs_tflite_max_px']:.2e} px, "
          f"pipeline vs MediaPipe max {p['pipeline_vs_mediapipe_max_px_xy']:.2e} px, "
          f"{manifest['latency']['median_ms']} ms/face at 1 thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
