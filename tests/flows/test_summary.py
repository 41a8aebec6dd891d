"""The run summary counts each id once, as last seen, and its table keeps statuses with their counts."""

from __future__ import annotations

import polars as pl

from flows.storage.ledger import POLLED_SCHEMA
from flows.summary import RunSummary


def polled(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"transcription_id": [r[0] for r in rows], "status": [r[1] for r in rows],
         "final": [r[1] != "ongoing" for r in rows], "written": [True] * len(rows)},
        schema=POLLED_SCHEMA,
    )  # fmt: skip


def test_an_id_polled_twice_counts_once_as_last_seen() -> None:
    summary = RunSummary()
    talk = pl.DataFrame(schema={"speaker": pl.String, "talk_time_ms": pl.Int64})
    summary.add(polled([("a", "ongoing"), ("b", "succeeded"), ("c", "not_found")]), {}, talk)
    summary.add(polled([("a", "succeeded"), ("d", "failed"), ("e", "succeeded")]), {}, talk)
    expected = {"succeeded": 3, "not_found": 1, "failed": 1}
    assert dict(summary.statuses) == expected
    for _ in range(20):  # the table pairs each status with its own count, every time
        assert dict(summary.status_table().iter_rows()) == expected


def test_the_markdown_table_aligns_numbers_right_and_escapes_pipes() -> None:
    from flows.summary import _markdown_table

    frame = pl.DataFrame({"speaker": ["doctor", "a|b"], "talk_minutes": [12.5, None], "share": [0.625, 0.375]})
    assert _markdown_table(frame).splitlines() == [
        "| speaker | talk_minutes | share |",
        "| :--- | ---: | ---: |",
        "| doctor | 12.5 | 0.625 |",
        "| a\\|b |  | 0.375 |",
    ]


def test_rows_written_says_that_rows_replaced_in_the_run_count_again() -> None:
    from flows.summary import RunSummary

    summary = RunSummary()
    summary.rows.update({"transcriptions": 124})
    assert "rows written (including rows later replaced in this run): transcriptions 124, " in "\n".join(
        summary.lines()
    )
