"""The flows on a real Dask cluster (prefect-dask's DaskTaskRunner): the local runner's tables, exactly once.

A LocalCluster of 2 single-threaded worker processes is started by the tests, its workers given the
test server's PREFECT_API_URL (as an operator's workers would be), and the flows are pointed at it
with `--dask-address`, as at an existing cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from flows.cli import main
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig, Faults
from flows.emulator.server import EmulatorServer, load_responses
from flows.emulator.synthetic import synthetic_responses
from flows.errors import ConfigurationError, StorageError
from flows.storage.reader import read_table
from tests.conftest import FLOW_TEST_MARKS, SAMPLES
from transforms.schemas import TABLES

pytestmark = [
    *FLOW_TEST_MARKS,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning"),
]


@pytest.fixture(scope="module")
def cluster(prefect_server: None) -> Iterator[Any]:
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    from flows.scaleout import WORKER_ENVIRONMENT

    # An operator's workers: the Prefect server's URL and the API key in their environment.
    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value()), "TALKTIME_API_KEY": DEFAULT_API_KEY, **WORKER_ENVIRONMENT}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env=env) as local:
        yield local


def tables(out: Path) -> dict[str, pl.DataFrame]:
    """Every table's rows, in a stable order, without what differs between two runs (times, batch ids)."""
    found = {}
    for table in TABLES:
        frame = read_table(str(out), table)
        found[table] = frame.drop("fetched_at", "batch_id", "fetched_date", strict=False).sort(pl.all())
    return found


def assert_same_tables(a: Path, b: Path) -> None:
    left, right = tables(a), tables(b)
    for table in TABLES:
        assert left[table].equals(right[table]), table


def test_ingest_on_dask_gives_the_local_runners_tables(cluster: Any, tmp_path: Path) -> None:
    inputs = [str(SAMPLES / "responses")]
    assert main(["ingest", "--input", *inputs, "--out", str(tmp_path / "threads"), "--batch-size", "10", "-q"]) == 0
    assert main(["ingest", "--input", *inputs, "--out", str(tmp_path / "dask"), "--batch-size", "10", "-q",
                 "--dask-address", cluster.scheduler_address]) == 0  # fmt: skip
    assert_same_tables(tmp_path / "threads", tmp_path / "dask")
    assert read_table(str(tmp_path / "dask"), "transcriptions").height == 61
    # An operator's single-threaded workers (no POLARS_MAX_THREADS) got a one-thread polars pool: the
    # run sized it before any task imported polars there (it was one thread per core of the machine).
    # (asked through the product's own worker function: a function of this module would import the tests'
    # conftest on the workers, which drops their PREFECT_API_URL)
    from distributed import Client

    from flows.workerpool import size_polars_pool

    with Client(cluster.scheduler_address) as client:
        assert set(client.run(size_polars_pool).values()) == {(1, 1)}


def test_run_on_dask_gives_the_local_runners_tables(cluster: Any, tmp_path: Path) -> None:
    responses = load_responses([SAMPLES / "responses"])
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(responses) + "\n")
    config = EmulatorConfig(responses=responses, ongoing_polls=1, faults=Faults(server_error=0.1), seed=4)
    with EmulatorServer(config) as server:
        for runner, extra in (("threads", []), ("dask", ["--dask-address", cluster.scheduler_address])):
            argv = ["run", "--api-url", server.api_url, "--ids", str(ids), "--out", str(tmp_path / runner),
                    "--api-key", DEFAULT_API_KEY, "--batch-size", "10", "--max-wait", "5", "-q", *extra]  # fmt: skip
            assert main(argv) == 0
    assert_same_tables(tmp_path / "threads", tmp_path / "dask")
    assert dict(tables(tmp_path / "dask")["transcriptions"].group_by("status").len().iter_rows()) == {
        "succeeded": 58, "failed": 2, "ongoing": 1,
    }  # fmt: skip


