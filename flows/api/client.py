"""The transcription API client: one pooled httpx2.AsyncClient, bounded, rate-limited, retried.

Every requested id ends with exactly one Outcome (succeeded, failed, ongoing, not_found or
error with a reason), or is handed back unanswered when its batch already holds its share of the
memory budget (`flows.api.batchbytes`). Only run-level problems raise: bad credentials
(AuthenticationError, AuthorizationError) and an API that stays down (ApiUnavailableError).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx2

from flows import jsontext
from flows.api.auth import Auth
from flows.api.batchbytes import BatchBytes, BatchFullError
from flows.api.budget import RequestsBudget
from flows.api.ratelimit import RateLimiter
from flows.api.reply import Reply, exchange
from flows.api.retry import RetryPolicy, Sleep, parse_retry_after
from flows.errors import (
    ApiError,
    ApiUnavailableError,
    AuthenticationError,
    AuthorizationError,
    MalformedResponseError,
    PermanentApiError,
    TransientApiError,
)
from flows.outcomes import EnvelopeError, Outcome, is_uuid, outcome_from_response, unique_ids
from flows.settings import (
    DEFAULT_API_VERSION,
    DEFAULT_CONCURRENCY,
    DEFAULT_DOWN_AFTER_S,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REQUEST_DEADLINE_S,
)

DEFAULT_TIMEOUT = httpx2.Timeout(30.0, connect=10.0)
NOT_FOUND_CONFIRM_S = 1.0
CREDENTIALS_CHECK_S = 15.0
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
VERSION_HEADER = "X-Nabla-Api-Version"


CONNECTIONS_PER_POOL = 8
NETWORK_CAUSES = ("network", "timeout")  # retry causes whose key carries what happened


def make_http_client(
    *, concurrency: int = DEFAULT_CONCURRENCY, timeout: httpx2.Timeout = DEFAULT_TIMEOUT
) -> httpx2.AsyncClient:
    """One pooled HTTP client of `concurrency` connections."""
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx2.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)


def make_http_clients(*, concurrency: int = DEFAULT_CONCURRENCY) -> list[httpx2.AsyncClient]:
    """The run's connection pools: ceil(concurrency / 8) clients of at most 8 connections each.

    httpcore's pool re-scans every waiting request against every connection whenever one
    frees up, so its CPU cost grows with the square of its size: at 64 connections one pool
    spent 8 ms of CPU per request (a full core for 120 requests/s). Requests are spread
    round-robin over small pools instead.
    """
    pools = -(-concurrency // CONNECTIONS_PER_POOL)
    return [make_http_client(concurrency=-(-concurrency // pools)) for _ in range(pools)]


@dataclass
class FetchStats:
    """What one `fetch_many` call cost: requests sent, and retries by cause (rate_limited, server_error, ...)."""

    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)


# The stats of the `fetch_many` call a request belongs to (its tasks inherit the context).
_stats: ContextVar[FetchStats | None] = ContextVar("talktime_fetch_stats", default=None)
# The response bytes that call's batch holds, when it is bounded.
_room: ContextVar[BatchBytes | None] = ContextVar("talktime_batch_bytes", default=None)


def retry_key(error: BaseException) -> str:
    """A retry's cause as counted: rate_limited, server_error, malformed; network and timeout with what
    happened, e.g. `network (connection refused to 127.0.0.1:9)` (host and port only, never a path)."""
    cause = str(getattr(error, "cause", type(error).__name__))
    return f"{cause} ({error})" if cause in NETWORK_CAUSES else cause


def _count_retry(error: BaseException) -> None:
    stats = _stats.get()
    if stats is not None:
        stats.retries[retry_key(error)] += 1


@dataclass
class ClientOptions:
    """Tunables of the API client (defaults are the DEFAULT_* constants)."""

    api_url: str
    api_version: str = DEFAULT_API_VERSION
    concurrency: int = DEFAULT_CONCURRENCY
    rate_limit_per_s: float | None = None
    down_after_s: float = DEFAULT_DOWN_AFTER_S
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    request_deadline_s: float = DEFAULT_REQUEST_DEADLINE_S
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class TranscriptionClient:
    """Fetches outcomes for ids. Inject `http` (pooled client), `auth`, and for tests a clock."""

    def __init__(
        self,
        http: httpx2.AsyncClient | Sequence[httpx2.AsyncClient],
        options: ClientOptions,
        auth: Auth,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        budget: RequestsBudget | None = None,
    ) -> None:
        self._pools = [http] if isinstance(http, httpx2.AsyncClient) else list(http)
        self._http = self._pools[0]  # for the OAuth token endpoint
        self._options = options
        self._auth = auth
        self._clock = clock
        self._sleep = sleep
        self._slots = asyncio.Semaphore(options.concurrency)
        self._limiter = RateLimiter(options.rate_limit_per_s, clock=clock, sleep=sleep)
        self._failing_since: float | None = None
        self._last_failure = ""  # what the last transient failure was (no URL path, no credentials)
        self._budget = budget
        self.requests_sent = 0

    async def fetch_many(
        self, ids: Iterable[str], stats: FetchStats | None = None, room: BatchBytes | None = None
    ) -> tuple[list[Outcome], ApiUnavailableError | None]:
        """Outcomes for distinct ids (in first-seen order), and the error that stopped the run early.

        When the API stays down, the ids not yet answered get no outcome: they stay pending.
        `stats`, if given, counts this call's requests and retries. `room`, if given, counts the
        response bytes the call holds: once they reach its limit, no request starts and the ids not
        answered yet get no outcome either: they are listed, in order, in `room.deferred`.
        """
        _stats.set(stats)
        _room.set(room)
        unique = unique_ids(ids)
        tasks = [asyncio.ensure_future(self._fetch_unless_full(i)) for i in unique]
        try:
            await asyncio.gather(*tasks)
        except ApiUnavailableError as down:
            await _cancel(tasks)
            done = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
            return [outcome for outcome in done if outcome is not None], down
        except BaseException:
            await _cancel(tasks)
            raise
        if room is not None:
            room.deferred += [tid for tid, task in zip(unique, tasks, strict=True) if task.result() is None]
        return [outcome for task in tasks if (outcome := task.result()) is not None], None

    async def _fetch_unless_full(self, transcription_id: str) -> Outcome | None:
        """The id's outcome, or None when its batch was full before the id's turn came (see fetch_many)."""
        try:
            return await self.fetch(transcription_id)
        except BatchFullError:
            return None

    async def check_credentials(self, transcription_id: str) -> None:
        """One poll of one id, not retried, its answer dropped: AuthenticationError or AuthorizationError
        when the API refuses the credentials. Anything else (an answer, an outage, no answer within
        CREDENTIALS_CHECK_S) is left to the batches."""
        if not is_uuid(transcription_id):
            return
        try:
            async with asyncio.timeout(CREDENTIALS_CHECK_S):
                await self._get_outcome(transcription_id.lower())
        except (AuthenticationError, AuthorizationError):
            raise
        except (ApiError, TimeoutError):
            return

    async def fetch(self, transcription_id: str) -> Outcome:
        """The outcome of one poll of one id (an `ongoing` id is re-polled later by the run, not here)."""
        if not is_uuid(transcription_id):
            return Outcome.error(transcription_id, "invalid_id", "not a UUID; never sent", _now())
        return await self._fetch_once(transcription_id.lower())

    async def _fetch_once(self, tid: str) -> Outcome:
        """One poll; a 404 is confirmed by a second request before it counts as not_found."""
        outcome = await self._fetch_retried(tid)
        if outcome.status == "not_found":
            await self._sleep(NOT_FOUND_CONFIRM_S)
            outcome = await self._fetch_retried(tid)
        return outcome

    async def _fetch_retried(self, tid: str) -> Outcome:
        version = self._options.api_version
        try:
            async for attempt in self._options.retry.retrying(self._sleep, _count_retry):
                with attempt:
                    outcome = await self._get_outcome(tid)
        except TransientApiError as exc:
            self._stop_if_down()
            reason = "malformed_response" if isinstance(exc, MalformedResponseError) else "retries_exhausted"
            return Outcome.error(tid, reason, str(exc), _now(), api_version=version)
        except PermanentApiError as exc:
            return Outcome.error(tid, exc.code or "bad_request", str(exc), _now(), api_version=version)
        return outcome

    def _stop_if_down(self) -> None:
        """Stop the run when every request has failed for longer than `down_after_s`."""
        now = self._clock()
        if self._failing_since is not None and now - self._failing_since >= self._options.down_after_s:
            last = f" (last: {self._last_failure})" if self._last_failure else ""
            raise ApiUnavailableError(
                f"the API failed every request for {now - self._failing_since:.0f} s{last}; stopping early"
            )

    async def _get_outcome(self, tid: str) -> Outcome:
        try:
            response = await self._send(tid)
            if response.status_code == 401 and self._auth.renewable:
                _give_back(response)
                await self._auth.renew(self._http, response.authorization)
                response = await self._send(tid)
            outcome = self._kept(tid, response)
        except MalformedResponseError:
            raise  # the API answered: a body it cannot read is no sign of an outage
        except TransientApiError as exc:
            if self._failing_since is None:
                self._failing_since = self._clock()
            self._last_failure = str(exc)
            raise
        self._failing_since = None
        return outcome

    def _kept(self, tid: str, response: Reply) -> Outcome:
        """The outcome of an answer; its body's bytes are given back to the batch unless the outcome keeps it."""
        try:
            outcome = self._interpret(tid, response)
        except BaseException:
            _give_back(response)
            raise
        if outcome.body is None:
            _give_back(response)
        return outcome

    async def _send(self, tid: str) -> Reply:
        url = f"{self._options.api_url.rstrip('/')}/transcribe-async/{tid}"
        room = _room.get()
        if room is not None:
            room.check_room()  # a full batch takes no slot of the shared requests limit
        if self._budget is not None:
            await self._budget.take()
        async with self._slots:
            await self._limiter.acquire()
            if room is not None:
                room.check_room()  # the batch may have filled up while this request waited for its turn
            headers = {
                "Authorization": await self._auth.authorization(self._http),
                VERSION_HEADER: self._options.api_version,
                "Accept": "application/json",
            }
            pool = self._pools[self.requests_sent % len(self._pools)]
            self.requests_sent += 1
            stats = _stats.get()
            if stats is not None:
                stats.requests += 1
            options = self._options
            return await exchange(
                pool,
                url,
                headers,
                max_bytes=options.max_response_bytes,
                deadline_s=options.request_deadline_s,
                room=room,
            )

    def _interpret(self, tid: str, response: Reply) -> Outcome:
        status = response.status_code
        code = _error_code(response)
        if status == 200:
            return self._decode(tid, response)
        if status == 404:
            return Outcome(tid, "not_found", _now(), api_version=self._options.api_version, error_code=code)
        if status == 401:
            raise AuthenticationError(
                "the API rejected the credentials (401): check the API key or OAuth client settings"
                " and the base URL's deployment",
                status_code=401,
                code=code,
            )
        if status == 403:
            raise AuthorizationError(
                "the API refused access (403): the credentials are valid but not allowed this endpoint",
                status_code=403,
                code=code,
            )
        if status in TRANSIENT_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise TransientApiError(f"HTTP {status}", status_code=status, code=code, retry_after=retry_after)
        raise PermanentApiError(f"HTTP {status}", status_code=status, code=code or f"http_{status}")

    def _decode(self, tid: str, response: Reply) -> Outcome:
        try:
            body = jsontext.loads(response.content)
        except jsontext.JsonError as exc:
            raise MalformedResponseError(f"HTTP 200 with a body that cannot be read: {exc}", status_code=200) from None
        try:
            outcome = outcome_from_response(
                body, fetched_at=_now(), api_version=self._options.api_version, requested_id=tid
            )
        except EnvelopeError as exc:
            if exc.reason == "id_mismatch":
                raise PermanentApiError(str(exc), status_code=200, code=exc.reason) from None
            raise MalformedResponseError(str(exc), status_code=200) from None
        return dataclasses.replace(outcome, body=response.content) if outcome.status == "succeeded" else outcome


def _give_back(response: Reply) -> None:
    """Give the bytes of a body not kept back to the batch of the current `fetch_many` call."""
    room = _room.get()
    if room is not None:
        room.released(len(response.content))


async def _cancel(tasks: Sequence[asyncio.Future[Outcome | None]]) -> None:
    """Cancel the tasks still running and wait until every task has finished."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _error_code(response: Reply) -> str | None:
    """The `code` field of a JSON error body when it is a string or an integer (finer than the status)."""
    if response.status_code == 200 or not response.content:
        return None
    try:
        body = jsontext.loads(response.content)
    except jsontext.JsonError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    if isinstance(code, bool) or not isinstance(code, str | int):
        return None  # a HugeInt, an object, a float: not a code to branch on
    return str(code)


def _now() -> datetime:
    return datetime.now(UTC)
