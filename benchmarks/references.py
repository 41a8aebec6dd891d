"""The benchmark's reference rows for `talktime ingest`: what a user would run instead, and the yardstick.

1. The polars floor (`benchmarks/floor_polars.py`, the project's venv): scan, explode the
   transcript, stream one Parquet file; the least work that produces an item table.
2. The two scripts a user would write instead of talktime (issue 17), in the benchmark's own venv
   (`benchmarks/refvenv.py`): DuckDB (`benchmarks/ref_duckdb.py`) and polars lazy
   (`benchmarks/ref_polars_lazy.py`). Both write the items and the simple talk time per speaker
   (the sum of the items' durations per transcription and speaker) to Parquet with bounded memory.
3. The yardstick: the fastest (wall) of these three. Every ingest row's ratio is against it.
4. A naive pandas script and a dlt pipeline (`benchmarks/naive_pandas.py`,
   `benchmarks/dlt_load.py`), in the benchmark's venv.
5. Issue 17's targets for `talktime ingest`, printed as a row of their own: CPU and wall at most
   2x the faster of the two scripts, and faster than pandas and dlt in wall time.

Every row carries the input's item count, so the table prints each one's CPU per item.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from benchmarks.proctree import Usage
from benchmarks.refvenv import ref_python
from benchmarks.report import Row, failure, target
from benchmarks.synth import Dataset

if TYPE_CHECKING:
    from benchmarks.bench import Bench

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MIB = 1024 * 1024
SCRIPT_RATIO_TARGET = 2.0  # issue 17: `talktime ingest` CPU and wall at most 2x the faster script's
FLOOR = "(c) polars floor: scan, explode, sink one Parquet file"
SCRIPTS = {  # name -> (row label, script in benchmarks/)
    "DuckDB": ("(f) DuckDB script: read_json, unnest, GROUP BY, COPY to Parquet", "ref_duckdb.py"),
    "polars lazy": ("(g) polars lazy script: scan_ndjson, explode, group_by, sink_parquet", "ref_polars_lazy.py"),
}


@dataclass(frozen=True)
class Reference:
    """One measured reference: its row label, its usage, what it wrote (None: unreadable or not written)."""

    name: str
    what: str
    usage: Usage | None  # None: it could not run (the benchmark's venv failed to build)
    items: int | None
    speakers: tuple[int, int] | None = None  # the scripts' per-speaker table: rows, total talk_time_ms
    why_not: str = ""

    @property
    def ok(self) -> Usage | None:
        """The usage if the command succeeded."""
        return self.usage if self.usage is not None and not failure(self.usage) else None


@dataclass(frozen=True)
class Yardstick:
    """What every ingest row is compared with: the fastest of the floor and the two scripts."""

    name: str
    usage: Usage


def count_rows(pattern: str | Path) -> int | None:
    """Rows in the Parquet files matching `pattern`, or None when there are none or they cannot be read."""
    try:
        return int(pl.scan_parquet(str(pattern), hive_partitioning=False).select(pl.len()).collect().item())
    except Exception:  # a missing or changed layout only loses the sanity check
        return None


def speaker_totals(path: Path) -> tuple[int, int] | None:
    """Rows and total talk_time_ms of a script's speakers.parquet, or None if unreadable."""
    try:
        frame = pl.scan_parquet(path).select(pl.len(), pl.col("talk_time_ms").sum()).collect()
    except Exception:  # the sanity check only
        return None
    return int(frame.item(0, 0)), int(frame.item(0, 1))


def ratio_text(usage: Usage, yardstick: Yardstick | None) -> str:
    """'1.23x yardstick', or why there is no ratio."""
    if failure(usage):
        return str(failure(usage))
    if yardstick is None:
        return "no yardstick"
    return f"{usage.wall_s / yardstick.usage.wall_s:.2f}x yardstick"


def rows_check(written: int | None, expected: int | None) -> str:
    """'' when the item rows match the input's, else a note saying how many were written."""
    if expected is None or written == expected:
        return ""
    return f"; item rows {written:,} (input {expected:,})" if written is not None else "; item rows unreadable"


