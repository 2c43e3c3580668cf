"""Errors a model client raises, each a ``TaskError`` so that a handler that
lets one propagate fails its task with a fitting code and the cause::

    TaskError
    └── ModelError (502)             the model server answered, but not usefully
        ├── ModelResponseError (502)  malformed, truncated or invalid answer
        ├── ModelUnavailable (503)    unreachable, timed out, or 5xx
        │   └── ModelRateLimited (503) HTTP 429; ``retry_after`` seconds if given
        └── ModelNotFound (503)       the model is not pulled / not served
"""

from __future__ import annotations

from bus import TaskError

__all__ = [
    "ModelError",
    "ModelNotFound",
    "ModelRateLimited",
    "ModelResponseError",
    "ModelUnavailable",
]


class ModelError(TaskError):
    """The model server's answer could not be used."""

    code = 502
    type = "model_error"


class ModelResponseError(ModelError):
    """The answer was malformed, truncated, or did not match what was asked."""

    code = 502
    type = "bad_model_response"


class ModelUnavailable(ModelError):
    """The model server could not be reached, timed out, or failed (5xx)."""

    code = 503
    type = "model_unavailable"


class ModelRateLimited(ModelUnavailable):
    """The model server refused for now (HTTP 429).

    Attributes:
        retry_after: seconds the server asked to wait, when it said.
    """

    type = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelNotFound(ModelError):
    """The server does not have the model (not pulled, or misspelt)."""

    code = 503
    type = "model_not_found"
