"""Files: enhance one in blocks, streaming, and write the result atomically; or a whole folder.

A file is read, enhanced and written a block at a time (:func:`enhance_blocks`), so memory
stays flat whatever its length; the blocks go through one enhancer stream, so the result
equals enhancing the whole file at once. Every failure a user can cause becomes a one-line
:class:`FileProblem`, which the CLI prints.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeAlias

import numpy as np

from enhancer.audio.formats import AUDIO_SUFFIXES, AudioInfo, Budget, check_samples
from enhancer.audio_enhancer import AudioEnhancer
from enhancer.errors import EnhancerError, InvalidAudio
from enhancer.model.runner import stderr_silenced

if TYPE_CHECKING:
    from enhancer.apps.client import RemoteEnhancer
from enhancer.audio.decode import AudioReader, open_audio
from enhancer.audio.encode import AudioWriter

# What files are enhanced with: the model here, or a running service (--server).
Enhancer: TypeAlias = "AudioEnhancer | RemoteEnhancer"

# A progress bar only for inputs long enough to wait for (about 10 s at 48 kHz).
PROGRESS_MIN_FRAMES = 500
# Samples (all channels together) per block at the model's rate: about 22 s of 48 kHz mono,
# some 40 MB in flight through resampling, framing and the model, whatever the file's length.
BLOCK_MODEL_SAMPLES = 1 << 20


class FileProblem(EnhancerError):
    """A problem with a file given by the user, reported on one line."""


class Interrupts:
    """Signals turned into exceptions only where the work can stop cleanly.

    Raised at any moment, ``KeyboardInterrupt`` can land inside an extension module's import
    or a C callback and crash or vanish there. A signal handler hands its exception to
    :meth:`deliver` instead: it is raised at once while the main thread waits for the model
    (:meth:`waiting`), else at the next :meth:`check`, between blocks and files.
    """

    def __init__(self) -> None:
        self._waiting = 0
        self._pending: BaseException | None = None

    def deliver(self, exc: BaseException) -> None:
        """From a signal handler: raise ``exc`` now if that is safe, else soon."""
        if self._waiting:
            self._pending = None
            raise exc
        self._pending = self._pending or exc

    def check(self) -> None:
        """Raise the exception a signal left, if any."""
        exc, self._pending = self._pending, None
        if exc is not None:
            raise exc

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Within the block the main thread only waits: a signal may raise at once."""
        self.check()
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within a :meth:`waiting` block, a stretch a signal must not cut (a progress bar
        drawing itself, holding its lock): the signal is raised when it ends."""
        saved, self._waiting = self._waiting, 0
        try:
            yield
        finally:
            self._waiting = saved
        self.check()


INTERRUPTS = Interrupts()


def _describe(error: OSError) -> str:
    return error.strerror or str(error)


def default_file_mode() -> int:
    """The mode a new file gets from the umask (``0o666 & ~umask``), as ``open()`` gives."""
    try:  # Linux says it without changing it, so no other thread can see a changed umask
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_output(path: Path) -> Iterator[IO[bytes]]:
    """A file to write ``path`` through: a temporary beside it, renamed over it at the end.

    It gets the normal mode from the umask (``mkstemp`` makes it 0600). On any exception,
    ``KeyboardInterrupt`` included, the temporary file is removed and ``path`` is untouched.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise FileProblem(f"cannot write {path}: {_describe(exc)}") from None
    try:
        with os.fdopen(fd, "w+b") as f:
            os.fchmod(f.fileno(), default_file_mode())
            yield f
        INTERRUPTS.check()  # the last moment a signal can still leave nothing behind
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise FileProblem(f"cannot write {path}: {_describe(exc)}") from None
        raise


@contextmanager
def quiet_decoder(container: str | None = None) -> Iterator[None]:
    """Within the block, the process's stderr (file descriptor 2) goes nowhere, while an MP3
    (or a file not yet recognised) is opened or decoded in the main thread.

    libmpg123, inside libsndfile, prints its complaints about a damaged MP3 straight to
    descriptor 2, where the CLI promises one line; the error that matters is raised anyway.
    The stream's thread waits meanwhile, so no one else's output is lost.
    """
    if container not in (None, "MP3") or threading.current_thread() is not threading.main_thread():
        yield
        return
    with stderr_silenced():
        yield


