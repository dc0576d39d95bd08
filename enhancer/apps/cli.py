"""The command line: ``enhance`` (or ``python enhance_file.py``).

Parses arguments, reads the settings, and calls :mod:`enhancer.apps.enhance_files`; every
user error exits with status 2 and one line on stderr, never a traceback; SIGINT exits 130
and SIGTERM 143, each with one line, leaving no temporary file. Workers never import this
module.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from enhancer.audio.formats import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    RAW_FORMATS,
    SUPPORTED_FORMATS_TEXT,
    Budget,
    check_sample_rate,
)
from enhancer.audio_enhancer import AudioEnhancer
from enhancer.errors import EnhancerError
from enhancer.model.attenuation import MAX_ATTEN_LIM_DB

if TYPE_CHECKING:
    from enhancer.apps.client import RemoteEnhancer
    from enhancer.config import EngineSettings

from enhancer.apps.enhance_files import (
    INTERRUPTS,
    FileProblem,
    enhance_file,
    enhance_folder,
    is_same_file,
    probe_file,
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so it unwinds (and cleans up) like Ctrl-C."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    INTERRUPTS.deliver(Terminated() if signum == signal.SIGTERM else KeyboardInterrupt())


@contextmanager
def _signals_unwind() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM unwind the main thread where it is safe to."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _on_signal)
                for signum in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        yield
        INTERRUPTS.check()  # a signal after the last safe point still ends in its status
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def build_parser(prog: str = "enhance") -> argparse.ArgumentParser:
    from enhancer.config import DEFAULT_MODEL_PATH

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Enhance an audio file (or every audio file in a folder) with a TFLite "
                    "model. WAV, FLAC, MP3 and Ogg (Vorbis, Opus) are read with their own "
                    "rate and encoding; other files are headerless samples in --format at "
                    "--sample-rate. The output has the input's format, rate, channels and "
                    "length. Files of any length are streamed in blocks, in little memory. "
                    f"Supported: {SUPPORTED_FORMATS_TEXT}.")
    parser.add_argument("--source-file", type=Path, default=None,
                        help="audio file, or folder of audio files, to enhance (required "
                             "but with --job-id)")
    parser.add_argument("--destination-file", required=True, type=Path,
                        help="where to write the result (a folder when the source is one); "
                             "written atomically, never left half-written")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow the destination to be the source itself (replaced once "
                             "the result is complete)")
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
    parser.add_argument("--atten-lim-db", type=float, default=None, metavar="DB",
                        help="strength: the most the result may attenuate anything, in dB "
                             "(0-100; the original is mixed back in); default: no limit")
    remote = parser.add_argument_group(
        "through a running service", "Stream the file through a service's "
        "WebSocket /enhance/stream instead of running the model here.")
    remote.add_argument("--server", metavar="URL", default=None,
                        help="the service, e.g. http://127.0.0.1:8080")
    remote.add_argument("--model", metavar="NAME", default=None,
                        help="the service's model to use (see GET /models; default: its "
                             "default model)")
    remote.add_argument("--realtime", action="store_true",
                        help="send at the pace of the audio, as a live source would "
                             "(default: as fast as the service takes it)")
    remote.add_argument("--api-key", metavar="KEY", default=None,
                        help="the service's API key, if it has one")
    remote.add_argument("--job", action="store_true",
                        help="send the file as a job (POST /jobs), for recordings too long "
                             "for one request: upload it, show the job's progress, download "
                             "the result (resuming a broken download). Ctrl-C leaves the "
                             "job running on the service and says its id")
    remote.add_argument("--job-id", metavar="ID", default=None,
                        help="follow a job already sent (after Ctrl-C or a broken download) "
                             "and download its result; no --source-file needed")
    remote.add_argument("--cancel-on-interrupt", action="store_true",
                        help="with --job or --job-id: Ctrl-C cancels the job on the service")
    return parser


def run_cli(argv: list[str] | None = None, prog: str = "enhance") -> int:
    """Parse ``argv``, enhance, and return the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.source_file is None and args.job_id is None:
        parser.error("the following arguments are required: --source-file")
    try:
        with _signals_unwind():
            return _run_job(args) if args.job or args.job_id else _run(parser, args)
    except EnhancerError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except Terminated:
        parser.exit(143, f"{parser.prog}: terminated\n")
    except KeyboardInterrupt as exc:  # its text, if any, says what was left (a job's id)
        parser.exit(130, f"{parser.prog}: interrupted{f': {exc}' if str(exc) else ''}\n")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from enhancer.config import EngineSettings, SettingsError, read_settings

    try:
        settings = read_settings(EngineSettings)
    except SettingsError as exc:
        raise FileProblem(str(exc)) from None
    model_path = args.model_path or settings.model_path
    num_processes = settings.NUM_PROCESSES if args.num_processes is None else args.num_processes
    # Local files are streamed, so any length fits; only the channel count is limited.
    budget = Budget(max_channels=settings.MAX_CHANNELS)
    source, destination = args.source_file, args.destination_file
    if num_processes < 0:
        raise FileProblem(f"--num-processes must be 0 or more, got {num_processes}")
    if args.atten_lim_db is not None and not 0 <= args.atten_lim_db <= MAX_ATTEN_LIM_DB:
        raise FileProblem(f"--atten-lim-db must be from 0 to {MAX_ATTEN_LIM_DB:g} dB, got "
                          f"{args.atten_lim_db:g}")
    try:
        check_sample_rate(args.sample_rate, "--sample-rate")
    except ValueError as exc:
        raise FileProblem(str(exc)) from None
    if is_same_file(source, destination) and not args.overwrite:
        raise FileProblem(f"--destination-file is the source itself: {destination}; pass "
                          f"--overwrite to replace it")
    if source.is_dir():
        if destination.exists() and not destination.is_dir():
            raise FileProblem(f"--destination-file must be a folder when --source-file "
                              f"is one: {destination}")
        with _enhancer(args, model_path, num_processes, settings) as enhancer:
            skipped = enhance_folder(enhancer, source, destination, args.format,
                                     args.sample_rate, budget, args.atten_lim_db)
        if skipped:
            raise FileProblem(f"{skipped} file(s) in {source} could not be enhanced")
        return 0
    if not destination.parent.is_dir():
        raise FileProblem(f"cannot write {destination}: folder {destination.parent} "
                          f"does not exist")
    # Read the header before starting workers, so bad input fails fast.
    probe_file(source, args.format, args.sample_rate, budget)
    with _enhancer(args, model_path, num_processes, settings) as enhancer:
        clipped = enhance_file(enhancer, source, destination, args.format, args.sample_rate,
                               budget, atten_lim_db=args.atten_lim_db)
    if clipped:
        print(f"warning: {clipped} samples clipped to the integer range", file=sys.stderr)
    return 0


