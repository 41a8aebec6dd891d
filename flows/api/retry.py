"""The retry policy (tenacity) and Retry-After parsing, shared by every API call.

Waits are jittered exponential backoff; a server's Retry-After raises the wait to at least
what it asks, never lowers it (so `Retry-After: 0` cannot burn every attempt at once).
Attempts and the total time spent waiting are both capped.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from flows.errors import TransientApiError
from flows.settings import DEFAULT_MAX_ATTEMPTS

DEFAULT_BACKOFF_INITIAL_S = 0.25
DEFAULT_BACKOFF_MAX_S = 20.0
DEFAULT_MAX_RETRY_WAIT_S = 120.0
# The longest Retry-After taken as given (a day); the policy caps the actual wait far lower.
MAX_RETRY_AFTER_S = 86400.0
_DELTA_SECONDS = re.compile(r"[0-9]+")
_MAX_DELTA_DIGITS = len(str(int(MAX_RETRY_AFTER_S)))  # longer is longer than the cap: no need to convert

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry transient API errors."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    max_retry_wait_s: float = DEFAULT_MAX_RETRY_WAIT_S

    def wait_seconds(self, state: RetryCallState) -> float:
        """Jittered exponential backoff (never below the initial wait), raised to Retry-After."""
        jitter = wait_random_exponential(multiplier=self.backoff_initial_s, max=self.backoff_max_s)(state)
        backoff = min(self.backoff_initial_s + jitter, self.backoff_max_s)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None) or 0.0
        return max(backoff, min(retry_after, self.max_retry_wait_s))

    def retrying(self, sleep: Sleep, on_retry: Callable[[BaseException], None] | None = None) -> AsyncRetrying:
        """A tenacity controller retrying TransientApiError under this policy; `on_retry(error)` before each wait."""

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if on_retry is not None and error is not None:
                on_retry(error)

        return AsyncRetrying(
            before_sleep=before_sleep,
            retry=retry_if_exception_type(TransientApiError),
            stop=stop_after_attempt(self.max_attempts) | stop_before_delay(self.max_retry_wait_s),
            wait=self.wait_seconds,
            sleep=sleep,
            reraise=True,
        )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if unusable.

    Only ASCII digits count as seconds (`str.isdigit` also accepts '²' and '٣'); a wait longer
    than MAX_RETRY_AFTER_S, in seconds or as a date, counts as that.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        digits = value.lstrip("0")
        return MAX_RETRY_AFTER_S if len(digits) > _MAX_DELTA_DIGITS else min(float(digits or 0), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - (now or datetime.now(UTC))).total_seconds()), MAX_RETRY_AFTER_S)