def test_a_worker_killed_mid_batch_loses_nothing(
    cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from distributed import Client

    from tests.dask_crash import KillOnce

    data = tmp_path / "in.ndjson"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_responses(300, seed=11).values()))
    marker = tmp_path / "killed"
    assert main(["ingest", "--input", str(data), "--out", str(tmp_path / "threads"), "--batch-size", "25", "-q"]) == 0
    with Client(cluster.scheduler_address) as client:
        client.register_plugin(KillOnce(str(marker), at_write=6), name="kill-once")  # mid-batch: 4 files a batch
        try:
            code = main(["ingest", "--input", str(data), "--out", str(tmp_path / "dask"), "--batch-size", "25",
                         "--dask-address", cluster.scheduler_address, "--json"])  # fmt: skip
        finally:
            client.unregister_worker_plugin("kill-once")
        client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed one
    assert marker.exists(), "no worker was killed"
    assert code == 0, capsys.readouterr().err[-2000:]
    assert_same_tables(tmp_path / "threads", tmp_path / "dask")
    assert read_table(str(tmp_path / "dask"), "transcriptions").height == 300


def test_dask_needs_a_prefect_server() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.scaleout import prefect_api_url

    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(ConfigurationError) as refused:
        prefect_api_url()
    assert "needs a running Prefect server" in str(refused.value) and "PREFECT_API_URL" in str(refused.value)


def test_workers_must_report_to_the_same_server() -> None:
    from flows.scaleout import check_workers

    class Workers:
        def __init__(self, urls: dict[str, str | None]) -> None:
            self.urls = urls

        def run(self, _: object) -> dict[str, str | None]:
            return self.urls

    assert check_workers(Workers({"tcp://a": "http://s/api", "tcp://b": "http://s/api"}), "http://s/api") == 2
    with pytest.raises(ConfigurationError, match=r"1 of 2 Dask workers .* do not have PREFECT_API_URL=http://s/api"):
        check_workers(Workers({"tcp://a": "http://s/api", "tcp://b": None}), "http://s/api")
    with pytest.raises(ConfigurationError, match="no workers"):
        check_workers(Workers({}), "http://s/api")


def test_the_requests_budget_holds_across_workers(cluster: Any, tmp_path: Path) -> None:
    """Request timestamps measured by the emulator: 4 slots, back at 4 per second, shared by both workers."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="talktime-dask-budget", limit=4, slot_decay_per_second=4.0)
        )
    responses = load_responses([SAMPLES / "responses"])
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(list(responses)[:12]) + "\n")
    with EmulatorServer(EmulatorConfig(responses=responses)) as server:
        argv = ["run", "--api-url", server.api_url, "--ids", str(ids), "--out", str(tmp_path / "out"), "-q",
                "--api-key", DEFAULT_API_KEY, "--batch-size", "3", "--max-wait", "0",
                "--requests-limit", "talktime-dask-budget", "--dask-address", cluster.scheduler_address]  # fmt: skip
        assert main(argv) == 0
        stamps = sorted(t for t, _ in server.app.request_log)
    assert len(stamps) >= 12  # an id the sample holds as `ongoing` may be polled twice
    # 4 slots at once, then 4 a second, whichever worker takes them: the 12th request comes at least
    # 2 s after the first (unlimited, 12 requests take a few milliseconds).
    assert stamps[-1] - stamps[0] >= (len(stamps) - 4) / 4 - 0.1


def committed(out: Path) -> int:
    """Ids in the output's ledger (0 before the first commit)."""
    from flows.storage.ledgerlog import current_version, read_ledger
    from flows.storage.store import Store

    store = Store(str(out))
    try:
        version = current_version(store)
        return 0 if version.empty else len(read_ledger(store, version))
    except StorageError:  # the ledger is being folded at this moment
        return 0


