"""talktime's benchmark: what users run, measured as they run it, next to references, in one run.

It drives the product only through its command line, as subprocesses, the way a user or a
scheduled deployment does, against a real Prefect server (`prefect server start`, started once,
its URL exported as PREFECT_API_URL), so the numbers include everything a user pays for: the
interpreter and imports, Prefect's flow and task runs and their API calls, reading, transforming,
validating and committing. Every command is measured as a whole process tree (wall time, CPU time,
peak RSS; see `benchmarks/proctree.py`), each into a fresh output folder.

1. `talktime ingest` over seeded synthetic API responses (NDJSON, dialect A; generated once and
   cached under data/bench/inputs/), at each `--sizes`, next to (`benchmarks/references.py`):
   - the polars floor (`benchmarks/floor_polars.py`): scan, explode the transcript, stream one
     Parquet file; the least work that produces an item table;
   - the two scripts a user would write instead (issue 17), DuckDB (`benchmarks/ref_duckdb.py`) and
     polars lazy (`benchmarks/ref_polars_lazy.py`), each writing the items and the simple talk time
     per speaker (the sum of the items' durations) to Parquet with bounded memory, in the
     benchmark's own venv (`benchmarks/.venv-dlt`, pinned in `benchmarks/requirements-ref.txt`);
     the fastest of the floor and these two is the yardstick of every other row;
   - `talktime ingest --task-runner dask`: the batch tasks on a LocalCluster of one single-threaded
     worker process per core that talktime starts itself (its scheduler in talktime's process, its
     workers children of it, so all of it is in the measured tree); and with `--dask-address` on a
     cluster started beforehand (`dask scheduler` and one `dask worker --nthreads 1` per core, with
     the server's PREFECT_API_URL): that cluster's CPU is bg CPU, its CPU and peak RSS (scheduler,
     nannies, workers) are in the result. The command is then the flow alone, which gives the
     flow's CPU per committed batch (orchestration plus commit; `benchmarks/flow_cpu.py`), a row of
     its own (`--skip-dask` leaves these rows out);
   - the same work without Prefect (`python -m benchmarks.direct ingest`, when that module exists):
     the ratio of the two is Prefect's overhead;
   - a naive pandas script and a dlt pipeline (`benchmarks/naive_pandas.py`, `benchmarks/dlt_load.py`),
     in the benchmark's venv since neither is a project dependency;
   - issue 17's targets for `talktime ingest`, as a row: CPU and wall at most 2x the faster of the
     two scripts, faster than pandas and dlt in wall time.
   Every ingest row prints its CPU per input item (µs/item).
2. `talktime run` against the project's emulator (`talktime emulator`, a separate process): the
   emulator's capacity measured by a load generator (`benchmarks/loadgen.py`) in another process,
   then `talktime run` at the same concurrency, with 100 ms of latency per request, and with 5% of
   ids ongoing for ever. The load generator runs twice: with a minimal HTTP/1.1 client on asyncio
   streams, cheap enough that the emulator is the bottleneck (its capacity), and with one
   `httpx.AsyncClient`, which is CPU-bound well below that and shows what one Python process using
   httpx can drive (`--capacity-client` picks which one the target is measured against).

It prints numbers and targets and asserts nothing. The table (Markdown) is printed at the end and
written to data/bench/results/ with every command's log.

    make bench                                   # 20k and 100k responses, everything
    make bench BENCH_ARGS="--sizes 500 --skip-dlt"   # smoke run, a minute or two
    .venv/bin/python -m benchmarks.bench --only run --run-ids 2000
    .venv/bin/python -m benchmarks.bench --only history    # the history rows (opt-in, see below)
    .venv/bin/python -m benchmarks.bench --only large      # the large-transcript rows (opt-in)

3. With `--history` (or `--only history`): the history rows (`benchmarks/history_rows.py`): the
   same ingest into an empty output and into outputs already holding 1M and 10M transcriptions
   (synthesised directly, `benchmarks/history.py`), and the cost per transcription of building
   100k and 1M through `talktime ingest`.
4. With `--large` (or `--only large`): the large-transcript rows (`benchmarks/large_rows.py`, issue
   19): `talktime ingest` of 200 records of ~5 MiB (tens of thousands of items each) with the
   default memory budget and with `--memory-budget-mb 512`, and of one 300 MiB record (an `error`
   row, record_too_large), and `talktime run` of 100 ids of those ~5 MiB records served by the emulator
   (`--verbatim`) with the same budgets, each peak RSS next to the budget plus the baseline (an
   ingest, or a run, of 10 small responses).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from benchmarks.flow_cpu import FlowCpu, flow_cpu
from benchmarks.history_rows import bench_history
from benchmarks.large_rows import bench_large
from benchmarks.proctree import Usage, measure, tree_cpu_s, tree_rss_mib
from benchmarks.references import (
    Yardstick,
    add_targets_row,
    bench_dlt,
    bench_pandas,
    bench_yardstick,
    count_rows,
    ratio_text,
    rows_check,
)
from benchmarks.report import NOTES, Row, failure, machine, markdown, target
from benchmarks.services import (
    API_KEY,
    Emulator,
    PrefectServer,
    Service,
    emulator_options,
    free_port,
    quiet_prefect_env,
)
from benchmarks.synth import Dataset, dataset

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
BIN = Path(sys.executable).parent
DATA = ROOT / "data" / "bench"
MIB = 1024 * 1024

FLOOR_RATIO_TARGET = 1.3
FLOW_CPU_TARGET_MS = 30.0  # issue 17: the flow's CPU per committed batch (orchestration plus commit)
FLOW_CPU_ROW = "flow CPU per committed batch (the `--dask-address` run's CLI process: orchestration + commit)"
FLOW_CPU_GOAL = f"≤ {FLOW_CPU_TARGET_MS:.0f} ms"
RSS_TARGET_MIB = {20_000: 1024, 100_000: 1.1 * 1024}
OVERHEAD_TARGET = 0.10
CAPACITY_RATIO_TARGET = 0.80
LATENCY_RATE_TARGET = 500.0
ONGOING_SLACK_S = 10.0
DEFAULT_MAX_WAIT_S = 60.0  # talktime run's default --max-wait
DASK_STARTUP_S = 120.0
DASK_WORKERS = os.cpu_count() or 1  # as many as talktime's own LocalCluster has
LOADGEN_CLIENTS = {  # load generator client -> its row's label; `raw` measures the emulator's capacity
    "raw": "emulator capacity: load generator `raw` (HTTP/1.1 on asyncio streams)",
    "httpx": "load generator `httpx` (one httpx.AsyncClient process)",
}


@dataclass
class Bench:
    """What one benchmark run shares: options, folders, the Prefect server, the rows so far."""

    args: argparse.Namespace
    results: Path
    work: Path
    prefect_home: Path
    prefect: PrefectServer | None = None
    rows: list[Row] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        """Every command's output."""
        return self.results / "logs"

    def talktime_env(self) -> dict[str, str]:
        """The environment of every talktime command: the running server's URL, no telemetry."""
        assert self.prefect is not None
        return os.environ | quiet_prefect_env(self.prefect_home) | {"PREFECT_API_URL": self.prefect.api_url}

    def background(self, *extra: int) -> list[int]:
        """Pids whose CPU counts as background during a measurement."""
        return ([self.prefect.pid] if self.prefect else []) + list(extra)

    def measure(
        self,
        name: str,
        cmd: Sequence[str | Path],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        background: Sequence[int] = (),
        cpu_trace: list[tuple[float, float]] | None = None,
    ) -> Usage:
        """Measure one command, its output in logs/<name>.log (its CPU sampled into `cpu_trace` if given)."""
        print(f"  running {name} ...", flush=True)
        usage = measure(
            cmd,
            log=self.logs / f"{name}.log",
            env=env,
            cwd=cwd,
            background=background,
            rss_limit_mib=self.args.rss_limit_gib * 1024,
            timeout_s=self.args.timeout,
            cpu_trace=cpu_trace,
        )
        print(
            f"    {usage.wall_s:,.1f} s wall, {usage.cpu_s:,.1f} s CPU, {usage.peak_rss_mib:,.0f} MiB peak"
            + (f"; {failure(usage)}, see {self.logs / f'{name}.log'}" if failure(usage) else ""),
            flush=True,
        )
        return usage

    def add(self, row: Row) -> Row:
        """Record a row."""
        self.rows.append(row)
        return row

    def scratch(self, name: str) -> Path:
        """A fresh empty folder for one command's output (removed after, unless --keep)."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))

    def discard(self, folder: Path) -> None:
        """Remove a scratch folder unless --keep."""
        if not self.args.keep:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Helpers


def statuses(out: Path) -> dict[str, int]:
    """Transcriptions per status in a talktime output folder (empty if unreadable)."""
    try:
        frame = pl.scan_parquet(str(out / "transcriptions" / "**" / "*.parquet"), hive_partitioning=True)
        counts = frame.group_by("status").len().collect()
    except Exception:  # the sanity check only
        return {}
    return dict(zip(counts["status"].to_list(), counts["len"].to_list(), strict=True))


def status_text(counts: dict[str, int]) -> str:
    """'5,000 succeeded' or '950 succeeded, 50 ongoing'."""
    if not counts:
        return "statuses unreadable"
    return ", ".join(f"{n:,} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------------------------------------
# 1. ingest


def bench_talktime_ingest(
    bench: Bench, data: Dataset, label: str, yardstick: Yardstick | None, items: int | None
) -> Usage | None:
    """`talktime ingest` through the running Prefect server: the product path."""
    out = bench.scratch("ingest")
    cmd = [BIN / "talktime", "ingest", "--input", *data.files, "--out", out]
    usage = bench.measure(f"talktime-ingest-{data.count}", cmd, env=bench.talktime_env(), background=bench.background())
    written = item_rows(out)
    bench.discard(out)
    rss_target = RSS_TARGET_MIB.get(data.count)
    ratio = None if yardstick is None or failure(usage) else usage.wall_s / yardstick.usage.wall_s
    targets = [target(f"≤ {FLOOR_RATIO_TARGET}x yardstick", None if ratio is None else ratio <= FLOOR_RATIO_TARGET)]
    if rss_target is not None:
        targets.append(target(f"RSS ≤ {rss_target / 1024:.1f} GiB", usage.peak_rss_mib <= rss_target))
    result = ratio_text(usage, yardstick) + rows_check(written, items)
    bench.add(Row("(a) `talktime ingest` (Prefect server)", label, usage, result, "; ".join(targets), items))
    return None if failure(usage) else usage


def item_rows(out: Path) -> int | None:
    """Item rows written by a talktime ingest into `out`."""
    return count_rows(out / "transcript_items" / "**" / "*.parquet")


def versus_text(usage: Usage, base: Usage | None, name: str) -> str:
    """'0.93x (a)'s wall, 1.10x its CPU', or why there is no ratio."""
    if failure(usage):
        return str(failure(usage))
    if base is None:
        return f"no {name} to compare"
    return f"{usage.wall_s / base.wall_s:.2f}x {name}'s wall, {usage.cpu_s / base.cpu_s:.2f}x its CPU"


