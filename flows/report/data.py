"""What the report plots, read and aggregated with polars before anything is drawn.

Every frame handed to a chart is small (a few hundred rows at most) whatever the size of the output:
histograms are binned here, never one mark per transcription or item (except the timeline, whose
items are capped). No transcript text is ever read: `transcript_items` is read without its `text`
column, and only `reason` of `rejected_items` is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

from flows.errors import ConfigurationError
from flows.storage.reader import read_table
from flows.storage.status import OutputStatus
from flows.untrusted import api_code

SUCCEEDED = "succeeded"
TIMELINE_COLUMNS = ("transcription_id", "speaker", "start_time_ms", "end_time_ms")
MAX_TIMELINE_ITEMS = 400  # items drawn per timeline (the first ones in time order)
MAX_TIMELINES = 12
DEFAULT_TIMELINE_QUANTILES = (0.1, 0.5, 0.9)
CONVERSATION_COLUMNS = ("question_count", "first_turn_ms", "mean_response_gap_ms")  # schema v2


@dataclass
class ReportData:
    """The inputs of every chart, already aggregated (except `items` of the timelines, capped)."""

    status: OutputStatus
    transcriptions: pl.DataFrame  # every current row, text-free columns only
    metrics: pl.DataFrame  # speaker_metrics rows of succeeded transcriptions
    rejected: pl.DataFrame  # reason, count
    timeline_ids: list[str] = field(default_factory=list)
    items: pl.DataFrame | None = None  # TIMELINE_COLUMNS of the timeline ids (all their items)
    timeline_asked: bool = False  # the ids came from --timeline (not the default picks)

    @property
    def succeeded(self) -> pl.DataFrame:
        return self.transcriptions.filter(pl.col("status") == SUCCEEDED)

    def has_column(self, name: str) -> bool:
        return name in self.metrics.columns and self.metrics[name].null_count() < self.metrics.height


def load(status: OutputStatus, out: str, timeline: list[str]) -> ReportData:
    """Read the output at `out` (already checked by `output_status`); ConfigurationError for an unknown id."""
    transcriptions = read_table(out, "transcriptions").drop("error_message", "error_payload", strict=False)
    transcriptions = stored_codes(transcriptions)
    metrics = read_table(out, "speaker_metrics")
    ok = transcriptions.filter(pl.col("status") == SUCCEEDED).select("transcription_id")
    metrics = metrics.join(ok, on="transcription_id", how="semi")
    rejected = (
        read_table(out, "rejected_items")
        .group_by("reason")
        .len("count")
        .sort(["count", "reason"], descending=[True, False])
    )
    data = ReportData(status, transcriptions, metrics, rejected)
    data.timeline_ids = _timeline_ids(data, timeline)
    data.timeline_asked = bool(timeline)
    if data.timeline_ids:
        data.items = read_items(out, data.timeline_ids)
    return data


def stored_codes(transcriptions: pl.DataFrame) -> pl.DataFrame:
    """`error_code` as talktime stores it now (`flows.untrusted.api_code`), also in rows written before
    that rule: a code of megabytes or with control characters is never plotted as it came."""
    codes = transcriptions["error_code"].drop_nulls().unique().to_list()
    changed = {code: api_code(code) for code in codes if api_code(code) != code}
    return transcriptions.with_columns(pl.col("error_code").replace(changed)) if changed else transcriptions


def _timeline_ids(data: ReportData, asked: list[str]) -> list[str]:
    """The ids asked for (as stored), or the succeeded ones at the 10th/50th/90th percentile of doctor talk share."""
    known = data.transcriptions["transcription_id"]
    if asked:
        lower = {str(tid).lower(): str(tid) for tid in known.to_list()}
        ids = []
        for tid in dict.fromkeys(asked):
            found = tid if tid in lower.values() else lower.get(tid.lower())
            if found is None:
                raise ConfigurationError(f"--timeline {tid}: no such transcription in {data.status.out}")
            ids.append(found)
        if len(ids) > MAX_TIMELINES:
            raise ConfigurationError(f"--timeline: at most {MAX_TIMELINES} transcriptions ({len(ids)} given)")
        return ids
    doctor = (
        data.metrics.filter((pl.col("speaker") == "doctor") & pl.col("talk_share").is_not_null())
        .select("transcription_id", "talk_share")
        .sort(["talk_share", "transcription_id"])
    )
    if doctor.is_empty():
        return list(data.succeeded.sort("transcription_id")["transcription_id"].head(1))
    picks = [doctor["transcription_id"][round(q * (doctor.height - 1))] for q in DEFAULT_TIMELINE_QUANTILES]
    return list(dict.fromkeys(picks))


def read_items(out: str, ids: list[str]) -> pl.DataFrame:
    """The current items of `ids`, without their text: `read_table`'s ledger-consistent read, projected.

    Only the timeline columns of the rows of `ids` are read (a Parquet filter), so an output of
    millions of items is never loaded whole and no transcript text is in memory.
    """
    return read_table(out, "transcript_items", list(TIMELINE_COLUMNS), ids)


def histogram(values: pl.Series, lo: float, hi: float, bins: int) -> pl.DataFrame:
    """Counts in `bins` equal bins over [lo, hi]; values outside are clipped into the first/last bin.

    Columns: lo, hi, count (every bin, zeros included). Nulls and NaN are dropped.
    """
    width = (hi - lo) / bins
    clean = values.drop_nulls().drop_nans() if values.dtype.is_float() else values.drop_nulls()
    index = ((clean.cast(pl.Float64) - lo) / width).floor().clip(0, bins - 1).cast(pl.Int64)
    counts = index.value_counts(name="count").rename({index.name: "bin"})
    frame = pl.DataFrame({"bin": pl.arange(0, bins, eager=True).cast(pl.Int64)})
    frame = frame.join(counts, on="bin", how="left").with_columns(pl.col("count").fill_null(0).cast(pl.Int64))
    return frame.select(
        (lo + pl.col("bin") * width).alias("lo"), (lo + (pl.col("bin") + 1) * width).alias("hi"), "count"
    ).sort("lo")


def log2_histogram(values: pl.Series, lo_exp: int, hi_exp: int, per_octave: int) -> pl.DataFrame:
    """Counts in bins equal on a log2 scale from 2**lo_exp to 2**hi_exp, clipped at both ends (values > 0)."""
    clean = values.drop_nulls()
    clean = clean.filter(clean > 0) if clean.len() else clean
    logs = clean.cast(pl.Float64).log(2)
    frame = histogram(logs, lo_exp, hi_exp, (hi_exp - lo_exp) * per_octave)
    return frame.with_columns((2 ** pl.col("lo")).alias("lo"), (2 ** pl.col("hi")).alias("hi"))


def nice_upper(values: pl.Series, quantile: float = 0.99) -> float:
    """A round upper bound at the `quantile` of the values (1, 2 or 5 times a power of ten)."""
    clean = values.drop_nulls()
    top = clean.quantile(quantile) if clean.len() else None
    top = float(top) if top is not None and top > 0 else 1.0
    power = 10 ** math.floor(math.log10(top))
    return float(next(step * power for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if step * power >= top))


def quantiles(frame: pl.DataFrame, by: str, column: str) -> pl.DataFrame:
    """p10, median, p90 and count of `column` per `by` (nulls dropped)."""
    return (
        frame.filter(pl.col(column).is_not_null())
        .group_by(by)
        .agg(
            pl.col(column).quantile(0.1, "linear").alias("p10"),
            pl.col(column).median().alias("median"),
            pl.col(column).quantile(0.9, "linear").alias("p90"),
            pl.len().alias("n"),
        )
        .sort(by)
    )
