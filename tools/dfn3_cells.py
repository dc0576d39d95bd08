"""What cutting a file into cells costs DeepFilterNet3: the measurement for the pool's design.

A pool spreads a file over its workers by cutting it into cells, each run from a fresh state
(zero GRU and convolution states, libdf's initial normalisation states) some warm-up before
it. This runs cells of ``--cell`` seconds with several warm-ups on noisy real speech
(tools.dfn3_check) and compares the stitched output with the file run in one piece: SI-SDR over
the whole signal, and in 100 ms windows (those the whole-file output holds above −50 dBFS) the
worst level difference and the worst SI-SDR. ``--hand-over`` starts each warm-up with parts of
the exact state the one-piece run had there instead (what a cheaper sequential pre-pass or a
neighbouring worker could supply): which parts decide the seams. Run:
``python -m tools.dfn3_cells``.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np

from enhancer.model.dfn3 import HOP, SAMPLE_RATE, Dfn3, Dfn3State, Dfn3StepModel
from enhancer.paths import PROJECT_DIR
from tools.dfn3_check import noisy_speech, si_sdr

WINDOW = SAMPLE_RATE // 10
PARTS = ("norm", "stft", "encoder", "net")


def hand_over(fresh: Dfn3State, exact: Dfn3State, parts: list[str], encoder: int) -> Dfn3State:
    """``fresh`` with the named parts of ``exact``: the normalisation states, the STFT's
    memory and spectra, the encoder's part of the network state, or all the network state."""
    if "norm" in parts:
        fresh.mean_norm, fresh.unit_norm = exact.mean_norm.copy(), exact.unit_norm.copy()
    if "stft" in parts:
        fresh.analysis, fresh.synthesis = exact.analysis.copy(), exact.synthesis.copy()
        fresh.spectra = exact.spectra.copy()
    if "net" in parts:
        fresh.net = exact.net.copy()
    elif "encoder" in parts:
        fresh.net[:encoder] = exact.net[:encoder]
    return fresh


def in_cells(dfn: Dfn3, audio: np.ndarray, cell: int, warm_up: int,
             snapshots: dict[int, Dfn3State], parts: list[str]) -> np.ndarray:
    """Raw output (as ``Dfn3.process``) with every cell of ``cell`` hops run from a fresh state
    (with the ``parts`` handed over) ``warm_up`` hops before it."""
    hops = len(audio) // HOP
    encoder = min(s.start for s in dfn.model.decoders.values())
    out = np.zeros(hops * HOP, np.float32)
    for start in range(0, hops, cell):
        first = max(0, start - warm_up)
        end = min(hops, start + cell)
        state = hand_over(dfn.new_state(), snapshots[first], parts, encoder)
        part = dfn.process(audio[first * HOP:end * HOP], state)
        out[start * HOP:end * HOP] = part[(start - first) * HOP:]
    return out


def window_figures(cells: np.ndarray, whole: np.ndarray) -> tuple[float, float]:
    """The worst level difference (dB) and SI-SDR (dB) over 100 ms windows with signal."""
    worst_level, worst_sdr = 0.0, float("inf")
    for at in range(0, len(whole) - WINDOW + 1, WINDOW):
        a, b = cells[at:at + WINDOW], whole[at:at + WINDOW]
        energy = float(np.mean(b.astype(np.float64) ** 2))
        if energy < 10 ** (-50 / 10):
            continue
        level = 10 * np.log10(np.mean(a.astype(np.float64) ** 2) / energy)
        worst_level = max(worst_level, abs(float(level)))
        worst_sdr = min(worst_sdr, si_sdr(a, b))
    return worst_level, worst_sdr


def one_piece(dfn: Dfn3, audio: np.ndarray) -> tuple[np.ndarray, dict[int, Dfn3State]]:
    """The whole file in one piece, and the state before every hop."""
    state, out, snapshots = dfn.new_state(), np.zeros_like(audio), {}
    for h in range(len(audio) // HOP):
        snapshots[h] = copy.deepcopy(state)
        out[h * HOP:(h + 1) * HOP] = dfn.process_frame(audio[h * HOP:(h + 1) * HOP], state)
    return out, snapshots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", type=float, default=4.0, help="seconds per cell")
    parser.add_argument("--warm-ups", type=float, nargs="+", default=[0.5, 1, 2, 4, 8])
    parser.add_argument("--hand-over", nargs="*", default=[], choices=PARTS)
    args = parser.parse_args(argv)
    audio = noisy_speech()
    audio = audio[:len(audio) // HOP * HOP]
    dfn = Dfn3(Dfn3StepModel(PROJECT_DIR / "models" / "deepfilternet3_step.tflite"))
    whole, snapshots = one_piece(dfn, audio)
    cell = int(args.cell * SAMPLE_RATE / HOP)
    print(f"{len(audio) / SAMPLE_RATE:.1f} s of noisy real speech, cells of {args.cell} s "
          f"({cell} hops), handed over: {', '.join(args.hand_over) or 'nothing'}")
    print("| warm-up | extra work | SI-SDR, whole signal | worst 100 ms level difference | "
          "worst 100 ms SI-SDR |\n| --- | --- | --- | --- | --- |")
    for seconds in args.warm_ups:
        warm_up = int(seconds * SAMPLE_RATE / HOP)
        cells = in_cells(dfn, audio, cell, warm_up, snapshots, args.hand_over)
        level, sdr = window_figures(cells, whole)
        print(f"| {seconds} s | {warm_up / cell:.0%} | {si_sdr(cells, whole):.1f} dB | "
              f"{level:.2f} dB | {sdr:.1f} dB |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
