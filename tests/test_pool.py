"""The worker pool against a plain in-process interpreter and numpy."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
import traceback
import tracemalloc
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from enhancer import AudioEnhancer
from enhancer.audio.formats import MAX_SAMPLE_MAGNITUDE
from enhancer.backends.pool import scheduling
from enhancer.errors import EnhancerClosed, InvalidAudio, ModelError, PoolBroken, WorkerCrashed
from enhancer.jobs.runner import job_stream
from enhancer.model.grid import ChannelJob
from enhancer.model.runner import ModelRunner
from tests.helpers import (
    DENOISER,
    PASSTHROUGH,
    niceness,
    process_gone,
    random_audio,
    run_python,
    same_bits,
    stopped,
)

LENGTHS = [1, 1023, 1024, 1025, 48000, 1_000_003]


# The shared two-worker ``pool`` and the ``inline`` reference (tests/conftest.py) serve every
# test that leaves them as it found them. A test that kills, stops, breaks or closes workers,
# or needs other settings, gets its own from ``make_enhancer``, closed when the test ends.


@pytest.fixture
def make_enhancer():
    """``make_enhancer(model=PASSTHROUGH, num_processes=2, **options)``: a fresh enhancer of
    the test's own, closed (again, if the test closed it) when the test ends."""
    made: list[AudioEnhancer] = []

    def make(model: Path = PASSTHROUGH, num_processes: int = 2, **options) -> AudioEnhancer:
        enhancer = AudioEnhancer(model, num_processes=num_processes, **options)
        made.append(enhancer)
        return enhancer

    yield make
    for enhancer in made:
        enhancer.close()


@pytest.fixture
def own_pool(make_enhancer) -> AudioEnhancer:
    """Two workers on the ×3 model that this test alone uses (and may kill)."""
    return make_enhancer()


@pytest.mark.parametrize("length", LENGTHS)
def test_pool_equals_inline_and_numpy_bit_for_bit(pool, inline, length):
    audio = random_audio(length, seed=length)
    from_pool = pool.enhance_audio(audio)
    assert same_bits(from_pool, audio * np.float32(3))
    assert same_bits(from_pool, inline.enhance_audio(audio))


def test_pool_equals_one_interpreter_run_on_all_frames(pool):
    audio = random_audio(5 * 1024, seed=7)
    reference = ModelRunner(PASSTHROUGH).run(audio.reshape(5, 1024)).reshape(-1)
    assert same_bits(pool.enhance_audio(audio), reference)


def test_negative_zero_and_extremes_pass_through_exactly(pool, inline):
    # Up to MAX_SAMPLE_MAGNITUDE; beyond it check_samples refuses (tests/test_stream_attacks).
    audio = np.array([-0.0, 0.0, 1e-30, -MAX_SAMPLE_MAGNITUDE, MAX_SAMPLE_MAGNITUDE],
                     dtype=np.float32)
    assert same_bits(pool.enhance_audio(audio), audio * np.float32(3))


def test_subnormals_come_out_as_the_interpreter_gives_them(pool, inline):
    # XNNPACK flushes subnormal floats to zero; the pool must match the model, not numpy.
    audio = np.array([1e-45, -1e-40, 1.0], dtype=np.float32)
    assert same_bits(pool.enhance_audio(audio), inline.enhance_audio(audio))


def test_empty_audio_gives_empty_result(pool):
    result = pool.enhance_audio(np.zeros(0, dtype=np.float32))
    assert result.dtype == np.float32 and result.shape == (0,)


def test_32_threads_each_get_their_own_audio(pool):
    inputs = [random_audio(int(n), seed=i) for i, n in
              enumerate(np.random.default_rng(0).integers(1, 200_000, size=32))]
    barrier = threading.Barrier(32)

    def call(audio):
        barrier.wait()
        return pool.enhance_audio(audio, timeout=60)

    with ThreadPoolExecutor(32) as executor:
        results = list(executor.map(call, inputs))
    for audio, result in zip(inputs, results, strict=True):
        assert same_bits(result, audio * np.float32(3))


