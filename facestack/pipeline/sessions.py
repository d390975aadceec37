"""onnxruntime sessions as facestack serves them, and the newest exported version of a model.

Light on purpose (onnxruntime and the standard library only): the face mesh and its exporter's own venv use it too.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def session_options(threads: int, level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    ) -> ort.SessionOptions:
    """CPU session options as served: `threads` intra-op threads (0: onnxruntime's choice), one inter-op thread.
    ORT_ENABLE_ALL is the default of onnxruntime and of Triton's onnxruntime backend."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Several sessions share the cores (detector, embedders, pipeline glue): spinning threads would
    # burn the CPU another model needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = level
    return options


def onnx_session(model: Path | bytes, options: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU session of an ONNX file or serialized model, with options from session_options."""
    return ort.InferenceSession(str(model) if isinstance(model, Path) else model, options,
                                providers=["CPUExecutionProvider"])


def newest_version(model_dir: Path, *required: str) -> Path | None:
    """The newest numbered version folder of a model holding every `required` file, or None (not exported)."""
    versions = sorted((int(p.name) for p in model_dir.glob("*") if p.name.isdigit()
                       and all((p / name).exists() for name in required)), reverse=True) if model_dir.is_dir() else []
    return model_dir / str(versions[0]) if versions else None
