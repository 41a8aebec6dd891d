"""The bodies of the two flows, free of Prefect: `submit` (how a batch task starts) is injected.

The flows in `flows/pipeline.py` pass Prefect tasks; `benchmarks/direct.py` and the crash tests
pass a thread pool, so the same code is measured and killed with and without
the orchestrator.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from flows.api.budget import open_budget
from flows.api.service import close_fetchers, fetcher_for
from flows.batch import BatchSpec, StagedBatch, stage_outcomes
from flows.cleanup import input_cleanup
from flows.errors import ConfigurationError, TransientStorageError
from flows.inflight import Future, Repolls, run_batches
from flows.inputs import plan_slices, read_ids, segments_bytes
from flows.outcomes import unique_ids
from flows.progress import Watcher, Watchers
from flows.secrets import check_credentials, export_storage_credentials
from flows.settings import IngestSettings, RunSettings
from flows.storage.commit import new_batch_id
from flows.storage.compact import compact_written
from flows.storage.dataset import Dataset
from flows.storage.ledger import NEVER_SENT, plan_run
from flows.summary import RunSummary
from flows.textpolicy import open_text_policy

Submit = Callable[[BatchSpec], Future]
COMMIT_ATTEMPTS = 3
COMMIT_RETRY_WAIT_S = 2.0


class Run:
    """One run over one output: the writer's lease, the dataset, the ledger snapshot its batches
    read, its batches. `close()` (in a `finally`) releases the lease."""

    def __init__(
        self, out: str, log: logging.Logger | logging.LoggerAdapter[Any], watch: Watcher | None = None
    ) -> None:
        self.log = log
        self.watch = watch or Watchers()
        self.units: dict[int, int] = {}  # batch number -> progress units it completes
        self.run_id = new_batch_id()
        self.dataset = Dataset(out)
        stale = self.dataset.acquire_lease(run_name(log, self.run_id))  # LeaseHeldError: another writer is live
        if stale is not None:
            log.warning("took over the lease of a writer that is gone or expired (%s)", stale.describe())
        try:
            recovered = self.dataset.recover()
            if recovered:
                log.warning("recovered %d batch(es) committed by an interrupted run", recovered)
            self.snapshot = self.dataset.snapshot()
        except BaseException:
            self.dataset.release_lease()
            raise
        self.batch_ids: set[str] = set()
        self.count = 0

    def spec(self, name: str = "", units: int = 0, **work: Any) -> BatchSpec:
        """The next batch's spec (numbered in submission order, which is commit order), named for its task run."""
        self.count += 1
        spec = BatchSpec.new(self.count, self.snapshot, name=name or f"batch-{self.count}", **work)
        self.batch_ids.add(spec.batch_id)
        self.units[spec.number] = units
        return spec

    def commit(self, staged: StagedBatch, summary: RunSummary) -> None:
        """Commit one staged batch (the single writer; a storage error is retried) and account for it."""
        retrying = Retrying(
            retry=retry_if_exception_type(TransientStorageError),
            stop=stop_after_attempt(COMMIT_ATTEMPTS),
            wait=wait_fixed(COMMIT_RETRY_WAIT_S),
            reraise=True,
        )
        polled = retrying(self._commit_once, staged)
        summary.add(
            polled,
            staged.files.rows,
            staged.talk,
            requests=staged.requests,
            retries=staged.retries,
            error_codes=staged.error_codes,
        )
        summary.skipped += staged.skipped
        summary.already_final += staged.already_final
        # ids handed back are counted by the later batch that polls them (a re-poll batch counts none)
        summary.units_done += max(0, self.units.pop(staged.number, 0) - len(staged.deferred))
        self.log.info("%s", batch_line(staged, polled.height))
        self.watch.advanced(summary)

    def _commit_once(self, staged: StagedBatch) -> pl.DataFrame:
        self.dataset.renew_lease()  # a writer that lost its lease commits nothing more
        return self.dataset.commit(staged.files, staged.polled, run_batches=frozenset(self.batch_ids))

    def close(self, *, tidy: bool = True) -> None:
        """Keep the output tidy (compact the partitions this run wrote once they hold many files, fold
        the ledger's log once it has grown), then release the lease (also after a failure)."""
        try:
            if tidy:
                compacted = compact_written(self.dataset)
                if compacted:
                    self.log.info("compacted %d partition(s) this run wrote to", compacted)
                self.dataset.fold_if_due()
        finally:
            self.dataset.release_lease()


