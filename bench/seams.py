"""Seams: does a file cut up for the pool show where it was cut?

The pool spreads long files over its workers. Both shipped models are chained (their cards'
``chained``): a file runs as one chain of pieces (``max_segment_frames`` frames each) that
hand the model's state on, so the output should not depend on the cut at all. This compares
the pool's output, default settings, with the file run in one piece (the same model, one
piece as long as the file), in the 100 ms windows on either side of every piece boundary,
those the one-piece output holds above −50 dBFS: the level difference and the SI-SDR of each
window. The bar (issue 33): under 1 dB and at least 20 dB in every such window. The worst
100 ms window anywhere in the file is shown beside it.

``--cells`` adds the denoiser as it shipped before: the same weights on a grid of cells (192
frames, 2.048 s), each from a zero state 48 frames before it, run side by side
(``training.export_recurrent --form cells``, exported here from the shipped weights), against
the shipped chain in one piece.

Run (a minute or two on 2 cores): ``python -m bench.seams --cells`` (writes
``bench/seams.md``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.metrics import si_sdr
from enhancer.model.card import load_card
from enhancer.paths import PROJECT_DIR

SAMPLE_RATE = 48000
WINDOW = SAMPLE_RATE // 10
SILENT_DBFS = -50.0
DENOISER = PROJECT_DIR / "models" / "denoiser_48k.tflite"
DFN3 = PROJECT_DIR / "models" / "deepfilternet3_step.tflite"
OUT = PROJECT_DIR / "bench" / "seams.md"


@dataclass(frozen=True)
class Seams:
    model: str
    seconds: float
    boundaries: int
    windows: int  # around the boundaries, above the silence floor
    level_db: float  # the largest level difference there
    si_sdr_db: float  # the lowest SI-SDR there
    anywhere_level_db: float  # the same over every 100 ms window of the file
    anywhere_si_sdr_db: float
    whole_si_sdr_db: float

    @property
    def passes(self) -> bool:
        return self.level_db < 1.0 and self.si_sdr_db >= 20.0


def one_piece(model_path: Path, audio: np.ndarray) -> np.ndarray:
    """``audio`` (48 kHz mono) through a chained model in one piece, in this process."""
    from enhancer.audio_enhancer import AudioEnhancer

    card = load_card(model_path, SAMPLE_RATE)
    frames = audio.shape[0] // (card.hop_length or card.frame_length or 1) + 16
    with AudioEnhancer(model_path, 0, max_segment_frames=frames) as enhancer:
        return enhancer.enhance_audio(audio)


def cells_form(folder: Path) -> Path:
    """The shipped denoiser's weights exported as cells on a grid into ``folder``."""
    from training.export_recurrent import export_graphs
    from training.recover_weights import recover

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "denoiser_48k_cells.tflite"
    how = export_graphs(recover(DENOISER), model, "cells")
    card = json.loads(DENOISER.with_suffix(".json").read_text())
    for field in ("context_frames", "chained", "stream_step", "grid_frames"):
        card.pop(field, None)
    card.update({k: v for k, v in how.items() if k != "how"}, name="denoiser_48k (cells)")
    model.with_suffix(".json").write_text(json.dumps(card, indent=2))
    return model


def boundaries(model_path: Path, num_samples: int, segment_frames: int) -> list[int]:
    """Output samples where a new piece (a chained model's) or cell (on a grid) starts
    through the pool: frame j of overlapping frames reaches back to output sample
    (j - 1)·hop; a model's latency moves its output that much earlier."""
    card = load_card(model_path, SAMPLE_RATE)
    hop = card.hop_length or card.frame_length or 0
    step = (card.grid_frames or segment_frames) * hop
    shift = -card.latency_samples - (hop if card.window != "none" else 0)
    return [b for b in range(step + shift, num_samples, step) if b > 0]


def _level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20))


