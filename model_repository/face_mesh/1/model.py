"""Triton python-backend entry: runs model.onnx beside this file with onnxruntime (see facestack.triton.backend)."""

from facestack.triton.backend import OnnxModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
