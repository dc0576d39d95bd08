"""Tests of the HTTP API: through TestClient (lifespan running) and against a real server.

Run with ``pytest test_api.py`` or ``python test_api.py``.
"""

import asyncio
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from enhance_file import AudioEnhancer
from enhancer.audio.encode import encode_audio
from enhancer.audio.formats import AudioFormat
from main import create_app
from service.settings import Settings
from tests.audio_builders import audio_bytes
from tests.helpers import (
    PASSTHROUGH,
    ROOT,
    SAMPLES,
    LiveServer,
    children_of,
    random_audio,
    raw,
    wait_until_gone,
)


def post(client, data: bytes | None, sample_rate: int | None = 48000, name: str = "a.raw",
         **fields):
    files = None if data is None else {"file": (name, data, "application/octet-stream")}
    form = {k: str(v) for k, v in fields.items()}
    if sample_rate is not None:
        form["sample_rate"] = str(sample_rate)
    return client.post("/enhance", files=files, data=form)


def app_with(**overrides) -> TestClient:
    """The app on two workers, serving the ×3 passthrough by default so answers are exact."""
    overrides = {"NUM_PROCESSES": 2, "TF_MODEL_PATH": PASSTHROUGH, **overrides}
    return TestClient(create_app(Settings(**overrides)))


@pytest.fixture(scope="module")
def client():
    with app_with() as test_client:
        yield test_client


def assert_valid_request_succeeds(client) -> None:
    audio = random_audio(1000, seed=99)
    response = post(client, raw(audio))
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), audio * 3)


# ------------------------------------------------------------------ through TestClient


def test_enhance_returns_three_times_the_samples_with_headers(client):
    audio = np.fromfile(SAMPLES / "speech_48000.f32", dtype="<f4")
    response = post(client, audio.tobytes(), name="speech_48000.f32")
    assert response.status_code == 200
    np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), audio * 3)
    headers = response.headers
    assert headers["content-type"] == "application/octet-stream"
    assert 'filename="enhanced_speech_48000.f32"' in headers["content-disposition"]
    assert headers["x-sample-rate"] == "48000"
    assert headers["x-sample-count"] == str(len(audio))
    assert headers["x-channels"] == "1"
    assert float(headers["x-processing-time"]) > 0


def test_other_rate_keeps_length_and_rate(client):
    audio = np.fromfile(SAMPLES / "speech_16000.f32", dtype="<f4")
    response = post(client, audio.tobytes(), sample_rate=16000)
    assert response.status_code == 200
    out = np.frombuffer(response.content, "<f4")
    assert out.shape == audio.shape and response.headers["x-sample-rate"] == "16000"
    core = slice(1000, -1000)
    assert np.sqrt(np.mean((out[core] - 3 * audio[core]) ** 2)) < 0.01


@pytest.mark.parametrize("data, fields, status, detail", [
    (None, {}, 422, "file: Field required"),
    (b"", {}, 422, "the audio is empty"),
    (b"\x00" * 7, {}, 422, "7 bytes is not a whole number of f32le samples"),
    (raw(np.array([0.5, np.nan, 0.1])), {}, 422, "1 NaN or infinite samples"),
    (raw(np.array([np.inf, -np.inf])), {}, 422, "2 NaN or infinite samples"),
    (raw(np.zeros(8)), {"sample_rate": None}, 422, "headerless f32le audio needs a sample rate"),
    (raw(np.zeros(8)), {"sample_rate": 7999}, 422,
     "sample_rate: Input should be greater than or equal to 8000"),
    (raw(np.zeros(8)), {"sample_rate": 192001}, 422,
     "sample_rate: Input should be less than or equal to 192000"),
    (raw(np.zeros(8)), {"sample_rate": "fast"}, 422, "sample_rate: Input should be a valid int"),
    (raw(np.zeros(8)), {"format": "mp3"}, 422, "format: Input should be 'f32le' or 's16le'"),
])
def test_bad_requests_get_their_status_and_detail(client, data, fields, status, detail):
    fields = {"sample_rate": 48000, **fields}
    response = post(client, data, **fields)
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert_valid_request_succeeds(client)


RAW = {"content-type": "application/octet-stream"}
# The shipped models, as GET /models lists them: the default first, then by file name.
SHIPPED = ["passthrough_model_lite", "deepfilternet3", "denoiser_48k"]


