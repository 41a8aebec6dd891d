"""The dlt reference: a resource yielding the decoded responses, loaded as Parquet to a local folder.

dlt's normal behaviour: the top-level fields become the `responses` table and the nested
transcript the child table `responses__payload__transcript` (one row per item, linked by
`_dlt_parent_id`). The resource yields pages of decoded records, as dlt's docs advise for speed.
Runs in the benchmark's own venv (dlt with the parquet and filesystem extras), so it imports only
the standard library and dlt. Telemetry is off and every dlt working file goes under `--work`.

    python benchmarks/dlt_load.py --out DIR --work DIR part-000.ndjson part-001.ndjson ...
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PAGE = 500


def pages(inputs: list[str]) -> Iterator[list[dict[str, Any]]]:
    """The decoded responses of every file, `PAGE` at a time."""
    page: list[dict[str, Any]] = []
    for path in inputs:
        with open(path, "rb") as lines:
            for line in lines:
                if line.strip():
                    page.append(json.loads(line))
                    if len(page) == PAGE:
                        yield page
                        page = []
    if page:
        yield page


def main() -> None:
    """Parse arguments, run one pipeline, print its load info."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="destination folder (the filesystem destination's bucket)")
    parser.add_argument("--work", required=True, help="folder for dlt's pipeline state and temporary files")
    parser.add_argument("inputs", nargs="+", help="NDJSON files of API responses")
    args = parser.parse_args()
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("DLT_DATA_DIR", str(Path(args.work) / "data"))

    import dlt  # after the environment is set: dlt reads it at import

    resource = dlt.resource(pages(args.inputs), name="responses", write_disposition="append")
    pipeline = dlt.pipeline(
        pipeline_name="talktime_bench",
        destination=dlt.destinations.filesystem(bucket_url=Path(args.out).resolve().as_uri()),
        dataset_name="talktime",
        pipelines_dir=str(Path(args.work) / "pipelines"),
    )
    print(pipeline.run(resource, loader_file_format="parquet"))


if __name__ == "__main__":
    main()
