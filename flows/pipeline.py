"""The Prefect flows: poll the API (`run_flow`) or read saved responses (`ingest_flow`).

Each reads like a table of contents: open the output (recovering from a crash), plan from the
ledger, then batches in flight: one task per batch fetches or reads, transforms and stages its
files (`flows.batch`), and the flow commits the staged batches one at a time, in order
(`flows.inflight`). A commit is a few file moves, done by the flow itself rather than as a task:
a task run costs Prefect about 25 ms of CPU. Task arguments and results are small (settings, ids
or an input slice, a manifest), so Prefect's per-task cost stays per batch, never per
transcription or item.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.batch import BatchSpec, StagedBatch, fetch_batch, read_batch
from flows.errors import withholding_messages
from flows.runs import ingest, poll
from flows.settings import IngestSettings, RunSettings
from flows.summary import RunSummary, summary_markdown

SUMMARY_ARTIFACT = "talktime-run-summary"


@task(name="fetch-batch", task_run_name="fetch-{spec.number}", cache_policy=NO_CACHE)
def fetch_batch_task(settings: RunSettings, spec: BatchSpec) -> StagedBatch:
    """Poll a batch of ids, transform and stage what changed (flows.batch.fetch_batch)."""
    with withholding_messages():
        return fetch_batch(settings, spec)


@task(name="read-batch", task_run_name="read-{spec.number}", cache_policy=NO_CACHE)
def read_batch_task(settings: IngestSettings, spec: BatchSpec) -> StagedBatch:
    """Read a slice of the inputs, transform and stage what changed (flows.batch.read_batch)."""
    with withholding_messages():
        return read_batch(settings, spec)


@flow(name="talktime-run", log_prints=False)
def run_flow(settings: RunSettings) -> RunSummary:
    """Poll the API for the ids in `settings.ids_file` that are not final yet and update `settings.out`.

    Secrets are never parameters: see `flows.secrets` for where the API key, the OAuth private
    key and storage credentials come from.
    """
    with withholding_messages():
        summary = poll(settings, lambda spec: fetch_batch_task.submit(settings, spec), get_run_logger())
    _report(summary, settings.out)
    return summary


@flow(name="talktime-ingest", log_prints=False)
def ingest_flow(settings: IngestSettings) -> RunSummary:
    """Read saved API responses or webhook events (no network) and update `settings.out`."""
    with withholding_messages():
        summary = ingest(settings, lambda spec: read_batch_task.submit(settings, spec), get_run_logger())
    _report(summary, settings.out)
    return summary


def _report(summary: RunSummary, out: str) -> None:
    get_run_logger().info("talktime summary: %s", summary.as_dict())
    create_markdown_artifact(markdown=summary_markdown(summary, out), key=SUMMARY_ARTIFACT)
