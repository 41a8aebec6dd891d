"""The bodies of the two flows, free of Prefect: `submit` (how a batch task starts) is injected.

The flows in `flows/pipeline.py` pass Prefect tasks; `benchmarks/direct.py` and the crash tests
pass a thread pool, so the same code is measured and killed with and without
the orchestrator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from tenacity import Retrying, retry_if_exception_type, retry_if_not_exception_type, stop_after_attempt, wait_fixed

from flows.api.service import close_fetchers
from flows.batch import BatchSpec, StagedBatch, stage_outcomes
from flows.errors import StorageError
from flows.inflight import Future, Repolls, run_batches
from flows.inputs import plan_slices, read_ids
from flows.outcomes import unique_ids
from flows.secrets import check_credentials, export_storage_credentials
from flows.settings import IngestSettings, RunSettings
from flows.storage.commit import new_batch_id
from flows.storage.dataset import Dataset
from flows.storage.lease import LeaseError
from flows.storage.ledger import plan_run
from flows.summary import RunSummary

Submit = Callable[[BatchSpec], Future]
COMMIT_ATTEMPTS = 3
COMMIT_RETRY_WAIT_S = 2.0


class Run:
    """One run over one output: the writer's lease, the dataset, the ledger snapshot its batches
    read, its batches. `close()` (in a `finally`) releases the lease."""

    def __init__(self, out: str, log: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self.log = log
        self.run_id = new_batch_id()
        self.dataset = Dataset(out)
        stale = self.dataset.acquire_lease(run_name(log, self.run_id))  # LeaseHeldError: another writer is live
        if stale is not None:
            log.warning("took over the lease of a writer that is gone or expired (%s)", stale.describe())
        try:
            recovered = self.dataset.recover()
            if recovered:
                log.warning("recovered %d batch(es) committed by an interrupted run", recovered)
            self.snapshot = self.dataset.write_snapshot(self.run_id)
        except BaseException:
            self.dataset.release_lease()
            raise
        self.batch_ids: set[str] = set()
        self.count = 0

    def spec(self, **work: Any) -> BatchSpec:
        """The next batch's spec (numbered in submission order, which is commit order)."""
        self.count += 1
        spec = BatchSpec.new(self.count, self.snapshot, **work)
        self.batch_ids.add(spec.batch_id)
        return spec

    def commit(self, staged: StagedBatch, summary: RunSummary) -> None:
        """Commit one staged batch (the single writer; a storage error is retried) and account for it."""
        retrying = Retrying(
            retry=retry_if_exception_type(StorageError) & retry_if_not_exception_type(LeaseError),
            stop=stop_after_attempt(COMMIT_ATTEMPTS),
            wait=wait_fixed(COMMIT_RETRY_WAIT_S),
            reraise=True,
        )
        polled = retrying(self._commit_once, staged)
        summary.add(polled, staged.files.rows, staged.talk)
        summary.skipped += staged.skipped
        summary.already_final += staged.already_final
        rows = sum(staged.files.rows.values())
        self.log.info(
            "batch %d committed: %d ids, %d requests, %d rows", staged.number, polled.height, staged.requests, rows
        )

    def _commit_once(self, staged: StagedBatch) -> pl.DataFrame:
        self.dataset.renew_lease()  # a writer that lost its lease commits nothing more
        return self.dataset.commit(staged.files, staged.polled, run_batches=frozenset(self.batch_ids))

    def close(self) -> None:
        """Drop this run's ledger snapshot and release the lease (also after a failure)."""
        try:
            self.dataset.drop_snapshot(self.run_id)
        finally:
            self.dataset.release_lease()


def run_name(log: logging.Logger | logging.LoggerAdapter[Any], run_id: str) -> str:
    """The lease owner's run: the Prefect flow run's name when `log` is its logger, else the run id."""
    extra = getattr(log, "extra", None) or {}
    if not extra.get("flow_run_name"):
        return f"run {run_id}"
    name = f"{extra.get('flow_name', 'talktime')}/{extra['flow_run_name']}"
    return f"{name} of deployment {extra['deployment_name']}" if extra.get("deployment_name") else name


def _chunks(values: list[str], size: int) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(values), size):
        yield tuple(values[start : start + size])


def poll(settings: RunSettings, submit: Submit, log: Any) -> RunSummary:
    """The body of `talktime run`: poll every id not final yet, in batches in flight."""
    ids = unique_ids(read_ids(settings.ids_file))
    asyncio.run(export_storage_credentials(settings.out, settings.storage_secret_prefix))
    asyncio.run(check_credentials(settings))
    run = Run(settings.out, log)
    try:
        plan = plan_run(run.dataset.ledger, ids, datetime.now(UTC), timedelta(seconds=settings.expire_after_s))
        summary = RunSummary(already_final=plan.already_final)
        if plan.expired:
            run.commit(stage_outcomes(settings.out, run.spec(), plan.expired), summary)
        specs = (run.spec(ids=chunk) for chunk in _chunks(plan.to_fetch, settings.batch_size))
        summary.stopped_early = run_batches(
            specs,
            submit,
            lambda staged: run.commit(staged, summary),
            in_flight=settings.in_flight,
            repolls=Repolls(settings.max_wait_s),
            repoll_spec=lambda due: run.spec(ids=tuple(due), repoll=True),
            batch_size=settings.batch_size,
        )
    finally:
        close_fetchers()
        run.close()
    return summary


def ingest(settings: IngestSettings, submit: Submit, log: Any) -> RunSummary:
    """The body of `talktime ingest`: read the inputs slice by slice, in batches in flight."""
    asyncio.run(export_storage_credentials(settings.out, settings.storage_secret_prefix))
    run = Run(settings.out, log)
    summary = RunSummary()
    try:
        specs = (run.spec(segments=chunk) for chunk in plan_slices(settings.inputs, settings.batch_size))
        run_batches(specs, submit, lambda staged: run.commit(staged, summary), in_flight=settings.in_flight)
    finally:
        run.close()
    if summary.skipped:
        shown = "; ".join(summary.skipped[:20])
        log.warning("skipped %d unreadable input records: %s", len(summary.skipped), shown)
    return summary
