"""A talktime output with a history, synthesised directly as ledger and data files (no pipeline run).

Building 10 million transcriptions through `talktime ingest` takes hours on the benchmark's
machine, so the history rows start from an output written here instead: `days` daily partitions
(`fetched_date`, the days before the one it is built on), each holding one compacted file per
table, and the ledger as ONE checkpoint naming every id's (file, date), status `succeeded`, final.

The rows are talktime's own: a template of TEMPLATE_SIZE small synthetic transcripts (4 items,
doctor and patient; `benchmarks.synth.small_transcript`) goes once through the product's
transform (`flows.transform.transform_outcomes`), and every day's files are the template's rows
replicated under new ids (random UUID4 strings, lower-case), written with the product's writer
(`flows.storage.commit.to_arrow`, PARQUET_OPTIONS, `flows.storage.layout.data_path`) and the
ledger with `flows.storage.ledgerlog.replace_all`. Everything is vectorised (numpy for the ids,
polars joins for the rows): the only Python loop is over days. An output is cached under
data/bench/history/ and reused; each measurement starts from a hard-linked copy (`cp -al`:
talktime never rewrites a file in place, it writes new names and deletes old ones).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from benchmarks.synth import synthetic_response
from flows.decode import api_version_of
from flows.outcomes import outcome_from_response
from flows.storage.commit import PARQUET_OPTIONS, to_arrow
from flows.storage.ledger import LEDGER_SCHEMA
from flows.storage.ledgerlog import replace_all
from flows.storage.store import Store
from flows.transform import transform_outcomes
from transforms.schemas import TABLES, UTC_TIMESTAMP

HISTORY_FORMAT = 1  # bump when the synthesised content changes, so old caches are not reused
TEMPLATE_SIZE = 64
DONE_MARKER = ".complete"  # a dot file: never listed by the store, never matched by a table's glob
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def uuid4_strings(rng: np.random.Generator, count: int) -> pl.Series:
    """`count` random version-4 UUIDs, lower-case, as a String series (no Python loop per id)."""
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = np.empty((count, 32), dtype=np.uint8)
    digits[:, 0::2], digits[:, 1::2] = _HEX[raw >> 4], _HEX[raw & 0x0F]
    text = np.insert(digits, [8, 12, 16, 20], ord("-"), axis=1)
    offsets = np.arange(0, 36 * (count + 1), 36, dtype=np.int32)
    array = pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(text.tobytes())])
    return pl.Series("transcription_id", array)


def template_tables(seed: int) -> dict[str, pl.DataFrame]:
    """The four tables of TEMPLATE_SIZE small synthetic transcripts, as talktime's transform makes them,
    with a `template` column (0 .. TEMPLATE_SIZE - 1) naming each row's transcript."""
    rng = random.Random(seed)
    fetched_at = datetime(2000, 1, 1, tzinfo=UTC)
    outcomes = []
    for n in range(TEMPLATE_SIZE):
        body = synthetic_response(rng, seed, n, small=True)
        outcomes.append(outcome_from_response(body, fetched_at=fetched_at, api_version=api_version_of(body)))
    tables = transform_outcomes(outcomes)
    index = pl.DataFrame(
        {"transcription_id": [o.transcription_id for o in outcomes], "template": range(TEMPLATE_SIZE)},
        schema={"transcription_id": pl.String(), "template": pl.UInt32()},
    )
    return {name: frame.join(index, on="transcription_id").drop("transcription_id") for name, frame in tables.items()}


def day_tables(template: dict[str, pl.DataFrame], ids: pl.Series, day: date) -> dict[str, pl.DataFrame]:
    """The four tables of one day: the template's rows replicated for `ids` (id k takes transcript
    k mod TEMPLATE_SIZE), fetched at noon that day, in each table's declared schema."""
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    new = pl.DataFrame({"transcription_id": ids}).with_columns(
        (pl.int_range(pl.len(), dtype=pl.UInt32) % TEMPLATE_SIZE).alias("template"),
        pl.format("history-{}", pl.col("transcription_id")).alias("client_request_id"),
        pl.lit(noon, UTC_TIMESTAMP).alias("fetched_at"),
    )
    frames = {}
    for name, rows in template.items():
        replaced = [c for c in ("client_request_id", "fetched_at") if c in TABLES[name]]
        joined = new.select("transcription_id", "template", *replaced).join(rows.drop(replaced), on="template")
        frames[name] = joined.select(TABLES[name].names())
    return frames


