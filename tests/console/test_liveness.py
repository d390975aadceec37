"""The console's liveness step in a real browser (Debian's chromium) with a fake webcam playing a video made from
registry photos (tests/console/camera.py), against the real stack: a still photo held to the camera is judged
not live; a person turning as asked is live, and the passed challenge binds one verify; a refused camera
permission is explained. The UI must show what the gateway answered (read off the wire), and no request may leave
the gateway's origin.
"""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from facestack.artifacts import photo_bytes
from tests.console.camera import Webcam
from tests.console.test_console import image_file, open_console, tab

pytestmark = pytest.mark.triton
expect.set_options(timeout=60_000)
POSE_WORDS = {"neutral": "as frame 0", "turn_left": "turned to their left", "turn_right": "turned to their right"}


@pytest.fixture(scope="module")
def gateway(console):
    return console  # its liveness settings suit the fake webcam (conftest.LIVENESS)


@pytest.fixture(scope="module")
def webcam(gateway, camera) -> Webcam:
    """The fake camera, framing each photo on the face the gateway detects in it."""
    boxes = {}
    with httpx.Client(base_url=gateway.url, headers={"X-API-Key": gateway.keys["verify"]}, timeout=60) as http:
        for name in ("obama.jpg", "obama2.jpg"):
            answer = http.post("/v1/detect", files={"image": (name, photo_bytes(name))})
            assert answer.status_code == 200, answer.text
            boxes[name] = answer.json()["faces"][0]["box"]
    return Webcam(camera.file, boxes)


@pytest.fixture
def page(camera, gateway) -> Page:
    page = camera.granted.new_page()
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    yield page
    elsewhere = [url for url in page.requested if not url.startswith((gateway.url + "/", "blob:", "data:"))]
    page.close()
    assert page.requested and elsewhere == []  # nothing but the gateway, frames included


def start(page: Page) -> dict:
    """Starts a challenge in the console; the challenge as the gateway issued it."""
    with page.expect_response(lambda r: r.url.endswith("/v1/liveness/challenges")) as issued:
        page.get_by_role("button", name="Start a challenge", exact=True).click()
    assert issued.value.status == 201
    expect(page.locator("#liveness-time")).to_contain_text(re.compile(r"Time left: \d+ s"))
    return issued.value.json()


def answer(page: Page, begin) -> dict:
    """Begins the capture (`begin` presses the button); the gateway's judgement of the frames sent."""
    with page.expect_response(lambda r: "/v1/liveness/challenges/" in r.url and r.url.endswith("/frames")) as judged:
        begin()
    assert judged.value.status == 200, judged.value.text()
    return judged.value.json()


def shows(page: Page, body: dict, sent: int) -> None:
    """The decision, the reason's code and detail, every step and every frame's measured pose, as answered."""
    words = {"live": "Live", "not_live": "Not live", "inconclusive": "Inconclusive: capture again with a new challenge"}
    expect(page.locator("#liveness-decision")).to_have_text(words[body["decision"]])
    expect(page.locator("#liveness-reason .code")).to_have_text(body["reason"])
    expect(page.locator("#liveness-reason")).to_contain_text(body["detail"])
    expect(page.locator("#liveness-rule")).to_contain_text(
        "face mesh" if body["pose_source"] == "mesh" else "five face landmarks")
    steps = page.locator("#liveness-result tr[data-step]")
    expect(steps).to_have_count(len(body["actions"]))
    for row, step in zip(steps.all(), body["steps"], strict=True):
        expect(row.locator("td").nth(2)).to_have_text("done" if step["passed"] else "not done")
        expect(row.locator("td").nth(3)).to_have_text("–" if step["frame"] is None else f"frame {step['frame']}")
    frames = page.locator("#liveness-result tr[data-frame]")
    expect(frames).to_have_count(sent)
    for frame in body["frames"]:
        cells = frames.nth(frame["index"]).locator("td")
        assert float(cells.nth(5).inner_text()) == pytest.approx(frame["delta_yaw"], abs=0.051)  # 1 decimal
        expect(cells.nth(7)).to_have_text(POSE_WORDS[frame["pose"]])
    if body["frame"] is not None:
        expect(frames.nth(body["frame"])).to_have_class("pointed")


def test_a_still_photo_is_not_live(gateway, webcam, page):
    webcam.still()  # one photo held up to the camera: every frame the same picture
    open_console(page, gateway.url, gateway.keys["verify"])
    tab(page, "Try: liveness")
    issued = start(page)
    body = answer(page, lambda: page.get_by_role("button", name="Begin: open the camera", exact=True).click())
    assert body["challenge_id"] == issued["challenge_id"] and body["decision"] == "not_live", body
    assert (body["reason"], body["frame"]) == ("repeated_frame", 1), body  # frame 1 is frame 0's picture again
    shows(page, body, 1 + 3 * len(issued["actions"]))
    expect(page.get_by_role("button", name="Verify with this challenge")).to_have_count(0)
    gateway.screenshot(page, "liveness-still")