def test_session_id_is_exclusive_while_running(pool):
    audio = random_audio(2_000_000, seed=1)
    future = pool.submit(audio, session_id="abc")
    with pytest.raises(ValueError, match="session_id 'abc' is already in use"):
        pool.submit(audio, session_id="abc")
    future.result(30)
    assert same_bits(pool.enhance_audio(audio[:10], session_id="abc"), audio[:10] * 3)


def test_progress_counts_every_frame(pool):
    done = []
    pool.enhance_audio(random_audio(300_000, seed=3), progress=done.append)
    assert sum(done) == 293  # ceil(300000 / 1024)
    assert len(done) > 1


def test_async_form_returns_the_same(pool, inline):
    import asyncio

    audio = random_audio(100_000, seed=5)
    for enhancer in (pool, inline):
        result = asyncio.run(enhancer.enhance_audio_async(audio))
        assert same_bits(result, audio * np.float32(3))


@pytest.mark.parametrize("bad, error, message", [
    ([0.1, 0.2], TypeError, "audio must be a numpy array"),
    (np.zeros(4, dtype=np.int16), TypeError, "audio must hold floats"),
    (np.zeros((2, 2, 2), dtype=np.float32), ValueError, "must be 1-D"),
    (np.array([0.0, np.nan], dtype=np.float32), InvalidAudio, "1 NaN or infinite"),
    (np.array([np.inf], dtype=np.float32), InvalidAudio, "NaN or infinite"),
])
def test_bad_audio_is_refused_naming_it(pool, bad, error, message):
    with pytest.raises(error, match=message):
        pool.enhance_audio(bad)
    assert same_bits(pool.enhance_audio(np.ones(3, np.float32)), np.full(3, 3, np.float32))


def test_sigkilled_worker_fails_its_call_then_pool_recovers(own_pool):
    enhancer = own_pool
    victim = enhancer.worker_pids[0]
    # Stopped first, so it is certain to be holding a block when it dies.
    os.kill(victim, signal.SIGSTOP)
    future = enhancer.submit(random_audio(2_000_000, seed=2))
    time.sleep(0.5)
    assert not future.done()
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerCrashed, match=rf"worker process {victim} was killed by SIGKILL"):
        future.result(timeout=10)
    assert time.monotonic() - killed_at < 10
    audio = random_audio(500_000, seed=4)
    assert same_bits(enhancer.enhance_audio(audio, timeout=30), audio * np.float32(3))
    assert enhancer.worker_restarts == 1
    assert victim not in enhancer.worker_pids and len(enhancer.worker_pids) == 2
    deadline = time.monotonic() + 10
    while not enhancer.is_ready and time.monotonic() < deadline:
        time.sleep(0.05)
    assert enhancer.is_ready


def test_one_live_lane_and_file_lanes_at_lower_priority_also_after_a_crash(
        make_enhancer):
    """Live chunks go first to the one worker at the service's own priority; the others run
    files at FILE_LANE_NICE more, and a replacement takes the lane of the worker it replaces."""
    own = os.nice(0)
    enhancer = make_enhancer(num_processes=3)
    pool = enhancer.backend
    for _ in range(2):  # as started, then with the live lane replaced
        lanes = {w.process.pid: w.live_lane for w in pool._workers}
        assert sorted(lanes.values()) == [False, False, True]
        assert {pid: niceness(pid) for pid in lanes} == {
            pid: own if live else min(19, own + pool.file_lane_nice)
            for pid, live in lanes.items()}
        live_pid = next(pid for pid, live in lanes.items() if live)
        os.kill(live_pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (live_pid in enhancer.worker_pids or not enhancer.is_ready) and (
                time.monotonic() < deadline):
            time.sleep(0.05)
    audio = random_audio(300_000, seed=5)
    assert same_bits(enhancer.enhance_audio(audio, timeout=30), audio * np.float32(3))


def idle_class_threads(pid: int) -> dict[int, float]:
    """The threads of ``pid`` at the idle scheduling class, and the CPU time each has used, s."""
    found = {}
    for tid in map(int, os.listdir(f"/proc/{pid}/task")):
        if os.sched_getscheduler(tid) == os.SCHED_IDLE:
            on_cpu_ns = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]
            found[tid] = int(on_cpu_ns) / 1e9
    return found


