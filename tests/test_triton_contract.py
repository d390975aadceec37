"""facestack.triton.contract without a server: request shapes per served config, parsing, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from facestack.triton.contract import OUTPUTS, PAD_OUTPUT, Served, build_request, image_error, parse_result


class FakeResult:
    """An InferResult stand-in: as_numpy by name, None for an output that was not returned."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self.arrays.get(name)


def _answer(faces: int, batched: bool, pad: bool) -> FakeResult:
    rng = np.random.default_rng(faces)
    boxes = np.array([[10, 10, 30, 30], [0, 0, 100, 80], [5, 5, 60, 60]], np.float32)[:faces]
    arrays = {"BOXES": boxes, "SCORES": np.linspace(0.9, 0.7, faces, dtype=np.float32),
              "LANDMARKS": rng.uniform(0, 100, (faces, 5, 2)).astype(np.float32),
              "EMBEDDINGS": rng.normal(size=(faces, 128)).astype(np.float32),
              "QUALITY": rng.uniform(0, 1, (faces, 6)).astype(np.float32),
              "IMAGE_SIZE": np.array([480, 640], np.int32), "EMBEDDER_MODEL": np.array([b"face_embedder:3"], object)}
    if pad:
        arrays[PAD_OUTPUT] = np.linspace(0.1, 0.3, faces, dtype=np.float32)
    return FakeResult({k: v[None] if batched else v for k, v in arrays.items()})


def test_served_config_decides_batch_axis_and_pad_output() -> None:
    config = {"max_batch_size": 8, "output": [{"name": n} for n in (*OUTPUTS, PAD_OUTPUT)]}
    assert Served.from_config({"config": config}) == Served(True, (*OUTPUTS, PAD_OUTPUT))
    assert Served.from_config({"max_batch_size": 0, "output": [{"name": "BOXES"}]}) == Served(False, OUTPUTS)


@pytest.mark.parametrize("batched", [True, False])
def test_request_shapes_follow_the_served_config(batched: bool) -> None:
    inputs, outputs = build_request(grpcclient, b"jpeg", embedder="dlib", max_faces=4,
                                    served=Served(batched, (*OUTPUTS, PAD_OUTPUT)))
    assert {t.name(): t.shape() for t in inputs} == {n: [1, 1] if batched else [1]
                                                    for n in ("IMAGE", "MAX_FACES", "EMBEDDER")}
    assert len(outputs) == len(OUTPUTS) + 1
    assert [t.name() for t in build_request(grpcclient, b"x")[0]] == ["IMAGE"]  # options are optional inputs


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("faces", [0, 1, 3])
@pytest.mark.parametrize("pad", [True, False])
def test_parse_any_face_count_with_or_without_batch_axis(batched: bool, faces: int, pad: bool) -> None:
    result = _answer(faces, batched, pad)
    analysis = parse_result(result)
    assert len(analysis) == faces and analysis.boxes.shape == (faces, 4) and analysis.landmarks.shape == (faces, 5, 2)
    assert analysis.embeddings.shape == (faces, 128) and analysis.quality.shape == (faces, 6)
    assert (analysis.height, analysis.width, analysis.model, analysis.version) == (480, 640, "face_embedder", "3")
    assert [f.area for f in analysis.faces] == sorted((f.area for f in analysis.faces), reverse=True)
    if faces:
        row = int(np.argmax(np.prod(analysis.boxes[:, 2:] - analysis.boxes[:, :2], axis=1)))
        largest = analysis.faces[0]
        assert largest.box.tolist() == analysis.boxes[row].tolist()
        assert largest.quality == pytest.approx(dict(zip(("face_size", "sharpness", "yaw", "pitch", "roll",
                                                          "brightness"), analysis.quality[row].tolist(), strict=True)))
        assert largest.pad_score == (pytest.approx(float(analysis.pad_scores[row])) if pad else None)


def test_image_error_reads_the_pipelines_refusals_only() -> None:
    assert image_error("invalid_image: not a JPEG, PNG or WebP image") == ("invalid_image",
                                                                           "not a JPEG, PNG or WebP image")
    assert image_error("[request id: 7] image_too_large: 9000x9000 pixels")[0] == "image_too_large"
    assert image_error("internal: detector failed") is None
