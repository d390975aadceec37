"""Tenant isolation on every endpoint, and ids that try to break out of the store's filters."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.triton

INJECTIONS = ['x" or tenant != "', 'x\\" or tenant != \\"', "x' or tenant != '", 'a\\', '" || gallery != "']


@pytest.fixture(scope="module")
def acme_gallery(make_gallery, acme, uid) -> tuple[str, str]:
    gallery = make_gallery({"obama": ["obama.jpg", "obama3.jpg"]})
    face_id = acme.get(f"/v1/galleries/{gallery}/subjects/obama/faces").json()["items"][0]["face_id"]
    return gallery, face_id


def test_other_tenant_sees_nothing_on_any_endpoint(acme, globex, acme_gallery, img, problem) -> None:
    gallery, face_id = acme_gallery
    subject = f"/v1/galleries/{gallery}/subjects/obama"
    assert gallery not in [g["gallery_id"] for g in globex.get("/v1/galleries", params={"limit": 1000}).json()["items"]]
    problem(globex.get(f"/v1/galleries/{gallery}"), 404, "gallery_not_found")
    problem(globex.delete(f"/v1/galleries/{gallery}"), 404, "gallery_not_found")
    problem(globex.get(f"/v1/galleries/{gallery}/subjects"), 404, "gallery_not_found")
    problem(globex.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": "x"}), 404, "gallery_not_found")
    for call in (globex.get(subject), globex.patch(subject, json={"name": "pwned"}), globex.delete(subject),
                 globex.get(f"{subject}/faces"), globex.delete(f"{subject}/faces/{face_id}"),
                 globex.post(f"{subject}/faces", files={"image": img.photo("biden.jpg")})):
        problem(call, 404, "gallery_not_found")
    probe = {"probe": img.photo("obama2.jpg")}
    problem(globex.post("/v1/verify", files=probe, data={"gallery": gallery, "subject_id": "obama"}),
            404, "gallery_not_found")
    problem(globex.post("/v1/identify", files=probe, data={"gallery": gallery}), 404, "gallery_not_found")
    # ...and acme's data is untouched by all of the above.
    assert acme.get(subject).json()["name"] is None
    assert acme.get(f"{subject}/faces").json()["total"] == 2


def test_same_gallery_id_in_two_tenants_stays_apart(acme, globex, acme_gallery, img, make_gallery) -> None:
    gallery, _ = acme_gallery
    make_gallery({"biden": ["biden.jpg"]}, client=globex, gallery=gallery)  # same id, other tenant
    mine = globex.post("/v1/identify", files={"probe": img.photo("obama2.jpg")}, data={"gallery": gallery}).json()
    assert [c["subject_id"] for c in mine["candidates"]] == ["biden"] and mine["decision"] == "unknown"
    theirs = acme.post("/v1/identify", files={"probe": img.photo("biden.jpg")}, data={"gallery": gallery}).json()
    assert [c["subject_id"] for c in theirs["candidates"]] == ["obama"]
    assert globex.get(f"/v1/galleries/{gallery}").json()["templates"] == 1
    assert acme.get(f"/v1/galleries/{gallery}").json()["templates"] == 2
    receipt = globex.delete(f"/v1/galleries/{gallery}").json()
    assert receipt["tenant"] == "globex" and receipt["templates_deleted"] == 1
    assert acme.get(f"/v1/galleries/{gallery}").json()["templates"] == 2


@pytest.mark.parametrize("evil", INJECTIONS)
def test_filter_injection_through_ids_finds_nothing(acme, globex, acme_gallery, img, seg, evil) -> None:
    """A gallery id crafted to escape `gallery == "..."` must match only itself (the store quotes every id)."""
    assert globex.post("/v1/galleries", json={"gallery_id": evil}).status_code == 201
    try:
        found = globex.post("/v1/identify", files={"probe": img.photo("obama2.jpg")}, data={"gallery": evil}).json()
        assert found["candidates"] == [] and found["decision"] == "unknown"
        assert globex.get(f"/v1/galleries/{seg(evil)}").json()["templates"] == 0
        assert globex.post(f"/v1/galleries/{seg(evil)}/subjects", json={"subject_id": evil}).status_code == 201
        assert globex.get(f"/v1/galleries/{seg(evil)}/subjects/{seg(evil)}/faces").json()["total"] == 0
        receipt = globex.delete(f"/v1/galleries/{seg(evil)}/subjects/{seg(evil)}").json()
        assert receipt["templates_deleted"] == 0 and receipt["subject_id"] == evil
    finally:
        receipt = globex.delete(f"/v1/galleries/{seg(evil)}").json()
    assert receipt["templates_deleted"] == 0 and receipt["gallery_id"] == evil
    assert acme.get(f"/v1/galleries/{acme_gallery[0]}").json()["templates"] == 2


def test_ids_with_quotes_work_end_to_end(acme, img, make_gallery, seg) -> None:
    gallery = make_gallery(gallery='O"Brien\\team ünïcode')
    subject = 'd\'Artagnan "the fourth"'
    assert acme.post(f"/v1/galleries/{seg(gallery)}/subjects", json={"subject_id": subject}).status_code == 201
    faces = f"/v1/galleries/{seg(gallery)}/subjects/{seg(subject)}/faces"
    assert acme.post(faces, files={"image": img.photo("obama.jpg")}).status_code == 201
    hit = acme.post("/v1/identify", files={"probe": img.photo("obama2.jpg")}, data={"gallery": gallery}).json()
    assert hit["subject_id"] == subject
    one = acme.post("/v1/verify", files={"probe": img.photo("obama2.jpg")},
                    data={"gallery": gallery, "subject_id": subject}).json()
    assert one["match"] is True
    assert acme.delete(f"/v1/galleries/{seg(gallery)}").json()["templates_deleted"] == 1


def test_scopes_allow_exactly_what_they_name(gw, keys, acme_gallery, img, uid) -> None:
    gallery, _ = acme_gallery
    with gw.client(keys["acme_verify"]) as verify, gw.client(keys["acme_enrol"]) as enrol, gw.client() as anonymous:
        assert verify.post("/v1/detect", files={"image": img.photo("biden.jpg")}).status_code == 200
        assert verify.post("/v1/identify", files={"probe": img.photo("obama2.jpg")},
                           data={"gallery": gallery}).json()["subject_id"] == "obama"
        subject = uid("s")
        assert enrol.get("/v1/galleries").status_code == 200
        assert enrol.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": subject}).status_code == 201
        assert enrol.delete(f"/v1/galleries/{gallery}/subjects/{subject}").status_code == 200
        for path in ("/healthz", "/readyz", "/dependencies", "/metrics", "/openapi.json"):
            assert anonymous.get(path).status_code == 200  # operations endpoints need no key
