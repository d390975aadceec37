"""The decisions the gateway states, checked end to end on LFW View 1 DevTest identities, which the thresholds
were not fitted on (calibration uses DevTrain only): identify's FPIR on never-enrolled people and rank-1 of
enrolled ones, verify against subjects with several templates, and the pose gate on real profiles.
Skipped where ../shared/datasets/lfw-view1 is absent (users' machines)."""

from __future__ import annotations

import base64
import concurrent.futures as cf
from pathlib import Path

import pytest

from facestack.accuracy.dataset import LfwFolder, by_identity
from facestack.accuracy.openset import binomial_upper_tail

pytestmark = [pytest.mark.triton, pytest.mark.lfw]

GALLERY_MULTI = 200  # DevTest identities with 2+ images: first image enrolled, second a mated probe
GALLERY_SINGLE = 100  # DevTest identities with 1 image, enrolled (no probe)
NON_MATED = 300  # DevTest identities with 1 image, never enrolled: non-mated probes
WORKERS = 4


def _b64(path: Path) -> dict:
    return {"image_base64": base64.b64encode(path.read_bytes()).decode()}


@pytest.fixture(scope="module")
def gw(spawn):
    """A gateway of its own on Milvus Lite: these tests measure decisions, not the store, and enrolling hundreds
    of subjects through the server-backed shared gateway costs minutes of Strong reads (tests/gateway/test_store.py
    covers the server)."""
    with spawn() as gateway:
        yield gateway


@pytest.fixture(scope="module")
def dev_test(lfw_dir: Path) -> tuple[LfwFolder, dict[str, list[Path]]]:
    folder = LfwFolder.open(lfw_dir)
    assert folder.dev_test is not None
    people = {name: [folder.path(r) for r in refs] for name, refs in by_identity(folder.dev_test.images()).items()}
    return folder, people


def _enrol(client, gallery: str, subject: str, photos: list[Path]) -> None:
    r = client.post(f"/v1/galleries/{gallery}/subjects", json={"subject_id": subject})
    assert r.status_code == 201, r.text
    r = client.post(f"/v1/galleries/{gallery}/subjects/{subject}/faces",
                    json={"image": [_b64(p) for p in photos]})
    # an LFW photo the gates refuse is skipped (their cost is measured in docs/accuracy.md)
    assert r.status_code in (201, 422), r.text


def _identify(client, gallery: str, photo: Path) -> dict | None:
    r = client.post("/v1/identify", json={"probe": _b64(photo), "gallery": gallery, "top_k": 1})
    if r.status_code == 422:
        return None  # refused by a gate: neither a match nor an unknown
    assert r.status_code == 200, r.text
    return r.json()


def test_identify_holds_its_fpir_on_never_enrolled_people(gw, keys, uid, dev_test) -> None:
    _, people = dev_test
    multi = sorted(n for n, p in people.items() if len(p) >= 2)[:GALLERY_MULTI]
    singles = sorted(n for n, p in people.items() if len(p) == 1)
    enrolled_singles, strangers = singles[:GALLERY_SINGLE], singles[GALLERY_SINGLE:GALLERY_SINGLE + NON_MATED]
    gallery = uid("lfw")
    with gw.client(keys["acme"]) as acme:
        assert acme.post("/v1/galleries", json={"gallery_id": gallery}).status_code == 201
        with cf.ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda n: _enrol(acme, gallery, n, people[n][:1]), multi + enrolled_singles))
            mated = list(pool.map(lambda n: _identify(acme, gallery, people[n][1]), multi))
            non_mated = list(pool.map(lambda n: _identify(acme, gallery, people[n][0]), strangers))
        size = acme.get(f"/v1/galleries/{gallery}").json()["templates"]

    assert size >= 0.98 * (GALLERY_MULTI + GALLERY_SINGLE)
    answered = [a for a in non_mated if a is not None]
    assert len(answered) >= 0.97 * NON_MATED
    point = answered[0]["operating_point"]
    assert point["name"] == "fpir_1e-2" and point["fpir"] == 0.01 and point["gallery_size"] == size
    assert all(a["templates_searched"] == size for a in answered)
    false_positives = sum(a["decision"] == "match" for a in answered)
    # observed <= stated within sampling error: this many or more would happen < 1 % of the time at FPIR 1 %
    assert binomial_upper_tail(len(answered), false_positives, point["fpir"]) > 0.01, false_positives

    names = dict(zip(multi, mated, strict=True))
    hits = sum(1 for n, a in names.items() if a is not None and a["decision"] == "match" and a["subject_id"] == n)
    wrong = sum(1 for n, a in names.items() if a is not None and a["decision"] == "match" and a["subject_id"] != n)
    assert hits >= 0.9 * len(multi), (hits, len(multi))
    assert wrong <= 2


