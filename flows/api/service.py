"""One fetcher per process: a pooled client on its own event loop, shared by every batch task.

Batch tasks run in worker threads (Prefect's thread pool here, Dask workers later), several at
once. They share one `httpx2.AsyncClient`, one concurrency bound, one rate limiter, one OAuth
token cache and one outage timer per process, so that `--concurrency` and `--rate-limit` hold for
the run as a whole, and a task's arguments stay small and picklable (the task builds nothing it
cannot rebuild: it asks this module for its process's fetcher).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx2

from flows.api.auth import Auth
from flows.api.batchbytes import BatchBytes
from flows.api.budget import RequestsBudget, open_budget
from flows.api.client import ClientOptions, FetchStats, TranscriptionClient, make_http_clients
from flows.api.retry import RetryPolicy
from flows.errors import ApiUnavailableError, RunStoppedError
from flows.outcomes import Outcome
from flows.secrets import auth_for
from flows.settings import MIB, RunSettings

T = TypeVar("T")


def client_options(settings: RunSettings) -> ClientOptions:
    """The API client's tunables from a run's settings."""
    return ClientOptions(
        api_url=settings.api_url,
        api_version=settings.api_version,
        concurrency=settings.concurrency,
        rate_limit_per_s=settings.rate_limit,
        down_after_s=settings.down_after_s,
        # a response over the batch's share of the memory budget is refused too: no batch could hold it
        max_response_bytes=max(1, int(min(settings.max_response_mb * MIB, settings.batch_bytes))),
        request_deadline_s=settings.request_deadline_s,
        retry=RetryPolicy(max_attempts=settings.max_attempts),
    )


class Fetcher:
    """A TranscriptionClient running on a private event loop in a daemon thread."""

    def __init__(self, settings: RunSettings) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="talktime-fetcher", daemon=True)
        self._thread.start()
        self._http: list[httpx2.AsyncClient] = []
        self._calls: set[concurrent.futures.Future[Any]] = set()
        self._calls_lock = threading.Lock()
        self._closed = False
        self._client = self._call(self._open(settings))

    async def _open(self, settings: RunSettings) -> TranscriptionClient:
        auth: Auth = await auth_for(settings)
        budget: RequestsBudget | None = None
        if settings.requests_limit:
            budget = await open_budget(settings.requests_limit)
        self._http = make_http_clients(concurrency=settings.concurrency)
        return TranscriptionClient(self._http, client_options(settings), auth, budget=budget)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the fetcher's loop; RunStoppedError when the fetcher is (being) closed."""
        with self._calls_lock:
            if self._closed:
                coroutine.close()
                raise RunStoppedError("the run stopped before this batch was fetched")
            call = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
            self._calls.add(call)
        try:
            return call.result()
        except concurrent.futures.CancelledError:
            raise RunStoppedError("the run stopped while this batch was being fetched") from None
        finally:
            with self._calls_lock:
                self._calls.discard(call)

    def fetch_many(
        self, ids: list[str], stats: FetchStats | None = None, room: BatchBytes | None = None
    ) -> tuple[list[Outcome], ApiUnavailableError | None]:
        """One poll of each id (blocking the calling thread); see TranscriptionClient.fetch_many."""
        return self._call(self._client.fetch_many(ids, stats, room))

    def check_credentials(self, transcription_id: str) -> None:
        """AuthenticationError or AuthorizationError when the API refuses one poll of this id (see
        TranscriptionClient.check_credentials)."""
        self._call(self._client.check_credentials(transcription_id))

    def close(self) -> None:
        """Cut short the fetches still running (their callers get RunStoppedError, instead of requests
        on closed connections), close the connections and stop the loop."""
        with self._calls_lock:
            self._closed = True
            running = list(self._calls)
        for call in running:
            call.cancel()
        asyncio.run_coroutine_threadsafe(_cancel_others(), self._loop).result()
        for http in self._http:
            asyncio.run_coroutine_threadsafe(http.aclose(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def _cancel_others() -> None:
    """Cancel every other task of this loop and wait until they have ended (before it stops)."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


_fetchers: dict[RunSettings, Fetcher] = {}
_lock = threading.Lock()


def fetcher_for(settings: RunSettings) -> Fetcher:
    """This process's fetcher for these settings (created on first use)."""
    with _lock:
        if settings not in _fetchers:
            _fetchers[settings] = Fetcher(settings)
        return _fetchers[settings]


def close_fetchers() -> None:
    """Close every fetcher of this process (at the end of a flow)."""
    with _lock:
        fetchers = list(_fetchers.values())
        _fetchers.clear()
    for fetcher in fetchers:
        fetcher.close()
