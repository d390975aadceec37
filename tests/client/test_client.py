"""facestack.client against real gateways: every route through both clients, typed errors, and retries
only on 429/503 after Retry-After (counted on the wire with httpx's request hook)."""

from __future__ import annotations

import asyncio
import io
import time
import uuid

import pytest
from PIL import Image, ImageFilter

from facestack.artifacts import photo, photo_bytes
from facestack.client import (
    AsyncClient,
    Client,
    FaceRejected,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)

pytestmark = pytest.mark.triton


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def blank() -> bytes:
    return _jpeg(Image.new("RGB", (320, 240), (128, 128, 128)))


def blurred() -> bytes:  # sharpness ~9: the sharpness gate refuses it
    return _jpeg(Image.open(photo("obama.jpg")).convert("RGB").filter(ImageFilter.GaussianBlur(10)))


def counted(client: Client) -> list:
    sent: list = []
    client.http.event_hooks["request"] = [sent.append]
    return sent


def test_every_route_sync(stack):
    gallery = f"client-{uuid.uuid4().hex[:8]}"
    with Client(stack.url, stack.keys[0]) as fs:
        assert fs.create_gallery(gallery, metadata={"site": "test"})["embedder"] == "sface"
        assert fs.get_gallery(gallery)["subjects"] == 0
        assert gallery in [g["gallery_id"] for g in fs.list_galleries(limit=1000)["items"]]
        fs.create_subject(gallery, "obama", name="Barack Obama", metadata={"team": "a"})
        fs.create_subject(gallery, "biden")
        enrolled = fs.enrol(gallery, "obama", [photo_bytes("obama.jpg"), photo("obama2.jpg")])  # bytes, a path
        assert [f["image_index"] for f in enrolled["faces"]] == [0, 1]
        with open(photo("biden.jpg"), "rb") as f:  # an open file
            fs.enrol(gallery, "biden", f)

        found = fs.identify(photo("obama3.jpg"), gallery=gallery, top_k=2)
        assert found["decision"] == "match" and found["subject_id"] == "obama"
        assert [c["subject_id"] for c in found["candidates"]] == ["obama", "biden"]
        assert found["operating_point"]["fpir"] and found["templates_searched"] == 3
        against_subject = fs.verify(photo("obama3.jpg"), gallery=gallery, subject_id="obama")
        assert against_subject["match"] and against_subject["subject"]["templates_compared"] == 2
        pair = fs.verify(photo("obama.jpg"), photo("biden.jpg"), operating_point="fmr_1e-4")
        assert not pair["match"] and pair["operating_point"]["name"] == "fmr_1e-4"
        assert len(fs.detect(photo("sample1.jpg"), max_faces=3)["faces"]) == 3

        assert fs.update_subject(gallery, "obama", name="B. Obama")["metadata"] == {"team": "a"}  # only the name
        assert fs.update_subject(gallery, "obama", metadata=None)["name"] == "B. Obama"
        assert fs.get_subject(gallery, "obama")["metadata"] == {}
        assert fs.list_subjects(gallery, limit=1)["total"] == 2
        faces = fs.list_faces(gallery, "obama")["items"]
        receipt = fs.delete_face(gallery, "obama", faces[0]["face_id"])
        assert receipt["operation"] == "erase_face" and receipt["remaining_templates"] == 0  # of the erased face
        assert fs.list_faces(gallery, "obama")["total"] == 1
        receipt = fs.delete_subject(gallery, "biden")
        assert (receipt["templates_deleted"], receipt["remaining_templates"]) == (1, 0)
        assert fs.delete_gallery(gallery)["subjects_deleted"] == 1
        with pytest.raises(NotFound) as missing:
            fs.get_gallery(gallery)
        assert missing.value.code == "gallery_not_found" and missing.value.status == 404


