"""Building `face_pipeline` requests and reading its responses with tritonclient (gRPC, sync or asyncio).

The tensor contract is in docs/architecture.md; this is its one client-side implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from facestack.pipeline.quality import FIELDS as QUALITY_FIELDS

MODEL = "face_pipeline"
OUTPUTS = ("BOXES", "SCORES", "LANDMARKS", "EMBEDDINGS", "QUALITY", "IMAGE_SIZE", "EMBEDDER_MODEL")


@dataclass(frozen=True)
class PipelineResult:
    boxes: np.ndarray  # [F, 4]
    scores: np.ndarray  # [F]
    landmarks: np.ndarray  # [F, 5, 2]
    embeddings: np.ndarray  # [F, D], L2-normalised
    quality: np.ndarray  # [F, 6], columns QUALITY_FIELDS
    image_size: tuple[int, int]  # height, width
    embedder_model: str  # "face_embedder:1"

    def __len__(self) -> int:
        return len(self.scores)

    def quality_of(self, face: int) -> dict[str, float]:
        return {name: float(v) for name, v in zip(QUALITY_FIELDS, self.quality[face], strict=True)}


def build_request(client_module: ModuleType, image: bytes, *, embedder: str | None = None,
                  max_faces: int | None = None, min_face_size: int | None = None) -> tuple[list, list]:
    """Inputs and requested outputs for one image; `client_module` is tritonclient.grpc or tritonclient.grpc.aio."""
    inputs = []

    def add(name: str, array: np.ndarray, dtype: str) -> None:
        tensor = client_module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)

    add("IMAGE", np.array([[image]], dtype=np.object_), "BYTES")
    if max_faces is not None:
        add("MAX_FACES", np.array([[max_faces]], dtype=np.int32), "INT32")
    if min_face_size is not None:
        add("MIN_FACE_SIZE", np.array([[min_face_size]], dtype=np.int32), "INT32")
    if embedder is not None:
        add("EMBEDDER", np.array([[embedder.encode()]], dtype=np.object_), "BYTES")
    outputs = [client_module.InferRequestedOutput(name) for name in OUTPUTS]
    return inputs, outputs


def parse_result(result) -> PipelineResult:
    """An InferResult of face_pipeline (batch of one) as arrays."""
    def get(name: str) -> np.ndarray:
        return result.as_numpy(name)[0]

    height, width = (int(v) for v in get("IMAGE_SIZE"))
    model = get("EMBEDDER_MODEL")[0]
    return PipelineResult(
        boxes=get("BOXES").reshape(-1, 4), scores=get("SCORES").reshape(-1),
        landmarks=get("LANDMARKS").reshape(-1, 5, 2), embeddings=get("EMBEDDINGS"),
        quality=get("QUALITY").reshape(-1, len(QUALITY_FIELDS)), image_size=(height, width),
        embedder_model=model.decode() if isinstance(model, bytes) else str(model),
    )


def infer(client, image: bytes, **options) -> PipelineResult:
    """One synchronous pipeline call with a tritonclient.grpc.InferenceServerClient."""
    import tritonclient.grpc as grpcclient

    inputs, outputs = build_request(grpcclient, image, **options)
    return parse_result(client.infer(MODEL, inputs, outputs=outputs))
