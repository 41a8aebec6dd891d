"""Altair charts over small, already aggregated frames, rendered to static SVG by vl-convert (offline)."""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl
import vl_convert as vlc

from flows.untrusted import printable

WIDTH = 560
HEIGHT = 180
BAR = "#4c78a8"
MEDIAN = "#e45756"


def count_axis(counts: pl.Series) -> alt.Axis:
    """Whole-number ticks (explicit ones when the largest count is small: Vega would draw 0.5)."""
    top = int(counts.max() or 0) if counts.len() else 0  # type: ignore[arg-type]
    return alt.Axis(format=",d", values=list(range(top + 1))) if top <= 5 else alt.Axis(format=",d")


# Altair's builders are loosely typed (many return Any): charts are passed around as this.
AltChart = Any
SPEAKER_COLORS = {"doctor": "#4c78a8", "patient": "#f58518", "unspecified": "#9d9d9d"}


LABEL_MAX_CHARS = 200  # any text handed to vl-convert (a label, a title, a data value)


def svg(chart: AltChart) -> str:
    """The chart as an inline `<svg>` element (no script, no external reference).

    Every string of the spec is made printable and bounded first (`printable_spec`): vl-convert
    panics on some control characters, and a label of megabytes takes minutes to lay out.
    """
    spec: dict[str, Any] = printable_spec(chart.to_dict())
    spec.pop("$schema", None)
    text = str(vlc.vegalite_to_svg(spec))
    return text[text.index("<svg") :]


