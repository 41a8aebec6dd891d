"""The benchmark's history rows (issue 16, item 6): what an output's history costs a run.

1. The same `talktime ingest` of `--history-responses` small synthetic responses (4 items each,
   `benchmarks.synth`; `--history-input full` takes the bench's full-size ones) into an empty
   output, then into outputs already holding each of `--history-sizes` transcriptions
   (synthesised directly as ledger and data files, `benchmarks.history`, and hard-linked afresh
   for each measurement so every ingest starts from the same state).
2. The cost per transcription of building an output through `talktime ingest`, at each of
   `--build-sizes` small responses, into an empty output.

Each row: wall, CPU, peak RSS of the ingest's process tree; after it, the most files any table
holds in one partition, and how long a plain polars glob read of `speaker_metrics`
(`pl.read_parquet("OUT/speaker_metrics/**/*.parquet")`) takes next to reading the same rows from
one file. Ratios against the empty output's row (1) and the smallest build (2), targets next to
them, printed, never asserted.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from benchmarks.history import copy_output, history_output
from benchmarks.proctree import Usage
from benchmarks.report import Row, failure, target
from benchmarks.synth import Dataset, dataset

if TYPE_CHECKING:
    from benchmarks.bench import Bench

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ROOT / "data" / "bench"
# Targets of issue 16: history size -> (at most this times the empty output's wall, peak RSS MiB or None).
HISTORY_TARGETS: dict[int, tuple[float, float | None]] = {1_000_000: (1.25, None), 10_000_000: (1.5, 1024.0)}
BUILD_COST_TARGET = 1.5  # the largest build's cost per transcription, at most this times the smallest's
FILES_TARGET = 16  # files per table per partition after the largest build
GLOB_TARGET = 1.5  # a glob read of speaker_metrics, at most this times reading the same rows from one file


def glob_read(out: Path, scratch: Path) -> tuple[float, float]:
    """(s to glob-read `speaker_metrics`, s to read the same rows from one file), in a child process
    (`benchmarks.globread`); NaN when it fails."""
    cmd = [BIN / "python", "-m", "benchmarks.globread", out, "speaker_metrics", scratch]
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        print(f"  glob read failed: {done.stderr.strip()[-300:]}", flush=True)
        return float("nan"), float("nan")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["glob_s"]), float(result["one_file_s"])


def most_files(out: Path) -> int:
    """The most data files any table holds in one partition."""
    counts = Counter(path.parent for path in out.glob("*/fetched_date=*/*.parquet"))
    return max(counts.values(), default=0)


def transcription_rows(out: Path) -> int | None:
    """Rows of `transcriptions` (from the footers), None if unreadable."""
    try:
        pattern = str(out / "transcriptions" / "**" / "*.parquet")
        return int(pl.scan_parquet(pattern, hive_partitioning=False).select(pl.len()).collect().item())
    except Exception:  # the sanity check only
        return None


class Measured:
    """One ingest measured `repeat` times from the same starting output: the fastest run's usage, the
    wall times of all, and what the output held after the last."""

    def __init__(self, usages: list[Usage], files: int, glob_s: float, one_s: float, rows: int | None) -> None:
        self.usages = usages
        self.files, self.glob_s, self.one_s, self.rows = files, glob_s, one_s, rows

    @property
    def usage(self) -> Usage:
        failed = [u for u in self.usages if failure(u)]
        return failed[0] if failed else min(self.usages, key=lambda u: u.wall_s)

    @property
    def ok(self) -> bool:
        return not failure(self.usage)

    def spread(self) -> str:
        """'; wall 20.1-21.4 s over 3 runs (median 20.8)' when repeated."""
        walls = [u.wall_s for u in self.usages]
        if len(walls) < 2:
            return ""
        median = statistics.median(walls)
        return f"; wall {min(walls):.1f}-{max(walls):.1f} s over {len(walls)} runs (median {median:.1f})"

    def after(self) -> str:
        """Files per partition and the glob read, as the row prints them."""
        ratio = self.glob_s / self.one_s if self.one_s else float("nan")
        return (
            f"after: ≤ {self.files} files per table per partition; glob read of speaker_metrics "
            f"{self.glob_s:.3f} s vs {self.one_s:.3f} s from one file ({ratio:.2f}x)"
        )


def ingest(bench: Bench, name: str, data: Dataset, start: Path | None) -> Measured:
    """`talktime ingest` of `data` into a copy of the output `start` (None: an empty one), `repeat`
    times; what the output holds is looked at after the last."""
    usages: list[Usage] = []
    repeat = bench.args.history_repeat
    out = bench.scratch("history") / "out"
    for k in range(repeat):
        if k:
            bench.discard(out.parent)
            out = bench.scratch("history") / "out"
        if start is not None:
            copy_output(start, out)
        cmd = [BIN / "talktime", "ingest", "--input", *data.files, "--out", out]
        label = name if repeat == 1 else f"{name}-{k + 1}"
        usages.append(bench.measure(label, cmd, env=bench.talktime_env(), background=bench.background()))
    glob_s, one_s = glob_read(out, out.parent)
    measured = Measured(usages, most_files(out), glob_s, one_s, transcription_rows(out))
    bench.discard(out.parent)
    return measured


def rows_note(measured: Measured, expected: int) -> str:
    """'' when `transcriptions` holds the expected rows, else what it holds."""
    if measured.rows == expected:
        return ""
    return f"; transcriptions rows {measured.rows:,} (expected {expected:,})" if measured.rows else "; rows unreadable"


def history_inputs(bench: Bench) -> Dataset:
    """The responses every history row ingests (cached)."""
    count, small = bench.args.history_responses, bench.args.history_input == "small"
    print(f"history: preparing {count:,} {'small ' if small else ''}responses ...", flush=True)
    return dataset(DATA / "inputs", count, seed=bench.args.seed, files=bench.args.files, small=small)


def history_start(bench: Bench, size: int) -> Path:
    """The cached synthesised output of `size` transcriptions (built now if missing)."""
    print(f"history: output holding {size:,} transcriptions over {bench.args.history_days} days ...", flush=True)
    started = time.perf_counter()
    folder = history_output(DATA / "history", size, days=bench.args.history_days, seed=bench.args.seed)
    print(f"  {folder.relative_to(ROOT)} ({time.perf_counter() - started:,.1f} s)", flush=True)
    return folder


def bench_history_ingest(bench: Bench) -> None:
    """The same ingest into an empty output and into each history size."""
    data = history_inputs(bench)
    kind = "small " if bench.args.history_input == "small" else ""
    what = f"(h) `talktime ingest` of {data.count:,} {kind}responses"
    base = ingest(bench, f"history-ingest-{data.count}-into-0", data, None)
    bench.add(Row(what, "into an empty output", base.usage, describe(base, None, data.count, 0)))
    for size in bench.args.history_sizes:
        start = history_start(bench, size)
        measured = ingest(bench, f"history-ingest-{data.count}-into-{size}", data, start)
        label = f"into an output holding {size:,} ({bench.args.history_days} days)"
        goal = history_target(size, measured, base)
        bench.add(Row(what, label, measured.usage, describe(measured, base, data.count, size), goal))


def describe(measured: Measured, base: Measured | None, count: int, size: int) -> str:
    """A history row's result: ratios to the empty output's row, what the output looks like after."""
    if not measured.ok:
        return str(failure(measured.usage))
    ratio = ""
    if base is not None and base.ok:
        u, b = measured.usage, base.usage
        ratio = f"{u.wall_s / b.wall_s:.2f}x empty's wall, {u.cpu_s / b.cpu_s:.2f}x its CPU; "
    return ratio + measured.after() + rows_note(measured, count + size) + measured.spread()


def history_target(size: int, measured: Measured, base: Measured) -> str:
    """The issue's targets at this history size ('' for sizes it sets none for)."""
    if size not in HISTORY_TARGETS:
        return ""
    ratio, rss = HISTORY_TARGETS[size]
    both_ok = measured.ok and base.ok
    met = measured.usage.wall_s / base.usage.wall_s <= ratio if both_ok else None
    goals = [target(f"≤ {ratio}x empty", met)]
    if rss is not None:
        goals.append(target(f"RSS ≤ {rss / 1024:.0f} GiB", measured.usage.peak_rss_mib <= rss if measured.ok else None))
    return "; ".join(goals)


