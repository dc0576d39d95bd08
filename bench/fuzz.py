"""Fuzzing: every container the service reads, cut short and with bytes flipped, through the
reader, the HTTP API and the CLI.

The corpus is one short file in each format read (WAV in each subtype, RF64 and WAVEX, FLAC
8/16/24-bit, MP3, Ogg Vorbis and Opus, headerless f32le and s16le); a case is one of them
cut to a prefix, cut at a random point, or with a few random bytes flipped in its first 512
bytes. Whatever the bytes, the reader returns audio or raises ``InvalidAudio`` (one line);
``POST /enhance`` answers 200, 413, 415 or 422 with a JSON ``detail``; the CLI exits 0, or 2
with exactly one line on stderr, leaving no file behind. ``tests/test_fuzz.py`` runs a fixed,
seeded set in ``make test``; ``make fuzz`` (``python -m bench.fuzz --seconds 300``) runs
random cases for longer against a live server, and exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import numpy as np

from enhancer.audio.decode import decode_audio
from enhancer.errors import InvalidAudio

# Headerless cases are read at this rate (the CLI's default).
RATE = 48000
# What POST /enhance may answer to any bytes at all.
HTTP_ALLOWED = frozenset({200, 413, 415, 422})
# Bytes that random flips land in: the headers, where parsers go wrong.
FLIP_SPAN = 512

# (name, soundfile container or "raw", subtype or raw format, rate, channels)
FORMATS = (
    [("WAV " + s, "WAV", s, 16000, 2)
     for s in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")]
    + [("WAVEX PCM_16", "WAVEX", "PCM_16", 16000, 2), ("RF64 PCM_16", "RF64", "PCM_16", 16000, 1)]
    + [("FLAC " + s, "FLAC", s, 16000, 2) for s in ("PCM_S8", "PCM_16", "PCM_24")]
    + [("MP3", "MP3", "MPEG_LAYER_III", 44100, 2), ("Ogg Vorbis", "OGG", "VORBIS", 22050, 1),
       ("Ogg Opus", "OGG", "OPUS", 48000, 2), ("raw f32le", "raw", "f32le", RATE, 1),
       ("raw s16le", "raw", "s16le", RATE, 1)])


@dataclass(frozen=True)
class Case:
    """Bytes to feed every reader, and where they came from (to say which case failed)."""

    source: str
    mutation: str
    data: bytes
    raw_format: str  # what headerless bytes are read as: the source's, or f32le

    def __str__(self) -> str:
        return f"{self.source}, {self.mutation} ({len(self.data)} bytes)"


def encode(container: str, subtype: str, rate: int, channels: int,
           seconds: float = 0.06) -> bytes:
    """A tone, ``seconds`` long, in the format given (``raw``: headerless, mono)."""
    import soundfile as sf

    t = np.arange(int(rate * seconds))[:, None] / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t * np.arange(1, channels + 1))).astype(np.float32)
    if container == "raw":
        mono = tone[:, 0]
        return (mono.astype("<f4") if subtype == "f32le"
                else np.round(mono * 32767).astype("<i2")).tobytes()
    buffer = io.BytesIO()
    sf.write(buffer, tone, rate, format=container, subtype=subtype)
    return buffer.getvalue()


@cache
def corpus() -> dict[str, tuple[bytes, str]]:
    """Each format's file, and the raw format its bytes are read as if headerless."""
    return {name: (encode(container, subtype, rate, channels),
                   subtype if container == "raw" else "f32le")
            for name, container, subtype, rate, channels in FORMATS}


def flipped(data: bytes, rng: random.Random, count: int) -> tuple[bytes, str]:
    """``data`` with ``count`` random bytes in its first FLIP_SPAN set to random values."""
    out = bytearray(data)
    changes = []
    for _ in range(count):
        at = rng.randrange(min(FLIP_SPAN, len(out)))
        out[at] = rng.randrange(256)
        changes.append(f"{at}={out[at]:#04x}")
    return bytes(out), "flip " + ",".join(changes)


def cases(seed: int, prefixes: range = range(400), cuts: int = 20,
          flips: int = 40) -> Iterator[Case]:
    """For each format: the prefixes of the lengths given, ``cuts`` random longer cuts and
    ``flips`` copies with 1-4 random bytes flipped; the same ones for the same seed."""
    rng = random.Random(seed)
    for name, (data, raw_format) in corpus().items():
        for size in prefixes:
            if size < len(data):
                yield Case(name, f"prefix {size}", data[:size], raw_format)
        for _ in range(cuts):
            size = rng.randrange(min(len(data), max(prefixes) + 1), len(data))
            yield Case(name, f"cut at {size}", data[:size], raw_format)
        for _ in range(flips):
            changed, label = flipped(data, rng, rng.randint(1, 4))
            yield Case(name, label, changed, raw_format)


def random_case(rng: random.Random) -> Case:
    """One case of any kind, from any format: what the long run feeds."""
    name = rng.choice(sorted(corpus()))
    data, raw_format = corpus()[name]
    kind = rng.randrange(3)
    if kind == 0:
        size = rng.randrange(min(len(data), 600))
        return Case(name, f"prefix {size}", data[:size], raw_format)
    if kind == 1:
        size = rng.randrange(len(data))
        return Case(name, f"cut at {size}", data[:size], raw_format)
    changed, label = flipped(data, rng, rng.randint(1, 8))
    return Case(name, label, changed, raw_format)


