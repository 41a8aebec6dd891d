"""The flows' Prefect-free bodies: commits retried on storage errors only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import flows.runs
from flows.batch import stage_outcomes
from flows.errors import StorageError, TransientStorageError
from flows.outcomes import Outcome
from flows.runs import Run
from flows.summary import RunSummary
from tests.helpers import FETCHED_AT, TID, item


def staged_batch(run: Run, out: Path) -> Any:
    outcome = Outcome(TID, "succeeded", FETCHED_AT, items=[item("doctor", 0, 10)])
    return stage_outcomes(str(out), run.spec(), [outcome])


@pytest.mark.parametrize(
    ("error", "commits"),
    [(TransientStorageError("connection reset"), 1), (StorageError("written by a newer talktime"), 0),
     (ValueError("a bug"), 0)],
    ids=["transient", "permanent", "bug"],
)  # fmt: skip
def test_a_commit_is_retried_after_a_transient_storage_error_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, commits: int
) -> None:
    monkeypatch.setattr(flows.runs, "COMMIT_RETRY_WAIT_S", 0.0)
    run = Run(str(tmp_path), logging.getLogger())
    real_commit, calls = run.dataset.commit, []

    def flaky(*args: Any, **kwargs: Any) -> pl.DataFrame:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(run.dataset, "commit", flaky)
    summary = RunSummary()
    if commits:
        run.commit(staged_batch(run, tmp_path), summary)
    else:
        with pytest.raises(type(error), match=str(error)):
            run.commit(staged_batch(run, tmp_path), summary)
    assert (len(calls), summary.batches) == (1 + commits, commits)
    run.close()


def test_a_batch_task_s_arguments_and_result_travel_by_pickle(tmp_path: Path) -> None:
    """What a Dask worker would receive and send back (issue 8): settings, a spec, a manifest."""
    import pickle

    from flows.inputs import Segment
    from flows.settings import IngestSettings, RunSettings

    run = Run(str(tmp_path), logging.getLogger())
    settings = RunSettings(api_url="http://api.test", ids_file="ids.txt", out=str(tmp_path))
    ingest = IngestSettings(inputs=["in.ndjson"], out=str(tmp_path))
    spec = run.spec(segments=(Segment("in.ndjson", 0, 100, 1),))
    staged = staged_batch(run, tmp_path)
    for value in (settings, ingest, spec, staged):
        copy = pickle.loads(pickle.dumps(value))
        assert copy == value if not hasattr(value, "polled") else copy.polled.equals(value.polled)
    run.close()
