"""DeepFilterNet3's file path on two cores: its three graphs, four hops a call, in three threads.

A file is one chain of state, so it is not cut over the workers (that would leave seams, and a
stream of it would no longer equal it bit for bit). Within the chain, though, the encoder, the
ERB decoder and the deep-filter decoder are three chains of their own: each decoder needs only
the encoder's outputs and its own state. So a block of loud hops runs as a pipeline, each
graph in its own thread (``Interpreter.invoke`` lets go of the GIL)::

    caller: features (the normalisations), hop by hop
            enc graph, 4 hops a call ──┬──► [emb, e3, e2, e1, e0] ──► erb thread: erb_dec ──► masks
                                       └──► [emb, c0] ──────────────► df thread: df_dec ──► coefs
            joins both, then the block's synthesis (Dfn3.synthesise_block)

The graphs are ``make models``' block graphs (``tools.dfn3_export``): the step graph's outputs
bit for bit (the card records it; tests/test_dfn3.py checks it), so a file still equals a stream
of it. They run where libdf runs both decoders on every hop (a local SNR within −15…35 dB,
DeepFilterNet3's whole range); a block that leaves it is given back untouched, for the hop by
hop path. The threads are started for each block, so they take the caller's scheduling class
and niceness (a job's blocks stay in the idle class).
"""

from __future__ import annotations

import copy
import json
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enhancer.model.dfn3 import DF_ORDER, F32, MAX_DF_DB, MAX_ERB_DB, MIN_DB, NB_DF, NB_ERB

if TYPE_CHECKING:
    from enhancer.model.dfn3 import Dfn3, Dfn3State

GRAPHS = ("enc", "erb_dec", "df_dec")
HANDOVER = 4  # graph calls handed to a decoder's thread at a time
ENCODER_OUT = ("e0", "e1", "e2", "e3", "emb", "c0", "lsnr", "new_state")


class Graph:
    """One block graph's interpreter: feeds by name in, the named outputs back."""

    def __init__(self, path: Path) -> None:
        from enhancer.model.runner import load_interpreter

        self.it = load_interpreter(path, 1, "DeepFilterNet3 block graph")
        runner = self.it.get_signature_runner("serving_default")
        self.inputs = {k: v["index"] for k, v in runner.get_input_details().items()}
        self.outputs = {k: v["index"] for k, v in runner.get_output_details().items()}
        del runner  # it holds the interpreter's buffers, which invoke() refuses

    def __call__(self, feeds: dict[str, np.ndarray], names: Iterable[str]) -> list[np.ndarray]:
        for key, value in feeds.items():
            self.it.set_tensor(self.inputs[key], value)
        self.it.invoke()
        return [self.it.get_tensor(self.outputs[k]) for k in names]


