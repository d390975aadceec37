"""face_pipeline's parameters, from its model config: the one source of the embedder map, the detector sizes and
thresholds, the pixel limit and the rest of what `parameters { ... }` in model_repository/face_pipeline/config.pbtxt
(or configs/<name>.pbtxt) says.

Inside Triton the python model gets its config as JSON (args["model_config"]); everyone else (the benchmarks, the
accuracy tool, the in-process pipeline) reads the .pbtxt into the same JSON form. Both go through
`PipelineParameters.from_config`, so there is one reader and no second copy of any value.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from facestack.triton.contract import MODEL

DETECTOR_MODEL = "face_detector"  # the optional parameter `detector_model` names another


def parameters(config: dict) -> dict[str, str]:
    """A model config's `parameters` as plain strings (Triton's JSON form: {key: {"string_value": v}})."""
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def read_config(path: Path) -> dict:
    """A config.pbtxt in the JSON form Triton hands a python model (protobuf field names)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def config_path(repository: Path, config_name: str = "") -> Path:
    """The config Triton loads for face_pipeline: configs/<name>.pbtxt when that exists, else config.pbtxt."""
    named = Path(repository) / MODEL / "configs" / f"{config_name}.pbtxt"
    return named if config_name and named.exists() else Path(repository) / MODEL / "config.pbtxt"


@dataclass(frozen=True)
class PipelineParameters:
    embedders: dict[str, str]  # the API's embedder name -> its Triton model ("sface" -> "face_embedder")
    default_embedder: str
    detector_sizes: tuple[int, ...]  # square detector inputs, ascending (facestack.pipeline.image.fit)
    score_threshold: float  # detector score
    nms_threshold: float  # detector NMS IoU
    max_pixels: int  # larger images are image_too_large
    decode_min_long_side: int  # large JPEGs decode at 1/2-1/8 down to this longer side (0 = never)
    composing_models: str = "in_process"  # or "triton" (BLS calls)
    intra_op_threads: int = 0  # onnxruntime threads per in-process session (0: onnxruntime's choice)
    detector_model: str = DETECTOR_MODEL
    embedder_max_batch: int = 64  # crops per BLS call to an embedder
    pad_model: str = ""  # the face_pad slot ("" = never called)
    mesh_model: str = ""  # the FaceMesh model folder, run on request (MESH); "" = never

    @classmethod
    def from_config(cls, config: dict) -> PipelineParameters:
        """From face_pipeline's config as JSON; a required parameter that is missing is an error, not a default."""
        params = parameters(config)
        missing = [key for key in ("embedders", "default_embedder", "detector_sizes", "score_threshold",
                                   "nms_threshold", "max_pixels", "decode_min_long_side") if key not in params]
        if missing:
            raise ValueError(f"face_pipeline config lacks the parameters {missing}")
        embedders = dict(item.split("=") for item in params["embedders"].split(","))
        if params["default_embedder"] not in embedders:
            raise ValueError(f"default_embedder {params['default_embedder']!r} is not one of {sorted(embedders)}")
        optional = {"composing_models": str, "intra_op_threads": int, "detector_model": str,
                    "embedder_max_batch": int, "pad_model": str, "mesh_model": str}
        return cls(
            embedders=embedders, default_embedder=params["default_embedder"],
            detector_sizes=tuple(sorted(int(v) for v in params["detector_sizes"].split(","))),
            score_threshold=float(params["score_threshold"]), nms_threshold=float(params["nms_threshold"]),
            max_pixels=int(params["max_pixels"]), decode_min_long_side=int(params["decode_min_long_side"]),
            **{key: kind(params[key]) for key, kind in optional.items() if key in params})


@lru_cache
def pipeline_parameters(repository: Path | None = None, config_name: str | None = None) -> PipelineParameters:
    """The parameters of the face_pipeline config in `repository` (default: the settings' model repository and
    model_config_name, as the local launcher serves them)."""
    from facestack.settings import get_settings

    settings = get_settings()
    path = config_path(Path(repository or settings.model_repository),
                       settings.model_config_name if config_name is None else config_name)
    return PipelineParameters.from_config(read_config(path))
