"""Talk-time metrics exactly as `shared/metrics.md` defines them, as vectorised polars plans.

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
            *(pl.col(_active(s)).cum_sum().over(TID).gt(0) for s in SPEAKERS),
            (pl.col("time_ms").shift(-1).over(TID) - pl.col("time_ms")).fill_null(0).alias("length_ms"),
        )
        .with_columns(
            pl.sum_horizontal(*(pl.col(_active(s)).cast(pl.Int32) for s in SPEAKERS)).alias("active_speakers")
        )
    )


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

    Produces transcription_id, turn_index, speaker, turn_ms (latest end - earliest start).
    """
    new_turn = (pl.col("speaker") != pl.col("speaker").shift(1).over(TID)).fill_null(True)
    return (
        items.sort(*TIME_ORDER)
        .with_columns(new_turn.cum_sum().over(TID).alias("turn_index"))
        .group_by(TID, "turn_index")
        .agg(pl.col("speaker").first(), (pl.col(END).max() - pl.col(START).min()).alias("turn_ms"))
    )


def interruptions(items: pl.LazyFrame) -> pl.LazyFrame:
    """Per transcription and speaker: interruption_count.

    An item interrupts when its start falls strictly inside another speaker's item. Among the
    other speaker's items that start strictly earlier, that is so exactly when the furthest
    end reaches strictly past the start: an as-of join on the running maximum of ends.
    """
    reach = (
        items.sort(TID, "speaker", START, END)
        .with_columns(pl.col(END).cum_max().over(TID, "speaker").alias("reach_ms"))
        .group_by(TID, "speaker", START)
        .agg(pl.col("reach_ms").max())
        .rename({"speaker": "other_speaker"})
        .sort(START)
    )
    others = items.select(TID, pl.col("speaker").alias("other_speaker")).unique()
    probes = (
        items.select(TID, "item_index", "speaker", START)
        .join(others, on=TID)
        .filter(pl.col("other_speaker") != pl.col("speaker"))
        .sort(START)
    )
    interrupted = (
        probes.join_asof(reach, on=START, by=[TID, "other_speaker"], allow_exact_matches=False, check_sortedness=False)
        .group_by(TID, "item_index", "speaker")
        .agg((pl.col("reach_ms") > pl.col(START)).any().alias("interrupts"))
    )
    return interrupted.group_by(TID, "speaker").agg(pl.col("interrupts").sum().alias("interruption_count"))


def talk_share() -> pl.Expr:
    """talk_time_ms over the transcription's summed talk time; null when that sum is 0."""
    total = pl.col("talk_time_ms").sum().over(TID)
    return pl.when(total > 0).then(pl.col("talk_time_ms") / total).alias("talk_share")


def words_per_minute() -> pl.Expr:
    """word_count per minute of talk time; null when talk_time_ms is 0."""
    talk = pl.col("talk_time_ms")
    return pl.when(talk > 0).then(pl.col("word_count") / (talk / MS_PER_MINUTE)).alias("words_per_minute")


def speaker_metrics(items: pl.LazyFrame) -> pl.LazyFrame:
    """Valid items -> the `speaker_metrics` table: one row per transcription and speaker present."""
    keys = [TID, "speaker"]
    counts = items.group_by(keys).agg(
        pl.len().alias("item_count"), pl.col("word_count").cast(pl.Int64).sum().alias("word_count")
    )
    turn_stats = (
        turns(items)
        .group_by(keys)
        .agg(
            pl.len().alias("turn_count"),
            pl.col("turn_ms").mean().alias("mean_turn_ms"),
            pl.col("turn_ms").max().alias("longest_turn_ms"),
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
