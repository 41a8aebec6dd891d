"""The Prefect flows: poll the API (`run_flow`) or read saved responses (`ingest_flow`).

Each reads like a table of contents: open the output (recovering from a crash), plan from the
ledger, then batches in flight: one task per batch fetches or reads, transforms and stages its
files (`flows.batch`), and the flow commits the staged batches one at a time, in order
(`flows.inflight`). A commit is a few file moves, done by the flow itself rather than as a task:
a task run costs Prefect about 25 ms of CPU. Task arguments and results are small (settings, ids
or an input slice, a manifest), so Prefect's per-task cost stays per batch, never per
transcription or item, and the tasks can run in threads or on Dask workers (`flows.scaleout`).
At the end a run logs its summary as lines, leaves two artifacts (Markdown and a table, over this
run and the whole output) and fails (a Failed state, counts in its message) when it should.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.logging.handlers import APILogHandler
from prefect.logging.loggers import PrefectLogAdapter
from prefect.states import Failed

from flows.batch import BatchSpec, StagedBatch, fetch_batch, read_batch
from flows.errors import PipelineError, scrubbed, withholding
from flows.inflight import Future
from flows.prefect_calls import call_prefect, forget_unreachable, prefect_unreachable, stop_retrying_prefect
from flows.progress import ArtifactWatcher, Watchers, terminal_watchers
from flows.runs import ingest, poll
from flows.scaleout import batch_runner
from flows.secrets import STORAGE_KEY_PAIR, export_storage_credentials
from flows.settings import IngestSettings, RunSettings
from flows.storage.status import output_status, status_lines
from flows.summary import RunSummary, summary_markdown, summary_rows
from flows.untrusted import markdown_text, printable

SUMMARY_ARTIFACT = "talktime-run-summary"
TABLE_ARTIFACT = "talktime-run-table"
S = TypeVar("S", RunSettings, IngestSettings)


# Whether the line saying why a run was refused also goes to the console: the CLI prints that line
# itself, last, so it turns this off (`leave_refusals_to_the_caller`); the flow run's log has it anyway.
_refusals_on_console = True


def leave_refusals_to_the_caller() -> None:
    """Log a refused run's one line to the flow run's log only, not to the console (the caller prints it)."""
    global _refusals_on_console
    _refusals_on_console = False


def _refusal_logger() -> Any:
    """The run logger; without the console when the caller prints refusals itself."""
    log = get_run_logger()
    if _refusals_on_console:
        return log
    api_only = logging.getLogger("talktime.refusals")
    if not api_only.handlers:
        api_only.addHandler(APILogHandler())
        api_only.propagate = False  # the console handler is the root logger's
    return PrefectLogAdapter(api_only, extra=getattr(log, "extra", None))


@dataclass(frozen=True)
class Refused:
    """A batch task's end short of a staged batch, as its result: a configuration, credential or storage
    error (raised again in the flow, which fails the run with its one line), or a batch cut short
    because the run is stopping for such a reason. Prefect logs a traceback for any exception a task
    raises, and two lines for a Failed state it returns, in every batch in flight: this is said once."""

    error: PipelineError


def ending_quietly(fn: Callable[[S, BatchSpec], StagedBatch]) -> Callable[[S, BatchSpec], StagedBatch | Refused]:
    """A batch task's body whose expected errors are its result (`Refused`), not an exception."""

    @functools.wraps(fn)
    def call(settings: S, spec: BatchSpec) -> StagedBatch | Refused:
        try:
            return fn(settings, spec)
        except PipelineError as exc:  # withholding has cut its chain
            return Refused(exc)

    return call


class _Unrefused:
    """A batch task's future whose `.result()` raises a Refused batch's error (in the flow)."""

    def __init__(self, future: Future) -> None:
        self._future = future

    def result(self) -> StagedBatch:
        value: StagedBatch | Refused = self._future.result()
        if isinstance(value, Refused):
            raise value.error
        return value


@task(name="fetch-batch", task_run_name="{spec.name}", cache_policy=NO_CACHE)
@ending_quietly
@withholding
def fetch_batch_task(settings: RunSettings, spec: BatchSpec) -> StagedBatch:
    """Poll a batch of ids, transform and stage what changed (flows.batch.fetch_batch)."""
    storage_credentials(settings)
    return fetch_batch(settings, spec)