def _run_job(args: argparse.Namespace) -> int:
    """``--job``: upload the file as a job, follow it, download the result; ``--job-id``:
    follow one already sent. Ctrl-C leaves the job on the service (its id is said, to come
    back with ``--job-id``) unless ``--cancel-on-interrupt``."""
    from enhancer.apps import jobs_client

    destination = args.destination_file
    if not args.server:
        raise FileProblem("--job and --job-id need --server URL")
    if not destination.parent.is_dir():
        raise FileProblem(f"cannot write {destination}: folder {destination.parent} "
                          f"does not exist")
    job_id = args.job_id or _upload(args)
    try:
        with INTERRUPTS.waiting():  # only waiting on sockets and sleeps: Ctrl-C may raise
            job = _follow(args, job_id)
            if job["status"] != "succeeded":
                raise jobs_client.JobError(f"job {job_id} {job['status']}: "
                                           f"{job.get('error') or 'no result'}")
            _download(args, job_id)
    except KeyboardInterrupt:
        if args.cancel_on_interrupt:
            jobs_client.cancel_job(args.server, job_id, args.api_key)
            raise KeyboardInterrupt(f"job {job_id} cancelled") from None
        raise KeyboardInterrupt(f"job {job_id} goes on at {args.server}; come back with "
                                f"--job-id {job_id}") from None
    return 0


