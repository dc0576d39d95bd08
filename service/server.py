"""``enhance-server`` (and ``python main.py``): serve the app with uvicorn, hardened.

Imports nothing heavy at the top: a spawned worker re-imports the main script, and must not
load FastAPI with it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.settings import Settings

# Files kept free below the open-file limit for logs, models and the workers' pipes.
RESERVED_FILES = 64
LOG_REPEAT_INTERVAL_S = 10.0


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one, where the OS allows; return it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def check_models(settings: Settings) -> None:
    """Load every model and card the service would serve, so a bad one stops the start with
    one line (``ModelError``) before any worker starts."""
    from enhancer.model.card import card_path_for, framing_for, load_card
    from enhancer.model.loading import load_model_runner, load_step_runner

    paths = [settings.model_path, *sorted(
        p for p in settings.models_dir.glob("*.tflite") if card_path_for(p).is_file())]
    for path in paths:
        runner = load_model_runner(path)
        card = load_card(path, settings.DESIRED_SAMPLE_RATE)
        framing_for(card, runner.frame_length)
        if card.stream_step_path is not None:
            load_step_runner(card.stream_step_path, runner.frame_length, card.stream_state_size)


def main() -> None:
    """Read the settings and serve on ``APP_INTERFACE:APP_PORT`` until SIGINT or SIGTERM."""
    from enhancer.errors import EnhancerError
    from service.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        check_models(settings)
    except (SettingsError, EnhancerError) as exc:
        sys.exit(f"enhance-server: error: {exc}")

    import uvicorn

    from service.http_protocol import GUARDED_PROTOCOL
    from service.stream_protocol import GUARDED_WS_PROTOCOL

    open_files = raise_open_file_limit()
    # Beyond this many connections uvicorn answers 503 at once, before running out of files.
    connections = max(1, min(settings.MAX_CONNECTIONS, open_files - RESERVED_FILES))
    app: Any
    if settings.FRONTEND_PROCESSES > 1:
        # Several processes share the port, each with its share of the model workers; each
        # imports main:app and builds it from the environment.
        share = max(1, settings.NUM_PROCESSES // settings.FRONTEND_PROCESSES)
        os.environ["NUM_PROCESSES"] = str(share)
        app = "main:app"
    else:
        from service.app import create_app

        app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.APP_INTERFACE, port=settings.APP_PORT,
        workers=settings.FRONTEND_PROCESSES, http=GUARDED_PROTOCOL, ws=GUARDED_WS_PROTOCOL,
        limit_concurrency=connections, ws_max_size=settings.MAX_STREAM_MESSAGE_KB * 1024,
        ws_per_message_deflate=False,  # zlib over PCM buys nothing and costs the most CPU
        timeout_keep_alive=math.ceil(settings.KEEP_ALIVE_S),
        timeout_graceful_shutdown=math.ceil(settings.SHUTDOWN_TIMEOUT_S))
    # After Config, which sets up uvicorn's loggers: a flood of one warning (a client over
    # the connection limit, say) logs once per interval, not once per connection.
    logging.getLogger("uvicorn.error").addFilter(RepeatFilter(LOG_REPEAT_INTERVAL_S))
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        sockets = [config.bind_socket()]
        Multiprocess(config, sockets=sockets).run()
    else:
        uvicorn.Server(config).run()


class RepeatFilter(logging.Filter):
    """Summarise floods: one record per ``interval`` seconds of each repeated warning, and of
    each repeated error from the same place; the rest are counted, and the count is added to
    the next one shown.

    Errors are told apart by where they were raised (exception type, file and line of the
    innermost frame), never lumped together by level or by a shared message such as
    uvicorn's "Exception in ASGI application": every distinct crash shows its traceback."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.last_shown: dict[tuple[object, ...], float] = {}
        self.suppressed: dict[tuple[object, ...], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = _site(record)
        now = time.monotonic()
        if now - self.last_shown.get(key, -self.interval) < self.interval:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        skipped = self.suppressed.pop(key, 0)
        if skipped:
            record.msg = f"{record.msg} (and {skipped} more like it)"
        self.last_shown[key] = now
        return True


def _site(record: logging.LogRecord) -> tuple[object, ...]:
    """What makes two records "the same": the message's format for a warning; for an error,
    where the exception was raised or, without one, the whole message and where it was
    logged from."""
    if record.levelno < logging.ERROR:
        return (str(record.msg),)
    exc_info = record.exc_info
    if not exc_info or exc_info[1] is None:
        return (record.getMessage(), record.pathname, record.lineno)
    frame = exc_info[2]
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = (frame.tb_frame.f_code.co_filename, frame.tb_lineno) if frame else ()
    return (str(record.msg), type(exc_info[1]).__qualname__, *where)
