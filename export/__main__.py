"""`python -m export`: build the model repository's weights and manifests from pinned registry artifacts.

    python -m export                 # (re)export every model
    python -m export --if-missing    # only models whose model.onnx is absent, differs from its manifest,
                                     # or was made by another version of its exporter module
    python -m export --tensorrt      # also build TensorRT plans (GPU node with TensorRT only)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from export import facemesh, weights
from facestack import artifacts
from facestack.artifacts import Artifact, sha256_file
from facestack.settings import THRESHOLDS_FILE


@dataclass(frozen=True)
class ModelExport:
    model: str  # Triton model name
    family: str
    artifact: Artifact
    module: str  # export.<module>.export_onnx(src, out) -> facts; may write more files beside `out`
    helpers: tuple[str, ...] = ()  # other export.<module>s it converts with (their changes re-export too)


MODELS = (
    ModelExport("face_detector", "yunet-2023mar", weights.YUNET, "yunet"),
    ModelExport("face_embedder", "sface-2021dec", weights.SFACE_INT8BQ, "sface"),
    ModelExport("face_embedder_dlib", "dlib-resnet-v1", weights.DLIB_RESNET, "dlib_resnet"),
    ModelExport("face_mesh", "mediapipe-face-landmark-468", facemesh.FACE_LANDMARK, "facemesh", ("tflite_onnx",)),
)


def version_dir(repository: Path, model: str) -> Path:
    return repository / model / "1"


def exporter_sha256(spec: ModelExport) -> str:
    """The exporter modules' source: a changed exporter (new graph rewrite, new input type) re-exports."""
    digests = [sha256_file(Path(__file__).with_name(f"{m}.py")) for m in (spec.module, *spec.helpers)]
    # one module: its file's sha256, as manifests recorded before exporters had helpers
    return digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()


def is_current(repository: Path, spec: ModelExport) -> bool:
    """True when model.onnx exists and matches the manifest written with it, from the pinned source, by
    this version of the exporter."""
    directory = version_dir(repository, spec.model)
    manifest_path, onnx_path = directory / "manifest.json", directory / "model.onnx"
    if not (manifest_path.exists() and onnx_path.exists()):
        return False
    manifest = json.loads(manifest_path.read_text())
    return (manifest.get("source", {}).get("member_sha256") == spec.artifact.member_sha256
            and manifest.get("exporter", {}).get("sha256") == exporter_sha256(spec)
            and manifest.get("output", {}).get("sha256") == sha256_file(onnx_path))


def thresholds(model: str) -> dict:
    """Calibrated operating points (committed in facestack/thresholds.json, written by the accuracy work)."""
    return json.loads(THRESHOLDS_FILE.read_text()).get(model, {})


def calibration_fields(model: str) -> dict:
    """The manifest's share of facestack/thresholds.json: 1:1 (FMR) and 1:N (FPIR by gallery size) operating points."""
    calibrated = thresholds(model)
    fields = {"thresholds": calibrated.get("operating_points", {}),
              "default_operating_point": calibrated.get("default_operating_point")}
    if "identify_operating_points" in calibrated:
        fields.update({"fmr_ladder": calibrated.get("fmr_ladder", []),
                       "identify_thresholds": calibrated["identify_operating_points"],
                       "default_identify_operating_point": calibrated.get("default_identify_operating_point")})
    return fields


def refresh_calibration(repository: Path, spec: ModelExport) -> bool:
    """Bring a current export's manifest up to date with facestack/thresholds.json (no re-export); True if changed."""
    path = version_dir(repository, spec.model) / "manifest.json"
    manifest = json.loads(path.read_text())
    fields = calibration_fields(spec.model)
    if all(manifest.get(k) == v for k, v in fields.items()):
        return False
    manifest.update(fields)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return True


def build_manifest(spec: ModelExport, facts: dict, onnx_path: Path) -> dict:
    a = spec.artifact
    return {
        "name": spec.model,
        "family": spec.family,
        "licence": a.licence,
        "source": {"registry": a.registry, "package": a.package, "version": a.version, "archive": a.archive,
                   "archive_sha256": a.archive_sha256, "member": a.member, "member_sha256": a.member_sha256},
        "exporter": {"module": f"export/{spec.module}.py", "sha256": exporter_sha256(spec),
                     **({"helpers": [f"export/{m}.py" for m in spec.helpers]} if spec.helpers else {})},
        "output": {"file": onnx_path.name, "sha256": sha256_file(onnx_path), "bytes": onnx_path.stat().st_size},
        **facts,
        **calibration_fields(spec.model),
    }


def export_model(repository: Path, spec: ModelExport) -> dict:
    started = time.perf_counter()
    src = artifacts.fetch(spec.artifact)
    directory = version_dir(repository, spec.model)
    directory.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"export.{spec.module}")
    # Write beside the target and rename, so a crash never leaves a half-written model for Triton.
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        tmp_onnx = Path(tmp) / "model.onnx"
        facts = module.export_onnx(src, tmp_onnx)
        for extra in sorted(Path(tmp).iterdir()):  # model.onnx last: it marks the export as complete
            if extra != tmp_onnx:
                extra.replace(directory / extra.name)
        tmp_onnx.replace(directory / "model.onnx")
    manifest = build_manifest(spec, facts, directory / "model.onnx")
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"  {spec.model}: {spec.family} from {spec.artifact.spec} -> {directory / 'model.onnx'} "
          f"({manifest['output']['bytes'] / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s)", flush=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=artifacts.REPO_ROOT / "model_repository")
    parser.add_argument("--if-missing", action="store_true", help="skip models that are already exported")
    parser.add_argument("--only", nargs="*", choices=[m.model for m in MODELS], help="export only these models")
    parser.add_argument("--tensorrt", action="store_true", help="also build FP16 TensorRT plans (needs a GPU)")
    args = parser.parse_args(argv)

    selected = [m for m in MODELS if not args.only or m.model in args.only]
    todo = [m for m in selected if not (args.if_missing and is_current(args.repository, m))]
    for spec in selected:
        if spec not in todo and refresh_calibration(args.repository, spec):
            print(f"  {spec.model}: operating points refreshed from {THRESHOLDS_FILE.name}", flush=True)
    if todo:
        print(f"==> exporting {len(todo)} model(s) from pinned registry artifacts", flush=True)
    try:
        for spec in todo:
            export_model(args.repository, spec)
        if args.tensorrt:
            from export import tensorrt

            tensorrt.build_all(args.repository)
    except (artifacts.ArtifactError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not todo and not args.tensorrt:
        print("==> models are up to date", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
