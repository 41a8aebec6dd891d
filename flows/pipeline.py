"""The Prefect flows: poll the API (`run_flow`) or read saved responses (`ingest_flow`).

Each flow reads like a table of contents: fetch a batch -> transform it -> write it.
Tasks are coarse (one per batch, never per transcription) and only I/O tasks retry.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.auth import Auth
from flows.batches import RunSummary, batched, transform_outcomes
from flows.client import ClientOptions, TranscriptionClient, make_http_client
from flows.credentials import resolve_auth
from flows.errors import ApiUnavailableError, StorageError
from flows.ingest import outcomes_from_files
from flows.outcomes import Outcome, unique_ids
from flows.sources import read_ids
from flows.storage import write_batch

DEFAULT_BATCH_SIZE = 200
SUMMARY_ARTIFACT = "talktime-run-summary"


def _storage_is_transient(task_: object, task_run: object, state: object) -> bool:
    """Retry writes only for storage errors (a full disk or a flaky mount), never for bugs."""
    try:
        state.result()  # type: ignore[attr-defined]
    except StorageError:
        return True
    except Exception:
        return False
    return False


@task(name="fetch-batch", cache_policy=NO_CACHE)
async def fetch_batch(client: TranscriptionClient, ids: list[str]) -> tuple[list[Outcome], ApiUnavailableError | None]:
    """Fetch one batch of ids (the client retries transient errors per request)."""
    return await client.fetch_many(ids)


@task(name="transform-batch", cache_policy=NO_CACHE)
def transform_batch(outcomes: list[Outcome]) -> dict[str, pl.DataFrame]:
    """Outcomes -> the four output tables."""
    return transform_outcomes(outcomes)


@task(
    name="write-batch",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_storage_is_transient,
)
def write_batch_task(frames: dict[str, pl.DataFrame], out: str, batch_id: str) -> dict[str, int]:
    """Write one batch's tables."""
    return write_batch(frames, Path(out), batch_id)


def _summary_markdown(summary: RunSummary, out: str) -> str:
    get_run_logger().info("talktime summary: %s", summary.as_dict())
    lines = [f"- **{status}**: {n}" for status, n in sorted(summary.statuses.items())]
    stopped = f"\n\nStopped early: {summary.stopped_early}" if summary.stopped_early else ""
    return f"# talktime run\n\nOutput: `{out}`\n\n" + "\n".join(lines) + stopped


@flow(name="talktime-run", log_prints=False)
async def run_flow(
    api_url: str,
    ids_file: str,
    out: str,
    api_version: str = "2024-04-22",
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = 8,
    rate_limit: float | None = None,
    max_wait_s: float = 60.0,
    api_key_secret: str = "talktime-api-key",
    oauth_client_id: str | None = None,
    private_key_file: str | None = None,
    private_key_secret: str = "talktime-oauth-private-key",
) -> RunSummary:
    """Poll the API for every id in `ids_file` and write the four tables under `out`.

    Secrets are never parameters (Prefect stores parameters): the API key comes from the Secret
    block `api_key_secret` or $TALKTIME_API_KEY; with `oauth_client_id`, the private key comes
    from `private_key_file`, the Secret block `private_key_secret` or the environment.
    """
    ids = read_ids(ids_file)
    auth: Auth = await resolve_auth(
        api_url,
        api_key_secret,
        oauth_client_id=oauth_client_id,
        private_key_file=private_key_file,
        private_key_secret=private_key_secret,
    )
    options = ClientOptions(
        api_url=api_url,
        api_version=api_version,
        concurrency=concurrency,
        rate_limit_per_s=rate_limit,
        max_wait_s=max_wait_s,
    )
    summary = RunSummary()
    run_id = uuid.uuid4().hex[:12]
    async with make_http_client(concurrency=concurrency) as http:
        client = TranscriptionClient(http, options, auth)
        for n, batch in enumerate(batched(unique_ids(ids), batch_size)):
            outcomes, down = await fetch_batch(client, list(batch))
            frames = transform_batch(outcomes)
            summary.add(frames, write_batch_task(frames, out, f"{run_id}-{n:05d}"))
            if down is not None:
                summary.stopped_early = str(down)
                break
    await acreate_markdown_artifact(markdown=_summary_markdown(summary, out), key=SUMMARY_ARTIFACT)
    return summary


@flow(name="talktime-ingest", log_prints=False)
def ingest_flow(inputs: list[str], out: str, batch_size: int = DEFAULT_BATCH_SIZE) -> RunSummary:
    """Read saved API responses or webhook events (no network) and write the four tables."""
    outcomes, skipped = outcomes_from_files(inputs)
    summary = RunSummary()
    run_id = uuid.uuid4().hex[:12]
    for n, batch in enumerate(batched(outcomes, batch_size)):
        frames = transform_batch(list(batch))
        summary.add(frames, write_batch_task(frames, out, f"{run_id}-{n:05d}"))
    if skipped:
        get_run_logger().warning("skipped %d unreadable input records: %s", len(skipped), "; ".join(skipped[:20]))
    summary.skipped = skipped
    create_markdown_artifact(markdown=_summary_markdown(summary, out), key=SUMMARY_ARTIFACT)
    return summary
