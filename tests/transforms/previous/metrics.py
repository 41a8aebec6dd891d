"""The metrics before the one-sweep plan (issue 17): kept as an oracle for batches of many transcriptions.

Input: the valid items (`transcript_items` columns). Every metric is computed per group with
`group_by`/`over`; nothing loops over items or transcriptions in Python.

Time is swept once per transcription: each item with a positive length adds +1 to its
speaker's counter at its start and -1 at its end. Between two consecutive event times the
set of speakers with a positive counter is constant, so talk time (per speaker and overall)
and overlap are sums of those elementary intervals' lengths.
"""

from __future__ import annotations

import polars as pl

from transforms.schemas import SPEAKER_METRICS, SPEAKERS, conform

TID = "transcription_id"
START, END = "start_time_ms", "end_time_ms"
TIME_ORDER = (TID, START, END, "item_index")
MS_PER_MINUTE = 60_000
# Text ending with `?` once trailing whitespace is removed, whitespace as Python's str.rstrip()
# knows it: the regex class \s plus the separators \x1c-\x1f (as for word counts).
QUESTION_PATTERN = r"\?[\s\x1c-\x1f]*$"


def _active(speaker: str) -> str:
    return f"active_{speaker}"


def elementary_intervals(items: pl.LazyFrame) -> pl.LazyFrame:
    """Cut each transcription's timeline at every item boundary.

    Produces transcription_id, length_ms and, per speaker, `active_<speaker>` (bool): whether
    that speaker talks during the interval; plus `active_speakers` (how many distinct do).
    """
    spoken = items.filter(pl.col(END) > pl.col(START))
    events = pl.concat(
        [
            spoken.select(TID, "speaker", pl.col(START).alias("time_ms"), pl.lit(1).alias("delta")),
            spoken.select(TID, "speaker", pl.col(END).alias("time_ms"), pl.lit(-1).alias("delta")),
        ]
    )
    per_speaker = [
        pl.when(pl.col("speaker") == s).then(pl.col("delta")).otherwise(0).sum().alias(_active(s)) for s in SPEAKERS
    ]
    return (
        events.group_by(TID, "time_ms")
        .agg(per_speaker)
        .sort(TID, "time_ms")
        .with_columns(
            # Every +1 has its -1 in the same transcription, so a running sum over the whole
            # sorted frame is back at 0 at each transcription's end: no per-group window needed.
            *(pl.col(_active(s)).cum_sum().gt(0) for s in SPEAKERS),
            _within_transcription(pl.col("time_ms").shift(-1) - pl.col("time_ms"), -1).fill_null(0).alias("length_ms"),
        )
        .with_columns(
            pl.sum_horizontal(*(pl.col(_active(s)).cast(pl.Int32) for s in SPEAKERS)).alias("active_speakers")
        )
    )


def _within_transcription(value: pl.Expr, offset: int) -> pl.Expr:
    """`value` (computed from a row `offset` away) where that row is of the same transcription, else null."""
    return pl.when(pl.col(TID).shift(offset) == pl.col(TID)).then(value)


def _time_where(condition: pl.Expr) -> pl.Expr:
    return pl.col("length_ms").filter(condition).sum()


def speaker_time(items: pl.LazyFrame) -> pl.LazyFrame:
    """Per transcription and speaker: talk_time_ms (union) and overlap_ms (talking over others)."""
    overlapping = pl.col("active_speakers") >= 2
    per_tid = (
        elementary_intervals(items)
        .group_by(TID)
        .agg(
            *(_time_where(pl.col(_active(s))).alias(f"talk_time_ms_{s}") for s in SPEAKERS),
            *(_time_where(pl.col(_active(s)) & overlapping).alias(f"overlap_ms_{s}") for s in SPEAKERS),
        )
    )
    return pl.concat(
        per_tid.select(
            TID,
            pl.lit(s).alias("speaker"),
            pl.col(f"talk_time_ms_{s}").alias("talk_time_ms"),
            pl.col(f"overlap_ms_{s}").alias("overlap_ms"),
        )
        for s in SPEAKERS
    )


def transcription_time(items: pl.LazyFrame) -> pl.LazyFrame:
    """Per transcription: total_talk_ms (anyone talking) and overlap_ms (two or more speakers)."""
    return (
        elementary_intervals(items)
        .group_by(TID)
        .agg(
            _time_where(pl.col("active_speakers") >= 1).alias("total_talk_ms"),
            _time_where(pl.col("active_speakers") >= 2).alias("overlap_ms"),
        )
    )


