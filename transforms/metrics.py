"""Talk-time metrics exactly as `shared/metrics.md` defines them, from one sweep of a batch's timeline.

Input: the valid items (`transcript_items` columns) of any number of transcriptions. They are
sorted once into time order (transcription, start, end, item_index: the order the items table is
written in) and every metric comes from running columns over that one sorted frame, then two
small group-bys (per transcription and speaker, per transcription). Nothing loops over items or
transcriptions in Python, and no step sorts, joins or groups the items a second time.

The items table is sorted the same way, so the transform sorts the items once, for both.

**Keys.** Each transcription gets an integer key (its rank in the sorted frame) and each speaker
a code (its place in SPEAKERS), so grouping never hashes the 36-character ids. A running maximum
over the whole frame must not carry one transcription's values into the next: values are offset
by `key * SHIFT` (SHIFT is larger than any time), which makes every transcription's values
larger than all of the previous one's, so one `cum_max` over the whole frame is a running
maximum within each transcription.

**Talk time is a union of intervals.** In start order, an item adds to the union of a set of
items the part of it past the furthest end reached so far: `max(0, end - max(start, reach))`.
Summed per transcription for seven sets (each speaker, each pair of speakers, everyone), the
unions give each speaker's talk time, their overlap with the others (their union plus the
others' union minus everyone's) and the time two or more talk (by inclusion-exclusion).

**Interruptions.** An item interrupts when another speaker's item that starts strictly earlier
ends after its start: the same running reach, read at the last row of the previous start time.

**Turns** are maximal runs of one speaker in time order: a run starts where the speaker or the
transcription changes; its length is its furthest end (a running maximum offset by the turn's
number) minus its first start.
"""

from __future__ import annotations

import polars as pl

from transforms.schemas import MAX_TIME_MS, SPEAKER_METRICS, SPEAKERS, TRANSCRIPTIONS, conform

TID = "transcription_id"
START, END = "start_time_ms", "end_time_ms"
TIME_ORDER = (TID, START, END, "item_index")
MS_PER_MINUTE = 60_000
# Text ending with `?` once trailing whitespace is removed, whitespace as Python's str.rstrip()
# knows it: the regex class \s plus the separators \x1c-\x1f (as for word counts).
QUESTION_PATTERN = r"\?[\s\x1c-\x1f]*$"

KEY, WHO = "_key", "_who"  # the transcription's integer key, the speaker's code (index in SPEAKERS)
SHIFT = 2**32  # more than any time (MAX_TIME_MS) and any turn's end: `key * SHIFT + time` sorts by key first
assert MAX_TIME_MS < SHIFT
SPEAKER_ENUM = pl.Enum(SPEAKERS)
_CODES = dict(zip(SPEAKERS, range(len(SPEAKERS)), strict=True))
_NAMES = {code: s for s, code in _CODES.items()}

# The sets of items whose union is measured: each speaker, everyone but each speaker, everyone.
_SETS: dict[str, pl.Expr] = {
    **{s: pl.col(WHO) == code for s, code in _CODES.items()},
    **{f"not_{s}": pl.col(WHO) != code for s, code in _CODES.items()},
    "all": pl.lit(True),
}


def _offset(key: str) -> pl.Expr:
    return pl.col(key).cast(pl.Int64) * SHIFT


def _reach(name: str) -> str:
    return f"_reach_{name}"


def _union(name: str) -> str:
    return f"_union_{name}"


def _changed(column: str) -> pl.Expr:
    """Whether this row's value differs from the previous row's (true on the first row)."""
    return (pl.col(column) != pl.col(column).shift(1)).fill_null(True)


