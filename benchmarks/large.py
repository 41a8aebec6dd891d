"""Seeded synthetic large transcripts (dialect A) as NDJSON files, cached and reused (issue 19).

Each record is one succeeded response whose transcript holds as many items as it takes to reach
about `record_bytes` bytes: a long recording. Items are legal: `doctor` and `patient` taking turns
of a few items each (3% `unspecified`), some overlaps, gaps and short pauses, text drawn from the
emulator's vocabulary. The API's times stop at MAX_TIME_MS (one hour, `transforms.schemas`), so
a record's items share that hour: a 5 MiB record holds ~25,000 items of ~140 ms (word-level
timing), a 300 MiB one ~1.5M items of a few ms (still legal, never decoded: ingest refuses it).

Generation is vectorised (numpy draws, one polars string expression per record, a pool of text
snippets built once): a 5 MiB record takes ~0.1 s. The content depends only on (count,
record_bytes, seed).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from flows.emulator.synthetic import _WORDS
from transforms.schemas import MAX_TIME_MS

FORMAT_VERSION = 1  # bump when the generated content changes, so old caches are not reused
SNIPPETS = 4096  # distinct item texts per record, drawn at random per item
WORDS_PER_ITEM = (8, 40)  # an item's text: this many words (uniform), ~150 bytes on average
UNSPECIFIED_SHARE = 0.03
SWITCH_SHARE = 0.25  # chance the speaker changes after an item (turns of ~4 items)
OVERLAP_SHARE = 0.10  # chance an item starts before the previous one ends


@dataclass(frozen=True)
class LargeFile:
    """One cached NDJSON file of `count` records of about `record_bytes` bytes each."""

    path: Path
    count: int
    record_bytes: int
    items: int  # transcript items in all (every one legal)

    @property
    def bytes(self) -> int:
        """Size on disk."""
        return self.path.stat().st_size


def _snippets(rng: np.random.Generator) -> pl.Series:
    """SNIPPETS texts of WORDS_PER_ITEM words (a JSON-safe vocabulary: no quote, no backslash)."""
    vocab = np.array(_WORDS)
    counts = rng.integers(WORDS_PER_ITEM[0], WORDS_PER_ITEM[1] + 1, SNIPPETS)
    words = vocab[rng.integers(0, len(vocab), int(counts.sum()))]
    ends = np.cumsum(counts)
    return pl.Series("text", [" ".join(words[e - c : e]) for c, e in zip(counts, ends, strict=True)])


def _mean_item_bytes(texts: pl.Series) -> float:
    """The average JSON size of one item (its text, keys and numbers, the separator)."""
    fixed = len('{"text": "", "speaker": "patient", "start_time_ms": 1234567, "end_time_ms": 1234567}, ')
    return float(texts.str.len_bytes().mean()) + fixed  # type: ignore[arg-type]


def transcript_json(rng: np.random.Generator, texts: pl.Series, items: int) -> str:
    """The JSON array of `items` legal items spread over MAX_TIME_MS."""
    slot = MAX_TIME_MS / items
    starts = np.floor(np.arange(items) * slot + rng.uniform(0, 0.2 * slot, items)).astype(np.int64)
    overlap = rng.random(items) < OVERLAP_SHARE
    starts[1:] -= np.where(overlap[1:], np.floor(rng.uniform(0.1, 0.5, items - 1) * slot).astype(np.int64), 0)
    starts = np.maximum(starts, 0)
    ends = np.minimum(starts + np.floor(rng.uniform(0.5, 0.95, items) * slot).astype(np.int64) + 1, MAX_TIME_MS)
    turns = np.cumsum(rng.random(items) < SWITCH_SHARE) % 2
    speakers = np.where(turns == 0, "doctor", "patient").astype(object)
    speakers[rng.random(items) < UNSPECIFIED_SHARE] = "unspecified"
    frame = pl.DataFrame(
        {
            "text": texts.gather(rng.integers(0, len(texts), items)),
            "speaker": pl.Series(speakers, dtype=pl.String),
            "start": starts,
            "end": ends,
        }
    )
    item = pl.concat_str(
        pl.lit('{"text": "'),
        "text",
        pl.lit('", "speaker": "'),
        "speaker",
        pl.lit('", "start_time_ms": '),
        pl.col("start").cast(pl.String),
        pl.lit(', "end_time_ms": '),
        pl.col("end").cast(pl.String),
        pl.lit("}"),
    )
    return "[" + frame.select(item.str.join(", ")).item() + "]"


def record_line(rng: np.random.Generator, ids: random.Random, seed: int, n: int, record_bytes: int) -> tuple[str, int]:
    """Record number `n`: one NDJSON line of about `record_bytes` bytes, and its item count."""
    texts = _snippets(rng)
    items = max(1, int(record_bytes / _mean_item_bytes(texts)))
    head = (
        f'{{"id": "{str(uuid.UUID(int=ids.getrandbits(128), version=4)).upper()}", '
        f'"client_request_id": "large-{seed}-{n}", "status": "succeeded", "payload": {{"transcript": '
    )
    return head + transcript_json(rng, texts, items) + "}}\n", items


def large_file(root: Path, count: int, record_bytes: int, seed: int = 42) -> LargeFile:
    """The file of `count` records of about `record_bytes` bytes under `root`, generated unless there."""
    folder = root / f"large-v{FORMAT_VERSION}-n{count}-b{record_bytes}-s{seed}"
    path = folder / "records.ndjson"
    meta = folder / "items.txt"
    if not (path.exists() and meta.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, count, record_bytes])
        ids = random.Random(seed * 1_000_003 + record_bytes)
        total = 0
        partial = path.with_suffix(".partial")
        with partial.open("w", encoding="utf-8") as out:
            for n in range(count):
                line, items = record_line(rng, ids, seed, n, record_bytes)
                out.write(line)
                total += items
        partial.replace(path)
        meta.write_text(f"{total}\n")
    return LargeFile(path, count, record_bytes, int(meta.read_text()))