def test_every_route_async(stack):
    gallery = f"client-{uuid.uuid4().hex[:8]}"

    async def flow() -> None:
        async with AsyncClient(stack.url, stack.keys[0]) as fs:
            await fs.create_gallery(gallery)
            await fs.create_subject(gallery, "obama")
            await fs.enrol(gallery, "obama", [photo_bytes("obama.jpg")])
            with pytest.raises(FaceRejected) as refused:  # all or nothing: the second photo has no face
                await fs.enrol(gallery, "obama", [photo_bytes("obama2.jpg"), blank()])
            assert refused.value.code == "no_face"
            assert [(e["field"], e["code"]) for e in refused.value.errors] == [("image[1]", "no_face")]
            found, detected, page = await asyncio.gather(
                fs.identify(photo_bytes("obama3.jpg"), gallery=gallery), fs.detect(photo_bytes("biden.jpg")),
                fs.list_faces(gallery, "obama"))
            assert found["subject_id"] == "obama" and len(detected["faces"]) == 1 and page["total"] == 1
            assert (await fs.get_subject(gallery, "obama"))["faces"] == 1
            assert (await fs.list_subjects(gallery))["items"][0]["subject_id"] == "obama"
            assert (await fs.list_galleries())["total"] >= 1
            assert (await fs.get_gallery(gallery))["templates"] == 1
            assert (await fs.update_subject(gallery, "obama", name="Obama"))["name"] == "Obama"
            assert (await fs.verify(photo_bytes("obama.jpg"), photo_bytes("obama2.jpg")))["match"]
            face = page["items"][0]["face_id"]
            assert (await fs.delete_face(gallery, "obama", face))["face_id"] == face
            assert (await fs.delete_subject(gallery, "obama"))["subject_id"] == "obama"
            assert (await fs.delete_gallery(gallery))["operation"] == "erase_gallery"

    asyncio.run(flow())


def test_errors_are_typed_and_not_retried(stack):
    with Client(stack.url, "fs_not-a-key") as anonymous:
        sent = counted(anonymous)
        with pytest.raises(Unauthorized) as denied:
            anonymous.list_galleries()
        assert denied.value.code == "unauthorized" and len(sent) == 1
    with Client(stack.url, stack.keys[0]) as fs:
        sent = counted(fs)
        with pytest.raises(FaceRejected) as blurry:
            fs.verify(blurred(), photo("obama2.jpg"))
        assert blurry.value.code == "low_quality" and blurry.value.gates == ["sharpness"]
        with pytest.raises(InvalidRequest) as bad:
            fs.create_gallery(" padded ")
        assert bad.value.code == "validation_error" and bad.value.request_id
        with pytest.raises(NotFound):
            fs.get_subject("no-such-gallery", "x")
        assert len(sent) == 3  # verify, create, get: one attempt each


def test_429_is_retried_after_retry_after(limited):
    with Client(limited.url, limited.keys[0], retries=2) as fs:
        sent = counted(fs)
        fs.list_galleries()  # the burst's one token
        started = time.monotonic()
        assert fs.list_galleries()["total"] == 0  # 429 Retry-After: 1, then served
        assert len(sent) == 3 and time.monotonic() - started >= 0.9


def test_a_retry_after_beyond_max_wait_is_raised_at_once(limited):
    with Client(limited.url, limited.keys[1], max_wait=0.5) as fs:
        sent = counted(fs)
        fs.list_galleries()
        with pytest.raises(RateLimited) as limited_error:
            fs.list_galleries()
        assert limited_error.value.code == "rate_limited" and limited_error.value.retry_after == 1
        assert len(sent) == 2


def test_503_is_retried_then_raised(limited):
    async def detect() -> None:
        async with AsyncClient(limited.url, limited.keys[2], retries=2) as fs:
            sent: list = []

            async def hook(request) -> None:
                sent.append(request)

            fs.http.event_hooks["request"] = [hook]
            started = time.monotonic()
            with pytest.raises(Unavailable) as down:
                await fs.detect(photo_bytes("obama.jpg"))
            assert down.value.code == "backend_unavailable" and down.value.retry_after == 1
            assert len(sent) == 3 and time.monotonic() - started >= 1.8  # two waits of Retry-After: 1

    asyncio.run(detect())
