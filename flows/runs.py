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

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

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
from flows.storage.ledger import plan_run
from flows.summary import RunSummary

Submit = Callable[[BatchSpec], Future]
COMMIT_ATTEMPTS = 3
COMMIT_RETRY_WAIT_S = 2.0


class Run:
    """One run over one output: the dataset, the ledger snapshot its batches read, its batches."""

    def __init__(self, out: str, log: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self.log = log
        self.dataset = Dataset(out)
        recovered = self.dataset.recover()
        if recovered:
            log.warning("recovered %d batch(es) committed by an interrupted run", recovered)
        self.run_id = new_batch_id()
        self.snapshot = self.dataset.write_snapshot(self.run_id)
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
            retry=retry_if_exception_type(StorageError),
            stop=stop_after_attempt(COMMIT_ATTEMPTS),
            wait=wait_fixed(COMMIT_RETRY_WAIT_S),
            reraise=True,
        )
        polled = retrying(self.dataset.commit, staged.files, staged.polled, run_batches=frozenset(self.batch_ids))
        summary.add(polled, staged.files.rows, staged.talk)
        summary.skipped += staged.skipped
        summary.already_final += staged.already_final
        rows = sum(staged.files.rows.values())
        self.log.info(
            "batch %d committed: %d ids, %d requests, %d rows", staged.number, polled.height, staged.requests, rows
        )

    def close(self) -> None:
        self.dataset.drop_snapshot(self.run_id)


def _chunks(values: list[str], size: int) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(values), size):
        yield tuple(values[start : start + size])


def poll(settings: RunSettings, submit: Submit, log: Any) -> RunSummary:
    """The body of `talktime run`: poll every id not final yet, in batches in flight."""
    ids = unique_ids(read_ids(settings.ids_file))
    asyncio.run(export_storage_credentials(settings.out, settings.storage_secret_prefix))
    asyncio.run(check_credentials(settings))
    run = Run(settings.out, log)
    plan = plan_run(run.dataset.ledger, ids, datetime.now(UTC), timedelta(seconds=settings.expire_after_s))
    summary = RunSummary(already_final=plan.already_final)
    try:
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
