"""Convert a TensorFlow SavedModel to a TFLite flatbuffer with a dynamic batch dimension.

Run as a script: ``python tfl_model_exporter.py SAVED_MODEL_PATH [TFLITE_MODEL_PATH]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_TFLITE_PATH = "passthrough_model_lite.tflite"


def export_to_tflite(saved_model_path: str | Path,
                     tflite_model_path: str | Path = DEFAULT_TFLITE_PATH) -> Path:
    """Convert ``saved_model_path`` to TFLite and write it to ``tflite_model_path``.

    The serving signature's batch dimension stays dynamic (``[-1, frame, 1]``), so the
    interpreter can run any number of frames in one invoke.

    Returns
    -------
    Path
        The written TFLite file.
    """
    saved_model_path = Path(saved_model_path)
    if not saved_model_path.is_dir():
        raise ValueError(f"saved_model_path is not a SavedModel directory: {saved_model_path}")

    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_path))
    tflite_bytes = converter.convert()
    out = Path(tflite_model_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a failed export never leaves a truncated model behind.
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(tflite_bytes)
    tmp.replace(out)
    return out


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("saved_model_path", type=Path, help="SavedModel directory to convert")
    parser.add_argument("tflite_model_path", type=Path, nargs="?",
                        default=Path(DEFAULT_TFLITE_PATH),
                        help="TFLite file to write (default: %(default)s)")
    return parser


if __name__ == "__main__":
    args = _build_parser().parse_args()
    print(export_to_tflite(args.saved_model_path, args.tflite_model_path))
