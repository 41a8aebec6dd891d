"""The naive pandas reference: json per line -> a DataFrame of items -> one Parquet file.

What a first script would do: decode each line with `json`, append each item's fields to Python
lists, build a DataFrame, `to_parquet`. Runs in the benchmark's own venv (pandas, pyarrow), not in
the project's, so it imports only the standard library, pandas and pyarrow.

    python benchmarks/naive_pandas.py --out items.parquet part-000.ndjson part-001.ndjson ...
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

ITEM_FIELDS = ("text", "speaker", "start_time_ms", "end_time_ms")


def read_items(inputs: list[str]) -> dict[str, list[object]]:
    """Columns of items, one entry per transcript item, with its response's id, request id and status."""
    columns: dict[str, list[object]] = {
        name: [] for name in ("transcription_id", "client_request_id", "status", *ITEM_FIELDS)
    }
    for path in inputs:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                response = json.loads(line)
                for item in response["payload"]["transcript"]:
                    columns["transcription_id"].append(response["id"])
                    columns["client_request_id"].append(response["client_request_id"])
                    columns["status"].append(response["status"])
                    for field in ITEM_FIELDS:
                        columns[field].append(item.get(field))
    return columns


def main() -> None:
    """Parse arguments, build the frame, write it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the Parquet file to write")
    parser.add_argument("inputs", nargs="+", help="NDJSON files of API responses")
    args = parser.parse_args()
    frame = pd.DataFrame(read_items(args.inputs))
    frame.to_parquet(args.out, engine="pyarrow", index=False)


if __name__ == "__main__":
    main()
