"""The exception tree. httpx errors are translated once, in the client.

    PipelineError
    ├── ConfigurationError          bad options or inputs the run cannot start with
    ├── StorageError                an output location that cannot be written or read: permanent
    │   │                           (a missing bucket, no permission, a full disk, a file of a
    │   │                           newer talktime): never retried
    │   ├── TransientStorageError   an I/O failure that may pass (a timeout, a reset connection, a
    │   │                           throttled or unavailable object store): a commit is retried
    │   └── LeaseError              the one-writer lease (flows.storage.lease): held or lost
    ├── WorkerLostError             the Dask workers running a batch died (killed, out of memory) or
    │                               the cluster dropped it: committed batches are kept, rerun
    └── ApiError
        ├── TransientApiError       429, 5xx, timeouts, resets, the request deadline: retried
        │   └── MalformedResponseError  a 200 whose body cannot be read: retried, but a sign of
        │                               a bad answer, not of an API down (no outage timer)
        ├── PermanentApiError       other 4xx, an id mismatch, a body over the size cap
        │                           (`response_too_large`): an `error` row, not retried
        ├── AuthenticationError     401 after one renewal: the run stops
        ├── AuthorizationError      403: the run stops
        ├── ApiUnavailableError     the API kept failing for too long: the run stops early
        └── RunStoppedError         a batch cut short because its run is stopping (not a cause)

    WithheldError                   anything else raised inside a flow or task, its message withheld

Expected outcomes (failed, ongoing, 404, a rejected item) are data, never exceptions.
Messages never contain credentials or transcript text: ours are written so, and any other
exception leaving a flow or a task is replaced by a WithheldError (`withholding`), its chain cut,
because Prefect writes an exception's message to its log table and its stored states, and a
library's message may quote the value it choked on.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class PipelineError(Exception):
    """Base of every error talktime raises on purpose."""


class ConfigurationError(PipelineError):
    """The run cannot start: a missing key, an unreadable ids file, a bad option."""


class StorageError(PipelineError):
    """The output location cannot be written or read consistently; retrying cannot help."""


class TransientStorageError(StorageError):
    """An I/O failure of the output location that may pass: worth retrying a commit for."""


class WorkerLostError(PipelineError):
    """A batch could not run on the Dask cluster: its workers died, or the cluster cancelled it."""


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
        network: str = "network",
    ) -> None:
        super().__init__(message, status_code=status_code, code=code)
        self.retry_after = retry_after
        self._network = network

    @property
    def cause(self) -> str:
        """What went wrong, for counting retries: rate_limited, server_error, malformed, timeout, network."""
        if isinstance(self, MalformedResponseError):
            return "malformed"
        if self.status_code == 429:
            return "rate_limited"
        return "server_error" if self.status_code else self._network


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


class RunStoppedError(ApiError):
    """A batch's fetching was cut short because its run is stopping for another reason (said elsewhere)."""


class WithheldError(Exception):
    """An unexpected error, named by its type and place only (its message may quote patient data)."""


def raised_at(exc: BaseException) -> str:
    """Where an exception was raised (`file:line in function`): safe to log, unlike its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}"


def withheld(exc: BaseException) -> WithheldError:
    """The error as a WithheldError: its type and the line that raised it, not its message."""
    return WithheldError(f"{type(exc).__name__} at {raised_at(exc)} (message withheld: it may quote transcript text)")


def scrubbed(exc: BaseException) -> BaseException:
    """The exception without the exceptions it was raised from or during (their messages may quote patient data)."""
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = True
    return exc


def withholding(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap `fn` so that what leaves it is safe to record: a PipelineError (ours, written safe) or a
    WithheldError, either with no chained or context exception behind it.

    Prefect prints an exception's whole chain in its log tracebacks, and an exception raised in an
    `except` block (or in a context manager's `__exit__`) keeps the one being handled as its
    `__context__`. So the replacement is raised here, in a plain frame after the `except` block has
    ended, and the chain of anything let through is cut.
    """

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (PipelineError, WithheldError) as exc:
            error = scrubbed(exc)
        except Exception as exc:
            error = withheld(exc)
        raise error

    return call
