"""The benchmark's flow CPU per committed batch: commit times from a talktime log, CPU between them."""

from __future__ import annotations

import time

import pytest

from benchmarks.flow_cpu import FlowCpu, commit_times, cpu_at, flow_cpu

STARTED = time.mktime((2026, 12, 4, 17, 0, 0, 0, 0, -1))  # local time, as Prefect's console logs it
LOG = """\
17:00:00.500 | INFO    | prefect - Starting temporary server on http://127.0.0.1:8000
17:00:02.000 | INFO    | Flow run 'quiet-otter' - read-1-of-3 committed: 500 ids, 0 requests rows, 1.0 s
17:00:03.000 | INFO    | Flow run 'quiet-otter' - read-2-of-3 committed: 500 ids, 0 requests rows, 1.0 s
17:00:04.000 | INFO    | Flow run 'quiet-otter' - read-3-of-3 committed: 40 ids, 0 requests rows, 0.2 s
17:00:04.500 | INFO    | Flow run 'quiet-otter' - this run: 3 batches, 0 requests, retries: none
"""
# CPU seconds of the flow's process over time: 1 s of start-up, then 0.05 s per second.
TRACE = [(STARTED + t, 1.0 + max(0.0, t - 1.0) * 0.05) for t in (0.0, 1.0, 2.5, 3.5, 5.0)]


def test_commit_times_are_the_commit_lines_dated_by_the_start() -> None:
    assert commit_times(LOG, STARTED) == [STARTED + 2, STARTED + 3, STARTED + 4]


def test_a_commit_past_midnight_is_on_the_next_day() -> None:
    started = time.mktime((2026, 12, 4, 23, 59, 59, 0, 0, -1))
    line = "00:00:01.250 | INFO    | Flow run 'x' - read-1-of-1 committed: 1 ids, 0 requests\n"
    assert commit_times(line, started) == [started + 2.25]


@pytest.mark.parametrize(
    ("when", "cpu"),
    [(-1.0, 1.0), (0.0, 1.0), (1.75, 1.0375), (2.5, 1.075), (9.0, 1.2)],
    ids=["before-first", "first", "between", "on-a-sample", "after-last"],
)
def test_cpu_at_interpolates_between_samples_and_clamps(when: float, cpu: float) -> None:
    assert cpu_at(TRACE, STARTED + when) == pytest.approx(cpu)


def test_flow_cpu_counts_the_cpu_between_the_first_and_last_commit_per_batch() -> None:
    found = flow_cpu(LOG, TRACE, cpu_s=1.5)
    expected = FlowCpu(3, pytest.approx(50.0), pytest.approx(500.0), pytest.approx(1.05), pytest.approx(0.35))
    assert found == expected


def test_flow_cpu_has_no_window_with_one_commit_and_nothing_without_a_commit() -> None:
    one = flow_cpu(LOG.splitlines()[1] + "\n", TRACE, cpu_s=1.5)
    assert one == FlowCpu(1, None, pytest.approx(1500.0), pytest.approx(1.05), pytest.approx(0.45))
    assert flow_cpu(LOG.splitlines()[0], TRACE, cpu_s=1.5) is None
