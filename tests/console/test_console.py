"""The web console in a real browser (Debian's chromium) against the real stack: enrol two subjects,
identify one, verify a pair, detect a group, erase a subject and read the receipt, and see every kind of
error explained. Each screen is saved as a screenshot (docs/console/*.jpg when FACESTACK_CONSOLE_SHOTS is set).
"""

from __future__ import annotations

import io
import re
import uuid

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from facestack.artifacts import photo_bytes
from facestack.client import Client, NotFound

pytestmark = pytest.mark.triton
expect.set_options(timeout=60_000)


def image_file(name: str) -> dict:
    return {"name": name, "mimeType": "image/jpeg", "buffer": photo_bytes(name)}


def blank_file() -> dict:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(out, "JPEG")
    return {"name": "wall.jpg", "mimeType": "image/jpeg", "buffer": out.getvalue()}


@pytest.fixture
def page(browser) -> Page:
    page = browser.new_page()
    yield page
    page.close()


def open_console(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/console/")
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Use key", exact=True).click()
    expect(page.locator("#key-state")).to_have_text("Key set for this tab.")


def tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_console_flow(console, page):
    gallery = f"console-{uuid.uuid4().hex[:6]}"
    fs = Client(console.url, console.keys["admin"])
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_console(page, console.url, console.keys["admin"])
    stored = page.evaluate("() => [sessionStorage.getItem('facestack.apiKey'), localStorage.length, document.cookie]")
    assert stored == [console.keys["admin"], 0, ""]  # the key is kept in this tab's session storage only

    # Operate: a gallery, two subjects, enrolment
    tab(page, "Operate: galleries")
    page.get_by_label("New gallery id", exact=True).fill(gallery)
    page.get_by_role("button", name="Create gallery", exact=True).click()
    row = page.locator(f'tr[data-gallery="{gallery}"]')
    expect(row).to_contain_text("sface")
    row.get_by_role("button", name=f"Subjects of gallery {gallery}", exact=True).click()
    expect(page.get_by_role("tab", name="Operate: subjects")).to_have_attribute("aria-selected", "true")
    for subject, name in (("obama", "Barack Obama"), ("biden", "Joe Biden")):
        page.get_by_label("Subject id", exact=True).fill(subject)
        page.get_by_label("Subject name", exact=True).fill(name)
        page.get_by_role("button", name="Create subject", exact=True).click()
        expect(page.locator(f'tr[data-subject="{subject}"]')).to_contain_text(name)
    page.get_by_label("Enrol for subject", exact=True).select_option("obama")
    photos = page.get_by_label("Photos (one or many)", exact=True)
    photos.set_input_files([image_file("obama.jpg"), image_file("obama2.jpg")])
    page.get_by_role("button", name="Enrol", exact=True).click()
    expect(page.locator("#enrol-outcome")).to_have_text("Enrolled 2 photos for obama")
    expect(page.locator('tr[data-subject="obama"] td').nth(2)).to_have_text("2")
    page.get_by_label("Enrol for subject", exact=True).select_option("biden")
    page.get_by_label("Photos (one or many)", exact=True).set_input_files([image_file("biden.jpg")])
    page.get_by_role("button", name="Enrol", exact=True).click()
    expect(page.locator("#enrol-outcome")).to_have_text("Enrolled 1 photo for biden")
    assert fs.get_gallery(gallery)["templates"] == 3

    # A photo with no face: per-photo errors in words, the problem's code and detail; nothing enrolled
    page.get_by_label("Photos (one or many)", exact=True).set_input_files([image_file("obama3.jpg"), blank_file()])
    page.get_by_role("button", name="Enrol", exact=True).click()
    expect(page.locator("#enrol-outcome")).to_have_text("Nothing was enrolled")
    expect(page.locator("#enrol-result ul.errors")).to_contain_text("wall.jpg — no_face:")
    problem = page.locator("#problem")
    expect(problem).to_contain_text("HTTP 422 no_face")
    expect(problem).to_contain_text("1 of 2 images failed, nothing was enrolled")
    assert fs.get_subject(gallery, "biden")["faces"] == 1
    console.screenshot(page, "enrol-error")

    # Edit a subject's name and metadata
    page.get_by_role("button", name="Edit subject obama", exact=True).click()
    page.get_by_label("Subject name", exact=True).fill("Barack H. Obama")
    page.get_by_label("Subject metadata (JSON object, optional)", exact=True).fill('{"term": 44}')
    page.get_by_role("button", name="Save changes", exact=True).click()
    expect(page.locator('tr[data-subject="obama"]')).to_contain_text("Barack H. Obama")
    assert fs.get_subject(gallery, "obama")["metadata"] == {"term": 44}
    console.screenshot(page, "subjects")

    # Try: identify one of them
    tab(page, "Try: identify")
    page.get_by_label("Photo of the person to identify", exact=True).set_input_files([image_file("obama3.jpg")])
    page.get_by_label("Gallery to search", exact=True).fill(gallery)
    page.get_by_role("button", name="Identify", exact=True).click()
    expect(page.locator("#identify-decision")).to_have_text("Match: obama")
    candidates = page.locator("#identify-result tbody tr")
    expect(candidates).to_have_count(2)
    expect(candidates.nth(0)).to_contain_text("at or above threshold")
    expect(candidates.nth(1)).to_contain_text("biden")
    expect(page.locator("#identify-result .point-words")).to_contain_text(
        re.compile(r"about 1 in [\d,]+ people who are not enrolled would be named"))
    expect(page.locator("#identify-result")).to_contain_text("3 templates in gallery")
    console.screenshot(page, "identify")

    # Try: verify a pair (boxes and landmarks drawn, similarity against the threshold, the point in words)
    tab(page, "Try: verify")
    page.get_by_label("First photo", exact=True).set_input_files([image_file("obama.jpg")])
    page.get_by_label("Second photo", exact=True).set_input_files([image_file("obama2.jpg")])
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator("#verify-decision")).to_have_text("Same person")
    expect(page.locator("#verify-result")).to_contain_text(re.compile(r"Similarity 0\.\d+ ≥ threshold 0\.\d+"))
    expect(page.locator("#verify-result .point-words")).to_contain_text(
        "about 1 in 1,000 different people would match at this setting")
    pictures = page.locator("#verify-result canvas[data-faces='1']")
    expect(pictures).to_have_count(2)
    assert pictures.nth(0).evaluate("c => c.width") > 100  # the photo was drawn at its own size
    console.screenshot(page, "verify")
    page.get_by_label("Second photo", exact=True).set_input_files([image_file("biden.jpg")])
    page.get_by_label("Operating point", exact=True).select_option("fmr_1e-4")
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.locator("#verify-decision")).to_have_text("Not the same person")
    expect(page.locator("#verify-result .point-words")).to_contain_text("about 1 in 10,000 different people")

    # Try: detect on a group photo, every face with its quality signals
    tab(page, "Try: detect")
    page.get_by_label("Photo to find faces in", exact=True).set_input_files([image_file("sample1.jpg")])
    page.get_by_role("button", name="Detect", exact=True).click()
    expect(page.locator("#detect-count")).to_have_text(re.compile(r"\d+ faces found"))
    found = int(page.locator("#detect-count").inner_text().split()[0])
    assert found >= 2
    expect(page.locator("#detect-result tbody tr")).to_have_count(found)
    expect(page.locator(f"#detect-result canvas[data-faces='{found}']")).to_have_count(1)
    console.screenshot(page, "detect")

    # Operate: erase a subject and read the receipt
    tab(page, "Operate: subjects")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Erase subject biden", exact=True).click()
    receipt = page.locator("#receipt")
    expect(receipt).to_contain_text(f"Erased subject biden of gallery {gallery}.")
    expect(receipt.locator("dd").nth(4)).to_have_text("1")  # templates deleted
    expect(receipt.locator("dd").nth(5)).to_have_text("0")  # templates remaining
    expect(page.locator('tr[data-subject="biden"]')).to_have_count(0)
    with pytest.raises(NotFound):
        fs.get_subject(gallery, "biden")
    console.screenshot(page, "erase-receipt")

    tab(page, "Operate: galleries")
    expect(page.locator(f'tr[data-gallery="{gallery}"] td').nth(2)).to_have_text("1")  # subjects
    expect(page.locator(f'tr[data-gallery="{gallery}"] td').nth(3)).to_have_text("2")  # templates
    console.screenshot(page, "galleries")
    fs.close()
    elsewhere = [url for url in requested if not url.startswith((console.url + "/", "blob:", "data:"))]
    assert requested and elsewhere == []  # nothing but the gateway: no CDN, works air-gapped


