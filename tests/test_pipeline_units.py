"""Unit tests of the pipeline's logic (facestack.pipeline), without Triton."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from export import weights
from facestack import artifacts
from facestack.pipeline import detection, quality
from facestack.pipeline.alignment import align, similarity_transform
from facestack.pipeline.image import (
    ImageError,
    decode,
    decode_reduced,
    detector_size,
    fit,
    letterbox,
    reduction,
    sniff_format,
    to_nchw,
)
from facestack.pipeline.sessions import onnx_session, session_options
from facestack.triton.model_config import pipeline_parameters

SERVED = pipeline_parameters()  # face_pipeline's config.pbtxt: detector sizes, pixel limit

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
    image = decode(data, SERVED.max_pixels)
    assert image.shape == gradient.shape and image.dtype == np.uint8
    assert np.abs(image.astype(int) - gradient).mean() < 3  # lossy formats stay close


def test_decode_grey_and_alpha_become_bgr(gradient: np.ndarray) -> None:
    grey = decode(_encode(".png", gradient[..., 0]), SERVED.max_pixels)
    alpha = np.full(gradient.shape[:2], 128, np.uint8)
    rgba = decode(_encode(".png", np.dstack([gradient, alpha])), SERVED.max_pixels)
    assert grey.shape == rgba.shape == gradient.shape


@pytest.mark.parametrize("data", [b"", b"hello world", b"GIF89a" + bytes(100), b"%PDF-1.4 " + bytes(100)])
def test_decode_rejects_non_images(data: bytes) -> None:
    with pytest.raises(ImageError) as err:
        decode(data, SERVED.max_pixels)
    assert err.value.code == "invalid_image"


def test_decode_rejects_truncated_and_corrupt(gradient: np.ndarray) -> None:
    png = _encode(".png", gradient)
    for broken in (png[: len(png) // 3], png[:8] + bytes(len(png) - 8)):
        with pytest.raises(ImageError, match="invalid_image"):
            decode(broken, SERVED.max_pixels)


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


@pytest.mark.parametrize(("shape", "size"), [((90, 120), 480), ((250, 250), 480), ((320, 200), 480),
                                             ((321, 100), 480), ((480, 470), 480), ((481, 300), 640),
                                             ((1137, 910), 640), ((4032, 3024), 640)])
def test_detector_size_is_the_smallest_that_holds_the_photo(shape: tuple[int, int], size: int) -> None:
    assert detector_size(*shape, SERVED.detector_sizes) == size
    image = np.zeros((*shape, 3), np.uint8)
    lb = fit(image, SERVED.detector_sizes)
    assert lb.canvas.shape == (size, size, 3)
    # Scaled so the longer side fills the size: upscaled at most to the smallest size that holds it.
    assert lb.scale == pytest.approx(size / max(shape))


def test_fit_at_the_exact_size_copies_pixels() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (480, 360, 3), dtype=np.uint8)
    lb = fit(image, SERVED.detector_sizes)
    assert lb.scale == 1 and np.array_equal(lb.canvas[:, :360], image) and lb.canvas[:, 360:].max() == 0


@pytest.mark.parametrize(("long_side", "factor"), [(250, 1), (2557, 1), (2560, 2), (4032, 2), (5115, 2),
                                                   (5120, 4), (10240, 8), (20000, 8)])
def test_reduction_keeps_the_long_side_at_least_1280(long_side: int, factor: int) -> None:
    assert reduction(long_side, 1280) == factor
    assert reduction(long_side, 0) == 1


def _jpeg(image: np.ndarray, orientation: int | None = None) -> bytes:
    """JPEG bytes, optionally with an EXIF Orientation tag (Pillow writes it)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(image[..., ::-1]).save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("orientation", [None, 6])
def test_decode_reduced_shrinks_large_jpegs_and_reports_the_original_size(orientation: int | None) -> None:
    y, x = np.mgrid[0:2600, 0:3000]
    image = np.dstack([x % 256, y % 256, (x // 16 + y // 16) % 256]).astype(np.uint8)
    data = _jpeg(image, orientation)
    full = decode_reduced(data, SERVED.max_pixels)
    reduced = decode_reduced(data, SERVED.max_pixels, min_long_side=1280)
    assert full.factor == 1 and reduced.factor == 2
    turned = orientation == 6  # rotated 90 degrees on decoding: height and width swap
    assert full.size == full.image.shape[:2] == ((3000, 2600) if turned else (2600, 3000))
    assert reduced.size == full.size and reduced.image.shape[:2] == (full.size[0] // 2, full.size[1] // 2)
    # Same picture at half size (pixel = original / factor).
    shrunk = cv2.resize(full.image, reduced.image.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - reduced.image).mean() < 8
    # Small photos, PNGs and a zero minimum are decoded at full size.
    assert decode_reduced(_jpeg(image[:1000, :1000]), SERVED.max_pixels, min_long_side=1280).factor == 1
    assert decode_reduced(_encode(".png", image), SERVED.max_pixels, min_long_side=1280).factor == 1


def test_decode_reduced_checks_the_pixel_limit_on_the_original_size() -> None:
    data = _jpeg(np.zeros((2600, 3000, 3), np.uint8))
    with pytest.raises(ImageError) as err:
        decode_reduced(data, max_pixels=3000 * 2600 - 1, min_long_side=1280)
    assert err.value.code == "image_too_large"


@pytest.mark.parametrize("size", SERVED.detector_sizes)
@pytest.mark.parametrize("name", ["obama.jpg", "sample1.jpg", "sample5.jpg"])
def test_detections_at_each_detector_size_match_opencv(name: str, size: int) -> None:
    """The served detector + facestack's decoder vs cv2.FaceDetectorYN set to the same input size."""
    image = cv2.imread(str(artifacts.photo(name)))
    scale = size / max(image.shape[:2]) * 0.9  # a photo that this size is the smallest to hold
    smaller = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = fit(smaller, SERVED.detector_sizes).canvas
    assert canvas.shape[0] == size
    detector = artifacts.REPO_ROOT / "model_repository" / SERVED.detector_model / "1" / "model.onnx"
    session = onnx_session(detector, session_options(2))
    names = list(detection.OUTPUT_NAMES)
    outputs = dict(zip(names, session.run(names, {"input": to_nchw([canvas], np.uint8)}), strict=True))
    ours = detection.decode({k: v[0] for k, v in outputs.items()}, size, size, 0.6, 0.3)
    detector = cv2.FaceDetectorYN.create(str(artifacts.fetch(weights.YUNET)), "", (size, size), 0.6, 0.3, 5000)
    ref = detector.detect(canvas)[1]
    ref = ref[np.argsort(-ref[:, -1])]
    assert len(ours) == len(ref) > 0
    np.testing.assert_allclose(ours.boxes, np.column_stack([ref[:, :2], ref[:, :2] + ref[:, 2:4]]), atol=1.0)
    np.testing.assert_allclose(ours.landmarks, ref[:, 4:14].reshape(-1, 5, 2), atol=1.0)
    np.testing.assert_allclose(ours.scores, ref[:, -1], atol=1e-4)


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