_REF_PYTHON: dict[str, Path | None] = {}


def reference_python(bench: Bench) -> Path | None:
    """The benchmark venv's python (built on first use), or None if it cannot be built."""
    if "python" not in _REF_PYTHON:
        try:
            _REF_PYTHON["python"] = ref_python(bench.logs / "venv-dlt.log")
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"  could not build the benchmark venv: {exc}", flush=True)
            _REF_PYTHON["python"] = None
    return _REF_PYTHON["python"]


def venv_failed(bench: Bench) -> str:
    """The text of a row whose reference could not run."""
    return f"n/a (venv build failed, see {bench.logs / 'venv-dlt.log'})"


# ---------------------------------------------------------------------------------------------
# The floor, the scripts, the yardstick


def measure_floor(bench: Bench, data: Dataset) -> Reference:
    """The polars floor, in the project's venv."""
    out = bench.scratch("floor")
    cmd = [BIN / "python", HERE / "floor_polars.py", "--out", out / "items.parquet", *data.files]
    usage = bench.measure(f"floor-{data.count}", cmd, background=bench.background())
    items = count_rows(out / "items.parquet")
    bench.discard(out)
    return Reference("polars floor", FLOOR, usage, items)


def measure_script(bench: Bench, data: Dataset, name: str) -> Reference:
    """One of the two scripts a user would write, in the benchmark's venv."""
    what, script = SCRIPTS[name]
    python = reference_python(bench)
    if python is None:
        return Reference(name, what, None, None, why_not=venv_failed(bench))
    out = bench.scratch(script.removesuffix(".py"))
    cmd = [python, HERE / script, "--out", out, *data.files]
    usage = bench.measure(f"{script.removesuffix('.py')}-{data.count}", cmd, background=bench.background())
    items, speakers = count_rows(out / "items.parquet"), speaker_totals(out / "speakers.parquet")
    bench.discard(out)
    return Reference(name, what, usage, items, speakers)


def fastest(references: list[Reference]) -> Yardstick | None:
    """The reference with the shortest wall time among those that succeeded."""
    done = [(ref.name, ref.ok) for ref in references if ref.ok is not None]
    return min((Yardstick(name, usage) for name, usage in done), key=lambda y: y.usage.wall_s, default=None)


def input_label(data: Dataset, items: int | None) -> str:
    """'20,000 responses, 4.57M items, 664 MiB'."""
    size = f"{data.bytes / MIB:,.0f} MiB"
    return f"{data.count:,} responses, {items / 1e6:.2f}M items, {size}" if items else f"{data.count:,}, {size}"


def reference_text(ref: Reference, yardstick: Yardstick | None, items: int | None) -> str:
    """A reference row's result: its ratio (or 'yardstick'), the rows it wrote, its speakers table."""
    if ref.usage is None:
        return ref.why_not
    if yardstick is not None and ref.name == yardstick.name:
        text = "**yardstick** (the fastest of (c), (f), (g))"
    else:
        text = ratio_text(ref.usage, yardstick)
    text += rows_check(ref.items, items) if ref.ok else ""
    if ref.speakers is not None:
        rows, talk_ms = ref.speakers
        text += f"; {rows:,} speaker rows, talk time {talk_ms / 3_600_000:,.1f} h"
    return text


def bench_yardstick(bench: Bench, data: Dataset) -> tuple[Yardstick | None, dict[str, Usage | None], int | None, str]:
    """The floor and the two scripts, their rows, and the yardstick; the scripts' usages by name (None if
    they failed), the input's item count (as the references wrote it) and the data set's label."""
    references = [measure_floor(bench, data), *(measure_script(bench, data, name) for name in SCRIPTS)]
    items = next((ref.items for ref in references if ref.ok and ref.items), None)
    label = input_label(data, items)
    yardstick = fastest(references)
    for ref in references:
        bench.add(Row(ref.what, label, ref.usage, reference_text(ref, yardstick, items), items=items))
    if yardstick is not None:
        print(f"  yardstick: {yardstick.name}, {yardstick.usage.wall_s:,.1f} s", flush=True)
    return yardstick, {ref.name: ref.ok for ref in references[1:]}, items, label


