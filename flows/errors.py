"""The exception tree. httpx errors are translated once, in the client.

    PipelineError
    ├── ConfigurationError          bad options or inputs the run cannot start with
    ├── StorageError                an output location that cannot be written
    └── ApiError
        ├── TransientApiError       429, 5xx, timeouts, resets, truncated/non-JSON bodies: retried
        │   └── MalformedResponseError
        ├── PermanentApiError       other 4xx for one id: becomes an `error` row
        ├── AuthenticationError     401 after one renewal: the run stops
        ├── AuthorizationError      403: the run stops
        └── ApiUnavailableError     the API kept failing for too long: the run stops early

Expected outcomes (failed, ongoing, 404, a rejected item) are data, never exceptions.
Messages never contain credentials or transcript text.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error talktime raises on purpose."""


class ConfigurationError(PipelineError):
    """The run cannot start: a missing key, an unreadable ids file, a bad option."""


class StorageError(PipelineError):
    """The output location cannot be written or read consistently."""


class ApiError(PipelineError):
    """The transcription API did not give a usable answer."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class TransientApiError(ApiError):
    """Worth retrying: rate limited, server error, network trouble, a cut-off body."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code)
        self.retry_after = retry_after


class MalformedResponseError(TransientApiError):
    """A 200 whose body is not the JSON object the contract describes."""


class PermanentApiError(ApiError):
    """A 4xx about one request (bad id, bad version): retrying cannot help."""


class AuthenticationError(ApiError):
    """Credentials rejected (401) even after renewing them."""


class AuthorizationError(ApiError):
    """Authenticated but not allowed (403)."""


class ApiUnavailableError(ApiError):
    """The API failed every request for longer than the configured stretch."""
