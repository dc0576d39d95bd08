"""Overlap-add framing and model cards."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from enhancer import AudioEnhancer
from enhancer.errors import ModelError
from enhancer.model.framing import Framing
from tests.helpers import PASSTHROUGH, random_audio


def carded_passthrough(tmp_path, **card) -> str:
    model = tmp_path / "ola.tflite"
    shutil.copy(PASSTHROUGH, model)
    model.with_suffix(".json").write_text(json.dumps(card))
    return model


@pytest.mark.parametrize("frame, hop", [(1024, 512), (1024, 256), (480, 240)])
@pytest.mark.parametrize("length", [0, 1, 511, 1024, 1025, 48000, 100_003])
def test_framing_reconstructs_exactly_what_the_model_gives(frame, hop, length):
    framing = Framing(frame, hop, "sqrt-hann")
    audio = random_audio(length, seed=length)
    frames = framing.split(audio)
    assert frames.num_frames == framing.frame_count(length)
    processed = frames.block(0, frames.num_frames) * np.float32(3)
    np.testing.assert_allclose(framing.join(processed, length), audio * 3, rtol=0, atol=1e-6)


@pytest.mark.parametrize("length", [1, 1023, 1025, 48000, 1_000_003])
def test_overlap_add_through_the_pool_gives_three_times_the_input(tmp_path, length):
    model = carded_passthrough(tmp_path, sample_rate=48000, frame_length=1024, hop_length=512,
                               window="sqrt-hann")
    audio = random_audio(length, seed=length)
    with AudioEnhancer(model, num_processes=2) as pool:
        assert pool.framing.overlapping and pool.framing.hop_length == 512
        result = pool.enhance_audio(audio)
    assert result.shape == audio.shape and result.dtype == np.float32
    np.testing.assert_allclose(result, audio * 3, rtol=0, atol=1e-6)


def test_card_rate_is_the_models_rate(tmp_path):
    model = carded_passthrough(tmp_path, sample_rate=16000)
    with AudioEnhancer(model, num_processes=0, model_sample_rate=48000) as inline:
        assert inline.model_sample_rate == 16000
        assert inline.card.name == "ola" and not inline.framing.overlapping


@pytest.mark.parametrize("card, message", [
    ("{not json", "is not readable JSON"),
    ([1, 2], "must hold a JSON object"),
    ({}, "'sample_rate' is missing"),
    ({"sample_rate": "48000"}, "'sample_rate' must be an integer, got '48000'"),
    ({"sample_rate": 4000}, "'sample_rate' must be 8000-192000 Hz, got 4000"),
    ({"sample_rate": 48000, "hop_length": 0}, "'hop_length' must be positive"),
    ({"sample_rate": 48000, "hop_length": 500, "window": "sqrt-hann"},
     "'hop_length' 500 must divide the frame length 1024"),
    ({"sample_rate": 48000, "hop_length": 512}, "overlapping frames need window 'sqrt-hann'"),
    ({"sample_rate": 48000, "window": "sqrt-hann"}, "consecutive frames need window 'none'"),
    ({"sample_rate": 48000, "window": "hamming"}, "'window' must be one of none, sqrt-hann"),
    ({"sample_rate": 48000, "frame_length": 512},
     "'frame_length' is 512 but the model's input frame is 1024"),
    ({"sample_rate": 48000, "stream_step": "m.tflite"}, "'stream_step' must be a dict"),
    ({"sample_rate": 48000, "stream_step": {"model": "../m.tflite", "state_size": 8}},
     "'stream_step.model' must be a file name beside the card, got '../m.tflite'"),
    ({"sample_rate": 48000, "stream_step": {"model": "m.tflite", "state_size": 0}},
     "'stream_step.state_size' must be 1-1048576, got 0"),
    ({"sample_rate": 48000, "stream_step": {"model": "gone.tflite", "state_size": 8}},
     "'stream_step.model' .*gone.tflite is missing"),
    ({"sample_rate": 48000, "grid_frames": -1}, "'grid_frames' must be 0-4096, got -1"),
    ({"sample_rate": 48000, "grid_frames": 192},
     "a model with 'grid_frames' needs a 'stream_step'"),
    ({"sample_rate": 48000, "chained": True}, "a 'chained' model needs a 'stream_step'"),
    ({"sample_rate": 48000, "chained": "yes"}, "'chained' must be true or false, got 'yes'"),
    ({"sample_rate": 48000, "chained": True, "grid_frames": 4,
      "stream_step": {"model": "m.tflite", "state_size": 8}},
     "a 'chained' model has no 'grid_frames': its state never restarts"),
    ({"sample_rate": 48000, "hop_length": 512, "window": "sqrt-hann",
      "latency_samples": 480}, "'latency_samples' needs consecutive frames"),
    ({"sample_rate": 48000, "latency_samples": -1},
     "'latency_samples' must be 0-65536, got -1"),
])
def test_bad_cards_are_refused_naming_card_and_field(tmp_path, card, message):
    model = tmp_path / "m.tflite"
    shutil.copy(PASSTHROUGH, model)
    model.with_suffix(".json").write_text(card if isinstance(card, str) else json.dumps(card))
    with pytest.raises(ModelError, match=message) as error:
        AudioEnhancer(model, num_processes=0)
    assert str(model.with_suffix(".json")) in str(error.value)


def test_a_stream_step_that_is_not_one_is_refused_naming_it(tmp_path):
    model = carded_passthrough(tmp_path, sample_rate=48000,
                               stream_step={"model": "ola.tflite", "state_size": 8})
    with pytest.raises(ModelError, match=r"stream step model .*ola.tflite inputs must be "
                                         r"\[n, 1024, 1\] and \[1, 8\] float32"):
        AudioEnhancer(model, num_processes=0)


def test_a_segment_limit_below_one_frame_is_refused_naming_it():
    with pytest.raises(ValueError, match="max_segment_frames must be positive, got 0"):
        AudioEnhancer(PASSTHROUGH, num_processes=0, max_segment_frames=0)
