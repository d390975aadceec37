"""`python -m export --tensorrt`: FP16 TensorRT plans for the detector and embedders, on a GPU node.

A plan is compiled for one GPU model and one TensorRT version: build it on each node pool (the Helm
chart's init container runs this), never ship it between GPU types. Plans go to
`model_repository/<model>/1/model.plan`, which `configs/plan.pbtxt` (`--model-config-name=plan`) serves.
The detector's input is uint8 with a Cast as its first node: TensorRT (8.6 and later) takes uint8 network
inputs that feed a cast, so the plan keeps the same tensor contract. Not run here: no GPU on these machines.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from facestack.pipeline.runtime import embedder_specs
from facestack.triton.model_config import pipeline_parameters

Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def profiles(repository: Path) -> dict[str, list[Profile]]:
    """Optimisation profiles (min, opt, max) per model input, matching max_batch_size in the configs: the detector
    has one per detector size of face_pipeline's plan config (configs/plan.pbtxt lists them for its instances),
    each embedder one at its crop size (its manifest)."""
    served = pipeline_parameters(repository, "plan")
    out = {served.detector_model: [((1, 3, s, s), (4, 3, s, s), (16, 3, s, s)) for s in served.detector_sizes]}
    for spec in embedder_specs(repository, served.embedders)[0]:
        n = spec.size
        out[spec.model] = [((1, 3, n, n), (16, 3, n, n), (64, 3, n, n))]
    return out


class TensorRTUnavailable(RuntimeError):
    pass


def check_environment() -> None:
    """Fail with a clear message unless a CUDA GPU and the TensorRT Python package are present."""
    missing = []
    if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode:
        missing.append("an NVIDIA GPU with its driver (nvidia-smi finds none)")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("the TensorRT Python package (`pip install tensorrt`, or NVIDIA's Triton/TensorRT image)")
    if missing:
        raise TensorRTUnavailable("--tensorrt needs " + " and ".join(missing) +
                                  "; on CPU machines Triton runs the ONNX models instead (config.pbtxt)")


def build_plan(onnx_path: Path, plan_path: Path, profiles: list[Profile]) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    for profile in profiles:
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(network.get_input(0).name, *profile)
        config.add_optimization_profile(opt_profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build a plan for {onnx_path}")
    tmp = plan_path.with_suffix(".plan.part")
    tmp.write_bytes(bytes(plan))
    tmp.replace(plan_path)


def build_all(repository: Path) -> None:
    check_environment()
    for model, shapes in profiles(repository).items():
        onnx_path = repository / model / "1" / "model.onnx"
        if not onnx_path.exists():
            raise RuntimeError(f"{onnx_path} is missing: export the ONNX models first")
        build_plan(onnx_path, onnx_path.with_name("model.plan"), shapes)
        print(f"  {model}: TensorRT FP16 plan -> {onnx_path.with_name('model.plan')}", flush=True)