def run_as_job(enhancer: AudioEnhancer, audio: np.ndarray) -> np.ndarray:
    """``audio`` through a job's stream, in four blocks (as enhancer.jobs runs a job)."""
    stream = job_stream(enhancer, 48000, 1, None)

    async def run() -> np.ndarray:
        out = [await stream.push(block) for block in np.array_split(audio, 4)]
        return np.concatenate([*out, await stream.finish()])[:, 0]

    return asyncio.run(run())


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_a_jobs_segments_run_at_the_idle_class_while_streams_are_live_and_a_files_never(
        make_enhancer, monkeypatch):
    """Below a file lane's niceness: a woken live lane, API or client preempts a job's segment
    at once, where a nice one may run out its time slice first (make bench-jobs: streams' p99).
    With no stream live, a job runs as a file does, so nothing else can starve it."""
    # A stream's chunk counts as recent for the whole test, however busy the machine.
    monkeypatch.setattr(scheduling, "LIVE_RECENT_S", 3600.0)
    enhancer = make_enhancer(DENOISER, num_processes=1)
    (pid,) = enhancer.worker_pids
    audio = random_audio(5 * 48000, seed=11)
    whole = enhancer.enhance_audio(audio)
    assert same_bits(run_as_job(enhancer, audio), whole)
    assert idle_class_threads(pid) == {}  # neither a file's nor a job's with no stream live
    live = enhancer.open_stream(48000, 1, None)

    async def a_live_chunk() -> None:
        await live.push(random_audio(4800, seed=12))
        await live.finish()

    asyncio.run(a_live_chunk())
    assert same_bits(run_as_job(enhancer, audio), whole)
    (cpu,) = idle_class_threads(pid).values()
    assert cpu > 0  # the job's segments ran there


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_idle_thread_runs_calls_there_raises_what_they_raise_and_keeps_nothing():
    from enhancer.backends.pool.worker_process import IdleThread, SegmentFailed

    thread, seen = IdleThread(), []
    thread.run(lambda: seen.append((threading.current_thread().name,
                                    os.sched_getscheduler(0))))
    assert seen == [("background", os.SCHED_IDLE)]

    def fails() -> None:
        raise SegmentFailed(2) from ValueError("bad frames")

    with pytest.raises(SegmentFailed) as failed:
        thread.run(fails)
    assert failed.value.index == 2 and isinstance(failed.value.__cause__, ValueError)
    # Nothing a call held is kept once it is done: the worker closes its arena after.
    held = np.zeros(4)
    kept = weakref.ref(held)
    thread.run(lambda held=held: seen.append(held.size))
    del held
    assert kept() is None and seen[-1] == 4


def test_close_leaves_no_worker_and_refuses_new_work(own_pool):
    enhancer = own_pool
    pids = enhancer.worker_pids
    assert len(pids) == 2 and enhancer.is_ready
    enhancer.close()
    assert all(process_gone(pid) for pid in pids)
    assert not enhancer.is_ready
    with pytest.raises(EnhancerClosed):
        enhancer.enhance_audio(np.ones(4, np.float32))
    enhancer.close()  # twice is harmless


