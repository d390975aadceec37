"""Unit tests of the pipeline's logic (facestack.pipeline), without Triton."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facestack.pipeline import detection, quality
from facestack.pipeline.alignment import align, similarity_transform
from facestack.pipeline.image import ImageError, decode, letterbox, sniff_format, to_nchw

ARCFACE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                    [70.7299, 92.2041]])


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.fixture
def gradient() -> np.ndarray:
    y, x = np.mgrid[0:90, 0:120]
    return np.dstack([x * 2, y * 2, (x + y)]).astype(np.uint8)


@pytest.mark.parametrize(("ext", "fmt"), [(".jpg", "jpeg"), (".png", "png"), (".webp", "webp")])
def test_decode_supported_formats(gradient: np.ndarray, ext: str, fmt: str) -> None:
    data = _encode(ext, gradient)
    assert sniff_format(data) == fmt
    image = decode(data)
    assert image.shape == gradient.shape and image.dtype == np.uint8
    assert np.abs(image.astype(int) - gradient).mean() < 3  # lossy formats stay close


def test_decode_grey_and_alpha_become_bgr(gradient: np.ndarray) -> None:
    grey = decode(_encode(".png", gradient[..., 0]))
    rgba = decode(_encode(".png", np.dstack([gradient, np.full(gradient.shape[:2], 128, np.uint8)])))
    assert grey.shape == rgba.shape == gradient.shape


@pytest.mark.parametrize("data", [b"", b"hello world", b"GIF89a" + bytes(100), b"%PDF-1.4 " + bytes(100)])
def test_decode_rejects_non_images(data: bytes) -> None:
    with pytest.raises(ImageError) as err:
        decode(data)
    assert err.value.code == "invalid_image"


def test_decode_rejects_truncated_and_corrupt(gradient: np.ndarray) -> None:
    png = _encode(".png", gradient)
    for broken in (png[: len(png) // 3], png[:8] + bytes(len(png) - 8)):
        with pytest.raises(ImageError, match="invalid_image"):
            decode(broken)


def test_decode_pixel_limit(gradient: np.ndarray) -> None:
    with pytest.raises(ImageError) as err:
        decode(_encode(".png", gradient), max_pixels=100)
    assert err.value.code == "image_too_large"


def test_letterbox_scales_longer_side_and_pads(gradient: np.ndarray) -> None:
    lb = letterbox(gradient, 640)
    assert lb.canvas.shape == (640, 640, 3)
    assert lb.scale == pytest.approx(640 / 120)
    assert lb.canvas[480:].max() == 0  # padding below the 90 * 5.33 = 480 rows of image
    assert lb.canvas[:470, :630].mean() > 0
    assert to_nchw([lb.canvas, lb.canvas]).shape == (2, 3, 640, 640)


def test_similarity_transform_recovers_a_known_similarity() -> None:
    angle, scale, shift = np.radians(17), 2.5, np.array([40.0, -12.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (ARCFACE - shift) @ np.linalg.inv(rot).T  # points that map exactly onto the template
    matrix = similarity_transform(src, ARCFACE)
    np.testing.assert_allclose(matrix[:, :2] @ src.T + matrix[:, 2:], ARCFACE.T, atol=1e-9)
    np.testing.assert_allclose(matrix[:, :2], rot, atol=1e-9)


def test_similarity_transform_is_least_squares_with_noise() -> None:
    rng = np.random.default_rng(0)
    src = ARCFACE * 1.7 + rng.normal(0, 2, ARCFACE.shape)
    matrix = similarity_transform(src, ARCFACE)
    residual = np.linalg.norm(matrix[:, :2] @ src.T + matrix[:, 2:] - ARCFACE.T)
    for delta in ([0.01, 0, 0], [0, 0, 0.5]):  # nudging the fit makes the residual worse
        nudged = matrix + np.array([delta, delta])
        assert np.linalg.norm(nudged[:, :2] @ src.T + nudged[:, 2:] - ARCFACE.T) > residual


def test_align_puts_landmarks_on_the_template() -> None:
    image = np.zeros((300, 300, 3), np.uint8)
    src = ARCFACE * 2 + 50
    for x, y in src:
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
    crop = align(image, src, ARCFACE, 112)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE:
        assert crop[round(y), round(x)].max() > 100


def test_nms_suppresses_overlaps_and_orders_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = detection.nms(boxes, np.array([0.8, 0.9, 0.7], np.float32), 0.5, 0.3, 100)
    assert keep.tolist() == [1, 2]


def test_select_filters_small_faces_and_keeps_largest() -> None:
    boxes = np.array([[0, 0, 20, 20], [0, 0, 100, 80], [0, 0, 50, 60]], np.float32)
    faces = detection.Detections(boxes, np.ones(3, np.float32), np.zeros((3, 5, 2), np.float32))
    chosen = detection.select(faces, max_faces=5, min_face_size=30)
    assert chosen.boxes[:, 2].tolist() == [100, 50]
    assert len(detection.select(faces, max_faces=1, min_face_size=0)) == 1


def test_decode_turns_anchor_outputs_into_a_box() -> None:
    size, stride = 64, 32
    outputs = {}
    for s in detection.STRIDES:
        cells = (size // s) ** 2
        outputs |= {f"cls_{s}": np.zeros((cells, 1)), f"obj_{s}": np.zeros((cells, 1)),
                    f"bbox_{s}": np.zeros((cells, 4)), f"kps_{s}": np.zeros((cells, 10))}
    cell = 3  # row 1, col 1 on the 2x2 grid of stride 32
    outputs[f"cls_{stride}"][cell] = outputs[f"obj_{stride}"][cell] = 0.81
    outputs[f"bbox_{stride}"][cell] = [0.5, 0.25, np.log(2), 0]
    faces = detection.decode(outputs, size, size, score_threshold=0.5)
    assert len(faces) == 1 and faces.scores[0] == pytest.approx(0.81)
    cx, cy = (1 + 0.5) * 32, (1 + 0.25) * 32
    np.testing.assert_allclose(faces.boxes[0], [cx - 32, cy - 16, cx + 32, cy + 16], atol=1e-4)
    np.testing.assert_allclose(faces.landmarks[0], np.full((5, 2), 32.0))


def test_pose_frontal_rolled_and_turned() -> None:
    yaw, pitch, roll = quality.pose(ARCFACE)
    assert abs(yaw) < 2 and abs(pitch) < 2 and abs(roll) < 1
    angle = np.radians(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    assert quality.pose(ARCFACE @ rot.T)[2] == pytest.approx(20, abs=0.5)
    turned = ARCFACE.copy()
    turned[2, 0] += 12  # nose towards the image's right
    assert quality.pose(turned)[0] > 20


def test_quality_measures_sharpness_and_brightness() -> None:
    rng = np.random.default_rng(1)
    sharp = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(sharp, (9, 9), 4)
    box = np.array([0, 0, 80, 100], np.float32)
    q_sharp, q_blur = quality.measure(box, ARCFACE, sharp), quality.measure(box, ARCFACE, blurred)
    fields = dict(zip(quality.FIELDS, q_sharp, strict=True))
    assert fields["face_size"] == 80
    assert q_sharp[1] > 10 * q_blur[1]
    assert quality.measure(box, ARCFACE, np.full((112, 112, 3), 200, np.uint8))[5] == pytest.approx(200)


def test_align_large_face_is_antialiased_and_in_place() -> None:
    # A fine checkerboard (period 4 px) at 8x shrink: a direct bilinear warp aliases into stripes,
    # pyramid halving first averages it to flat grey.
    image = ((np.indices((1200, 1200)).sum(axis=0) // 2) % 2 * 255).astype(np.uint8)
    image = np.dstack([image] * 3)
    src = ARCFACE * 8 + 100
    for x, y in src:  # white dots on the landmarks survive the shrink where they belong
        cv2.circle(image, (round(x), round(y)), 24, (255, 255, 255), -1)
    crop = align(image, src, ARCFACE, 112)
    background = crop[5:30, 5:30].astype(float)
    assert background.std() < 20 and abs(background.mean() - 127) < 20
    for x, y in ARCFACE:
        assert crop[round(y), round(x)].min() > 200
