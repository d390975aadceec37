"""The `face_pad` slot: an optional presentation-attack-detection model the pipeline calls on every face.

No PAD model ships with facestack (docs/liveness.md). The contract (docs/architecture.md): input `input`,
N x 3 x 112 x 112 float32 RGB 0..255, the face aligned by similarity transform onto ArcFace's five-point
template (the crop SFace gets); output `score`, N x 1 float32, the bona-fide score (higher = more likely a
live face; the gateway's threshold decides). The pipeline calls it when the model is in the repository and
its name is face_pipeline's `pad_model` parameter (empty = disabled).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from facestack.pipeline.sessions import newest_version

PAD_MODEL = "face_pad"
INPUT_NAME = "input"
OUTPUT_NAME = "score"
SIZE = 112
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                     [70.7299, 92.2041]])
# score(N x 3 x 112 x 112 float32 RGB crops) -> [N] bona-fide scores
PadFn = Callable[[np.ndarray], np.ndarray]


def model_file(repository: Path, model: str = PAD_MODEL) -> Path | None:
    """The newest version's model.onnx of the PAD model, or None when it is not in the repository."""
    version = newest_version(repository / model, "model.onnx")
    return version / "model.onnx" if version else None
