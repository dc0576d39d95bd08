"""DeepFilterNet3's block graphs in three threads (enhancer.model.dfn3_blocks): the step graph's
output bit for bit, a block they cannot take given back untouched, a failing graph's error
reaching the caller with no thread left behind."""

from __future__ import annotations

import copy
import hashlib
import json
import threading

import numpy as np
import pytest

from enhancer.model import dfn3_blocks
from enhancer.model.dfn3 import HOP, Dfn3, Dfn3StepModel
from enhancer.model.dfn3_blocks import Dfn3Blocks
from enhancer.model.dfn3_runner import Dfn3StepRunner
from tests.helpers import ROOT

MODEL = ROOT / "models" / "deepfilternet3_step.tflite"


@pytest.fixture(scope="module")
def model() -> Dfn3StepModel:
    return Dfn3StepModel(MODEL)


@pytest.fixture(scope="module")
def blocks(model) -> Dfn3Blocks:
    found = Dfn3Blocks.from_card(MODEL, model.decoders)
    assert found is not None, "the card names no block graphs"
    return found


@pytest.fixture(scope="module")
def hops() -> np.ndarray:
    """6 s of noisy real speech as hops, with digital silence at the start and in the middle
    (the loud run between them a whole number of graph calls long)."""
    from tools.dfn3_check import noisy_speech

    audio = noisy_speech()[:6 * 48000].copy()
    audio[:4 * HOP] = 0
    audio[2 * 48000:2 * 48000 + 10 * HOP] = 0
    return audio.reshape(-1, HOP)


def _blockwise(engine: Dfn3, hops: np.ndarray, size: int) -> tuple[np.ndarray, object]:
    state = engine.new_state()
    out = np.concatenate([engine.process_block(hops[i:i + size], state)
                          for i in range(0, len(hops), size)])
    return out, state


def test_the_card_names_the_shipped_block_graphs():
    facts = json.loads(MODEL.with_suffix(".json").read_text())["block_graphs"]
    assert facts["frames_per_call"] == 4
    for name, file in facts["files"].items():
        digest = hashlib.sha256((MODEL.parent / file).read_bytes()).hexdigest()
        assert digest == facts["sha256"][name], name


def test_a_worker_runs_files_through_the_block_graphs():
    assert isinstance(Dfn3StepRunner(MODEL).engine.blocks, Dfn3Blocks)


@pytest.mark.parametrize("atten_lim_db", [100.0, 12.0])
@pytest.mark.parametrize("size", [33, 546])
def test_blocks_through_the_block_graphs_equal_the_step_graph_bit_for_bit(
        model, blocks, hops, size, atten_lim_db, monkeypatch):
    expected, one = _blockwise(Dfn3(model, atten_lim_db), hops, size)
    engine = Dfn3(model, atten_lim_db, blocks=blocks)
    ran = []
    run = blocks.run
    monkeypatch.setattr(blocks, "run", lambda *a: ran.append(1) or run(*a))
    got, many = _blockwise(engine, hops, size)
    assert ran, "no block went through the block graphs"
    assert got.tobytes() == expected.tobytes()
    for name in ("net", "analysis", "synthesis", "mean_norm", "unit_norm", "spectra", "silent"):
        assert np.array_equal(getattr(many, name), getattr(one, name)), name


def test_a_block_whose_local_snr_would_skip_a_decoder_is_given_back_untouched(
        model, blocks, hops, monkeypatch):
    """The block graphs run both decoders on every hop; where libdf would skip one (here: a
    threshold moved so that every hop does), the block goes hop by hop instead."""
    monkeypatch.setattr(dfn3_blocks, "MIN_DB", 100.0)
    engine = Dfn3(model, blocks=blocks)
    state = engine.new_state()
    engine.process_block(hops[:100], state)
    before = copy.deepcopy(state)
    assert blocks.run(engine, hops[100:200], state) is None
    for name, value in vars(before).items():
        assert np.array_equal(getattr(state, name), value), name
    expected, _ = _blockwise(Dfn3(model), hops, 546)
    assert _blockwise(engine, hops, 546)[0].tobytes() == expected.tobytes()


def test_a_failing_decoder_thread_raises_in_the_caller_and_leaves_no_thread(
        model, blocks, hops, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the deep-filter decoder failed")

    monkeypatch.setitem(blocks.graphs, "df_dec", broken)
    threads = threading.active_count()
    engine = Dfn3(model, blocks=blocks)
    with pytest.raises(RuntimeError, match="deep-filter decoder failed"):
        engine.process_block(hops[200:400], engine.new_state())
    assert threading.active_count() == threads
