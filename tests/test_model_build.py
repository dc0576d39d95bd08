"""The shipped model can be rebuilt from the two scripts, and gives the same output."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from enhancer.model.runner import ModelRunner
from tests.helpers import PASSTHROUGH, ROOT, random_audio, same_bits


def test_scripts_rebuild_an_equivalent_model(tmp_path):
    saved_model = tmp_path / "saved"
    tflite = tmp_path / "rebuilt.tflite"
    for command in (["passthrough_model.py", "--output", str(saved_model)],
                    ["tfl_model_exporter.py", str(saved_model), str(tflite)]):
        result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    rebuilt, shipped = ModelRunner(tflite), ModelRunner(PASSTHROUGH)
    assert rebuilt.frame_length == shipped.frame_length == 1024
    frames = random_audio(7 * 1024, seed=11).reshape(7, 1024)
    assert same_bits(rebuilt.run(frames), shipped.run(frames))
    assert same_bits(rebuilt.run(frames), frames * np.float32(3))


def test_wrong_shapes_are_refused_naming_path_and_shape(tmp_path):
    import tensorflow as tf

    import passthrough_model
    from enhancer.errors import ModelError

    def export(model, name):
        path = tmp_path / name
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        return path

    keras = tf.keras
    flat = keras.Sequential([keras.Input((1024,)), keras.layers.Rescaling(3.0)])
    stereo = keras.Sequential([keras.Input((1024, 2)), keras.layers.Rescaling(3.0)])
    for path, shape in ((export(flat, "flat.tflite"), r"\[-1, 1024\]"),
                        (export(stereo, "stereo.tflite"), r"\[-1, 1024, 2\]")):
        try:
            ModelRunner(path)
        except ModelError as exc:
            assert str(path) in str(exc)
            assert __import__("re").search(shape, str(exc)), str(exc)
        else:
            raise AssertionError(f"{path} was accepted")
    # Another frame length is fine: it is read from the model.
    odd = export(passthrough_model.build_model(480), "odd.tflite")
    runner = ModelRunner(odd)
    assert runner.frame_length == 480
    frames = random_audio(480 * 3, seed=1).reshape(3, 480)
    assert same_bits(runner.run(frames), frames * np.float32(3))
    from enhancer import AudioEnhancer

    with AudioEnhancer(odd, num_processes=2) as enhancer:
        audio = random_audio(10_007, seed=2)
        assert same_bits(enhancer.enhance_audio(audio), audio * np.float32(3))
