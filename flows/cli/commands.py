"""Argument parsing and the implementation of each `talktime` sub-command."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from flows.errors import ConfigurationError
from flows.secrets import API_KEY_ENV
from flows.settings import (
    DEFAULT_API_KEY_SECRET,
    DEFAULT_API_VERSION,
    DEFAULT_CONCURRENCY,
    DEFAULT_DOWN_AFTER_S,
    DEFAULT_IN_FLIGHT,
    DEFAULT_INGEST_BATCH_SIZE,
    DEFAULT_INGEST_IN_FLIGHT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_WAIT_S,
    DEFAULT_REQUEST_DEADLINE_S,
    DEFAULT_RUN_BATCH_SIZE,
    MIB,
    IngestSettings,
    RunSettings,
)
from flows.summary import print_summary

if TYPE_CHECKING:
    from flows.emulator.app import Faults
    from flows.emulator.oauth import OAuthServer
    from flows.summary import RunSummary

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLES = PROJECT_ROOT / "data" / "samples"
TABLE_NAMES = ("transcriptions", "speaker_metrics", "transcript_items", "rejected_items")


def _add_fault_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fault injection (rates are 0-1, deterministic under --seed)")
    for kind, text in [
        ("rate-limited", "429 with Retry-After"),
        ("server-error", "500"),
        ("unavailable", "503"),
        ("truncated", "200 with a cut-off JSON body"),
        ("not-json", "200 with an HTML body"),
        ("drop", "connection dropped mid-body"),
        ("stall", "no answer for --stall-s seconds"),
    ]:
        g.add_argument(f"--fault-{kind}", type=float, default=0.0, metavar="RATE", help=text)
    g.add_argument("--latency-ms", type=int, default=0, help="fixed latency per request")
    g.add_argument("--jitter-ms", type=int, default=0, help="extra random latency, 0..N ms")
    g.add_argument("--stall-s", type=float, default=60.0, help="length of an injected stall")
    g.add_argument("--retry-after", default="1", help="Retry-After sent with 429s (seconds or HTTP date)")


def _faults(args: argparse.Namespace) -> Faults:
    from flows.emulator.app import Faults

    return Faults(
        rate_limited=args.fault_rate_limited,
        server_error=args.fault_server_error,
        unavailable=args.fault_unavailable,
        truncated=args.fault_truncated,
        not_json=args.fault_not_json,
        drop=args.fault_drop,
        stall=args.fault_stall,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        stall_s=args.stall_s,
        retry_after=args.retry_after,
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-url", required=True, help="base URL; /transcribe-async/{id} is appended")
    p.add_argument("--ids", required=True, help="ids file: one per line, or CSV/Parquet with an `id` column")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--api-key",
        help=f"server API key; never logged, but a command line is visible to other users of this machine"
        f" (ps): prefer ${API_KEY_ENV} or the Secret block {DEFAULT_API_KEY_SECRET!r}",
    )
    p.add_argument("--api-version", default=DEFAULT_API_VERSION, help="X-Nabla-Api-Version to send")
    p.add_argument("--oauth-client-id", help="OAuth client id (dialect B); switches to OAuth client credentials")
    p.add_argument("--private-key-file", help="PEM file of the OAuth client's RS256 private key")
    p.add_argument(
        "--batch-size", type=int, default=DEFAULT_RUN_BATCH_SIZE, help="ids per batch (one task, one commit)"
    )
    p.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT, help="batches fetched ahead of the commit")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight at most")
    p.add_argument("--rate-limit", type=float, default=None, help="requests per second at most")
    p.add_argument("--max-wait", type=float, default=DEFAULT_MAX_WAIT_S, help="seconds to re-poll ongoing ids")
    p.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, help="attempts per request at most")
    p.add_argument(
        "--give-up-after",
        type=parse_duration,
        default=DEFAULT_DOWN_AFTER_S,
        help="stop the run early when every request has failed this long (default 5m)",
    )
    p.add_argument(
        "--expire-after",
        type=parse_duration,
        default=parse_duration("24h"),
        help="mark ids still pending this long after first seen as `expired` (e.g. 90m, 24h, 2d; default 24h)",
    )
    p.add_argument(
        "--max-response-mb",
        type=float,
        default=DEFAULT_MAX_RESPONSE_BYTES / MIB,
        help="largest response body read, in MiB after decompression; larger is a `response_too_large` row",
    )
    p.add_argument(
        "--request-deadline",
        type=parse_duration,
        default=DEFAULT_REQUEST_DEADLINE_S,
        help="longest one request may take, body included (e.g. 90s, 2m; default 2m); then it is retried",
    )


def parse_duration(text: str) -> float:
    """Seconds in '3600', '90s', '90m', '24h' or '2d'."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 90m, 24h, 2d)") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="talktime", description="Talk-time analytics from medical transcriptions.")
    sub = parser.add_subparsers(dest="command", required=True)

    emu = sub.add_parser("emulator", help="serve the local API emulator")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8765)
    emu.add_argument("--data", nargs="*", default=[], help=".json/.ndjson responses or folders of them")
    emu.add_argument("--synthetic", type=int, default=0, metavar="N", help="also serve N synthetic transcripts")
    emu.add_argument("--seed", type=int, default=0, help="seed of synthetic data and of faults")
    emu.add_argument("--api-key", default="talktime-dev-key", help="the bearer key the emulator accepts")
    emu.add_argument("--ongoing-polls", type=int, default=0, help="polls answered `ongoing` before the result")
    emu.add_argument("--ongoing-seconds", type=float, default=0.0, help="seconds a result stays `ongoing`")
    emu.add_argument(
        "--ongoing-forever",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of ids (0-1, drawn from --seed) that stay `ongoing` for ever",
    )
    emu.add_argument("--write-ids", help="write the served ids to this file and go on serving")
    emu.add_argument("--oauth-client-id", help="emulate OAuth: accept assertions from this client id")
    emu.add_argument("--oauth-public-key", help="PEM public key that verifies the client's assertions")
    emu.add_argument("--token-ttl", type=float, default=3600.0, help="lifetime of issued access tokens (s)")
    _add_fault_options(emu)

    run = sub.add_parser("run", help="poll the API for every id and write the datasets")
    _add_run_options(run)

    ing = sub.add_parser("ingest", help="read saved responses or webhook events (no network)")
    ing.add_argument("--input", nargs="+", required=True, help=".json/.ndjson files or folders")
    ing.add_argument("--out", required=True, help="output directory")
    ing.add_argument("--batch-size", type=int, default=DEFAULT_INGEST_BATCH_SIZE, help="records per batch")
    ing.add_argument("--in-flight", type=int, default=DEFAULT_INGEST_IN_FLIGHT, help="batches read ahead of the commit")

    comp = sub.add_parser("compact", help="merge each partition's small files (readers see the same rows)")
    comp.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")

    ver = sub.add_parser(
        "verify",
        help="check the ledger against the data files (missing, extra, duplicated rows); --repair fixes them",
        description="Check the ledger against the data files of every table: ids whose rows are missing, "
        "rows the ledger does not name as current (extra), rows repeated in an id's current batch "
        "(duplicated), unreadable files, a missing or unreadable ledger. Prints ids and file paths, never "
        "transcript text.",
        epilog="exit status: 0 consistent (after --repair: repaired), 1 problems found, "
        "2 error (e.g. --out does not exist)",
    )
    ver.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")
    ver.add_argument(
        "--repair",
        action="store_true",
        help="rebuild a missing or unreadable ledger, drop missing ids from it (the next run fetches them again), "
        "rewrite files without extra or duplicated rows and quarantine unreadable ones, in one crash-safe commit",
    )

    hook = sub.add_parser("webhook", help="receive the vendor's webhook events into a landing folder")
    hook.add_argument("--host", default="127.0.0.1")
    hook.add_argument("--port", type=int, default=8766)
    hook.add_argument("--landing", required=True, help="folder where events land as NDJSON files")
    hook.add_argument("--secret-env", required=True, help="name of the environment variable holding the secret")
    hook.add_argument(
        "--max-body-mb", type=float, metavar="MB", help="refuse event bodies over this many MiB with 413 (default 16)"
    )

    demo = sub.add_parser("demo", help="run the whole pipeline on the bundled sample via the emulator")
    demo.add_argument("--out", default="data/output", help="output directory (its tables are rewritten)")
    demo.add_argument("--samples", default=str(DEFAULT_SAMPLES), help="the sample folder")
    return parser


