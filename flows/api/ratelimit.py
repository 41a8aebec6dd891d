"""A client-side request rate limit: requests are spaced at least 1/rate seconds apart.

Hand-written because it is a dozen lines and must take the same injected clock and sleep as
the rest of the client (so tests measure it without sleeping for real).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from flows.api.retry import Sleep


class RateLimiter:
    """Spaces calls to `acquire` at least `1 / per_second` apart; no limit when None."""

    def __init__(self, per_second: float | None, *, clock: Callable[[], float], sleep: Sleep) -> None:
        self._interval = 0.0 if not per_second else 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next_at = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for this call's slot."""
        if not self._interval:
            return
        async with self._lock:
            now = self._clock()
            at = max(now, self._next_at)
            self._next_at = at + self._interval
        if at > now:
            await self._sleep(at - now)