def _form(*extra: tuple[str, object]) -> list:
    """A multipart form's parts: a file, the rate, and ``extra``."""
    return [("file", ("a.raw", raw(np.zeros(8)), "application/octet-stream")),
            ("sample_rate", (None, "48000")), *extra]


@pytest.mark.parametrize("url, parts, detail", [
    ("/enhance?model=nope", _form(), "query parameter 'model': with a form upload the "
                                     "options are form fields"),
    ("/enhance", _form(("file", ("b.raw", raw(np.ones(8)), "application/octet-stream"))),
     "form field 'file' is given 2 times; give it once"),
    ("/enhance", _form(("sample_rate", (None, "16000"))),
     "form field 'sample_rate' is given 2 times"),
    ("/enhance", _form(("smaple_rate", (None, "16000"))), "unknown form field 'smaple_rate'"),
    ("/enhance?sample_rate=48000&sample_rate=16000", None,
     "query parameter 'sample_rate' is given 2 times"),
    ("/enhance?sample_rate=48000&modle=x", None, "unknown query parameter 'modle'"),
])
def test_a_parameter_that_would_be_ignored_is_refused_naming_it(client, url, parts, detail):
    if parts is None:  # the audio as the raw body, the options in the query
        response = client.post(url, content=raw(np.zeros(8)), headers=RAW)
    else:
        response = client.post(url, files=parts)
    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]


@pytest.mark.parametrize("name, value", [
    ("sample_rate", "1_6000"), ("sample_rate", " 16000 "), ("sample_rate", "16000.0"),
    ("sample_rate", "+16000"), ("sample_rate", "\u0661\u0666\u0660\u0660\u0660"),
    ("sample_rate", "\uff11\uff16\uff10\uff10\uff10"),  # fullwidth
    ("atten_lim_db", "1_0"), ("atten_lim_db", " 6"), ("atten_lim_db", "nan"),
    ("atten_lim_db", "inf"), ("atten_lim_db", "\u0666"),
])
def test_numbers_are_read_in_ascii_digits_only(client, name, value):
    fields = {"sample_rate": "16000", name: value}
    by_form = client.post("/enhance", files={"file": ("a.raw", raw(np.zeros(8)))}, data=fields)
    by_query = client.post("/enhance", params=fields, content=raw(np.zeros(8)), headers=RAW)
    for response in (by_form, by_query):
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith(f"{name}: Input should be a valid "), (
            response.json())
    for good in ({"sample_rate": "16000"}, {"sample_rate": "16000", "atten_lim_db": "2.5"}):
        response = client.post("/enhance", params=good, content=raw(np.zeros(8)), headers=RAW)
        assert response.status_code == 200, response.text


def test_upload_over_the_limit_is_refused_by_content_length():
    with app_with(MAX_UPLOAD_MB=0.01) as small:
        response = post(small, raw(np.zeros(5000)))  # 20 kB
        assert response.status_code == 413
        assert response.json()["detail"] == "the upload is larger than the limit of 0.01 MB"
        assert_valid_request_succeeds(small)


def test_timeout_gives_504_and_the_service_goes_on():
    with app_with(REQUEST_TIMEOUT_S=0.001) as hurried:
        response = post(hurried, raw(random_audio(5_000_000, seed=1)))
        assert response.status_code == 504
        assert response.json()["detail"] == "enhancing took longer than 0.001 s"
    with app_with() as client:
        assert_valid_request_succeeds(client)


def test_worker_crash_gives_503_and_the_service_goes_on():
    with app_with() as client:
        enhancer = client.app.state.models.default
        victim = enhancer.worker_pids[0]
        os.kill(victim, signal.SIGSTOP)  # so it surely holds part of the request
        killer = threading.Timer(0.5, os.kill, (victim, signal.SIGKILL))
        killer.start()
        response = post(client, raw(random_audio(3_000_000, seed=2)))
        killer.join()
        assert response.status_code == 503
        assert f"worker process {victim} was killed by SIGKILL" in response.json()["detail"]
        assert_valid_request_succeeds(client)
        metrics = client.get("/metrics").text
        assert "enhance_worker_restarts 1.0" in metrics