def reader_problem(case: Case, sample_rate: int | None = RATE) -> str | None:
    """What is wrong with how the reader takes ``case``; None when it is right."""
    try:
        decode_audio(case.data, case.raw_format, sample_rate)
    except InvalidAudio as exc:
        return f"{case}: a message of several lines: {exc}" if "\n" in str(exc) else None
    except Exception as exc:
        return f"{case}: {type(exc).__name__}: {exc}"
    return None


def post_case(http: httpx.Client, case: Case, multipart: bool) -> httpx.Response:
    """``POST /enhance`` of ``case``: as a multipart form, or as the raw body."""
    options = {"sample_rate": str(RATE), "format": case.raw_format}
    if multipart:
        return http.post("/enhance", files={"file": ("x.bin", case.data)}, data=options)
    return http.post("/enhance", content=case.data, params=options,
                     headers={"Content-Type": "application/octet-stream"})


def http_problem(case: Case, response: httpx.Response) -> str | None:
    """What is wrong with ``response`` to ``case``; None when it is right."""
    status = response.status_code
    if status not in HTTP_ALLOWED:
        return f"{case}: HTTP {status}: {response.text[:300]}"
    if status == 200:
        return None if response.content else f"{case}: HTTP 200 with no audio"
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return f"{case}: HTTP {status} without a JSON detail: {response.text[:300]}"
    return None if isinstance(detail, str) and detail else f"{case}: HTTP {status}: {detail!r}"


def cli_arguments(case: Case, folder: Path, model: Path) -> tuple[list[str], Path]:
    """The CLI's arguments to enhance ``case`` (written into ``folder``), and its output."""
    source, destination = folder / "in.bin", folder / "out.bin"
    source.write_bytes(case.data)
    destination.unlink(missing_ok=True)
    return ["--source-file", str(source), "--destination-file", str(destination),
            "--num-processes", "0", "--model-path", str(model), "--sample-rate", str(RATE),
            "--format", case.raw_format], destination


def cli_outcome_problem(case: Case, status: int, stderr: str, destination: Path) -> str | None:
    """What is wrong with how the CLI ended on ``case``; None when it is right."""
    lines = stderr.strip().splitlines()
    left = sorted(p.name for p in destination.parent.iterdir() if p.name.startswith("."))
    if left:
        return f"{case}: the CLI left {left} behind"
    if status == 0:
        return None if destination.exists() else f"{case}: exit 0 and no output"
    if status != 2 or len(lines) != 1 or destination.exists():
        return f"{case}: exit {status}, output {destination.exists()}, stderr: {stderr[-800:]}"
    return None


def cli_problem(case: Case, folder: Path, model: Path) -> str | None:
    """``case`` through the CLI in this process (``run_cli``), as ``enhance`` runs it."""
    from enhancer.apps.cli import run_cli

    arguments, destination = cli_arguments(case, folder, model)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            status = run_cli(arguments)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        return f"{case}: the CLI raised {type(exc).__name__}: {exc}"
    return cli_outcome_problem(case, status, stderr.getvalue(), destination)


def cli_subprocess_problem(case: Case, folder: Path, model: Path, root: Path) -> str | None:
    """``case`` through ``python enhance_file.py`` in a process of its own."""
    arguments, destination = cli_arguments(case, folder, model)
    done = subprocess.run([sys.executable, str(root / "enhance_file.py"), *arguments],
                          cwd=root, capture_output=True, text=True, timeout=120)
    return cli_outcome_problem(case, done.returncode, done.stderr, destination)


def every_path(case: Case, http: httpx.Client, folder: Path, subprocess_too: bool) -> list[str]:
    """What is wrong with ``case`` through the reader, the live server and the CLI."""
    from enhancer.apps.enhance_files import quiet_decoder
    from tests.helpers import PASSTHROUGH, ROOT

    with quiet_decoder():  # libmpg123's complaints would each be a line on this terminal
        found = [reader_problem(case), reader_problem(case, None)]
    try:
        found.append(http_problem(case, post_case(http, case, len(case.data) % 2 == 0)))
    except httpx.HTTPError as exc:  # no answer at all: the server hung up or died
        found.append(f"{case}: {type(exc).__name__}: {exc}")
    found.append(cli_problem(case, folder, PASSTHROUGH))
    if subprocess_too:
        found.append(cli_subprocess_problem(case, folder, PASSTHROUGH, ROOT))
    return [p for p in found if p]


def main(seconds: float, seed: int) -> int:
    from tests.helpers import LiveServer

    rng, count, problems = random.Random(seed), 0, []
    deadline = time.monotonic() + seconds
    with LiveServer() as server, httpx.Client(base_url=server.url, timeout=60) as http, \
            tempfile.TemporaryDirectory() as folder:
        while time.monotonic() < deadline:
            # One case in a hundred also through a CLI process of its own: the real thing.
            problems += every_path(random_case(rng), http, Path(folder), rng.random() < 0.01)
            count += 1
        exited = server.process.poll()
    for problem in problems[:30]:
        print(problem)
    print(f"fuzz: {count} cases in {seconds:g} s (seed {seed}), {len(problems)} problems"
          + ("" if exited is None else f"; the server exited ({exited})"))
    return 1 if problems or exited is not None else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    arguments = parser.parse_args()
    sys.exit(main(arguments.seconds, arguments.seed))
