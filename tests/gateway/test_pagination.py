"""Cursor pagination through the API (on the shared gateway's Milvus server): `next` walks the whole list,
`offset` keeps working for small lists, and a malformed cursor is a 422."""

from __future__ import annotations


def test_subjects_page_with_next_until_null(acme, uid, problem) -> None:
    gallery = uid()
    assert acme.post("/v1/galleries", json={"gallery_id": gallery}).status_code == 201
    names = {f"p{i:02d}" for i in range(23)}
    for name in names:
        assert acme.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": name}).status_code == 201
    seen: list[str] = []
    params: dict = {"limit": 10}
    while True:
        page = acme.get(f"/v1/galleries/{gallery}/subjects", params=params).json()
        assert page["total"] == 23 and page["limit"] == 10
        seen += [s["subject_id"] for s in page["items"]]
        if page["next"] is None:
            break
        params = {"limit": 10, "cursor": page["next"]}
    assert len(seen) == 23 and set(seen) == names
    by_offset = acme.get(f"/v1/galleries/{gallery}/subjects", params={"limit": 10, "offset": 10}).json()
    assert [s["subject_id"] for s in by_offset["items"]] == seen[10:20]
    problem(acme.get(f"/v1/galleries/{gallery}/subjects", params={"cursor": "x\" or 1"}), 422, "validation_error")
    galleries = acme.get("/v1/galleries", params={"limit": 1}).json()
    assert galleries["next"] and len(galleries["items"]) == 1
