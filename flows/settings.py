"""Every setting of a run, typed, with its default written once.

`RunSettings` and `IngestSettings` are the flows' only parameter (a form in Prefect's UI), built
by the CLI from its arguments and by deployments from `prefect.yaml`. They hold no secret: the
API key, OAuth private key and storage keys are named here (Secret blocks, files, environment
variables) and read at the edge by `flows.secrets`.
"""

from __future__ import annotations

from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_API_VERSION = "2024-04-22"
DEFAULT_RUN_BATCH_SIZE = 200
# A batch is one task and one commit; its metrics are computed 1,000 transcriptions at a time
# (flows.transform.TRANSFORM_CHUNK), so memory does not grow with the batch. 500 records per
# batch, 3 in flight: both cores stay busy through each task's Prefect API calls, the task runs
# are few (each costs Prefect ~20 ms), and the peak stays near 800 MiB (README, Benchmarks).
DEFAULT_INGEST_BATCH_SIZE = 500
DEFAULT_INGEST_IN_FLIGHT = 3
DEFAULT_MEMORY_BUDGET_MB = 1024  # fits a small worker
# Peak memory of decoding and transforming a batch, per byte of its input: a 300 MiB record peaked at
# 5.9 GiB (issue 19). Batches and records are sized so that the batches in flight fit the budget.
DECODE_AMPLIFICATION = 20
DEFAULT_CONCURRENCY = 8
DEFAULT_IN_FLIGHT = 3
DEFAULT_MAX_WAIT_S = 60.0
DEFAULT_EXPIRE_AFTER_S = 24 * 3600.0
DEFAULT_DOWN_AFTER_S = 300.0
DEFAULT_MAX_ATTEMPTS = 6
MIB = 1024 * 1024
# Limits of one API response: its body after decompression, and its time in all (connect,
# headers, body). A 1 MB gzip body can decompress to 1 GiB; a body can drip for ever.
DEFAULT_MAX_RESPONSE_BYTES = 64 * MIB
DEFAULT_REQUEST_DEADLINE_S = 120.0
DEFAULT_MAX_ERROR_SHARE = 0.1
DEFAULT_API_KEY_SECRET = "talktime-api-key"
DEFAULT_PRIVATE_KEY_SECRET = "talktime-oauth-private-key"
DEFAULT_STORAGE_SECRET_PREFIX = "talktime-s3"
DEFAULT_TEXT_KEY_SECRET = "talktime-text-hmac-key"


RefetchStatus = Literal["succeeded", "failed", "not_found", "expired", "forgotten"]

# Query parameters that carry credentials (pyarrow's S3 URIs accept access_key and secret_key).
CREDENTIAL_PARAMETERS = frozenset(
    {"access_key", "secret_key", "session_token", "password", "api_key", "apikey", "key", "token", "secret",
     "x-amz-credential", "x-amz-security-token", "x-amz-signature"}
)  # fmt: skip


