"""Every error the enhancement library raises on purpose.

Library code raises these and knows nothing of HTTP or exit codes: ``service.schemas`` alone
maps them to HTTP status codes, ``enhancer.apps.cli`` alone to exit status 2 and one line.
"""


class EnhancerError(Exception):
    """Base class of every error the enhancement pipeline raises on purpose."""


class InvalidAudio(EnhancerError, ValueError):
    """The audio given cannot be processed (bad type, shape, samples, header or format)."""


class UnsupportedFormat(InvalidAudio):
    """The audio container or encoding is not one the service reads."""


class TooLarge(InvalidAudio):
    """The audio is over a size budget (bytes, samples, channels or seconds)."""


class UnknownModel(EnhancerError, LookupError):
    """A request names a model that is not served."""


class ModelError(EnhancerError):
    """The model file or its card is missing, unreadable, or has a shape the pipeline cannot run.

    Also raised for a request when the model fails on it inside a worker.
    """


class WorkerCrashed(EnhancerError):
    """A worker process died while it held part of this request."""


class PoolBroken(EnhancerError):
    """The worker pool cannot serve: workers keep dying at start-up, or its collector failed."""


class Overloaded(EnhancerError):
    """Too many requests are waiting; try again later."""


class EnhancerClosed(EnhancerError):
    """The enhancer was closed before or while the request ran."""
