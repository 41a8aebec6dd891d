"""The benchmark's large-transcript rows (issue 19): long recordings, and the memory budget of ingest and run.

Measured through the running Prefect server, as a whole process tree like every other row:

1. `talktime ingest` of 10 small responses (4 items each): the baseline, what the interpreter, the
   imports and Prefect cost a run that holds almost no data;
2. `talktime ingest` of `--large-records` records of about `--large-record-mib` MiB each
   (`benchmarks.large`: tens of thousands of items per transcript) with the default memory budget,
   then with `--memory-budget-mb` at each of `--large-budgets`;
3. `talktime ingest` of one record of `--huge-record-mib` MiB, over every budget's record limit:
   expected one `error` row (record_too_large), the record never decoded;
4. `talktime run` (default options otherwise: batches of 200 ids, 3 in flight, concurrency 8) of
   `--large-run-ids` ids of the large records, served byte for byte by `talktime emulator --data FILE
   --verbatim` (a separate process: its CPU is bg CPU, its memory not in the row), with the default
   budget and each of `--large-budgets`, next to its own baseline: `talktime run` of 10 small
   synthetic transcriptions.

Each row prints its peak RSS next to the budget plus the baseline's peak (the target: the tree's
peak within the budget on top of what a run costs with no data), the batches the budget cuts, the
rows written and their statuses. Printed, never asserted.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from benchmarks.large import LargeFile, large_file
from benchmarks.proctree import Usage
from benchmarks.report import Row, failure, target
from benchmarks.services import API_KEY, Emulator
from benchmarks.synth import dataset
from flows.settings import DEFAULT_MEMORY_BUDGET_MB, IngestSettings, RunSettings

if TYPE_CHECKING:
    from benchmarks.bench import Bench

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ROOT / "data" / "bench"
MIB = 1024 * 1024
BASELINE_RECORDS = 10


def batch_limit(budget_mb: int) -> int:
    """The most input bytes a batch (and a record) may hold under `budget_mb` with ingest's defaults."""
    return IngestSettings(out="out", inputs=["in"], memory_budget_mb=budget_mb).batch_bytes


def outcomes(out: Path) -> tuple[dict[str, int], int | None]:
    """Transcriptions per 'status' or 'status (error_code)', and the item rows written."""
    try:
        frame = pl.scan_parquet(str(out / "transcriptions" / "**" / "*.parquet"), hive_partitioning=False)
        label = pl.when(pl.col("error_code").is_null()).then(pl.col("status"))
        label = label.otherwise(pl.format("{} ({})", "status", "error_code")).alias("label")
        counts = frame.group_by(label).len().collect()
        found = dict(zip(counts["label"].to_list(), counts["len"].to_list(), strict=True))
    except Exception:  # the sanity check only
        found = {}
    try:
        pattern = str(out / "transcript_items" / "**" / "*.parquet")
        items = int(pl.scan_parquet(pattern, hive_partitioning=False).select(pl.len()).collect().item())
    except Exception:  # no item file at all (the huge record's row) or unreadable
        items = 0 if found else None
    return found, items


def outcome_text(found: dict[str, int], items: int | None) -> str:
    """'200 succeeded; 4,430,000 item rows'."""
    statuses = ", ".join(f"{n:,} {s}" for s, n in sorted(found.items(), key=lambda kv: -kv[1])) or "no rows"
    rows = "item rows unreadable" if items is None else f"{items:,} item rows"
    return f"{statuses}; {rows}"


def ingest(bench: Bench, name: str, path: Path, budget_mb: int | None) -> tuple[Usage, dict[str, int], int | None]:
    """`talktime ingest` of `path` (with `--memory-budget-mb` unless None) into a fresh output."""
    out = bench.scratch("large") / "out"
    cmd = [BIN / "talktime", "ingest", "--input", path, "--out", out]
    if budget_mb is not None:
        cmd += ["--memory-budget-mb", str(budget_mb)]
    usage = bench.measure(name, cmd, env=bench.talktime_env(), background=bench.background())
    found, items = outcomes(out)
    bench.discard(out.parent)
    return usage, found, items


def budget_text(usage: Usage, budget_mb: int, baseline: Usage | None) -> tuple[str, str]:
    """The peak next to the budget and the baseline, and the target with whether it was met."""
    if baseline is None or failure(baseline):
        return f"peak {usage.peak_rss_mib:,.0f} MiB vs budget {budget_mb:,} MiB (no baseline)", target(
            "RSS ≤ budget + baseline", None
        )
    bound = budget_mb + baseline.peak_rss_mib
    text = (
        f"peak {usage.peak_rss_mib:,.0f} MiB vs budget {budget_mb:,} + baseline {baseline.peak_rss_mib:,.0f} "
        f"= {bound:,.0f} MiB ({usage.peak_rss_mib - baseline.peak_rss_mib:+,.0f} MiB on the baseline)"
    )
    met = None if failure(usage) else usage.peak_rss_mib <= bound
    return text, target(f"RSS ≤ {bound:,.0f} MiB", met)


