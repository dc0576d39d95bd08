"""The HTTP service over the :mod:`enhancer` library: ``service.app.create_app``.

This package's ``__init__`` imports nothing, so ``service.server`` (the console script
``enhance-server``) can be re-imported by spawned workers without loading FastAPI.
"""
