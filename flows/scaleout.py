"""Where the batch tasks run: threads of the flow's process, or the workers of a Dask cluster.

`batch_runner(settings)` gives the flows one way to submit a batch task, whatever runs it. With
`task_runner: dask` it is Prefect's own `DaskTaskRunner` (prefect-dask), on an existing cluster
(`dask_address`) or on a `LocalCluster` of one single-threaded worker process per core. A batch
task needs nothing of the flow's process: its arguments are the settings and a small spec (ids or
byte ranges, and the path of the run's ledger snapshot), it stages its files in the output location
itself (a shared disk or S3), and it returns a small manifest; the flow commits the manifests in
order as the single writer, so every exactly-once guarantee holds whatever runs the batches. A
worker lost mid-batch is replaced by Dask running the batch again elsewhere: staging is idempotent
(the same batch id, the same files) and nothing is committed before the flow has the manifest. A
batch whose workers keep dying ends the run with a WorkerLostError (exit 2, one line): what was
committed stays, and a rerun finishes.

Dask workers report their task runs to Prefect. Without a Prefect server in common (PREFECT_API_URL),
each worker process would start a temporary server of its own (a 12-task flow took 60 s instead of
8 s), so a Dask run refuses to start without one, and checks that every worker uses the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flows.batch import BatchSpec
from flows.errors import ConfigurationError, WorkerLostError
from flows.settings import IngestSettings, RunSettings
from flows.workerpool import size_polars_pool, worker_api_url

Submit = Callable[[BatchSpec], Any]  # a batch's spec -> a future whose .result() is its StagedBatch

# The environment a LocalCluster's worker processes start with, besides the server's URL.
WORKER_ENVIRONMENT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_TASKS_DEFAULT_NO_CACHE": "true",
}


def prefect_api_url() -> str:
    """The Prefect server the flow reports to; ConfigurationError when it is a temporary one."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigurationError(
            "--task-runner dask needs a running Prefect server that the Dask workers share: start one "
            "(`prefect server start`) and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api); without it "
            "every worker would start a temporary server of its own"
        )
    return str(url)


# A free port on loopback: the dashboard shows task names and worker logs to anyone who reaches it.
LOCAL_DASHBOARD_ADDRESS = "127.0.0.1:0"

# Credentials a worker reads from its environment (flows.secrets): a LocalCluster's workers get the
# flow process's, never through task arguments (those are stored with the task runs).
CREDENTIAL_PREFIXES = ("TALKTIME_", "AWS_")


def local_cluster_options(api_url: str) -> dict[str, Any]:
    """A LocalCluster sized to this machine: one single-threaded worker process per core."""
    credentials = {name: value for name, value in os.environ.items() if name.startswith(CREDENTIAL_PREFIXES)}
    return {
        "n_workers": os.cpu_count() or 1,
        "threads_per_worker": 1,
        "processes": True,
        # Dask's dashboard has no authentication: on this machine only (":0" listened on every interface,
        # and None would still bind 8787, the port the webhook example once used)
        "dashboard_address": LOCAL_DASHBOARD_ADDRESS,
        # A single-threaded worker gets a one-thread polars pool: by default each worker process would start
        # a pool of one thread per core of the machine, all spinning against each other (issue 17).
        "env": {**credentials, "PREFECT_API_URL": api_url, **WORKER_ENVIRONMENT, "POLARS_MAX_THREADS": "1"},
    }


def check_workers(client: Any, api_url: str) -> int:
    """The number of workers; ConfigurationError unless each reports to the flow's Prefect server."""
    urls: dict[str, str | None] = client.run(worker_api_url)
    if not urls:
        raise ConfigurationError("the Dask cluster has no workers")
    wrong = sorted(worker for worker, url in urls.items() if url != api_url)
    if wrong:
        raise ConfigurationError(
            f"{len(wrong)} of {len(urls)} Dask workers (e.g. {wrong[0]}) do not have PREFECT_API_URL={api_url}: "
            "start them with it in their environment, or each reports to a temporary server of its own"
        )
    return len(urls)


def size_polars_pools(client: Any, log: Any) -> None:
    """Give each worker's polars pool as many threads as the worker runs tasks (issue 17): by default a
    worker process starts a pool of one thread per core of its machine, and N workers on one machine
    spin N such pools against each other. A worker that imported polars already is named in a warning."""
    sizes: dict[str, tuple[int, int]] = client.run(size_polars_pool)
    oversized = sorted(worker for worker, (pool, threads) in sizes.items() if pool > threads)
    if oversized:
        pool, threads = sizes[oversized[0]]
        log.warning(
            "%d of %d Dask workers (e.g. %s) have a polars pool of %d threads for %d task threads: start them "
            "with POLARS_MAX_THREADS=%d in their environment",
            len(oversized),
            len(sizes),
            oversized[0],
            pool,
            threads,
            threads,
        )


_WORKERS_DIED = "check the workers' memory and logs; committed batches are kept, rerun to finish"


class BatchFuture:
    """A batch's Dask future whose `result()` turns a lost worker into one WorkerLostError line.

    Dask gives up on a task whose workers died `allowed-failures` + 1 times (KilledWorker), and cancels
    the tasks of a client that lost its scheduler; both are operational events, not bugs, and their own
    messages name Dask internals (and are withheld as unexpected errors otherwise).
    """

    def __init__(self, future: Any, name: str) -> None:
        self._future = future
        self._name = name

    def result(self) -> Any:
        from distributed.client import FutureCancelledError
        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        try:
            return self._future.result()
        except KilledWorker as exc:
            tries = exc.allowed_failures + 1
            times = "once" if tries == 1 else f"{tries} times"
            error = WorkerLostError(f"a Dask worker died {times} running batch {self._name}: {_WORKERS_DIED}")
        except (FutureCancelledError, CommClosedError):
            dropped = f"the Dask cluster dropped batch {self._name} (lost its scheduler?)"
            error = WorkerLostError(f"{dropped}: {_WORKERS_DIED}")
        raise error  # outside the except block: the Dask error is not chained to it


def _close_fetchers() -> None:
    from flows.api.service import close_fetchers

    close_fetchers()


@contextmanager
def batch_runner(settings: RunSettings | IngestSettings, task: Any, log: Any) -> Iterator[Submit]:
    """How the flow submits `task(settings, spec)` for each batch, for the duration of a run."""
    if settings.task_runner == "threads":
        yield lambda spec: task.submit(settings, spec)
        return
    from prefect_dask.task_runners import DaskTaskRunner

    api_url = prefect_api_url()
    runner = (
        DaskTaskRunner(address=settings.dask_address)
        if settings.dask_address
        else DaskTaskRunner(cluster_kwargs=local_cluster_options(api_url))
    )
    try:
        runner.__enter__()  # type: ignore[no-untyped-call]
    except OSError as exc:  # no scheduler at that address
        raise ConfigurationError(f"cannot reach the Dask scheduler {settings.dask_address}: {exc}") from None
    try:
        size_polars_pools(runner.client, log)  # first: nothing has imported polars on the workers yet
        workers = check_workers(runner.client, api_url)
        local = f"a LocalCluster (dashboard on this machine only: {runner.client.dashboard_link})"
        where = settings.dask_address or local
        log.info("batch tasks run on %d Dask workers of %s, reporting to %s", workers, where, api_url)
        yield lambda spec: BatchFuture(runner.submit(task, {"settings": settings, "spec": spec}), spec.name)
        runner.client.run(_close_fetchers)  # a long-lived cluster keeps no connection of this run
    finally:
        runner.__exit__(None, None, None)
