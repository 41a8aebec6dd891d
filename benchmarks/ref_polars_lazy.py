"""The polars script a user would write instead of talktime: NDJSON -> items and talk time per speaker.

`scan_ndjson` with an explicit schema, `explode` the transcript, `unnest` the items, then the
simple talk time: the sum of `end_time_ms - start_time_ms` per (transcription, speaker), overlaps
counted twice, nothing validated (the same definition as `benchmarks/ref_duckdb.py`). Both tables
are streamed to Parquet with `sink_parquet`; the speakers are grouped from the items file just
written, so the JSON is parsed once. Runs in the benchmark's own venv (polars, pinned to the
project's version), so it imports only the standard library and polars.

    python benchmarks/ref_polars_lazy.py --out DIR part-000.ndjson part-001.ndjson ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

ITEM = pl.Struct({"text": pl.String, "speaker": pl.String, "start_time_ms": pl.Int64, "end_time_ms": pl.Int64})
SCHEMA = {
    "id": pl.String,
    "client_request_id": pl.String,
    "status": pl.String,
    "payload": pl.Struct({"transcript": pl.List(ITEM)}),
}


def items_plan(inputs: list[str]) -> pl.LazyFrame:
    """One row per transcript item, with its response's id, request id and status."""
    responses = pl.scan_ndjson(inputs, schema=SCHEMA)
    return (
        responses.select(
            pl.col("id").alias("transcription_id"),
            "client_request_id",
            "status",
            pl.col("payload").struct.field("transcript").alias("item"),
        )
        .explode("item")
        .unnest("item")
    )


def speakers_plan(items: pl.LazyFrame) -> pl.LazyFrame:
    """Talk time per (transcription, speaker): the sum of the items' durations, and their count."""
    return items.group_by("transcription_id", "speaker").agg(
        (pl.col("end_time_ms") - pl.col("start_time_ms")).sum().alias("talk_time_ms"),
        pl.len().cast(pl.Int64).alias("items"),
    )


def main() -> None:
    """Parse arguments, stream items.parquet then speakers.parquet into --out."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for items.parquet and speakers.parquet")
    parser.add_argument("inputs", nargs="+", help="NDJSON files of API responses")
    args = parser.parse_args()
    items = Path(args.out) / "items.parquet"
    items_plan(args.inputs).sink_parquet(items)
    speakers_plan(pl.scan_parquet(items)).sink_parquet(Path(args.out) / "speakers.parquet")


if __name__ == "__main__":
    main()
