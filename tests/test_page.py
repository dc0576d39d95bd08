"""The try-it page at ``/`` and Swagger UI at ``/docs``, driven in headless Chromium by Selenium
against a live server.

Needs Debian's ``chromium`` and ``chromium-driver``; skipped without them unless CI is set.
Every run saves the screenshots the README shows, outside the tracked tree so that tests
leave it clean: ``build/test-artifacts/page.png`` (a file enhanced) and
``build/test-artifacts/live.png`` (live mode streaming), overwritten each run. Those paths are
stable: ``make docs`` copies them to ``docs/page.png`` and ``docs/live.png``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
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
from websockets.sync.client import connect

from tests.audio_builders import write_audio
from tests.helpers import ARTIFACTS, SAMPLES, LiveServer

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


def start_chromium(profile: Path, *flags: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic",
                 # Every host but loopback fails to resolve: the network is off.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                 f"--user-data-dir={profile}", "--window-size=1200,1300",
                 # A synthetic microphone (beeps, unless a flag names a file) that needs no
                 # permission prompt.
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 *flags]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture
def browser(tmp_path):
    driver = start_chromium(tmp_path / "profile")
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


def requested_urls(browser) -> set[str]:
    """Every URL the page asked for so far: requests, WebSockets and resource timings."""
    logged = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    requested = {m["params"]["request"]["url"] for m in logged
                 if m["method"] == "Network.requestWillBeSent"}
    requested |= {m["params"]["url"] for m in logged if m["method"] == "Network.webSocketCreated"}
    requested |= set(browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"))
    return requested


def elsewhere(requested: set[str], url: str) -> set[str]:
    """The network URLs not on ``url``'s host and port (chrome://, data: and blob: URLs never
    leave the browser)."""
    return {u for u in requested if urlsplit(u).scheme in ("http", "https", "ws", "wss")
            and urlsplit(u).netloc != urlsplit(url).netloc}


def screenshot(browser, name: str) -> Path:
    """Save the page to ``build/test-artifacts/NAME``, overwriting (``make docs`` copies it
    to ``docs/NAME``, which the README shows)."""
    path = ARTIFACTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def test_page_loads_and_requests_only_its_own_origin(server_url, browser):
    open_page(browser, server_url)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Audio enhancement"
    assert browser.execute_script("return document.body.dataset.state") == "idle"
    models = httpx.get(f"{server_url}/models").json()
    select = Select(browser.find_element(By.ID, "model"))
    assert [o.get_attribute("value") for o in select.options] == [m["name"] for m in models]
    default = next(m for m in models if m["default"])
    assert select.first_selected_option.get_attribute("value") == default["name"]
    assert browser.find_element(By.ID, "model-info").text.endswith(
        f"{default['sample_rate'] // 1000} kHz model · {default['latency_ms']:g} ms latency in "
        "a stream")
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "nav a")}
    assert links == {f"{server_url}/docs", f"{server_url}/metrics"}
    assert browser.find_element(By.ID, "live").is_displayed()
    assert browser.execute_script("return document.body.dataset.live") == "off"
    assert browser.find_element(By.ID, "live-start").is_enabled()
    assert not browser.find_element(By.ID, "live-stop").is_enabled()

    requested = requested_urls(browser)
    assert {f"{server_url}/{path}" for path in (
        "", "static/app.js", "static/style.css", "static/spectrogram-worker.js", "models",
    )} <= requested
    assert not elsewhere(requested, server_url)


def test_enhancing_a_wav_shows_both_players_and_downloads_the_same_format(
        server_url, browser):
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

    # The README's picture: the denoiser on the noisy sample.
    choose(browser, SAMPLES / "noisy_speech_16000.wav")
    assert enhance(browser, "denoiser_48k") == "done", browser.find_element(By.ID, "error").text
    browser.find_element(By.XPATH, "//label[contains(., 'Enhanced')]").click()
    screenshot(browser, "page.png")


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


# ------------------------------------------------------------------ live mode

ENVELOPE_S = 0.02  # RMS envelopes in 20 ms windows


def envelope(samples: np.ndarray, rate: int) -> np.ndarray:
    window = round(ENVELOPE_S * rate)
    usable = samples[:len(samples) // window * window].astype(np.float64)
    return np.sqrt((usable.reshape(-1, window) ** 2).mean(axis=1))


def best_correlation(received: np.ndarray, source: np.ndarray) -> tuple[float, int]:
    """The highest Pearson correlation of ``received`` with a same-length stretch of
    ``source`` (the looped file), and the lag it was found at, in windows."""
    n = len(received)
    scores = [np.corrcoef(received, source[lag:lag + n])[0, 1]
              for lag in range(len(source) - n + 1)]
    return float(np.max(scores)), int(np.argmax(scores))


@pytest.fixture
def microphone_file(tmp_path):
    """4 s of the speech sample as the 48 kHz mono int16 WAV Chromium's fake microphone
    plays (looping); returns its path and samples."""
    speech, rate = sf.read(SAMPLES / "speech_48000.wav", dtype="float32")
    path = tmp_path / "microphone.wav"
    write_audio(path, speech[:4 * rate], rate, subtype="PCM_16")
    samples, _ = sf.read(path, dtype="float32")
    return path, samples, rate


def live_state(browser) -> str:
    return browser.execute_script("return document.body.dataset.live")


def test_live_mode_streams_the_microphone_and_plays_back_the_enhanced_audio(
        server_url, tmp_path, microphone_file):
    path, source, source_rate = microphone_file
    browser = start_chromium(tmp_path / "profile", f"--use-file-for-fake-audio-capture={path}")
    try:
        open_page(browser, server_url)
        start, stop = (browser.find_element(By.ID, i) for i in ("live-start", "live-stop"))

        # A model the service does not serve: the close code's reason shows on the page.
        browser.execute_script("""const select = document.getElementById("model");
            select.add(new Option("no_such_model", "no_such_model", true, true));""")
        start.click()
        WebDriverWait(browser, 10).until(lambda d: live_state(d) == "error")
        error = browser.find_element(By.ID, "error").text
        assert "no_such_model" in error and "4404" in error, error
        assert start.is_enabled() and not stop.is_enabled()

        Select(browser.find_element(By.ID, "model")).select_by_value(PASSTHROUGH)
        start.click()
        WebDriverWait(browser, 10).until(lambda d: live_state(d) == "on")
        assert not browser.find_element(By.ID, "error").is_displayed()
        assert not start.is_enabled() and stop.is_enabled()
        time.sleep(1.5)
        # Bypass switches what is heard; the stream carries on, on the same connection.
        bypass = browser.find_element(By.ID, "live-bypass")
        bypass.click()
        received = browser.execute_script("return window.liveStats.samplesReceived")
        time.sleep(0.5)
        bypass.click()
        time.sleep(1.0)
        assert live_state(browser) == "on"
        stats = browser.execute_script("return window.liveStats")
        assert stats["samplesReceived"] > received > 0
        assert 0 < stats["latencyMs"] < 1000, stats
        assert re.fullmatch(r"\d+ ms", browser.find_element(By.ID, "live-latency").text)
        screenshot(browser, "live.png")

        stop.click()
        WebDriverWait(browser, 10).until(lambda d: live_state(d) != "on")
        assert live_state(browser) == "off", browser.find_element(By.ID, "error").text
        summary, stats, rate, encoded = browser.execute_script("""
            const chunks = window.liveReceived;
            const all = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
            let at = 0;
            for (const chunk of chunks) { all.set(chunk, at); at += chunk.length; }
            const bytes = new Uint8Array(all.buffer);
            let text = "";
            for (let i = 0; i < bytes.length; i += 0x8000) {
              text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            }
            return [window.liveSummary, window.liveStats, window.liveSampleRate, btoa(text)];
        """)
        shown = browser.find_element(By.ID, "live-server").text
        requested = requested_urls(browser)
    finally:
        browser.quit()

    # Exactly as many samples came back as were sent, and the page saw them all.
    assert summary["type"] == "summary"
    assert summary["samples_in"] == summary["samples_out"] == stats["samplesSent"] \
        == stats["samplesReceived"]
    assert 2.5 < stats["samplesSent"] / rate < 6, stats
    assert {"p50", "p99"} <= set(summary["latency_ms"])
    p50, p99 = (summary["latency_ms"][q] for q in ("p50", "p99"))
    # The page shows them to 0.1 ms (JavaScript's toFixed rounds an exact half up, Python's
    # format to even: 1.25 shows as 1.3, formats as 1.2).
    numbers = re.fullmatch(r"(\d+\.\d) / (\d+\.\d) ms", shown)
    assert numbers, shown
    assert all(abs(float(text) - value) <= 0.05 + 1e-9
               for text, value in zip(numbers.groups(), (p50, p99), strict=True)), (shown, p50, p99)

    # What came back is the microphone (the file, looping) tripled: its envelope follows
    # the file's, at some lag (where in its loop the file was when streaming began).
    received = np.frombuffer(base64.b64decode(encoded), "<f4")
    assert len(received) == stats["samplesReceived"]
    got = envelope(received, rate)
    looped = np.tile(envelope(source, source_rate), 3)
    correlation, lag = best_correlation(got, looped)
    print(f"live mode: {len(received) / rate:.2f} s at {rate} Hz back; envelope correlation "
          f"{correlation:.3f} at lag {lag * ENVELOPE_S:.2f} s; round trip "
          f"{stats['latencyMs']:.1f} ms; service p50/p99 {p50}/{p99} ms")
    assert correlation > 0.8, correlation
    # The passthrough triples: the file's peak, 0.5, comes back near 1.5.
    assert 1.2 < np.abs(received).max() < 1.8, np.abs(received).max()

    sockets = {u for u in requested if urlsplit(u).scheme in ("ws", "wss")}
    assert len(sockets) == 2  # the refused model, then one stream (bypass did not reconnect)
    assert all(urlsplit(u).path == "/enhance/stream" for u in sockets)
    assert not elsewhere(requested, server_url)


def test_live_and_enhance_send_the_api_key_and_show_refusals(tmp_path):
    """A keyed service holding one stream at most: a missing key (4401) and a full service
    (1013) show their reasons; with the key typed in, streaming and enhancing work."""
    key = "open-sesame"
    with LiveServer(NUM_PROCESSES="1", API_KEY=key, MAX_STREAMS="1") as server:
        browser = start_chromium(tmp_path / "profile")
        try:
            open_page(browser, server.url)
            start = browser.find_element(By.ID, "live-start")
            start.click()
            WebDriverWait(browser, 10).until(lambda d: live_state(d) == "error")
            error = browser.find_element(By.ID, "error").text
            assert "4401" in error and "API key field" in error, error

            browser.find_element(By.ID, "api-key").send_keys(key)
            stream_url = server.url.replace("http", "ws", 1) + "/enhance/stream?sample_rate=48000"
            with connect(stream_url, additional_headers={"X-API-Key": key}) as other:
                assert json.loads(other.recv(timeout=10))["type"] == "ready"
                start.click()  # the service's one stream is taken
                WebDriverWait(browser, 10).until(
                    lambda d: live_state(d) == "error"
                    and "1013" in d.find_element(By.ID, "error").text)
                assert "MAX_STREAMS" in browser.find_element(By.ID, "error").text

            start.click()
            WebDriverWait(browser, 10).until(lambda d: live_state(d) == "on")
            WebDriverWait(browser, 10).until(
                lambda d: d.execute_script("return window.liveStats.samplesReceived") > 0)
            browser.find_element(By.ID, "live-stop").click()
            WebDriverWait(browser, 10).until(lambda d: live_state(d) != "on")
            assert live_state(browser) == "off", browser.find_element(By.ID, "error").text
            summary = browser.execute_script("return window.liveSummary")
            assert summary["samples_in"] == summary["samples_out"] > 0

            choose(browser, SAMPLES / "speech_16000.f32")
            assert enhance(browser) == "done", browser.find_element(By.ID, "error").text
            browser.find_element(By.ID, "api-key").send_keys("-wrong")
            assert enhance(browser) == "error"
            assert "(HTTP 401)" in browser.find_element(By.ID, "error").text
        finally:
            browser.quit()


# ------------------------------------------------------------------ Swagger UI


def test_swagger_executes_enhance_with_the_form_as_it_opens(server_url, browser):
    sample = SAMPLES / "speech_stereo_48000.wav"
    browser.get(f"{server_url}/docs#/enhance/enhance")  # deep link: the operation opens
    # The operation's block appears before the deep link has opened it: wait for its form.
    file_input = WebDriverWait(browser, 15).until(lambda d: d.find_element(
        By.CSS_SELECTOR, "#operations-enhance-enhance input[type=file]"))
    operation = browser.find_element(By.ID, "operations-enhance-enhance")
    file_input.send_keys(str(sample))
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = WebDriverWait(browser, 30).until(lambda d: operation.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"))
    assert status.text == "200"
    link = operation.find_element(By.LINK_TEXT, "Download file")
    assert link.get_attribute("download") == "enhanced_speech_stereo_48000.wav"
    digest = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then((r) => r.arrayBuffer())
          .then((buffer) => crypto.subtle.digest("SHA-256", buffer))
          .then((hash) => done([...new Uint8Array(hash)]
            .map((b) => b.toString(16).padStart(2, "0")).join("")));
    """, link.get_attribute("href"))
    assert digest == hashlib.sha256(api_enhance(server_url, sample).content).hexdigest()
    assert not elsewhere(requested_urls(browser), server_url)