def bench_build(bench: Bench) -> None:
    """The cost per transcription of building an output through `talktime ingest`, at each size."""
    sizes = sorted(bench.args.build_sizes)
    smallest: Measured | None = None
    for size in sizes:
        print(f"build: preparing {size:,} small responses ...", flush=True)
        data = dataset(DATA / "inputs", size, seed=bench.args.seed, files=bench.args.files, small=True)
        measured = ingest(bench, f"build-{size}", data, None)
        smallest = smallest or measured
        what = "(h) building an output: `talktime ingest`"
        text, goal = build_result(measured, smallest, size, sizes[0], largest=size == sizes[-1] and len(sizes) > 1)
        bench.add(Row(what, f"{size:,} small responses into an empty output", measured.usage, text, goal))


def build_result(measured: Measured, smallest: Measured, size: int, first: int, *, largest: bool) -> tuple[str, str]:
    """A build row's result (cost per transcription, ratio to the smallest build, the output after) and targets."""
    if not measured.ok:
        return str(failure(measured.usage)), ""
    u = measured.usage
    text = f"{u.wall_s / size * 1e6:,.0f} µs wall, {u.cpu_s / size * 1e6:,.0f} µs CPU per transcription"
    if not largest:
        return f"{text}; {measured.after()}{rows_note(measured, size)}{measured.spread()}", ""
    base = smallest.usage
    ratio = (u.wall_s / size) / (base.wall_s / first) if smallest.ok else None
    if ratio is not None:
        cpu = (u.cpu_s / size) / (base.cpu_s / first)
        text += f" = {ratio:.2f}x the wall ({cpu:.2f}x the CPU) per transcription at {first:,}"
    glob = measured.glob_s / measured.one_s if measured.one_s > 0 else None
    goals = [
        target(f"≤ {BUILD_COST_TARGET}x the cost at {first:,}", None if ratio is None else ratio <= BUILD_COST_TARGET),
        target(f"≤ {FILES_TARGET} files per table per partition", measured.files <= FILES_TARGET),
        target(f"glob read ≤ {GLOB_TARGET}x one file", None if glob is None else glob <= GLOB_TARGET),
    ]
    return f"{text}; {measured.after()}{rows_note(measured, size)}{measured.spread()}", "; ".join(goals)


def bench_history(bench: Bench) -> None:
    """Every history row."""
    bench_history_ingest(bench)
    if bench.args.build_sizes:
        bench_build(bench)