def test_api_key_is_required_when_set():
    with app_with(API_KEY="s3cret") as guarded:
        for headers in ({}, {"X-API-Key": "wrong"}):
            response = guarded.post("/enhance", headers=headers,
                                    files={"file": ("a.raw", raw(np.ones(4)))},
                                    data={"sample_rate": "48000"})
            assert response.status_code == 401
            assert response.json()["detail"] == "a valid X-API-Key header is required"
        response = guarded.post("/enhance", headers={"X-API-Key": "s3cret"},
                                files={"file": ("a.raw", raw(np.ones(4)))},
                                data={"sample_rate": "48000"})
        assert response.status_code == 200
        assert guarded.get("/health").status_code == 200  # only /enhance is guarded


def test_any_of_the_named_keys_opens_enhance_and_metrics():
    with app_with(API_KEY="s3cret", API_KEYS="alice:key-of-alice,bob:key-of-bob") as guarded:
        for key, status in (("key-of-alice", 200), ("key-of-bob", 200), ("s3cret", 200),
                            ("alice", 401), ("key-of-carol", 401)):
            response = guarded.post("/enhance", headers={"X-API-Key": key},
                                    files={"file": ("a.raw", raw(np.ones(4)))},
                                    data={"sample_rate": "48000"})
            assert response.status_code == status, key
            assert guarded.get("/metrics", headers={"X-API-Key": key}).status_code == status


def test_health_ready_and_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    # Two workers for each model: the passthrough (default) and the shipped models.
    assert client.get("/ready").json() == {"status": "ready", "workers": 6,
                                           "frame_length": 1024, "model_sample_rate": 48000}
    names = [m["name"] for m in client.get("/models").json()]
    assert names == SHIPPED
    post(client, raw(np.ones(48000)))
    post(client, b"")
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",path="/enhance",status="200"}' in text
    assert 'http_requests_total{method="POST",path="/enhance",status="422"}' in text
    assert 'http_request_duration_seconds_bucket{le="0.1",path="/enhance"}' in text
    assert "enhance_pending_requests 0.0" in text
    audio_seconds = next(line for line in text.splitlines()
                         if line.startswith("enhance_audio_seconds_total"))
    assert float(audio_seconds.split()[1]) >= 1.0


def test_ready_is_503_when_a_worker_is_down():
    with app_with() as client:
        enhancer = client.app.state.models.default
        enhancer.close()
        response = client.get("/ready")
        assert response.status_code == 503
        assert response.json()["detail"] == "the worker pool is not ready"


def test_docs_are_served_without_any_cdn(client):
    html = client.get("/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "https://" not in html
    bundle = client.get("/static/swagger/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 500_000
    assert client.get("/static/swagger/swagger-ui.css").status_code == 200


def test_openapi_documents_the_form_and_every_error(client):
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/enhance"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "413", "415", "422", "503",
                                           "504"}
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    if "$ref" in form:
        form = spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]
    assert form["required"] == ["file"]
    assert {"file", "sample_rate", "format"} <= set(form["properties"])


