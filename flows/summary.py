"""What a run did: outcomes by status, rows by table, talk time by speaker; as text and Markdown."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import polars as pl

TABLE_NAMES = ("transcriptions", "speaker_metrics", "transcript_items", "rejected_items")


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

    def add(self, polled: pl.DataFrame, rows: dict[str, int], talk: pl.DataFrame) -> None:
        """Account for one committed batch: the polled ids' statuses, rows written, talk by speaker."""
        self.batches += 1
        self.polled.append(polled.select("transcription_id", "status"))
        self.rows.update(rows)
        self.talk.append(talk)

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
        """A JSON-friendly summary."""
        return {
            "statuses": dict(self.statuses),
            "rows": dict(self.rows),
            "batches": self.batches,
            "already_final": self.already_final,
            "stopped_early": self.stopped_early,
            "skipped_inputs": len(self.skipped),
        }


def summary_markdown(summary: RunSummary, out: str) -> str:
    """The run summary as the Markdown of a Prefect artifact."""
    lines = [f"- **{status}**: {n}" for status, n in sorted(summary.statuses.items())]
    stopped = f"\n\nStopped early: {summary.stopped_early}" if summary.stopped_early else ""
    return f"# talktime run\n\nOutput: `{out}`\n\n" + "\n".join(lines) + stopped


def print_summary(summary: RunSummary, out: str) -> None:
    """The run's outcomes, talk time by speaker, and where the tables are."""
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print("\nTranscriptions by status")
        print(summary.status_table())
        print("\nTalk time by speaker (all succeeded transcriptions)")
        print(summary.talk_table())
    print("\nRows written: " + ", ".join(f"{t} {summary.rows.get(t, 0)}" for t in TABLE_NAMES))
    if summary.already_final:
        print(f"Already final from earlier runs (not fetched again): {summary.already_final}")
    if summary.skipped:
        print(f"Skipped {len(summary.skipped)} unreadable input records (see the log).")
    if summary.stopped_early:
        print(f"Stopped early: {summary.stopped_early}. Ids not answered stay pending for the next run.")
    print(f"Output: {out}/{{{','.join(TABLE_NAMES)}}}/**/*.parquet")