def printable_spec(value: Any) -> Any:
    """A Vega-Lite spec with every string (keys and values, at any depth) `printable` and at most
    LABEL_MAX_CHARS characters."""
    if isinstance(value, str):
        return printable(value, LABEL_MAX_CHARS)
    if isinstance(value, dict):
        return {printable_spec(k): printable_spec(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable_spec(v) for v in value]
    return value


def _values(frame: pl.DataFrame) -> alt.InlineData:
    return alt.InlineData(values=frame.to_dicts())


def _speaker_color() -> alt.Color:
    return alt.Color(
        "speaker:N",
        scale=alt.Scale(domain=list(SPEAKER_COLORS), range=list(SPEAKER_COLORS.values())),
        legend=None,
    )


def histogram(
    bins: pl.DataFrame,
    x_title: str,
    *,
    axis_format: str = "",
    log: bool = False,
    median: float | None = None,
    median_label: str = "",
    width: int = WIDTH,
) -> AltChart:
    """Bars from `lo` to `hi` of height `count`; a red rule at `median` when given."""
    scale = alt.Scale(type="log", base=2, nice=False) if log else alt.Scale(nice=False, zero=False)
    axis = alt.Axis(format=axis_format, labelOverlap=True) if axis_format else alt.Axis(labelOverlap=True)
    bars = (
        alt.Chart(_values(bins))
        .mark_rect(color=BAR, stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("lo:Q", title=x_title, scale=scale, axis=axis),
            x2="hi:Q",
            y=alt.Y("count:Q", title="transcriptions", axis=count_axis(bins["count"])),
            y2=alt.Y2Datum(0),
        )
        .properties(width=width, height=HEIGHT)
    )
    if median is None:
        return bars
    rule_frame = pl.DataFrame({"median": [median], "label": [median_label]})
    rule = alt.Chart(_values(rule_frame)).mark_rule(color=MEDIAN, strokeWidth=2).encode(x="median:Q")
    label = (
        alt.Chart(_values(rule_frame))
        .mark_text(color=MEDIAN, align="left", dx=4, dy=-2, baseline="bottom", fontWeight="bold")
        .encode(x="median:Q", y=alt.value(0), text="label:N")
    )
    return alt.layer(bars, rule, label)


def speaker_histograms(bins: pl.DataFrame, x_title: str, medians: pl.DataFrame, digits: int = 0) -> AltChart:
    """One histogram per speaker (`speaker`, lo, hi, count), stacked, sharing the x scale; medians as rules."""
    rows = []
    speakers = [s for s in SPEAKER_COLORS if s in set(bins["speaker"].to_list())]
    upper = float(bins["hi"].max())  # type: ignore[arg-type]
    for speaker in speakers:
        part = bins.filter(pl.col("speaker") == speaker)
        med = medians.filter(pl.col("speaker") == speaker)
        bars = (
            alt.Chart(_values(part))
            .mark_rect(stroke="white", strokeWidth=0.5)
            .encode(
                x=alt.X("lo:Q", title=x_title, scale=alt.Scale(domain=[0, upper], nice=False)),
                x2="hi:Q",
                y=alt.Y("count:Q", title="transcriptions", axis=count_axis(part["count"])),
                y2=alt.Y2Datum(0),
                color=_speaker_color(),
            )
            .properties(width=WIDTH, height=110, title=alt.TitleParams(speaker, anchor="start", fontSize=12))
        )
        if med.height and med["median"][0] is not None:
            value = float(med["median"][0])
            beyond = value > upper  # in the clipped last bin: drawn at the right edge
            label = f"median {value:,.{digits}f}" + (" (off the scale)" if beyond else "")
            frame = pl.DataFrame({"median": [min(value, upper)], "label": [label]})
            rule = alt.Chart(_values(frame)).mark_rule(color=MEDIAN, strokeWidth=2).encode(x="median:Q")
            text = (
                alt.Chart(_values(frame))
                .mark_text(
                    color=MEDIAN,
                    align="right" if beyond else "left",
                    dx=-4 if beyond else 4,
                    dy=-2,
                    baseline="bottom",
                    fontWeight="bold",
                )
                .encode(x="median:Q", y=alt.value(0), text="label:N")
            )
            rows.append(alt.layer(bars, rule, text))
        else:
            rows.append(bars)
    return alt.vconcat(*rows, spacing=12)


def bars(frame: pl.DataFrame, category: str, title: str, *, color: str | None = None) -> AltChart:
    """Horizontal bars of `count` per `category` (a few categories), with the count written at the end."""
    height = max(24, 22 * frame.height)
    encode: dict[str, Any] = {
        "y": alt.Y(f"{category}:N", title=title, sort=None, axis=alt.Axis(labelLimit=260)),
        "x": alt.X("count:Q", title="count", axis=count_axis(frame["count"])),
    }
    if color:
        encode["color"] = alt.Color(f"{color}:N", legend=alt.Legend(orient="bottom"))
    base = alt.Chart(_values(frame)).encode(**encode).properties(width=WIDTH - 160, height=height)
    bar = base.mark_bar(color=BAR) if not color else base.mark_bar()
    text = base.mark_text(align="left", dx=3, color="#333").encode(text="count:Q")
    return alt.layer(bar, text)


def heatmap(cells: pl.DataFrame, x_title: str, y_title: str) -> AltChart:
    """A 2D binned count (x_lo, x_hi, y_lo, y_hi, count)."""
    return (
        alt.Chart(_values(cells))
        .mark_rect()
        .encode(
            x=alt.X("x_lo:Q", title=x_title, scale=alt.Scale(nice=False), axis=alt.Axis(format="%")),
            x2="x_hi:Q",
            y=alt.Y("y_lo:Q", title=y_title, scale=alt.Scale(nice=False), axis=alt.Axis(format="%")),
            y2="y_hi:Q",
            color=alt.Color("count:Q", title="transcriptions", scale=alt.Scale(scheme="blues")),
        )
        .properties(width=300, height=300)
    )


def timeline(items: pl.DataFrame, title: str, span_min: float) -> AltChart:
    """Who spoke when: one row per speaker, one bar per item (start_min..end_min)."""
    speakers = [s for s in SPEAKER_COLORS if s in set(items["speaker"].to_list())]
    return (
        alt.Chart(_values(items))
        .mark_bar(height=14)
        .encode(
            x=alt.X(
                "start_min:Q",
                title="minutes from the start of the audio",
                scale=alt.Scale(domain=[0, span_min], nice=False),
                axis=alt.Axis(tickMinStep=1 if span_min >= 5 else 0.1, labelOverlap=True),
            ),
            x2="end_min:Q",
            y=alt.Y("speaker:N", title=None, sort=speakers),
            color=_speaker_color(),
        )
        .properties(width=WIDTH + 120, height=26 * max(1, len(speakers)), title=alt.TitleParams(title, fontSize=12))
    )
