"""Tenant isolation and scopes as a matrix over every route the app serves (derived from the app itself, so a
new endpoint fails here until it is classified), plus a property test of the store's tenant filters.

- Tenant B's admin key on each of tenant A's galleries, subjects and faces: 404 on every route, whether or
  not B has a gallery of the same id; A's data is unchanged afterwards (ids, names, templates).
- identify and 1:1 verify by subject never see the other tenant's templates (checked by face id).
- Each scope allows exactly the routes docs/gateway.md lists for it: 401 without or with a wrong key, 403
  with a key lacking the scope, and anything but 401/403 with one that has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facestack.settings import Settings
from gateway.app import create_app
from gateway.errors import ApiError
from gateway.metrics import Metrics
from gateway.schemas import valid_id
from gateway.store import Store

pytestmark = pytest.mark.triton

G, S, F = "/v1/galleries/{gallery_id}", "/v1/galleries/{gallery_id}/subjects", "/subjects/{subject_id}"
# (method, route) -> the scope it needs (None: no key). The table in docs/gateway.md, as data.
SCOPES: dict[tuple[str, str], str | None] = {
    ("POST", "/v1/detect"): "verify",
    ("POST", "/v1/verify"): "verify",
    ("POST", "/v1/identify"): "verify",
    ("POST", "/v1/liveness/challenges"): "verify",
    ("POST", "/v1/liveness/challenges/{challenge_id}/frames"): "verify",
    ("POST", "/v1/galleries"): "admin",
    ("GET", "/v1/galleries"): "enrol",
    ("GET", G): "enrol",
    ("DELETE", G): "admin",
    ("POST", S): "enrol",
    ("GET", S): "enrol",
    ("GET", S + "/{subject_id}"): "enrol",
    ("PATCH", S + "/{subject_id}"): "enrol",
    ("DELETE", S + "/{subject_id}"): "enrol",
    ("POST", S + "/{subject_id}/faces"): "enrol",
    ("GET", S + "/{subject_id}/faces"): "enrol",
    ("DELETE", S + "/{subject_id}/faces/{face_id}"): "enrol",
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/dependencies"): None,
    ("GET", "/metrics"): None,
}
ALLOWS = {"verify": {"verify"}, "enrol": {"enrol"}, "admin": {"verify", "enrol", "admin"}}


def served_routes() -> set[tuple[str, str]]:
    """(method, path) of every API route, through included routers (FastAPI wraps them)."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list, prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.update((method, prefix + route.path) for method in route.methods)
            elif hasattr(route, "original_router"):
                walk(route.original_router.routes, prefix + route.include_context.prefix)

    walk(create_app(Settings(api_key="x")).routes, "")
    return found


def test_every_served_route_is_in_the_matrix() -> None:
    assert served_routes() == set(SCOPES)


def request(client: httpx.Client, method: str, route: str, img, ids: dict[str, str]) -> httpx.Response:
    """Call a route with a well-formed request naming `ids` (gallery, subject, face) wherever it can."""
    path = re.sub(r"\{(\w+)\}", lambda m: quote(ids[m.group(1)], safe=""), route)
    probe = img.resized("obama2.jpg", 320)
    if route == "/v1/detect":
        return client.post(path, files={"image": probe})
    if route == "/v1/verify":
        return client.post(path, files={"probe": probe}, data={"gallery": ids["gallery_id"],
                                                               "subject_id": ids["subject_id"]})
    if route == "/v1/identify":
        return client.post(path, files={"probe": probe}, data={"gallery": ids["gallery_id"], "top_k": "100"})
    if route.endswith("/frames"):
        return client.post(path, data={"nonce": "not-issued"}, files=[("frames", probe)] * 4)
    if method == "POST" and route == "/v1/galleries":
        return client.post(path, json={"gallery_id": ids["new_gallery"]})
    if method == "POST" and route == S:
        return client.post(path, json={"subject_id": ids["new_subject"]})
    if method == "PATCH":
        return client.patch(path, json={"name": "changed by someone else", "metadata": {"x": 1}})
    if method == "POST" and route.endswith("/faces"):
        return client.post(path, files={"image": probe})
    return client.request(method, path)


@pytest.fixture(scope="module")
def tenants(spawn, keys, img) -> Iterator[tuple]:
    """A gateway of the module's own; tenant acme owns gallery `shared` (obama: 2 faces, biden: 1)."""
    with spawn() as gateway, gateway.client(keys["acme"]) as acme, gateway.client(keys["globex"]) as globex:
        acme.post("/v1/galleries", json={"gallery_id": "shared", "metadata": {"owner": "acme"}})
        faces: dict[str, list[str]] = {}
        for subject, photos in {"obama": ["obama.jpg", "obama3.jpg"], "biden": ["biden.jpg"]}.items():
            acme.post("/v1/galleries/shared/subjects", json={"subject_id": subject, "name": subject.title()})
            files = [("image", img.resized(p, 400)) for p in photos]
            response = acme.post(f"/v1/galleries/shared/subjects/{subject}/faces", files=files)
            assert response.status_code == 201, response.text
            faces[subject] = [f["face_id"] for f in response.json()["faces"]]
        yield gateway, acme, globex, faces


