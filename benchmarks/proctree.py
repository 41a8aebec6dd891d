"""Measuring a command as a whole process tree: wall time, CPU time and peak RSS, from /proc.

The command runs in its own session. Its CPU time is the rusage `wait4` returns for it: its own
time plus that of every descendant it waited for. Its peak RSS is sampled every 50 ms as the sum of
the resident sets of every live process of the tree (the child's session, plus descendants found by
parent id, in case one starts a session of its own); the largest single process's `ru_maxrss` is a
lower bound when a spike falls between two samples, but only when it exceeds the measuring
process's own peak: Linux carries a process's peak RSS over to the child it forks (and across
exec), so a child of a process that once held 8 GiB reports at least 8 GiB. A watchdog kills the
tree when it goes over a memory limit or a time limit, so one runaway reference cannot take the
machine down. On request, each sample also records the tree's CPU time so far (`cpu_trace`), for
the CPU spent between two moments of a run that its log timestamps.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
SAMPLE_EVERY_S = 0.05


@dataclass(frozen=True)
class ProcInfo:
    """The fields of /proc/<pid>/stat this module uses."""

    pid: int
    ppid: int
    session: int
    cpu_ticks: int  # utime + stime
    rss_pages: int


@dataclass(frozen=True)
class Usage:
    """What one command cost."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    exit_code: int
    background_cpu_s: float = 0.0
    killed: str | None = None  # why the watchdog killed it, if it did

    @property
    def ok(self) -> bool:
        """Exited 0 on its own."""
        return self.exit_code == 0 and self.killed is None


def _read_stat(pid: int) -> ProcInfo | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on; comm may hold spaces
    return ProcInfo(pid, int(fields[1]), int(fields[3]), int(fields[11]) + int(fields[12]), int(fields[21]))


def process_table() -> list[ProcInfo]:
    """Every live process."""
    infos = (_read_stat(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [info for info in infos if info is not None]


def tree(root: int, table: Sequence[ProcInfo]) -> list[ProcInfo]:
    """The processes of `root`'s session and every descendant of `root`."""
    children: dict[int, list[int]] = {}
    for info in table:
        children.setdefault(info.ppid, []).append(info.pid)
    members, stack = {root}, [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in members:
                members.add(child)
                stack.append(child)
    return [info for info in table if info.pid in members or info.session == root]


def tree_rss_mib(root: int) -> float:
    """Resident memory of `root`'s tree now."""
    return sum(info.rss_pages for info in tree(root, process_table())) * PAGE_BYTES / MIB


def tree_cpu_s(roots: Sequence[int]) -> float:
    """CPU time used so far by the live processes of these trees (for long-running servers)."""
    table = process_table()
    return sum(info.cpu_ticks for root in roots for info in tree(root, table)) / CLOCK_TICKS


def kill_tree(root: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal `root`'s process group (it leads one: it was started in a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root, sig)


class _Watch(threading.Thread):
    """Samples a tree's RSS (and CPU, into `cpu_trace` if given) until stopped; kills it over the memory
    or time limit."""

    def __init__(
        self, root: int, rss_limit_mib: float, deadline: float, cpu_trace: list[tuple[float, float]] | None
    ) -> None:
        super().__init__(name=f"watch-{root}", daemon=True)
        self.root = root
        self.rss_limit_mib = rss_limit_mib
        self.deadline = deadline
        self.cpu_trace = cpu_trace
        self.peak_mib = 0.0
        self.killed: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            members = tree(self.root, process_table())
            rss = sum(info.rss_pages for info in members) * PAGE_BYTES / MIB
            if self.cpu_trace is not None:
                self.cpu_trace.append((time.time(), sum(info.cpu_ticks for info in members) / CLOCK_TICKS))
            self.peak_mib = max(self.peak_mib, rss)
            if rss > self.rss_limit_mib:
                self._kill(f"over {self.rss_limit_mib:,.0f} MiB")
            elif time.monotonic() > self.deadline:
                self._kill("timed out")
            self.done.wait(SAMPLE_EVERY_S)

    def _kill(self, why: str) -> None:
        if self.killed is None:
            self.killed = why
            kill_tree(self.root)


def measure(
    cmd: Sequence[str | Path],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    background: Sequence[int] = (),
    rss_limit_mib: float = 16 * 1024,
    timeout_s: float = 3600.0,
    cpu_trace: list[tuple[float, float]] | None = None,
) -> Usage:
    """Run `cmd` to completion (output to `log`) and measure it; `background` pids' CPU is measured too.

    With `cpu_trace`, every sample appends (Unix time, CPU seconds of the tree's live processes so far)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    background_before = tree_cpu_s(background)
    inherited_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # a child's ru_maxrss starts here
    with log.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        watch = _Watch(proc.pid, rss_limit_mib, time.monotonic() + timeout_s, cpu_trace)
        watch.start()
        try:
            _, status, rusage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        except BaseException:  # interrupted (Ctrl-C): take the tree down with us
            kill_tree(proc.pid)
            proc.wait()
            raise
        finally:
            watch.done.set()
            watch.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    kill_tree(proc.pid)  # anything it left behind
    return Usage(
        wall_s=wall,
        cpu_s=rusage.ru_utime + rusage.ru_stime,
        peak_rss_mib=max(watch.peak_mib, rusage.ru_maxrss / 1024 if rusage.ru_maxrss > inherited_kib else 0.0),
        exit_code=proc.returncode,
        background_cpu_s=tree_cpu_s(background) - background_before,
        killed=watch.killed,
    )