def test_served_from_the_package(console):
    with httpx.Client(base_url=console.url, follow_redirects=True) as http:
        page = http.get("/console")  # redirected to /console/, no key needed
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for asset, kind in (("console.js", "javascript"), ("console.css", "text/css")):
            answer = http.get(f"/console/{asset}")
            assert answer.status_code == 200 and kind in answer.headers["content-type"]
        missing = http.get("/console/nothing.js")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_401_and_403_are_explained(console, page):
    open_console(page, console.url, "fs_wrong-key")
    tab(page, "Operate: galleries")
    expect(page.locator("#problem")).to_contain_text("HTTP 401 unauthorized")
    expect(page.locator("#problem .explain")).to_contain_text("The API key is missing or not recognised")
    open_console(page, console.url, console.keys["verify"])
    tab(page, "Operate: galleries")
    expect(page.locator("#problem")).to_contain_text("HTTP 403 forbidden")
    expect(page.locator("#problem .explain")).to_contain_text("lacks the scope")
    console.screenshot(page, "forbidden")


def test_429_and_503_are_explained(limited, page):
    open_console(page, limited.url, limited.keys["verify"])
    tab(page, "Try: detect")
    page.get_by_label("Photo to find faces in", exact=True).set_input_files([image_file("obama.jpg")])
    page.get_by_role("button", name="Detect", exact=True).click()  # the key's one token; Triton is down
    expect(page.locator("#problem")).to_contain_text("HTTP 503 backend_unavailable")
    expect(page.locator("#problem .explain")).to_contain_text("try again in 7 s (Retry-After)")
    page.get_by_role("button", name="Detect", exact=True).click()  # within 5 s: over the key's rate
    expect(page.locator("#problem")).to_contain_text("HTTP 429 rate_limited")
    expect(page.locator("#problem .explain")).to_contain_text(re.compile(r"try again in \d s \(Retry-After\)"))


