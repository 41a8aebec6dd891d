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


def staged(
    spec: BatchSpec, statuses: dict[str, str], stopped: str | None = None, deferred: tuple[str, ...] = ()
) -> StagedBatch:
    polled = pl.DataFrame(
        {"transcription_id": list(statuses), "status": list(statuses.values()),
         "final": [s != "ongoing" for s in statuses.values()], "written": [True] * len(statuses)},
        schema=POLLED_SCHEMA,
    )  # fmt: skip
    return StagedBatch(spec.number, StagedFiles(spec.batch_id, "2026-11-24", {}), polled, pl.DataFrame(),
                       stopped=stopped, deferred=deferred)  # fmt: skip


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


def test_ids_a_batch_hands_back_come_back_in_later_batches_before_new_ones() -> None:
    """A batch whose responses filled its share of the memory budget polls 2 of its ids; the rest come back,
    at most batch_size at a time, before the next new batch; every id is polled exactly once."""
    order: list[tuple[str, ...]] = []
    numbers = iter(range(100, 200))

    def submit(s: BatchSpec) -> Future[StagedBatch]:
        order.append(s.ids)
        future: Future[StagedBatch] = Future()
        future.set_result(staged(s, dict.fromkeys(s.ids[:2], "succeeded"), deferred=s.ids[2:]))
        return future

    specs = iter([spec(1, ("a", "b", "c", "d", "e", "f", "g")), spec(2, ("h", "i", "j"))])
    run_batches(specs, submit, lambda st: None, in_flight=1, batch_size=3,
                deferred_spec=lambda rest: spec(next(numbers), tuple(rest)))  # fmt: skip
    assert order == [("a", "b", "c", "d", "e", "f", "g"), ("c", "d", "e"), ("e", "f", "g"), ("g",),
                     ("h", "i", "j"), ("j",)]  # fmt: skip
    polled = [i for ids in order for i in ids[:2]]
    assert sorted(polled) == list("abcdefghij")


def test_handed_back_ids_stay_pending_when_the_api_is_given_up_on() -> None:
    order: list[tuple[str, ...]] = []

    def submit(s: BatchSpec) -> Future[StagedBatch]:
        order.append(s.ids)
        future: Future[StagedBatch] = Future()
        future.set_result(staged(s, {s.ids[0]: "error"}, stopped="down", deferred=s.ids[1:]))
        return future

    reason = run_batches(iter([spec(1, ("a", "b"))]), submit, lambda st: None, in_flight=1, batch_size=3,
                         deferred_spec=lambda rest: spec(9, tuple(rest)))  # fmt: skip
    assert (reason, order) == ("down", [("a", "b")])


def test_ids_a_repoll_batch_hands_back_come_back_in_a_repoll_batch() -> None:
    clock = FakeClock()
    answers = {"slow": iter(["ongoing", "succeeded"]), "late": iter(["ongoing", "succeeded"])}
    order: list[tuple[tuple[str, ...], bool]] = []
    numbers = iter(range(100, 200))

    def submit(s: BatchSpec) -> Future[StagedBatch]:
        order.append((s.ids, s.repoll))
        polled, rest = (s.ids[:1], s.ids[1:]) if s.repoll else (s.ids, ())
        future: Future[StagedBatch] = Future()
        future.set_result(staged(s, {i: next(answers[i]) for i in polled}, deferred=rest))
        return future

    run_batches(iter([spec(1, ("slow", "late"))]), submit, lambda st: None, in_flight=1, repolls=Repolls(60, clock),
                repoll_spec=lambda due: spec(next(numbers), tuple(due), repoll=True),
                deferred_spec=lambda rest: spec(next(numbers), tuple(rest)), batch_size=10,
                sleep=clock.sleep)  # fmt: skip
    assert order == [(("slow", "late"), False), (("late", "slow"), True), (("slow",), True)]