@pytest.mark.parametrize("ending", ["", "os._exit(0)", "os.kill(os.getpid(), 9)"])
def test_no_worker_outlives_its_parent(ending):
    code = (
        "import os, sys\n"
        "from enhancer import AudioEnhancer\n"
        "if __name__ == '__main__':\n"
        "    e = AudioEnhancer('models/passthrough_model_lite.tflite', 2)\n"
        "    print(' '.join(map(str, e.worker_pids)), flush=True)\n"
        f"    {ending or 'pass'}\n")
    result = run_python(code)
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 2, result.stderr
    deadline = time.monotonic() + 10
    while not all(process_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(process_gone(p) for p in pids)


def test_inline_mode_runs_in_this_process(inline):
    assert inline.worker_pids == [] and inline.is_ready
    audio = random_audio(70_000, seed=9)
    assert same_bits(inline.enhance_audio(audio), audio * np.float32(3))


def test_missing_model_is_refused_naming_the_path(make_enhancer, tmp_path):
    with pytest.raises(ModelError, match=f"model file not found: {tmp_path / 'nope.tflite'}"):
        make_enhancer(tmp_path / "nope.tflite", num_processes=0)


def test_garbage_model_is_refused_naming_the_path(make_enhancer, tmp_path):
    path = tmp_path / "garbage.tflite"
    path.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ModelError, match=f"cannot load model {path}"):
        make_enhancer(path)


@pytest.mark.parametrize("num_processes, error", [(-1, ValueError), (1.5, TypeError)])
def test_bad_num_processes(make_enhancer, num_processes, error):
    with pytest.raises(error, match="num_processes"):
        make_enhancer(num_processes=num_processes)


# ------------------------------------------------------------------ a broken pool


