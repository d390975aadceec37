"""The image -> faces -> embeddings pipeline, independent of where the models run.

`model_repository/face_pipeline` runs it inside Triton with the detector and embedders either as
onnxruntime sessions in its own process (CPU nodes) or as Triton models called through BLS (GPU nodes);
the benchmark runs the very same code with in-process sessions as the ceiling Triton is measured against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facestack.pipeline import detection, pad, quality
from facestack.pipeline.alignment import align
from facestack.pipeline.image import Decoded, ImageError, decode_reduced, fit, to_nchw

if TYPE_CHECKING:
    from facestack.triton.model_config import PipelineParameters

# detect(NCHW uint8 BGR batch) -> YuNet outputs, each with a leading batch axis
DetectFn = Callable[[np.ndarray], dict[str, np.ndarray]]
# embed(embedder name, NCHW float32 RGB crops) -> [N, D] raw embeddings
EmbedFn = Callable[[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EmbedderSpec:
    name: str  # "sface", "dlib"
    model: str  # Triton model name
    template: np.ndarray  # [5, 2] landmark targets in crop pixels
    size: int  # crop side
    dim: int = 128  # embedding length


@dataclass(frozen=True)
class Options:
    max_faces: int = 16
    min_face_size: float = 0.0
    embedder: str = ""  # an EmbedderSpec.name; "" = the pipeline's default_embedder


@dataclass
class Faces:
    """Everything the pipeline returns for one image (F faces, sorted largest first)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    quality: np.ndarray  # [F, len(quality.FIELDS)]
    image_size: tuple[int, int]  # height, width
    embedder: EmbedderSpec
    embeddings: np.ndarray  # [F, D], L2-normalised
    pad_scores: np.ndarray | None = None  # [F] bona-fide scores, only when a face_pad model runs


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class FacePipeline:
    def __init__(self, detect: DetectFn, embed: EmbedFn, embedders: Sequence[EmbedderSpec],
                 parameters: PipelineParameters, pad_score: pad.PadFn | None = None) -> None:
        """`parameters`: face_pipeline's config (detector sizes and thresholds, pixel limit, reduced JPEG decoding;
        facestack.triton.model_config); `pad_score`: the face_pad model, when one runs (facestack.pipeline.pad)."""
        self._detect = detect
        self._pad = pad_score
        self._embed = embed
        self.embedders = {spec.name: spec for spec in embedders}
        self.default_embedder = parameters.default_embedder
        self.detector_sizes = parameters.detector_sizes
        self.score_threshold = parameters.score_threshold
        self.nms_threshold = parameters.nms_threshold
        self.max_pixels = parameters.max_pixels
        self.decode_min_long_side = parameters.decode_min_long_side

    def run(self, images: Sequence[bytes], options: Sequence[Options]) -> list[Faces | ImageError]:
        """Process a batch of encoded images: one detector call per detector size in use, then one embedder
        call per embedder."""
        options = [o if o.embedder else replace(o, embedder=self.default_embedder) for o in options]
        results: list[Faces | ImageError | None] = [None] * len(images)
        decoded: dict[int, Decoded] = {}
        for i, (data, opts) in enumerate(zip(images, options, strict=True)):
            try:
                if opts.embedder not in self.embedders:
                    raise ImageError("invalid_argument", f"unknown embedder {opts.embedder!r}; "
                                     f"choose one of {sorted(self.embedders)}")
                decoded[i] = decode_reduced(data, self.max_pixels, self.decode_min_long_side)
            except ImageError as exc:
                results[i] = exc

        # Images of one detector size go to the detector together.
        fitted = {i: fit(d.image, self.detector_sizes) for i, d in decoded.items()}
        found: dict[int, detection.Detections] = {}
        for size in self.detector_sizes:
            group = [i for i, lb in fitted.items() if lb.canvas.shape[0] == size]
            if not group:
                continue
            outputs = self._detect(to_nchw([fitted[i].canvas for i in group], np.uint8))
            for row, i in enumerate(group):
                faces = detection.decode({k: v[row] for k, v in outputs.items()}, size, size,
                                         self.score_threshold, self.nms_threshold)
                # Into the original photo's pixels (the decoded image may be reduced by `factor`).
                found[i] = faces.scaled(decoded[i].factor / fitted[i].scale)

        crops: dict[str, list[tuple[int, np.ndarray]]] = {}
        pad_crops: list[tuple[int, np.ndarray]] = []
        for i, d in decoded.items():
            opts = options[i]
            faces = detection.select(found[i], opts.max_faces, opts.min_face_size)
            spec = self.embedders[opts.embedder]
            aligned = [align(d.image, lm / d.factor, spec.template, spec.size) for lm in faces.landmarks]
            qualities = [quality.measure(box, lm, crop)
                         for box, lm, crop in zip(faces.boxes, faces.landmarks, aligned, strict=True)]
            results[i] = Faces(
                boxes=faces.boxes, scores=faces.scores, landmarks=faces.landmarks,
                quality=np.array(qualities, np.float32).reshape(-1, len(quality.FIELDS)),
                image_size=d.size, embedder=spec, embeddings=np.zeros((0, spec.dim), np.float32),
            )
            crops.setdefault(spec.name, []).extend((i, c) for c in aligned)
            if self._pad is not None:  # SFace's crop is the PAD contract's; another embedder's is aligned again
                same = spec.size == pad.SIZE and np.allclose(spec.template, pad.TEMPLATE)
                pad_crops.extend((i, c if same else align(d.image, lm / d.factor, pad.TEMPLATE, pad.SIZE))
                                 for c, lm in zip(aligned, faces.landmarks, strict=True))

        for name, items in crops.items():
            if not items:
                continue
            rgb = [cv2.cvtColor(crop, cv2.COLOR_BGR2RGB) for _, crop in items]
            vectors = l2_normalise(self._embed(name, to_nchw(rgb)))
            owners = np.array([i for i, _ in items])
            for i in np.unique(owners):
                results[i].embeddings = vectors[owners == i]  # type: ignore[union-attr]
        if self._pad is not None:
            scores = (np.asarray(self._pad(to_nchw([cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for _, c in pad_crops])),
                                 np.float32).reshape(-1) if pad_crops else np.zeros(0, np.float32))
            owners = np.array([i for i, _ in pad_crops], dtype=np.int64)
            for i in decoded:
                results[i].pad_scores = scores[owners == i]  # type: ignore[union-attr]
        return results  # type: ignore[return-value]
