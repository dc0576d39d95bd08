"""Export trained recurrent weights as the service runs them, and the model card.

Two forms (``FORMS``). ``chain``, the shipped one: one step graph
(:func:`~training.recurrent_model.chain_step_module`) with one state from a file's first frame
to its last, files run as a chain of stream steps (the card's ``chained``), so a file has no
seams and equals its stream. ``cells``: the file graph on a grid of cells, each from a zero
state some warm-up before it, run side by side (a long file spreads over every worker), and
its stream step twin; the output differs from one state run through by up to a few dB in
the second after each cell boundary (``bench/seams.md``).

Run: ``python -m training.export_recurrent WEIGHTS OUTPUT [--form cells]`` re-exports saved
weights (the card's recipe is kept from the card already beside ``OUTPUT``; weights of the
shipped model: :mod:`training.recover_weights`); :mod:`training.train_recurrent` calls
:func:`export_with_card` when it has trained.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from training import real_data
from training.denoiser_model import (
    FEATURES,
    FRAME,
    HIGH_ALLOWANCE,
    HIGH_FROM_HZ,
    HOLD,
    HOP,
    LOW_BINS,
    RATE,
    REFERENCE_HZ,
    RELEASE,
    TOP_HZ,
)
from training.recurrent_model import (
    GRID,
    LEAD,
    NORM,
    UNITS,
    WARM,
    build_training,
    cell_module,
    chain_state_size,
    chain_step_module,
    export_fp32,
    stream_state_size,
    stream_step_module,
)
from training.train import enhance_frames, evaluate, held_out_pairs

FORMS = ("chain", "cells")


def held_out_scores(model_path: Path, root: Path, seed: int, smoke: bool) -> dict:
    """The exported model's scores on the held-out set (:func:`training.train.evaluate`),
    each piece in one call, as the service runs a file (a chain's) or one that fits one
    segment (cells')."""
    from enhancer.model.loading import load_model_runner

    real_data.fetch(root.parent, real_data.SMOKE_PACKAGES if smoke else real_data.PACKAGES)
    runner = load_model_runner(model_path)
    context = json.loads(model_path.with_suffix(".json").read_text())["context_frames"]
    pairs, clean_wide = held_out_pairs(root, seed + 100, 12 if smoke else 60)
    scores = evaluate(lambda audio: enhance_frames(runner.run, audio, context), pairs,
                      clean_wide)
    return {"held_out_real_speech": scores, "held_out_mixtures": len(pairs)}


def export_graphs(training: Any, output: Path, form: str) -> dict:
    """Write ``output`` in ``form`` (and the cells' stream step twin beside it); return the
    card's fields that say how the service runs it."""
    units = training.get_layer("gains").gru1.cell.units
    if form == "chain":
        export_fp32(chain_step_module(training), output)
        return {"context_frames": WARM, "chained": True,
                "stream_step": {"model": output.name, "state_size": chain_state_size(units)},
                "how": f"Files and streams run with one state from their first frame to their "
                       f"last (a chain of stream steps), from silence {WARM} frames before "
                       f"it: no seams, and a stream equals the file bit for bit."}
    step_path = output.with_name(f"{output.stem}_stream_step.tflite")
    export_fp32(cell_module(training), output)
    export_fp32(stream_step_module(training), step_path)
    return {"context_frames": LEAD, "grid_frames": GRID,
            "stream_step": {"model": step_path.name, "state_size": stream_state_size(units)},
            "how": f"Files run on a grid of {GRID}-frame cells, each from a zero state "
                   f"{LEAD - NORM + 1} frames before it; streams match them bit for bit."}


def export_with_card(weights: Path, output: Path, units: int, recipe: dict, root: Path,
                     seed: int, smoke: bool = False, form: str = "chain") -> dict:
    """Write ``output`` in ``form`` (:func:`export_graphs`) and its card; return the card."""
    training = build_training(units)
    training.load_weights(weights)
    how = export_graphs(training, output, form)
    weights_count = sum(int(np.prod(w.shape)) for w in training.get_weights())
    card = {
        "name": output.stem, "sample_rate": RATE, "frame_length": FRAME, "hop_length": HOP,
        "window": "sqrt-hann", **{k: v for k, v in how.items() if k != "how"},
        "description": f"Speech denoiser: a causal recurrent spectral mask (two GRUs of "
                       f"{units} units on ERB band energies), held over {HOLD} frames with a "
                       f"release of {RELEASE} per frame, low bins smoothed over 3, bands above "
                       f"{HIGH_FROM_HZ / 1000:g} kHz kept at what the speech below could "
                       f"hold there, 48 kHz, "
                       f"1024-sample frames, 50 % overlap, causal. {how['how']}",
        "recipe": {
            **recipe,
            "features": f"log energies in 48 ERB bands + {LOW_BINS} low bins of each frame, "
                        f"floor 1e-5, minus their mean over the last {NORM} frames",
            "model": f"dense {FEATURES}-{units} (relu), GRU {units}, GRU {units} (residual), "
                     f"dense {units + FEATURES}-{FEATURES} (sigmoid) on the GRUs' output and "
                     f"the features: band and low-bin gains on the complex spectrum, none "
                     f"above {TOP_HZ / 1000:g} kHz; {weights_count:,} weights, float32; "
                     f"serving holds each gain at least {RELEASE}^k times the gain k <= "
                     f"{HOLD} frames back, averages each low bin's gain with its 2 "
                     f"neighbours' and keeps each band above {HIGH_FROM_HZ / 1000:g} kHz at "
                     f"least at min(1, {HIGH_ALLOWANCE:g} x its width x the "
                     f"{REFERENCE_HZ[0] / 1000:g}-{REFERENCE_HZ[1] / 1000:g} kHz energy per "
                     f"bin the gains keep / its energy)^2: what speech could hold there",
        },
    }
    output.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    card["scores"] = held_out_scores(output, root, seed, smoke)
    output.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--units", type=int, default=UNITS)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--form", choices=FORMS, default="chain")
    parser.add_argument("--smoke", action="store_true",
                        help="scores on a few held-out pieces only (a check of the export)")
    args = parser.parse_args()
    old = json.loads(args.output.with_suffix(".json").read_text())
    recipe = {k: v for k, v in old["recipe"].items() if k not in ("features", "model")}
    card = export_with_card(args.weights, args.output, args.units, recipe,
                            real_data.DEFAULT_CACHE / "root", args.seed, args.smoke, args.form)
    print(json.dumps(card, indent=2))