def batch_line(staged: StagedBatch, ids: int) -> str:
    """One readable line per committed batch: ids, requests, retries by cause, rows, seconds."""
    retries = ", ".join(f"{cause} {n}" for cause, n in sorted(staged.retries.items())) or "none"
    rows = sum(staged.files.rows.values())
    name = staged.name or f"batch {staged.number}"
    deferred = f", {len(staged.deferred)} ids left for a later batch (memory budget)" if staged.deferred else ""
    return (
        f"{name} committed: {ids} ids, {staged.requests} requests, retries: {retries}, "
        f"{rows} rows written, {staged.seconds:.1f} s{deferred}"
    )


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


def poll(settings: RunSettings, submit: Submit, log: Any, watch: Watcher | None = None) -> RunSummary:
    """The body of `talktime run`: poll every id not final yet, in batches in flight."""
    ids = unique_ids(read_ids(settings.ids_file))
    asyncio.run(export_storage_credentials(settings.out, settings.storage_secret_prefix))
    asyncio.run(check_credentials(settings))
    if settings.requests_limit:
        asyncio.run(open_budget(settings.requests_limit))  # a missing limit stops the run before any request
    run = Run(settings.out, log, watch)
    summary = RunSummary()
    try:
        open_text_policy(run.dataset.store, settings)  # recorded by the output's first run, else compared
        now = datetime.now(UTC)
        expire_after = timedelta(seconds=settings.expire_after_s)
        plan = plan_run(run.dataset.plan_rows(ids), ids, now, expire_after, settings.refetch)
        run.dataset.fetch_rows(plan.refetched)
        summary.already_final = plan.already_final
        summary.total_units = len(plan.expired) + len(plan.to_fetch)
        run.watch.started("ids", summary.total_units)
        if plan.to_fetch:  # wrong credentials: one line before any batch starts, not one per batch
            # A random id, not one of the manifest's: polling a real id would count as its poll (an API
            # that tracks polls, like the emulator's `ongoing_polls`, would move it on).
            fetcher_for(settings).check_credentials(str(uuid.uuid4()))
        if plan.expired:
            run.commit(stage_outcomes(settings.out, run.spec("expire", len(plan.expired)), plan.expired), summary)
        count = -(-len(plan.to_fetch) // settings.batch_size)
        specs = (
            run.spec(f"fetch-{n}-of-{count}", len(chunk), ids=chunk, refetch=settings.refetch)
            for n, chunk in enumerate(_chunks(plan.to_fetch, settings.batch_size), start=1)
        )
        repolls = Repolls(settings.max_wait_s)
        route = RouteCheck(settings, len(plan.to_fetch))

        def commit(staged: StagedBatch) -> None:
            route.check(staged)
            run.commit(staged, summary)
            summary.waiting = len(repolls)

        summary.stopped_early = run_batches(
            specs,
            submit,
            commit,
            in_flight=settings.in_flight,
            repolls=repolls,
            repoll_spec=lambda due: run.spec(f"repoll-{run.count + 1}", ids=tuple(due), repoll=True),
            deferred_spec=lambda rest: run.spec(
                f"deferred-{run.count + 1}", len(rest), ids=tuple(rest), refetch=settings.refetch
            ),
            batch_size=settings.batch_size,
            sleep=lambda seconds: wait_watched(seconds, summary, run.watch),
        )
        summary.failure = failure(summary, settings.max_error_share)
    finally:
        close_fetchers()
        run.close(tidy=sys.exc_info()[0] is None)
        summary.finish()
        run.watch.finished(summary)
    return summary


def wait_watched(
    seconds: float,
    summary: RunSummary,
    watch: Watcher,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Sleep until the next re-poll of ongoing ids is due, telling the watchers how long, once a second."""
    deadline = clock() + seconds
    while (left := deadline - clock()) > 0:
        summary.next_poll_s = left
        watch.advanced(summary)
        sleep(min(1.0, left))
    summary.next_poll_s = None


ROUTE_CHECK_MIN_IDS = 5


class RouteCheck:
    """Stop before anything is recorded when every id of the first batch answers 404: the URL is wrong.

    A wrong path answers 404 for every id, which would make each a final `not_found`, and the
    right URL would then skip them all as already final. Only a run with at least
    ROUTE_CHECK_MIN_IDS ids to poll is checked: when a few ids are left (a run resumed after the
    others were recorded), their all being unknown is as likely as a wrong URL, and cheap to
    `--refetch`.
    """

    def __init__(self, settings: RunSettings, to_fetch: int) -> None:
        self._pending = settings.check_route and to_fetch >= ROUTE_CHECK_MIN_IDS

    def check(self, staged: StagedBatch) -> None:
        if not self._pending or not staged.name.startswith("fetch-"):
            return
        self._pending = False
        statuses = staged.polled["status"]
        if statuses.len() and staged.requests and (statuses == "not_found").all():
            raise ConfigurationError(
                f"every id of the first batch ({statuses.len()}) answered 404, so nothing was recorded: "
                "check --api-url (the base URL that /transcribe-async/{id} is appended to); "
                "if these ids really are unknown, run again with --no-route-check"
            )


def failure(summary: RunSummary, max_error_share: float) -> str | None:
    """Why the run counts as failed, else None: the API stayed down, or more than `max_error_share` of
    the ids ended in an `error` that stays pending (ids that are not UUIDs are final rows, not failures)."""
    if summary.stopped_early:
        return f"stopped early: {summary.stopped_early}"
    errors, ids = summary.retryable_errors, summary.ids
    if ids and errors / ids > max_error_share:
        codes = ", ".join(f"{code} {n}" for code, n in summary.error_codes.most_common(3) if code != NEVER_SENT)
        share = f"{errors / ids:.0%}, more than {max_error_share:.0%}"
        causes = "; ".join(cause for cause, _ in summary.transport_causes.most_common(2))
        return (
            f"{errors} of {ids} ids ended in error ({share}; they stay pending)"
            + (f": {codes}" if codes else "")
            + (f"; network: {causes}" if causes else "")
        )
    return None


def ingest_failure(summary: RunSummary) -> str | None:
    """Why an ingest counts as failed, else None: it skipped every record it read, so it wrote nothing."""
    if summary.skipped and not summary.ids and not summary.already_final:
        return (
            f"every one of the {len(summary.skipped)} input records was skipped (unreadable, or not a result "
            "ingest can use: see the log for file:line and why), so nothing was written"
        )
    return None


def ingest(settings: IngestSettings, submit: Submit, log: Any, watch: Watcher | None = None) -> RunSummary:
    """The body of `talktime ingest`: read the inputs slice by slice, in batches in flight."""
    slices = list(plan_slices(settings.inputs, settings.batch_size, settings.batch_bytes))  # nothing decoded
    asyncio.run(export_storage_credentials(settings.out, settings.storage_secret_prefix))
    cleanup = input_cleanup(settings.delete_after_commit, slices, log)
    run = Run(settings.out, log, watch)
    summary = RunSummary(unit="bytes")
    try:
        open_text_policy(run.dataset.store, settings)  # recorded by the output's first run, else compared
        summary.total_units = sum(segments_bytes(chunk) for chunk in slices)
        run.watch.started("bytes", summary.total_units)
        specs = (
            run.spec(f"read-{n}-of-{len(slices)}", segments_bytes(chunk), segments=chunk)
            for n, chunk in enumerate(slices, start=1)
        )

        def commit(staged: StagedBatch) -> None:
            run.commit(staged, summary)
            cleanup.committed(staged)  # --delete-after-commit: the files whose every record is committed

        run_batches(specs, submit, commit, in_flight=settings.in_flight)
        summary.failure = ingest_failure(summary)
    finally:
        run.close(tidy=sys.exc_info()[0] is None)
        summary.finish()
        run.watch.finished(summary)
    if summary.skipped:
        shown = "; ".join(summary.skipped[:20])
        log.warning("skipped %d unreadable input records: %s", len(summary.skipped), shown)
    return summary
