"""Seeded synthetic API responses (dialect A) as NDJSON files, cached and reused.

The transcripts are the emulator's synthetic consultations (`flows/emulator/synthetic.py`, dev
tooling): 50-400 items per transcript (mean ~200), mostly alternating doctor/patient, some
overlaps, gaps and unspecified speakers. Each file is generated
by its own process from its own seed, so the output depends only on (count, seed, files).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from flows.emulator.synthetic import synthetic_id, synthetic_transcript

FORMAT_VERSION = 1  # bump when the generated content changes, so old caches are not reused


@dataclass(frozen=True)
class Dataset:
    """A cached set of NDJSON files holding `count` responses."""

    count: int
    seed: int
    files: tuple[Path, ...]

    @property
    def bytes(self) -> int:
        """Total size on disk."""
        return sum(f.stat().st_size for f in self.files)


def synthetic_lines(first: int, count: int, seed: int) -> Iterator[str]:
    """NDJSON lines of responses number `first` .. `first + count - 1` of the data set `seed`."""
    rng = random.Random(seed * 1_000_003 + first)
    for n in range(first, first + count):
        response = {
            "id": synthetic_id(rng).upper(),
            "client_request_id": f"synthetic-{seed}-{n}",
            "status": "succeeded",
            "payload": {"transcript": synthetic_transcript(rng)},
        }
        yield json.dumps(response) + "\n"


def _write_file(path: Path, first: int, count: int, seed: int) -> Path:
    """Write one file atomically (temporary name, then rename)."""
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        out.writelines(synthetic_lines(first, count, seed))
    partial.replace(path)
    return path


def _slices(count: int, files: int) -> list[tuple[int, int]]:
    """(first, count) of each file: `count` responses split as evenly as possible."""
    files = max(1, min(files, count))
    base, extra = divmod(count, files)
    slices, first = [], 0
    for k in range(files):
        size = base + (1 if k < extra else 0)
        slices.append((first, size))
        first += size
    return slices


def dataset(root: Path, count: int, seed: int = 42, files: int = 10) -> Dataset:
    """The data set of `count` responses under `root`, generated (in parallel) unless already there."""
    folder = root / f"responses-v{FORMAT_VERSION}-n{count}-s{seed}-f{files}"
    folder.mkdir(parents=True, exist_ok=True)
    slices = _slices(count, files)
    paths = [folder / f"part-{k:03d}.ndjson" for k in range(len(slices))]
    missing = [(p, first, size) for p, (first, size) in zip(paths, slices, strict=True) if not p.exists()]
    if missing:
        with ProcessPoolExecutor(max_workers=min(len(missing), os.cpu_count() or 1)) as pool:
            futures = [pool.submit(_write_file, p, first, size, seed) for p, first, size in missing]
            for future in futures:
                future.result()
    return Dataset(count, seed, tuple(paths))
