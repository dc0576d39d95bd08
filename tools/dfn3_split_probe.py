"""One DeepFilterNet3 chain on two cores: the probes behind :mod:`enhancer.model.dfn3_blocks`.

A file is one chain of state. This measures, on 30 s of noisy real speech (tools.dfn3_check),
ways of giving one chain a second core, each against the blocked path on the merged step graph
(``Dfn3.process_block`` without block graphs, blocks of 546 hops), best of ``--repeats``,
interleaved (what was shipped combines the first and the last: docs/research-log.md):

- ``threads``: the three separate step graphs (``python -m tools.dfn3_separate FOLDER``), the
  encoder with the signal path in the caller, the ERB decoder and the deep-filter decoder each
  in its own thread, handed 32 hops at a time; checked bit for bit against the merged graph;
- ``processes``: the deep-filter decoder in a second process (its own GIL), the rest here;
- ``contention``: the graphs invoked in a tight loop, alone and beside each other;
- ``--block T [T ...]`` (needs TensorFlow): the merged step graph rebuilt for T frames a call
  (the GRUs unrolled, their input projections batched), checked bit for bit, timed per hop,
  and the memory its interpreter takes.

Run: ``python -m tools.dfn3_split_probe build/dfn3-separate [--block 4 16]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from enhancer.model.dfn3 import (
    DECODER_STATE,
    DF_ORDER,
    F32,
    HOP,
    NB_DF,
    NB_ERB,
    Dfn3,
    Dfn3State,
    Dfn3StepModel,
)
from enhancer.model.dfn3_blocks import Graph
from enhancer.paths import PROJECT_DIR

MERGED = PROJECT_DIR / "models" / "deepfilternet3_step.tflite"
ERB, DF = (slice(*DECODER_STATE[name]) for name in ("erb_dec", "df_dec"))
ENC = slice(0, ERB.start)  # the merged state's parts (tools.dfn3_export)
HANDOVER = 32


def _encode(dfn: Dfn3, enc: Graph, erb_db: np.ndarray, spec: np.ndarray, state: Dfn3State,
            enc_state: np.ndarray) -> list[np.ndarray]:
    erb, cplx = dfn.normalised(erb_db, spec[:NB_DF], state)
    return enc({"feat_erb": erb.reshape(1, 1, 1, NB_ERB),
                "feat_spec": cplx.reshape(1, 2, 1, NB_DF), "state": enc_state},
               ("e0", "e1", "e2", "e3", "emb", "c0", "lsnr", "new_state"))


class ThreadPipeline:
    """The encoder here, each decoder in its own thread (no stage skips: DeepFilterNet3's
    local SNR stays within libdf's thresholds on speech, which the bit check confirms)."""

    def __init__(self, dfn: Dfn3, folder: Path) -> None:
        self.dfn = dfn
        self.graphs = {name: Graph(folder / f"{name}.tflite")
                       for name in ("enc", "erb_dec", "df_dec")}

    def __call__(self, frames: np.ndarray, state: Dfn3State) -> np.ndarray:
        n = frames.shape[0]
        specs, spectra = self.dfn.analyse_block(frames, state)
        erbs = self.dfn.erb_db(specs)
        masks, coefs = np.empty((n, NB_ERB), F32), np.empty((n, 2 * NB_DF * DF_ORDER), F32)
        states = {"erb": state.net[ERB], "df": state.net[DF]}
        lanes: list[queue.SimpleQueue] = [queue.SimpleQueue(), queue.SimpleQueue()]

        def erb_lane() -> None:
            while (batch := lanes[0].get()) is not None:
                for t, (emb, e3, e2, e1, e0) in batch:
                    m, states["erb"] = self.graphs["erb_dec"](
                        {"emb": emb, "e3": e3, "e2": e2, "e1": e1, "e0": e0,
                         "state": states["erb"]}, ("m", "new_state"))
                    masks[t] = m.reshape(-1)

        def df_lane() -> None:
            while (batch := lanes[1].get()) is not None:
                for t, (emb, c0) in batch:
                    c, states["df"] = self.graphs["df_dec"](
                        {"emb": emb, "c0": c0, "state": states["df"]}, ("coefs", "new_state"))
                    coefs[t] = c.reshape(-1)

        threads = [threading.Thread(target=erb_lane), threading.Thread(target=df_lane)]
        for thread in threads:
            thread.start()
        enc_state, to_erb, to_df = state.net[ENC], [], []
        for t in range(n):
            e0, e1, e2, e3, emb, c0, _, enc_state = _encode(
                self.dfn, self.graphs["enc"], erbs[t], specs[t], state, enc_state)
            to_erb.append((t, (emb, e3, e2, e1, e0)))
            to_df.append((t, (emb, c0)))
            if len(to_erb) == HANDOVER or t == n - 1:
                lanes[0].put(to_erb)
                lanes[1].put(to_df)
                to_erb, to_df = [], []
        for lane in lanes:
            lane.put(None)
        for thread in threads:
            thread.join()
        state.net = np.concatenate([enc_state, states["erb"], states["df"]])
        state.silent = 0
        taps = coefs.view(np.complex64).reshape(n, NB_DF, DF_ORDER)
        return self.dfn.synthesise_block(spectra, masks, taps, np.ones(n, bool), state)


def _df_process(folder: Path, connection: Any) -> None:
    graph = Graph(folder / "df_dec.tflite")
    while (message := connection.recv()) is not None:
        df_state, rows = message
        coefs = np.empty((len(rows), 2 * NB_DF * DF_ORDER), F32)
        for t, row in enumerate(rows):
            c, df_state = graph({"emb": row[:512].reshape(1, 1, 512),
                                 "c0": row[512:].reshape(1, 64, 1, NB_DF), "state": df_state},
                                ("coefs", "new_state"))
            coefs[t] = c.reshape(-1)
        connection.send((df_state, coefs))


class ProcessPipeline:
    """The deep-filter decoder in a second process, handed 32 hops at a time."""

    def __init__(self, dfn: Dfn3, folder: Path) -> None:
        self.dfn = dfn
        self.enc, self.erb = Graph(folder / "enc.tflite"), Graph(folder / "erb_dec.tflite")
        context = multiprocessing.get_context("spawn")
        self.here, there = context.Pipe()
        self.process = context.Process(target=_df_process, args=(folder, there), daemon=True)
        self.process.start()

    def __call__(self, frames: np.ndarray, state: Dfn3State) -> np.ndarray:
        n = frames.shape[0]
        specs, spectra = self.dfn.analyse_block(frames, state)
        erbs = self.dfn.erb_db(specs)
        masks, parts = np.empty((n, NB_ERB), F32), []
        enc_state, erb_state, df_state = state.net[ENC], state.net[ERB], state.net[DF]
        rows = np.empty((HANDOVER, 512 + 64 * NB_DF), F32)
        sent = 0
        for t in range(n):
            e0, e1, e2, e3, emb, c0, _, enc_state = _encode(
                self.dfn, self.enc, erbs[t], specs[t], state, enc_state)
            m, erb_state = self.erb({"emb": emb, "e3": e3, "e2": e2, "e1": e1, "e0": e0,
                                     "state": erb_state}, ("m", "new_state"))
            masks[t] = m.reshape(-1)
            rows[t % HANDOVER, :512], rows[t % HANDOVER, 512:] = emb.reshape(-1), c0.reshape(-1)
            if t % HANDOVER == HANDOVER - 1 or t == n - 1:
                if sent:  # the previous batch's coefficients, and the state after it
                    df_state, coefs = self.here.recv()
                    parts.append(coefs)
                self.here.send((df_state, rows[:t % HANDOVER + 1].copy()))
                sent += 1
        df_state, coefs = self.here.recv()
        parts.append(coefs)
        state.net = np.concatenate([enc_state, erb_state, df_state])
        state.silent = 0
        taps = np.concatenate(parts).view(np.complex64).reshape(n, NB_DF, DF_ORDER)
        return self.dfn.synthesise_block(spectra, masks, taps, np.ones(n, bool), state)

    def close(self) -> None:
        self.here.send(None)
        self.process.join()


def _timed(method: Any, frames: np.ndarray, dfn: Dfn3) -> tuple[float, np.ndarray]:
    state, started = dfn.new_state(), time.perf_counter()
    out = np.concatenate([method(frames[i:i + 546], state) for i in range(0, len(frames), 546)])
    return time.perf_counter() - started, out


def _loop(index: int, paths: list[Path], seconds: float, report: Any) -> None:
    graphs = [Graph(p) for p in paths]
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for graph in graphs:
            graph.it.invoke()
        count += 1
    report.put((index, (time.perf_counter() - started) / count * 1e6))


def contention(folder: Path) -> None:
    """Invokes alone and beside each other, in two processes (no GIL between them)."""
    context = multiprocessing.get_context("spawn")
    front = [folder / "enc.tflite", folder / "erb_dec.tflite"]
    for together in ([front], [[folder / "df_dec.tflite"]], [[MERGED]],
                     [front, [folder / "df_dec.tflite"]], [[MERGED], [MERGED]]):
        report = context.SimpleQueue()
        procs = [context.Process(target=_loop, args=(i, paths, 4.0, report))
                 for i, paths in enumerate(together)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        took = dict(report.get() for _ in together)
        print(" beside ".join(f"{' + '.join(p.stem for p in paths)}: {took[i]:.1f} µs a call"
                              for i, paths in enumerate(together)))


def _block_model(frames_per_call: int) -> bytes:
    """The merged step graph (tools.dfn3_export) for T frames a call, as TFLite."""
    from tools.dfn3_export import build_module, convert, read_archive, state_layout

    archive = read_archive()
    return convert(build_module(archive, state_layout(archive), frames_per_call))


def block_graph(frames_per_call: int, audio: np.ndarray) -> None:
    """The merged graph for T frames a call against the shipped one, bit for bit and speed."""
    import tempfile

    from tools.dfn3_check import real_features

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "block.tflite"
        path.write_bytes(_block_model(frames_per_call))
        one, block = Graph(MERGED), Graph(path)
        context = multiprocessing.get_context("spawn")
        report = context.SimpleQueue()
        for model in (MERGED, path):  # each in a fresh process, away from TensorFlow's memory
            probe = context.Process(target=_interpreter_memory, args=(model, report))
            probe.start()
            probe.join()
        print(f"interpreter memory: one frame a call {report.get()} MB, "
              f"{frames_per_call} a call {report.get()} MB")
    erb, spec = real_features(Dfn3(Dfn3StepModel(MERGED)), audio)
    n = erb.shape[0] // frames_per_call * frames_per_call
    names = ("m", "coefs", "lsnr", "new_state")
    results, seconds = {}, {}
    for label, graph, width in (("one frame a call", one, 1),
                                (f"{frames_per_call} a call", block, frames_per_call)):
        started, state, outs = time.perf_counter(), np.zeros(one.it.get_tensor(
            one.inputs["state"]).shape, F32), []
        for b in range(0, n, width):
            out = graph({"feat_erb": erb[b:b + width].reshape(1, 1, width, NB_ERB),
                         "feat_spec": np.transpose(spec[b:b + width], [1, 0, 2])[None],
                         "state": state}, names)
            state = out[-1]
            outs.append(out[:3])
        seconds[label] = time.perf_counter() - started
        results[label] = [np.concatenate(parts) for parts in zip(*outs, strict=True)]
    same = all(np.array_equal(a, b) for a, b in zip(*results.values(), strict=True))
    for label, took in seconds.items():
        print(f"{label}: {took / n * 1e6:.1f} µs a hop")
    print(f"bit for bit: {same}")


def _interpreter_memory(path: Path, report: Any) -> None:
    before = _resident_mb()
    Graph(path).it.invoke()
    report.put(_resident_mb() - before)


def _resident_mb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024


def main(argv: list[str] | None = None) -> int:
    from tools.dfn3_check import noisy_speech

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("separate", type=Path, help="python -m tools.dfn3_separate's folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block", type=int, nargs="*", default=[],
                        help="also probe T frames a call (each T in a process of its own)")
    args = parser.parse_args(argv)
    audio = noisy_speech()[:30 * 48000]
    frames = audio.reshape(-1, HOP)
    dfn = Dfn3(Dfn3StepModel(MERGED))  # no block graphs: the path they are compared with
    threads, processes = ThreadPipeline(dfn, args.separate), ProcessPipeline(dfn, args.separate)
    methods = {"process_block, merged graph": dfn.process_block,
               "three threads": threads, "two processes": processes}
    best = dict.fromkeys(methods, float("inf"))
    outputs = {}
    for _ in range(args.repeats):
        for name, method in methods.items():
            took, outputs[name] = _timed(method, frames, dfn)
            best[name] = min(best[name], took)
    processes.close()
    for name, took in best.items():
        same = np.array_equal(outputs[name], outputs["process_block, merged graph"])
        print(f"{name}: {len(audio) / 48000 / took:.1f}× real time, "
              f"{best['process_block, merged graph'] / took:.2f}× that; "
              f"bit for bit: {same}")
    contention(args.separate)
    context = multiprocessing.get_context("spawn")
    for frames_per_call in args.block:  # a process each: its peak memory is its own
        probe = context.Process(target=block_graph, args=(frames_per_call, audio))
        probe.start()
        probe.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
