"""The report page: a header and one section per chart, as one self-contained HTML file.

No script, no external style, font or image: inline CSS and inline SVG only, so the page opens
with no network. Only ids, speakers, times and counts appear in it, never a transcript's text.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl

from flows.errors import ConfigurationError
from flows.report import charts
from flows.report.data import (
    MAX_TIMELINE_ITEMS,
    ReportData,
    histogram,
    load,
    log2_histogram,
    nice_upper,
    quantiles,
)
from flows.storage.status import output_status
from flows.untrusted import printable
from transforms.schemas import SCHEMA_VERSION

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 980px; padding: 16px 24px 48px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 0 0 6px; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; font-size: 14px; margin: 8px 0; }
header dt { font-weight: 600; color: #555; }
header dd { margin: 0; word-break: break-all; }
section { border-top: 1px solid #ddd; padding: 14px 0 10px; }
.chart svg { max-width: 100%; height: auto; }
.caption { font-size: 13px; color: #444; margin: 6px 0 0; max-width: 860px; }
.note { font-size: 13px; background: #fff6e0; border-left: 3px solid #e6a700; padding: 6px 10px; margin: 6px 0; }
table.q { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
table.q td, table.q th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
table.q th:first-child, table.q td:first-child { text-align: left; }
code { font-size: 12px; }
"""


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote."""

    path: Path
    size_bytes: int
    transcriptions: int
    succeeded: int
    timeline_ids: tuple[str, ...]


@dataclass
class Section:
    key: str
    title: str
    caption: str
    svgs: tuple[str, ...] = ()
    note: str = ""
    extra_html: str = ""


def write_report(out: str, html_path: str | os.PathLike[str], timeline: list[str] | None = None) -> Report:
    """Write the report over the whole output at `out` to `html_path`.

    ConfigurationError when `out` is not a talktime output or a `timeline` id is not in it.
    """
    if Path(html_path).is_dir():
        raise ConfigurationError(f"--html {html_path} is a directory: name the HTML file to write")
    status = output_status(out, talk=False, rows=False)
    data = load(status, out, list(timeline or []))
    page = render(data)
    target = Path(html_path)
    partial = target.with_name(f".{target.name}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(page, encoding="utf-8")
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigurationError(f"--html {target}: cannot write the report ({exc.strerror or exc})") from None
    return Report(
        path=target,
        size_bytes=target.stat().st_size,
        transcriptions=data.transcriptions.height,
        succeeded=data.succeeded.height,
        timeline_ids=tuple(data.timeline_ids),
    )


def render(data: ReportData) -> str:
    sections = [_outcomes(data), _rejected(data)]
    if data.succeeded.height:
        sections = [
            _talk_share(data),
            _ratio(data),
            _wpm(data),
            _silence_overlap(data),
            _opening(data),
            _response_gap(data),
            *sections,
            _timelines(data),
        ]
    return _page(data, sections)


def _median(values: pl.Series, label: str) -> dict[str, Any]:
    """charts.histogram's median arguments: the median of `values`, and `label` formatting it."""
    median = values.median()
    if median is None:
        return {"median": None, "median_label": ""}
    value = float(median)  # type: ignore[arg-type]
    return {"median": value, "median_label": "median " + label.format(value)}


def _text(value: str) -> str:
    """Text for the page: control characters written as escapes (`printable`), then HTML-escaped."""
    return html.escape(printable(value))


# --- sections ----------------------------------------------------------------------------------


def _talk_share(data: ReportData) -> Section:
    doctor = data.metrics.filter(pl.col("speaker") == "doctor")["talk_share"].drop_nulls()
    chart = charts.histogram(
        histogram(doctor, 0.0, 1.0, 20),
        "doctor's talk share",
        axis_format="%",
        **_median(doctor, "{:.0%}"),
    )
    caption = (
        f"Succeeded transcriptions with a doctor item ({doctor.len():,} of {data.succeeded.height:,}), by the "
        "doctor's <code>talk_share</code> = doctor's talk time ÷ the sum of every speaker's talk time in that "
        "transcription (doctor + patient + unspecified; overlapping speech counts for each speaker). "
        "Bins of 5 percentage points; the red line is the median."
    )
    return Section("talk-share", "Doctor talk share", caption, (charts.svg(chart),))


