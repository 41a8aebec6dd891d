"""The batch task's body: fetch or read -> transform -> stage files -> a small manifest.

A batch's arguments are the settings and a `BatchSpec` (ids, or a slice of the input files, and
the path of the run's ledger snapshot); its result is a `StagedBatch` (the staged files' row
counts and one small row per polled id). No decoded response crosses the task boundary, and
nothing among the arguments is unpicklable: the same body runs in a thread or on a Dask worker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from flows.api.service import fetcher_for
from flows.decode import decode_polled, decode_records
from flows.inputs import Segment, read_slice
from flows.outcomes import Outcome
from flows.settings import IngestSettings, RunSettings
from flows.storage.commit import new_batch_id, stage_tables
from flows.storage.dataset import StagedFiles, prior_statuses
from flows.storage.ledger import POLLED_SCHEMA, final_expr
from flows.storage.store import Store
from flows.transform import Decoded, build_tables, decode_outcomes

TALK_SCHEMA = pl.Schema({"speaker": pl.String(), "talk_time_ms": pl.Int64()})


@dataclass(frozen=True)
class BatchSpec:
    """One batch's work: `ids` to poll (`repoll`: ids this run already saw `ongoing`) or input `segments`."""

    number: int
    batch_id: str
    fetched_date: str
    snapshot: str
    ids: tuple[str, ...] = ()
    repoll: bool = False
    segments: tuple[Segment, ...] = ()

    @classmethod
    def new(cls, number: int, snapshot: str, **work: object) -> BatchSpec:
        """A spec with a fresh batch id (sortable by time) and today's partition."""
        return cls(number, new_batch_id(), datetime.now(UTC).date().isoformat(), snapshot, **work)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StagedBatch:
    """What a batch task staged and learnt: small enough to pass around freely."""

    number: int
    files: StagedFiles
    polled: pl.DataFrame  # POLLED_SCHEMA: one row per id that counts
    talk: pl.DataFrame  # TALK_SCHEMA: talk time by speaker over the written rows
    skipped: tuple[str, ...] = ()  # unreadable input records: `file:line: why` (never content)
    stopped: str | None = None  # why the API was given up on during this batch
    requests: int = 0
    already_final: int = 0  # ids read that were final before the run (ingest skips them)

    @property
    def ongoing(self) -> list[str]:
        return self.polled.filter(pl.col("status") == "ongoing")["transcription_id"].to_list()


def fetch_batch(settings: RunSettings, spec: BatchSpec) -> StagedBatch:
    """Poll each id of the batch once, then transform and stage what changed."""
    fetcher = fetcher_for(settings)
    sent_before = fetcher.requests_sent
    outcomes, down = fetcher.fetch_many(list(spec.ids))
    staged = settle(settings.out, spec, decode_polled(outcomes, datetime.now(UTC)))
    stopped = None if down is None else str(down)
    return dataclasses.replace(staged, stopped=stopped, requests=fetcher.requests_sent - sent_before)


def read_batch(settings: IngestSettings, spec: BatchSpec) -> StagedBatch:
    """Read the batch's slice of the inputs, then transform and stage what changed."""
    decoded, skipped = decode_records(list(read_slice(spec.segments)), datetime.now(UTC))
    staged = settle(settings.out, spec, decoded)
    return dataclasses.replace(staged, skipped=tuple(skipped))


def stage_outcomes(out: str, spec: BatchSpec, outcomes: list[Outcome]) -> StagedBatch:
    """Outcomes the flow made itself (expirations) -> staged like any batch."""
    return settle(out, spec, decode_outcomes(outcomes))


def settle(out: str, spec: BatchSpec, decoded: Decoded) -> StagedBatch:
    """Skip ids final before the run, write those whose status changed, stage their tables."""
    responses = decoded.responses.select("transcription_id", "status", "error_code")
    if spec.repoll:
        prior = responses.select("transcription_id", pl.lit("ongoing").alias("prior"), pl.lit(False).alias("was_final"))
    else:
        known = prior_statuses(out, spec.snapshot, responses["transcription_id"])
        prior = known.select("transcription_id", pl.col("status").alias("prior"), pl.col("final").alias("was_final"))
    joined = responses.join(prior, on="transcription_id", how="left")
    was_final = pl.col("was_final").fill_null(False)
    polled = (
        joined.filter(~was_final)
        .select(
            "transcription_id",
            "status",
            final_expr().alias("final"),
            pl.col("status").ne_missing(pl.col("prior")).alias("written"),
        )
        .cast(dict(POLLED_SCHEMA))  # type: ignore[arg-type]
    )
    tables = build_tables(decoded.only(polled.filter("written")["transcription_id"]))
    rows = stage_tables(Store(out), spec.batch_id, tables)
    talk = tables["speaker_metrics"].group_by("speaker").agg(pl.col("talk_time_ms").sum()).cast(dict(TALK_SCHEMA))  # type: ignore[arg-type]
    files = StagedFiles(spec.batch_id, spec.fetched_date, rows)
    return StagedBatch(spec.number, files, polled, talk, already_final=joined.filter(was_final).height)
