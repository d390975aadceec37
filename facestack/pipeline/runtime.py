"""Where the pipeline's models run in process: onnxruntime sessions over the exported model repository.

Used by `face_pipeline` on CPU nodes (its detector and embedders as sessions inside its own Triton
python-model process) and by the benchmark as the ceiling; also the sessions of the python-backend
composing models.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from facestack.pipeline import detection
from facestack.pipeline.faces import EmbedderSpec
from facestack.pipeline.sessions import newest_version, onnx_session, session_options
from facestack.triton.model_config import pipeline_parameters


def latest_version(model_dir: Path) -> tuple[str, dict]:
    """The newest exported version of a model (the one Triton serves by default) and its manifest."""
    version = newest_version(model_dir, "manifest.json")
    if version is None:
        raise FileNotFoundError(f"no exported version with manifest.json under {model_dir} (run `python -m export`)")
    return version.name, json.loads((version / "manifest.json").read_text())


def embedder_specs(repository: Path, models: Mapping[str, str] | None = None
                   ) -> tuple[list[EmbedderSpec], dict[str, str]]:
    """Each embedder's alignment spec from its manifest, and its served "model:version" by name.
    `models`: name -> Triton model; by default the embedders of the repository's face_pipeline config."""
    if models is None:
        models = pipeline_parameters(repository).embedders
    specs, versions = [], {}
    for name, model in models.items():
        version, manifest = latest_version(repository / model)
        align = manifest["alignment"]
        specs.append(EmbedderSpec(name, model, np.asarray(align["template"], np.float64), align["size"][0],
                                  manifest["embedding"]["dim"]))
        versions[name] = f"{model}:{version}"
    return specs, versions


class InProcessModels:
    """The detector and embedders as onnxruntime sessions in this process: FacePipeline's detect and embed."""

    def __init__(self, repository: Path, specs: list[EmbedderSpec], threads: int, detector: str | None = None) -> None:
        """`detector`: the detector model (by default the repository's face_pipeline config names it)."""
        def session(model: str) -> ort.InferenceSession:
            version, _ = latest_version(repository / model)
            return onnx_session(repository / model / version / "model.onnx", session_options(threads))

        self.detector = session(detector or pipeline_parameters(repository).detector_model)
        self.embedders = {spec.name: session(spec.model) for spec in specs}
        self._outputs = list(detection.OUTPUT_NAMES)

    def detect(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.detector.run(self._outputs, {"input": batch}), strict=True))

    def embed(self, embedder: str, crops: np.ndarray) -> np.ndarray:
        return self.embedders[embedder].run(["embedding"], {"input": crops})[0]