def test_workers_that_cannot_start_again_break_the_pool_with_one_clear_message(
        make_enhancer, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(PASSTHROUGH.read_bytes())
    enhancer = make_enhancer(model)
    model.unlink()  # every replacement worker now fails to load it
    for pid in enhancer.worker_pids:
        os.kill(pid, signal.SIGKILL)
    # Requests fail (WorkerCrashed) until the replacements have failed to load too.
    deadline = time.monotonic() + 20
    while not isinstance(_error_of(enhancer), PoolBroken):
        assert time.monotonic() < deadline, "the pool never broke"
        time.sleep(0.05)
    messages = set()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    depths = []
    for _ in range(200):
        with pytest.raises(PoolBroken) as caught:
            enhancer.enhance_audio(np.ones(48_000, np.float32), timeout=10)
        messages.add(str(caught.value))
        depths.append(len(traceback.extract_tb(caught.value.__traceback__)))
        del caught
    gc.collect()  # what is left now is kept for good
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(messages) == 1, messages
    assert f"workers cannot load {model}" in messages.pop()
    assert depths[0] == depths[-1]  # a fresh exception each time, no growing traceback
    assert grown < 1_000_000, f"{grown} bytes kept by 200 rejected requests"
    assert not enhancer.is_ready


def _error_of(enhancer: AudioEnhancer) -> Exception | None:
    try:
        enhancer.enhance_audio(np.ones(8, np.float32), timeout=10)
    except Exception as exc:
        return exc
    return None


def test_a_failing_collector_fails_every_request_at_once_and_says_so(own_pool, monkeypatch):
    enhancer = own_pool

    def boom() -> None:
        raise RuntimeError("injected")

    # Both workers frozen, so the first request is surely unfinished when the collector fails
    # (beside a CPU hog the collector once finished it before the failure was injected).
    with stopped(enhancer.worker_pids):
        stuck = enhancer.submit(random_audio(3_000_000, seed=8))
        monkeypatch.setattr(enhancer.backend, "_dispatch", boom)
        started = time.monotonic()
        with pytest.raises(PoolBroken, match="collector thread failed: RuntimeError: injected"):
            enhancer.enhance_audio(np.ones(8, np.float32), timeout=10)
        with pytest.raises(PoolBroken, match="collector thread failed"):
            stuck.result(timeout=10)
        assert time.monotonic() - started < 5
    assert not enhancer.is_ready
    with pytest.raises(PoolBroken, match="collector thread failed"):
        enhancer.enhance_audio(np.ones(8, np.float32), timeout=10)


def test_a_failing_overlap_add_join_fails_that_request_only(pool, monkeypatch):
    real_finish = ChannelJob.finish
    calls = []

    def finish_once(*args):  # the join of a request's segments, on the caller's side
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("injected")
        return real_finish(*args)

    monkeypatch.setattr(ChannelJob, "finish", finish_once)
    audio = random_audio(10_000, seed=10)
    with pytest.raises(MemoryError, match="injected"):
        pool.enhance_audio(audio, timeout=10)
    with pytest.raises(MemoryError, match="injected"):
        calls.clear()
        pool.submit(audio).result(timeout=10)
    assert same_bits(pool.enhance_audio(audio, timeout=10), audio * np.float32(3))
    assert pool.is_ready


def test_a_worker_failure_carries_the_workers_traceback(tmp_path):
    from enhancer.backends.pool.worker_process import RemoteTraceback, worker_failure

    error = worker_failure("the model failed: ValueError: bad", "Traceback...\nValueError: bad\n")
    assert isinstance(error, ModelError) and isinstance(error.__cause__, RemoteTraceback)
    assert "ValueError: bad" in "".join(traceback.format_exception(error))


def test_a_task_of_several_segments_is_each_segment_run_alone_and_names_a_failing_one():
    """A worker's task of several chunks gives each chunk's result as if it ran alone; when
    the model fails on one, the failure names that segment (the others run again)."""
    from enhancer.backends.pool.worker_process import SegmentFailed, process_audio, process_task
    from enhancer.model.card import framing_for, load_card
    from enhancer.model.grid import input_length, result_length
    from enhancer.model.loading import load_model_runner

    runner = load_model_runner(DENOISER)
    framing = framing_for(load_card(DENOISER, 48000), runner.frame_length)
    counts = np.array([1, 3, 2], "<u4")
    sizes = [input_length(framing, int(n)) for n in counts]
    samples = random_audio(sum(sizes), seed=9)
    out = np.full(sum(result_length(framing, int(n)) for n in counts), np.nan, np.float32)
    process_task(runner, framing, samples, counts, out)
    taken = written = 0
    for count, size in zip(counts.tolist(), sizes, strict=True):
        alone = np.empty(result_length(framing, count), np.float32)
        process_audio(runner, framing, samples[taken:taken + size], count, alone)
        assert same_bits(out[written:written + alone.shape[0]], alone)
        taken, written = taken + size, written + alone.shape[0]
    assert written == out.shape[0]

    class FailsOnSecondCall:
        calls = 0

        def run(self, frames: np.ndarray) -> np.ndarray:
            self.calls += 1
            if self.calls == 2:
                raise ValueError("bad frames")
            return frames

    with pytest.raises(SegmentFailed) as failed:
        process_task(FailsOnSecondCall(), framing, samples, counts, out)  # type: ignore[arg-type]
    assert failed.value.index == 1 and isinstance(failed.value.__cause__, ValueError)


def test_a_task_lays_out_stream_steps_with_their_state_and_each_equals_the_plain_run(
        lookback_model):
    """A task of a file's segment, a stream's first chunk (look-back and a zero state) and
    its next chunk (the state the first left, no look-back): each result equals the frames
    run with their look-back by the model itself (a stateless model with look-back)."""
    from enhancer.backends.pool.worker_process import (
        PLAIN,
        SegmentFailed,
        StreamSteps,
        process_audio,
        process_task,
    )
    from enhancer.model.card import framing_for, load_card
    from enhancer.model.grid import input_length, result_length
    from enhancer.model.runner import StreamStepRunner

    card = load_card(lookback_model, 48000)
    runner = ModelRunner(lookback_model)
    framing = framing_for(card, runner.frame_length)
    steps = StreamSteps(StreamStepRunner(card.stream_step_path, 1024, card.stream_state_size),
                        framing)
    size, hop = card.stream_state_size, framing.hop_length
    audio = random_audio(input_length(framing, 5), seed=4)  # 67 frames of look-back, then 5
    first, later = audio[:input_length(framing, 3)], audio[(67 + 3) * hop:]
    plain = random_audio(input_length(framing, 2), seed=5)
    samples = np.concatenate([plain, np.zeros(size, np.float32), first,
                              np.zeros(size, np.float32), later])
    out = np.full(result_length(framing, 2) * 2 + result_length(framing, 3) + 2 * size, np.nan,
                  np.float32)
    counts = np.array([2, 3, 2], "<u4")
    kinds = np.array([PLAIN, 67, 0], "<i4")
    # The second chunk's state is the first's result: run the first alone to get it.
    first_alone = np.empty(result_length(framing, 3) + size, np.float32)
    process_task(runner, framing, np.concatenate([np.zeros(size, np.float32), first]),
                 counts[1:2], first_alone, kinds[1:2], steps)
    at = plain.shape[0] + size + first.shape[0]
    samples[at:at + size] = first_alone[-size:]
    process_task(runner, framing, samples, counts, out, kinds, steps)

    alone = np.empty(result_length(framing, 2), np.float32)
    process_audio(runner, framing, plain, 2, alone)
    first_plain = np.empty(result_length(framing, 3), np.float32)
    process_audio(runner, framing, first, 3, first_plain)
    later_plain = np.empty(result_length(framing, 2), np.float32)
    process_audio(runner, framing, audio[3 * hop:], 2, later_plain)  # frames 3-4, look-back
    results = np.split(out, np.cumsum([alone.shape[0], first_plain.shape[0], size,
                                       later_plain.shape[0]]))
    assert same_bits(results[0], alone)
    assert same_bits(results[1], first_plain) and same_bits(results[1], first_alone[:-size])
    assert same_bits(results[2], first_alone[-size:])  # the state after the first chunk
    assert same_bits(results[3], later_plain) and results[4].shape == (size,)

    with pytest.raises(SegmentFailed) as failed:  # a step segment for a worker without one
        process_task(runner, framing, samples, counts, out, kinds, None)
    assert failed.value.index == 1 and "has no stream step" in str(failed.value.__cause__)


# ------------------------------------------------------------------ the watchdog


@pytest.mark.parametrize("stopped", ["one", "every"])
def test_a_stopped_worker_is_replaced_and_its_block_runs_elsewhere(make_enhancer, stopped):
    enhancer = make_enhancer(min_block_deadline_s=1.0)
    victims = enhancer.worker_pids[:1] if stopped == "one" else enhancer.worker_pids
    for pid in victims:
        os.kill(pid, signal.SIGSTOP)
    audio = random_audio(1_000_000, seed=12)
    started = time.monotonic()
    future = enhancer.submit(audio)
    seen_not_ready = False
    while not future.done():
        seen_not_ready |= not enhancer.is_ready
        time.sleep(0.01)
        assert time.monotonic() - started < 30, "the request is stuck"
    # The replacement is still loading: /ready says 503 while the pool is below strength.
    seen_not_ready |= not enhancer.is_ready
    assert same_bits(future.result(), audio * np.float32(3))
    assert seen_not_ready
    assert all(process_gone(pid) for pid in victims)
    assert enhancer.backend.hung_workers == len(victims)
    deadline = time.monotonic() + 20
    while not enhancer.is_ready:
        assert time.monotonic() < deadline, "the pool did not get back to full strength"
        time.sleep(0.05)
    assert len(enhancer.worker_pids) == 2 and enhancer.pending_sessions == 0


def test_a_block_that_hangs_twice_fails_with_a_clear_message(make_enhancer):
    enhancer = make_enhancer(num_processes=1, min_block_deadline_s=0.5)
    pool = enhancer.backend
    real_dispatch = pool._dispatch

    def dispatch_then_hang() -> None:  # every worker stops before it gets a segment
        for worker in pool._workers:
            if worker.ready and worker.task is None and not worker.hung:
                os.kill(worker.process.pid, signal.SIGSTOP)
        real_dispatch()

    pool._dispatch = dispatch_then_hang
    with pytest.raises(WorkerCrashed, match=r"gave no result within [\d.]+ s and was "
                                            r"killed while processing this request"):
        enhancer.enhance_audio(random_audio(5000, seed=13), timeout=30)
    assert pool.hung_workers == 2 and enhancer.pending_sessions == 0


def test_requests_take_turns_not_channels(pool):
    """A request of many channels gets one turn per round, like a mono one."""
    many = np.tile(random_audio(30 * 1024, seed=14)[:, None], (1, 256))  # 256 × 30 frames
    done_frames = []
    big = threading.Thread(target=lambda: pool.enhance(many, 48000,
                                                       progress=done_frames.append))
    big.start()
    while not done_frames:
        time.sleep(0.001)
    small = random_audio(1000, seed=15)
    assert same_bits(pool.enhance(small, 48000, timeout=30), small * np.float32(3))
    frames_before_small_finished = sum(done_frames)
    big.join()
    assert sum(done_frames) == 256 * 30
    # Taking turns per channel, the small request would wait for about every block of the
    # big one; per request, it waits for a few.
    assert frames_before_small_finished < 256 * 30 / 4, frames_before_small_finished


@pytest.fixture(scope="module")
def heavy_model(tmp_path_factory) -> Path:
    """The benchmarks' compute-heavy model (about 1 ms a frame), built with TensorFlow in a
    child process, as it is not committed."""
    path = tmp_path_factory.mktemp("heavy") / "heavy_model.tflite"
    result = run_python(f"from bench.heavy_model import main; main({str(path)!r})")
    assert result.returncode == 0, result.stderr[-2000:]
    return path


def test_live_chunks_do_not_wait_behind_a_files_segments(make_enhancer, heavy_model):
    """While a stream is live, a file never holds every worker: one is kept for the
    stream's chunks, which go first. (Without that, each chunk here waited about 70 ms for a
    worker to finish a file segment; with it, about 4 ms.)"""
    long = random_audio(2000 * 1024, seed=30)
    enhancer = make_enhancer(heavy_model)

    async def chunk_times() -> list[float]:
        stream = enhancer.open_stream(48000)
        await stream.push(np.zeros(1024, np.float32))  # a stream is live from here
        file = threading.Thread(target=enhancer.enhance_audio, args=(long,))
        file.start()
        await asyncio.sleep(0.2)  # the file's segments hold the workers
        times = []
        for i in range(30):
            started = time.perf_counter()
            await stream.push(random_audio(1024, seed=i))
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        running = file.is_alive()
        await asyncio.to_thread(file.join)
        assert running, "the file ended before the chunks were timed"
        return times

    times = asyncio.run(chunk_times())
    assert np.median(times) < 0.02, sorted(times)


# ------------------------------------------------------------------ shared memory


def arenas_of(pid: int, prefix: str | None = None) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"{prefix or f'enhancer-{pid}-'}*"))


