"""What `run`, `ingest` and `demo` share: the flags of their common fields, the checks before the flow, the
outcome, and a run whose Prefect API went away (exit 4)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flows.cli.options import Flag
from flows.errors import ConfigurationError
from flows.settings import IngestSettings, RunSettings

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

    from flows.summary import RunSummary


# The fields RunSettings and IngestSettings share, where the command line shows them differently.
JOB_FLAGS = {
    "text_policy": Flag("--text"),
    "memory_budget_mb": Flag(metavar="MB"),
    "task_runner": Flag(group="scale-out"),
    "dask_address": Flag(metavar="tcp://HOST:PORT", group="scale-out"),
}


def check_output(out: str) -> None:
    """One clean line, before Prefect starts a flow run, when a local output cannot be written:
    it is a file, another writer holds it, or its ledger is unreadable. (The run checks again
    itself; on object storage only the run does, and a failure is one line there too.)
    """
    if "://" in out:
        return
    from flows.storage.lease import Lease
    from flows.storage.ledgerlog import check_readable
    from flows.storage.store import Store

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigurationError(f"--out {out} is a file, not a directory")
    if not path.exists() and not _creatable(path):
        raise ConfigurationError(f"--out {out} cannot be created (its parent is not a writable directory)")
    store = Store(out)
    Lease(store, "check").refuse_if_held()
    check_readable(store)


def check_text_policy(settings: RunSettings | IngestSettings) -> None:
    """One line before Prefect starts when a local output was recorded with another text policy (or, for
    hash with the key in the environment, another key). The run checks again itself, also on S3."""
    from flows.textpolicy import TEXT_KEY_ENV, text_key

    key = (
        text_key(settings.text_key_secret) if settings.text_policy == "hash" and os.environ.get(TEXT_KEY_ENV) else None
    )
    if "://" in settings.out or not Path(settings.out).is_dir():
        return
    from flows.storage.policy import check_policy
    from flows.storage.store import Store
    from transforms.text import key_id

    check_policy(Store(settings.out), settings.text_policy, key_id(key) if key else None)


def check_runner(settings: RunSettings | IngestSettings) -> None:
    """Dask needs a Prefect server the workers share: say so before a temporary one starts."""
    if settings.task_runner == "dask":
        from flows.scaleout import prefect_api_url

        prefect_api_url()


def _creatable(path: Path) -> bool:
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    return parent is not None and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def prepare_prefect(announce: bool) -> None:
    """A configured Prefect server that does not answer: one line now (or, without one, say that a
    temporary server starts); then keep the flow's refusal line off the terminal (printed at the end)."""
    from flows.cli.prefect_server import check_prefect_server, hide_refusals_on_console

    check_prefect_server(announce=announce)
    hide_refusals_on_console()


def outcome(state: State, args: argparse.Namespace, out: str) -> int:
    """Print the run's result and give the exit status: 0 done, 1 failed (its reason on stderr).

    A configuration, credential or storage error found inside the flow is raised (exit 2).
    """
    from flows.summary import RunSummary, print_summary
    from flows.untrusted import printable

    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    if not isinstance(result, RunSummary):
        raise RuntimeError(f"the flow ended {state.type.value} without a summary")
    if getattr(args, "json", False):
        print(json.dumps({"out": out, "state": state.type.value, **result.as_dict()}, default=str))
    elif getattr(args, "quiet", False):
        print(f"talktime: {result.lines()[0]}")
    else:
        print_summary(result, out)
    if result.failure:
        print(f"talktime: the run failed: {printable(result.failure)}", file=sys.stderr)
        return 1
    return 0


EXIT_PREFECT_GONE = 4
PREFECT_DRAIN_S = 10.0  # how long Prefect's log and event workers get to give up, once its API is gone


class PrefectGoneError(Exception):
    """The flow's body ended (its data committed) but Prefect's API could not be told the run's end."""

    def __init__(self, summary: RunSummary, cause: str) -> None:
        super().__init__(cause)
        self.summary = summary
        self.cause = cause


def ended(flow_call: Callable[[], State]) -> State:
    """The flow's final state; PrefectGoneError when its body ended but Prefect's API was gone at the end."""
    import httpx

    from flows.pipeline import finished_summary

    try:
        return flow_call()
    except (httpx.TransportError, httpx.HTTPStatusError) as exc:
        summary = finished_summary()
        if summary is None:
            raise
        raise PrefectGoneError(summary, _api_cause(exc)) from None


def _api_cause(exc: Exception) -> str:
    """What went wrong with Prefect's API, by host and port (never a path, a query or a key)."""
    import httpx
    from prefect.settings import get_current_settings

    from flows.api.reply import network_cause
    from flows.cli.prefect_server import shown_url

    url = get_current_settings().api.url or ""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {shown_url(url)}"
    return network_cause(exc, url) if isinstance(exc, httpx.TransportError) else type(exc).__name__


def prefect_gone(gone: PrefectGoneError, args: argparse.Namespace, out: str) -> int:
    """The run's summary as usual, then one line: the data is committed, Prefect was not told (exit 4).

    Prefect's log and event workers are given a few seconds to give up first, so that the process
    does not wait on them at exit; their complaints about the API (`--- Error logging to API ---`,
    printed without a line end) are silenced from here on: the line below says it once."""
    import logging

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from flows.summary import print_summary
    from flows.untrusted import printable

    summary = gone.summary
    logging.raiseExceptions = False  # Prefect's log worker writes its failures to stderr only when True
    print(file=sys.stderr)  # after a complaint printed without a line end
    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=PREFECT_DRAIN_S)
    if getattr(args, "json", False):
        print(json.dumps({"out": out, "state": "UNKNOWN", "prefect": gone.cause, **summary.as_dict()}, default=str))
    elif not getattr(args, "quiet", False):
        print_summary(summary, out)
    if summary.failure:
        print(f"talktime: the run failed: {printable(summary.failure)}", file=sys.stderr)
    print(
        f"talktime: the data is committed ({summary.ids} ids) in {printable(out)}, but Prefect's API could not "
        f"be told the run's end ({printable(gone.cause)}): its flow run may show RUNNING there until marked "
        "otherwise",
        file=sys.stderr,
    )
    return EXIT_PREFECT_GONE