def _ratio(data: ReportData) -> Section:
    ratio = data.succeeded["doctor_patient_ratio"].drop_nulls()
    low, high = -3, 3
    below = int((ratio < 2.0**low).sum()) if ratio.len() else 0
    above = int((ratio > 2.0**high).sum()) if ratio.len() else 0
    chart = charts.histogram(
        log2_histogram(ratio, low, high, 4),
        "doctor talk time ÷ patient talk time (log scale)",
        axis_format="~g",
        log=True,
        **_median(ratio, "{:.2f}"),
    )
    caption = (
        f"<code>doctor_patient_ratio</code> of {ratio.len():,} succeeded transcriptions = doctor's talk time ÷ "
        "patient's talk time (null, and not counted, when either has no item or the patient's talk time is 0: "
        f"{data.succeeded.height - ratio.len():,} transcriptions). Log-scale bins, four per doubling, from 1/8 to 8; "
        f"values outside are clipped into the end bins ({below:,} below 1/8, {above:,} above 8). "
        "1 = equal talk time; the red line is the median."
    )
    return Section("ratio", "Doctor : patient talk-time ratio", caption, (charts.svg(chart),))


def _speaker_bins(frame: pl.DataFrame, column: str, upper: float, bins: int) -> pl.DataFrame:
    parts = []
    for speaker in charts.SPEAKER_COLORS:
        values = frame.filter(pl.col("speaker") == speaker)[column]
        if values.drop_nulls().len():
            parts.append(histogram(values, 0.0, upper, bins).with_columns(pl.lit(speaker).alias("speaker")))
    return pl.concat(parts) if parts else pl.DataFrame()


def _quantile_table(summary: pl.DataFrame, unit: str, digits: int = 0) -> str:
    head = f"<tr><th>speaker</th><th>n</th><th>p10 ({unit})</th><th>median</th><th>p90</th></tr>"
    rows = "".join(
        f"<tr><td>{_text(str(s))}</td><td>{n:,}</td><td>{p10:,.{digits}f}</td><td>{med:,.{digits}f}</td>"
        f"<td>{p90:,.{digits}f}</td></tr>"
        for s, p10, med, p90, n in summary.select("speaker", "p10", "median", "p90", "n").iter_rows()
    )
    return f'<table class="q">{head}{rows}</table>'


def _wpm(data: ReportData) -> Section:
    frame = data.metrics.select("speaker", "words_per_minute")
    upper = nice_upper(frame["words_per_minute"])
    binned = _speaker_bins(frame, "words_per_minute", upper, 30)
    summary = quantiles(frame, "speaker", "words_per_minute")
    caption = (
        "<code>words_per_minute</code> per transcription and speaker = the speaker's words ÷ the speaker's talk "
        "time in minutes (null when the talk time is 0: not counted). One histogram per speaker over succeeded "
        f"transcriptions; 30 bins from 0 to {upper:,.0f} words/min, higher values clipped into the last bin. "
        "Red line: the speaker's median."
    )
    if binned.is_empty():
        return Section("wpm", "Words per minute by speaker", caption, note="No speaker has talk time.")
    chart = charts.speaker_histograms(binned, "words per minute", summary)
    return Section(
        "wpm", "Words per minute by speaker", caption, (charts.svg(chart),), extra_html=_quantile_table(summary, "wpm")
    )


def _silence_overlap(data: ReportData) -> Section:
    spans = data.succeeded.filter(pl.col("span_ms") > 0)
    silence = spans["silence_ms"] / spans["span_ms"]
    overlap = spans["overlap_ms"] / spans["span_ms"]
    upper = min(1.0, max(nice_upper(silence), nice_upper(overlap)))
    left = charts.histogram(histogram(silence, 0.0, upper, 25), "silence ÷ span", axis_format="%", width=300)
    right = charts.histogram(histogram(overlap, 0.0, upper, 25), "overlap ÷ span", axis_format="%", width=300)
    chart = alt.hconcat(left, right, spacing=30)
    caption = (
        f"Per succeeded transcription with a span ({spans.height:,} of {data.succeeded.height:,}): "
        "left, <code>silence_ms</code> ÷ <code>span_ms</code> (time nobody talks between the first item's start and "
        "the last item's end ÷ that span); right, <code>overlap_ms</code> ÷ <code>span_ms</code> (time two or more "
        f"distinct speakers talk at once ÷ the span). 25 bins from 0 to {upper:.0%}, higher values clipped into the "
        "last bin."
    )
    return Section("silence-overlap", "Silence and overlap per consultation", caption, (charts.svg(chart),))