def test_labels_keyboard_and_360_px(console, page):
    open_console(page, console.url, console.keys["admin"])
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.outerHTML)""")
    assert unlabelled == []

    # tabs: arrow keys, Home and End move the selection and the focus
    page.get_by_role("tab", name="Try: verify").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Try: detect")).to_be_focused()
    expect(page.locator("#panel-detect")).to_be_visible()
    page.keyboard.press("End")
    expect(page.get_by_role("tab", name="Operate: subjects")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Home")
    expect(page.locator("#panel-verify")).to_be_visible()
    # a form filled and sent from the keyboard alone
    page.get_by_role("tab", name="Operate: galleries").click()
    gallery = f"kbd-{uuid.uuid4().hex[:6]}"
    page.get_by_label("New gallery id", exact=True).focus()
    page.keyboard.type(gallery)
    page.keyboard.press("Enter")
    expect(page.locator(f'tr[data-gallery="{gallery}"]')).to_be_visible()

    page.set_viewport_size({"width": 360, "height": 800})
    for name in ("Try: verify", "Try: detect", "Try: identify", "Try: liveness", "Operate: galleries",
                 "Operate: subjects"):
        tab(page, name)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, f"{name}: the page is {width} px wide at a 360 px viewport"
    tab(page, "Try: verify")
    console.screenshot(page, "narrow-360px")