def refuse_credentials(url: str) -> str:
    """The URL unchanged, or ValueError (quoting nothing) if it carries credentials.

    A URL is printed, logged, and stored with a flow run's parameters and in its artifact, so a
    key in it would leak everywhere: keys come from the environment or Secret blocks instead.
    """
    if "://" not in url:
        return url  # a local path
    parts = urlsplit(url)
    if "@" in parts.netloc or any(name.lower() in CREDENTIAL_PARAMETERS for name, _ in parse_qsl(parts.query)):
        raise ValueError(
            "credentials in a URL are refused (URLs are logged and stored with the run); "
            "use the environment or a Prefect Secret block"
        )
    return url


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    out: str = Field(description="output location: a directory or s3://bucket/prefix")
    in_flight: int = Field(
        DEFAULT_IN_FLIGHT, ge=1, description="batches fetched or read and transformed ahead of the commit"
    )
    memory_budget_mb: int = Field(
        DEFAULT_MEMORY_BUDGET_MB,
        ge=64,
        description="memory the batches in flight may use (MiB): a batch is cut by bytes as well as by count "
        "(ingest: the records it reads; run: the response bodies it receives, counted as they arrive), and a "
        "record or response too large for it becomes an `error` row (record_too_large, response_too_large) "
        "instead of being decoded",
    )
    storage_secret_prefix: str = Field(
        DEFAULT_STORAGE_SECRET_PREFIX, description="Secret blocks `{prefix}-aws-*` hold S3 credentials"
    )
    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="where the batch tasks run: threads of the flow's process, or Dask workers "
        "(which need a Prefect server: PREFECT_API_URL)",
    )
    dask_address: str | None = Field(
        None,
        description="scheduler of an existing Dask cluster, tcp://HOST:PORT (implies task_runner dask); "
        "without it, task_runner dask starts a LocalCluster of one worker process per core",
    )
    text_policy: Literal["keep", "drop", "hash"] = Field(
        "keep",
        description="what the item tables keep of transcript text (patient data): keep it, drop it (null), or "
        "hash it (HMAC-SHA256 keyed with $TALKTIME_TEXT_HMAC_KEY or the Secret block text_key_secret, "
        "'talktime-text-hmac-key' by default); drop is recommended; recorded by the output's first run, and a "
        "later run asking for another is refused. Metrics are the same either way",
    )
    text_key_secret: str = Field(
        DEFAULT_TEXT_KEY_SECRET, description="Secret block holding the key of text_policy hash"
    )

    @property
    def batch_bytes(self) -> int:
        """The most input bytes a batch (and so a record or a response) may hold: the batches in flight, and
        the one being committed, each decoded at DECODE_AMPLIFICATION times their size, fit the budget."""
        return self.memory_budget_mb * 2**20 // (DECODE_AMPLIFICATION * (self.in_flight + 1))

    @model_validator(mode="before")
    @classmethod
    def _address_implies_dask(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dask_address") and "task_runner" not in data:
            return {**data, "task_runner": "dask"}
        return data

    @model_validator(mode="after")
    def _address_needs_dask(self) -> Self:
        if self.dask_address and self.task_runner != "dask":
            raise ValueError("dask_address is for task_runner dask")
        return self

    @field_validator("out", "api_url", "dask_address", check_fields=False)
    @classmethod
    def _no_credentials(cls, url: str | None) -> str | None:
        return None if url is None else refuse_credentials(url)


class RunSettings(_Settings):
    """Poll the API for the ids of a manifest (`talktime run`, the hourly deployment)."""

    api_url: str = Field(description="base URL; /transcribe-async/{id} is appended")
    ids_file: str = Field(description="one id per line, or CSV/Parquet with an `id` column")
    api_version: str = Field(DEFAULT_API_VERSION, description="X-Nabla-Api-Version to send")
    batch_size: int = Field(DEFAULT_RUN_BATCH_SIZE, ge=1, description="ids per batch (one task, one commit)")
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, description="requests in flight at most")
    rate_limit: float | None = Field(None, gt=0, description="requests per second at most")
    max_wait_s: float = Field(DEFAULT_MAX_WAIT_S, ge=0, description="seconds to re-poll an id still ongoing")
    expire_after_s: float = Field(
        DEFAULT_EXPIRE_AFTER_S, ge=0, description="mark ids still pending this long after first seen as `expired`"
    )
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, description="attempts per request at most")
    down_after_s: float = Field(
        DEFAULT_DOWN_AFTER_S, gt=0, description="stop the run early when every request has failed this long"
    )
    max_response_mb: float = Field(
        DEFAULT_MAX_RESPONSE_BYTES / MIB,
        gt=0,
        allow_inf_nan=False,
        description="largest response body read, in MiB after decompression; larger is a `response_too_large` row "
        "(the cap is the smaller of this and a batch's share of memory_budget_mb)",
    )
    request_deadline_s: float = Field(
        DEFAULT_REQUEST_DEADLINE_S,
        gt=0,
        allow_inf_nan=False,
        description="longest one request may take in all, body included; then it is retried",
    )
    api_key_secret: str = Field(DEFAULT_API_KEY_SECRET, description="Secret block holding the API key")
    oauth_client_id: str | None = Field(
        None, description="OAuth client id (dialect B); switches to OAuth client credentials"
    )
    private_key_file: str | None = Field(None, description="PEM file of the OAuth client's RS256 private key")
    private_key_secret: str = Field(DEFAULT_PRIVATE_KEY_SECRET, description="Secret block holding that key")
    requests_limit: str | None = Field(
        None,
        description="Prefect global concurrency limit with slot decay shared by every run against this API "
        "(`prefect gcl create NAME --limit N --slot-decay-per-second R`): each request takes a slot; "
        "a limit that does not exist stops the run (needs a Prefect server; see README)",
    )
    max_error_share: float = Field(
        DEFAULT_MAX_ERROR_SHARE,
        ge=0,
        le=1,
        description="the run fails (exit 1) when more than this share (0-1) of the ids it polled end in `error`",
    )
    refetch: tuple[RefetchStatus, ...] = Field(
        (),
        description="poll again the ids whose recorded outcome is one of these final statuses (succeeded, failed, "
        "not_found, expired, forgotten), e.g. not_found after a run with a wrong API URL; forgotten ids (talktime "
        "forget) are polled again only when named",
    )
    check_route: bool = Field(
        True, description="stop (exit 2) before recording anything when every id of the first batch answers 404"
    )


class IngestSettings(_Settings):
    """Read saved API responses or webhook events (`talktime ingest`): no network."""

    inputs: list[str] = Field(min_length=1, description=".json/.ndjson files or folders of them")
    batch_size: int = Field(DEFAULT_INGEST_BATCH_SIZE, ge=1, description="records per batch (one task, one commit)")
    in_flight: int = Field(
        DEFAULT_INGEST_IN_FLIGHT, ge=1, description="batches read and transformed ahead of the commit"
    )
    delete_after_commit: bool = Field(
        False,
        description="delete each input file once every record of it is committed (crash-safe; a file with an "
        "unreadable record, or that changed since it was read, is kept)",
    )