def turns(items: pl.LazyFrame) -> pl.LazyFrame:
    """Maximal runs of consecutive same-speaker items in time order: one row per turn.

    Produces transcription_id, turn_index, speaker, turn_ms (latest end - earliest start) and
    response_gap_ms: max(0, start - the previous turn's latest end), null for a transcription's
    first turn. Every other turn follows a turn of another speaker (turns are maximal runs).
    Rows are in time order (turn_index is increasing, and unique across transcriptions).
    """
    new_turn = _within_transcription(pl.col("speaker") != pl.col("speaker").shift(1), 1).fill_null(True)
    gap = _within_transcription(pl.col("turn_start_ms") - pl.col("turn_end_ms").shift(1), 1).clip(lower_bound=0)
    return (
        items.sort(*TIME_ORDER)
        .with_columns(new_turn.cum_sum().alias("turn_index"))
        .group_by(TID, "turn_index")
        .agg(
            pl.col("speaker").first(),
            pl.col(START).min().alias("turn_start_ms"),
            pl.col(END).max().alias("turn_end_ms"),
        )
        .sort("turn_index")
        .select(
            TID,
            "turn_index",
            "speaker",
            (pl.col("turn_end_ms") - pl.col("turn_start_ms")).alias("turn_ms"),
            gap.alias("response_gap_ms"),
        )
    )


def interruptions(items: pl.LazyFrame) -> pl.LazyFrame:
    """Per transcription and speaker: interruption_count.

    An item interrupts when its start falls strictly inside another speaker's item. For each
    distinct start time and each speaker, take the furthest end among that speaker's items that
    start strictly earlier (a running maximum over the earlier start times): the item interrupts
    when that reach, for some other speaker, is past its start.
    """
    reach = (
        items.group_by(TID, START)
        .agg(pl.col(END).filter(pl.col("speaker") == s).max().alias(_reach(s)) for s in SPEAKERS)
        .sort(TID, START)
        .with_columns(pl.col(_reach(s)).cum_max().forward_fill().shift(1).over(TID) for s in SPEAKERS)
    )
    inside_other = pl.any_horizontal(
        (pl.col("speaker") != s) & (pl.col(_reach(s)) > pl.col(START)).fill_null(False) for s in SPEAKERS
    )
    return (
        items.join(reach, on=[TID, START], how="left")
        .group_by(TID, "speaker")
        .agg(inside_other.sum().cast(pl.Int32).alias("interruption_count"))
    )


def _reach(speaker: str) -> str:
    return f"reach_ms_{speaker}"


def talk_share() -> pl.Expr:
    """talk_time_ms over the transcription's summed talk time; null when that sum is 0."""
    total = pl.col("talk_time_ms").sum().over(TID)
    return pl.when(total > 0).then(pl.col("talk_time_ms") / total).alias("talk_share")


def words_per_minute() -> pl.Expr:
    """word_count per minute of talk time; null when talk_time_ms is 0."""
    talk = pl.col("talk_time_ms")
    # One correctly rounded division of exact integers: no float error from talk / 60000 first.
    return pl.when(talk > 0).then(pl.col("word_count") * MS_PER_MINUTE / talk).alias("words_per_minute")


def speaker_metrics(items: pl.LazyFrame) -> pl.LazyFrame:
    """Valid items -> the `speaker_metrics` table: one row per transcription and speaker present."""
    keys = [TID, "speaker"]
    counts = items.group_by(keys).agg(
        pl.len().alias("item_count"),
        pl.col("word_count").cast(pl.Int64).sum().alias("word_count"),
        pl.col("text").str.contains(QUESTION_PATTERN).fill_null(False).sum().alias("question_count"),
    )
    turn_stats = (
        turns(items)
        .group_by(keys)
        .agg(
            pl.len().alias("turn_count"),
            pl.col("turn_ms").mean().alias("mean_turn_ms"),
            pl.col("turn_ms").max().alias("longest_turn_ms"),
            pl.col("turn_ms").sort_by("turn_index").first().alias("first_turn_ms"),
            pl.col("response_gap_ms").mean().alias("mean_response_gap_ms"),
        )
    )
    table = (
        counts.join(speaker_time(items), on=keys, how="left")
        .join(turn_stats, on=keys, how="left")
        .join(interruptions(items), on=keys, how="left")
        .with_columns(
            pl.col("talk_time_ms", "overlap_ms", "interruption_count").fill_null(0),
        )
        .with_columns(talk_share(), words_per_minute())
    )
    return conform(table, SPEAKER_METRICS).sort(keys)
