"""The `face_pipeline` wire contract, client side: tensor names, request building, result parsing.

The one place that knows the tensors (docs/architecture.md); the gateway (gateway/triton_client.py: transport,
bulkhead, error mapping), the accuracy tool and the benchmarks all build and read requests through it.
Nothing here opens a connection except `infer`, the one-line synchronous call for tools and tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType

import numpy as np

from facestack.pipeline.quality import FIELDS as QUALITY_FIELDS
from facestack.pipeline.quality import as_dict as quality_dict

MODEL = "face_pipeline"
OUTPUTS = ("BOXES", "SCORES", "LANDMARKS", "EMBEDDINGS", "QUALITY", "IMAGE_SIZE", "EMBEDDER_MODEL")
PAD_OUTPUT = "PAD_SCORES"  # optional: only while a face_pad model runs (docs/liveness.md)
# Optional: the face mesh (model_repository/face_mesh) per face, run only when a request sets MESH (liveness frames).
MESH_INPUT = "MESH"
MESH_POSE_OUTPUT = "MESH_POSE"  # [F, 3] yaw, pitch, roll in degrees (facestack.pipeline.mesh.head_pose)
EYES_OUTPUT = "EYE_OPENNESS"  # [F, 2] right, left (facestack.pipeline.mesh.eye_openness)
MESH_OUTPUTS = (MESH_POSE_OUTPUT, EYES_OUTPUT)
_DTYPES = {"BYTES": np.object_, "INT32": np.int32, "BOOL": np.bool_}
# A refused image fails its request with "<code>: <detail>" (facestack.pipeline.image.ImageError).
IMAGE_ERRORS = ("invalid_image", "image_too_large", "invalid_argument")
_ERROR = re.compile(r"\b(" + "|".join(IMAGE_ERRORS) + r"):\s*(.*)", re.DOTALL)


@dataclass(frozen=True)
class DetectedFace:
    """One face of an Analysis."""

    box: np.ndarray  # [4] x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # [5, 2]
    quality: dict[str, float]  # QUALITY_FIELDS
    embedding: np.ndarray  # [D], L2-normalised
    pad_score: float | None = None  # the face_pad model's bona-fide score, when one runs (docs/liveness.md)
    mesh_pose: tuple[float, float, float] | None = None  # yaw, pitch, roll from the face mesh, when it ran
    eye_openness: tuple[float, float] | None = None  # right, left, when the mesh ran

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


@dataclass(frozen=True)
class Analysis:
    """face_pipeline's answer for one image: F faces as arrays (largest first, as the pipeline sorts them)."""

    boxes: np.ndarray  # [F, 4]
    scores: np.ndarray  # [F]
    landmarks: np.ndarray  # [F, 5, 2]
    embeddings: np.ndarray  # [F, D], L2-normalised
    image_size: tuple[int, int]  # height, width
    quality: np.ndarray  # [F, len(QUALITY_FIELDS)]
    model: str = ""  # the Triton model of the embeddings, e.g. face_embedder
    version: str = ""
    embedder: str = ""  # the embedder name the request asked for, e.g. sface ("": the pipeline's default)
    pad_scores: np.ndarray | None = None  # [F], only while a face_pad model runs
    mesh_pose: np.ndarray | None = None  # [F, 3], only when asked for and the mesh is exported
    eye_openness: np.ndarray | None = None  # [F, 2], the same

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def height(self) -> int:
        return self.image_size[0]

    @property
    def width(self) -> int:
        return self.image_size[1]

    @property
    def embedder_model(self) -> str:
        return f"{self.model}:{self.version}"

    def quality_of(self, face: int) -> dict[str, float]:
        return quality_dict(self.quality[face])

    @cached_property
    def faces(self) -> list[DetectedFace]:
        """The faces one by one, largest first."""
        pad, pose, eyes = self.pad_scores, self.mesh_pose, self.eye_openness

        def row(array: np.ndarray | None, i: int) -> tuple | None:
            return tuple(float(v) for v in array[i]) if array is not None and i < len(array) else None

        faces = [DetectedFace(self.boxes[i], float(self.scores[i]), self.landmarks[i], self.quality_of(i),
                              self.embeddings[i], float(pad[i]) if pad is not None and i < len(pad) else None,
                              row(pose, i), row(eyes, i))  # type: ignore[arg-type]
                 for i in range(len(self))]
        return sorted(faces, key=lambda f: f.area, reverse=True)


