"""What a run did: outcomes by status, rows by table, talk time by speaker; as text and Markdown."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from flows.untrusted import CODE_MAX_CHARS, bound, markdown_text, printable

if TYPE_CHECKING:
    from flows.storage.status import OutputStatus

TABLE_NAMES = ("transcriptions", "speaker_metrics", "transcript_items", "rejected_items")
# Rows of ids written twice in one run (ongoing, then terminal; an id met again by `ingest`) are
# counted each time: the tables then hold fewer rows than written.
ROWS_WRITTEN = "rows written (including rows later replaced in this run)"
# A retry cause that says what happened: `network (connection refused to 127.0.0.1:9)`.
_TRANSPORT_RETRY = re.compile(r"(?:network|timeout) \((?P<what>.+)\)")


@dataclass
class RunSummary:
    """What a run did: outcomes by status, rows written by table, and whether it stopped early."""

    polled: list[pl.DataFrame] = field(default_factory=list)
    rows: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    already_final: int = 0
    stopped_early: str | None = None
    skipped: list[str] = field(default_factory=list)
    talk: list[pl.DataFrame] = field(default_factory=list)
    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # retried requests by cause
    error_codes: Counter[str] = field(default_factory=Counter)  # ids that ended in `error`, by code
    unit: str = "ids"  # what progress counts: ids (run), bytes (ingest)
    total_units: int = 0
    units_done: int = 0
    waiting: int = 0  # ongoing ids waiting in the re-poll queue
    next_poll_s: float | None = None  # while the run only waits for them: seconds until the next re-poll
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None  # the run's duration, once over
    failure: str | None = None  # why the run failed (error threshold, API down), counts only
    dataset: OutputStatus | None = None  # the whole output after the run (not only this run)

    def add(
        self,
        polled: pl.DataFrame,
        rows: dict[str, int],
        talk: pl.DataFrame,
        *,
        requests: int = 0,
        retries: dict[str, int] | None = None,
        error_codes: dict[str, int] | None = None,
    ) -> None:
        """Account for one committed batch: the polled ids' statuses, rows written, talk by speaker, requests."""
        self.batches += 1
        self.polled.append(polled.select("transcription_id", "status", "final"))
        self.rows.update(rows)
        self.talk.append(talk)
        self.requests += requests
        self.retries.update(retries or {})
        self.error_codes.update(error_codes or {})

    def finish(self) -> None:
        self.seconds = time.monotonic() - self.started

    @property
    def ids(self) -> int:
        """Distinct ids this run polled or expired."""
        return sum(self.statuses.values())

    @property
    def transport_causes(self) -> Counter[str]:
        """Retried network failures by what happened (`connection refused to 127.0.0.1:9`, `… timed out`)."""
        causes: Counter[str] = Counter()
        for key, n in self.retries.items():
            if found := _TRANSPORT_RETRY.fullmatch(key):
                causes[found["what"]] += n
        return causes

    @property
    def retryable_errors(self) -> int:
        """Ids this run left in `error` that stay pending (the API gave no usable answer; not `invalid_id`)."""
        if not self.polled:
            return 0
        latest = pl.concat(self.polled).unique(subset="transcription_id", keep="last")
        return latest.filter((pl.col("status") == "error") & ~pl.col("final")).height

    @property
    def statuses(self) -> Counter[str]:
        """Ids by the status this run left them in (an id re-polled counts once, as last seen)."""
        if not self.polled:
            return Counter()
        latest = pl.concat(self.polled).unique(subset="transcription_id", keep="last", maintain_order=True)
        return Counter(latest["status"].to_list())

    def status_table(self) -> pl.DataFrame:
        """Transcriptions per status."""
        counts = sorted(self.statuses.items())  # one snapshot: the property recomputes
        return pl.DataFrame(
            {"status": [status for status, _ in counts], "transcriptions": [n for _, n in counts]},
            schema={"status": pl.String, "transcriptions": pl.Int64},
        ).sort("status")

    def talk_table(self) -> pl.DataFrame:
        """Talk time per speaker over the whole run, in minutes and as a share."""
        if not self.talk:
            return pl.DataFrame(schema={"speaker": pl.String, "talk_minutes": pl.Float64, "share": pl.Float64})
        totals = pl.concat(self.talk).group_by("speaker").agg(pl.col("talk_time_ms").sum())
        return totals.select(
            "speaker",
            (pl.col("talk_time_ms") / 60_000).round(1).alias("talk_minutes"),
            (pl.col("talk_time_ms") / pl.col("talk_time_ms").sum()).round(3).alias("share"),
        ).sort("speaker")

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly summary (`--json`)."""
        from flows.storage.status import status_dict

        return {
            "statuses": dict(sorted(self.statuses.items())),
            "error_codes": dict(sorted(self.error_codes.items())),
            "rows": {table: self.rows.get(table, 0) for table in TABLE_NAMES},
            "batches": self.batches,
            "requests": self.requests,
            "retries": dict(sorted(self.retries.items())),
            "already_final": self.already_final,
            "stopped_early": self.stopped_early,
            "skipped_inputs": len(self.skipped),
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "failure": self.failure,
            "dataset": None if self.dataset is None else status_dict(self.dataset),
        }

    def lines(self) -> list[str]:
        """The run in a few readable lines (the flow's log; never transcript text), each printable."""
        statuses = ", ".join(f"{status} {n}" for status, n in sorted(self.statuses.items())) or "none"
        lines = [f"outcomes of {self.ids} ids: {statuses}"]
        if self.error_codes:
            codes = self.error_codes.most_common()
            lines.append("error codes: " + ", ".join(f"{printable(c, CODE_MAX_CHARS)} {n}" for c, n in codes))
        lines.append(f"{ROWS_WRITTEN}: " + ", ".join(f"{t} {self.rows.get(t, 0)}" for t in TABLE_NAMES))
        retries = ", ".join(f"{c} {n}" for c, n in sorted(self.retries.items())) or "none"
        lines.append(f"{self.batches} batches, {self.requests} requests, retries: {retries}")
        if self.already_final:
            lines.append(f"already final from earlier runs (not fetched again): {self.already_final}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable input records")
        if self.stopped_early:
            lines.append(f"stopped early: {self.stopped_early}")
        if self.seconds is not None:
            lines.append(f"duration: {self.seconds:.1f} s")
        return [printable(line) for line in lines]


def summary_markdown(summary: RunSummary, out: str) -> str:
    """The run summary as the Markdown of a Prefect artifact: this run, then the whole output; every
    text in it literal (`markdown_text`: no image, link, HTML or code span can come from the data)."""
    from flows.storage.status import status_lines

    failed = f"**Failed:** {markdown_text(summary.failure)}\n\n" if summary.failure else ""
    run = "\n".join(f"- {markdown_text(line)}" for line in summary.lines())
    lines = [] if summary.dataset is None else status_lines(summary.dataset)
    dataset = "\n".join(f"- {markdown_text(line)}" for line in lines)
    talk = (
        ""
        if summary.dataset is None or summary.dataset.talk_by_speaker is None
        else "\n\n" + _markdown_table(summary.dataset.talk_by_speaker)
    )
    whole = f"\n\n## The whole output\n\n{dataset}{talk}" if dataset else ""
    return f"# talktime run\n\nOutput: {markdown_text(out)}\n\n{failed}## This run\n\n{run}{whole}\n"


def summary_rows(summary: RunSummary) -> list[dict[str, object]]:
    """The end-of-run table artifact: one row per figure (section, name, value); text escaped as in
    the Markdown artifact (`markdown_text`)."""
    rows: list[dict[str, object]] = []

    def add(section: str, name: str, value: object) -> None:
        shown = markdown_text(value) if isinstance(value, str) else value
        rows.append({"section": section, "name": markdown_text(name), "value": shown})

    for status, n in sorted(summary.statuses.items()):
        add("outcomes (this run)", status, n)
    for code, n in summary.error_codes.most_common():
        add("error codes (this run)", bound(code, CODE_MAX_CHARS), n)
    for table in TABLE_NAMES:
        add(ROWS_WRITTEN, table, summary.rows.get(table, 0))
    add("run", "batches", summary.batches)
    add("run", "requests", summary.requests)
    for cause, n in sorted(summary.retries.items()):
        add("run", f"retries: {cause}", n)
    add("run", "already final (skipped)", summary.already_final)
    add("run", "duration (s)", None if summary.seconds is None else round(summary.seconds, 1))
    if summary.failure:
        add("run", "failed", summary.failure)
    dataset = summary.dataset
    if dataset is not None:
        for status, n in sorted(dataset.ids_by_status.items()):
            add("the whole output", f"ids {status}", n)
        add("the whole output", "pending", dataset.pending)
        add("the whole output", "expiring within the hour", dataset.expiring_within)
        add("the whole output", "next to expire", _iso(dataset.next_to_expire))
        if dataset.talk_by_speaker is not None:
            for speaker, minutes, share in dataset.talk_by_speaker.select("speaker", "talk_minutes", "share").rows():
                add("talk time (the whole output)", speaker, f"{minutes} min ({share:.1%})")
    return rows


def _iso(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _markdown_table(frame: pl.DataFrame) -> str:
    """A GitHub-flavoured Markdown table: numbers right-aligned, text left-aligned, `|` escaped."""
    align = " | ".join("---:" if dtype.is_numeric() else ":---" for dtype in frame.dtypes)
    header = f"| {' | '.join(frame.columns)} |\n| {align} |"
    cells = ("| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.rows())
    return "\n".join([header, *cells])


def _cell(value: object) -> str:
    return "" if value is None else markdown_text(str(value))


def print_summary(summary: RunSummary, out: str) -> None:
    """The run's outcomes, talk time by speaker, and where the tables are."""
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print("\nTranscriptions by status")
        print(summary.status_table())
        print("\nTalk time by speaker (all succeeded transcriptions)")
        print(summary.talk_table())
    print(f"\n{ROWS_WRITTEN.capitalize()}: " + ", ".join(f"{t} {summary.rows.get(t, 0)}" for t in TABLE_NAMES))
    if summary.already_final:
        print(f"Already final from earlier runs (not fetched again): {summary.already_final}")
    if summary.skipped:
        print(f"Skipped {len(summary.skipped)} unreadable input records (see the log).")
    if summary.stopped_early:
        print(f"Stopped early: {summary.stopped_early}. Ids not answered stay pending for the next run.")
    print(f"Output: {out}/{{{','.join(TABLE_NAMES)}}}/**/*.parquet")
