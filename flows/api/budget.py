"""The requests budget shared by every run against one API: a Prefect global rate limit.

`--rate-limit` bounds one run; the vendor's budget is for all of them together (the hourly
deployment, an ad-hoc run and a backfill may overlap, on one machine or several). A Prefect
global concurrency limit with slot decay (`prefect gcl create NAME --limit N
--slot-decay-per-second R`) is shared by every process that talks to the same Prefect server:
each request takes one slot, and slots come back at R per second.

Asking the server for each request would cost a round trip per request, so a process takes
slots `chunk` at a time (about one second's worth, never more than the limit) and spends them
one per request. A process holds at most `chunk - 1` unspent slots; they decay like the others.
The limit is read once (`open_budget`): a limit that does not exist, or has no slot decay, stops
the run before its first request (strict): running unthrottled would break the budget silently.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from flows.errors import ConfigurationError

Acquire = Callable[[int], Awaitable[None]]


class RequestsBudget:
    """Slots of one global rate limit, taken from the server `chunk` at a time and spent one per request."""

    def __init__(self, name: str, chunk: int, acquire: Acquire) -> None:
        self.name = name
        self.chunk = chunk
        self._acquire = acquire
        self._left = 0
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        """One slot for one request (waits while the shared budget is spent)."""
        async with self._lock:
            if self._left == 0:
                await self._acquire(self.chunk)
                self._left = self.chunk
            self._left -= 1


async def open_budget(name: str) -> RequestsBudget:
    """The budget of the limit `name` (ConfigurationError if it does not exist or has no slot decay)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.asyncio import rate_limit
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise ConfigurationError(
                f"the Prefect global concurrency limit {name!r} (requests_limit) does not exist: "
                f"create it with `prefect global-concurrency-limit create {name} --limit N --slot-decay-per-second R`"
                " (R: requests per second for all runs together; N: the burst)"
            ) from None
    decay = limit.slot_decay_per_second or 0.0
    if decay <= 0:
        raise ConfigurationError(
            f"the Prefect global concurrency limit {name!r} has no slot decay, so it cannot limit a request rate: "
            f"set one with `prefect global-concurrency-limit update {name} --slot-decay-per-second R`"
        )
    if not limit.active:
        raise ConfigurationError(f"the Prefect global concurrency limit {name!r} is inactive: activate it first")
    chunk = max(1, min(limit.limit, math.ceil(decay)))

    async def acquire(slots: int) -> None:
        await rate_limit(name, occupy=slots, strict=True)

    return RequestsBudget(name, chunk, acquire)