@dataclass(frozen=True)
class Served:
    """What the served config says about the request's shape: a leading batch axis, and the outputs to ask for."""

    batched: bool = True
    outputs: tuple[str, ...] = OUTPUTS
    mesh: bool = False  # the config declares the MESH input and the mesh outputs

    @classmethod
    def from_config(cls, config: dict) -> Served:
        """From the model config as JSON (tritonclient's get_model_config(as_json=True))."""
        config = config.get("config", config)
        declared = {output.get("name") for output in config.get("output", [])}
        pad = (PAD_OUTPUT,) if PAD_OUTPUT in declared else ()
        inputs = {tensor.get("name") for tensor in config.get("input", [])}
        mesh = MESH_INPUT in inputs and set(MESH_OUTPUTS) <= declared
        return cls(int(config.get("max_batch_size", 0)) > 0, OUTPUTS + pad, mesh)


def build_request(client_module: ModuleType, image: bytes, *, embedder: str | None = None,
                  max_faces: int | None = None, min_face_size: int | None = None,
                  served: Served | None = None, mesh: bool = False) -> tuple[list, list]:
    """Inputs and requested outputs for one image; `client_module` is tritonclient.grpc or tritonclient.grpc.aio.
    `served`: from the model's config; by default face_pipeline's (batched; PAD_SCORES not asked for).
    `mesh`: ask for the face mesh's outputs, where the served config has them (else ignored)."""
    served = served or Served()
    lead = (1,) if served.batched else ()
    inputs = []

    def add(name: str, value: object, dtype: str) -> None:
        array = np.array([value], dtype=_DTYPES[dtype]).reshape(lead + (1,))
        tensor = client_module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)

    add("IMAGE", image, "BYTES")
    if max_faces is not None:
        add("MAX_FACES", max_faces, "INT32")
    if min_face_size is not None:
        add("MIN_FACE_SIZE", min_face_size, "INT32")
    if embedder is not None:
        add("EMBEDDER", embedder.encode(), "BYTES")
    outputs = served.outputs
    if mesh and served.mesh:
        add(MESH_INPUT, True, "BOOL")
        outputs += MESH_OUTPUTS
    return inputs, [client_module.InferRequestedOutput(name) for name in outputs]


def _squeeze(array: np.ndarray, ndim: int) -> np.ndarray:
    # With max_batch_size > 0 Triton adds a leading batch axis of 1; the contract shapes are without it.
    while array.ndim > ndim and array.shape[0] == 1:
        array = array[0]
    return array


def parse_result(result, embedder: str = "") -> Analysis:
    """An InferResult of face_pipeline (one image, batched or not) as an Analysis; `embedder`: as requested."""
    def get(name: str, ndim: int) -> np.ndarray:
        return _squeeze(result.as_numpy(name), ndim)

    height, width = (int(v) for v in result.as_numpy("IMAGE_SIZE").reshape(-1)[:2])
    tag = result.as_numpy("EMBEDDER_MODEL").reshape(-1)[0]
    model, _, version = (tag.decode() if isinstance(tag, bytes) else str(tag)).partition(":")
    pad, pose, eyes = (result.as_numpy(name) for name in (PAD_OUTPUT, *MESH_OUTPUTS))
    return Analysis(
        boxes=get("BOXES", 2).reshape(-1, 4), scores=get("SCORES", 1).reshape(-1),
        landmarks=get("LANDMARKS", 3).reshape(-1, 5, 2), embeddings=get("EMBEDDINGS", 2),
        image_size=(height, width), quality=get("QUALITY", 2).reshape(-1, len(QUALITY_FIELDS)),
        model=model, version=version or "1", embedder=embedder,
        pad_scores=None if pad is None else _squeeze(pad, 1).reshape(-1),
        mesh_pose=None if pose is None else _squeeze(pose, 2).reshape(-1, 3),
        eye_openness=None if eyes is None else _squeeze(eyes, 2).reshape(-1, 2))


def image_error(message: str) -> tuple[str, str] | None:
    """(code, detail) when a failed request's message is the pipeline refusing the image, else None."""
    match = _ERROR.search(message)
    return (match.group(1), match.group(2).strip() or message) if match else None


def infer(client, image: bytes, **options) -> Analysis:
    """One synchronous pipeline call with a tritonclient.grpc.InferenceServerClient."""
    import tritonclient.grpc as grpcclient

    inputs, outputs = build_request(grpcclient, image, **options)
    return parse_result(client.infer(MODEL, inputs, outputs=outputs), options.get("embedder") or "")
