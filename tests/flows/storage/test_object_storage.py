"""The datasets on a real S3-protocol server (moto's server mode) on loopback."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from flows.storage.store import Store
from tests.crash_driver import ingest
from tests.flows.storage.test_storage import assert_same, crash_then_rerun, kill_points, nothing_pending, snapshot

S3_KILL_POINTS = 3  # by default; under `slow`, every step


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ACCESS_KEY_ID="talktime-test", AWS_SECRET_ACCESS_KEY="talktime-test", AWS_DEFAULT_REGION="us-east-1"
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    Store(f"s3://talktime-test?endpoint_override={endpoint}&allow_bucket_creation=true").fs.create_dir("talktime-test")
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def s3_url(endpoint: str) -> str:
    return f"s3://talktime-test/{uuid.uuid4().hex[:8]}?endpoint_override={endpoint}&allow_bucket_creation=true"


def test_round_trip_on_s3_matches_local_disk(s3_endpoint: str, inputs: list[str], clean: tuple[dict, int]) -> None:
    url = s3_url(s3_endpoint)
    ingest(url, 4, inputs)
    assert_same(snapshot(url), clean[0])
    assert nothing_pending(url)
    files = Store(url).list("transcriptions", ".parquet")
    assert files and all("/fetched_date=" in f for f in files)
    ingest(url, 4, inputs)  # idempotent there too
    assert Store(url).list("transcriptions", ".parquet") == files


@pytest.mark.parametrize(
    "count",
    [S3_KILL_POINTS, pytest.param(None, marks=[pytest.mark.slow, pytest.mark.timeout(1800)])],
    ids=["spread", "every-step"],
)
def test_kill_9_on_s3_then_rerun_equals_a_clean_run(
    count: int | None, s3_endpoint: str, inputs: list[str], clean: tuple[dict, int]
) -> None:
    expected, total_ops = clean
    urls = {point: s3_url(s3_endpoint) for point in kill_points(total_ops, count)}
    crash_then_rerun(urls, inputs)
    for url in urls.values():
        assert nothing_pending(url), url
        assert_same(snapshot(url), expected)