class Dfn3Blocks:
    """The three block graphs of a DeepFilterNet3 step graph, and :meth:`run`."""

    def __init__(self, folder: Path, files: dict[str, str], frames: int,
                 decoders: dict[str, slice]) -> None:
        self.graphs = {name: Graph(folder / files[name]) for name in GRAPHS}
        self.frames = frames
        self.encoder = slice(0, decoders["erb_dec"].start)
        self.erb_state, self.df_state = decoders["erb_dec"], decoders["df_dec"]

    @classmethod
    def from_card(cls, model_path: Path, decoders: dict[str, slice]) -> Dfn3Blocks | None:
        """The block graphs the step graph's card names, or None where it names none."""
        from enhancer.model.card import card_path_for

        card = card_path_for(model_path)
        facts = json.loads(card.read_text()).get("block_graphs") if card.exists() else None
        if not facts:
            return None
        return cls(card.parent, facts["files"], facts["frames_per_call"], decoders)

    def run(self, engine: Dfn3, frames: np.ndarray, state: Dfn3State) -> np.ndarray | None:
        """``engine.process_block`` of loud ``frames``, bit for bit, or None (``state`` as it
        was) where a hop's local SNR would have libdf skip a decoder."""
        whole = len(frames) // self.frames * self.frames
        before = copy.deepcopy(state)
        specs, spectra = engine.analyse_block(frames[:whole], state)
        masks = np.empty((whole, NB_ERB), F32)
        coefs = np.empty((whole, NB_DF, DF_ORDER), np.complex64)
        states = {"erb": state.net[self.erb_state], "df": state.net[self.df_state]}

        def erb_dec(t: int, emb: Any, e3: Any, e2: Any, e1: Any, e0: Any) -> None:
            m, states["erb"] = self.graphs["erb_dec"](
                {"emb": emb, "e3": e3, "e2": e2, "e1": e1, "e0": e0, "state": states["erb"]},
                ("m", "new_state"))
            masks[t:t + self.frames] = m.reshape(self.frames, NB_ERB)

        def df_dec(t: int, emb: Any, c0: Any) -> None:
            c, states["df"] = self.graphs["df_dec"](
                {"emb": emb, "c0": c0, "state": states["df"]}, ("coefs", "new_state"))
            coefs[t:t + self.frames] = c.view(np.complex64).reshape(self.frames, NB_DF, DF_ORDER)

        with _Lanes(erb_dec, df_dec) as lanes:
            encoder, lsnr = self._encode(engine, specs, state, lanes)
        if lsnr.min() < MIN_DB or lsnr.max() > min(MAX_ERB_DB, MAX_DF_DB):
            state.__dict__.update(before.__dict__)
            return None
        state.net = np.concatenate([encoder, states["erb"], states["df"]])
        state.silent = 0  # every hop loud, both stages run
        out = np.empty((len(frames), frames.shape[1]), F32)
        out[:whole] = engine.synthesise_block(spectra, masks, coefs, np.ones(whole, bool), state)
        for t in range(whole, len(frames)):  # fewer than a graph call's hops
            out[t] = engine.process_frame(frames[t], state)
        return out

    def _encode(self, engine: Dfn3, specs: np.ndarray, state: Dfn3State,
                lanes: _Lanes) -> tuple[np.ndarray, np.ndarray]:
        """The encoder over the block, its outputs handed to the decoders' threads: its state
        after the block, and every hop's local SNR."""
        n, erbs = self.frames, engine.erb_db(specs)
        encoder, snrs = state.net[self.encoder], []
        erb, cplx = np.empty((n, NB_ERB), F32), np.empty((2, n, NB_DF), F32)
        for t in range(0, specs.shape[0] - n + 1, n):
            for k in range(n):
                erb[k], cplx[:, k] = engine.normalised(erbs[t + k], specs[t + k, :NB_DF], state)
            e0, e1, e2, e3, emb, c0, lsnr, encoder = self.graphs["enc"](
                {"feat_erb": erb.reshape(1, 1, n, NB_ERB),
                 "feat_spec": cplx.reshape(1, 2, n, NB_DF), "state": encoder}, ENCODER_OUT)
            lanes.put((t, emb, e3, e2, e1, e0), (t, emb, c0))
            snrs.append(lsnr.reshape(-1))
        return encoder, np.concatenate(snrs) if snrs else np.zeros(0, F32)


class _Lanes:
    """Two threads, each running its function on the work handed to it in order; leaving the
    ``with`` block hands over what is left, joins them and raises what either raised."""

    def __init__(self, *work: Callable[..., None]) -> None:
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in work]
        self._pending: list[list[tuple]] = [[] for _ in work]
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._serve, args=(q, w), daemon=True)
                         for q, w in zip(self._queues, work, strict=True)]

    def __enter__(self) -> _Lanes:
        for thread in self._threads:
            thread.start()
        return self

    def put(self, *items: tuple) -> None:
        for pending, item in zip(self._pending, items, strict=True):
            pending.append(item)
        if len(self._pending[0]) == HANDOVER:
            self._hand_over()

    def _hand_over(self) -> None:
        for q, pending in zip(self._queues, self._pending, strict=True):
            q.put(pending)
        self._pending = [[] for _ in self._queues]

    def __exit__(self, *exc: object) -> None:
        self._hand_over()
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()
        if self._errors and exc[0] is None:
            raise self._errors[0]

    def _serve(self, work_queue: queue.SimpleQueue, work: Callable[..., None]) -> None:
        while (batch := work_queue.get()) is not None:
            if self._errors:
                continue  # drain: the caller raises the first error when it joins
            try:
                for item in batch:
                    work(*item)
            except BaseException as error:
                self._errors.append(error)