def _window_scores(pooled: np.ndarray, reference: np.ndarray,
                   starts: list[int]) -> tuple[int, float, float]:
    """How many windows starting at ``starts`` are above the silence floor, their largest
    level difference and lowest SI-SDR."""
    counted, worst_level, worst_sdr = 0, 0.0, np.inf
    for at in starts:
        ref, out = reference[at:at + WINDOW], pooled[at:at + WINDOW]
        if ref.shape[0] < WINDOW or _level_db(ref) < SILENT_DBFS:
            continue
        counted += 1
        worst_level = max(worst_level, abs(_level_db(out) - _level_db(ref)))
        if not np.array_equal(out, ref):
            worst_sdr = min(worst_sdr, si_sdr(out, ref))
    return counted, worst_level, float(worst_sdr)


def compare(model: str, pooled: np.ndarray, reference: np.ndarray,
            cuts: list[int]) -> Seams:
    around = sorted({s for b in cuts for s in (b - WINDOW, b) if s >= 0})
    counted, level, sdr = _window_scores(pooled, reference, around)
    _, anywhere_level, anywhere_sdr = _window_scores(
        pooled, reference, list(range(0, pooled.shape[0], WINDOW)))
    whole = np.inf if np.array_equal(pooled, reference) else si_sdr(pooled, reference)
    return Seams(model, pooled.shape[0] / SAMPLE_RATE, len(cuts), counted, level, sdr,
                 anywhere_level, anywhere_sdr, float(whole))


def measure(model_path: Path, audio: np.ndarray, reference: np.ndarray,
            processes: int = 2) -> Seams:
    """``audio`` through a pool of ``processes`` workers (default settings) against
    ``reference``, the file run in one piece."""
    from enhancer.audio_enhancer import AudioEnhancer

    with AudioEnhancer(model_path, processes) as enhancer:
        pooled = enhancer.enhance_audio(audio)
        segment_frames = enhancer.max_segment_frames
        name = enhancer.card.name
    return compare(name, pooled, reference,
                   boundaries(model_path, audio.shape[0], segment_frames))


def _db(value: float) -> str:
    return "identical" if np.isinf(value) else f"{value:.1f} dB"


def table(rows: list[Seams]) -> str:
    lines = [
        "| model | audio | boundaries | windows | largest level difference | lowest SI-SDR | "
        "anywhere: level | anywhere: SI-SDR | whole file SI-SDR | bar (< 1 dB, ≥ 20 dB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.model} | {r.seconds:.1f} s | {r.boundaries} | {r.windows} | "
                     f"{r.level_db:.2f} dB | {_db(r.si_sdr_db)} | {r.anywhere_level_db:.2f} dB "
                     f"| {_db(r.anywhere_si_sdr_db)} | {_db(r.whole_si_sdr_db)} | "
                     f"{'met' if r.passes else 'missed'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cells", action="store_true",
                        help="also the denoiser's weights on a grid of cells (needs TensorFlow)")
    args = parser.parse_args()
    from bench.docs_sections import update_section
    from tools.dfn3_check import noisy_speech

    audio = noisy_speech()
    denoiser = one_piece(DENOISER, audio)
    rows = [measure(DENOISER, audio, denoiser), measure(DFN3, audio, one_piece(DFN3, audio))]
    if args.cells:
        rows.append(measure(cells_form(PROJECT_DIR / "build" / "seams"), audio, denoiser))
    text = (f"# Seams\n\nNoisy real speech ({audio.shape[0] / SAMPLE_RATE:.1f} s: the shipped "
            "clip with pink noise at 5 dB SNR, then the shipped noisy recording), through a "
            "pool of 2 workers with default settings, against the file run in one piece. "
            "Windows of 100 ms on either side of every piece or cell boundary, those above "
            "−50 dBFS; *anywhere*: every 100 ms window of the file. "
            "`python -m bench.seams --cells`\n\n" + table(rows) + "\n")
    args.out.write_text(text)
    print(text)
    if args.out == OUT:
        update_section("seams")


if __name__ == "__main__":
    main()
