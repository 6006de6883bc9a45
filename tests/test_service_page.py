"""The page at `/` of `zsris-rt serve`, in a real headless Chromium (Debian's chromium and
chromedriver, driven by Selenium) against real servers on the demo pack: what it draws is read
back from its canvas and checked pixel by pixel against the API's own answer. Also /segment's
`candidates` field, which the page's "all candidate masks" toggle asks for."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from serve_process import ServeProcess, serving

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "examples" / "scene-2.png"
TEXT = "the big yellow star"
TOKEN = "page-test-token-0123"
CHROMEDRIVER = Path("/usr/bin/chromedriver")
needs_browser = pytest.mark.skipif(
    not CHROMEDRIVER.exists(),
    reason="no /usr/bin/chromedriver: apt-get install -y chromium chromium-driver (.ci/run does)")


# ---------------------------------------------------------------------------- servers

@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with serving() as s:
        yield s


@pytest.fixture(scope="module")
def token_server() -> Iterator[ServeProcess]:
    with serving(token=TOKEN) as s:
        yield s


def post_segment(url: str, fields: dict[str, Any], image: bytes | None = None,
                 path: str = "/segment") -> tuple[int, dict[str, Any]]:
    """A multipart POST; `fields` values may be lists (repeated fields)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, values in fields.items():
        for value in values if isinstance(values, list) else [values]:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
                         f"\r\n\r\n{value}\r\n".encode())
    if image is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                     f'filename="scene.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
                     + image + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url + path, data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def decode(rle: dict[str, Any]) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


@pytest.fixture(scope="module")
def answer(server: ServeProcess) -> dict[str, Any]:
    status, body = post_segment(server.url, {"text": TEXT, "candidates": "true"},
                                SCENE.read_bytes())
    assert status == 200, body
    return body


# ---------------------------------------------------------------------------- the API field