def test_the_audio_can_be_the_raw_body(client):
    audio = random_audio(70_000, seed=21)
    response = client.post("/enhance?sample_rate=48000&format=f32le", content=raw(audio),
                           headers={"content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), audio * 3)
    wav = (SAMPLES / "speech_stereo_48000.wav").read_bytes()
    as_body = client.post("/enhance?model=passthrough_model_lite", content=wav,
                          headers={"content-type": "audio/wav"})
    as_form = client.post("/enhance", files={"file": ("x.wav", wav)})
    assert as_body.status_code == 200 and as_body.content == as_form.content
    assert as_body.headers["content-type"] == "audio/wav"
    spec = client.get("/openapi.json").json()
    assert {"audio/wav", "audio/flac", "application/octet-stream", "multipart/form-data"} <= set(
        spec["paths"]["/enhance"]["post"]["requestBody"]["content"])


def test_the_strength_limit_is_a_field_and_a_query_parameter(client):
    audio = random_audio(20_000, seed=23)
    lim = np.float32(10 ** (-6 / 20))
    expected = lim * audio + np.float32(1 - 10 ** (-6 / 20)) * (audio * np.float32(3))
    by_form = post(client, raw(audio), atten_lim_db=6)
    by_query = client.post("/enhance?sample_rate=48000&atten_lim_db=6", content=raw(audio),
                           headers={"content-type": "application/octet-stream"})
    for response in (by_form, by_query):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(np.frombuffer(response.content, "<f4"), expected,
                                   rtol=1e-6, atol=1e-7)
    response = post(client, raw(audio), atten_lim_db=-1)
    assert response.status_code == 422
    assert "atten_lim_db: Input should be greater than or equal to 0" in response.json()["detail"]


def test_a_refused_request_gives_back_no_memory_it_never_held():
    from tests.audio_builders import flac, tone

    unknown_length = flac(tone(48000 * 20), 48000, declared=0)  # sized only once decoded
    with app_with(MAX_INFLIGHT_MB=5) as small:
        memory = small.app.state.memory
        response = small.post("/enhance", files={"file": ("pipe.flac", unknown_length)})
        assert response.status_code == 413 and "MAX_INFLIGHT_MB=5" in response.json()["detail"]
        assert memory.held == 0
        assert_valid_request_succeeds(small)
        assert memory.held == 0


def test_a_body_of_another_type_gets_415_naming_the_accepted_ones(client):
    response = client.post("/enhance", content=b"hello", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "audio/wav" in response.json()["detail"] and "text/plain" in response.json()["detail"]
    assert_valid_request_succeeds(client)


def test_long_answers_are_streamed_with_their_length(client):
    audio = random_audio(600_000, seed=22)  # 2.4 MB of float32
    response = client.post("/enhance?sample_rate=48000", content=raw(audio),
                           headers={"content-type": "application/octet-stream"})
    assert response.status_code == 200
    assert response.headers["content-length"] == str(4 * len(audio))
    np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), audio * 3)


def test_stereo_wav_comes_back_as_int16_stereo_wav_with_clipped_count(client):
    import soundfile as sf

    wav = (SAMPLES / "speech_stereo_48000.wav").read_bytes()
    response = client.post("/enhance", files={"file": ("speech.wav", wav, "audio/wav")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    info = sf.info(io.BytesIO(response.content))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 2,
                                                                          48000)
    source, _ = sf.read(io.BytesIO(wav), dtype="int16")
    enhanced, _ = sf.read(io.BytesIO(response.content), dtype="int16")
    expected = np.clip(source.astype(np.int64) * 3, -32768, 32767)
    np.testing.assert_array_equal(enhanced, expected)
    clipped = int(np.count_nonzero(expected != source.astype(np.int64) * 3))
    assert clipped > 0 and response.headers["x-clipped-samples"] == str(clipped)
    assert response.headers["x-channels"] == "2"
    assert response.headers["x-sample-count"] == str(len(source))


def test_flac_and_s16le_round_trip(client):
    import soundfile as sf

    tone = (0.2 * np.sin(np.arange(22050) * 2 * np.pi * 440 / 22050)).astype(np.float32)
    flac = audio_bytes(tone, 22050, "FLAC", "PCM_24")
    response = client.post("/enhance", files={"file": ("t.flac", flac)})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/flac"
    info = sf.info(io.BytesIO(response.content))
    assert (info.subtype, info.samplerate, info.frames) == ("PCM_24", 22050, 22050)
    pcm = (tone * 32767).astype("<i2").tobytes()
    response = post(client, pcm, sample_rate=22050, format="s16le")
    assert response.status_code == 200 and len(response.content) == len(pcm)


@pytest.mark.parametrize("make, status, detail", [
    (lambda wav: wav[:100_000], 422, "the WAV data is truncated"),
    (lambda wav: b"fLaC" + b"\xff" * 60, 422, "cannot read the FLAC data"),
    (lambda wav: b"OggS" + wav[4:2000], 422, "cannot read the Ogg data"),
    (lambda wav: b"ID3" + wav[3:2000], 422, "cannot read the MP3 data"),
    (lambda wav: b"\x00\x00\x00\x18ftypM4A " + wav[12:2000], 415, "M4A"),
    (lambda wav: b"\x1a\x45\xdf\xa3" + wav[4:2000], 415, "WebM"),
])
def test_broken_or_unsupported_files_get_their_error(client, make, status, detail):
    wav = (SAMPLES / "speech_stereo_48000.wav").read_bytes()
    response = client.post("/enhance", files={"file": ("x.wav", make(wav))})
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert_valid_request_succeeds(client)


def test_models_are_listed_and_chosen_by_name(tmp_path):
    import json

    ola = tmp_path / "ola_x3.tflite"
    shutil.copy(PASSTHROUGH, ola)
    ola.with_suffix(".json").write_text(json.dumps({
        "name": "ola_x3", "sample_rate": 16000, "hop_length": 512, "window": "sqrt-hann",
        "description": "the passthrough with overlap-add at 16 kHz"}))
    (tmp_path / "uncarded.tflite").write_bytes(PASSTHROUGH.read_bytes())  # no card: not served
    with app_with(MODELS_DIR=str(tmp_path)) as client:
        listed = client.get("/models").json()
        assert listed == [
            {"name": "passthrough_model_lite", "sample_rate": 48000, "frame_length": 1024,
             "hop_length": 1024, "window": "none", "latency_ms": 21.33,
             "description": "Multiplies every sample by 3: the pipeline's exactness reference, "
             "not an enhancer.", "default": True},
            {"name": "ola_x3", "sample_rate": 16000, "frame_length": 1024, "hop_length": 512,
             "window": "sqrt-hann", "latency_ms": 64.0,
             "description": "the passthrough with overlap-add at 16 kHz", "default": False}]
        audio = random_audio(16000, seed=5)
        response = post(client, raw(audio), sample_rate=16000, model="ola_x3")
        assert response.status_code == 200
        np.testing.assert_allclose(np.frombuffer(response.content, "<f4"), audio * 3,
                                   atol=1e-6)
        response = post(client, raw(audio), model="passthrough_model_lite")
        np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), audio * 3)
        response = post(client, raw(audio), model="nope")
        assert response.status_code == 404
        assert response.json()["detail"] == ("unknown model 'nope'; available models: "
                                             "passthrough_model_lite, ola_x3")
        assert_valid_request_succeeds(client)
        assert client.get("/ready").json()["workers"] == 4