# ---------------------------------------------------------------------------------------------
# pandas and dlt


def bench_pandas(
    bench: Bench, data: Dataset, label: str, yardstick: Yardstick | None, items: int | None
) -> Usage | None:
    """The naive pandas script, in the benchmark's venv; its usage if it succeeded."""
    what = "(d) naive pandas: json per line, DataFrame, Parquet"
    python = reference_python(bench)
    if python is None:
        bench.add(Row(what, label, None, venv_failed(bench)))
        return None
    out = bench.scratch("pandas")
    cmd = [python, HERE / "naive_pandas.py", "--out", out / "items.parquet", *data.files]
    usage = bench.measure(f"pandas-{data.count}", cmd, background=bench.background())
    written = count_rows(out / "items.parquet")
    bench.discard(out)
    bench.add(Row(what, label, usage, ratio_text(usage, yardstick) + rows_check(written, items), items=items))
    return None if failure(usage) else usage


def bench_dlt(bench: Bench, data: Dataset, label: str, yardstick: Yardstick | None, items: int | None) -> Usage | None:
    """dlt 1.31 to a local filesystem destination as Parquet, in the benchmark's venv; its usage if it succeeded."""
    what = "(e) dlt 1.31: filesystem destination, Parquet"
    python = reference_python(bench)
    if python is None:
        bench.add(Row(what, label, None, venv_failed(bench)))
        return None
    out, work = bench.scratch("dlt"), bench.scratch("dlt-work")
    cmd = [python, HERE / "dlt_load.py", "--out", out, "--work", work, *data.files]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    usage = bench.measure(f"dlt-{data.count}", cmd, env=env, cwd=work, background=bench.background())
    written = count_rows(out / "talktime" / "responses__payload__transcript" / "*.parquet")
    bench.discard(out)
    bench.discard(work)
    bench.add(Row(what, label, usage, ratio_text(usage, yardstick) + rows_check(written, items), items=items))
    return None if failure(usage) else usage


# ---------------------------------------------------------------------------------------------
# Issue 17's targets


def add_targets_row(
    bench: Bench,
    label: str,
    product: Usage | None,
    scripts: dict[str, Usage | None],
    others: dict[str, Usage | None],
) -> None:
    """`talktime ingest` (`product`) against the faster script (CPU and wall ≤ 2x) and `others` (pandas,
    dlt: faster in wall); a row, also printed at once. A reference that did not run gives no verdict."""
    what = "targets (issue 17): `talktime ingest` (a) against the scripts, pandas and dlt"
    ran = {name: usage for name, usage in scripts.items() if usage is not None}
    if product is None or not ran:
        bench.add(Row(what, label, None, "n/a (`talktime ingest` or both scripts failed)"))
        return
    name, faster = min(ran.items(), key=lambda kv: kv[1].wall_s)
    cpu, wall = product.cpu_s / faster.cpu_s, product.wall_s / faster.wall_s
    texts = [f"CPU {cpu:.2f}x the faster script's ({name}), wall {wall:.2f}x"]
    goals = [
        target(f"CPU ≤ {SCRIPT_RATIO_TARGET:.0f}x", cpu <= SCRIPT_RATIO_TARGET),
        target(f"wall ≤ {SCRIPT_RATIO_TARGET:.0f}x", wall <= SCRIPT_RATIO_TARGET),
    ]
    for other, usage in others.items():
        if usage is None:
            goals.append(f"faster than {other}: n/a (not run)")
            continue
        texts.append(f"wall {product.wall_s / usage.wall_s:.2f}x {other}'s")
        goals.append(target(f"faster than {other}", product.wall_s < usage.wall_s))
    row = bench.add(Row(what, label, None, "; ".join(texts), "; ".join(goals)))
    print(f"  targets: {row.result} -> {row.target}", flush=True)
