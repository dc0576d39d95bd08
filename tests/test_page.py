"""The try-it page at ``/``, driven in headless Chromium by Selenium against a live server.

Needs Debian's ``chromium`` and ``chromium-driver``; skipped without them unless CI is set.
Set SAVE_SCREENSHOTS=1 to write the screenshot of an enhanced file to ``docs/page.png``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.helpers import ROOT, SAMPLES, LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSTHROUGH = "passthrough_model_lite"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and not os.environ.get("CI"),
    reason="chromium and chromedriver are not installed (apt-get install chromium-driver)")

@pytest.fixture(scope="module")
def server_url():
    with LiveServer(NUM_PROCESSES="1") as server:
        yield server.url


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic",
                 # Every host but loopback fails to resolve: the network is off.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1300",
                 # A synthetic microphone (beeps) that needs no permission prompt.
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def open_page(browser, url: str) -> None:
    browser.get(f"{url}/")
    WebDriverWait(browser, 10).until(
        lambda d: Select(d.find_element(By.ID, "model")).options)


def choose(browser, path: Path) -> None:
    """Pick ``path`` in the file input and wait until the page has taken it."""
    browser.find_element(By.ID, "file-input").send_keys(str(path))
    WebDriverWait(browser, 10).until(
        lambda d: path.name in d.find_element(By.ID, "file-info").text
        and d.find_element(By.ID, "enhance").is_enabled())


def enhance(browser, model: str = PASSTHROUGH) -> str:
    """Press Enhance; return the state it ends in (``done`` or ``error``)."""
    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    browser.find_element(By.ID, "enhance").click()
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error"))
    return browser.execute_script("return document.body.dataset.state")


def downloaded(browser) -> bytes:
    """The bytes behind the #download link, fetched inside the page."""
    encoded = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById("download").href).then((r) => r.arrayBuffer())
          .then((buffer) => {
            const bytes = new Uint8Array(buffer);
            let text = "";
            for (let i = 0; i < bytes.length; i += 0x8000) {
              text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            }
            done(btoa(text));
          });
    """)
    return base64.b64decode(encoded)


def api_enhance(url: str, path: Path, **fields: str) -> httpx.Response:
    return httpx.post(f"{url}/enhance", files={"file": (path.name, path.read_bytes())},
                      data={"model": PASSTHROUGH, **fields}, timeout=30)


def test_page_loads_and_requests_only_its_own_origin(server_url, browser):
    open_page(browser, server_url)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Audio enhancement"
    assert browser.execute_script("return document.body.dataset.state") == "idle"
    models = httpx.get(f"{server_url}/models").json()
    select = Select(browser.find_element(By.ID, "model"))
    assert [o.get_attribute("value") for o in select.options] == [m["name"] for m in models]
    default = next(m["name"] for m in models if m["default"])
    assert select.first_selected_option.get_attribute("value") == default
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "nav a")}
    assert links == {f"{server_url}/docs", f"{server_url}/metrics"}
    assert not browser.find_element(By.ID, "live").is_displayed()

    logged = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    requested = {m["params"]["request"]["url"] for m in logged
                 if m["method"] == "Network.requestWillBeSent"}
    requested |= set(browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"))
    assert {f"{server_url}/{path}" for path in (
        "", "static/app.js", "static/style.css", "static/spectrogram-worker.js", "models",
    )} <= requested
    # chrome:// (the browser's own new-tab page), data: and blob: URLs never leave it.
    elsewhere = {u for u in requested if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                 and urlsplit(u).netloc != urlsplit(server_url).netloc}
    assert not elsewhere


def test_enhancing_a_wav_shows_both_players_and_downloads_the_same_format(
        server_url, browser, tmp_path):
    sample = SAMPLES / "speech_stereo_48000.wav"
    open_page(browser, server_url)
    choose(browser, sample)
    assert enhance(browser) == "done", browser.find_element(By.ID, "error").text

    canvases = browser.execute_script("""
        return [...document.querySelectorAll("#player-before canvas, #player-after canvas")]
          .map((canvas) => {
            const {data} = canvas.getContext("2d").getImageData(0, 0, canvas.width,
                                                                canvas.height);
            let differing = 0;  // pixels unlike the top-left one (the background)
            for (let i = 0; i < data.length; i += 4) {
              if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]
                  || data[i + 3] !== data[3]) differing++;
            }
            return [canvas.closest(".player").id, canvas.id, differing / (data.length / 4)];
          });
    """)
    assert {(player, name) for player, name, _ in canvases} == {
        ("player-before", ""), ("player-before", "spectrogram-before"),
        ("player-after", ""), ("player-after", "spectrogram-after")}
    assert all(share > 0.05 for *_, share in canvases), canvases

    link = browser.find_element(By.ID, "download")
    assert link.get_attribute("download") == "enhanced_speech_stereo_48000.wav"
    data = downloaded(browser)
    assert data == api_enhance(server_url, sample).content
    original, result = sf.info(str(sample)), sf.info(io.BytesIO(data))
    assert (result.format, result.subtype, result.samplerate, result.channels,
            result.frames) == (original.format, original.subtype, original.samplerate,
                               original.channels, original.frames)

    # One transport drives both players: play, seek by clicking a track, switch A/B, pause.
    browser.find_element(By.ID, "play").click()
    WebDriverWait(browser, 10).until(
        lambda d: float(d.find_element(By.ID, "seek").get_attribute("value")) > 0.2)
    track = browser.find_element(By.CSS_SELECTOR, "#player-after .track")
    ActionChains(browser).move_to_element_with_offset(
        track, track.size["width"] // 4, 0).click().perform()  # offsets are from the centre
    browser.find_element(By.XPATH, "//label[contains(., 'Original')]").click()
    browser.find_element(By.ID, "play").click()
    heads = browser.execute_script("""return [...document.querySelectorAll(".playhead")]
        .map((head) => parseFloat(head.style.left))""")
    assert len(heads) == 2 and heads[0] == heads[1] and 74 < heads[0] < 80, heads
    assert "listening" in browser.find_element(By.ID, "player-before").get_attribute("class")
    assert browser.find_element(By.ID, "play").get_attribute("aria-pressed") == "false"

    saving = os.environ.get("SAVE_SCREENSHOTS") == "1"
    screenshot = ROOT / "docs" / "page.png" if saving else tmp_path / "page.png"
    screenshot.parent.mkdir(exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000


def test_unsupported_files_show_the_api_detail_and_a_good_file_works_next(
        server_url, browser, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("Shopping list: eggs, milk, and a better microphone.\n")
    fake_m4a = tmp_path / "voice.m4a"
    fake_m4a.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 100)
    open_page(browser, server_url)
    for bad in (notes, fake_m4a):
        answer = api_enhance(server_url, bad)
        assert answer.status_code >= 400
        choose(browser, bad)
        assert enhance(browser) == "error"
        assert answer.json()["detail"] in browser.find_element(By.ID, "error").text

    # Headerless samples: the rate comes from the name (speech_16000.f32), float32 is default.
    good = SAMPLES / "speech_16000.f32"
    choose(browser, good)
    assert browser.find_element(By.NAME, "sample_rate").get_attribute("value") == "16000"
    assert enhance(browser) == "done", browser.find_element(By.ID, "error").text
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert downloaded(browser) == api_enhance(server_url, good, sample_rate="16000").content


def test_a_microphone_recording_is_sent_as_wav(server_url, browser):
    open_page(browser, server_url)
    record = browser.find_element(By.ID, "record")
    record.click()
    WebDriverWait(browser, 10).until(lambda d: "Stop" in record.text)
    time.sleep(1.5)
    record.click()
    WebDriverWait(browser, 10).until(
        lambda d: "recording.wav" in d.find_element(By.ID, "file-info").text)
    assert enhance(browser) == "done", browser.find_element(By.ID, "error").text
    result, rate = sf.read(io.BytesIO(downloaded(browser)), dtype="int16")
    assert result.ndim == 1 and rate in (44100, 48000)
    assert 1.0 < len(result) / rate < 5.0
    assert np.abs(result).max() > 1000  # the fake microphone's beeps, made three times louder
