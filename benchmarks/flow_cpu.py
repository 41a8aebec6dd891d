"""The flow's CPU per committed batch (issue 17): the serial part a single writer pays per batch.

Under `talktime ingest --dask-address` the batch tasks run in the Dask workers, so the CLI process
holds only the flow: its body, Prefect's orchestration of each task (submitting it, waiting for its
manifest), the progress artifact, and the commit loop. Its CPU is sampled while it runs
(`proctree.measure(cpu_trace=...)`), and its log timestamps each commit (`read-3-of-40 committed:
...`). The CPU it spent between its first and its last commit, over the batches committed in that
window, is the flow's CPU per committed batch, without the start-up (the interpreter, imports, the
flow run's creation) and the end of the run (merging the partition it wrote, the output's status,
the artifacts), which are per run. The batches whose tasks were submitted before the first commit
(`--in-flight` of them) have their submission outside the window, so it slightly undercounts the
orchestration. The whole process's CPU over every batch is printed next to it, with the CPU spent
before the first commit and after the last.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

# Prefect's console format: "17:38:01.123 | INFO    | Flow run 'bulky-lorikeet' - read-3-of-40 committed: 500 ids, ..."
COMMITTED = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \|.* - \S+ committed: \d+ ids", re.MULTILINE)
BATCHES = re.compile(r" - this run: (\d+) batches,")
DAY_S = 86_400.0


@dataclass(frozen=True)
class FlowCpu:
    """The flow process's CPU per committed batch: in the commit window, and over the whole run."""

    batches: int  # committed, as the log counts them
    window_ms: float | None  # per batch between the first and the last commit (None: fewer than 2 commits)
    whole_ms: float  # the whole process's CPU over every batch
    before_s: float | None = None  # CPU seconds until the first commit (start-up, the first batches' wait)
    after_s: float | None = None  # CPU seconds after the last commit (merging, the output's status, artifacts)


def commit_times(log: str, started: float) -> list[float]:
    """Unix times of the log's commit lines; `started` (Unix time, before the first line) dates them."""
    day = time.localtime(started)
    midnight = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0, 0, 0, -1))
    times = []
    for match in COMMITTED.finditer(log):
        hours, minutes, seconds, millis = (int(g) for g in match.groups())
        stamp = midnight + hours * 3600 + minutes * 60 + seconds + millis / 1000
        times.append(stamp + DAY_S if stamp < started - 60 else stamp)  # past midnight
    return times


def cpu_at(trace: Sequence[tuple[float, float]], when: float) -> float:
    """CPU seconds at `when`, interpolated between the samples around it (clamped to the first and last)."""
    after = bisect.bisect_left(trace, when, key=lambda sample: sample[0])
    if after == 0:
        return trace[0][1]
    if after == len(trace):
        return trace[-1][1]
    (t0, c0), (t1, c1) = trace[after - 1], trace[after]
    return c0 + (c1 - c0) * (when - t0) / (t1 - t0)


def flow_cpu(log: str, trace: Sequence[tuple[float, float]], cpu_s: float) -> FlowCpu | None:
    """The flow's CPU per committed batch from its log and CPU samples; None if nothing was committed."""
    if not trace:
        return None
    commits = commit_times(log, trace[0][0])
    found = BATCHES.search(log)
    batches = int(found.group(1)) if found else len(commits)
    if not batches:
        return None
    if not commits:
        return FlowCpu(batches, None, cpu_s / batches * 1000)
    first, last = cpu_at(trace, commits[0]), cpu_at(trace, commits[-1])
    window = (last - first) / (len(commits) - 1) * 1000 if len(commits) >= 2 else None
    return FlowCpu(batches, window, cpu_s / batches * 1000, before_s=first, after_s=max(0.0, cpu_s - last))