def cmd_emulator(args: argparse.Namespace) -> int:
    from flows.emulator.app import EmulatorConfig
    from flows.emulator.server import load_responses, serve
    from flows.emulator.synthetic import synthetic_responses

    responses = load_responses(args.data) | synthetic_responses(args.synthetic, args.seed)
    if args.write_ids:
        Path(args.write_ids).write_text("".join(f"{i}\n" for i in responses), encoding="utf-8")
    config = EmulatorConfig(
        responses=responses,
        api_key=args.api_key,
        ongoing_polls=args.ongoing_polls,
        ongoing_seconds=args.ongoing_seconds,
        ongoing_forever=args.ongoing_forever,
        faults=_faults(args),
        seed=args.seed,
        oauth=_oauth_server(args),
    )
    print(f"talktime emulator: {len(responses)} transcriptions on http://{args.host}:{args.port}", flush=True)
    serve(config, args.host, args.port)
    return 0


def _oauth_server(args: argparse.Namespace) -> OAuthServer | None:
    if not args.oauth_client_id:
        return None
    from flows.emulator.oauth import OAuthServer

    if not args.oauth_public_key:
        raise SystemExit("talktime emulator: --oauth-client-id needs --oauth-public-key")
    public_key = Path(args.oauth_public_key).read_text(encoding="utf-8")
    return OAuthServer(args.oauth_client_id, public_key, token_ttl_s=args.token_ttl)