def test_candidates_field(server: ServeProcess, answer: dict[str, Any]) -> None:
    scene = SCENE.read_bytes()
    status, plain = post_segment(server.url, {"text": TEXT}, scene)
    assert status == 200 and "candidates" not in plain  # unchanged without the field
    status, off = post_segment(server.url, {"text": TEXT, "candidates": "false"}, scene)
    assert status == 200 and "candidates" not in off
    cands = answer["candidates"]
    assert len(cands) == answer["num_masks"] == len(answer["results"][0]["scores"])
    assert [c["index"] for c in cands] == list(range(len(cands)))
    for c in cands:
        mask = decode(c["rle"])
        ys, xs = np.nonzero(mask)
        assert c["area"] == mask.sum() > 0
        assert c["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert 0 <= c["predicted_iou"] and 0 <= c["stability"] <= 1
    chosen = answer["results"][0]
    assert cands[chosen["index"]]["rle"] == chosen["rle"]
    # The rest of the answer is the same with and without candidates.
    assert [(r["rle"], r["scores"]) for r in answer["results"]] == \
        [(r["rle"], r["scores"]) for r in plain["results"]]
    # A bad value, and the field on /scenes (no expressions there), are refused.
    status, body = post_segment(server.url, {"text": TEXT, "candidates": "maybe"}, scene)
    assert status == 400 and "candidates" in body["error"]
    status, body = post_segment(server.url, {"candidates": "true"}, scene, path="/scenes")
    assert status == 400 and "candidates" in body["error"]


def test_page_is_served(server: ServeProcess, token_server: ServeProcess) -> None:
    for url in (server.url, token_server.url):  # no token needed for the page and its assets
        for path, kind in (("/", "text/html"), ("/static/page.js", "javascript"),
                           ("/static/page.css", "text/css")):
            with urllib.request.urlopen(url + path, timeout=10) as response:
                assert response.status == 200 and kind in response.headers["content-type"]


# ---------------------------------------------------------------------------- the browser

@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMEDRIVER.exists():
        pytest.skip("no /usr/bin/chromedriver: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1000,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    if Path("/usr/bin/chromium").exists():
        options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver: Any, condition: Any, timeout: float = 45) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def canvas_pixels(driver: Any) -> np.ndarray:
    url = driver.execute_script("return document.getElementById('view').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def open_page(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(url + "/")
    driver.find_element(By.ID, "image").send_keys(str(SCENE))
    box = driver.find_element(By.ID, "texts")
    box.clear()
    box.send_keys(TEXT)


def legend_done(driver: Any) -> bool:
    return driver.execute_script(
        "return document.getElementById('status').textContent.startsWith('Done')")


def severe_logs(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def outside(box: list[int], shape: tuple[int, int], margin: int = 0) -> np.ndarray:
    keep = np.ones(shape, dtype=bool)
    x0, y0, x1, y1 = box
    keep[max(y0 - margin, 0):y1 + margin, max(x0 - margin, 0):x1 + margin] = False
    return keep


@needs_browser
def test_page_segments_and_draws(browser: Any, server: ServeProcess,
                                 answer: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    start = time.perf_counter()
    open_page(browser, server.url)
    # Every asset the page loaded came from the server itself (no CDN).
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith(server.url + "/") for u in loaded), loaded
    browser.find_element(By.ID, "segment").click()
    wait(browser, legend_done)
    assert not browser.find_element(By.ID, "error").is_displayed()

    original = np.asarray(Image.open(SCENE).convert("RGB")).astype(int)
    drawn = canvas_pixels(browser)
    assert drawn.shape == original.shape
    result = answer["results"][0]
    chosen = decode(result["rle"])
    x0, y0, x1, y1 = result["box"]
    # Inside the mask, away from the box's outline (2 px) and its number tag (top left): the
    # image blended half and half with the entry's colour.
    entry = browser.find_element(By.CSS_SELECTOR, "#legend li")
    colour = entry.find_element(By.CLASS_NAME, "swatch").get_attribute("data-colour")
    alpha = float(browser.find_element(By.ID, "view").get_attribute("data-alpha"))
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    inner = chosen.copy()
    inner[:y0 + 3] = inner[y1 - 3:] = False
    inner[:, :x0 + 3] = inner[:, x1 - 3:] = False
    inner[y0:y0 + 18, x0:x0 + 24] = False
    assert inner.sum() > 0.5 * chosen.sum() > 100
    expected = np.round(original * (1 - alpha) + rgb * alpha)
    assert np.abs(drawn[inner] - expected[inner]).max() <= 1
    assert (np.abs(drawn[inner] - original[inner]).sum(axis=1) > 20).mean() > 0.95
    # Outside the box: the original image, exactly.
    far = outside(result["box"], chosen.shape)
    assert far.sum() > 0.5 * far.size
    assert np.array_equal(drawn[far], original[far])
    # The legend: the noun phrase, the score, the box.
    assert entry.find_element(By.CLASS_NAME, "phrase").text == result["noun_phrase"]
    assert entry.find_element(By.CLASS_NAME, "score").text == f"{result['score']:.3f}"
    assert entry.find_element(By.CLASS_NAME, "box").text == \
        "[" + ", ".join(map(str, result["box"])) + ")"

    # The toggle, from the keyboard: every candidate mask, faint, under the chosen one.
    toggle = browser.find_element(By.ID, "candidates")
    toggle.send_keys(Keys.SPACE)
    assert toggle.is_selected()
    wait(browser, lambda d: "all shown" in d.find_element(By.ID, "summary").text
         and legend_done(d))
    with_all = canvas_pixels(browser)
    others = np.zeros_like(chosen)
    for c in answer["candidates"]:
        others |= decode(c["rle"])
    others &= far
    assert others.sum() > 500  # the other shapes' masks, away from the chosen one
    assert np.array_equal(drawn[others], original[others])  # before: untouched
    assert (np.abs(with_all[others] - original[others]).sum(axis=1) > 10).mean() > 0.95
    untouched = far & ~others
    assert np.array_equal(with_all[untouched], original[untouched])
    toggle.send_keys(Keys.SPACE)  # off again: no new request, the first drawing back
    assert np.array_equal(canvas_pixels(browser), drawn)

    # Readable at phone width: nothing scrolls sideways, the canvas fits.
    browser.set_window_size(390, 844)
    try:
        fits = browser.execute_script(
            "const d = document.documentElement, c = document.getElementById('view');"
            "return [d.scrollWidth <= d.clientWidth, c.getBoundingClientRect().right <= "
            "d.clientWidth]")
        assert fits == [True, True]
    finally:
        browser.set_window_size(1000, 900)
    assert severe_logs(browser) == []
    assert time.perf_counter() - start < 40


@needs_browser
def test_page_asks_for_the_token(browser: Any, token_server: ServeProcess) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, token_server.url)
    browser.find_element(By.ID, "segment").click()
    error = browser.find_element(By.ID, "error")
    wait(browser, lambda d: error.is_displayed())
    assert "needs a token" in error.text and "Bearer" in error.text
    token = browser.find_element(By.ID, "token")
    assert browser.switch_to.active_element == token  # focus moved to the token field
    assert browser.find_element(By.ID, "token-box").get_attribute("open") is not None
    assert [m for m in severe_logs(browser) if "401" not in m] == []
    token.send_keys(TOKEN, Keys.ENTER)  # Enter submits the form
    wait(browser, legend_done)
    assert not error.is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "#legend .phrase").text
    assert browser.execute_script("return sessionStorage.getItem('zsris-rt-token')") == TOKEN
    browser.refresh()  # kept for this tab
    assert browser.find_element(By.ID, "token").get_attribute("value") == TOKEN
    assert severe_logs(browser) == []
