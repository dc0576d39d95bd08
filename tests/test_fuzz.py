"""Fuzzing (issue 34): every container cut short or with bytes flipped, through the reader, the
HTTP API (TestClient for the bulk, a real server on loopback) and the CLI (in this process for
the bulk, a few real processes): always audio or a clear one-line error, never a 5xx or a
traceback. The cases are seeded (``bench.fuzz``); ``make fuzz`` runs random ones for longer.

The first tests pin two findings measured on the old code, through the entry points that
code also had (``python main.py`` and ``python enhance_file.py``), so they can be run
against it.
"""

from __future__ import annotations

import contextlib
import io
import random

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.helpers import PASSTHROUGH, LiveServer, run_cli

SEED = 34
# The cases sampled for the slower paths: enough to meet every format and kind of damage.
API_CASES, LIVE_CASES, CLI_CASES = 400, 100, 250
WAV_KINDS = [("WAV", s) for s in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")] + [
    ("WAVEX", "PCM_16"), ("RF64", "PCM_16")]


def encoded(container: str, subtype: str, rate: int = 16000, seconds: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds))[:, None] / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t * np.array([1, 2]))).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, tone, rate, format=container, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server():
    with LiveServer() as live:
        yield live


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def cli_error(tmp_path, data: bytes) -> tuple[int, list[str], str]:
    """``python enhance_file.py`` on ``data``: its status, its stderr lines, the file's path."""
    source, destination = tmp_path / "in.wav", tmp_path / "out.wav"
    source.write_bytes(data)
    done = run_cli("--source-file", str(source), "--destination-file", str(destination),
                   "--model-path", str(PASSTHROUGH), "--num-processes", "0")
    assert not destination.exists()
    return done.returncode, done.stderr.strip().splitlines(), str(source)


# ------------------------------------------------------------------ findings on the old code

def test_a_wav_cut_inside_its_header_is_a_422_and_a_one_line_cli_error(http, tmp_path):
    # Finding 1: 20-35 bytes of any WAV made check_wav_header's struct.unpack fail: HTTP 500,
    # and the CLI exited 1 with a traceback.
    for container, subtype in WAV_KINDS:
        data = encoded(container, subtype)
        for size in range(20, 36):
            response = http.post("/enhance", files={"file": ("x.wav", data[:size])})
            assert response.status_code == 422, (container, subtype, size, response.text)
            assert response.json()["detail"] == (f"the WAV data is truncated: the file ends "
                                                 f"after {size} bytes, inside its header")
    status, lines, source = cli_error(tmp_path, encoded("WAV", "PCM_16")[:30])
    assert (status, lines) == (2, [f"enhance_file.py: error: {source}: the WAV data is "
                                   f"truncated: the file ends after 30 bytes, inside its "
                                   f"header"])


def test_a_cut_mp3_is_named_so_and_alike_by_the_api_and_the_cli(http, tmp_path):
    # Finding 10: 200 bytes of an MP3 were "headerless f32le audio needs a sample rate" to
    # the server and "the audio holds 1 NaN or infinite samples" to the CLI.
    data = encoded("MP3", "MPEG_LAYER_III", 44100)
    assert data[0] == 0xFF  # a frame first, no ID3 tag: sniffed by the frame header
    response = http.post("/enhance", files={"file": ("x.mp3", data[:200])})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("the MP3 data is truncated: the file ends after 200 bytes, inside "
                             "its first frame ("), detail
    status, lines, source = cli_error(tmp_path, data[:200])
    assert (status, lines) == (2, [f"enhance_file.py: error: {source}: {detail}"])


# ------------------------------------------------------------------ the rule for cut containers

