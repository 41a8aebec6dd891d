"""The Prefect flows: poll the API (`run_flow`) or read saved responses (`ingest_flow`).

Each flow reads like a table of contents: recover the output, plan from the ledger, then per
batch fetch -> transform -> write. Tasks are coarse (one per batch, never per transcription),
and only the write task retries, only on storage errors.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.api.auth import Auth
from flows.api.client import DEFAULT_DOWN_AFTER_S, ClientOptions, TranscriptionClient, make_http_client
from flows.api.retry import DEFAULT_MAX_ATTEMPTS, RetryPolicy
from flows.errors import ApiUnavailableError, StorageError
from flows.ingest import outcomes_from_files
from flows.inputs import read_ids
from flows.outcomes import Outcome, unique_ids
from flows.secrets import export_storage_credentials, resolve_auth
from flows.steps import commit_outcomes, recover_and_load
from flows.storage.ledger import changed, plan_run
from flows.transform import RunSummary, batched, transform_outcomes

DEFAULT_BATCH_SIZE = 200
SUMMARY_ARTIFACT = "talktime-run-summary"


def _storage_is_transient(task_: object, task_run: object, state: object) -> bool:
    """Retry writes only for storage errors (a full disk, a flaky store), never for bugs."""
    try:
        state.result()  # type: ignore[attr-defined]
    except StorageError:
        return True
    except Exception:
        return False
    return False


@task(name="recover-output", cache_policy=NO_CACHE)
def recover_output(out: str) -> pl.DataFrame:
    """Finish or drop what a crashed run left, then read the ledger."""
    ledger, finished = recover_and_load(out)
    if finished:
        get_run_logger().warning("recovered %d batch(es) committed by an interrupted run", finished)
    return ledger


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
def write_batch(
    out: str, frames: dict[str, pl.DataFrame], polled: list[Outcome], written: list[Outcome], ledger: pl.DataFrame
) -> pl.DataFrame:
    """Commit one batch's rows, the rows they supersede, and the ledger; returns the new ledger."""
    return commit_outcomes(out, frames, polled, written, ledger)


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
    expire_after_s: float = 24 * 3600.0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    down_after_s: float = DEFAULT_DOWN_AFTER_S,
    api_key_secret: str = "talktime-api-key",
    oauth_client_id: str | None = None,
    private_key_file: str | None = None,
    private_key_secret: str = "talktime-oauth-private-key",
    storage_secret_prefix: str = "talktime-s3",
) -> RunSummary:
    """Poll the API for the ids in `ids_file` that are not final yet and update the datasets in `out`.

    Secrets are never parameters (Prefect stores parameters): the API key comes from the Secret
    block `api_key_secret` or $TALKTIME_API_KEY; with `oauth_client_id`, the private key comes
    from `private_key_file`, the Secret block `private_key_secret` or the environment. For an
    s3:// output, AWS credentials come from the environment or `{storage_secret_prefix}-aws-*` blocks.
    """
    ids = unique_ids(read_ids(ids_file))
    await export_storage_credentials(out, storage_secret_prefix)
    auth: Auth = await resolve_auth(
        api_url,
        api_key_secret,
        oauth_client_id=oauth_client_id,
        private_key_file=private_key_file,
        private_key_secret=private_key_secret,
    )
    ledger = recover_output(out)
    plan = plan_run(ledger, ids, datetime.now(UTC), timedelta(seconds=expire_after_s))
    summary = RunSummary(already_final=plan.already_final)
    retry = RetryPolicy(max_attempts=max_attempts)
    options = ClientOptions(api_url, api_version, concurrency, rate_limit, max_wait_s, down_after_s, retry)
    async with make_http_client(concurrency=concurrency) as http:
        client = TranscriptionClient(http, options, auth)
        for n, batch in enumerate(batched(plan.to_fetch, batch_size) if plan.to_fetch else [[]]):
            fetched, down = await fetch_batch(client, batch)
            polled = fetched + (plan.expired if n == 0 else [])
            written = changed(ledger, polled)
            frames = transform_batch(written)
            ledger = write_batch(out, frames, polled, written, ledger)
            summary.add(polled, frames)
            if down is not None:
                summary.stopped_early = str(down)
                break
    await acreate_markdown_artifact(markdown=_summary_markdown(summary, out), key=SUMMARY_ARTIFACT)
    return summary


@flow(name="talktime-ingest", log_prints=False)
async def ingest_flow(
    inputs: list[str], out: str, batch_size: int = DEFAULT_BATCH_SIZE, storage_secret_prefix: str = "talktime-s3"
) -> RunSummary:
    """Read saved API responses or webhook events (no network) and update the datasets in `out`."""
    await export_storage_credentials(out, storage_secret_prefix)
    outcomes, skipped = outcomes_from_files(inputs)
    ledger = recover_output(out)
    final = set(ledger.filter(pl.col("final"))["transcription_id"])
    summary = RunSummary(already_final=sum(o.transcription_id in final for o in outcomes), skipped=skipped)
    for batch in batched([o for o in outcomes if o.transcription_id not in final], batch_size):
        written = changed(ledger, batch)
        frames = transform_batch(written)
        ledger = write_batch(out, frames, batch, written, ledger)
        summary.add(batch, frames)
    if skipped:
        get_run_logger().warning("skipped %d unreadable input records: %s", len(skipped), "; ".join(skipped[:20]))
    await acreate_markdown_artifact(markdown=_summary_markdown(summary, out), key=SUMMARY_ARTIFACT)
    return summary