def test_the_default_model_is_the_speech_denoiser():
    with TestClient(create_app(Settings(NUM_PROCESSES=1))) as default_client:
        listed = {m["name"]: m["default"] for m in default_client.get("/models").json()}
        assert listed["denoiser_48k"] is True and listed["passthrough_model_lite"] is False


def test_the_api_version_is_the_package_version(client):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert client.get("/openapi.json").json()["info"]["version"] == declared


def test_swagger_form_opens_with_valid_choices_and_readable_operation_ids(client):
    schema = client.get("/openapi.json").json()
    operations = {op["operationId"] for path in schema["paths"].values()
                  for op in path.values()}
    assert {"enhance", "list_models", "health", "ready", "metrics"} <= operations
    form = next(iter(schema["paths"]["/enhance"]["post"]["requestBody"]["content"].values()))
    ref = form["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = schema["components"]["schemas"][ref]["properties"]
    assert fields["model"]["enum"] == SHIPPED
    assert fields["model"]["default"] == "passthrough_model_lite"
    assert next(iter(fields)) == "file"  # the field to fill first
    # The same choices for a raw body's query.
    query = {p["name"]: p for p in schema["paths"]["/enhance"]["post"]["parameters"]}
    assert query["model"]["schema"]["enum"] == SHIPPED
    formats = schema["components"]["schemas"]["RawFormat"]["enum"]
    assert formats == ["f32le", "s16le"] and fields["format"]["default"] == "f32le"
    disposition = schema["paths"]["/enhance"]["post"]["responses"]["200"]["headers"][
        "Content-Disposition"]["description"]
    assert "<" not in disposition  # Swagger would render it as an HTML tag and hide it


@pytest.mark.parametrize("filename, expected", [
    ("a\x00b\x1f\x7fc.raw", 'filename="enhanced_abc.raw"'),
    ("x" * 500 + ".raw", 'filename="enhanced_' + "x" * 100),
    ('quo"te?.raw', 'filename="enhanced_quo_te_.raw"'),
])
def test_the_download_name_is_clean_and_short(client, filename, expected):
    # Built by hand: httpx would percent-escape the name's odd characters itself.
    body = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="'
            + filename.replace('"', '\\"').encode() + b'"\r\n\r\n' + raw(np.ones(8))
            + b'\r\n--x\r\nContent-Disposition: form-data; name="sample_rate"\r\n\r\n'
            b"48000\r\n--x--\r\n")
    response = client.post("/enhance", content=body,
                           headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert expected in disposition and len(disposition) < 400
    assert not any(ord(c) < 32 or ord(c) == 127 for c in disposition)


def test_the_page_is_served_at_the_root(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/html")
    assert "/static/" in response.text


def test_the_denoiser_is_chosen_with_the_model_field(client):
    from bench.metrics import si_sdr

    clean = np.fromfile(SAMPLES / "speech_48000.f32", dtype="<f4")
    noisy = clean + random_audio(len(clean), seed=8) * np.float32(0.3)
    response = post(client, raw(noisy), model="denoiser_48k")
    assert response.status_code == 200
    enhanced = np.frombuffer(response.content, "<f4")
    assert enhanced.shape == clean.shape
    assert si_sdr(enhanced, clean) > si_sdr(noisy, clean) + 3


# ------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def server():
    running = LiveServer()
    yield running
    running.stop()


def test_real_server_returns_exactly_three_times_and_keeps_rate(server):
    audio = np.fromfile(SAMPLES / "speech_48000.f32", dtype="<f4")
    response = httpx.post(f"{server.url}/enhance", files={"file": ("s.raw", audio.tobytes())},
                          data={"sample_rate": "48000"}, timeout=60)
    assert response.status_code == 200
    np.testing.assert_array_equal(np.frombuffer(response.content, "<f4"), audio * 3)
    low = np.fromfile(SAMPLES / "speech_16000.f32", dtype="<f4")
    response = httpx.post(f"{server.url}/enhance", files={"file": ("s.raw", low.tobytes())},
                          data={"sample_rate": "16000"}, timeout=60)
    assert response.status_code == 200 and response.headers["x-sample-rate"] == "16000"
    assert len(np.frombuffer(response.content, "<f4")) == len(low)


def test_64_concurrent_requests_each_get_their_own_result(server):
    rng = np.random.default_rng(64)
    rates = [8000, 16000, 22050, 44100, 48000, 96000]
    cases = [(random_audio(int(rng.integers(1, 100_000)), seed=i), rates[i % len(rates)])
             for i in range(64)]

    async def send_all():
        async with httpx.AsyncClient(timeout=120) as http:
            return await asyncio.gather(*(
                http.post(f"{server.url}/enhance", files={"file": (f"{i}.raw", raw(audio))},
                          data={"sample_rate": str(rate)})
                for i, (audio, rate) in enumerate(cases)))

    responses = asyncio.run(send_all())
    with AudioEnhancer(PASSTHROUGH, num_processes=0) as reference:
        for (audio, rate), response in zip(cases, responses, strict=True):
            assert response.status_code == 200, response.text
            expected, _ = encode_audio(reference.enhance(audio, rate), rate,
                                       AudioFormat("raw", "f32le"))
            assert response.content == expected


def _health_during_a_long_request(server, audio: bytes) -> tuple[float, float, float]:
    """The slowest and the median ``/health`` while ``audio`` is enhanced, and how long the
    enhancement took (s)."""
    result = {}

    def long_request():
        started = time.perf_counter()
        result["response"] = httpx.post(f"{server.url}/enhance",
                                        files={"file": ("long.raw", audio)},
                                        data={"sample_rate": "16000"}, timeout=120)
        result["seconds"] = time.perf_counter() - started

    worker = threading.Thread(target=long_request)
    latencies = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.get("/health")  # connection set up outside the measurement
        worker.start()
        while worker.is_alive():
            started = time.perf_counter()
            assert http.get("/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
    worker.join()
    assert result["response"].status_code == 200
    assert len(latencies) >= 3, "the long request finished before /health could be measured"
    return max(latencies), float(np.median(latencies)), result["seconds"]


def test_health_answers_fast_while_a_long_upload_is_processed(server):
    ten_minutes = raw(random_audio(600 * 16000, seed=60))  # resampled to 48 kHz and back
    # Work done on the event loop would hold one /health for most of the request, every
    # time. A stall of the whole process on a shared CPU (421 ms once in CI, 519 ms of a
    # 1.7 s request beside stress-ng) comes when it will: so up to three tries, one must pass.
    tries = []
    for _ in range(3):
        slowest, typical, seconds = _health_during_a_long_request(server, ten_minutes)
        tries.append(f"slowest /health {slowest:.3f} s, median {typical * 1000:.0f} ms, "
                     f"of a {seconds:.1f} s request")
        if slowest < seconds / 4 and typical < 0.05:
            return
    pytest.fail("; ".join(tries))


def test_upload_without_length_is_cut_off_by_counting():
    server = LiveServer(MAX_UPLOAD_MB="0.05")
    try:
        # Chunked, with no Content-Length: 128 kB sent of a body that never ends. The
        # answer must come while the body is still arriving, so it was not buffered.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
            connection.sendall(b"POST /enhance HTTP/1.1\r\nHost: test\r\n"
                               b"Content-Type: multipart/form-data; boundary=x\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"\x00" * 16384
            for _ in range(8):
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            answer = b""
            while b"}" not in answer:  # headers and the JSON body may come apart
                received = connection.recv(65536)
                if not received:
                    break
                answer += received
            answer = answer.decode(errors="replace")
        assert answer.startswith("HTTP/1.1 413"), answer
        assert '{"detail":"the upload is larger than the limit of 0.05 MB"}' in answer
        server.assert_serves()
    finally:
        server.stop()


def test_sigterm_finishes_requests_in_flight_then_leaves_no_process():
    server = LiveServer()
    workers = children_of(server.process.pid)
    assert len(workers) >= 2
    result = {}
    body = raw(random_audio(30 * 16000, seed=3))
    sending = threading.Event()

    def chunks():
        yield body[:1024]
        sending.set()  # the headers and a first piece are out: the request is in flight
        yield body[1024:]

    def request():
        result["response"] = httpx.post(
            f"{server.url}/enhance?sample_rate=16000", content=chunks(),
            headers={"content-type": "application/octet-stream"}, timeout=60)

    in_flight = threading.Thread(target=request)
    in_flight.start()
    # Waiting a fixed 50 ms sent SIGTERM before the request connected on a loaded machine.
    assert sending.wait(30)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(10)
    assert time.monotonic() - started < 10
    in_flight.join()
    assert result["response"].status_code == 200
    assert len(result["response"].content) == 30 * 16000 * 4
    assert wait_until_gone(workers)
    assert not list(Path("/dev/shm").glob(f"enhancer-{server.process.pid}-*"))  # no arenas


def test_bad_settings_fail_at_start_naming_the_variable():
    env = {**os.environ, "APP_PORT": "eighty", "NUM_PROCESSES": "2"}
    result = subprocess.run([sys.executable, "main.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "APP_PORT" in result.stderr and "Traceback" not in result.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"),
                    reason="chromium is not installed (.ci/run installs it)")
def test_swagger_ui_renders_offline_in_headless_chromium(server, tmp_path):
    screenshot = tmp_path / "docs.png"
    offline = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}",
               # Every host but loopback fails to resolve: the network is off.
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               "--virtual-time-budget=10000", "--window-size=1280,900"]
    url = f"{server.url}/docs#/enhance/enhance"  # deep link: the form opens
    dom = subprocess.run([_chromium(), *offline, "--dump-dom", url], capture_output=True,
                         text=True, timeout=120)
    assert 'class="opblock-summary-path"' in dom.stdout, dom.stderr[-2000:]
    assert "/enhance" in dom.stdout and "Enhance an audio file" in dom.stdout
    assert 'type="file"' in dom.stdout  # the upload form has a file picker
    subprocess.run([_chromium(), *offline, f"--screenshot={screenshot}", url],
                   capture_output=True, timeout=120)
    assert screenshot.stat().st_size > 10_000


def test_schemathesis_finds_no_server_error_or_schema_mismatch(server, tmp_path):
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    result = subprocess.run(
        [st, "run", f"{server.url}/openapi.json", "--checks", "all",
         # A schema cannot say "a whole number of finite float32 samples": 422 is right.
         "--exclude-checks", "positive_data_acceptance",
         "--max-examples", "200", "--seed", "1", "--request-timeout", "30",
         "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache goes there
    assert result.returncode == 0, result.stdout[-4000:]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