def bench_dask_local_ingest(
    bench: Bench, data: Dataset, label: str, product: Usage | None, items: int | None
) -> Usage | None:
    """`talktime ingest --task-runner dask`: a LocalCluster talktime starts, inside the measured tree."""
    out = bench.scratch("ingest-dask")
    cmd = [BIN / "talktime", "ingest", "--task-runner", "dask", "--input", *data.files, "--out", out]
    usage = bench.measure(
        f"talktime-ingest-dask-{data.count}", cmd, env=bench.talktime_env(), background=bench.background()
    )
    written = item_rows(out)
    bench.discard(out)
    what = f"`talktime ingest --task-runner dask` (LocalCluster, {os.cpu_count() or 1} workers)"
    bench.add(Row(what, label, usage, versus_text(usage, product, "(a)") + rows_check(written, items), items=items))
    return None if failure(usage) else usage


class DaskScheduler(Service):
    """`dask scheduler` on a free loopback port, no dashboard."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        cmd = [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"]
        super().__init__("dask scheduler", cmd, log, env)

    @property
    def address(self) -> str:
        """What `--dask-address` takes."""
        return f"tcp://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        """Until the log says the scheduler listens."""
        self._wait_until(lambda: "Scheduler at:" in self.log.read_text(errors="replace"), DASK_STARTUP_S)


class DaskWorker(Service):
    """`dask worker ADDRESS --nthreads 1` (a nanny and its worker process)."""

    def __init__(self, address: str, name: str, log: Path, env: dict[str, str], local: Path) -> None:
        cmd = [BIN / "dask", "worker", address, "--nthreads", "1", "--name", name, "--no-dashboard"]
        cmd += ["--host", "127.0.0.1", "--local-directory", local]
        super().__init__(f"dask worker {name}", cmd, log, env)

    def wait_ready(self) -> None:
        """Until the log says it registered with the scheduler."""
        self._wait_until(lambda: "Registered to:" in self.log.read_text(errors="replace"), DASK_STARTUP_S)


class PeakRss(threading.Thread):
    """The largest sum of the resident memory of some process trees, sampled every 50 ms until stopped."""

    def __init__(self, roots: Sequence[int]) -> None:
        super().__init__(name="peak-rss", daemon=True)
        self.roots = list(roots)
        self.peak_mib = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak_mib = max(self.peak_mib, sum(tree_rss_mib(root) for root in self.roots))
            self.done.wait(0.05)

    def stop(self) -> float:
        """Stop sampling; the peak."""
        self.done.set()
        self.join()
        return self.peak_mib


def bench_dask_address_ingest(
    bench: Bench, data: Dataset, label: str, product: Usage | None, items: int | None
) -> None:
    """`talktime ingest --dask-address` on a cluster started before: its CPU is bg CPU, not the command's.
    The command is then the flow alone, so its row is followed by the flow's CPU per committed batch."""
    what = f"`talktime ingest --dask-address` (`dask scheduler` + {DASK_WORKERS} `dask worker --nthreads 1`)"
    env = bench.talktime_env()
    services: list[Service] = []
    try:
        scheduler = DaskScheduler(bench.logs / f"dask-scheduler-{data.count}.log", env)
        services.append(scheduler.__enter__())
        for n in range(DASK_WORKERS):
            local = bench.scratch(f"dask-worker-{n}")
            log = bench.logs / f"dask-worker{n}-{data.count}.log"
            services.append(DaskWorker(scheduler.address, f"bench-{n}", log, env, local).__enter__())
    except RuntimeError as exc:  # a process that would not start: say so, go on
        print(f"  {exc}", flush=True)
        for service in reversed(services):
            service.stop()
        bench.add(Row(what, label, None, f"n/a ({exc})"))
        bench.add(Row(FLOW_CPU_ROW, label, None, "n/a (no Dask cluster)", FLOW_CPU_GOAL))
        return
    cluster = PeakRss([s.pid for s in services])
    trace: list[tuple[float, float]] = []
    name = f"talktime-ingest-dask-address-{data.count}"
    try:
        out = bench.scratch("ingest-dask-address")
        cmd = [BIN / "talktime", "ingest", "--dask-address", scheduler.address, "--input", *data.files, "--out", out]
        cluster_cpu = tree_cpu_s([s.pid for s in services])
        cluster.start()
        background = bench.background(*(s.pid for s in services))
        usage = bench.measure(name, cmd, env=env, cwd=ROOT, background=background, cpu_trace=trace)
        peak = cluster.stop()
        cluster_cpu = tree_cpu_s([s.pid for s in services]) - cluster_cpu
    finally:
        cluster.done.set()
        for service in reversed(services):
            service.stop()
    written = item_rows(out)
    bench.discard(out)
    extra = f"; the cluster's CPU ({cluster_cpu:,.1f} s{per_item_text(cluster_cpu, items)}) is in bg CPU"
    result = versus_text(usage, product, "(a)") + extra + f", its peak RSS {peak:,.0f} MiB" + rows_check(written, items)
    bench.add(Row(what, label, usage, result, items=items))
    add_flow_cpu_row(
        bench, label, usage, flow_cpu((bench.logs / f"{name}.log").read_text(errors="replace"), trace, usage.cpu_s)
    )


