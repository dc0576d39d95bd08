"""Live streams: the library's EnhancerStream and ``WebSocket /enhance/stream`` on a real server.

The stream's output must equal the whole-file output, sample for sample, whatever the chunk
size and rate; every bad input closes the stream with a code and a reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from enhancer import AudioEnhancer
from enhancer.apps.client import StreamError, StreamSummary, stream_enhance, stream_enhance_sync
from tests.helpers import (
    DENOISER,
    LiveServer,
    random_audio,
    raw,
    same_bits,
    stopped,
    workers_of,
)

RATES = [16000, 44100, 48000]
CHUNKS = [1, 7, 160, 441, 4800, "1 s"]


@pytest.fixture(scope="module")
def denoiser() -> AudioEnhancer:
    with AudioEnhancer(DENOISER, num_processes=2) as enhancer:
        yield enhancer


async def run_stream(enhancer: AudioEnhancer, audio: np.ndarray, rate: int,
                     chunk: int) -> np.ndarray:
    stream = enhancer.open_stream(rate, 1 if audio.ndim == 1 else audio.shape[1])
    parts = [await stream.push(audio[i:i + chunk]) for i in range(0, len(audio), chunk)]
    parts.append(await stream.finish())
    out = np.concatenate(parts)
    return out[:, 0] if audio.ndim == 1 else out


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("model", ["passthrough", "denoiser"])
def test_a_stream_equals_the_whole_file_sample_for_sample(pool, denoiser, model, rate, chunk):
    enhancer = pool if model == "passthrough" else denoiser
    seconds = 0.1 if chunk == 1 else 1.3  # a sample at a time is slow to drive
    audio = random_audio(int(rate * seconds) + 17, seed=rate)
    size = rate if chunk == "1 s" else chunk
    streamed = asyncio.run(run_stream(enhancer, audio, rate, size))
    assert same_bits(streamed, enhancer.enhance(audio, rate))


def test_queued_chunks_of_many_streams_share_tasks_and_each_stream_stays_exact():
    """Chunks that queue up (here: 20 streams push while the only worker is stopped) are
    taken several to a task, at most MAX_CHUNKS_PER_TASK, and each stream still gets exactly
    its own audio."""
    from enhancer.backends.pool.pool import MAX_CHUNKS_PER_TASK

    audios = [random_audio(24000 + 31 * i, seed=100 + i) for i in range(20)]
    with AudioEnhancer(DENOISER, num_processes=1) as enhancer:
        pool = enhancer.backend

        async def streamed() -> tuple[list[np.ndarray], int]:
            streams = [enhancer.open_stream(48000) for _ in audios]
            with stopped(enhancer.worker_pids[:1]):
                before = pool.tasks_sent
                first = [asyncio.ensure_future(s.push(a[:4800]))
                         for s, a in zip(streams, audios, strict=True)]
                while pool.pending_sessions < len(audios):
                    await asyncio.sleep(0.01)
            outs = [[part] for part in await asyncio.gather(*first)]
            tasks = pool.tasks_sent - before
            for stream, audio, out in zip(streams, audios, outs, strict=True):
                out.append(await stream.push(audio[4800:]))
                out.append(await stream.finish())
            return [np.concatenate(o)[:, 0] for o in outs], tasks

        outs, tasks = asyncio.run(streamed())
        # 8 to a task; the first task may have left before all 20 were queued. (One each: 20.)
        fewest = -(-len(audios) // MAX_CHUNKS_PER_TASK)
        assert fewest <= tasks <= fewest + 1 and tasks < len(audios)
        for audio, out in zip(audios, outs, strict=True):
            assert same_bits(out, enhancer.enhance(audio, 48000))


@pytest.mark.parametrize("model", ["passthrough", "denoiser"])
def test_chunks_larger_than_a_segment_are_run_in_pieces_and_still_equal(pool, denoiser, model):
    enhancer = pool if model == "passthrough" else denoiser
    audio = random_audio(48000 * 20 + 5, seed=8)
    chunk = 48000 * 9  # more frames than one worker's arena holds
    assert chunk // enhancer.framing.hop_length > enhancer.max_segment_frames
    streamed = asyncio.run(run_stream(enhancer, audio, 48000, chunk))
    assert same_bits(streamed, enhancer.enhance(audio, 48000))


def test_after_its_first_chunk_a_stream_sends_the_models_state_not_its_look_back(denoiser):
    """The denoiser's stream step: the first chunk brings the card's context frames (48 of
    silence: its GRUs' warm-up) and a zero state; every later one only its own frames and the
    state the one before left."""
    jobs = []
    run = denoiser.backend.run

    def recording(job, *args, **kwargs):  # the real pool runs every job
        jobs.append(job)
        return run(job, *args, **kwargs)

    audio = random_audio(48000, seed=11)
    denoiser.backend.run = recording
    try:
        streamed = asyncio.run(run_stream(denoiser, audio, 48000, 2000))
    finally:
        del denoiser.backend.run
    assert same_bits(streamed, denoiser.enhance(audio, 48000))
    context, size = denoiser.card.context_frames, denoiser.card.stream_state_size
    first, *later = [job.channels[0] for job in jobs]
    assert first.framing.context == context == 48 and not first.state.any()
    assert first.samples.shape[0] == (first.num_frames + context - 1) * 512 + 1024
    assert len(later) > 20
    before = first
    for chunk in later:
        assert chunk.framing.context == 0 and chunk.state is before.state_out
        assert chunk.state.shape == (size,)
        assert chunk.samples.shape[0] == (chunk.num_frames - 1) * 512 + 1024
        before = chunk


@pytest.mark.parametrize("chunk", [1, 441, 4800])
def test_without_a_stream_step_chunks_bring_their_look_back_and_still_equal(
        tmp_path, lookback_model, chunk):
    """A stateless model with look-back (the fixture: an MLP over past frames) and no step
    twin: each chunk brings the frames before it, and the stream still equals the file."""
    name = lookback_model.stem
    (tmp_path / f"{name}.tflite").write_bytes(lookback_model.read_bytes())
    card = json.loads(lookback_model.with_suffix(".json").read_text())
    del card["stream_step"]
    (tmp_path / f"{name}.json").write_text(json.dumps(card))
    audio = random_audio(30_000 if chunk > 1 else 3000, seed=chunk)
    with AudioEnhancer(tmp_path / f"{name}.tflite", num_processes=1) as enhancer:
        assert not enhancer.open_stream(48000).stepped
        assert enhancer.framing.context == card["context_frames"] == 67
        streamed = asyncio.run(run_stream(enhancer, audio, 48000, chunk))
        assert same_bits(streamed, enhancer.enhance(audio, 48000))


@pytest.mark.parametrize("chunk", [1, 441, 4800])
def test_a_stateless_models_stream_step_equals_its_file_path(lookback_model, chunk):
    audio = random_audio(30_000 if chunk > 1 else 3000, seed=chunk)
    with AudioEnhancer(lookback_model, num_processes=1) as enhancer:
        assert enhancer.open_stream(48000).stepped
        streamed = asyncio.run(run_stream(enhancer, audio, 48000, chunk))
        assert same_bits(streamed, enhancer.enhance(audio, 48000))


def test_a_step_chunk_longer_than_a_segment_is_refused_by_the_pool(denoiser):
    from enhancer.model.grid import ChannelJob, Job

    frames = denoiser.max_segment_frames + 1
    context, size = denoiser.card.context_frames, denoiser.card.stream_state_size
    chunk = ChannelJob(denoiser.framing, np.zeros(frames * 512 + 40000, np.float32), frames,
                       offset=-context * 512, state=np.zeros(size, np.float32))
    future = denoiser.backend.run(Job([chunk]), "too-long")
    with pytest.raises(ValueError, match=f"at most {frames - 1} frames a channel, got "
                                         f"{frames}"):
        future.result(timeout=10)
    assert denoiser.backend.pending_sessions == 0


def test_a_stereo_stream_equals_the_whole_file(denoiser):
    audio = np.stack([random_audio(30_000, seed=1), random_audio(30_000, seed=2)], axis=1)
    streamed = asyncio.run(run_stream(denoiser, audio, 44100, 777))
    assert same_bits(streamed, denoiser.enhance(audio, 44100))


def test_output_never_runs_ahead_of_input_and_flows_as_it_comes(denoiser):
    async def check() -> None:
        stream = denoiser.open_stream(48000)
        ready = 0
        for i in range(100):  # 10 ms chunks
            ready += len(await stream.push(random_audio(480, seed=i)))
            assert ready <= (i + 1) * 480
        assert ready >= 100 * 480 - 2 * 1024  # at most the frame's latency behind
        assert ready + len(await stream.finish()) == 100 * 480

    asyncio.run(check())


# ------------------------------------------------------------------ over the network


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> LiveServer:
    models = tmp_path_factory.mktemp("models")
    for name in ("denoiser_48k.tflite", "denoiser_48k.json"):
        (models / name).write_bytes((DENOISER.parent / name).read_bytes())
    with LiveServer(MODELS_DIR=str(models), MAX_STREAMS="20",
                    STREAM_IDLE_TIMEOUT_S="2") as running:
        yield running


def ws_url(server: LiveServer) -> str:
    return f"ws://127.0.0.1:{server.port}/enhance/stream"


def test_over_the_network_a_stream_equals_post_enhance(server):
    for rate, chunk, model in [(16000, 1, "denoiser_48k"), (44100, 441, "denoiser_48k"),
                               (48000, 4800, "passthrough_model_lite")]:
        audio = random_audio(rate // 5 + 3, seed=chunk)
        summary = StreamSummary()
        streamed = np.concatenate(list(stream_enhance_sync(
            ws_url(server), (audio[i:i + chunk] for i in range(0, len(audio), chunk)),
            sample_rate=rate, model=model, summary=summary)))
        whole = httpx.post(f"{server.url}/enhance", files={"file": ("a.raw", raw(audio))},
                           data={"sample_rate": str(rate), "model": model}, timeout=60)
        assert whole.status_code == 200
        assert streamed.tobytes() == whole.content
        assert summary.samples_in == summary.samples_out == len(audio)
        assert summary.latency_ms is not None and summary.latency_ms["p99"] > 0


def test_16_concurrent_streams_each_get_their_own_audio_back(server):
    async def one(index: int) -> bool:
        audio = random_audio(48000, seed=100 + index)
        chunks = [audio[i:i + 480] for i in range(0, len(audio), 480)]
        parts = [part async for part in stream_enhance(
            ws_url(server), chunks, 48000, model="passthrough_model_lite")]
        return same_bits(np.concatenate(parts), audio * np.float32(3))

    async def all_of_them() -> list[bool]:
        return await asyncio.gather(*(one(i) for i in range(16)))

    assert all(asyncio.run(all_of_them()))


def burst(server: LiveServer, query: str, messages: list[bytes | str]) -> tuple[
        bytes, list[dict], int | None, str | None]:
    """Send ``messages`` at once, reading nothing meanwhile (so they queue up at the server),
    then read everything: the audio bytes, the text messages and the close."""
    audio, texts = bytearray(), []
    with connect(ws_url(server) + query) as websocket:
        assert json.loads(websocket.recv())["type"] == "ready"
        for message in messages:
            websocket.send(message)
        try:
            while True:
                message = websocket.recv(timeout=30)
                if isinstance(message, bytes):
                    audio += message
                else:
                    texts.append(json.loads(message))
        except Exception:  # the close arrives as ConnectionClosed
            pass
        return bytes(audio), texts, websocket.close_code, websocket.close_reason


def test_chunks_that_queue_up_are_taken_together_and_the_output_is_the_same(server):
    """A client that sends faster than the stream is processed: the messages waiting are
    pushed as one chunk, which changes nothing in the output; every message is counted."""
    audio = random_audio(48000, seed=21)
    chunks = [raw(audio[i:i + 160]) for i in range(0, len(audio), 160)]
    out, texts, code, _ = burst(server, "?sample_rate=48000&model=denoiser_48k",
                                [*chunks, json.dumps({"type": "end"})])
    whole = httpx.post(f"{server.url}/enhance", files={"file": ("a.raw", raw(audio))},
                       data={"sample_rate": "48000", "model": "denoiser_48k"}, timeout=60)
    assert out == whole.content
    assert code == 1000 and texts[-1]["chunks"] == len(chunks) == 300


def test_a_bad_chunk_behind_good_ones_closes_after_their_audio_is_sent(server):
    """Good chunks queued in front of a bad one are still enhanced and sent: nothing the
    client sent before the bad chunk is lost."""
    audio = random_audio(48000, seed=22)
    good = [raw(audio[i:i + 4800]) for i in range(0, len(audio), 4800)]
    bad = np.array([0.1, np.nan], "<f4").tobytes()
    out, _, code, reason = burst(server, "?sample_rate=48000&model=passthrough_model_lite",
                                 [*good, bad])
    ready = len(audio) // 1024 * 1024  # whole 1024-sample frames of the ×3 passthrough
    assert same_bits(np.frombuffer(out, "<f4"), audio[:ready] * np.float32(3))
    assert code == 4422 and "NaN" in (reason or "")


def metric(server: LiveServer, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} metric")


def test_a_client_that_leaves_mid_stream_leaves_nothing_behind(server):
    with connect(ws_url(server) + "?sample_rate=48000&model=denoiser_48k") as websocket:
        websocket.recv()
        for i in range(20):
            websocket.send(raw(random_audio(4800, seed=i)))
    deadline = time.monotonic() + 10
    while (metric(server, "enhance_pool_sessions") != 0
           or metric(server, "enhance_active_streams") != 0):
        assert time.monotonic() < deadline, "the stream left state behind"
        time.sleep(0.1)


def close_of(server: LiveServer, query: str, messages: tuple[bytes | str, ...] = (),
             headers: dict | None = None) -> tuple[int | None, str | None]:
    """Open a stream, send ``messages``, and return how the server closed it."""
    with connect(ws_url(server) + query, additional_headers=headers) as websocket:
        try:
            for message in messages:
                websocket.send(message)
            while True:
                websocket.recv(timeout=10)
        except Exception:  # the close arrives as ConnectionClosed
            pass
        return websocket.close_code, websocket.close_reason


@pytest.mark.parametrize("query, messages, code, reason", [
    ("?sample_rate=48000&model=nope", (), 4404, "unknown model 'nope'"),
    ("?sample_rate=7999", (), 4400, "sample_rate must be between 8000 and 192000"),
    ("?sample_rate=fast", (), 4400, "sample_rate and channels must be integers"),
    # Numbers as POST /enhance reads them: ASCII digits only, each parameter once.
    ("?sample_rate=48_000", (), 4400, "must be integers in ASCII digits"),
    ("?sample_rate=%2048000%20", (), 4400, "must be integers in ASCII digits"),
    ("?sample_rate=%D9%A4%D9%A8%D9%A0%D9%A0%D9%A0", (), 4400, "integers in ASCII digits"),
    ("?sample_rate=48000&channels=%EF%BC%92", (), 4400, "integers in ASCII digits"),
    ("?sample_rate=48000&sample_rate=16000", (), 4400, "parameter 'sample_rate' is given twice"),
    ("?sample_rate=48000&atten_lim_db=1_0", (), 4400, "atten_lim_db must be a number of dB"),
    ("", (), 4400, "sample_rate is required"),
    ("?sample_rate=48000&encoding=mp3", (), 4415, "encoding must be one of f32le, s16le"),
    ("?sample_rate=48000&channels=0", (), 4400, "channels must be 1 to 8"),
    ("?sample_rate=48000&volume=11", (), 4400, "unknown parameter 'volume'"),
    ("?sample_rate=48000&atten_lim_db=-3", (), 4400, "atten_lim_db must be a number of dB"),
    ("?sample_rate=48000", (b"\x00" * 7,), 4422, "7 bytes is not a whole number of 1-channel"),
    ("?sample_rate=48000&channels=2", (b"\x00" * 12,), 4422, "of 2-channel f32le frames"),
    ("?sample_rate=48000", (np.array([0.1, np.nan], "<f4").tobytes(),), 4422, "NaN"),
    ("?sample_rate=48000", (np.array([np.inf], "<f4").tobytes(),), 4422, "infinite"),
    ("?sample_rate=48000", ("stop please",), 4400, 'text messages must be {"type": "end"}'),
    ("?sample_rate=48000", (), 4408, "nothing received for 2 s"),
])
def test_bad_streams_are_closed_with_a_code_and_reason_then_a_good_one_works(
        server, query, messages, code, reason):
    got_code, got_reason = close_of(server, query, messages)
    assert got_code == code and reason in (got_reason or ""), (got_code, got_reason)
    audio = random_audio(1000, seed=3)
    out = np.concatenate(list(stream_enhance_sync(ws_url(server), [audio], 48000,
                                                  model="passthrough_model_lite")))
    assert same_bits(out, audio * np.float32(3))


def test_a_message_over_the_size_limit_closes_with_1009(tmp_path):
    with LiveServer(MODELS_DIR=str(tmp_path), MAX_STREAM_MESSAGE_KB="4") as server:
        code, _ = close_of(server, "?sample_rate=48000", (b"\x00" * 8192,))
        assert code == 1009
        server.assert_serves()


def test_the_key_and_the_stream_limit_are_enforced(tmp_path):
    with LiveServer(MODELS_DIR=str(tmp_path), API_KEY="k3y", MAX_STREAMS="1") as server:
        assert close_of(server, "?sample_rate=48000")[0] == 4401
        assert close_of(server, "?sample_rate=48000&api_key=nope")[0] == 4401
        with connect(ws_url(server) + "?sample_rate=48000&api_key=k3y") as first:
            assert json.loads(first.recv())["type"] == "ready"
            code, reason = close_of(server, "?sample_rate=48000",
                                    headers={"X-API-Key": "k3y"})
            assert code == 1013 and "MAX_STREAMS=1" in (reason or "")
        audio = random_audio(2000, seed=4)
        out = np.concatenate(list(stream_enhance_sync(ws_url(server), [audio], 48000,
                                                      api_key="k3y")))
        assert same_bits(out, audio * np.float32(3))


def test_a_named_key_opens_a_stream(tmp_path):
    with LiveServer(MODELS_DIR=str(tmp_path), API_KEYS="alice:key-of-alice") as server:
        assert close_of(server, "?sample_rate=48000&api_key=alice")[0] == 4401
        audio = random_audio(2000, seed=5)
        out = np.concatenate(list(stream_enhance_sync(ws_url(server), [audio], 48000,
                                                      api_key="key-of-alice")))
        assert same_bits(out, audio * np.float32(3))


def test_a_worker_killed_mid_stream_ends_only_its_stream_with_a_reason(tmp_path):
    with LiveServer(MODELS_DIR=str(tmp_path), NUM_PROCESSES="1",
                    MIN_BLOCK_DEADLINE_S="60") as server:
        (worker,) = workers_of(server.process.pid)
        result: dict = {}

        def doomed() -> None:
            try:
                list(stream_enhance_sync(ws_url(server), [random_audio(48000, seed=5)], 48000))
            except StreamError as exc:
                result["error"] = exc

        os.kill(worker, signal.SIGSTOP)  # it will hold the stream's chunk
        thread = threading.Thread(target=doomed)
        thread.start()
        # Kill it once it holds the chunk (the only worker takes it at once), not after a
        # guessed pause: on a busy machine the chunk may take longer than that to arrive.
        deadline = time.monotonic() + 30
        while "enhance_pool_sessions 1.0" not in httpx.get(f"{server.url}/metrics").text:
            assert time.monotonic() < deadline, "the stream's chunk never reached the pool"
            time.sleep(0.05)
        os.kill(worker, signal.SIGKILL)
        thread.join(30)
        error = result["error"]
        assert error.code == 1011 and f"worker process {worker} was killed by SIGKILL" in (
            error.reason)
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        audio = random_audio(4800, seed=6)
        out = np.concatenate(list(stream_enhance_sync(ws_url(server), [audio], 48000)))
        assert same_bits(out, audio * np.float32(3))


def test_the_client_reports_the_server_close(server):
    with pytest.raises(StreamError, match="4404") as caught:
        list(stream_enhance_sync(ws_url(server), [np.zeros(10, np.float32)], 48000,
                                 model="nope"))
    assert caught.value.code == 4404 and "unknown model" in caught.value.reason


def test_a_stream_lasts_longer_than_the_header_timeout(tmp_path):
    with LiveServer(MODELS_DIR=str(tmp_path), HEADER_TIMEOUT_S="1") as server:
        audio = random_audio(48000 * 2, seed=7)
        chunks = [audio[i:i + 4800] for i in range(0, len(audio), 4800)]
        out = np.concatenate(list(stream_enhance_sync(ws_url(server), chunks, 48000,
                                                      realtime=True)))  # 2 s
        assert same_bits(out, audio * np.float32(3))