def _missing_v2(key: str, title: str, column: str) -> Section:
    return Section(
        key,
        title,
        "",
        note=f"Not drawn: this output's <code>speaker_metrics</code> has no <code>{column}</code> values (a "
        f"speaker_metrics column of schema version 2; this talktime writes version {SCHEMA_VERSION}, or the output "
        "was written before it). Run the pipeline again with a talktime that writes it.",
    )


def _opening(data: ReportData) -> Section:
    title = "The patient's opening statement"
    if not data.has_column("first_turn_ms"):
        return _missing_v2("opening", title, "first_turn_ms")
    seconds = data.metrics.filter(pl.col("speaker") == "patient")["first_turn_ms"].drop_nulls() / 1000
    upper = nice_upper(seconds)
    chart = charts.histogram(
        histogram(seconds, 0.0, upper, 30),
        "patient's first turn (seconds)",
        **_median(seconds, "{:,.1f} s"),
    )
    caption = (
        f"<code>first_turn_ms</code> of the patient in {seconds.len():,} succeeded transcriptions with a patient "
        "item: the duration of the patient's first turn (earliest start to latest end of the patient's first run "
        f"of consecutive items). 30 bins from 0 to {upper:,.0f} s, longer ones clipped into the last bin; the red "
        "line is the median."
    )
    return Section("opening", title, caption, (charts.svg(chart),))


def _response_gap(data: ReportData) -> Section:
    title = "Response gaps by speaker"
    if not data.has_column("mean_response_gap_ms"):
        return _missing_v2("response-gap", title, "mean_response_gap_ms")
    frame = data.metrics.select("speaker", (pl.col("mean_response_gap_ms") / 1000).alias("gap_s"))
    upper = nice_upper(frame["gap_s"])
    binned = _speaker_bins(frame, "gap_s", upper, 30)
    summary = quantiles(frame, "speaker", "gap_s")
    caption = (
        "<code>mean_response_gap_ms</code> per transcription and speaker, in seconds: over the speaker's turns that "
        "follow another speaker's turn, the mean of max(0, turn start − previous turn's end) (null, not counted, "
        f"when the speaker never answers). 30 bins from 0 to {upper:,.1f} s, longer ones clipped into the last bin. "
        "Red line: the speaker's median."
    )
    if binned.is_empty():
        return Section("response-gap", title, caption, note="No speaker has a response gap.")
    chart = charts.speaker_histograms(binned, "mean response gap (seconds)", summary, digits=2)
    return Section("response-gap", title, caption, (charts.svg(chart),), extra_html=_quantile_table(summary, "s", 2))


def _outcomes(data: ReportData) -> Section:
    by_status = pl.DataFrame(
        {"status": list(data.status.ids_by_status), "count": list(data.status.ids_by_status.values())},
        schema={"status": pl.String, "count": pl.Int64},
    ).sort(["count", "status"], descending=[True, False])
    errors = (
        data.transcriptions.filter(pl.col("error_code").is_not_null())
        .group_by("status", "error_code")
        .len("count")
        .with_columns(pl.format("{} · {}", "status", "error_code").alias("outcome"))
        .sort(["count", "outcome"], descending=[True, False])
        .head(30)
    )
    caption = (
        f"Top: every id the output's ledger holds ({data.status.ids:,}), by its latest status (final or pending). "
    )
    if by_status.is_empty():
        return Section("outcomes", "Outcomes by status", caption, note="No id recorded yet.")
    parts: list[charts.AltChart] = [charts.bars(by_status, "status", "status")]
    if errors.height:
        parts.append(charts.bars(errors.select("outcome", "count"), "outcome", "status · error code"))
        caption += (
            "Bottom: transcriptions with an error code, by status and <code>error_code</code> (the API's code for "
            "<code>failed</code>, talktime's own for <code>error</code> and <code>not_found</code>; the 30 most "
            "frequent). Counts are ids: each id counted once, at its latest outcome."
        )
    else:
        caption += "No transcription has an error code."
    chart = alt.vconcat(*parts, spacing=24) if len(parts) > 1 else parts[0]
    return Section("outcomes", "Outcomes by status", caption, (charts.svg(chart),))


def _rejected(data: ReportData) -> Section:
    total = int(data.rejected["count"].sum()) if data.rejected.height else 0
    caption = (
        f"Items the pipeline rejected ({total:,} in all), by <code>reason</code>: items that take part in no metric "
        "(see docs/metrics.md, Items)."
    )
    if not total:
        return Section("rejected", "Rejected items by reason", caption, note="No rejected item.")
    return Section(
        "rejected", "Rejected items by reason", caption, (charts.svg(charts.bars(data.rejected, "reason", "reason")),)
    )