@pytest.mark.parametrize(
    ("kills", "records"),
    [(1, 200), pytest.param(2, 400, marks=pytest.mark.slow)],
    ids=["one-kill", "two-kills"],
)
def test_an_ingest_on_dask_killed_at_random_moments_then_resumed_equals_a_clean_run(
    kills: int, records: int, cluster: Any, tmp_path: Path
) -> None:
    """Killed once by default; under `slow` twice (the second kill interrupts a resumed run)."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    from distributed import Client
    from prefect.settings import PREFECT_API_URL

    from tests.flows.storage.test_storage import assert_same, nothing_pending, snapshot

    data = tmp_path / "in.ndjson"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_responses(records, seed=5).values()))
    args = ["ingest", "--input", str(data), "--batch-size", "20", "-q"]
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    out = tmp_path / "killed"
    dask = [*args, "--out", str(out), "--dask-address", cluster.scheduler_address]
    env = os.environ | {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    rng = random.Random(os.environ.get("TALKTIME_CRASH_SEED", "11"))
    progress: list[int] = []
    with Client(cluster.scheduler_address) as client:
        for _ in range(kills):
            process = subprocess.Popen([sys.executable, "-m", "flows.cli", *dask], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            last = records * 3 // 4  # the latest kill: after this many committed ids
            target = rng.randint(min((progress[-1] if progress else 0) + 1, last), last)  # ids committed, then kill
            while process.poll() is None and committed(out) < target:
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=30) == -signal.SIGKILL, "the run ended before it was killed"
            progress.append(committed(out))
            deadline = time.monotonic() + 60  # the batches the dead flow left running finish (or are dropped)
            while any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.2)
    assert progress[-1] < records, progress  # the resumed run has work left
    assert main(dask) == 0
    assert nothing_pending(out)
    assert_same(snapshot(out), snapshot(tmp_path / "clean"))


def non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def product_cluster() -> Iterator[Any]:
    """A LocalCluster with the options `--task-runner dask` gives it (one worker), shared by the tests of them."""
    from distributed import LocalCluster

    from flows.scaleout import local_cluster_options

    with LocalCluster(**(local_cluster_options("http://127.0.0.1:9/api") | {"n_workers": 1})) as local:
        yield local


def test_the_local_clusters_dashboard_listens_on_loopback_only(product_cluster: Any) -> None:
    """`--task-runner dask` without an address served Dask's unauthenticated dashboard on every interface."""
    import socket
    from urllib.parse import urlsplit

    local = product_cluster
    bound = [sock.getsockname()[0] for sock in local.scheduler.http_server._sockets.values()]
    port = urlsplit(local.dashboard_link).port
    assert bound and all(host == "127.0.0.1" for host in bound), bound
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # reachable from this machine
    outside = non_loopback_address()
    if outside is not None:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outside, port), timeout=5).close()


def _polars_threads() -> int:
    import polars as pl

    return pl.thread_pool_size()


def test_a_single_threaded_local_worker_gets_a_one_thread_polars_pool(product_cluster: Any) -> None:
    """Each worker process used to start a polars pool of one thread per core of the machine."""
    from distributed import Client

    with Client(product_cluster) as client:
        assert list(client.run(_polars_threads).values()) == [1]


def test_a_batch_whose_worker_keeps_dying_ends_the_run_with_one_line_and_exit_2(
    prefect_server: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lost worker is an operational event: exit 2 and one line, not exit 3 and "KilledWorker ... message
    withheld". What was committed stays, and a rerun finishes."""
    import dask
    from distributed import Client, LocalCluster
    from prefect.settings import PREFECT_API_URL

    from flows.scaleout import WORKER_ENVIRONMENT
    from tests.dask_crash import KillEveryTime

    data = tmp_path / "in.ndjson"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_responses(100, seed=3).values()))
    args = ["ingest", "--input", str(data), "--batch-size", "25", "-q"]
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value()), **WORKER_ENVIRONMENT}
    out = tmp_path / "out"
    # one worker, and Dask gives a task up after its first dead worker (the default allows 3 more)
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0", env=env
        ) as local,
        Client(local.scheduler_address) as client,
    ):
        client.register_plugin(KillEveryTime(at_write=9), name="kill-every-time")  # batch 3's first file
        capsys.readouterr()
        code = main([*args, "--out", str(out), "--dask-address", local.scheduler_address])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        "talktime: error: a Dask worker died once running batch read-3-of-4: check the workers' memory and logs; "
        "committed batches are kept, rerun to finish"
    )
    assert "KilledWorker" not in err and "withheld" not in err
    assert committed(out) == 50  # batches 1 and 2
    assert main([*args, "--out", str(out)]) == 0
    assert_same_tables(tmp_path / "clean", out)
