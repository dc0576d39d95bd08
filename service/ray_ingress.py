"""The HTTP API as a Ray Serve ingress: config import path ``service.ray_ingress:api_app``.

Each replica builds the FastAPI app of :mod:`service.app` from its own environment (set
``BACKEND=ray`` and ``RAY_DEPLOY=false`` in the config's ``runtime_env``), so the API runs
inside the cluster (on Kubernetes, behind the RayService's serve service) and sends segments
to the model applications (:func:`enhancer.backends.ray.deployment.model_app`) by handle.
"""

from __future__ import annotations

from typing import Any


class ApiReplica:
    """The API's Serve replica: all it does is :func:`api_app`'s FastAPI app."""


def api_app(args: dict[str, Any]) -> Any:
    """The Serve application of the HTTP API; ``args`` are unused (settings come from the
    replica's environment)."""
    from ray import serve

    def build() -> Any:
        from service.app import create_app

        return create_app()

    return serve.deployment(name="Api")(serve.ingress(build)(ApiReplica)).bind()