def per_item_text(cpu_s: float, items: int | None) -> str:
    """', 2.41 µs/item', or '' without an item count."""
    return f", {cpu_s * 1e6 / items:,.2f} µs/item" if items else ""


def add_flow_cpu_row(bench: Bench, label: str, usage: Usage, found: FlowCpu | None) -> None:
    """The flow's CPU per committed batch, from the `--dask-address` run (see `benchmarks/flow_cpu.py`)."""
    if failure(usage) or found is None or found.window_ms is None:
        why = failure(usage) or ("no commit found in its log" if found is None else "fewer than 2 commits")
        bench.add(Row(FLOW_CPU_ROW, label, None, f"n/a ({why})", FLOW_CPU_GOAL))
        return
    result = (
        f"{found.window_ms:,.0f} ms between its first and last commit ({found.batches} batches); "
        f"{found.whole_ms:,.0f} ms per batch over the whole process: {found.before_s:,.1f} s of CPU before "
        f"the first commit, {found.after_s:,.1f} s after the last (merge, status, artifacts)"
    )
    met = found.window_ms <= FLOW_CPU_TARGET_MS
    row = bench.add(Row(FLOW_CPU_ROW, label, None, result, target(FLOW_CPU_GOAL, met)))
    print(f"  {FLOW_CPU_ROW}: {row.result} -> {row.target}", flush=True)


