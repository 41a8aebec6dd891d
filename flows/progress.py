"""Progress of a run as it goes: Prefect's progress artifact, a terminal bar, or nothing.

The run's body (`flows.runs`) tells one `Watcher` when it knows how much work there is and after
each committed batch; the watcher reads the running totals from the `RunSummary`. The flows
always add `ArtifactWatcher` (a Prefect progress artifact, updated per batch); the CLI adds a rich
progress bar when stderr is a terminal (`terminal_watchers`). When it is not (CI, a worker), the
per-batch log line is the line-oriented output.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from flows.summary import RunSummary


class Watcher(Protocol):
    def started(self, unit: str, total: int) -> None:
        """The work is known: `total` of `unit` (ids, bytes, files)."""

    def advanced(self, summary: RunSummary) -> None:
        """A batch was committed; `summary` holds the running totals."""

    def finished(self, summary: RunSummary) -> None:
        """The run is over (also after a failure)."""


class Watchers:
    """Several watchers as one; a watcher that fails is dropped, never the run."""

    def __init__(self, watchers: Sequence[Watcher] = ()) -> None:
        self._watchers = list(watchers)

    def _each(self, call: Callable[[Watcher], None]) -> None:
        for watcher in list(self._watchers):
            try:
                call(watcher)
            except Exception:  # progress is a view: it must not stop a run
                self._watchers.remove(watcher)

    def started(self, unit: str, total: int) -> None:
        self._each(lambda w: w.started(unit, total))

    def advanced(self, summary: RunSummary) -> None:
        self._each(lambda w: w.advanced(summary))

    def finished(self, summary: RunSummary) -> None:
        self._each(lambda w: w.finished(summary))


# Watchers the CLI adds to every flow it runs in this process (the flows take settings only).
_terminal: list[Watcher] = []


def add_terminal_watcher(watcher: Watcher) -> None:
    _terminal.append(watcher)


def terminal_watchers() -> list[Watcher]:
    return list(_terminal)


def percent(summary: RunSummary) -> float:
    """Work done, 0-100 (100 while the run only waits for ongoing ids)."""
    return 100.0 if summary.total_units <= 0 else min(100.0, 100.0 * summary.units_done / summary.total_units)


class ArtifactWatcher:
    """Prefect's progress artifact of the flow run, updated after each batch; each call bounded
    (`flows.prefect_calls`): when Prefect's API goes away, the updates stop, the run goes on."""

    def __init__(self, description: str, log: Any = None) -> None:
        self._description = description
        self._artifact_id: object = None
        self._log = log

    def started(self, unit: str, total: int) -> None:
        from prefect.artifacts import create_progress_artifact

        from flows.prefect_calls import call_prefect

        description = f"{self._description}: {total} {unit}"
        self._artifact_id = call_prefect(
            "progress artifact", lambda: create_progress_artifact(progress=0.0, description=description), self._log
        )

    def advanced(self, summary: RunSummary) -> None:
        self._update(summary)

    def finished(self, summary: RunSummary) -> None:
        self._update(summary)

    def _update(self, summary: RunSummary) -> None:
        from prefect.artifacts import update_progress_artifact

        from flows.prefect_calls import call_prefect

        artifact_id, progress = self._artifact_id, round(percent(summary), 1)
        if artifact_id is not None:
            call_prefect(
                "progress update",
                lambda: update_progress_artifact(artifact_id, progress=progress),  # type: ignore[arg-type]
                self._log,
            )


def _eta_column() -> Any:
    """Rich's time-remaining column, showing the wait instead while the run only waits for ongoing ids
    (its ETA would read 0:00:00 for as long as that takes)."""
    from rich.progress import TimeRemainingColumn
    from rich.text import Text

    class EtaColumn(TimeRemainingColumn):
        def render(self, task: Any) -> Text:
            if task.fields.get("wait"):
                return Text(task.fields["wait"])
            return Text("ETA ") + super().render(task)

    return EtaColumn()


class ProgressBar:
    """A rich progress bar on stderr: done/total, rate, ETA, batches, retries and 429s so far."""

    def __init__(self, label: str, console: Console | None = None) -> None:
        self._label = label
        self._console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def started(self, unit: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        counts = (
            [DownloadColumn(), TransferSpeedColumn()]
            if unit == "bytes"
            else [MofNCompleteColumn(), TextColumn("{task.fields[rate]}")]
        )
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            *counts,
            _eta_column(),
            TextColumn("{task.fields[notes]}"),
            console=self._console or Console(file=sys.stderr),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self._label, total=total or None, rate="", notes="", wait="")

    def advanced(self, summary: RunSummary) -> None:
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[0]
        speed = task.speed
        rate = f"{speed:,.0f}/s" if speed else ""
        notes = f"batches {summary.batches} · retries {sum(summary.retries.values())}"
        notes += f" · 429s {summary.retries.get('rate_limited', 0)}"
        wait = ""
        if summary.waiting and summary.next_poll_s is not None:
            wait = f"waiting for {summary.waiting} ongoing ids, next poll in {summary.next_poll_s:.0f} s"
        elif summary.waiting:
            notes += f" · waiting on {summary.waiting} ongoing"
        self._progress.update(self._task, completed=summary.units_done, rate=rate, notes=notes, wait=wait)

    def finished(self, summary: RunSummary) -> None:
        if self._progress is not None:
            self.advanced(summary)
            self._progress.stop()
            self._progress = None
