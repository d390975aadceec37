"""detect / verify / identify end to end: HTTP -> gateway -> real Triton (CPU) and Milvus Lite."""

from __future__ import annotations

import base64

import pytest

pytestmark = pytest.mark.triton


def b64(data: bytes) -> dict:
    return {"image_base64": base64.b64encode(data).decode()}


def test_detect_one_face_multipart(acme, img) -> None:
    r = acme.post("/v1/detect", files={"image": ("obama.jpg", img.photo("obama.jpg"), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 910, "height": 1137}
    (face,) = body["faces"]
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= 910 and 0 <= y1 < y2 <= 1137
    assert len(face["landmarks"]) == 5 and face["score"] > 0.6
    assert set(face["quality"]) == {"face_size", "sharpness", "yaw", "pitch", "roll", "brightness"}
    assert r.headers["x-request-id"] == body["request_id"]
    assert "triton;dur=" in r.headers["server-timing"]


def test_detect_group_photo_json_and_webp(acme, img) -> None:
    group = acme.post("/v1/detect", json={"image": b64(img.photo("sample1.jpg")), "max_faces": 64}).json()
    assert len(group["faces"]) > 1
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in group["faces"]]
    assert areas == sorted(areas, reverse=True)  # largest first
    webp = acme.post("/v1/detect", files={"image": img.webp()})
    assert webp.status_code == 200 and len(webp.json()["faces"]) == 1


def test_detect_keeps_a_client_request_id(acme, img) -> None:
    r = acme.post("/v1/detect", files={"image": img.photo("biden.jpg")}, headers={"X-Request-ID": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42" and r.json()["request_id"] == "trace-42"


def test_verify_same_and_different_person(acme, img, default_point) -> None:
    same = acme.post("/v1/verify", files={"probe": img.photo("obama.jpg"), "reference": img.photo("obama2.jpg")})
    assert same.status_code == 200, same.text
    body = same.json()
    assert body["match"] is True and body["similarity"] >= body["threshold"]
    name, threshold = default_point["face_embedder"]
    assert body["threshold"] == pytest.approx(threshold)
    assert body["model"] == {"embedder": "sface", "name": "face_embedder", "version": "1"}
    assert body["operating_point"]["name"] == name
    assert body["probe_face"]["box"] and body["reference_face"]["box"] and body["subject"] is None

    other = acme.post("/v1/verify", json={"probe": b64(img.photo("obama.jpg")),
                                          "reference": b64(img.photo("biden.jpg"))})
    assert other.status_code == 200
    assert other.json()["match"] is False and other.json()["similarity"] < other.json()["threshold"]


def test_verify_with_dlib_embedder(acme, img, default_point) -> None:
    r = acme.post("/v1/verify", files={"probe": img.photo("obama.jpg"), "reference": img.photo("obama3.jpg")},
                  data={"embedder": "dlib"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "face_embedder_dlib"
    assert body["threshold"] == pytest.approx(default_point["face_embedder_dlib"][1])
    assert body["match"] is True


def test_verify_threshold_override_within_bounds(acme, img, problem) -> None:
    files = {"probe": img.photo("obama.jpg"), "reference": img.photo("obama2.jpg")}
    strict = acme.post("/v1/verify", files=files, data={"threshold": "0.94"}).json()
    assert strict["threshold"] == 0.94 and strict["match"] is False
    assert strict["operating_point"]["name"] == "custom"
    problem(acme.post("/v1/verify", files=files, data={"threshold": "0.05"}), 422, "validation_error")
    problem(acme.post("/v1/verify", files=files, data={"operating_point": "fmr_1e-9"}), 422, "validation_error")


def test_verify_against_enrolled_subject_fetches_templates(acme, img, make_gallery) -> None:
    gallery = make_gallery({"obama": ["obama.jpg", "obama3.jpg"]})
    r = acme.post("/v1/verify", files={"probe": img.photo("obama2.jpg")},
                  data={"gallery": gallery, "subject_id": "obama"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["match"] is True
    assert body["subject"] == {"gallery": gallery, "subject_id": "obama", "templates_compared": 2}
    # best of 2 templates: a stricter threshold keeps the point's FMR for the whole comparison
    one_to_one = acme.post("/v1/verify", files={"probe": img.photo("obama2.jpg"),
                                                "reference": img.photo("obama.jpg")}).json()
    assert body["threshold"] > one_to_one["threshold"]
    assert body["operating_point"]["name"] == one_to_one["operating_point"]["name"]
    assert body["operating_point"]["fmr"] == one_to_one["operating_point"]["fmr"]
    impostor = acme.post("/v1/verify", json={"probe": b64(img.photo("biden.jpg")), "gallery": gallery,
                                             "subject_id": "obama"}).json()
    assert impostor["match"] is False


def test_identify_open_set(acme, img, make_gallery) -> None:
    gallery = make_gallery({"obama": ["obama.jpg", "obama3.jpg"], "biden": ["biden.jpg"]})
    hit = acme.post("/v1/identify", files={"probe": img.photo("obama2.jpg")}, data={"gallery": gallery, "top_k": "5"})
    assert hit.status_code == 200, hit.text
    body = hit.json()
    assert body["decision"] == "match" and body["subject_id"] == "obama"
    assert [c["subject_id"] for c in body["candidates"]] == ["obama", "biden"]  # distinct subjects, best first
    assert body["similarity"] == body["candidates"][0]["similarity"] >= body["threshold"]
    # the threshold is identify's: an FPIR point computed for this gallery's 3 templates
    point = body["operating_point"]
    assert point["name"] == "fpir_1e-2" and point["fpir"] == 0.01 and point["gallery_size"] == 3
    assert body["templates_searched"] == 3 and point["calibrated"] is True
    assert body["probe_face"]["selection"] == {"policy": "main", "reason": "the only face", "faces_found": 1}

    only_biden = make_gallery({"biden": ["biden.jpg"]})
    miss = acme.post("/v1/identify", json={"probe": b64(img.photo("obama2.jpg")), "gallery": only_biden}).json()
    assert miss["decision"] == "unknown" and miss["subject_id"] is None
    assert miss["candidates"][0]["subject_id"] == "biden" and miss["similarity"] < miss["threshold"]

    top1 = acme.post("/v1/identify", files={"probe": img.photo("obama2.jpg")}, data={"gallery": gallery, "top_k": 1})
    assert len(top1.json()["candidates"]) == 1


def test_identify_threshold_grows_with_the_gallery(acme, img, make_gallery, problem) -> None:
    small = make_gallery({"obama": ["obama.jpg"]})
    large = make_gallery({"obama": ["obama.jpg"], "biden": ["biden.jpg"], "o2": ["obama3.jpg"],
                          "o4": ["obama.jpg"]})
    a = acme.post("/v1/identify", files={"probe": img.photo("obama2.jpg")}, data={"gallery": small}).json()
    b = acme.post("/v1/identify", files={"probe": img.photo("obama2.jpg")}, data={"gallery": large}).json()
    assert a["operating_point"]["gallery_size"] == 1 and b["operating_point"]["gallery_size"] == 4
    assert a["threshold"] < b["threshold"]
    strict = acme.post("/v1/identify", files={"probe": img.photo("obama2.jpg")},
                       data={"gallery": large, "operating_point": "fpir_1e-3"}).json()
    assert strict["threshold"] > b["threshold"] and strict["operating_point"]["fpir"] == 0.001
    # a 1:1 point is per comparison: identify refuses it rather than misstate its false-positive rate
    body = problem(acme.post("/v1/identify", files={"probe": img.photo("obama2.jpg")},
                             data={"gallery": large, "operating_point": "fmr_1e-3"}), 422, "validation_error")
    assert "1:1" in body["detail"]


def test_identify_on_an_empty_gallery_is_unknown(acme, img, make_gallery) -> None:
    gallery = make_gallery()
    body = acme.post("/v1/identify", files={"probe": img.photo("obama.jpg")}, data={"gallery": gallery}).json()
    assert body["decision"] == "unknown" and body["candidates"] == [] and body["similarity"] is None


def test_dlib_gallery_uses_its_own_collection(acme, img, make_gallery) -> None:
    gallery = make_gallery({"obama": ["obama.jpg"]}, embedder="dlib")
    body = acme.post("/v1/identify", files={"probe": img.photo("obama2.jpg")}, data={"gallery": gallery}).json()
    assert body["model"]["name"] == "face_embedder_dlib" and body["decision"] == "match"
    faces = acme.get(f"/v1/galleries/{gallery}/subjects/obama/faces").json()["items"]
    assert [f["model"] for f in faces] == ["face_embedder_dlib:1"]


def test_multi_face_policies(acme, img) -> None:
    detect = acme.post("/v1/detect", files={"image": img.photo("sample1.jpg")}).json()
    files = {"probe": img.photo("sample1.jpg"), "reference": img.photo("sample1.jpg")}
    r = acme.post("/v1/verify", files=files, data={"multi_face": "largest"})
    assert r.status_code == 200
    assert r.json()["probe_face"]["box"] == detect["faces"][0]["box"]
    assert r.json()["probe_face"]["selection"]["reason"] == "the largest face"
    assert r.json()["similarity"] == pytest.approx(1.0, abs=1e-4)
    # the default: the largest face near the centre of the photo, and the answer says so
    main = acme.post("/v1/verify", files=files).json()
    width, height = detect["image"]["width"], detect["image"]["height"]
    x1, y1, x2, y2 = main["probe_face"]["box"]
    assert abs((x1 + x2) / 2 - width / 2) <= width / 4 and abs((y1 + y2) / 2 - height / 2) <= height / 4
    selection = main["probe_face"]["selection"]
    assert selection["policy"] == "main" and selection["faces_found"] > 1
    assert selection["reason"] in ("the largest face near the centre of the photo",
                                   "the largest face (no face near the centre of the photo)")


def test_openapi_documents_both_encodings(gw) -> None:
    import httpx

    spec = httpx.get(f"{gw.url}/openapi.json").json()
    body = spec["paths"]["/v1/verify"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "VerifyJson" in spec["components"]["schemas"]
    assert httpx.get(f"{gw.url}/docs").status_code == 200