def bench_direct_ingest(
    bench: Bench, data: Dataset, label: str, yardstick: Yardstick | None, items: int | None
) -> Usage | None:
    """The same work without Prefect, through `benchmarks/direct.py` (written by the pipeline's authors)."""
    what = "(b) same work without Prefect (`benchmarks.direct`)"
    if not (HERE / "direct.py").exists():
        bench.add(Row(what, label, None, "n/a (benchmarks/direct.py missing)"))
        return None
    out = bench.scratch("direct")
    cmd = [BIN / "python", "-m", "benchmarks.direct", "ingest", "--input", *data.files, "--out", out]
    usage = bench.measure(
        f"direct-ingest-{data.count}", cmd, env=bench.talktime_env(), cwd=ROOT, background=bench.background()
    )
    written = item_rows(out)
    bench.discard(out)
    bench.add(Row(what, label, usage, ratio_text(usage, yardstick) + rows_check(written, items), items=items))
    return None if failure(usage) else usage


def add_overhead_row(bench: Bench, label: str, with_prefect: Usage | None, without: Usage | None) -> None:
    """(a) / (b): what Prefect adds to the same work."""
    what = "Prefect overhead: (a) / (b) wall"
    if with_prefect is None or without is None:
        bench.add(Row(what, label, None, "n/a", f"≤ {OVERHEAD_TARGET:.0%}"))
        return
    overhead = with_prefect.wall_s / without.wall_s - 1
    result = f"{overhead:+.1%} (CPU {with_prefect.cpu_s / without.cpu_s - 1:+.1%})"
    bench.add(Row(what, label, None, result, target(f"≤ {OVERHEAD_TARGET:.0%}", overhead <= OVERHEAD_TARGET)))


