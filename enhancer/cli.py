"""The command line: ``enhance`` (or ``python enhance_file.py``).

Parses arguments, reads the settings, and calls :mod:`enhancer.files`; every user error exits
with status 2 and one line on stderr, never a traceback. Workers never import this module.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from audio_manipulations import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, RAW_FORMATS, check_sample_rate
from enhancer.enhancer import AudioEnhancer
from enhancer.errors import EnhancerError
from enhancer.files import FileProblem, enhance_folder, enhance_to_file, load_audio


def build_parser(prog: str = "enhance") -> argparse.ArgumentParser:
    from enhancer.settings import DEFAULT_MODEL_PATH

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Enhance an audio file (or every audio file in a folder) with a TFLite "
                    "model. WAV and FLAC are read with their own rate and encoding; other "
                    "files are headerless samples in --format at --sample-rate. The output "
                    "has the input's format, rate, channels and length.")
    parser.add_argument("--source-file", required=True, type=Path,
                        help="audio file, or folder of audio files, to enhance")
    parser.add_argument("--destination-file", required=True, type=Path,
                        help="where to write the result (a folder when the source is one); "
                             "written atomically, never left half-written")
    parser.add_argument("--model-path", type=Path, default=None,
                        help=f"TFLite model, input [batch, frame, 1] float32 "
                             f"(default: $TF_MODEL_PATH or the speech denoiser, "
                             f"{DEFAULT_MODEL_PATH.name})")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="worker processes; 0 runs inline (default: $NUM_PROCESSES or "
                             "one per core)")
    parser.add_argument("--sample-rate", type=int, default=48000,
                        help=f"rate of headerless input in Hz, {MIN_SAMPLE_RATE}-"
                             f"{MAX_SAMPLE_RATE} (default: %(default)s)")
    parser.add_argument("--format", choices=sorted(RAW_FORMATS), default="f32le",
                        help="encoding of headerless input: float32 or int16, little-endian "
                             "(default: %(default)s)")
    return parser


def run_cli(argv: list[str] | None = None, prog: str = "enhance") -> int:
    """Parse ``argv``, enhance, and return the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from enhancer.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    model_path = args.model_path or settings.model_path
    num_processes = settings.NUM_PROCESSES if args.num_processes is None else args.num_processes
    source, destination = args.source_file, args.destination_file
    try:
        if num_processes < 0:
            raise FileProblem(f"--num-processes must be 0 or more, got {num_processes}")
        try:
            check_sample_rate(args.sample_rate, "--sample-rate")
        except ValueError as exc:
            raise FileProblem(str(exc)) from None
        if source.is_dir():
            if destination.exists() and not destination.is_dir():
                raise FileProblem(f"--destination-file must be a folder when --source-file "
                                  f"is one: {destination}")
            with AudioEnhancer(model_path, num_processes,
                               model_sample_rate=settings.DESIRED_SAMPLE_RATE) as enhancer:
                skipped = enhance_folder(enhancer, source, destination, args.format,
                                         args.sample_rate)
            if skipped:
                raise FileProblem(f"{skipped} file(s) in {source} could not be enhanced")
            return 0
        if not source.exists():
            raise FileProblem(f"source file not found: {source}")
        if not destination.parent.is_dir():
            raise FileProblem(f"cannot write {destination}: folder {destination.parent} "
                              f"does not exist")
        # Decode before starting workers, so bad input fails fast.
        audio = load_audio(source, args.format, args.sample_rate)
        with AudioEnhancer(model_path, num_processes,
                           model_sample_rate=settings.DESIRED_SAMPLE_RATE) as enhancer:
            clipped = enhance_to_file(enhancer, audio, destination)
        if clipped:
            print(f"warning: {clipped} samples clipped to the integer range", file=sys.stderr)
    except EnhancerError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted\n")
    return 0


def main() -> None:
    """The ``enhance`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    sys.exit(run_cli())
