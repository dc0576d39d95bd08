"""Build the passthrough model (output = input × 3) and save it as a SavedModel.

Run as a script::

    python passthrough_model.py [--frame-length 1024] [--output models/passthrough_model]

TensorFlow is imported here only; nothing on the serving path needs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_FRAME_LENGTH = 1024
DEFAULT_SAVED_MODEL_PATH = Path("models") / "passthrough_model"
GAIN = 3.0


def build_model(frame_length: int = DEFAULT_FRAME_LENGTH):
    """Return a Keras model mapping ``[batch, frame_length, 1]`` float32 to input × 3.

    Parameters
    ----------
    frame_length : int
        Samples per frame; the TFLite model's frame length comes from this.
    """
    if isinstance(frame_length, bool) or not isinstance(frame_length, int):
        raise TypeError(f"frame_length must be an int, got {type(frame_length).__name__}")
    if frame_length < 1:
        raise ValueError(f"frame_length must be positive, got {frame_length}")

    import keras

    # A plain multiply, not Rescaling: x * 3 + 0 would turn -0.0 into +0.0.
    inputs = keras.Input(shape=(frame_length, 1), dtype="float32", name="audio")
    outputs = keras.ops.multiply(inputs, GAIN)
    return keras.Model(inputs, outputs, name="passthrough_x3")


def save_model(frame_length: int, saved_model_path: str | Path) -> Path:
    """Build the model and export it as a TensorFlow SavedModel directory."""
    path = Path(saved_model_path)
    build_model(frame_length).export(str(path), verbose=False)
    return path


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame-length", type=int, default=DEFAULT_FRAME_LENGTH,
                        help="samples per frame (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_SAVED_MODEL_PATH,
                        help="SavedModel directory to write (default: %(default)s)")
    return parser


if __name__ == "__main__":
    args = _build_parser().parse_args()
    print(save_model(args.frame_length, args.output))