def snapshot(client: httpx.Client) -> dict:
    gallery = client.get("/v1/galleries/shared").json()
    subjects = client.get("/v1/galleries/shared/subjects").json()["items"]
    faces = {s["subject_id"]: sorted(f["face_id"] for f in client.get(
        f"/v1/galleries/shared/subjects/{s['subject_id']}/faces").json()["items"]) for s in subjects}
    return {"gallery": {k: gallery[k] for k in ("gallery_id", "metadata", "subjects", "templates")},
            "subjects": sorted((s["subject_id"], s["name"], str(s["metadata"])) for s in subjects), "faces": faces}


def test_other_tenant_gets_404_on_every_route_naming_a_resource(tenants, img, uid) -> None:
    gateway, acme, globex, faces = tenants
    before = snapshot(acme)
    ids = {"gallery_id": "shared", "subject_id": "obama", "face_id": faces["obama"][0],
           "new_gallery": uid("b"), "new_subject": uid("s")}
    # (another tenant's liveness challenge: tests/gateway/test_liveness.py)
    naming = [(m, r) for (m, r), scope in SCOPES.items()
              if scope and ("{" in r or r in ("/v1/verify", "/v1/identify")) and "liveness" not in r]
    assert len(naming) == 12
    tried = 0
    # Round 1: globex has no gallery "shared". Round 2: it has one of its own (same id, other subjects).
    for round_ in (1, 2):
        if round_ == 2:
            assert globex.post("/v1/galleries", json={"gallery_id": "shared"}).status_code == 201
            assert globex.post("/v1/galleries/shared/subjects", json={"subject_id": "other"}).status_code == 201
            assert globex.post("/v1/galleries/shared/subjects/other/faces",
                               files={"image": img.resized("biden.jpg", 400)}).status_code == 201
        for method, route in naming:
            if round_ == 2 and (method, route) in (("DELETE", G), ("POST", S), ("GET", G), ("GET", S)):
                continue  # on its own gallery these succeed, as they should
            response = request(globex, method, route, img, ids)
            tried += 1
            if round_ == 2 and route == "/v1/identify":
                body = response.json()  # globex's own gallery: only globex's subject, never acme's faces
                assert [c["subject_id"] for c in body["candidates"]] == ["other"], body
                assert not {c["face_id"] for c in body["candidates"]} & set(faces["obama"] + faces["biden"])
                continue
            assert response.status_code == 404, (round_, method, route, response.text)
            expected = "gallery_not_found" if round_ == 1 else {"face_not_found", "subject_not_found"}
            assert response.json()["code"] in ({expected} if isinstance(expected, str) else expected), response.text
    assert snapshot(acme) == before  # nothing of acme's changed
    globex.delete("/v1/galleries/shared")
    print(f"\nFIGURE isolation cross_tenant_calls={tried}")


def test_identify_and_verify_only_ever_see_the_callers_templates(tenants, img) -> None:
    gateway, acme, globex, faces = tenants
    # globex enrols the very same photos under the same gallery and subject ids.
    assert globex.post("/v1/galleries", json={"gallery_id": "shared"}).status_code == 201
    theirs: set[str] = set()
    for subject, photos in {"obama": ["obama.jpg"], "biden": ["biden.jpg", "obama2.jpg"]}.items():
        globex.post("/v1/galleries/shared/subjects", json={"subject_id": subject})
        r = globex.post(f"/v1/galleries/shared/subjects/{subject}/faces",
                        files=[("image", img.resized(p, 400)) for p in photos])
        theirs |= {f["face_id"] for f in r.json()["faces"]}
    mine = set(faces["obama"] + faces["biden"])
    try:
        for probe in ("obama2.jpg", "biden.jpg", "obama.jpg"):
            for client, own, other in ((acme, mine, theirs), (globex, theirs, mine)):
                body = client.post("/v1/identify", files={"probe": img.resized(probe, 320)},
                                   data={"gallery": "shared", "top_k": "100"}).json()
                found = {c["face_id"] for c in body["candidates"]}
                assert found and found <= own and not found & other, (probe, body)
        # 1:1 by subject compares the caller's templates only: acme's obama has 2, globex's obama 1.
        one = {name: client.post("/v1/verify", files={"probe": img.resized("obama2.jpg", 320)},
                                 data={"gallery": "shared", "subject_id": "obama"}).json()
               for name, client in (("acme", acme), ("globex", globex))}
        assert one["acme"]["subject"]["templates_compared"] == 2
        assert one["globex"]["subject"]["templates_compared"] == 1
    finally:
        globex.delete("/v1/galleries/shared")
    assert acme.get("/v1/galleries/shared").json()["templates"] == 3


