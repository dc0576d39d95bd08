"""EXPERIMENT: widen trained 256-unit weights to more GRU units, computing the same function
(net2net-style): new units get a fresh model's random incoming weights, and nothing flows from
them to the old units or to the head until training moves it.

Run: ``python -m training.widen_experiment SRC.weights.h5 DST.weights.h5 384``, then
``python -m training.train_recurrent --units 384 --resume DST.weights.h5 --first-cycle 2``.
"""

from __future__ import annotations

import sys

import numpy as np

from training.recurrent_model import UNITS, build_training

ROLES = ("inp_w", "inp_b", "g1_w", "g1_u", "g1_b", "g2_w", "g2_u", "g2_b", "head_w", "head_b")


def widen(source: str, target: str, units: int) -> float:
    """Write the widened weights; return the largest output difference on random input."""
    old = build_training(UNITS)
    old.load_weights(source)
    new = build_training(units, seed=5)
    u = UNITS
    for role, weight, old_weight in zip(ROLES, new.weights, old.weights, strict=True):
        value, was = np.asarray(weight).copy(), np.asarray(old_weight)
        if role == "inp_w":
            value[:, :u] = was
        elif role == "inp_b":
            value[:u], value[u:] = was, 0
        elif role in ("g1_w", "g1_u", "g2_w", "g2_u"):  # gate blocks z, r, h
            for g in range(3):
                value[:u, g * units:g * units + u] = was[:, g * u:(g + 1) * u]
                value[u:, g * units:g * units + u] = 0  # new units -> old ones: nothing
        elif role in ("g1_b", "g2_b"):
            for g in range(3):
                value[:, g * units:g * units + u] = was[:, g * u:(g + 1) * u]
                value[:, g * units + u:(g + 1) * units] = 0
        elif role == "head_w":
            value[:u], value[u:units], value[units:] = was[:u], 0, was[u:]
        else:
            value[:] = was
        weight.assign(value)
    new.save_weights(target)
    x = np.random.default_rng(0).normal(size=(2, 255, 88)).astype(np.float32)
    return float(np.abs(np.asarray(old(x)) - np.asarray(new(x))).max())


if __name__ == "__main__":
    print("largest difference", widen(sys.argv[1], sys.argv[2], int(sys.argv[3])))