def test_identify_by_a_verify_only_key_shows_no_near_misses(gw, keys, uid, dev_test) -> None:
    _, people = dev_test
    names = sorted(n for n, p in people.items() if len(p) == 1)[:6]
    gallery = uid("lfwv")
    with gw.client(keys["acme"]) as acme, gw.client(keys["acme_verify"]) as verifier:
        assert acme.post("/v1/galleries", json={"gallery_id": gallery}).status_code == 201
        for n in names[:5]:
            _enrol(acme, gallery, n, people[n])
        stranger = people[names[5]][0]
        full = acme.post("/v1/identify", json={"probe": _b64(stranger), "gallery": gallery}).json()
        limited = verifier.post("/v1/identify", json={"probe": _b64(stranger), "gallery": gallery}).json()
    assert full["decision"] == limited["decision"] == "unknown"
    assert len(full["candidates"]) == 5  # an admin sees the ranked list
    assert limited["candidates"] == [] and limited["similarity"] is None


def test_verify_against_subjects_with_two_templates(gw, keys, uid, dev_test, img) -> None:
    """Enrol 2 photos per subject, probe with a third: the threshold is raised for best-of-2 and the stated FMR
    is the effective one; genuine probes still match and impostor probes do not."""
    _, people = dev_test
    subjects = sorted(n for n, p in people.items() if len(p) >= 3)[:40]
    gallery = uid("lfw2")
    with gw.client(keys["acme"]) as acme:
        assert acme.post("/v1/galleries", json={"gallery_id": gallery}).status_code == 201
        with cf.ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda n: _enrol(acme, gallery, n, people[n][:2]), subjects))

            def verify(pair: tuple[str, str]) -> dict | None:
                probe_of, subject = pair
                r = acme.post("/v1/verify", json={"probe": _b64(people[probe_of][2]), "gallery": gallery,
                                                  "subject_id": subject})
                return r.json() if r.status_code == 200 else None

            genuine = list(pool.map(verify, [(n, n) for n in subjects]))
            impostor_pairs = [(a, b) for i, a in enumerate(subjects) for b in subjects[i + 1:i + 6]]
            impostor = list(pool.map(verify, impostor_pairs))
        one_to_one = acme.post("/v1/verify", files={"probe": img.photo("obama.jpg"),
                                                    "reference": img.photo("obama2.jpg")}).json()
    two = [g for g in genuine if g is not None and g["subject"]["templates_compared"] == 2]
    assert len(two) >= 0.9 * len(subjects)
    assert all(g["threshold"] > one_to_one["threshold"] for g in two)
    assert all(g["operating_point"]["fmr"] == one_to_one["operating_point"]["fmr"] == 0.001 for g in two)
    assert sum(g["match"] for g in two) >= 0.95 * len(two)
    decided = [i for i in impostor if i is not None]
    assert len(decided) >= 0.9 * len(impostor_pairs)
    # at an effective FMR of 1e-3, more than 2 false matches in ~200 comparisons would happen < 2 % of the time
    assert sum(i["match"] for i in decided) <= 2


@pytest.mark.parametrize("photo", ["Allan_Houston/Allan_Houston_0001.jpg", "George_Clooney/George_Clooney_0002.jpg",
                                   "Franz_Muentefering/Franz_Muentefering_0003.jpg"])
def test_real_profiles_are_refused_by_the_pose_gate(gw, keys, lfw_dir: Path, problem, photo: str) -> None:
    """Faces turned to near-profile (docs/accuracy.md: the pose gate's refusals on LFW, looked at by eye)."""
    data = (lfw_dir / "images" / photo).read_bytes()
    with gw.client(keys["acme"]) as acme:
        body = problem(acme.post("/v1/verify", files={"probe": data, "reference": data}), 422, "low_quality")
        detect = acme.post("/v1/detect", files={"image": data}).json()
    assert body["gates"] == ["pose"] and "turned too far" in body["detail"]
    assert abs(detect["faces"][0]["quality"]["yaw"]) > 50


def test_ordinary_portraits_pass_the_pose_gate(gw, keys, dev_test) -> None:
    """The defect this replaces: portraits turned 15-35 degrees were refused as '|yaw| 90 deg'. Of 200 DevTest
    photos, at most 1 % is refused for pose."""
    _, people = dev_test
    photos = [p[0] for _, p in sorted(people.items())[:200]]
    with gw.client(keys["acme"]) as acme, cf.ThreadPoolExecutor(WORKERS) as pool:
        answers = list(pool.map(lambda p: acme.post("/v1/detect", files={"image": p.read_bytes()}).json(), photos))
    yaws = [abs(a["faces"][0]["quality"]["yaw"]) for a in answers if a["faces"]]
    assert len(yaws) >= 198
    assert sum(y > 50 for y in yaws) <= 2
