"""facestack.triton.model_config: face_pipeline's parameters from its config, one reader for both forms."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from facestack.artifacts import REPO_ROOT
from facestack.triton.model_config import PipelineParameters, config_path, pipeline_parameters, read_config

REPOSITORY = REPO_ROOT / "model_repository"
CONFIG_NAMES = ("", "gpu", "composed", "plan")


def test_the_pbtxt_and_tritons_json_form_read_alike() -> None:
    config = read_config(config_path(REPOSITORY))
    assert config["name"] == "face_pipeline" and config["max_batch_size"] == 8
    as_triton_passes_it = json.loads(json.dumps(config))  # args["model_config"] in the python backend
    params = PipelineParameters.from_config(as_triton_passes_it)
    assert params == PipelineParameters.from_config(config)
    assert params.embedders == {"sface": "face_embedder", "dlib": "face_embedder_dlib"}
    assert params.default_embedder == "sface" and params.composing_models == "in_process"
    assert params.detector_sizes == (480, 640) and params.intra_op_threads == 1


def test_every_config_of_the_pipeline_computes_the_same_faces() -> None:
    """Where the models run may differ per config (in process, BLS); what the pipeline computes may not."""
    served = {name: pipeline_parameters(REPOSITORY, name) for name in CONFIG_NAMES}
    placement = {"composing_models": "", "intra_op_threads": 0}
    for name, params in served.items():
        assert replace(params, **placement) == replace(served[""], **placement), name
    assert {p.composing_models for name, p in served.items() if name} == {"triton"}


def test_config_name_falls_back_to_config_pbtxt_like_triton() -> None:
    assert config_path(REPOSITORY, "gpu") == REPOSITORY / "face_pipeline" / "configs" / "gpu.pbtxt"
    assert config_path(REPOSITORY, "no-such-config") == REPOSITORY / "face_pipeline" / "config.pbtxt"


@pytest.mark.parametrize(("drop", "change", "message"), [
    ("detector_sizes", {}, "lacks the parameters"),
    (None, {"default_embedder": "arcface"}, "not one of"),
])
def test_a_broken_config_fails_loudly(drop: str | None, change: dict, message: str) -> None:
    config = read_config(config_path(REPOSITORY))
    params = config["parameters"]
    if drop:
        del params[drop]
    for key, value in change.items():
        params[key] = {"string_value": value}
    with pytest.raises(ValueError, match=message):
        PipelineParameters.from_config(config)
