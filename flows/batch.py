"""The batch task's body: fetch or read -> transform -> stage files -> a small manifest.

A batch's arguments are the settings and a `BatchSpec` (ids, or a slice of the input files, and
the path of the run's ledger snapshot); its result is a `StagedBatch` (the staged files' row
counts and one small row per polled id). No decoded response crosses the task boundary, and
nothing among the arguments is unpicklable: the same body runs in a thread or on a Dask worker.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from flows.api.batchbytes import BatchBytes
from flows.api.client import FetchStats
from flows.api.service import fetcher_for
from flows.decode import decode_polled, decode_records
from flows.inputs import Segment, read_slice, split_oversized
from flows.outcomes import Outcome
from flows.settings import IngestSettings, RunSettings
from flows.storage.commit import new_batch_id, stage_tables
from flows.storage.dataset import StagedFiles, prior_statuses
from flows.storage.ledger import POLLED_SCHEMA, final_expr
from flows.storage.store import Store
from flows.textpolicy import text_policy
from flows.transform import KEEP_TEXT, Decoded, TextPolicy, build_tables, decode_outcomes

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
    refetch: tuple[str, ...] = ()  # final statuses polled again: their ids count as not final
    name: str = ""  # the task run's name: fetch-3-of-8, repoll-9, read-2-of-40

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
    retries: dict[str, int] = field(default_factory=dict)  # retried requests by cause (rate_limited, ...)
    error_codes: dict[str, int] = field(default_factory=dict)  # polled ids that ended in `error`, by code
    # ids of the batch left unpolled once its responses reached its share of the memory budget: the run
    # polls them in a later batch
    deferred: tuple[str, ...] = ()
    seconds: float = 0.0  # the task's time: fetch or read, transform, stage
    name: str = ""  # the batch's task run name

    @property
    def ongoing(self) -> list[str]:
        return self.polled.filter(pl.col("status") == "ongoing")["transcription_id"].to_list()


def fetch_batch(settings: RunSettings, spec: BatchSpec) -> StagedBatch:
    """Poll each id of the batch once, until its responses reach its share of the memory budget (the ids
    left are handed back, `deferred`), then transform and stage what changed."""
    started = time.monotonic()
    stats = FetchStats()
    room = BatchBytes(settings.batch_bytes)
    text = text_policy(settings)  # the key of `hash` is read here, in the task's own process
    outcomes, down = fetcher_for(settings).fetch_many(list(spec.ids), stats, room)
    decoded = decode_polled(outcomes, datetime.now(UTC))
    del outcomes  # their bodies and decoded transcripts, the batch's largest objects: not held while it transforms
    staged = settle(settings.out, spec, decoded, text)
    stopped = None if down is None else str(down)
    return dataclasses.replace(
        staged,
        stopped=stopped,
        requests=stats.requests,
        retries=dict(stats.retries),
        deferred=tuple(room.deferred),
        seconds=time.monotonic() - started,
    )


def read_batch(settings: IngestSettings, spec: BatchSpec) -> StagedBatch:
    """Read the batch's slice of the inputs, then transform and stage what changed."""
    started = time.monotonic()
    text = text_policy(settings)
    now = datetime.now(UTC)
    split = split_oversized(read_slice(spec.segments), settings.batch_bytes, now)
    decoded, skipped = decode_records(split.records, now)
    if split.errors:
        decoded = decoded.with_outcomes(split.errors)
    staged = settle(settings.out, spec, decoded, text)
    return dataclasses.replace(staged, skipped=(*skipped, *split.skipped), seconds=time.monotonic() - started)


def stage_outcomes(out: str, spec: BatchSpec, outcomes: list[Outcome], text: TextPolicy = KEEP_TEXT) -> StagedBatch:
    """Outcomes the flow made itself (expirations: no items, so no text) -> staged like any batch."""
    return settle(out, spec, decode_outcomes(outcomes), text)


def settle(out: str, spec: BatchSpec, decoded: Decoded, text: TextPolicy = KEEP_TEXT) -> StagedBatch:
    """Skip ids final before the run, write those whose status changed, stage their tables (their text
    as the output's policy says: the metrics are computed before it is applied)."""
    responses = decoded.responses.select("transcription_id", "status", "error_code")
    if spec.repoll:
        prior = responses.select(
            "transcription_id",
            pl.lit("ongoing").alias("prior"),
            pl.lit(False).alias("was_final"),
            pl.lit(False).alias("refetched"),
        )
    else:
        known = prior_statuses(out, spec.snapshot, responses["transcription_id"])
        refetched = pl.col("final") & pl.col("status").is_in(list(spec.refetch))
        prior = known.select(
            "transcription_id",
            pl.col("status").alias("prior"),
            (pl.col("final") & ~refetched).alias("was_final"),
            refetched.alias("refetched"),
        )
    joined = responses.join(prior, on="transcription_id", how="left")
    was_final = pl.col("was_final").fill_null(False)
    counted = joined.filter(~was_final)
    polled = counted.select(
        "transcription_id",
        "status",
        final_expr().alias("final"),
        # a refetched id's rows are replaced even when its status did not change
        (pl.col("status").ne_missing(pl.col("prior")) | pl.col("refetched").fill_null(False)).alias("written"),
    ).cast(dict(POLLED_SCHEMA))  # type: ignore[arg-type]
    errors = counted.filter(pl.col("status") == "error")["error_code"].fill_null("unknown").value_counts()
    tables = build_tables(decoded.only(polled.filter("written")["transcription_id"]), text=text)
    rows = stage_tables(Store(out), spec.batch_id, tables)
    talk = tables["speaker_metrics"].group_by("speaker").agg(pl.col("talk_time_ms").sum()).cast(dict(TALK_SCHEMA))  # type: ignore[arg-type]
    files = StagedFiles(spec.batch_id, spec.fetched_date, rows)
    return StagedBatch(
        spec.number,
        files,
        polled,
        talk,
        already_final=joined.filter(was_final).height,
        error_codes=dict(errors.iter_rows()),
        name=spec.name,
    )
