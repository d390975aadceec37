"""Every error code of the API reached for real (test_code_<code>*), as application/problem+json.

The backends are real too: overload is real concurrency against a one-slot gateway, `timeout` is a real
gRPC deadline, `backend_unavailable` is a port where nothing listens or a Triton that was killed.
"""

from __future__ import annotations

import base64
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from facestack.triton.launcher import TritonServer, free_port
from gateway.errors import CODES

pytestmark = pytest.mark.triton


def b64(data: bytes) -> dict:
    return {"image_base64": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def limited(spawn, keys):
    """One Triton slot and no queue; small byte limits; one face per subject."""
    with spawn(gateway_triton_concurrency=1, gateway_triton_queue=0, gateway_max_image_bytes=150_000,
               gateway_max_images_per_request=2, gateway_max_faces_per_subject=1) as gateway, \
            gateway.client(keys["acme"]) as client:
        yield gateway, client


# ---- 400 invalid_image ----------------------------------------------------------------------------

def test_code_invalid_image_header(acme, problem) -> None:
    body = problem(acme.post("/v1/detect", files={"image": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"}), 400, "invalid_image")
    assert body["field"] == "image"


def test_code_invalid_image_pixels_corrupt_after_a_valid_header(acme, img, problem) -> None:
    # Pillow reads a valid header; Triton's decoder then fails: its `invalid_image:` error maps to 400.
    problem(acme.post("/v1/detect", files={"image": img.corrupt_jpeg()}), 400, "invalid_image")


def test_code_invalid_image_base64_and_empty(acme, problem) -> None:
    problem(acme.post("/v1/detect", json={"image": {"image_base64": "not base64 !!"}}), 400, "invalid_image")
    problem(acme.post("/v1/detect", files={"image": b""}), 400, "invalid_image")


# ---- 415 unsupported_media_type -------------------------------------------------------------------

def test_code_unsupported_media_type(acme, img, problem) -> None:
    problem(acme.post("/v1/detect", files={"image": img.gif()}), 415, "unsupported_media_type")
    problem(acme.post("/v1/detect", files={"image": b"%PDF-1.7 ..."}), 415, "unsupported_media_type")
    problem(acme.post("/v1/detect", content=img.photo("obama.jpg"), headers={"Content-Type": "image/jpeg"}),
            415, "unsupported_media_type")


# ---- 413 image_too_large --------------------------------------------------------------------------

def test_code_image_too_large_pixels_from_the_header(acme, img, problem) -> None:
    body = problem(acme.post("/v1/detect", files={"image": img.png_header(10_000, 10_000)}), 413, "image_too_large")
    assert "10000x10000" in body["detail"]


def test_code_image_too_large_bytes(limited, img, problem) -> None:
    _, client = limited
    big = img.photo("obama.jpg")
    assert len(big) > 150_000
    problem(client.post("/v1/detect", files={"image": big}), 413, "image_too_large")
    problem(client.post("/v1/detect", json={"image": b64(big)}), 413, "image_too_large")


def test_code_image_too_large_body_refused_from_content_length(limited, keys) -> None:
    gateway, _ = limited
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nX-API-Key: " + keys["acme"].encode() +
                     b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 999999999\r\n\r\n")
        head = sock.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413") and "image_too_large" in head


def test_code_image_too_large_streamed_body_without_length(limited, problem) -> None:
    _, client = limited

    def chunks():
        yield b'{"image": {"image_base64": "'
        for _ in range(40):
            yield b"A" * 65536
        yield b'"}}'

    problem(client.post("/v1/detect", content=chunks(), headers={"Content-Type": "application/json"}),
            413, "image_too_large")


# ---- 422 face problems ----------------------------------------------------------------------------

def test_code_no_face(acme, img, problem) -> None:
    body = problem(acme.post("/v1/verify", files={"probe": img.photo("obama.jpg"), "reference": img.blank()}),
                   422, "no_face")
    assert body["field"] == "reference"


def test_code_multiple_faces(acme, img, problem) -> None:
    files = {"probe": img.photo("sample1.jpg"), "reference": img.photo("obama.jpg")}
    body = problem(acme.post("/v1/verify", files=files, data={"multi_face": "reject"}), 422, "multiple_faces")
    assert body["field"] == "probe" and body["faces"] > 1


def test_code_face_too_small(acme, img, problem) -> None:
    problem(acme.post("/v1/verify", files={"probe": img.tiny_face(), "reference": img.photo("obama.jpg")}),
            422, "face_too_small")


def test_code_low_quality_blur_and_darkness(acme, img, problem) -> None:
    blur = problem(acme.post("/v1/verify", files={"probe": img.blurred(), "reference": img.photo("obama.jpg")}),
                   422, "low_quality")
    assert "sharpness" in blur["detail"] and blur["gates"] == ["sharpness"]
    dark = problem(acme.post("/v1/verify", files={"probe": img.dark(), "reference": img.photo("obama.jpg")}),
                   422, "low_quality")
    assert "brightness" in dark["detail"] and "brightness" in dark["gates"]


def test_code_validation_error(acme, img, problem, uid) -> None:
    obama = img.photo("obama.jpg")
    problem(acme.post("/v1/verify", files={"reference": obama}), 422, "validation_error")  # no probe
    problem(acme.post("/v1/verify", files={"probe": obama}), 422, "validation_error")  # nothing to compare to
    problem(acme.post("/v1/verify", files={"probe": obama}, data={"gallery": "g"}), 422, "validation_error")
    problem(acme.post("/v1/identify", files={"probe": obama}, data={"gallery": "g", "top_k": "0"}),
            422, "validation_error")
    problem(acme.post("/v1/identify", files={"probe": obama}), 422, "validation_error")  # no gallery
    problem(acme.post("/v1/detect", json={"image": b64(obama), "surprise": 1}), 422, "validation_error")
    problem(acme.post("/v1/detect", content=b"{not json", headers={"Content-Type": "application/json"}),
            422, "validation_error")
    problem(acme.post("/v1/detect", data={"image": "text, not a file"}, files={"x": b""}), 422, "validation_error")
    problem(acme.post("/v1/galleries", json={"gallery_id": "bad\nid"}), 422, "validation_error")
    problem(acme.post("/v1/galleries", json={"gallery_id": "x" * 129}), 422, "validation_error")
    problem(acme.post("/v1/galleries", json={"gallery_id": uid(), "metadata": {"k": "v" * 9000}}),
            422, "validation_error")
    problem(acme.get("/v1/galleries", params={"limit": 0}), 422, "validation_error")
    problem(acme.get(f"/v1/galleries/{'y' * 200}"), 422, "validation_error")


# ---- 404 / 409 ------------------------------------------------------------------------------------

def test_code_gallery_not_found(acme, img, problem) -> None:
    problem(acme.get("/v1/galleries/nope-nope"), 404, "gallery_not_found")
    problem(acme.post("/v1/identify", files={"probe": img.photo("obama.jpg")}, data={"gallery": "nope-nope"}),
            404, "gallery_not_found")
    problem(acme.post("/v1/galleries/nope-nope/subjects", json={"subject_id": "s"}), 404, "gallery_not_found")


def test_code_subject_not_found(acme, img, make_gallery, problem) -> None:
    gallery = make_gallery()
    problem(acme.get(f"/v1/galleries/{gallery}/subjects/ghost"), 404, "subject_not_found")
    problem(acme.post("/v1/verify", files={"probe": img.photo("obama.jpg")},
                      data={"gallery": gallery, "subject_id": "ghost"}), 404, "subject_not_found")
    problem(acme.post(f"/v1/galleries/{gallery}/subjects/ghost/faces", files={"image": img.photo("obama.jpg")}),
            404, "subject_not_found")


def test_code_face_not_found(acme, make_gallery, problem) -> None:
    gallery = make_gallery({"obama": ["obama.jpg"]})
    problem(acme.delete(f"/v1/galleries/{gallery}/subjects/obama/faces/0123456789abcdef"), 404, "face_not_found")


def test_code_not_found(acme, problem) -> None:
    problem(acme.get("/v1/nothing-here"), 404, "not_found")


def test_code_method_not_allowed(acme, problem) -> None:
    problem(acme.get("/v1/detect"), 405, "method_not_allowed")


def test_code_conflict(acme, img, make_gallery, problem, limited) -> None:
    gallery = make_gallery()
    problem(acme.post("/v1/galleries", json={"gallery_id": gallery}), 409, "conflict")
    assert acme.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": "s1"}).status_code == 201
    problem(acme.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": "s1"}), 409, "conflict")
    # A subject without templates cannot be verified against.
    problem(acme.post("/v1/verify", files={"probe": img.photo("obama.jpg")},
                      data={"gallery": gallery, "subject_id": "s1"}), 409, "conflict")
    # The per-subject template cap (1 on the limited gateway).
    _, client = limited
    assert client.post("/v1/galleries", json={"gallery_id": gallery}).status_code == 201
    assert client.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": "s1"}).status_code == 201
    faces = f"/v1/galleries/{gallery}/subjects/s1/faces"
    assert client.post(faces, files={"image": img.resized("biden.jpg")}).status_code == 201
    problem(client.post(faces, files={"image": img.resized("biden.jpg")}), 409, "conflict")


def test_code_idempotency_conflict(acme, uid, problem) -> None:
    key = {"Idempotency-Key": f"conflict-{uid()}"}
    assert acme.post("/v1/galleries", json={"gallery_id": uid()}, headers=key).status_code == 201
    body = problem(acme.post("/v1/galleries", json={"gallery_id": uid()}, headers=key), 409, "idempotency_conflict")
    assert "different request" in body["detail"]


def _still_frames(img, count: int = 4) -> list:
    return [("frames", (f"f{i}.jpg", img.resized("obama.jpg", 400 + 8 * i))) for i in range(count)]


def test_code_challenge_not_found(acme, img, problem) -> None:
    issued = acme.post("/v1/liveness/challenges").json()
    url = f"/v1/liveness/challenges/{issued['challenge_id']}/frames"
    problem(acme.post(url, data={"nonce": "wrong"}, files=_still_frames(img)), 404, "challenge_not_found")
    problem(acme.post("/v1/liveness/challenges/" + "0" * 32 + "/frames", data={"nonce": issued["nonce"]},
                      files=_still_frames(img)), 404, "challenge_not_found")


def test_code_challenge_used(acme, img, problem) -> None:
    issued = acme.post("/v1/liveness/challenges").json()
    url = f"/v1/liveness/challenges/{issued['challenge_id']}/frames"
    first = acme.post(url, data={"nonce": issued["nonce"]}, files=_still_frames(img))
    assert first.status_code == 200 and first.json()["decision"] == "not_live", first.text  # a still photo
    problem(acme.post(url, data={"nonce": issued["nonce"]}, files=_still_frames(img)), 409, "challenge_used")


def test_code_liveness_failed(acme, img, problem) -> None:
    files = {"probe": img.photo("obama.jpg"), "reference": img.photo("obama2.jpg")}
    body = problem(acme.post("/v1/verify", files=files, data={"liveness_challenge": "never-issued"}), 422,
                   "liveness_failed")
    assert body["check"] == "challenge"  # the PAD refusal: tests/gateway/test_liveness.py


# ---- 401 / 403 ------------------------------------------------------------------------------------

def test_code_unauthorized(gw, img, problem) -> None:
    with gw.client() as anonymous, gw.client("fs_not-a-real-key") as wrong:
        body = problem(anonymous.post("/v1/detect", files={"image": img.photo("obama.jpg")}), 401, "unauthorized")
        assert "X-API-Key" in body["detail"]
        response = wrong.get("/v1/galleries")
        problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("ApiKey")


def test_code_forbidden(gw, keys, img, problem) -> None:
    with gw.client(keys["acme_verify"]) as verify_only, gw.client(keys["acme_enrol"]) as enrol_only:
        problem(verify_only.get("/v1/galleries"), 403, "forbidden")
        problem(verify_only.post("/v1/galleries/g/subjects", json={"subject_id": "s"}), 403, "forbidden")
        problem(enrol_only.post("/v1/galleries", json={"gallery_id": "g"}), 403, "forbidden")
        problem(enrol_only.delete("/v1/galleries/g"), 403, "forbidden")
        problem(enrol_only.post("/v1/detect", files={"image": img.photo("obama.jpg")}), 403, "forbidden")


# ---- 429 / 503 / 504 ------------------------------------------------------------------------------

def test_code_rate_limited_past_the_queue(limited, img) -> None:
    _, client = limited
    photo = img.resized("obama2.jpg")
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/detect", files={"image": photo}), range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 429 in statuses, statuses
    limited_response = next(r for r in responses if r.status_code == 429)
    assert limited_response.json()["code"] == "rate_limited"
    assert int(limited_response.headers["retry-after"]) >= 1


def test_code_timeout_from_a_real_grpc_deadline(spawn, keys, img, problem) -> None:
    with spawn(gateway_triton_timeout_s=0.001) as gateway, gateway.client(keys["acme"]) as client:
        problem(client.post("/v1/detect", files={"image": img.photo("obama.jpg")}), 504, "timeout")


def test_code_backend_unavailable_triton_and_milvus(spawn, keys, img, problem) -> None:
    with spawn(triton_grpc_url=f"127.0.0.1:{free_port()}") as gateway, gateway.client(keys["acme"]) as client:
        body = problem(client.post("/v1/detect", files={"image": img.photo("obama.jpg")}), 503,
                       "backend_unavailable")
        assert body and int(client.post("/v1/detect", files={"image": img.photo("obama.jpg")})
                            .headers["retry-after"]) > 0
        ready = problem(client.get("/readyz"), 503, "backend_unavailable")
        assert ready["triton"] is False and ready["milvus"] is True
        assert problem(client.get("/dependencies"), 503, "backend_unavailable")["triton"] is False
        assert client.get("/healthz").status_code == 200  # alive, just not ready
    with spawn(milvus_uri=f"http://127.0.0.1:{free_port()}", gateway_milvus_timeout_s=1.0) as gateway, \
            gateway.client(keys["acme"]) as client:
        response = client.get("/v1/galleries")
        problem(response, 503, "backend_unavailable")
        assert int(response.headers["retry-after"]) > 0
        problem(client.post("/v1/identify", files={"probe": img.photo("obama.jpg")}, data={"gallery": "g"}),
                503, "backend_unavailable")
        # still ready: verify and detect need only Triton, so a Milvus blip does not empty the Service
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "degraded", "triton": True, "milvus": False}
        assert client.post("/v1/verify", files={"probe": img.photo("obama.jpg"),
                                                "reference": img.photo("obama2.jpg")}).status_code == 200
        deps = problem(client.get("/dependencies"), 503, "backend_unavailable")
        assert deps["triton"] is True and deps["milvus"] is False


def test_triton_killed_then_restarted_503_then_recovers(spawn, keys, img, problem) -> None:
    """A Triton of its own: killed (SIGKILL) mid-life the gateway answers 503, restarted it serves again."""
    port = free_port()
    server = TritonServer(grpc_port=port).start()
    try:
        with spawn(triton_grpc_url=server.grpc_url) as gateway, gateway.client(keys["acme"]) as client:
            assert client.post("/v1/detect", files={"image": img.photo("biden.jpg")}).status_code == 200
            server.kill()
            problem(client.post("/v1/detect", files={"image": img.photo("biden.jpg")}), 503, "backend_unavailable")
            server = TritonServer(grpc_port=port).start()
            deadline = time.monotonic() + 10  # the gateway's channel reconnects within its 2 s backoff cap
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "gateway did not see the restarted Triton"
                time.sleep(0.2)
            assert client.post("/v1/detect", files={"image": img.photo("biden.jpg")}).status_code == 200
    finally:
        server.stop()


# ---- every code, and never a 500 ------------------------------------------------------------------

def test_every_code_has_a_test() -> None:
    names = [name for name in dir(sys.modules[__name__]) if name.startswith("test_code_")]
    untested = [code for code in CODES if code != "internal_error"
                and not any(name.startswith(f"test_code_{code}") for name in names)]
    assert not untested


GARBAGE = [b"", b"\x00" * 10, b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
           b"GIF89a", bytes(range(256)) * 4, b"<svg xmlns='http://www.w3.org/2000/svg'/>"]


@pytest.mark.parametrize("route,field,extra", [
    ("/v1/detect", "image", {}),
    ("/v1/verify", "probe", {"reference": b"\xff\xd8\xff\xe0\x00"}),
    ("/v1/identify", "probe", {"gallery": "g"}),
])
def test_bad_input_never_gives_a_500(acme, route, field, extra) -> None:
    for data in GARBAGE:
        files = {field: data, **{k: v for k, v in extra.items() if isinstance(v, bytes)}}
        form = {k: v for k, v in extra.items() if isinstance(v, str)}
        response = acme.post(route, files=files, data=form)
        assert 400 <= response.status_code < 500, (data[:16], response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    weird_json = [{"image": 5}, {"probe": {"image_base64": 5}}, [1, 2], {"probe": None}, "text",
                  {"probe": {"image_base64": "=" * 8}, "threshold": "high", "top_k": -3}]
    for body in weird_json:
        response = acme.post(route, json=body)
        assert 400 <= response.status_code < 500, (body, response.text)


def test_errors_carry_the_request_id(acme, problem) -> None:
    response = acme.get("/v1/galleries/nope-nope", headers={"X-Request-ID": "req-7"})
    assert problem(response, 404, "gallery_not_found")["request_id"] == "req-7"
    assert isinstance(httpx.Headers(response.headers)["x-request-id"], str)


# ---- 503 audit_unavailable ------------------------------------------------------------------------

def test_code_audit_unavailable_disk_full_fails_requests_and_changes_nothing(spawn, keys, img, uid, problem) -> None:
    """The audit log is /dev/full: every append fails with ENOSPC, as on a full disk."""
    gallery = uid()
    with spawn(audit_log="/dev/full") as gw, gw.client(keys["acme"]) as client:
        response = client.post("/v1/galleries", json={"gallery_id": gallery})
        problem(response, 503, "audit_unavailable")
        assert response.headers["Retry-After"]
        problem(client.get(f"/v1/galleries/{gallery}"), 404, "gallery_not_found")  # the change never happened
        # A decision is not returned unaudited either.
        probe = {"probe": img.resized("obama.jpg", 320), "reference": img.resized("obama2.jpg", 320)}
        problem(client.post("/v1/verify", files=probe), 503, "audit_unavailable")
