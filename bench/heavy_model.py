"""Build a compute-heavy TFLite model for benchmarks: a stack of 1-D convolutions.

About 1 ms per 1024-sample frame on one core, so parallel speed-up shows; the passthrough
model is too cheap to show it. Input and output ``[batch, 1024, 1]`` float32, like the
shipped model. Run: ``python -m bench.heavy_model [OUTPUT.tflite]``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "heavy_model.tflite"


def build_heavy_model(frame_length: int = 1024, channels: int = 64, layers: int = 3):
    import keras

    inputs = keras.Input(shape=(frame_length, 1), dtype="float32")
    x = keras.layers.Conv1D(channels, 9, padding="same", activation="relu")(inputs)
    for _ in range(layers):
        x = keras.layers.Conv1D(channels, 9, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv1D(1, 9, padding="same")(x)
    return keras.Model(inputs, outputs, name="heavy_conv_stack")


def main(output: Path = DEFAULT_OUTPUT) -> Path:
    from tfl_model_exporter import export_to_tflite

    keras_model = build_heavy_model()
    with tempfile.TemporaryDirectory() as saved_model:
        keras_model.export(saved_model, verbose=False)
        return export_to_tflite(saved_model, output)


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT))
