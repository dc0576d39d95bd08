"""The HTTP service's entry point: ``python main.py`` or ``uvicorn main:app``.

The app itself is in :mod:`service.app`. This module imports nothing heavy at the top, so the
worker processes, which re-import the main script when spawned, stay small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.app import create_app  # noqa: F401


def __getattr__(name: str) -> Any:
    # ``uvicorn main:app`` builds the app on first access; importing this module builds
    # nothing and reads no settings.
    if name == "app":
        from service.app import create_app

        globals()["app"] = application = create_app()
        return application
    if name == "create_app":
        from service.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from service.server import main

    main()