def file_id_of(day: date, rng: np.random.Generator) -> str:
    """A file id of the layout's form (`flows.storage.layout.new_file_id`) dated `day`, so it sorts
    before every file a later run writes."""
    return f"{day:%Y%m%d}T120000000000Z-{rng.integers(0, 2**32):08x}"


def day_counts(count: int, days: int) -> list[int]:
    """`count` ids spread over `days` days as evenly as possible."""
    base, extra = divmod(count, days)
    return [base + (1 if k < extra else 0) for k in range(days)]


def synthesize(out: Path, count: int, *, days: int, seed: int, last_day: date) -> None:
    """Write an output holding `count` transcriptions over the `days` days ending `last_day`."""
    store = Store(str(out))
    template = template_tables(seed)
    rng = np.random.default_rng(seed)
    ledger_parts = []
    for k, ids_today in enumerate(day_counts(count, days)):
        day = last_day - timedelta(days=days - 1 - k)
        ids = uuid4_strings(rng, ids_today)
        file_id = file_id_of(day, rng)
        for name, frame in day_tables(template, ids, day).items():
            store.write_parquet(f"{name}/fetched_date={day:%Y-%m-%d}/part-{file_id}.parquet",
                                to_arrow(name, frame), **PARQUET_OPTIONS)  # fmt: skip
        ledger_parts.append(ledger_rows(ids, file_id, day))
    ledger = pl.concat(ledger_parts) if ledger_parts else pl.DataFrame(schema=LEDGER_SCHEMA)
    replace_all(store, ledger.sort("transcription_id"), seq=1)


def ledger_rows(ids: pl.Series, file_id: str, day: date) -> pl.DataFrame:
    """The ledger's rows of one day's ids: succeeded, final, first seen and polled at noon, in that day's file."""
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return (
        pl.DataFrame({"transcription_id": ids})
        .with_columns(
            pl.lit("succeeded").alias("status"),
            pl.lit(True).alias("final"),
            pl.lit(noon, UTC_TIMESTAMP).alias("first_seen_at"),
            pl.lit(noon, UTC_TIMESTAMP).alias("last_polled_at"),
            pl.lit(1, pl.Int32).alias("attempts"),
            pl.lit(file_id).alias("batch_id"),
            pl.lit(f"{day:%Y-%m-%d}").alias("fetched_date"),
        )
        .cast(dict(LEDGER_SCHEMA))  # type: ignore[arg-type]
    )


def history_output(root: Path, count: int, *, days: int, seed: int) -> Path:
    """The cached output of `count` transcriptions over `days` days, synthesised unless already there.
    Its days end the day before it was built (see the folder's `.history.json`)."""
    folder = root / f"history-v{HISTORY_FORMAT}-n{count}-d{days}-s{seed}"
    if (folder / DONE_MARKER).exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    last_day = datetime.now(UTC).date() - timedelta(days=1)
    synthesize(folder, count, days=days, seed=seed, last_day=last_day)
    meta = {"transcriptions": count, "days": days, "seed": seed, "last_day": f"{last_day}"}
    (folder / ".history.json").write_text(json.dumps(meta) + "\n")
    (folder / DONE_MARKER).touch()
    return folder


def copy_output(source: Path, target: Path) -> None:
    """A hard-linked copy of an output (`cp -al`): cheap, and safe since talktime never rewrites a file in place."""
    subprocess.run(["cp", "-al", str(source), str(target)], check=True)
    (target / DONE_MARKER).unlink(missing_ok=True)
