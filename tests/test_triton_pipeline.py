"""The face pipeline end to end on the real Triton server (CPU, python backend + onnxruntime)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from export import weights
from facestack import artifacts
from facestack.artifacts import photo_bytes
from facestack.pipeline.image import letterbox
from facestack.triton.contract import infer
from facestack.triton.launcher import TritonServer

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def client(triton):
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def composed():
    """A second server with face_pipeline's composed config (BLS calls to the model processes, as on GPU nodes)."""
    with TritonServer(config_name="composed") as server, grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def _resized(name: str, long_side: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(photo_bytes(name), np.uint8), cv2.IMREAD_COLOR)
    scale = long_side / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _successes(c, model: str) -> int:
    stats = c.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats["inference_stats"]["success"].get("count", 0))


def _opencv_faces(name: str, threshold: float = 0.6) -> np.ndarray:
    """OpenCV's own YuNet detector on the native-resolution image: the reference."""
    image = cv2.imread(str(artifacts.photo(name)))
    h, w = image.shape[:2]
    detector = cv2.FaceDetectorYN.create(str(artifacts.fetch(weights.YUNET)), "", (w, h), threshold, 0.3, 5000)
    _, faces = detector.detect(image)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def test_portrait_gives_one_face_with_eye_landmarks(client) -> None:
    result = infer(client, photo_bytes("obama.jpg"))
    assert len(result) == 1
    assert result.image_size == (1137, 910)
    (ref,) = _opencv_faces("obama.jpg")
    x1, y1, x2, y2 = result.boxes[0]
    width = x2 - x1
    right_eye, left_eye = result.landmarks[0][:2]
    assert right_eye[0] < left_eye[0]  # subject's right eye is on the image's left
    assert y1 < right_eye[1] < (y1 + y2) / 2 and y1 < left_eye[1] < (y1 + y2) / 2
    # Within 5 % of the face width of the reference detector's eyes at full resolution.
    np.testing.assert_allclose(result.landmarks[0][:2], ref[4:8].reshape(2, 2), atol=0.05 * width)
    assert result.embeddings.shape == (1, 128)
    assert np.linalg.norm(result.embeddings[0]) == pytest.approx(1.0, abs=1e-5)
    quality = result.quality_of(0)
    assert quality["face_size"] == pytest.approx(min(x2 - x1, y2 - y1))
    assert abs(quality["yaw"]) < 30 and abs(quality["roll"]) < 15 and quality["sharpness"] > 0
    assert 0 < quality["brightness"] < 255
    assert result.embedder_model == "face_embedder:1"


@pytest.mark.parametrize("name", ["sample1.jpg", "sample2.jpg", "sample6.jpg"])
def test_group_photo_gives_all_faces(client, name: str) -> None:
    result = infer(client, photo_bytes(name), max_faces=64)
    reference = _opencv_faces(name)
    assert len(result) > 1
    # Every face the reference finds at full resolution is found (the letterbox may add small extras).
    ref_centres = reference[:, :2] + reference[:, 2:4] / 2
    ours_centres = (result.boxes[:, :2] + result.boxes[:, 2:]) / 2
    for centre, (w, h) in zip(ref_centres, reference[:, 2:4], strict=True):
        assert np.linalg.norm(ours_centres - centre, axis=1).min() < 0.25 * max(w, h)
    areas = np.prod(result.boxes[:, 2:] - result.boxes[:, :2], axis=1)
    assert (np.diff(areas) <= 1e-3).all()  # largest first
    assert result.embeddings.shape == (len(result), 128)


def test_options_limit_faces(client) -> None:
    all_faces = infer(client, photo_bytes("sample1.jpg"), max_faces=64)
    assert len(infer(client, photo_bytes("sample1.jpg"), max_faces=2)) == 2
    sizes = np.min(all_faces.boxes[:, 2:] - all_faces.boxes[:, :2], axis=1)
    cut = float(np.median(sizes))
    big = infer(client, photo_bytes("sample1.jpg"), max_faces=64, min_face_size=int(np.ceil(cut)))
    assert 0 < len(big) < len(all_faces)
    assert (np.min(big.boxes[:, 2:] - big.boxes[:, :2], axis=1) >= np.ceil(cut) - 1e-3).all()


def test_photo_without_a_face_gives_empty_outputs(client) -> None:
    y, x = np.mgrid[0:240, 0:320]
    landscape = np.dstack([x % 256, y % 256, (x * y) % 256]).astype(np.uint8)
    ok, png = cv2.imencode(".png", landscape)
    result = infer(client, png.tobytes())
    assert len(result) == 0
    assert result.embeddings.shape == (0, 128) and result.boxes.shape == (0, 4)
    assert result.image_size == (240, 320)


@pytest.mark.parametrize("data", [b"not an image at all", b"\xff\xd8\xff" + bytes(50), b""])
def test_corrupt_bytes_error_and_server_keeps_serving(client, data: bytes) -> None:
    with pytest.raises(InferenceServerException, match="invalid_image"):
        infer(client, data)
    assert len(infer(client, photo_bytes("biden.jpg"))) == 1


def test_unknown_embedder_is_a_clear_error(client) -> None:
    with pytest.raises(InferenceServerException, match="unknown embedder"):
        infer(client, photo_bytes("biden.jpg"), embedder="arcface")