def bench_ingest(bench: Bench, size: int) -> None:
    """Every ingest row for one size."""
    print(f"ingest, {size:,} responses: preparing inputs ...", flush=True)
    started = time.perf_counter()
    data = dataset(DATA / "inputs", size, seed=bench.args.seed, files=bench.args.files)
    print(f"  {len(data.files)} files, {data.bytes / MIB:,.0f} MiB ({time.perf_counter() - started:.1f} s)")
    yardstick, scripts, items, label = bench_yardstick(bench, data)
    product = bench_talktime_ingest(bench, data, label, yardstick, items)
    if bench.args.skip_dask:
        bench.add(Row(FLOW_CPU_ROW, label, None, "n/a (measured on the `--dask-address` row: --skip-dask)"))
    else:
        bench_dask_local_ingest(bench, data, label, product, items)
        bench_dask_address_ingest(bench, data, label, product, items)
    direct = bench_direct_ingest(bench, data, label, yardstick, items)
    add_overhead_row(bench, label, product, direct)
    others: dict[str, Usage | None] = {}
    if not bench.args.skip_pandas:
        others["pandas"] = bench_pandas(bench, data, label, yardstick, items)
    if not bench.args.skip_dlt:
        others["dlt"] = bench_dlt(bench, data, label, yardstick, items)
    add_targets_row(bench, label, product, scripts, others)


# ---------------------------------------------------------------------------------------------
# 2. run against the emulator


def emulator(bench: Bench, ids: int, *extra: str) -> Emulator:
    """An emulator serving `ids` synthetic transcriptions (same seed: same ids), not started yet."""
    name = "emulator" + "".join(e.strip("-") for e in extra if e.startswith("--"))
    return Emulator(BIN, bench.work, ids, bench.args.seed, extra, bench.logs / f"{name}-{ids}.log")