def test_turning_as_asked_is_live_and_binds_one_verify(gateway, webcam, page):
    open_console(page, gateway.url, gateway.keys["verify"])
    tab(page, "Try: liveness")
    issued = start(page)
    webcam.performing(issued["actions"])  # the person reads each step as it is shown and does it
    begin = page.get_by_role("button", name="Begin: open the camera", exact=True)
    expect(begin).to_be_focused()
    instruction = page.locator("#liveness-instruction")

    def begin_and_watch() -> None:
        page.keyboard.press("Enter")  # keyboard alone
        steps = issued["instructions"]  # 2 or 3 (a turn may come back: left, right, left)
        for i, text in enumerate(steps, start=1):
            expect(instruction).to_have_text(f"Step {i} of {len(steps)}: {text}, and hold it.")
            if i == 1:
                expect(page.locator("#liveness-video")).to_be_visible()
        gateway.screenshot(page, "liveness-capture")

    body = answer(page, begin_and_watch)
    poses = [(f["delta_yaw"], f["delta_pitch"], f["pose"]) for f in body["frames"]]
    assert (body["decision"], body["reason"]) == ("live", "all_steps"), (issued["actions"], poses)
    shows(page, body, 1 + 3 * len(issued["actions"]))
    steps = page.locator("#liveness-steps li")  # each instruction was shown in turn
    expect(steps).to_have_text(issued["instructions"])
    gateway.screenshot(page, "liveness")

    page.get_by_role("button", name="Verify with this challenge", exact=True).click()
    expect(page.get_by_role("tab", name="Try: verify")).to_have_attribute("aria-selected", "true")
    bound = page.get_by_label("Bind to a passed liveness challenge (id, optional)", exact=True)
    expect(bound).to_have_value(issued["challenge_id"])
    page.get_by_label("First photo", exact=True).set_input_files([image_file("obama.jpg")])
    page.get_by_label("Second photo", exact=True).set_input_files([image_file("obama2.jpg")])
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator("#verify-decision")).to_have_text("Same person")
    expect(page.locator("#verify-liveness-outcome")).to_contain_text(f"{issued['challenge_id']} passed")
    expect(bound).to_have_value("")
    bound.fill(issued["challenge_id"])  # a challenge binds one verify only
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator("#problem")).to_contain_text("HTTP 422 liveness_failed")
    expect(page.locator("#problem .explain")).to_contain_text("already used for a verify")

    page.set_viewport_size({"width": 360, "height": 800})
    tab(page, "Try: liveness")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360, f"the liveness screen is {width} px wide at a 360 px viewport"


def test_a_refused_camera_is_explained(gateway, camera):
    page = camera.denied.new_page()
    sent = []
    page.on("request", lambda request: sent.append(request.url))
    open_console(page, gateway.url, gateway.keys["verify"])
    tab(page, "Try: liveness")
    start(page)
    page.get_by_role("button", name="Begin: open the camera", exact=True).click()
    problem = page.locator("#problem")
    expect(problem).to_contain_text("camera_denied: camera permission denied")
    expect(problem.locator(".explain")).to_contain_text("Allow the camera for this site")
    expect(page.get_by_role("button", name="Begin: open the camera", exact=True)).to_be_enabled()
    assert not [url for url in sent if url.endswith("/frames")]  # nothing was sent
    page.close()


def test_cancel_turns_the_camera_off_and_sends_nothing(gateway, webcam, page):
    webcam.still()
    open_console(page, gateway.url, gateway.keys["verify"])
    tab(page, "Try: liveness")
    issued = start(page)
    page.get_by_role("button", name="Begin: open the camera", exact=True).click()
    step = f"Step 1 of {len(issued['actions'])}: {issued['instructions'][0]}, and hold it."
    expect(page.locator("#liveness-instruction")).to_have_text(step)
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.locator("#liveness-run")).to_be_hidden()
    assert page.evaluate("() => document.getElementById('liveness-video').srcObject") is None  # camera off
    page.wait_for_timeout(3_500)  # past when the step's frames would have been taken and sent
    assert not [url for url in page.requested if url.endswith("/frames")]
    expect(page.get_by_role("button", name="Start a challenge", exact=True)).to_be_focused()


def test_webcam_photo_for_verify(gateway, webcam, page):
    """The photo fields' webcam button shares the liveness step's camera code: a picture taken is verified."""
    webcam.still()
    open_console(page, gateway.url, gateway.keys["verify"])
    page.locator('button.webcam[data-target="verify-probe"]').click()
    expect(page.locator("#webcam-dialog")).to_be_visible()
    page.get_by_role("button", name="Take photo", exact=True).click()
    expect(page.locator("#webcam-dialog")).to_be_hidden()
    taken = page.evaluate("() => [...document.getElementById('verify-probe').files].map(f => [f.name, f.type])")
    assert taken == [["webcam.jpg", "image/jpeg"]]
    page.get_by_label("Second photo", exact=True).set_input_files([image_file("obama2.jpg")])
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator("#verify-decision")).to_have_text("Same person")
    assert page.evaluate("() => document.getElementById('webcam-video').srcObject") is None  # camera off
