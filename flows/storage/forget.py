"""`talktime forget`: erase consultations from an output, on request.

For each id asked for, in one commit through the same `Transaction` as a batch (so a kill at any
point leaves all of an id's rows or none, and the next writer finishes what was committed):

- every file holding rows of those ids is replaced by a new file of its other rows (none when
  nothing else is left) and deleted: no copy of an erased row stays in the output, and the
  staging folder the commit used is deleted when it is applied;
- the ledger marks the ids `forgotten` (final, no rows), so no later run, ingest or webhook
  delivery writes them again, unless a run names that status in `--refetch forgotten`;
- one entry is added to the erasure log, `_talktime/erasures/<commit>.json`: when, which ids, how
  many rows left each table, never any content; a ledger rebuilt from the data files (after the
  ledger was lost) reads it, so erased ids stay forgotten;
- files set aside in `_talktime/quarantine/` (unreadable, so they cannot be filtered) are deleted.

Ids the output never held are marked forgotten too: a later delivery of them is not written.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from flows.storage import ledgerlog
from flows.storage.commit import Transaction
from flows.storage.dataset import Dataset
from flows.storage.layout import QUARANTINE, erasure_path, new_file_id
from flows.storage.ledger import forgotten_rows, superseded


@dataclass(frozen=True)
class Forgotten:
    """What `forget` did."""

    ids: int  # ids asked for (distinct)
    held: int  # of those, ids the output held rows of
    rows_removed: dict[str, int] = field(default_factory=dict)  # per table
    quarantined_deleted: int = 0

    def line(self) -> str:
        rows = sum(self.rows_removed.values())
        never = self.ids - self.held
        return (
            f"talktime forget: {self.ids} ids forgotten ({self.held} held rows: {rows} rows removed; "
            f"{never} never written, now refused too); {self.quarantined_deleted} quarantined files deleted"
        )


def forget(out: str, ids: Sequence[str], *, run: str = "talktime forget") -> Forgotten:
    """Erase these ids' rows from `out` and mark them forgotten, in one commit under the lease."""
    with Dataset.writer(out, run) as (dataset, _):
        return forget_ids(dataset, list(dict.fromkeys(ids)))


def forget_ids(dataset: Dataset, ids: list[str]) -> Forgotten:
    assert dataset.version is not None, "open the dataset as its writer first"
    store = dataset.store
    prior = ledgerlog.rows_of(store, dataset.version, ids)
    transaction = Transaction(store, new_file_id())
    removed: Counter[str] = Counter()
    moves = transaction.supersede(superseded(prior, pl.Series(ids, dtype=pl.String)), removed=removed)
    quarantined = store.list(QUARANTINE)
    for path in quarantined:
        transaction.delete(path)
    now = datetime.now(UTC)
    entry = forgotten_rows(prior, ids, now)
    record = {"erased_at": now.isoformat(), "ids": ids, "rows_removed": dict(removed)}
    transaction.stage_bytes("erasure.json", json.dumps(record).encode(), erasure_path(transaction.record.batch_id))
    dataset.forget_rows(transaction, entry, moves)
    held = prior.filter(pl.col("batch_id").is_not_null()).height
    return Forgotten(len(ids), held, dict(removed), len(quarantined))