def talktime_run(bench: Bench, name: str, emu: Emulator, *extra: str) -> tuple[Usage, dict[str, int]]:
    """`talktime run` for every id the emulator serves, into a fresh folder; usage and statuses."""
    out = bench.scratch("run")
    cmd = [BIN / "talktime", "run", "--api-url", emu.api_url, "--ids", emu.ids_file, "--out", out]
    cmd += ["--api-key", API_KEY, "--concurrency", str(bench.args.concurrency), *extra]
    usage = bench.measure(name, cmd, env=bench.talktime_env(), background=bench.background(emu.pid))
    counts = statuses(out)
    bench.discard(out)
    return usage, counts


def run_rate_text(usage: Usage, ids: int, counts: dict[str, int]) -> tuple[str, float | None]:
    """'812 transcriptions/s (5,000 succeeded)' and the rate, or the failure."""
    if failure(usage):
        return f"{failure(usage)}; {status_text(counts)}", None
    rate = ids / usage.wall_s
    return f"{rate:,.0f} transcriptions/s ({status_text(counts)})", rate


def bench_capacity(bench: Bench, emu: Emulator, client: str, label: str) -> float | None:
    """Requests/s the emulator serves to the load generator using `client`; None if it failed."""
    result_file = bench.work / f"loadgen-{client}-{emu.port}.json"
    cmd = [BIN / "python", "-m", "benchmarks.loadgen", "--api-url", emu.api_url, "--ids", emu.ids_file]
    cmd += ["--api-key", API_KEY, "--concurrency", str(bench.args.concurrency), "--result", result_file]
    cmd += ["--requests", str(bench.args.loadgen_requests), "--seconds", str(bench.args.loadgen_seconds)]
    usage = bench.measure(f"loadgen-{client}", [*cmd, "--client", client], cwd=ROOT, background=[emu.pid])
    what = f"{LOADGEN_CLIENTS[client]}, concurrency {bench.args.concurrency}"
    if failure(usage) or not result_file.exists():
        bench.add(Row(what, label, usage, failure(usage) or "no result"))
        return None
    result = json.loads(result_file.read_text())
    codes = ", ".join(f"{n:,}x {c}" for c, n in result["codes"].items())
    text = f"{result['ok_per_s']:,.0f} requests/s ({codes} in {result['seconds']:.1f} s)"
    bench.add(Row(what, label, usage, text))
    return float(result["ok_per_s"])


def bench_run_vs_capacity(bench: Bench, ids: int) -> None:
    """Capacity with no latency (and what one httpx client drives), then `talktime run` on the same emulator."""
    print(f"run, {ids:,} ids, emulator without latency ...", flush=True)
    label = f"{ids:,} ids, no latency"
    with emulator(bench, ids) as emu:
        measured = {client: bench_capacity(bench, emu, client, label) for client in LOADGEN_CLIENTS}
        usage, counts = talktime_run(bench, f"talktime-run-{ids}", emu)
    text, rate = run_rate_text(usage, ids, counts)
    capacity = measured[bench.args.capacity_client]
    met = None if rate is None or not capacity else rate / capacity >= CAPACITY_RATIO_TARGET
    shares = [f"{rate / per_s:.0%} of `{name}`" for name, per_s in measured.items() if rate is not None and per_s]
    if shares:
        text += " = " + ", ".join(shares)
    what = f"`talktime run`, concurrency {bench.args.concurrency}"
    goal = target(f"≥ {CAPACITY_RATIO_TARGET:.0%} of `{bench.args.capacity_client}`", met)
    bench.add(Row(what, label, usage, text, goal))


def bench_run_latency(bench: Bench, ids: int) -> None:
    """`talktime run` against an emulator answering after 100 ms."""
    latency = bench.args.latency_ms
    print(f"run, {ids:,} ids, emulator latency {latency} ms ...", flush=True)
    with emulator(bench, ids, "--latency-ms", str(latency)) as emu:
        usage, counts = talktime_run(bench, f"talktime-run-{ids}-latency{latency}", emu)
    text, rate = run_rate_text(usage, ids, counts)
    met = None if rate is None else rate >= LATENCY_RATE_TARGET
    what = f"`talktime run`, concurrency {bench.args.concurrency}"
    label = f"{ids:,} ids, {latency} ms latency"
    bench.add(Row(what, label, usage, text, target(f"≥ {LATENCY_RATE_TARGET:.0f}/s", met)))