def test_arenas_are_reused_after_a_crash_and_unlinked_on_close(own_pool):
    enhancer = own_pool
    prefix = enhancer.backend.arena_prefix
    before = arenas_of(os.getpid(), prefix)
    assert len(before) == 2
    os.kill(enhancer.worker_pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not (enhancer.is_ready and enhancer.worker_restarts == 1):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    audio = random_audio(300_000, seed=16)
    assert same_bits(enhancer.enhance_audio(audio), audio * np.float32(3))
    assert arenas_of(os.getpid(), prefix) == before  # the replacement took the dead one's
    enhancer.close()
    assert arenas_of(os.getpid(), prefix) == []


@pytest.mark.parametrize("ending", ["os._exit(0)", "os.kill(os.getpid(), 9)"])
def test_no_arena_outlives_a_parent_that_dies(ending):
    code = ("import os\n"
            "from enhancer import AudioEnhancer\n"
            "if __name__ == '__main__':\n"
            "    e = AudioEnhancer('models/passthrough_model_lite.tflite', 2)\n"
            "    print(os.getpid(), flush=True)\n"
            f"    {ending}\n")
    result = run_python(code)
    pid = int(result.stdout.split()[0])
    deadline = time.monotonic() + 10
    while arenas_of(pid) and time.monotonic() < deadline:  # the resource tracker unlinks them
        time.sleep(0.1)
    assert arenas_of(pid) == []