def sweep(items: pl.LazyFrame, *, presorted: bool = False) -> pl.LazyFrame:
    """Valid items -> one row per item in time order, with the running columns every metric reads.

    `presorted`: the items are in TIME_ORDER already (the items table is written in that order).

    Columns: TID, KEY, WHO, START, END, word_count, question (bool), interrupts (bool),
    `_union_<set>` (ms the item adds to its set's union; 0 outside the set), and the turn columns
    new_turn, last_of_turn, turn_start_ms, turn_end_ms (the turn's reach so far).
    """
    base = items.select(
        TID,
        START,
        END,
        "item_index",
        pl.col("word_count").cast(pl.Int64),
        pl.col("text").str.contains(QUESTION_PATTERN).fill_null(False).alias("question"),
        pl.col("speaker").cast(SPEAKER_ENUM).to_physical().cast(pl.Int8).alias(WHO),
    )
    if not presorted:
        base = base.sort(*TIME_ORDER)
    keyed = base.with_columns(_changed(TID).cum_sum().alias(KEY)).with_columns(
        # the furthest end (offset by the key) of the set's items up to this row, inclusive
        *(
            pl.when(member).then(_offset(KEY) + pl.col(END)).otherwise(_offset(KEY)).cum_max().alias(_reach(name))
            for name, member in _SETS.items()
        ),
        (_changed(KEY) | _changed(START)).alias("new_start"),
        (_changed(KEY) | _changed(WHO)).alias("new_turn"),
    )
    before_row = {name: pl.col(_reach(name)).shift(1).fill_null(0) - _offset(KEY) for name in _SETS}
    # each speaker's reach over the items starting strictly earlier (the previous start time's last row)
    before_start = {
        s: (pl.when("new_start").then(pl.col(_reach(s)).shift(1)).forward_fill() - _offset(KEY)).fill_null(-1)
        for s in SPEAKERS
    }
    turn = pl.col("new_turn").cum_sum().cast(pl.Int64)
    return keyed.select(
        TID,
        KEY,
        WHO,
        START,
        END,
        "word_count",
        "question",
        *(
            pl.when(member)
            .then((pl.col(END) - pl.max_horizontal(pl.col(START), before_row[name])).clip(lower_bound=0))
            .otherwise(0)
            .alias(_union(name))
            for name, member in _SETS.items()
        ),
        pl.any_horizontal(
            (pl.col(WHO) != code) & (before_start[s] > pl.col(START)) for s, code in _CODES.items()
        ).alias("interrupts"),
        "new_turn",
        pl.col("new_turn").shift(-1).fill_null(True).alias("last_of_turn"),
        pl.when("new_turn").then(pl.col(START)).forward_fill().alias("turn_start_ms"),
        ((turn * SHIFT + pl.col(END)).cum_max() - turn * SHIFT).alias("turn_end_ms"),
    )


def turns(timeline: pl.LazyFrame) -> pl.LazyFrame:
    """One row per turn in time order: KEY, WHO, turn_ms (furthest end - first start) and
    response_gap_ms: max(0, start - the previous turn's furthest end), null for a transcription's
    first turn. Every other turn follows a turn of another speaker (turns are maximal runs)."""
    return timeline.filter("last_of_turn").select(
        KEY,
        WHO,
        (pl.col("turn_end_ms") - pl.col("turn_start_ms")).alias("turn_ms"),
        pl.when(pl.col(KEY) == pl.col(KEY).shift(1))
        .then((pl.col("turn_start_ms") - pl.col("turn_end_ms").shift(1)).clip(lower_bound=0))
        .alias("response_gap_ms"),
    )


def per_transcription(timeline: pl.LazyFrame) -> pl.LazyFrame:
    """Per transcription: its key and id, item counts, first start and last end, and every set's union."""
    return timeline.group_by(KEY).agg(
        pl.col(TID).first(),
        pl.len().alias("item_count"),
        pl.col(WHO).n_unique().alias("speaker_count"),
        pl.col(START).first().alias("first_start_ms"),  # rows are in start order
        pl.col(END).max().alias("last_end_ms"),
        (pl.col(WHO) == _CODES["doctor"]).any().alias("has_doctor"),
        *(pl.col(_union(name)).sum() for name in _SETS),
    )


def talk_share(total: pl.Expr) -> pl.Expr:
    """talk_time_ms over the transcription's summed talk time (`total`, a column); null when it is 0.

    `total` must be a column, not a window or a scalar: polars divides by a broadcast scalar by
    multiplying by its reciprocal, which can be one unit in the last place off (10/11).
    """
    return pl.when(total > 0).then(pl.col("talk_time_ms") / total).alias("talk_share")


def words_per_minute() -> pl.Expr:
    """word_count per minute of talk time; null when talk_time_ms is 0."""
    talk = pl.col("talk_time_ms")
    # One correctly rounded division of exact integers: no float error from talk / 60000 first.
    return pl.when(talk > 0).then(pl.col("word_count") * MS_PER_MINUTE / talk).alias("words_per_minute")


def switches_per_minute() -> pl.Expr:
    """speaker_switches per minute of span; null when span_ms is 0 or null."""
    span = pl.col("span_ms")
    return pl.when(span > 0).then(pl.col("speaker_switches") * 60_000 / span).alias("switches_per_minute")