def bench_run_ongoing(bench: Bench, ids: int, help_text: str) -> None:
    """`talktime run` with 5% of ids ongoing for ever, and without: the difference is the wait."""
    rate = bench.args.ongoing_rate
    what = f"`talktime run`, {rate:.0%} ongoing for ever, minus none ongoing"
    max_wait = bench.args.ongoing_max_wait
    wait_option = [] if max_wait is None else ["--max-wait", str(max_wait)]
    max_wait = DEFAULT_MAX_WAIT_S if max_wait is None else max_wait
    goal = f"≤ max-wait + {ONGOING_SLACK_S:.0f} s = {max_wait + ONGOING_SLACK_S:.0f} s"
    if "--ongoing-forever" not in emulator_options(help_text):
        bench.add(Row(what, f"{ids:,} ids", None, "n/a (`talktime emulator` has no --ongoing-forever yet)", goal))
        return
    print(f"run, {ids:,} ids, none ongoing, then {rate:.0%} ongoing for ever ...", flush=True)
    with emulator(bench, ids) as emu:
        base, base_counts = talktime_run(bench, f"talktime-run-{ids}-none-ongoing", emu, *wait_option)
    text, _ = run_rate_text(base, ids, base_counts)
    bench.add(Row("`talktime run`, none ongoing", f"{ids:,} ids", base, text))
    with emulator(bench, ids, "--ongoing-forever", str(rate)) as emu:
        slow, counts = talktime_run(bench, f"talktime-run-{ids}-ongoing-forever", emu, *wait_option)
    text, _ = run_rate_text(slow, ids, counts)
    bench.add(Row(f"`talktime run`, {rate:.0%} ongoing for ever", f"{ids:,} ids", slow, text))
    if failure(base) or failure(slow):
        bench.add(Row(what, f"{ids:,} ids", None, "n/a (a run failed)", goal))
        return
    extra = slow.wall_s - base.wall_s
    bench.add(Row(what, f"{ids:,} ids", None, f"{extra:+.1f} s", target(goal, extra <= max_wait + ONGOING_SLACK_S)))