def prepare(bench: Bench, count: int, record_mib: float) -> LargeFile:
    """The cached file of `count` records of `record_mib` MiB (generated now if missing)."""
    print(f"large: preparing {count:,} record(s) of {record_mib:,g} MiB ...", flush=True)
    started = time.perf_counter()
    data = large_file(DATA / "inputs", count, int(record_mib * MIB), seed=bench.args.seed)
    print(
        f"  {data.path.relative_to(ROOT)}: {data.bytes / MIB:,.0f} MiB, {data.items:,} items "
        f"({time.perf_counter() - started:,.1f} s)",
        flush=True,
    )
    return data


def bench_baseline(bench: Bench) -> Usage | None:
    """`talktime ingest` of 10 small responses: what a run costs with almost no data."""
    small = dataset(DATA / "inputs", BASELINE_RECORDS, seed=bench.args.seed, files=1, small=True)
    usage, found, items = ingest(bench, f"large-baseline-{BASELINE_RECORDS}", small.files[0], None)
    text = failure(usage) or f"the baseline (interpreter, imports, Prefect); {outcome_text(found, items)}"
    what = f"(L) baseline: `talktime ingest` of {BASELINE_RECORDS} small responses"
    bench.add(Row(what, f"{BASELINE_RECORDS} × 4 items, {small.bytes / 1024:,.0f} KiB", usage, text))
    return None if failure(usage) else usage


