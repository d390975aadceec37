"""The face pipeline end to end on the real Triton server (CPU, python backend + onnxruntime)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from export import artifacts
from export.artifacts import photo_bytes
from facestack.triton.client import infer

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def client(triton):
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        yield c


def _opencv_faces(name: str, threshold: float = 0.6) -> np.ndarray:
    """OpenCV's own YuNet detector on the native-resolution image: the reference."""
    image = cv2.imread(str(artifacts.photo(name)))
    h, w = image.shape[:2]
    detector = cv2.FaceDetectorYN.create(str(artifacts.fetch(artifacts.YUNET)), "", (w, h), threshold, 0.3, 5000)
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
        before = stats_client.get_inference_statistics("face_detector", as_json=True)

        def one(data: bytes) -> int:
            with grpcclient.InferenceServerClient(triton.grpc_url) as c:
                return len(infer(c, data))

        with ThreadPoolExecutor(max_workers=12) as pool:
            counts = list(pool.map(one, images))
        after = stats_client.get_inference_statistics("face_detector", as_json=True)
    assert all(c >= 1 for c in counts)

    def batches(stats: dict) -> dict[int, int]:
        model = stats["model_stats"][0]
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model.get("batch_stats", [])}

    grown = {size: n - batches(before).get(size, 0) for size, n in batches(after).items()}
    assert any(size > 1 and n > 0 for size, n in grown.items()), grown
