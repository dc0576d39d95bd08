"""``enhance-server`` (and ``python main.py``): serve the app with uvicorn.

Imports nothing heavy at the top: a spawned worker re-imports the main script, and must not
load FastAPI with it.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Read the settings and serve on ``APP_INTERFACE:APP_PORT`` until SIGINT or SIGTERM."""
    from enhancer.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"enhance-server: error: {exc}")

    import uvicorn

    from service.app import create_app

    uvicorn.run(create_app(settings), host=settings.APP_INTERFACE, port=settings.APP_PORT)
