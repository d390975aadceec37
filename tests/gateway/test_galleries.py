"""Galleries, subjects, faces: CRUD, bulk enrolment, erasure receipts and the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.audit import verify_chain

pytestmark = pytest.mark.triton


def audit_events(gw) -> list[dict]:
    path = Path(gw.settings.data_dir) / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_gallery_lifecycle(acme, uid, problem) -> None:
    gallery = uid()
    created = acme.post("/v1/galleries", json={"gallery_id": gallery, "metadata": {"site": "HQ"}})
    assert created.status_code == 201
    assert created.headers["location"].endswith(f"/v1/galleries/{gallery}")
    assert created.json() | {"created_at": None} == {"gallery_id": gallery, "embedder": "sface",
                                                     "metadata": {"site": "HQ"}, "created_at": None,
                                                     "subjects": 0, "templates": 0}
    listed = acme.get("/v1/galleries", params={"limit": 1000}).json()
    assert gallery in [g["gallery_id"] for g in listed["items"]] and listed["total"] >= 1
    assert acme.get(f"/v1/galleries/{gallery}").json()["metadata"] == {"site": "HQ"}
    receipt = acme.delete(f"/v1/galleries/{gallery}").json()
    assert receipt["operation"] == "erase_gallery" and receipt["templates_deleted"] == 0
    problem(acme.get(f"/v1/galleries/{gallery}"), 404, "gallery_not_found")
    problem(acme.delete(f"/v1/galleries/{gallery}"), 404, "gallery_not_found")


def test_subject_lifecycle_and_pagination(acme, make_gallery, problem) -> None:
    gallery = make_gallery()
    for i in range(5):
        body = {"subject_id": f"s{i}", "name": f"Person {i}", "metadata": {"employee": i}}
        assert acme.post(f"/v1/galleries/{gallery}/subjects", json=body).status_code == 201
    page1 = acme.get(f"/v1/galleries/{gallery}/subjects", params={"limit": 3}).json()
    page2 = acme.get(f"/v1/galleries/{gallery}/subjects", params={"limit": 3, "offset": 3}).json()
    assert page1["total"] == page2["total"] == 5 and len(page1["items"]) == 3 and len(page2["items"]) == 2
    assert {s["subject_id"] for s in page1["items"] + page2["items"]} == {f"s{i}" for i in range(5)}

    patched = acme.patch(f"/v1/galleries/{gallery}/subjects/s1", json={"name": "Renamed"}).json()
    assert patched["name"] == "Renamed" and patched["metadata"] == {"employee": 1}
    again = acme.patch(f"/v1/galleries/{gallery}/subjects/s1", json={"metadata": {"k": "v"}}).json()
    assert again["name"] == "Renamed" and again["metadata"] == {"k": "v"}
    one = acme.get(f"/v1/galleries/{gallery}/subjects/s1").json()
    assert one["name"] == "Renamed" and one["faces"] == 0
    problem(acme.patch(f"/v1/galleries/{gallery}/subjects/ghost", json={"name": "x"}), 404, "subject_not_found")


def test_bulk_enrolment_and_face_listing(acme, img, make_gallery) -> None:
    gallery = make_gallery()
    acme.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": "obama"})
    files = [("image", img.photo("obama.jpg")), ("image", img.photo("obama2.jpg")), ("image", img.photo("obama3.jpg"))]
    enrolled = acme.post(f"/v1/galleries/{gallery}/subjects/obama/faces", files=files)
    assert enrolled.status_code == 201, enrolled.text
    body = enrolled.json()
    assert [f["image_index"] for f in body["faces"]] == [0, 1, 2]
    assert body["model"]["name"] == "face_embedder"
    listed = acme.get(f"/v1/galleries/{gallery}/subjects/obama/faces").json()
    assert {f["face_id"] for f in listed["items"]} == {f["face_id"] for f in body["faces"]}
    assert listed["total"] == 3 and all(f["model"] == "face_embedder:1" for f in listed["items"])
    assert acme.get(f"/v1/galleries/{gallery}/subjects/obama").json()["faces"] == 3
    assert acme.get(f"/v1/galleries/{gallery}").json()["templates"] == 3


def test_bulk_enrolment_is_all_or_nothing(acme, img, make_gallery, problem) -> None:
    gallery = make_gallery()
    acme.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": "obama"})
    files = [("image", img.photo("obama.jpg")), ("image", img.blank()), ("image", img.blurred())]
    body = problem(acme.post(f"/v1/galleries/{gallery}/subjects/obama/faces", files=files), 422, "no_face")
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("image[1]", "no_face"), ("image[2]", "low_quality")]
    assert acme.get(f"/v1/galleries/{gallery}/subjects/obama/faces").json()["total"] == 0


def test_enrol_json_base64_list(acme, img, make_gallery) -> None:
    import base64

    gallery = make_gallery()
    acme.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": "biden"})
    image = {"image_base64": base64.b64encode(img.photo("biden.jpg")).decode()}
    r = acme.post(f"/v1/galleries/{gallery}/subjects/biden/faces", json={"image": [image, image]})
    assert r.status_code == 201 and len(r.json()["faces"]) == 2
    one = acme.post(f"/v1/galleries/{gallery}/subjects/biden/faces", json={"image": image})
    assert one.status_code == 201 and len(one.json()["faces"]) == 1


def test_erase_face_subject_gallery_with_receipts(gw, acme, img, make_gallery, problem) -> None:
    gallery = make_gallery({"obama": ["obama.jpg", "obama3.jpg"], "biden": ["biden.jpg"]})
    probe = {"probe": img.photo("obama2.jpg")}
    assert acme.post("/v1/identify", files=probe, data={"gallery": gallery}).json()["subject_id"] == "obama"

    face_id = acme.get(f"/v1/galleries/{gallery}/subjects/obama/faces").json()["items"][0]["face_id"]
    face_receipt = acme.delete(f"/v1/galleries/{gallery}/subjects/obama/faces/{face_id}").json()
    assert face_receipt["operation"] == "erase_face" and face_receipt["face_id"] == face_id
    assert face_receipt["templates_deleted"] == 1 and face_receipt["remaining_templates"] == 0

    receipt = acme.delete(f"/v1/galleries/{gallery}/subjects/obama")
    assert receipt.status_code == 200
    body = receipt.json()
    assert body == body | {"operation": "erase_subject", "tenant": "acme", "gallery_id": gallery,
                           "subject_id": "obama", "subjects_deleted": 1, "templates_deleted": 1,
                           "remaining_templates": 0}
    assert body["receipt_id"] and body["erased_at"].endswith("Z")
    # Nothing of the subject can match any more: 1:N does not return it, 1:1 no longer finds it.
    after = acme.post("/v1/identify", files=probe, data={"gallery": gallery}).json()
    assert "obama" not in [c["subject_id"] for c in after["candidates"]] and after["decision"] == "unknown"
    problem(acme.post("/v1/verify", files=probe, data={"gallery": gallery, "subject_id": "obama"}),
            404, "subject_not_found")

    gallery_receipt = acme.delete(f"/v1/galleries/{gallery}").json()
    assert (gallery_receipt["subjects_deleted"], gallery_receipt["templates_deleted"]) == (1, 1)
    assert gallery_receipt["remaining_templates"] == 0
    problem(acme.post("/v1/identify", files=probe, data={"gallery": gallery}), 404, "gallery_not_found")

    # The audit trail holds the receipts, and never an image or a template.
    events = audit_events(gw)
    erasures = [e for e in events if e.get("receipt_id") in {body["receipt_id"], gallery_receipt["receipt_id"]}]
    assert [e["operation"] for e in erasures] == ["erase_subject", "erase_gallery"]
    assert erasures[0]["templates_deleted"] == 1 and erasures[0]["key_id"] == "acme-key"
    assert verify_chain(Path(gw.settings.data_dir) / "audit.jsonl") == len(events)


def test_audit_has_decisions_without_images_or_templates(gw, acme, img, make_gallery) -> None:
    gallery = make_gallery({"biden": ["biden.jpg"]})
    rid = "audit-check-1"
    answer = acme.post("/v1/identify", files={"probe": img.photo("biden.jpg")}, data={"gallery": gallery},
                       headers={"X-Request-ID": rid}).json()
    (event,) = [e for e in audit_events(gw) if e.get("request_id") == rid]
    assert event["operation"] == "identify" and event["decision"] == "match" and event["subject"] == "biden"
    assert event["tenant"] == "acme" and event["gallery"] == gallery and event["model"] == "face_embedder:1"
    assert event["threshold"] == answer["threshold"] and 0 < event["similarity"] <= 1
    assert (event["operating_point"], event["fpir"], event["templates"]) == ("fpir_1e-2", 0.01, 1)
    raw = (Path(gw.settings.data_dir) / "audit.jsonl").read_text()
    assert "image_base64" not in raw and "vector" not in raw and "embedding" not in raw
    assert max(len(line) for line in raw.splitlines()) < 1000  # no 128-float template hides in a line


def test_metrics_count_routes_decisions_and_backends(gw, acme, img, make_gallery) -> None:
    import httpx

    gallery = make_gallery({"biden": ["biden.jpg"]})  # enrols through the faces route
    acme.post("/v1/identify", files={"probe": img.photo("biden.jpg")}, data={"gallery": gallery})
    acme.post("/v1/verify", files={"probe": img.photo("obama.jpg"), "reference": img.photo("biden.jpg")})
    text = httpx.get(f"{gw.url}/metrics").text
    assert 'facestack_http_requests_total{method="POST",route="/v1/verify",status="200"}' in text
    assert 'route="/v1/galleries/{gallery_id}/subjects/{subject_id}/faces"' in text  # templates, not ids
    assert "facestack_http_request_duration_seconds_bucket" in text
    assert 'facestack_decisions_total{decision="no_match",operation="verify"}' in text
    assert 'facestack_triton_request_duration_seconds_count{outcome="ok"}' in text
    assert 'facestack_milvus_request_duration_seconds_count{operation="search",outcome="ok"}' in text
    assert "facestack_faces_per_image_bucket" in text