def open_source(path: Path) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file; refuse devices, FIFOs and sockets.

    ``/dev/zero`` would be read without end and a FIFO would block: both are refused before
    any byte is read (the check is repeated on the opened file, so a swap cannot slip by).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise FileProblem(f"{path} is not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileProblem(f"source file not found: {path}") from None
    except OSError as exc:
        raise FileProblem(f"cannot read {path}: {_describe(exc)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileProblem(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def is_same_file(source: Path, destination: Path) -> bool:
    """True when ``destination`` exists and is ``source`` (same file, through any link)."""
    try:
        return os.path.samefile(source, destination)
    except OSError:
        return False


def block_frames(enhancer: Enhancer, sample_rate: int, channels: int,
                 block_model_samples: int = BLOCK_MODEL_SAMPLES) -> int:
    """Frames per block read: ``block_model_samples`` at the model's rate, all channels."""
    model_rate = enhancer.model_sample_rate
    return max(1, block_model_samples * sample_rate // (max(sample_rate, model_rate)
                                                         * channels))


def enhance_blocks(enhancer: Enhancer, reader: AudioReader, frames_per_block: int,
                   atten_lim_db: float | None = None) -> Iterator[np.ndarray]:
    """Enhance ``reader``'s audio a block at a time; yield the results, ``[n, channels]``.

    The blocks go through one stream (``enhancer.open_stream``), whose resamplers, framing
    and overlap-add carry their state from block to block: together the results equal
    ``enhancer.enhance`` of the whole audio, bit for bit, whatever the block size. A
    recurrent model takes each block's whole grid cells in parallel, as it takes a file.

    Raises
    ------
    InvalidAudio
        The audio holds NaN or Inf, or fewer or more samples than its header declares.
    """
    rate, channels = reader.info.sample_rate, reader.info.channels
    stream = enhancer.open_stream(rate, channels, atten_lim_db, whole_cells=True)
    with _EventLoopThread() as loop:
        position = 0
        while True:
            INTERRUPTS.check()
            with quiet_decoder(reader.info.format.container):
                chunk = reader.read(frames_per_block)
            if len(chunk) == 0:
                break
            _check_finite(chunk, position, rate)
            position += len(chunk)
            enhanced = loop.run(stream.push(chunk))
            if len(enhanced):
                yield enhanced
        yield loop.run(stream.finish())


class _EventLoopThread:
    """An event loop on a thread of its own, to run a stream's coroutines from sync code.

    The caller waits on a plain event, so Ctrl-C and SIGTERM (raised in the main thread, see
    :class:`Interrupts`) never land inside asyncio's machinery, which they can leave stuck;
    the step is cancelled on the loop's own thread instead, and leaving the block cancels
    whatever is left.
    """

    def __enter__(self) -> _EventLoopThread:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="file-stream",
                                        daemon=True)
        self._thread.start()
        return self

    def run(self, step: Coroutine[object, object, np.ndarray]) -> np.ndarray:
        """Run ``step`` on the loop; wait for its result (or cancel it if interrupted)."""
        done = threading.Event()
        tasks: list[asyncio.Task[np.ndarray]] = []

        def start() -> None:
            task = self._loop.create_task(step)
            task.add_done_callback(lambda _: done.set())
            tasks.append(task)

        def cancel() -> None:  # runs after start(), if start() was scheduled at all
            if tasks:
                tasks[0].cancel()
            else:
                step.close()
                done.set()

        try:
            self._loop.call_soon_threadsafe(start)
            with INTERRUPTS.waiting():
                done.wait()
        except BaseException:
            self._loop.call_soon_threadsafe(cancel)
            done.wait(10)
            raise
        return tasks[0].result()

    def __exit__(self, *exc_info: object) -> None:
        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_the_rest(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()


def _check_finite(chunk: np.ndarray, position: int, rate: int) -> None:
    try:
        check_samples(chunk, "the audio")
    except InvalidAudio as exc:
        raise InvalidAudio(f"{exc} (in the block from {position / rate:.1f} s)") from None


def probe_file(source: Path, raw_format: str, sample_rate: int, budget: Budget | None = None,
               model_rate: int | None = None) -> AudioInfo:
    """Read ``source``'s header (no samples) and check it against ``budget``.

    Raises
    ------
    FileProblem
        The source is missing, not a regular file, unreadable, not audio this reads, or over
        ``budget``.
    """
    with open_source(source) as f:
        try:
            with quiet_decoder():
                reader = open_audio(f, raw_format, sample_rate)
            with reader:
                if budget is not None:
                    budget.check(reader.info, model_rate)
                return reader.info
        except InvalidAudio as exc:
            raise FileProblem(f"{source}: {exc}") from None


def enhance_file(enhancer: Enhancer, source: Path, destination: Path, raw_format: str,
                 sample_rate: int, budget: Budget | None = None,
                 show_progress: bool = True, atten_lim_db: float | None = None) -> int:
    """Enhance ``source`` into ``destination`` in its own format, in blocks.

    The output is written to a temporary file beside ``destination`` and renamed at the end;
    on any failure nothing is left behind. Returns the number of samples clipped to the
    integer range.

    Raises
    ------
    FileProblem
        The source cannot be read or decoded, is over ``budget``, or the output cannot be
        written.
    """
    with open_source(source) as f:
        try:
            with quiet_decoder():
                reader = open_audio(f, raw_format, sample_rate)
        except InvalidAudio as exc:
            raise FileProblem(f"{source}: {exc}") from None
        with reader:
            try:
                if budget is not None:
                    budget.check(reader.info, enhancer.model_sample_rate)
                return _stream(enhancer, reader, destination, show_progress, atten_lim_db)
            except InvalidAudio as exc:
                raise FileProblem(f"{source}: {exc}") from None


def _stream(enhancer: Enhancer, reader: AudioReader, destination: Path,
            show_progress: bool, atten_lim_db: float | None) -> int:
    from tqdm import tqdm

    info = reader.info
    frames_per_block = block_frames(enhancer, info.sample_rate, info.channels)
    total = (None if info.frames is None
             else enhancer.frames_for(info.frames, info.sample_rate, info.channels))
    long_enough = total is None or total >= PROGRESS_MIN_FRAMES
    with tqdm(total=total, unit="frame", leave=False,
              disable=None if show_progress and long_enough else True) as bar, \
            atomic_output(destination) as out, \
            AudioWriter(out, info.format, info.sample_rate, info.channels) as writer:
        written = 0
        for block in enhance_blocks(enhancer, reader, frames_per_block, atten_lim_db):
            writer.write(block)
            written += len(block)
            # In model frames, as the whole file would count them.
            bar.update(enhancer.frames_for(written, info.sample_rate, info.channels) - bar.n)
    return writer.clipped


def enhance_folder(enhancer: Enhancer, source: Path, destination: Path,
                   raw_format: str, sample_rate: int, budget: Budget | None = None,
                   atten_lim_db: float | None = None) -> int:
    """Enhance every audio file in ``source`` into ``destination``; return how many were skipped."""
    from tqdm import tqdm

    files = sorted(p for p in source.iterdir()
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    destination.mkdir(parents=True, exist_ok=True)
    skipped = 0
    for path in tqdm(files, unit="file", desc="files", disable=None):
        INTERRUPTS.check()
        try:
            clipped = enhance_file(enhancer, path, destination / path.name, raw_format,
                                   sample_rate, budget, False, atten_lim_db)
        except FileProblem as exc:
            skipped += 1
            tqdm.write(f"warning: skipped {exc}", file=sys.stderr)
            continue
        if clipped:
            tqdm.write(f"warning: {path.name}: {clipped} samples clipped to the integer range",
                       file=sys.stderr)
    return skipped
