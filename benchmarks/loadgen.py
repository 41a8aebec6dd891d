"""Load generator: how many GETs per second the emulator serves, measured from another process.

`--concurrency` asyncio workers GET `{api-url}/transcribe-async/{id}` for the ids in turn (round
robin) until `--requests` have been sent or `--seconds` have passed, read each body whole and count
the status codes. The result is one JSON object written to `--result`.

Two clients: `raw` (default), one keep-alive HTTP/1.1 connection per worker on asyncio streams,
cheap enough per request that the server, not the client, is what is measured; and `httpx`, one
`httpx.AsyncClient` like talktime's, which shows what a single Python process using httpx can drive.
Only loopback addresses are accepted: this is a load test of a server the benchmark runs itself.

    python -m benchmarks.loadgen --api-url http://127.0.0.1:P/v1/copilot-api/server --ids FILE \
        --api-key KEY --concurrency 64 --requests 10000 --seconds 30 --result out.json [--client httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx


@dataclass
class Tally:
    """Requests answered so far, by status code (0: a transport error)."""

    limit: int
    deadline: float
    codes: Counter[int] = field(default_factory=Counter)
    answered: int = 0

    def more(self) -> bool:
        """Whether a worker should send another request."""
        return self.answered < self.limit and time.monotonic() < self.deadline


async def _worker(client: httpx.AsyncClient, urls: Iterator[str], tally: Tally) -> None:
    while tally.more():
        tally.answered += 1  # counted when sent, so the workers stop at exactly `limit`
        try:
            response = await client.get(next(urls))
            await response.aread()
            tally.codes[response.status_code] += 1
        except httpx.HTTPError:
            tally.codes[0] += 1


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response whole; its status and whether the server closes the connection."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.strip().lower(): v.strip().lower() for k, _, v in (h.partition(":") for h in head[1:] if h)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status, headers.get("connection") == "close"


async def _raw_worker(host: str, port: int, paths: Iterator[str], auth: bytes, tally: Tally) -> None:
    """One keep-alive connection, reopened after an error or a `Connection: close`."""
    writer: asyncio.StreamWriter | None = None
    while tally.more():
        tally.answered += 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            request = f"GET {next(paths)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            writer.write(request.encode() + auth + b"\r\n")
            status, close = await _read_response(reader)
            tally.codes[status] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            tally.codes[0] += 1
            close = True
        if close and writer is not None:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _run_raw(api_url: str, ids: list[str], api_key: str, concurrency: int, tally: Tally) -> None:
    url = urlsplit(api_url)
    paths = itertools.cycle(f"{url.path}/transcribe-async/{i}" for i in ids)
    auth = f"Authorization: Bearer {api_key}\r\n".encode()
    host, port = url.hostname or "127.0.0.1", url.port or 80
    await asyncio.gather(*(_raw_worker(host, port, paths, auth, tally) for _ in range(concurrency)))


async def _run_httpx(api_url: str, ids: list[str], api_key: str, concurrency: int, tally: Tally) -> None:
    urls = itertools.cycle(f"{api_url}/transcribe-async/{i}" for i in ids)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60.0) as client:
        await asyncio.gather(*(_worker(client, urls, tally) for _ in range(concurrency)))


async def generate(
    api_url: str, ids: list[str], api_key: str, concurrency: int, requests: int, seconds: float, client: str
) -> dict[str, object]:
    """Run the load and return what it measured."""
    start = time.monotonic()
    tally = Tally(limit=requests, deadline=start + seconds)
    run = _run_raw if client == "raw" else _run_httpx
    await run(api_url, ids, api_key, concurrency, tally)
    elapsed = time.monotonic() - start
    sent, ok = sum(tally.codes.values()), tally.codes.get(200, 0)
    return {
        "client": client,
        "requests": sent,
        "ok": ok,
        "codes": {str(k): v for k, v in sorted(tally.codes.items())},
        "seconds": elapsed,
        "requests_per_s": sent / elapsed,
        "ok_per_s": ok / elapsed,
        "concurrency": concurrency,
    }


def main() -> None:
    """Parse arguments, refuse any address but loopback, run, write the result."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--ids", required=True, help="one id per line")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=10_000, help="stop after this many requests")
    parser.add_argument("--seconds", type=float, default=30.0, help="or after this long")
    parser.add_argument("--result", required=True, help="JSON file to write the result to")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw", help="see above")
    args = parser.parse_args()
    if urlsplit(args.api_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load generator only targets loopback addresses")
    ids = [line.strip() for line in Path(args.ids).read_text().splitlines() if line.strip()]
    result = asyncio.run(
        generate(args.api_url, ids, args.api_key, args.concurrency, args.requests, args.seconds, args.client)
    )
    Path(args.result).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
