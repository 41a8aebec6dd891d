"""Batches in flight: submit ahead, commit in order, and re-poll ongoing ids on the side.

`run_batches` keeps at most `in_flight` batches submitted and not yet committed (so memory stays
bounded whatever the input's size), commits each finished batch in submission order (one
writer), and feeds ids still `ongoing` into `Repolls`: a run-level queue that hands them back,
with backoff, as small re-poll batches served between the others, until `max_wait_s` after
their first poll. No batch ever waits for an ongoing id; the run waits for them once, at the end.
Ids a batch handed back unpolled (`deferred`: its responses filled its share of the memory budget)
go into batches of their own, submitted before any new batch.

It knows nothing of Prefect: `submit` is a task's `.submit` in the flows, or a thread pool's in
`benchmarks/direct.py`.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

from flows.batch import BatchSpec, StagedBatch

POLL_INITIAL_S = 1.0
POLL_MAX_S = 30.0


class Future(Protocol):
    def result(self) -> StagedBatch: ...


class Repolls:
    """Ongoing ids, each due again after a doubling delay, dropped once past its deadline."""

    def __init__(self, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._due: list[tuple[float, str]] = []
        self._state: dict[str, tuple[float, float]] = {}  # id -> (delay, deadline)

    def __len__(self) -> int:
        return len(self._due)

    def add(self, ids: list[str]) -> None:
        """Ids seen `ongoing` just now (first time: their deadline starts now)."""
        now = self._clock()
        for tid in ids:
            delay, deadline = self._state.get(tid, (POLL_INITIAL_S / 2, now + self._max_wait_s))
            delay = min(delay * 2, POLL_MAX_S)
            if now + delay <= deadline:
                self._state[tid] = (delay, deadline)
                heapq.heappush(self._due, (now + delay, tid))

    def take_due(self, limit: int) -> list[str]:
        """Up to `limit` ids whose time has come."""
        now, taken = self._clock(), list[str]()
        while self._due and self._due[0][0] <= now and len(taken) < limit:
            taken.append(heapq.heappop(self._due)[1])
        return taken

    def wait_s(self) -> float:
        """Seconds until the next id is due (0 when one is)."""
        return max(0.0, self._due[0][0] - self._clock()) if self._due else 0.0


class HandedBack:
    """Ids that batches handed back unpolled, waiting for a batch of the same kind (re-poll or not)."""

    def __init__(self) -> None:
        self._ids: dict[bool, deque[str]] = {False: deque(), True: deque()}

    def add(self, ids: tuple[str, ...], *, repoll: bool) -> None:
        """Ids a batch handed back: served before those handed back earlier (the manifest's order)."""
        self._ids[repoll].extendleft(reversed(ids))

    def take(self, limit: int, *, repoll: bool) -> list[str]:
        """Up to `limit` ids (all of them when `limit` is 0), taken off the queue."""
        queue = self._ids[repoll]
        return [queue.popleft() for _ in range(min(limit or len(queue), len(queue)))]


def run_batches(
    specs: Iterator[BatchSpec],
    submit: Callable[[BatchSpec], Future],
    commit: Callable[[StagedBatch], None],
    *,
    in_flight: int,
    repolls: Repolls | None = None,
    repoll_spec: Callable[[list[str]], BatchSpec] | None = None,
    deferred_spec: Callable[[list[str]], BatchSpec] | None = None,
    batch_size: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> str | None:
    """Run every batch (and re-poll batch, and batch of ids handed back) to its commit; returns why the API
    was given up on, if it was. Ids handed back by a re-poll batch go to `repoll_spec`, others to
    `deferred_spec` (without which no batch may hand ids back)."""
    pending: deque[tuple[BatchSpec, Future]] = deque()
    back = HandedBack()
    stopped = False
    reason: str | None = None

    def next_spec() -> BatchSpec | None:
        if repoll_spec is not None:
            due = back.take(batch_size, repoll=True) or (repolls.take_due(batch_size) if repolls is not None else [])
            if due:
                return repoll_spec(due)
        rest = back.take(batch_size, repoll=False)
        if rest and deferred_spec is not None:
            return deferred_spec(rest)
        return next(specs, None)

    while True:
        while len(pending) < in_flight and not stopped and (spec := next_spec()) is not None:
            pending.append((spec, submit(spec)))
        if not pending:
            if stopped or repolls is None or not len(repolls):
                return reason
            sleep(repolls.wait_s())
            continue
        spec, future = pending.popleft()
        staged = future.result()
        commit(staged)
        if staged.stopped and not stopped:
            stopped, reason = True, staged.stopped
        if staged.deferred and (repoll_spec if spec.repoll else deferred_spec) is None:
            raise ValueError(f"{staged.name or 'a batch'} handed back ids, but this run has no batches for them")
        if not stopped:
            if repolls is not None:
                repolls.add(staged.ongoing)
            back.add(staged.deferred, repoll=spec.repoll)