def test_a_long_file_goes_as_a_job_with_its_progress_and_a_short_one_as_before(
        browser, tmp_path):
    """Past the page's threshold (here ?job_seconds=2) a file is sent to POST /jobs, its
    progress shown from the job, the result played as for /enhance; a shorter one is not."""
    rng = np.random.default_rng(35)
    long, short = tmp_path / "long.wav", tmp_path / "short.wav"
    sf.write(long, rng.uniform(-0.2, 0.2, (3 * 48_000, 2)), 48_000, subtype="PCM_16")
    sf.write(short, rng.uniform(-0.2, 0.2, 48_000), 48_000, subtype="PCM_16")
    with LiveServer(NUM_PROCESSES="1", JOBS_DIR=str(tmp_path / "jobs")) as server:
        browser.get(f"{server.url}/?job_seconds=2")
        WebDriverWait(browser, 10).until(
            lambda d: Select(d.find_element(By.ID, "model")).options)
        browser.execute_script("""
            window.seen = [];
            new MutationObserver(() => window.seen.push(
                document.getElementById("status").textContent)).observe(
                document.getElementById("status"), {childList: true, characterData: true,
                                                   subtree: true});""")
        choose(browser, long)
        assert enhance(browser) == "done", browser.find_element(By.ID, "error").text
        seen = browser.execute_script("return window.seen")
        assert any(re.fullmatch(r"(Queued|Enhancing) as a job… \d+%.*", s) for s in seen), seen
        status = browser.find_element(By.ID, "status").text
        assert re.fullmatch(r"Enhanced 0:03 of audio as a job with passthrough_model_lite "
                            r"in \d+\.\d\d s\.", status), status
        progress = browser.find_element(By.ID, "job-progress")
        assert progress.is_displayed() and progress.get_attribute("value") == "1"
        assert downloaded(browser) == api_enhance(server.url, long).content
        requested = {urlsplit(u).path for u in requested_urls(browser)}
        assert "/jobs" in requested and "/enhance" not in requested

        browser.execute_script("performance.clearResourceTimings()")  # the short one's next
        choose(browser, short)
        assert enhance(browser) == "done", browser.find_element(By.ID, "error").text
        assert "as a job" not in browser.find_element(By.ID, "status").text
        assert not browser.find_element(By.ID, "job-progress").is_displayed()
        assert downloaded(browser) == api_enhance(server.url, short).content
        requested = {urlsplit(u).path for u in requested_urls(browser)}
        assert "/enhance" in requested and "/jobs" not in requested
