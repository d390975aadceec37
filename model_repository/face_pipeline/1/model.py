"""Triton python-backend entry: the BLS face pipeline (see facestack.triton.backend.PipelineModel)."""

from facestack.triton.backend import PipelineModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