def bench_large_records(bench: Bench, data: LargeFile, baseline: Usage | None) -> None:
    """The large records with the default budget, then each of --large-budgets."""
    label = (
        f"{data.count:,} records × {data.record_bytes / MIB:,g} MiB "
        f"({data.items / data.count:,.0f} items each, {data.items / 1e6:.2f}M items, {data.bytes / MIB:,.0f} MiB)"
    )
    for budget in [None, *bench.args.large_budgets]:
        mb = DEFAULT_MEMORY_BUDGET_MB if budget is None else budget
        limit = batch_limit(mb)
        per_batch = max(1, limit // max(1, data.bytes // data.count))
        option = "default options" if budget is None else f"`--memory-budget-mb {budget}`"
        what = f"(L) `talktime ingest`, {option} (budget {mb:,} MiB)"
        name = f"large-ingest-{data.count}x{data.record_bytes / MIB:g}mib-budget{mb}"
        usage, found, items = ingest(bench, name, data.path, budget)
        if failure(usage):
            bench.add(Row(what, label, usage, str(failure(usage))))
            continue
        peak, goal = budget_text(usage, mb, baseline)
        expected = "" if items == data.items else f" (expected {data.items:,})"
        batches = f"batches ≤ {limit / MIB:.1f} MiB ({per_batch} record{'s' if per_batch > 1 else ''})"
        text = f"{peak}; {batches}; {outcome_text(found, items)}{expected}"
        bench.add(Row(what, label, usage, text, goal))


def bench_huge_record(bench: Bench, data: LargeFile, baseline: Usage | None) -> None:
    """One record over the default budget's record limit: an `error` row, not decoded."""
    mb = DEFAULT_MEMORY_BUDGET_MB
    label = f"1 record of {data.bytes / MIB:,.0f} MiB ({data.items / 1e6:.2f}M items)"
    what = f"(L) `talktime ingest`, default options (budget {mb:,} MiB, record limit {batch_limit(mb) / MIB:.1f} MiB)"
    usage, found, items = ingest(bench, f"large-ingest-1x{data.record_bytes / MIB:g}mib", data.path, None)
    if failure(usage):
        bench.add(Row(what, label, usage, str(failure(usage))))
        return
    peak, goal = budget_text(usage, mb, baseline)
    rows = sum(found.values())
    is_error = found == {"error (record_too_large)": 1} and not items
    verdict = "an error row (record_too_large), not decoded" if is_error else "NOT the expected error row"
    text = f"{rows:,} row{'s' if rows != 1 else ''}: {verdict}; {outcome_text(found, items)}; {peak}"
    bench.add(Row(what, label, usage, text, "; ".join([target("error row", is_error), goal])))


# talktime run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """One measured `talktime run`: its usage, the transcriptions by status, the item rows, its log."""

    usage: Usage
    found: dict[str, int]
    items: int | None
    log: Path


def run(bench: Bench, name: str, emu: Emulator, ids_file: Path, budget_mb: int | None) -> RunResult:
    """`talktime run` of the ids in `ids_file` against `emu` (with `--memory-budget-mb` unless None) into a
    fresh output, default options otherwise."""
    out = bench.scratch("large-run") / "out"
    cmd = [BIN / "talktime", "run", "--api-url", emu.api_url, "--ids", ids_file, "--out", out, "--api-key", API_KEY]
    if budget_mb is not None:
        cmd += ["--memory-budget-mb", str(budget_mb)]
    usage = bench.measure(name, cmd, env=bench.talktime_env(), background=bench.background(emu.pid))
    found, items = outcomes(out)
    bench.discard(out.parent)
    return RunResult(usage, found, items, bench.logs / f"{name}.log")


def committed_batches(log: Path) -> tuple[int, int]:
    """Batches the run's log reports committed, and how many of them handed ids back (memory budget)."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if " committed: " in line]
    except OSError:
        return 0, 0
    return len(lines), sum("left for a later batch" in line for line in lines)


def bench_run_baseline(bench: Bench) -> Usage | None:
    """`talktime run` of 10 small synthetic transcriptions: what a run costs with almost no data."""
    log = bench.logs / f"emulator-large-baseline-{BASELINE_RECORDS}.log"
    with Emulator(BIN, bench.work, BASELINE_RECORDS, bench.args.seed, (), log) as emu:
        result = run(bench, f"large-run-baseline-{BASELINE_RECORDS}", emu, emu.ids_file, None)
    usage = result.usage
    text = failure(usage) or f"the baseline of `run`; {outcome_text(result.found, result.items)}"
    what = f"(L) baseline: `talktime run` of {BASELINE_RECORDS} small synthetic transcriptions"
    bench.add(Row(what, f"{BASELINE_RECORDS} ids (50-400 items each)", usage, text))
    return None if failure(usage) else usage


def bench_large_run(bench: Bench, data: LargeFile, baseline: Usage | None) -> None:
    """`talktime run` of --large-run-ids of the large records, served verbatim, at each budget."""
    count = min(bench.args.large_run_ids, data.count)
    record_mib = data.bytes / data.count / MIB
    label = f"{count:,} ids × {record_mib:,.1f} MiB responses ({data.items / data.count:,.0f} items each)"
    log = bench.logs / f"emulator-large-{data.count}.log"
    with Emulator(BIN, bench.work, 0, bench.args.seed, ("--data", str(data.path), "--verbatim"), log) as emu:
        ids_file = bench.work / f"ids-large-{count}.txt"
        ids_file.write_text("".join(f"{tid}\n" for tid in emu.ids()[:count]))
        for budget in [None, *bench.args.large_budgets]:
            mb = DEFAULT_MEMORY_BUDGET_MB if budget is None else budget
            limit = RunSettings(api_url="u", ids_file="i", out="o", memory_budget_mb=mb).batch_bytes
            option = "default options" if budget is None else f"`--memory-budget-mb {budget}`"
            what = f"(L) `talktime run`, {option} (budget {mb:,} MiB: batches ≤ {limit / MIB:.1f} MiB of responses)"
            result = run(bench, f"large-run-{count}x{record_mib:.0f}mib-budget{mb}", emu, ids_file, budget)
            if failure(result.usage):
                bench.add(Row(what, label, result.usage, str(failure(result.usage))))
                continue
            peak, goal = budget_text(result.usage, mb, baseline)
            batches, full = committed_batches(result.log)
            by_count = -(-count // RunSettings.model_fields["batch_size"].default)
            cut = f"{batches} batches ({full} filled their share of the budget; {by_count} by id count alone)"
            text = f"{peak}; {cut}; {outcome_text(result.found, result.items)}"
            bench.add(Row(what, label, result.usage, text, goal))


def bench_large(bench: Bench) -> None:
    """Every large-transcript row."""
    baseline = bench_baseline(bench)
    if bench.args.large_records:
        bench_large_records(bench, prepare(bench, bench.args.large_records, bench.args.large_record_mib), baseline)
    if bench.args.huge_record_mib:
        bench_huge_record(bench, prepare(bench, 1, bench.args.huge_record_mib), baseline)
    if bench.args.large_run_ids:
        records = max(bench.args.large_records, bench.args.large_run_ids)  # the ingest rows' file when it has enough
        data = prepare(bench, records, bench.args.large_record_mib)
        bench_large_run(bench, data, bench_run_baseline(bench))