def bench_run(bench: Bench) -> None:
    """Every `talktime run` row."""
    largest = max(bench.args.sizes)
    run_ids = bench.args.run_ids or min(5000, largest)
    ongoing_ids = bench.args.ongoing_ids or min(1000, largest)
    help_text = subprocess.run([BIN / "talktime", "emulator", "--help"], capture_output=True, text=True).stdout
    sections = [
        ("`talktime run` vs emulator capacity", run_ids, lambda: bench_run_vs_capacity(bench, run_ids)),
        ("`talktime run` with latency", run_ids, lambda: bench_run_latency(bench, run_ids)),
        ("`talktime run` with ongoing ids", ongoing_ids, lambda: bench_run_ongoing(bench, ongoing_ids, help_text)),
    ]
    for what, ids, section in sections:
        try:
            section()
        except RuntimeError as exc:  # a service that would not start: say so, go on
            print(f"  {exc}", flush=True)
            bench.add(Row(what, f"{ids:,} ids", None, f"n/a ({exc})"))


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,100000", help="responses per ingest data set, comma-separated")
    parser.add_argument("--only", choices=("ingest", "run", "history", "large"), help="run one section only")
    parser.add_argument("--skip-run", action="store_true", help="skip the `talktime run` section")
    parser.add_argument("--skip-dlt", action="store_true", help="skip the dlt reference")
    parser.add_argument("--skip-pandas", action="store_true", help="skip the pandas reference")
    parser.add_argument("--skip-dask", action="store_true", help="skip the `talktime ingest` rows on Dask")
    parser.add_argument("--seed", type=int, default=42, help="seed of the synthetic data")
    parser.add_argument("--files", type=int, default=10, help="NDJSON files per data set")
    parser.add_argument("--run-ids", type=int, help="ids for the run rows (default: 5,000, at most the largest size)")
    parser.add_argument("--ongoing-ids", type=int, help="ids for the ongoing rows (default 1,000, same bound)")
    parser.add_argument("--ongoing-rate", type=float, default=0.05, help="share of ids ongoing for ever")
    parser.add_argument("--ongoing-max-wait", type=float, help="pass --max-wait to the ongoing runs (default: none)")
    parser.add_argument("--concurrency", type=int, default=64, help="of talktime run and the load generator")
    parser.add_argument("--latency-ms", type=int, default=100, help="emulator latency of the latency row")
    parser.add_argument(
        "--capacity-client",
        choices=tuple(LOADGEN_CLIENTS),
        default="raw",
        help="which load generator's rate is the capacity `talktime run` is compared with (both are printed)",
    )
    parser.add_argument("--loadgen-requests", type=int, default=10_000, help="requests the load generator sends")
    parser.add_argument("--loadgen-seconds", type=float, default=20.0, help="or for this long at most")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds before a command is killed")
    parser.add_argument("--rss-limit-gib", type=float, default=16.0, help="kill a command whose tree goes over this")
    parser.add_argument("--keep", action="store_true", help="keep every output folder (under data/bench/work)")
    history = parser.add_argument_group("history rows (`--history` or `--only history`; benchmarks/history_rows.py)")
    history.add_argument("--history", action="store_true", help="add the history rows (opt-in: see the README)")
    history.add_argument("--history-sizes", default="1000000,10000000", help="transcriptions the outputs already hold")
    history.add_argument("--build-sizes", default="100000,1000000", help="outputs built through `talktime ingest`")
    history.add_argument("--history-responses", type=int, default=20_000, help="responses ingested into each output")
    history.add_argument("--history-days", type=int, default=365, help="daily partitions of a synthesised output")
    history.add_argument(
        "--history-input",
        choices=("small", "full"),
        default="small",
        help="responses of 4 items (small, the issue's setting) or the bench's full-size ones (~200 items)",
    )
    history.add_argument("--history-repeat", type=int, default=1, help="measure each history ingest this many times")
    large = parser.add_argument_group("large-transcript rows (`--large` or `--only large`; benchmarks/large_rows.py)")
    large.add_argument("--large", action="store_true", help="add the large-transcript rows (opt-in)")
    large.add_argument("--large-records", type=int, default=200, help="records of the large file (0: none)")
    large.add_argument("--large-record-mib", type=float, default=5.0, help="size of each of its records")
    large.add_argument("--large-budgets", default="512", help="--memory-budget-mb values measured after the default")
    large.add_argument("--huge-record-mib", type=float, default=300.0, help="size of the lone huge record (0: none)")
    large.add_argument(
        "--large-run-ids", type=int, default=100, help="ids of the large records `talktime run` polls (0: no run rows)"
    )
    args = parser.parse_args(argv)
    args.sizes = sizes_of(args.sizes)
    args.large_budgets = sizes_of(args.large_budgets)
    args.history_sizes = sizes_of(args.history_sizes)
    args.build_sizes = sizes_of(args.build_sizes)
    return args


def sizes_of(text: str) -> list[int]:
    """'1000000,10_000_000' -> [1000000, 10000000]."""
    return [int(s.replace("_", "")) for s in text.split(",") if s.strip()]


def report(bench: Bench, started: float) -> str:
    """The whole report: machine, table, notes."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"## talktime benchmark, {stamp}\n\n"
        f"Machine: {machine(BIN / 'python')}\n\n"
        f"{markdown(bench.rows)}\n\n{NOTES}\n\n"
        f"Benchmark wall time {time.perf_counter() - started:,.0f} s; logs in {bench.logs.relative_to(ROOT)}.\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Start the Prefect server, run the sections, print and save the report, stop the server."""
    args = parse_args(argv)
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (DATA / "work").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"bench-{stamp}-", dir=DATA / "work"))
    bench = Bench(args, DATA / "results" / stamp, work, work / "prefect-home")
    print(f"starting a Prefect server (PREFECT_HOME {bench.prefect_home.relative_to(ROOT)}) ...", flush=True)
    try:
        with PrefectServer(BIN, bench.prefect_home, bench.logs / "prefect-server.log") as server:
            bench.prefect = server
            print(f"  {server.api_url}", flush=True)
            if args.only in (None, "ingest"):
                for size in args.sizes:
                    bench_ingest(bench, size)
            if args.only == "run" or (args.only is None and not args.skip_run):
                bench_run(bench)
            if args.only == "history" or (args.only is None and args.history):
                bench_history(bench)
            if args.only == "large" or (args.only is None and args.large):
                bench_large(bench)
    finally:
        text = report(bench, started)
        bench.results.mkdir(parents=True, exist_ok=True)
        (bench.results / "report.md").write_text(text)
        print("\n" + text)
        print(f"written to {(bench.results / 'report.md').relative_to(ROOT)}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
