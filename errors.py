"""The errors the enhancement library raises.

Library code raises these; ``main.py`` alone maps them to HTTP status codes and the CLI
alone to exit status 2 with a one-line message.
"""


class EnhancerError(Exception):
    """Base class of every error the enhancement pipeline raises on purpose."""


class InvalidAudio(EnhancerError, ValueError):
    """The audio given cannot be processed (bad type, shape, samples, header or format)."""


class UnsupportedFormat(InvalidAudio):
    """The audio container or encoding is not one the service reads."""


class ModelError(EnhancerError):
    """The model file is missing, unreadable or has a shape the pipeline cannot run."""


class WorkerCrashed(EnhancerError):
    """A worker process died while it held part of this request."""


class Overloaded(EnhancerError):
    """Too many requests are waiting; try again later."""


class EnhancerClosed(EnhancerError):
    """The enhancer was closed before or while the request ran."""
