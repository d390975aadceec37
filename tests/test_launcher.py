"""The Triton launcher: a model that fails to load is reported clearly and quickly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from facestack.triton.launcher import TritonServer, TritonStartError

BROKEN_CONFIG = """
name: "broken"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def test_failed_model_load_is_reported(tmp_path: Path) -> None:
    model = tmp_path / "broken"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(BROKEN_CONFIG)
    (model / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('weights missing')\n")
    started = time.monotonic()
    with pytest.raises(TritonStartError, match="weights missing|failed to load"):
        TritonServer(tmp_path, ready_model="broken").start(timeout=60)
    assert time.monotonic() - started < 30


def test_start_and_stop(tmp_path: Path) -> None:
    model = tmp_path / "ok"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(BROKEN_CONFIG.replace("broken", "ok"))
    (model / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n")
    server = TritonServer(tmp_path, ready_model="ok").start(timeout=60)
    assert server.is_running() and server._model_ready()
    server.stop()
    assert not server.is_running()