def _upload(args: argparse.Namespace) -> str:
    """Send ``--source-file`` as a job, with a progress bar of its bytes; its id."""
    from tqdm import tqdm

    from enhancer.apps.jobs_client import submit_job

    source, destination = args.source_file, args.destination_file
    if not source.is_file():
        raise FileProblem(f"--job sends one file; {source} is "
                          f"{'a folder' if source.is_dir() else 'not there'}")
    if is_same_file(source, destination) and not args.overwrite:
        raise FileProblem(f"--destination-file is the source itself: {destination}; pass "
                          f"--overwrite to replace it")

    with tqdm(total=source.stat().st_size, unit="B", unit_scale=True, desc="upload",
              leave=False, disable=None) as bar:
        def sent(size: int) -> None:
            INTERRUPTS.check()  # between blocks of the upload
            bar.update(size)

        job = submit_job(args.server, source, api_key=args.api_key,
                         sample_rate=args.sample_rate, raw_format=args.format,
                         model=args.model, atten_lim_db=args.atten_lim_db, on_sent=sent)
    print(f"job {job['id']} {job['status']}", file=sys.stderr)
    return str(job["id"])


def _follow(args: argparse.Namespace, job_id: str) -> dict[str, Any]:
    """Wait for the job, its progress and the service's estimate of the time left shown."""
    from enhancer.apps.jobs_client import job_status, wait_for_job

    job = job_status(args.server, job_id, args.api_key)  # an unknown id: no bar, one line
    if job["status"] in ("succeeded", "failed", "cancelled"):
        return job
    # Shown also when stderr is no terminal: a job may run for hours and a log should say so.
    with _progress_bar(total=1.0, desc=f"job {job_id[:8]}", disable=False,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}|{postfix}") as bar:
        def update(job: dict[str, Any]) -> None:
            with INTERRUPTS.deferred():
                bar.n = float(job["progress"])
                eta = job.get("eta_s")
                bar.set_postfix_str(f"{job['status']}"
                                    + (f", about {float(eta):.0f} s left" if eta else ""))

        return wait_for_job(args.server, job_id, args.api_key, on_update=update)


def _download(args: argparse.Namespace, job_id: str) -> None:
    from enhancer.apps.jobs_client import download_result

    with _progress_bar(unit="B", unit_scale=True, desc="download", leave=False,
                       disable=None) as bar:
        def received(have: int, total: int | None) -> None:
            with INTERRUPTS.deferred():
                bar.total, bar.n = total, have
                bar.refresh()

        download_result(args.server, job_id, args.destination_file, args.api_key, received)


@contextmanager
def _progress_bar(**options: Any) -> Iterator[Any]:
    """A tqdm bar made and closed where Ctrl-C cannot cut it (a bar cut in its constructor
    leaves a traceback printed at exit, after the one line the CLI says); the waits between
    its updates stay interruptible."""
    from tqdm import tqdm

    bar = None
    try:  # a signal held while the bar was made is raised on the way out of deferred()
        with INTERRUPTS.deferred():
            bar = tqdm(**options)
        yield bar
    finally:
        if bar is not None:
            with INTERRUPTS.deferred():
                bar.close()


def _enhancer(args: argparse.Namespace, model_path: Path, num_processes: int,
              settings: EngineSettings) -> AudioEnhancer | RemoteEnhancer:
    """The model here, or the service named by ``--server``."""
    if args.server:
        from enhancer.apps.client import RemoteEnhancer

        return RemoteEnhancer(args.server, args.model, args.api_key, args.realtime)
    return AudioEnhancer(model_path, num_processes,
                         model_sample_rate=settings.DESIRED_SAMPLE_RATE)


def main() -> None:
    """The ``enhance`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    sys.exit(run_cli())