def test_every_container_cut_short_is_named_truncated_alike_in_the_api_and_the_cli(http,
                                                                                 tmp_path):
    from bench.fuzz import Case, cli_arguments, corpus
    from enhancer.apps.cli import run_cli as cli

    id3 = b"ID3\x04\x00\x00\x00\x00\x02\x00" + b"\x00" * 256  # a 266-byte tag, then the MP3
    sources = {**{k: v[0] for k, v in corpus().items() if not k.startswith("raw")},
               "MP3 after an ID3 tag": id3 + corpus()["MP3"][0]}
    for name, data in sources.items():
        container = "WAV" if name.startswith(("RF64", "WAVEX")) else name.split()[0]
        for size in (12, 44, 100, 200, len(data) // 2, len(data) - 1):
            case = Case(name, f"prefix {size}", data[:size], "f32le")
            response = http.post("/enhance", files={"file": ("x", case.data)})
            detail = response.json()["detail"]
            assert response.status_code == 422, (case, detail)
            assert detail.startswith(f"the {container} data is truncated"), (case, detail)
            arguments, _ = cli_arguments(case, tmp_path, PASSTHROUGH)
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_info:
                cli(arguments)
            assert exit_info.value.code == 2
            assert stderr.getvalue() == f"enhance: error: {arguments[1]}: {detail}\n"


# ------------------------------------------------------------------ the bulk, seeded

def sample(count: int, seed: int) -> list:
    from bench.fuzz import cases

    every = list(cases(SEED))
    return random.Random(seed).sample(every, min(count, len(every)))


def test_the_reader_returns_audio_or_invalid_audio_for_every_case():
    from bench.fuzz import cases, reader_problem

    every = list(cases(SEED))
    assert len(every) > 7000
    problems = [p for case in every for p in (reader_problem(case), reader_problem(case, None))
                if p]
    assert problems == []


def test_every_cut_of_a_container_is_called_truncated():
    from bench.fuzz import cases
    from enhancer.audio.decode import decode_audio
    from enhancer.errors import InvalidAudio

    # Under 4 bytes no magic is whole: those are headerless samples.
    cut = [case for case in cases(SEED) if not case.source.startswith("raw")
           and case.mutation.startswith(("prefix", "cut")) and len(case.data) >= 4]
    assert len(cut) > 5000
    named = []
    for case in cut:
        with pytest.raises(InvalidAudio) as error:
            decode_audio(case.data, case.raw_format, 48000)
        named.append(" data is truncated" in str(error.value) or f"{case}: {error.value}")
    assert [n for n in named if n is not True] == []


def test_the_api_answers_200_413_415_or_422_to_every_case():
    from fastapi.testclient import TestClient

    from bench.fuzz import http_problem, post_case
    from main import create_app
    from service.settings import Settings

    statuses: dict[int, int] = {}
    with TestClient(create_app(Settings(NUM_PROCESSES=0, TF_MODEL_PATH=PASSTHROUGH))) as client:
        problems = []
        for i, case in enumerate(sample(API_CASES, 1)):
            response = post_case(client, case, multipart=i % 2 == 0)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            problems.append(http_problem(case, response))
    assert [p for p in problems if p] == []
    assert statuses.get(200, 0) >= 20 and statuses.get(422, 0) >= 200, statuses  # both met


def test_a_real_server_answers_every_case_and_keeps_serving(server, http):
    from bench.fuzz import http_problem, post_case

    logged = len(server.stderr())
    problems = [http_problem(case, post_case(http, case, multipart=i % 2 == 1))
                for i, case in enumerate(sample(LIVE_CASES, 2))]
    assert [p for p in problems if p] == []
    server.assert_serves()
    assert server.process.poll() is None
    log = server.stderr()[logged:]  # what the server logged while it took these cases
    assert "Traceback" not in log, log[-4000:]


def test_the_cli_exits_0_or_2_with_one_line_for_every_case(tmp_path):
    from bench.fuzz import cli_problem

    problems = [cli_problem(case, tmp_path, PASSTHROUGH) for case in sample(CLI_CASES, 3)]
    assert [p for p in problems if p] == []


def test_the_cli_as_a_process_of_its_own(tmp_path):
    from bench.fuzz import Case, cli_subprocess_problem, corpus
    from tests.helpers import ROOT

    mp3, flac = corpus()["MP3"][0], corpus()["FLAC PCM_16"][0]
    # A byte of the Xing header changed: libmpg123 prints a warning on the process's stderr
    # and decodes on; the CLI writes the result and says nothing.
    damaged = bytearray(mp3)
    damaged[174] = 0x9C
    for case in (Case("FLAC PCM_16", "cut in half", flac[:len(flac) // 2], "f32le"),
                 Case("Ogg Opus", "prefix 300", corpus()["Ogg Opus"][0][:300], "f32le")):
        assert cli_subprocess_problem(case, tmp_path, PASSTHROUGH, ROOT) is None
    source, destination = tmp_path / "in.bin", tmp_path / "out.bin"
    source.write_bytes(bytes(damaged))
    done = run_cli("--source-file", str(source), "--destination-file", str(destination),
                   "--model-path", str(PASSTHROUGH), "--num-processes", "0")
    assert (done.returncode, done.stderr) == (0, "") and destination.exists()
