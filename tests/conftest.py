"""Shared fixtures: registry test photos and one real Triton server per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facestack.artifacts import REPO_ROOT, photo_bytes
from facestack.triton.launcher import TritonServer

__all__ = ["photo_bytes"]  # registry test photos, fetched and sha256-checked on first use

LFW_DIR = REPO_ROOT.parent / "shared" / "datasets" / "lfw-view1"


@pytest.fixture(scope="session")
def triton() -> Iterator[TritonServer]:
    """The real tritonserver binary on CPU with model_repository/, ready to serve face_pipeline."""
    with TritonServer() as server:
        yield server


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    if not (LFW_DIR / "pairsDevTest.txt").exists():
        pytest.skip(f"LFW View 1 not found at {LFW_DIR} (developers' machines only)")
    return LFW_DIR