KEY_KINDS = ("anonymous", "wrong", "acme_verify", "acme_enrol", "acme")


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_scopes_allow_exactly_their_routes(tenants, keys, img, uid, kind) -> None:
    gateway = tenants[0]
    key = {"anonymous": None, "wrong": "fs_" + "x" * 43}.get(kind, keys.get(kind))
    held = {"acme_verify": {"verify"}, "acme_enrol": {"enrol"}, "acme": {"admin"}}.get(kind, set())
    allowed_scopes = set().union(*(ALLOWS[s] for s in held)) if held else set()
    # Ids that do not exist: an allowed call passes authorisation and ends in 404 (or 200 for detect,
    # 201 for creating a gallery), so nothing of anyone's is changed by this test.
    ids = {"gallery_id": uid("none"), "subject_id": "nobody", "face_id": "0" * 32, "new_gallery": uid("scope"),
           "new_subject": "s", "challenge_id": "0" * 32}
    with httpx.Client(base_url=gateway.url, headers={"X-API-Key": key} if key else {}, timeout=60) as client:
        for (method, route), scope in SCOPES.items():
            response = request(client, method, route, img, ids)
            if scope is None:
                assert response.status_code in (200, 503), (kind, method, route, response.text)
            elif key is None or kind == "wrong":
                assert response.status_code == 401 and response.json()["code"] == "unauthorized", (kind, route)
            elif scope in allowed_scopes:
                assert response.status_code not in (401, 403), (kind, method, route, response.text)
                assert response.status_code < 500, (kind, method, route, response.text)
            else:
                assert response.status_code == 403 and response.json()["code"] == "forbidden", \
                    (kind, method, route, response.text)


# ---- the store's filters, property-based --------------------------------------------------------

IDS = st.lists(st.sampled_from(list('ab"\'\\ =!|&()*%_-.,ü😀') + ["or", "and", "tenant", "=="]),
               min_size=1, max_size=12).map(lambda parts: "".join(parts).strip() or "x").filter(valid_id)


@pytest.fixture(scope="module")
def lite(tmp_path_factory) -> Iterator[tuple[Store, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    store = Store(str(tmp_path_factory.mktemp("iso") / "m.db"), timeout=10, workers=2, metrics=Metrics(),
                  retry_after=1)
    yield store, loop
    store.close()
    loop.close()


@settings(max_examples=6, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(gallery=IDS, subject=IDS, other_gallery=IDS)
def test_store_never_crosses_tenants(lite, gallery, subject, other_gallery) -> None:
    """Two tenants with identical gallery and subject ids (built from quotes, backslashes and filter words)
    and identical vectors: every read as one tenant returns only its own rows."""
    store, loop = lite
    run = loop.run_until_complete
    vector = np.eye(1, 128, dtype=np.float32)
    owned: dict[str, set[str]] = {}
    try:
        for tenant in ("ta", "tb"):
            for g in {gallery, other_gallery}:
                run(store.create_gallery(tenant, g, "sface", {}))
                run(store.create_subject(tenant, g, subject, None, {}))
                ids, _ = run(store.add_templates(tenant, g, subject, "face_embedder", "1", vector, 8))
                owned.setdefault(tenant, set()).update(ids)
        for tenant in ("ta", "tb"):
            for g in {gallery, other_gallery}:
                hits = run(store.search(tenant, g, "face_embedder", "1", vector[0], 10, 8))
                assert len(hits) == 1 and hits[0].face_id in owned[tenant], hits
                rows, total = run(store.list_faces(tenant, g, subject, 100, 0))
                assert total == 1 and {r["face_id"] for r in rows} <= owned[tenant]
                assert run(store.gallery_counts(tenant, g)) == (1, 1)
            galleries, _ = run(store.list_galleries(tenant, 100, 0))
            assert {r["gallery"] for r in galleries} == {gallery, other_gallery}
        # Erasing one tenant's gallery leaves the other's intact.
        run(store.delete_gallery("ta", gallery))
        assert run(store.gallery_counts("tb", gallery)) == (1, 1)
    finally:
        for tenant in ("ta", "tb"):
            for g in {gallery, other_gallery}:
                with contextlib.suppress(ApiError):  # already erased above
                    run(store.delete_gallery(tenant, g))