@pytest.mark.parametrize("embedder", ["sface", "dlib"])
def test_same_person_scores_higher_than_different(client, embedder: str) -> None:
    def template(name: str) -> np.ndarray:
        result = infer(client, photo_bytes(name), embedder=embedder, max_faces=1)
        assert len(result) == 1
        return result.embeddings[0]

    obama, obama2, obama3, biden = (template(n) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"))
    same = [float(obama @ obama2), float(obama @ obama3), float(obama2 @ obama3)]
    different = [float(obama @ biden), float(obama2 @ biden), float(obama3 @ biden)]
    # "Clearly": the gap covers a good part of the room left above the closest impostor score (cosine
    # ranges differ by model: dlib's un-centred descriptors put even impostors near 0.8).
    gap = (min(same) - max(different)) / (1 - max(different))
    assert gap > 0.3, (same, different)


def test_concurrent_requests_are_batched(client, triton) -> None:
    images = [photo_bytes(n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg", "sample3.jpg")] * 6
    with grpcclient.InferenceServerClient(triton.grpc_url) as stats_client:
        before = stats_client.get_inference_statistics("face_pipeline", as_json=True)

        def one(data: bytes) -> int:
            with grpcclient.InferenceServerClient(triton.grpc_url) as c:
                return len(infer(c, data))

        with ThreadPoolExecutor(max_workers=12) as pool:
            counts = list(pool.map(one, images))
        after = stats_client.get_inference_statistics("face_pipeline", as_json=True)
    assert all(c >= 1 for c in counts)

    def batches(stats: dict) -> dict[int, int]:
        model = stats["model_stats"][0]
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model.get("batch_stats", [])}

    grown = {size: n - batches(before).get(size, 0) for size, n in batches(after).items()}
    assert any(size > 1 and n > 0 for size, n in grown.items()), grown


# Same photos through both paths: a portrait, a group photo, an LFW-size photo, a 12 MP photo, one with no face.
PARITY_PHOTOS = {
    "portrait": lambda: photo_bytes("obama.jpg"),
    "group": lambda: photo_bytes("sample1.jpg"),
    "lfw_size": lambda: _jpeg(_resized("biden.jpg", 250)),
    "12mp": lambda: _jpeg(_resized("obama2.jpg", 4032)),
    "no_face": lambda: _jpeg(np.full((200, 300, 3), 90, np.uint8)),
}


@pytest.mark.parametrize("embedder", ["sface", "dlib"])
@pytest.mark.parametrize("photo", list(PARITY_PHOTOS))
def test_in_process_and_composed_paths_give_the_same_faces(client, composed, photo: str, embedder: str) -> None:
    data = PARITY_PHOTOS[photo]()
    detector_calls = (_successes(client, "face_detector"), _successes(composed, "face_detector"))
    ours, theirs = (infer(c, data, embedder=embedder, max_faces=64) for c in (client, composed))
    # The CPU config never calls the detector model; the composed one does.
    assert _successes(client, "face_detector") == detector_calls[0]
    assert _successes(composed, "face_detector") == detector_calls[1] + 1
    assert len(ours) == len(theirs) and ours.image_size == theirs.image_size
    assert (len(ours) > 0) == (photo != "no_face")
    np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=1e-3)
    np.testing.assert_allclose(ours.landmarks, theirs.landmarks, atol=1e-3)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-5)
    np.testing.assert_allclose(ours.embeddings, theirs.embeddings, atol=1e-5)
    np.testing.assert_allclose(ours.quality, theirs.quality, rtol=1e-4, atol=1e-3)
    assert ours.embedder_model == theirs.embedder_model


@pytest.mark.parametrize("name", ["sample1.jpg", "sample2.jpg", "sample4.jpg", "sample5.jpg", "sample6.jpg"])
@pytest.mark.parametrize("long_side", [450, 300])
def test_smaller_detector_sizes_keep_the_faces_found_at_640(client, name: str, long_side: int) -> None:
    """Group photos shrunk to 450/300 px go to the 480 px detector instead of being upscaled to 640:
    every face the 640 px letterbox finds (OpenCV's detector) is still found. (At 200 px one face of 23 is
    lost: 17 px wide at the border of sample1, docs/benchmarks.md.)"""
    image = _resized(name, long_side)
    lb = letterbox(image, 640)
    detector = cv2.FaceDetectorYN.create(str(artifacts.fetch(weights.YUNET)), "", (640, 640), 0.6, 0.3, 5000)
    reference = detector.detect(lb.canvas)[1] / lb.scale
    result = infer(client, cv2.imencode(".png", image)[1].tobytes(), max_faces=64)
    centres = (result.boxes[:, :2] + result.boxes[:, 2:]) / 2
    for face in reference:
        centre, size = face[:2] + face[2:4] / 2, max(face[2:4])
        assert np.linalg.norm(centres - centre, axis=1).min() < 0.25 * size, (face[:4], result.boxes)


def test_a_12_megapixel_photo_is_decoded_reduced_with_boxes_in_its_own_pixels(client) -> None:
    small = photo_bytes("obama.jpg")
    big_image = _resized("obama.jpg", 4032)
    big = infer(client, _jpeg(big_image))
    reference = infer(client, small)
    assert big.image_size == big_image.shape[:2]
    assert len(big) == len(reference) == 1
    scale = 4032 / 1137
    width = (reference.boxes[0, 2] - reference.boxes[0, 0]) * scale
    np.testing.assert_allclose(big.boxes[0], reference.boxes[0] * scale, atol=0.05 * width)
    np.testing.assert_allclose(big.landmarks[0], reference.landmarks[0] * scale, atol=0.05 * width)
    assert big.quality_of(0)["face_size"] == pytest.approx(min(big.boxes[0, 2:] - big.boxes[0, :2]))
    assert float(big.embeddings[0] @ reference.embeddings[0]) > 0.9
