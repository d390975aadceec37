"""Accuracy of the served pipeline: LFW-format verification and identification, calibrated operating points.

`python -m facestack.accuracy --data DIR` runs a dataset through the real Triton pipeline (docs/accuracy.md).
"""
