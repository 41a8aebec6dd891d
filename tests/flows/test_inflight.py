"""Batches in flight: the bound, commit order, and the run-level re-poll queue (no real sleeping)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import polars as pl

from flows.batch import BatchSpec, StagedBatch
from flows.inflight import Repolls, run_batches
from flows.storage.dataset import StagedFiles
from flows.storage.ledger import POLLED_SCHEMA


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def staged(spec: BatchSpec, statuses: dict[str, str], stopped: str | None = None) -> StagedBatch:
    polled = pl.DataFrame(
        {"transcription_id": list(statuses), "status": list(statuses.values()),
         "final": [s != "ongoing" for s in statuses.values()], "written": [True] * len(statuses)},
        schema=POLLED_SCHEMA,
    )  # fmt: skip
    return StagedBatch(spec.number, StagedFiles(spec.batch_id, "2026-11-24", {}), polled, pl.DataFrame(),
                       stopped=stopped)  # fmt: skip


def spec(n: int, ids: tuple[str, ...] = (), repoll: bool = False) -> BatchSpec:
    return BatchSpec(n, f"b{n}", "2026-11-24", "snap", ids=ids, repoll=repoll)


def test_repolls_back_off_and_stop_at_the_deadline() -> None:
    clock = FakeClock()
    queue = Repolls(max_wait_s=60, clock=clock)
    queue.add(["a"])
    polls = []
    while len(queue):
        clock.sleep(queue.wait_s())
        assert queue.take_due(10) == ["a"]
        polls.append(clock.now)
        queue.add(["a"])  # still ongoing
    assert polls == [1, 3, 7, 15, 31]  # the next (at 61) would be past the deadline


def test_in_flight_is_bounded_and_commits_follow_submission_order() -> None:
    submitted: list[int] = []
    committed: list[int] = []
    pending: list[Future[StagedBatch]] = []
    most = 0

    def submit(s: BatchSpec) -> Future[StagedBatch]:
        nonlocal most
        future: Future[StagedBatch] = Future()
        future.set_result(staged(s, {f"id{s.number}": "succeeded"}))
        submitted.append(s.number)
        pending.append(future)
        most = max(most, len(submitted) - len(committed))
        return future

    run_batches(iter(spec(n) for n in range(1, 11)), submit, lambda st: committed.append(st.number), in_flight=3)
    assert committed == submitted == list(range(1, 11))
    assert most == 3


def test_ongoing_ids_come_back_in_small_repoll_batches_without_holding_others() -> None:
    clock = FakeClock()
    answers = {"slow": iter(["ongoing", "ongoing", "succeeded"])}
    order: list[tuple[int, tuple[str, ...], bool]] = []
    numbers = iter(range(100, 200))

    def submit(s: BatchSpec) -> Future[StagedBatch]:
        order.append((s.number, s.ids, s.repoll))
        statuses = {i: next(answers[i]) if i in answers else "succeeded" for i in s.ids}
        future: Future[StagedBatch] = Future()
        future.set_result(staged(s, statuses))
        return future

    specs = iter([spec(1, ("slow", "x")), spec(2, ("y",)), spec(3, ("z",))])
    run_batches(specs, submit, lambda st: None, in_flight=2, repolls=Repolls(60, clock),
                repoll_spec=lambda due: spec(next(numbers), tuple(due), repoll=True), batch_size=10,
                sleep=clock.sleep)  # fmt: skip
    assert [o[0] for o in order[:3]] == [1, 2, 3]  # the regular batches never waited for "slow"
    assert [o[1:] for o in order[3:]] == [(("slow",), True), (("slow",), True)]
    assert clock.now == 3  # re-polled at 1 s and 3 s after its first poll, then succeeded


def test_an_api_outage_stops_new_batches_but_commits_those_in_flight() -> None:
    committed: list[int] = []

    def submit(s: BatchSpec) -> Future[StagedBatch]:
        future: Future[StagedBatch] = Future()
        future.set_result(staged(s, {f"id{s.number}": "error"}, stopped="down" if s.number == 2 else None))
        return future

    with ThreadPoolExecutor(1):
        reason = run_batches(iter(spec(n) for n in range(1, 10)), submit, lambda st: committed.append(st.number),
                             in_flight=3)  # fmt: skip
    assert reason == "down"
    assert committed == [1, 2, 3, 4]  # 3 and 4 were already in flight when 2 reported the outage
