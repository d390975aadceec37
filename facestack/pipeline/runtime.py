"""onnxruntime sessions as facestack runs them: in Triton's python backend and in the benchmark's ceiling."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def onnx_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Several sessions share the cores (detector, embedders, pipeline glue): spinning threads would
    # burn the CPU another model needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
