"""The polars floor: NDJSON responses -> one row per transcript item -> ONE Parquet file.

No validation, no metrics, no ledger: the least work that turns the inputs into an item table,
which is what `talktime ingest` is compared with. Runs in the project's venv (polars only).

    python benchmarks/floor_polars.py --out items.parquet part-000.ndjson part-001.ndjson ...
"""

from __future__ import annotations

import argparse

import polars as pl

ITEM = pl.Struct({"text": pl.String, "speaker": pl.String, "start_time_ms": pl.Int64, "end_time_ms": pl.Int64})
SCHEMA = {
    "id": pl.String,
    "client_request_id": pl.String,
    "status": pl.String,
    "payload": pl.Struct({"transcript": pl.List(ITEM)}),
}


def items_plan(inputs: list[str]) -> pl.LazyFrame:
    """Scan with an explicit schema, explode the transcript, unnest the item fields."""
    return (
        pl.scan_ndjson(inputs, schema=SCHEMA)
        .select(
            pl.col("id").alias("transcription_id"),
            "client_request_id",
            "status",
            pl.col("payload").struct.field("transcript").alias("item"),
        )
        .explode("item")
        .unnest("item")
    )


def main() -> None:
    """Parse arguments and write the file (streaming)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the Parquet file to write")
    parser.add_argument("inputs", nargs="+", help="NDJSON files of API responses")
    args = parser.parse_args()
    items_plan(args.inputs).sink_parquet(args.out)


if __name__ == "__main__":
    main()