@task(name="read-batch", task_run_name="{spec.name}", cache_policy=NO_CACHE)
@ending_quietly
@withholding
def read_batch_task(settings: IngestSettings, spec: BatchSpec) -> StagedBatch:
    """Read a slice of the inputs, transform and stage what changed (flows.batch.read_batch)."""
    storage_credentials(settings)
    return read_batch(settings, spec)


def storage_credentials(settings: RunSettings | IngestSettings) -> None:
    """S3 keys from Secret blocks into this process's environment, once (a Dask worker stages to S3 itself)."""
    if settings.out.startswith("s3://") and not all(os.environ.get(v) for v in STORAGE_KEY_PAIR):
        asyncio.run(export_storage_credentials(settings.out, settings.storage_secret_prefix))


@flow(name="talktime-run", log_prints=False)
def run_flow(settings: RunSettings) -> RunSummary | State:
    """Poll the API for the ids in `settings.ids_file` that are not final yet and update `settings.out`.

    Secrets are never parameters: see `flows.secrets` for where the API key, the OAuth private
    key and storage credentials come from. The run fails when it stopped early or more than
    `settings.max_error_share` of its ids ended in `error` (the counts are in its message).
    """
    return _run("talktime run", settings, fetch_batch_task, poll)


@flow(name="talktime-ingest", log_prints=False)
def ingest_flow(settings: IngestSettings) -> RunSummary | State:
    """Read saved API responses or webhook events (no network) and update `settings.out`."""
    return _run("talktime ingest", settings, read_batch_task, ingest)


@withholding
def _run(
    label: str, settings: RunSettings | IngestSettings, batch_task: Any, body: Callable[..., RunSummary]
) -> RunSummary | State:
    """A flow's body (`poll` or `ingest`) with its batch tasks submitted where the settings say, watched
    by a progress artifact (and the CLI's bar); then its report, or one line and a Failed run."""
    global _finished
    _finished = None
    forget_unreachable()
    log = get_run_logger()
    watch = Watchers([ArtifactWatcher(label, log), *terminal_watchers()])
    try:
        with batch_runner(settings, batch_task, log) as submit:
            summary = body(settings, lambda spec: _Unrefused(submit(spec)), log, watch)
    except PipelineError as exc:
        return _refused(exc)
    return _report(summary, settings.out)


# The summary of the last flow run of this process that got to its report (its data committed): what the
# CLI prints when the flow run's end cannot be told to Prefect (`finished_summary`).
_finished: RunSummary | None = None


def finished_summary() -> RunSummary | None:
    """The summary of this process's last flow run that got to its report, or None."""
    return _finished


def _refused(exc: PipelineError) -> State:
    """A configuration, credential or storage error: one line in the log and a Failed run, no traceback."""
    _refusal_logger().error("talktime: error: %s", printable(str(exc)))
    return Failed(message=printable(str(exc)), data=scrubbed(exc))


def _report(summary: RunSummary, out: str) -> RunSummary | State:
    """The summary as readable log lines and two artifacts (Markdown, table); Failed if the run failed."""
    log = get_run_logger()
    try:
        summary.dataset = output_status(out)
    except PipelineError as exc:
        log.warning("the output's status could not be read: %s", exc)
    for line in summary.lines():
        log.info("this run: %s", line)
    for line in [] if summary.dataset is None else status_lines(summary.dataset):
        log.info("the output: %s", printable(line))
    global _finished
    _finished = summary  # for the caller, should Prefect's API be gone when the flow run ends
    markdown, rows = summary_markdown(summary, out), summary_rows(summary)
    description = f"talktime: {markdown_text(out)}"
    call_prefect("summary artifact", lambda: create_markdown_artifact(markdown=markdown, key=SUMMARY_ARTIFACT), log)
    call_prefect(
        "table artifact",
        lambda: create_table_artifact(table=rows, key=TABLE_ARTIFACT, description=description),
        log,
    )
    if prefect_unreachable():  # the data is committed: telling Prefect the end must not take minutes
        stop_retrying_prefect()
    if summary.failure:
        log.error("the run failed: %s", printable(summary.failure))
        return Failed(message=printable(summary.failure), data=summary)
    return summary
