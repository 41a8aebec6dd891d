"""The benchmark's result table (Markdown) and the description of the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.proctree import Usage

HEADER = ("what", "input", "wall s", "CPU s", "CPU µs/item", "peak RSS MiB", "bg CPU s", "result", "target")


@dataclass
class Row:
    """One line of the table; `usage` is None for derived lines (ratios) and rows that did not run;
    `items`, the input's transcript items, gives the row its CPU per item."""

    what: str
    input: str
    usage: Usage | None = None
    result: str = ""
    target: str = ""
    items: int | None = None

    def cells(self) -> tuple[str, ...]:
        """The row's cells, in HEADER order."""
        u = self.usage
        if u is None:
            return (self.what, self.input, "", "", "", "", "", self.result, self.target)
        per_item = f"{u.cpu_s * 1e6 / self.items:,.2f}" if self.items else ""
        return (
            self.what,
            self.input,
            f"{u.wall_s:,.1f}",
            f"{u.cpu_s:,.1f}",
            per_item,
            f"{u.peak_rss_mib:,.0f}",
            f"{u.background_cpu_s:,.1f}",
            self.result,
            self.target,
        )


def failure(usage: Usage) -> str | None:
    """Why a measured command did not succeed, or None."""
    if usage.killed:
        return f"killed: {usage.killed}"
    if usage.exit_code != 0:
        return f"failed (exit {usage.exit_code})"
    return None


def target(text: str, met: bool | None) -> str:
    """A target with whether it was met (never asserted)."""
    return text if met is None else f"{text}: {'met' if met else 'MISSED'}"


def markdown(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _versions(python: Path) -> str:
    code = "import polars, prefect, pyarrow; print(polars.__version__, prefect.__version__, pyarrow.__version__)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False).stdout.split()
    names = ("polars", "prefect", "pyarrow")
    return ", ".join(f"{n} {v}" for n, v in zip(names, out, strict=False)) or "versions unknown"


def machine(python: Path) -> str:
    """Cores, memory, CPU model, Python and the main library versions (of the project venv `python`)."""
    return (
        f"{os.cpu_count()} cores, {_mem_total_gib():.1f} GiB, {_cpu_model()}; "
        f"Python {platform.python_version()}, {_versions(python)}"
    )


NOTES = """\
wall: the command from start to exit. CPU: user + system time of the command and every process it
waited for. CPU µs/item: that CPU over the input's transcript items (ingest rows). peak RSS: the
largest sum, over 50 ms samples, of the resident memory of every process of its tree. bg CPU: CPU
used meanwhile by the processes the benchmark keeps running (the Prefect server; for `talktime run`
rows also the emulator, for `--dask-address` rows also the Dask scheduler and workers), not counted
in CPU. yardstick: the fastest (wall) of the polars floor and the DuckDB and polars lazy scripts.
Targets are printed, never asserted."""