def speaker_metrics(timeline: pl.LazyFrame, transcriptions: pl.LazyFrame, turns: pl.LazyFrame) -> pl.LazyFrame:
    """The `speaker_metrics` table: one row per transcription and speaker present.

    `transcriptions` is `per_transcription(timeline)`, `turns` is `turns(timeline)`.
    """
    keys = [KEY, WHO]
    counts = timeline.group_by(keys).agg(
        pl.col(TID).first(),
        pl.len().alias("item_count"),
        pl.col("word_count").sum(),
        pl.col("question").sum().alias("question_count"),
        pl.col("interrupts").sum().alias("interruption_count"),
        # a row adds to its own speaker's union only: the sum of the three is the speaker's union
        pl.sum_horizontal(*(pl.col(_union(s)) for s in SPEAKERS)).sum().alias("talk_time_ms"),
    )
    turn_stats = turns.group_by(keys).agg(
        pl.len().alias("turn_count"),
        pl.col("turn_ms").mean().alias("mean_turn_ms"),
        pl.col("turn_ms").max().alias("longest_turn_ms"),
        pl.col("turn_ms").first().alias("first_turn_ms"),  # turns are in time order
        pl.col("response_gap_ms").mean().alias("mean_response_gap_ms"),
    )
    others = pl.coalesce(*(pl.when(pl.col(WHO) == code).then(pl.col(_union(f"not_{s}"))) for s, code in _CODES.items()))
    table = (
        counts.join(turn_stats, on=keys, how="left")
        .join(transcriptions.select(KEY, *(_union(name) for name in _SETS)), on=KEY, how="left")
        .with_columns(
            # talking while another talks: own union + the others' union - everyone's union
            (pl.col("talk_time_ms") + others - pl.col(_union("all"))).alias("overlap_ms"),
            pl.col(WHO).replace_strict(_NAMES, return_dtype=pl.String).alias("speaker"),
            pl.sum_horizontal(*(pl.col(_union(s)) for s in SPEAKERS)).alias("summed_talk_ms"),
        )
        .with_columns(talk_share(pl.col("summed_talk_ms")), words_per_minute())
    )
    return conform(table.sort(keys), SPEAKER_METRICS)


_ZERO_WHEN_NO_ITEMS = (
    "item_count",
    "rejected_item_count",
    "speaker_count",
    "total_talk_ms",
    "overlap_ms",
    "speaker_switches",
)


def transcription_metrics(
    responses: pl.LazyFrame, transcriptions: pl.LazyFrame, turns: pl.LazyFrame, rejected: pl.LazyFrame
) -> pl.LazyFrame:
    """The `transcriptions` table: one row per response, whatever its outcome.

    Metrics are measured only for `succeeded` transcriptions; for every other status they are
    null (there is no transcript to measure). A succeeded transcription without valid items has
    zero counts and null times, as `shared/metrics.md` defines.
    """
    union = {name: pl.col(_union(name)) for name in _SETS}
    # pairs talking at once: |A and B| = |A| + |B| - |A or B|, and `A or B` is "not C"
    a, b, c = SPEAKERS
    pairs = sum(
        (union[x] + union[y] - union[f"not_{z}"] for x, y, z in ((a, b, c), (a, c, b), (b, c, a))),
        start=pl.lit(0, pl.Int64),
    )
    three = union["all"] - (union[a] + union[b] + union[c]) + pairs  # all three at once
    measured = transcriptions.select(
        TID,
        "item_count",
        "speaker_count",
        "first_start_ms",
        "last_end_ms",
        (pl.col("last_end_ms") - pl.col("first_start_ms")).alias("span_ms"),
        union["all"].alias("total_talk_ms"),
        (pairs - 2 * three).alias("overlap_ms"),  # two or more at once
        pl.when(pl.col("has_doctor") & (union["patient"] > 0))
        .then(union["doctor"] / union["patient"])
        .alias("doctor_patient_ratio"),
        KEY,
    )
    switches = turns.group_by(KEY).agg((pl.len() - 1).alias("speaker_switches"))
    rejected_counts = rejected.group_by(TID).agg(pl.len().alias("rejected_item_count"))
    succeeded = pl.col("status") == "succeeded"
    table = (
        responses.join(measured.join(switches, on=KEY, how="left"), on=TID, how="left")
        .join(rejected_counts, on=TID, how="left")
        .with_columns(pl.when(succeeded).then(pl.col(c).fill_null(0)) for c in _ZERO_WHEN_NO_ITEMS)
        .with_columns((pl.col("span_ms") - pl.col("total_talk_ms")).alias("silence_ms"), switches_per_minute())
    )
    return conform(table.sort(TID), TRANSCRIPTIONS)


def metric_tables(
    items: pl.LazyFrame, responses: pl.LazyFrame, rejected: pl.LazyFrame, *, presorted: bool = False
) -> dict[str, pl.LazyFrame]:
    """The two metric tables of a batch, from one shared sweep (collect them together: `pl.collect_all`).

    `presorted`: the items are in TIME_ORDER already.
    """
    timeline = sweep(items, presorted=presorted).cache()
    per_tid = per_transcription(timeline).cache()
    runs = turns(timeline).cache()
    return {
        "transcriptions": transcription_metrics(responses, per_tid, runs, rejected),
        "speaker_metrics": speaker_metrics(timeline, per_tid, runs),
    }