def _settings_error(exc: ValidationError) -> ConfigurationError:
    """One line per invalid option, without the values (they may be paths or ids)."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return ConfigurationError(f"invalid settings: {problems}")


def run_settings(args: argparse.Namespace) -> RunSettings:
    """The run's settings from its arguments (the key goes to this process's environment only)."""
    if args.api_key:
        os.environ[API_KEY_ENV] = args.api_key
    try:
        return _run_settings(args)
    except ValidationError as exc:
        raise _settings_error(exc) from None


def _run_settings(args: argparse.Namespace) -> RunSettings:
    return RunSettings(
        api_url=args.api_url,
        ids_file=str(args.ids),
        out=str(args.out),
        api_version=args.api_version,
        batch_size=args.batch_size,
        in_flight=args.in_flight,
        concurrency=args.concurrency,
        rate_limit=args.rate_limit,
        max_wait_s=args.max_wait,
        expire_after_s=args.expire_after,
        max_attempts=args.max_attempts,
        down_after_s=args.give_up_after,
        max_response_mb=args.max_response_mb,
        request_deadline_s=args.request_deadline,
        oauth_client_id=args.oauth_client_id,
        private_key_file=args.private_key_file,
    )


def ingest_settings(args: argparse.Namespace) -> IngestSettings:
    try:
        return IngestSettings(
            inputs=list(args.input), out=str(args.out), batch_size=args.batch_size, in_flight=args.in_flight
        )
    except ValidationError as exc:
        raise _settings_error(exc) from None


def _check_output(out: str) -> None:
    """One clean line, before Prefect starts a flow run, when a local output cannot be written:
    another writer holds it, or its ledger is unreadable. (The run checks both again itself; on
    object storage only the run does, after Prefect has started.)
    """
    if "://" in out:
        return
    from flows.storage.lease import Lease
    from flows.storage.ledger import LEDGER_PATH, read_ledger
    from flows.storage.store import Store

    store = Store(out)
    Lease(store, "check").refuse_if_held()
    if store.exists(LEDGER_PATH):
        read_ledger(store)


def _run(args: argparse.Namespace) -> RunSummary:
    from flows.pipeline import run_flow

    settings = run_settings(args)
    _check_output(settings.out)
    return run_flow(settings)


def cmd_run(args: argparse.Namespace) -> int:
    summary = _run(args)
    print_summary(summary, str(args.out))
    return 1 if summary.stopped_early else 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.pipeline import ingest_flow

    settings = ingest_settings(args)
    _check_output(settings.out)
    summary = ingest_flow(settings)
    print_summary(summary, str(args.out))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.emulator.app import EmulatorConfig
    from flows.emulator.server import EmulatorServer, load_responses

    samples = Path(args.samples)
    out = Path(args.out)
    for owned in (*TABLE_NAMES, "_talktime"):
        shutil.rmtree(out / owned, ignore_errors=True)
    config = EmulatorConfig(responses=load_responses([samples / "responses"]), ongoing_polls=1)
    with EmulatorServer(config) as server:
        print(f"talktime demo: emulator on {server.api_url}", flush=True)
        demo_args = build_parser().parse_args(
            ["run", "--api-url", server.api_url, "--ids", str(samples / "ids.txt"), "--out", str(out),
             "--api-key", config.api_key, "--batch-size", "25", "--max-wait", "3"]
        )  # fmt: skip
        summary = _run(demo_args)
    print_summary(summary, str(out))
    return 1 if summary.stopped_early else 0


def cmd_compact(args: argparse.Namespace) -> int:
    from flows.storage.compact import compact

    before, after = compact(str(args.out))
    print(f"talktime compact: {before} data files -> {after}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from flows.storage.verify import describe, describe_repair, repair, verify

    if args.repair:
        done = repair(str(args.out))
        print("\n".join(describe_repair(done)))
        return 0 if done.after.consistent else 1
    found = verify(str(args.out))
    print("\n".join(describe(found)))
    return 0 if found.consistent else 1


def cmd_webhook(args: argparse.Namespace) -> int:
    import uvicorn

    from flows.errors import ConfigurationError
    from flows.webhook.receiver import DEFAULT_MAX_EVENT_BYTES, WebhookApp

    secret = os.environ.get(args.secret_env)
    if not secret:
        raise ConfigurationError(f"the webhook secret variable {args.secret_env} is not set")
    max_body = DEFAULT_MAX_EVENT_BYTES if args.max_body_mb is None else args.max_body_mb * 1024 * 1024
    if not 1 <= max_body < 2**53:  # also refuses nan and inf
        raise ConfigurationError("--max-body-mb must be a positive number of MiB")
    app = WebhookApp(Path(args.landing), secret, max_body_bytes=int(max_body))
    print(f"talktime webhook: landing events in {args.landing} from http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="off")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "emulator": cmd_emulator,
    "run": cmd_run,
    "ingest": cmd_ingest,
    "demo": cmd_demo,
    "webhook": cmd_webhook,
    "compact": cmd_compact,
    "verify": cmd_verify,
}
