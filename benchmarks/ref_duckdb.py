"""The DuckDB script a user would write instead of talktime: NDJSON -> items and talk time per speaker.

`read_json` with explicit columns, `unnest` the transcript, then the simple talk time: the sum of
`end_time_ms - start_time_ms` per (transcription, speaker), overlaps counted twice, nothing
validated. Both tables go to Parquet with `COPY`, within `SET memory_limit` (DuckDB spills past it);
the speakers are grouped from the items file just written, so the JSON is parsed once. Runs in the
benchmark's own venv (duckdb), so it imports only the standard library and duckdb.

    python benchmarks/ref_duckdb.py --out DIR part-000.ndjson part-001.ndjson ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb

ITEM = "STRUCT(text VARCHAR, speaker VARCHAR, start_time_ms BIGINT, end_time_ms BIGINT)"
COLUMNS = {
    "id": "VARCHAR",
    "client_request_id": "VARCHAR",
    "status": "VARCHAR",
    "payload": f"STRUCT(transcript {ITEM}[])",
}
ITEMS = """
    SELECT id AS transcription_id, client_request_id, status, unnest(payload.transcript, recursive := true)
    FROM read_json($inputs, format = 'newline_delimited', columns = $columns)
"""
SPEAKERS = """
    SELECT transcription_id, speaker, sum(end_time_ms - start_time_ms)::BIGINT AS talk_time_ms, count(*) AS items
    FROM read_parquet($items) GROUP BY transcription_id, speaker
"""


def main() -> None:
    """Parse arguments, write items.parquet then speakers.parquet into --out."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for items.parquet and speakers.parquet")
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB's memory_limit (it spills to --out past it)")
    parser.add_argument("inputs", nargs="+", help="NDJSON files of API responses")
    args = parser.parse_args()
    out = Path(args.out)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{args.memory_limit}'")
    con.execute(f"SET temp_directory = '{out / 'duckdb-tmp'}'")
    items = str(out / "items.parquet")
    con.execute(f"COPY ({ITEMS}) TO '{items}' (FORMAT parquet)", {"inputs": args.inputs, "columns": COLUMNS})
    con.execute(f"COPY ({SPEAKERS}) TO '{out / 'speakers.parquet'}' (FORMAT parquet)", {"items": items})


if __name__ == "__main__":
    main()