def _timelines(data: ReportData) -> Section:
    caption = (
        "Who spoke when: one row per speaker, one bar per valid item from its start to its end (minutes from the "
        f"start of the audio), in time order; at most {MAX_TIMELINE_ITEMS} items per transcription. "
    )
    caption += (
        "Transcriptions chosen with <code>--timeline</code>."
        if data.timeline_asked
        else "By default: the succeeded transcriptions at the 10th, 50th and 90th percentile of the doctor's talk "
        "share (ties broken by id); choose others with <code>--timeline ID</code>."
    )
    svgs, notes = [], []
    items = data.items if data.items is not None else pl.DataFrame(schema={"transcription_id": pl.String})
    shares = dict(
        data.metrics.filter(pl.col("speaker") == "doctor").select("transcription_id", "talk_share").iter_rows()
    )
    for tid in data.timeline_ids:
        own = items.filter(pl.col("transcription_id") == tid).sort("start_time_ms", "end_time_ms")
        if own.is_empty():
            notes.append(f"{_text(tid)}: no valid item to draw.")
            continue
        shown = own.head(MAX_TIMELINE_ITEMS).select(
            "speaker",
            (pl.col("start_time_ms") / 60000).alias("start_min"),
            (pl.col("end_time_ms") / 60000).alias("end_min"),
        )
        span = float(shown["end_min"].max() or 0.0) or 1.0  # type: ignore[arg-type]
        share = shares.get(tid)
        title = f"{tid} — {own.height:,} items" + ("" if share is None else f", doctor talk share {share:.0%}")
        if own.height > MAX_TIMELINE_ITEMS:
            title += f" (first {MAX_TIMELINE_ITEMS} drawn)"
        svgs.append(charts.svg(charts.timeline(shown, title, span)))
    return Section("timeline", "Who spoke when", caption, tuple(svgs), note=" ".join(notes))


# --- page --------------------------------------------------------------------------------------


def _header(data: ReportData) -> str:
    status = data.status
    ok = data.succeeded
    items = int(ok["item_count"].sum() or 0) if ok.height else 0
    rejected = int(data.rejected["count"].sum()) if data.rejected.height else 0
    by_status = ", ".join(f"{name} {n:,}" for name, n in sorted(status.ids_by_status.items())) or "none"
    conversation = [c for c in ("question_count", "first_turn_ms", "mean_response_gap_ms") if data.has_column(c)]
    schema = f"{SCHEMA_VERSION}" + (
        f" (speaker_metrics has the version 2 columns {', '.join(conversation)})"
        if conversation
        else " (no version 2 conversation columns in speaker_metrics)"
    )
    rows = [
        ("output", status.out),
        ("as of", status.now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("ids", f"{status.ids:,} ({by_status})"),
        ("items", f"{items:,} valid items in {ok.height:,} succeeded transcriptions"),
        ("rejected items", f"{rejected:,}"),
        ("schema version", schema),
        ("talktime", _version()),
    ]
    if status.ledger_state != "stored":
        rows.append(
            ("ledger", {"rebuilt": "rebuilt in memory from the data files", "none": "none yet"}[status.ledger_state])
        )
    body = "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in rows)
    notes = "".join(f'<p class="note">{_text(n)}</p>' for n in status.notes)
    empty = (
        ""
        if ok.height
        else '<p class="note" id="no-succeeded">No succeeded transcription in this output: there is nothing to '
        "plot but the outcomes below.</p>"
    )
    return (
        "<header><h1>talktime report</h1>"
        '<p class="caption">Over the whole output (every id\'s latest outcome, read through the ledger), not one '
        "run. Only ids, speakers, times and counts: no transcript text.</p>"
        f"<dl>{body}</dl>{notes}{empty}</header>"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("talktime")
    except PackageNotFoundError:
        return "unknown"


def _section(section: Section) -> str:
    parts = [f'<section class="chart" id="{section.key}"><h2>{_text(section.title)}</h2>']
    if section.note:
        parts.append(f'<p class="note">{section.note}</p>')
    parts += [f'<div class="figure">{svg}</div>' for svg in section.svgs]
    parts.append(section.extra_html)
    if section.caption:
        parts.append(f'<p class="caption">{section.caption}</p>')
    parts.append("</section>")
    return "".join(parts)


def _page(data: ReportData, sections: list[Section]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>talktime report — {_text(data.status.out)}</title><style>{CSS}</style></head><body>"
        + _header(data)
        + "".join(_section(section) for section in sections)
        + "</body></html>\n"
    )
