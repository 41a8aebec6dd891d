"""Benchmarks: print numbers, assert nothing. `make bench` (or run this file with the venv's python).

1. transform: synthetic consultations -> the four tables (flatten + validate + metrics), items/s
   and peak RSS;
2. fetch: the client against the emulator on loopback, requests/s, with and without faults;
3. commit: writing batches through the commit protocol on local disk, rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from datetime import UTC, datetime

from flows.api.auth import ApiKeyAuth
from flows.api.client import ClientOptions, TranscriptionClient, make_http_client
from flows.api.retry import RetryPolicy
from flows.emulator.app import DEFAULT_API_KEY, EmulatorConfig, Faults
from flows.emulator.server import EmulatorServer
from flows.emulator.synthetic import synthetic_responses
from flows.outcomes import Outcome
from flows.steps import commit_outcomes
from flows.storage.ledger import changed, load_ledger
from flows.storage.store import Store
from flows.transform import transform_outcomes


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_transform(responses: dict[str, dict]) -> None:
    now = datetime.now(UTC)
    outcomes = [Outcome(t, "succeeded", now, items=r["payload"]["transcript"]) for t, r in responses.items()]
    items = sum(len(o.items or []) for o in outcomes)
    start = time.perf_counter()
    tables = transform_outcomes(outcomes)
    elapsed = time.perf_counter() - start
    print(f"transform: {len(outcomes)} transcriptions, {items} items in {elapsed:.2f} s "
          f"= {items / elapsed:,.0f} items/s; speaker rows {tables['speaker_metrics'].height}; "
          f"peak RSS {peak_rss_mib():.0f} MiB")  # fmt: skip


def bench_fetch(responses: dict[str, dict], faults: Faults, label: str) -> None:
    async def go(url: str) -> int:
        async with make_http_client(concurrency=16) as http:
            options = ClientOptions(
                api_url=url, concurrency=16, retry=RetryPolicy(backoff_initial_s=0.01, backoff_max_s=0.1)
            )
            client = TranscriptionClient(http, options, ApiKeyAuth(DEFAULT_API_KEY))
            outcomes, _ = await client.fetch_many(list(responses))
            failed = [o.error_code for o in outcomes if o.status != "succeeded"]
            if failed:
                print(f"  not succeeded: {len(failed)} ({sorted(set(map(str, failed)))})")
            return client.requests_sent

    with EmulatorServer(EmulatorConfig(responses=responses, faults=faults, seed=1)) as server:
        start = time.perf_counter()
        sent = asyncio.run(go(server.api_url))
        elapsed = time.perf_counter() - start
    rate = len(responses) / elapsed
    print(f"fetch ({label}): {len(responses)} ids, {sent} requests in {elapsed:.2f} s = {rate:,.0f} ids/s")


def bench_commit(responses: dict[str, dict], batch_size: int) -> None:
    now = datetime.now(UTC)
    outcomes = [Outcome(t, "succeeded", now, items=r["payload"]["transcript"]) for t, r in responses.items()]
    with tempfile.TemporaryDirectory() as out:
        ledger = load_ledger(Store(out))
        start = time.perf_counter()
        rows = 0
        for i in range(0, len(outcomes), batch_size):
            batch = outcomes[i : i + batch_size]
            frames = transform_outcomes(changed(ledger, batch))
            ledger = commit_outcomes(out, frames, batch, batch, ledger)
            rows += sum(f.height for f in frames.values())
        elapsed = time.perf_counter() - start
    print(f"transform+commit: {len(outcomes)} transcriptions in batches of {batch_size}: {elapsed:.2f} s "
          f"= {len(outcomes) / elapsed:,.0f} transcriptions/s, {rows / elapsed:,.0f} rows/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transcriptions", type=int, default=2000)
    args = parser.parse_args()
    responses = synthetic_responses(args.transcriptions, seed=42)
    bench_transform(responses)
    small = dict(list(responses.items())[:500])
    bench_fetch(small, Faults(), "no faults")
    bench_fetch(
        small, Faults(rate_limited=0.1, server_error=0.1, truncated=0.05, drop=0.05, retry_after="0"), "30% faults"
    )
    bench_commit(responses, batch_size=200)


if __name__ == "__main__":
    main()
