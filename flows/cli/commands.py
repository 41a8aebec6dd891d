"""Argument parsing and the implementation of each `talktime` sub-command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    DEFAULT_MAX_ERROR_SHARE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_WAIT_S,
    DEFAULT_MEMORY_BUDGET_MB,
    DEFAULT_REQUEST_DEADLINE_S,
    DEFAULT_RUN_BATCH_SIZE,
    MIB,
    IngestSettings,
    RunSettings,
)

if TYPE_CHECKING:  # imported where used: `talktime --version` and `--help` import neither polars nor prefect
    from prefect.client.schemas.objects import State
    from pydantic import ValidationError

    from flows.emulator.app import Faults
    from flows.emulator.oauth import OAuthServer
    from flows.storage.verify import Check
    from flows.summary import RunSummary
    from flows.webhook.receiver import ReceiverLimits

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SAMPLES = PROJECT_ROOT / "data" / "samples"
TABLE_NAMES = ("transcriptions", "speaker_metrics", "transcript_items", "rejected_items")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], (), argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _output_options(json_summary: bool = True) -> argparse.ArgumentParser:
    """--quiet, --log-level, --debug (and --json): shared by the commands that run a job."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no log lines: errors and the result")
    g.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of Prefect's and talktime's log lines (default INFO)",
    )
    g.add_argument("--debug", action="store_true", help="show the traceback of an error")
    if json_summary:
        g.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    return p


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


def _add_runner_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out")
    g.add_argument(
        "--task-runner",
        choices=["threads", "dask"],
        help="where the batch tasks run: threads of this process (default), or Dask workers "
        "(needs a Prefect server: PREFECT_API_URL)",
    )
    g.add_argument(
        "--dask-address",
        metavar="tcp://HOST:PORT",
        help="scheduler of an existing Dask cluster (implies --task-runner dask); "
        "without it, --task-runner dask starts a LocalCluster of one worker process per core",
    )


TEXT_CHOICES = ("keep", "drop", "hash")


def _add_text_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--text",
        choices=TEXT_CHOICES,
        default="keep",
        help=f"what {what} keeps of transcript text (patient data): keep it, drop it, or hash it (HMAC-SHA256 "
        "keyed with $TALKTIME_TEXT_HMAC_KEY or the Secret block 'talktime-text-hmac-key'); drop is recommended"
        + ("; recorded by the output's first run, and another policy is refused later" if what == "the output" else ""),
    )


def _runner_settings(args: argparse.Namespace) -> dict[str, object]:
    runner = args.task_runner or ("dask" if args.dask_address else "threads")
    return {"task_runner": runner, "dask_address": args.dask_address}


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
    p.add_argument(
        "--max-error-share",
        type=float,
        default=DEFAULT_MAX_ERROR_SHARE,
        metavar="SHARE",
        help="the run fails (exit 1) when more than this share (0-1) of the ids it polled end in `error`",
    )
    p.add_argument(
        "--refetch",
        type=_statuses,
        default=(),
        metavar="STATUS[,STATUS]",
        help="poll again the ids whose recorded outcome is one of these final statuses "
        "(succeeded, failed, not_found, expired), e.g. not_found after a wrong --api-url",
    )
    p.add_argument(
        "--no-route-check",
        dest="check_route",
        action="store_false",
        help="do not stop when every id of the first batch answers 404 (by default: exit 2, nothing recorded)",
    )
    p.add_argument(
        "--requests-limit",
        metavar="NAME",
        help="a Prefect global concurrency limit with slot decay shared by every run against this API: "
        "each request takes a slot (needs a Prefect server; see README)",
    )


REFETCHABLE = ("succeeded", "failed", "not_found", "expired", "forgotten")


def _statuses(text: str) -> tuple[str, ...]:
    statuses = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [status for status in statuses if status not in REFETCHABLE]
    if unknown or not statuses:
        raise argparse.ArgumentTypeError(f"not final statuses: {text!r} (choose from {', '.join(REFETCHABLE)})")
    return statuses


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("talktime")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def configure_console(args: argparse.Namespace) -> None:
    """Log levels and the progress bar, from --quiet/--log-level/--json (before prefect is imported).

    On a terminal, `run`, `ingest` and `demo` show a progress bar and only Prefect's warnings and
    errors; elsewhere (CI, a worker, a pipe) they print the per-batch log lines instead.
    """
    if getattr(args, "log_level", None):
        os.environ["PREFECT_LOGGING_LEVEL"] = args.log_level
    quiet = getattr(args, "quiet", False)
    bar = args.command in ("run", "ingest", "demo") and not quiet and sys.stderr.isatty()
    if quiet or bar:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "ERROR" if quiet else "WARNING"
    if bar:
        from flows.progress import ProgressBar, add_terminal_watcher

        add_terminal_watcher(ProgressBar(f"talktime {'ingest' if args.command == 'ingest' else 'run'}"))


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
    parser = argparse.ArgumentParser(
        prog="talktime",
        description="Talk-time analytics from medical transcriptions.",
        epilog="exit status: 0 done, 1 the run failed (stopped early, too many errors; verify: problems found), "
        "2 configuration, credential or storage error, 3 unexpected error, 130 interrupted",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    job = _output_options()

    def add(
        name: str,
        text: str,
        parents: tuple[argparse.ArgumentParser, ...] = (),
        description: str | None = None,
        epilog: str | None = None,
    ) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=text,
            description=description or text,
            epilog=epilog,
            parents=list(parents),
            formatter_class=_HelpFormatter,
        )

    emu = add("emulator", "serve the local API emulator")
    emu.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emu.add_argument("--port", type=int, default=8765, help="port to listen on")
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

    run = add("run", "poll the API for every id and write the datasets", (job,))
    _add_run_options(run)
    _add_text_option(run, "the output")
    _add_runner_options(run)

    ing = add("ingest", "read saved responses or webhook events (no network)", (job,))
    ing.add_argument("--input", nargs="+", required=True, help=".json/.ndjson files or folders")
    ing.add_argument("--out", required=True, help="output directory")
    ing.add_argument("--batch-size", type=int, default=DEFAULT_INGEST_BATCH_SIZE, help="records per batch")
    ing.add_argument("--in-flight", type=int, default=DEFAULT_INGEST_IN_FLIGHT, help="batches read ahead of the commit")
    ing.add_argument(
        "--memory-budget-mb",
        type=int,
        default=DEFAULT_MEMORY_BUDGET_MB,
        metavar="MB",
        help="memory the batches in flight may use: batches are cut by bytes as well as records, and a record "
        "too large for it becomes an `error` row (record_too_large) instead of being decoded",
    )
    _add_text_option(ing, "the output")
    ing.add_argument(
        "--delete-after-commit",
        action="store_true",
        help="delete each input file once every record of it is committed (crash-safe; a file with an "
        "unreadable record, or that changed since it was read, is kept)",
    )
    _add_runner_options(ing)

    forget = add(
        "forget",
        "erase these ids' rows from every table and never write them again (patient data, on request)",
        (job,),
        description="Remove every row of the ids in --ids from the four tables in one crash-safe commit under "
        "the writer's lease, mark them `forgotten` in the ledger (no later run, ingest or webhook delivery "
        "writes them again; `talktime run --refetch forgotten` must name them explicitly), and add an entry "
        "to the erasure log `_talktime/erasures/` (ids and counts, never content).",
        epilog="exit status: 0 done, 2 error (e.g. --out does not exist, an unreadable ids file)",
    )
    forget.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")
    forget.add_argument("--ids", required=True, help="text file (one id per line), or CSV/Parquet with an `id` column")

    comp = add("compact", "merge each partition's small files (readers see the same rows)", (job,))
    comp.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")

    ver = add(
        "verify",
        "check the ledger against the data files (missing, extra, duplicated rows); --repair fixes them",
        (job,),
        description="Check the ledger against the data files of every table: ids whose rows are missing, "
        "rows the ledger does not name as current (extra), rows repeated in an id's current batch "
        "(duplicated), unreadable files, a missing or unreadable ledger. Prints ids and file paths, never "
        "transcript text.",
        epilog="exit status: 0 consistent (after --repair: repaired), 1 problems found, "
        "2 error (e.g. --out does not exist)",
    )
    ver.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")
    ver.add_argument("--partition", metavar="YYYY-MM-DD", help="check one fetched_date partition only")
    ver.add_argument("--since", metavar="YYYY-MM-DD", help="check the partitions from this date on")
    ver.add_argument("--until", metavar="YYYY-MM-DD", help="check the partitions up to this date (inclusive)")
    ver.add_argument(
        "--repair",
        action="store_true",
        help="rebuild a missing or unreadable ledger, drop missing ids from it (the next run fetches them again), "
        "rewrite files without extra or duplicated rows and quarantine unreadable ones, in one crash-safe commit",
    )

    stat = add(
        "status",
        "what an output holds: ids by status, pending, next to expire, files per table, last commit",
        (job,),
        description="What an output holds, read-only (no lease taken): ids by status, pending ids, the oldest "
        "pending, the next to expire, files and rows per table, the last commit, the writer holding the lease, "
        "talk time by speaker over the whole output.",
    )
    stat.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")
    stat.add_argument(
        "--expire-after",
        type=parse_duration,
        default=parse_duration("24h"),
        help="the runs' --expire-after, to say when pending ids expire (default 24h)",
    )

    rep = add(
        "report",
        "write a self-contained HTML page of charts over the whole output (opens offline)",
        description="One HTML file of static SVG charts over every id of an output (not one run): talk share, "
        "doctor:patient ratio, words per minute, silence and overlap, the patient's opening statement, response "
        "gaps, outcomes by status and error code, rejected items by reason, and who spoke when in a few "
        "transcriptions. No script, no external resource, no transcript text.",
    )
    rep.add_argument("--out", required=True, help="output location (directory or s3://bucket/prefix)")
    rep.add_argument("--html", required=True, metavar="FILE", help="the HTML file to write")
    rep.add_argument(
        "--timeline",
        action="append",
        default=[],
        metavar="ID",
        help="a transcription to draw in 'who spoke when' (repeatable; default: those at the 10th, 50th and "
        "90th percentile of the doctor's talk share)",
    )

    hook = add("webhook", "receive the vendor's webhook events into a landing folder")
    hook.add_argument("--host", default="127.0.0.1", help="address to listen on")
    hook.add_argument("--port", type=int, default=8766, help="port to listen on")
    hook.add_argument("--landing", required=True, help="folder where events land as NDJSON files")
    hook.add_argument("--secret-env", required=True, help="name of the environment variable holding the secret")
    _add_text_option(hook, "a landed event")
    hook.add_argument(
        "--max-body-mb", type=float, metavar="MB", help="refuse event bodies over this many MiB with 413 (default 16)"
    )
    hook.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="close a connection whose request headers, or whose body, take longer than S seconds (408)",
    )
    hook.add_argument(
        "--max-concurrent-bodies",
        type=int,
        default=8,
        metavar="N",
        help="read at most N request bodies at once (at most N x --max-body-mb held); more wait 1 s, then 503",
    )
    hook.add_argument(
        "--max-connections", type=int, default=256, metavar="N", help="answer 503 and close connections beyond N"
    )

    demo = add("demo", "run the whole pipeline on the bundled sample via the emulator", (job,))
    demo.add_argument("--out", default="data/output", help="output directory (its tables are rewritten)")
    demo.add_argument("--samples", default=str(DEFAULT_SAMPLES), help="the sample folder")

    dic = add(
        "dictionary",
        "print the data dictionary: every table and column, its type, unit, nullability and definition",
        description="The data dictionary of the four output tables (the same descriptions are stored in every "
        "Parquet file: Arrow field metadata `description`, and file key-value metadata "
        "`talktime.description.<column>`).",
    )
    dic.add_argument(
        "--format", choices=["text", "markdown", "json"], default="text", help="text for a terminal, markdown or json"
    )
    dic.add_argument("--output", metavar="FILE", help="write to FILE (UTF-8) instead of stdout")
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
    from pydantic import ValidationError

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
        max_error_share=args.max_error_share,
        refetch=args.refetch,
        check_route=args.check_route,
        requests_limit=args.requests_limit,
        text_policy=args.text,
        **_runner_settings(args),
    )


def ingest_settings(args: argparse.Namespace) -> IngestSettings:
    from pydantic import ValidationError

    try:
        return IngestSettings(
            inputs=list(args.input),
            out=str(args.out),
            batch_size=args.batch_size,
            in_flight=args.in_flight,
            memory_budget_mb=args.memory_budget_mb,
            text_policy=args.text,
            delete_after_commit=args.delete_after_commit,
            **_runner_settings(args),
        )
    except ValidationError as exc:
        raise _settings_error(exc) from None


def _check_output(out: str) -> None:
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


def _check_text_policy(settings: RunSettings | IngestSettings) -> None:
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


def _check_runner(settings: RunSettings | IngestSettings) -> None:
    """Dask needs a Prefect server the workers share: say so before a temporary one starts."""
    if settings.task_runner == "dask":
        from flows.scaleout import prefect_api_url

        prefect_api_url()


def _creatable(path: Path) -> bool:
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    return parent is not None and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def _run(args: argparse.Namespace, announce: bool) -> State:
    """`talktime run`'s checks, then the flow (its final state)."""
    from flows.inputs import read_ids

    settings = run_settings(args)
    read_ids(settings.ids_file)  # a missing or unreadable manifest: one line now, not after Prefect starts
    _check_output(settings.out)
    _check_text_policy(settings)
    _check_runner(settings)
    _prepare_prefect(announce)
    from flows.pipeline import run_flow

    return _ended(lambda: run_flow(settings, return_state=True))


def _prepare_prefect(announce: bool) -> None:
    """A configured Prefect server that does not answer: one line now (or, without one, say that a
    temporary server starts); then keep the flow's refusal line off the terminal (printed at the end)."""
    from flows.cli.prefect_server import check_prefect_server, hide_refusals_on_console

    check_prefect_server(announce=announce)
    hide_refusals_on_console()


def _announces(args: argparse.Namespace) -> bool:
    """Whether progress notes go to stderr: not under --quiet or --json."""
    return not (getattr(args, "quiet", False) or getattr(args, "json", False))


def _outcome(state: State, args: argparse.Namespace, out: str) -> int:
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


def _ended(flow_call: Callable[[], State]) -> State:
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


def _prefect_gone(gone: PrefectGoneError, args: argparse.Namespace, out: str) -> int:
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


def cmd_run(args: argparse.Namespace) -> int:
    try:
        state = _run(args, _announces(args))
    except PrefectGoneError as gone:
        return _prefect_gone(gone, args, str(args.out))
    return _outcome(state, args, str(args.out))


def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.inputs import plan_slices

    settings = ingest_settings(args)
    next(plan_slices(settings.inputs, 1), None)  # a missing input: one line now, not after Prefect starts
    _check_output(settings.out)
    _check_text_policy(settings)
    _check_runner(settings)
    _prepare_prefect(_announces(args))
    from flows.pipeline import ingest_flow

    try:
        state = _ended(lambda: ingest_flow(settings, return_state=True))
    except PrefectGoneError as gone:
        return _prefect_gone(gone, args, str(args.out))
    return _outcome(state, args, str(args.out))


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
            + (["--quiet"] if args.quiet else [])
        )  # fmt: skip
        state = _run(demo_args, _announces(args))
    code = _outcome(state, args, str(out))
    if code == 0:
        from flows.report import write_report

        print(f"talktime demo: report {write_report(str(out), out / 'report.html').path}")
    return code


def cmd_compact(args: argparse.Namespace) -> int:
    from flows.storage.compact import compact
    from flows.storage.verify import open_store

    open_store(str(args.out))  # nothing there: say so, rather than "0 files -> 0"
    bar = None if args.quiet or not sys.stderr.isatty() else _PartitionBar()
    try:
        before, after = compact(str(args.out), progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if getattr(args, "json", False):
        print(json.dumps({"out": str(args.out), "files_before": before, "files_after": after}))
    else:
        print(f"talktime compact: {before} data files -> {after}")
    return 0


class _PartitionBar:
    """`compact`'s progress bar on a terminal: partitions merged of partitions to merge."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("talktime compact: partitions"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(file=sys.stderr),
        )  # fmt: skip
        self._task = self._progress.add_task("compact", total=None)
        self._progress.start()

    def __call__(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        self._progress.stop()


def cmd_forget(args: argparse.Namespace) -> int:
    from flows.inputs import read_ids
    from flows.storage.forget import forget
    from flows.storage.verify import open_store

    ids = read_ids(args.ids)
    open_store(str(args.out))  # nothing there: say so
    done = forget(str(args.out), ids)
    if getattr(args, "json", False):
        print(json.dumps({"out": str(args.out), **dataclasses.asdict(done)}))
    elif not args.quiet:
        print(done.line())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from flows.storage.status import output_status, status_dict, status_lines
    from flows.untrusted import printable

    status = output_status(str(args.out), expire_after_s=args.expire_after)
    if args.json:
        print(json.dumps(status_dict(status), default=str))
    else:
        print("\n".join(printable(line) for line in status_lines(status)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flows.report import write_report

    report = write_report(str(args.out), args.html, args.timeline)
    print(
        f"talktime report: {report.path} ({report.size_bytes / 1024:,.0f} KiB; {report.transcriptions} "
        f"transcriptions, {report.succeeded} succeeded)"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from flows.storage.verify import count_files, describe, describe_repair, repair, verify

    dates = _date_range(args)
    if args.repair:
        if dates is not None:
            raise ConfigurationError(
                "--repair checks and repairs the whole output: leave out --partition/--since/--until"
            )
        done = repair(str(args.out))
        found, lines = done.after, describe_repair(done)
    else:
        bar = None if args.quiet or not sys.stderr.isatty() else _DelayedBar("talktime verify: files read")
        try:
            if bar is not None:
                bar.total = count_files(str(args.out), dates)
            found = verify(str(args.out), dates=dates, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        lines = describe(found)
    if getattr(args, "json", False):
        print(json.dumps({"out": str(args.out), "consistent": found.consistent, **_check_dict(found)}))
    elif not args.quiet or not found.consistent:
        print("\n".join(lines))
    return 0 if found.consistent else 1


def _date_range(args: argparse.Namespace) -> tuple[str, str] | None:
    """(first, last) partition dates that `verify` checks, or None for every partition."""
    from datetime import date

    chosen = {name: getattr(args, name) for name in ("partition", "since", "until") if getattr(args, name)}
    if not chosen:
        return None
    for name, value in chosen.items():
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"--{name} {value!r} is not a date (YYYY-MM-DD)") from None
    if "partition" in chosen and len(chosen) > 1:
        raise ConfigurationError("--partition checks one day: leave out --since/--until")
    if "partition" in chosen:
        return chosen["partition"], chosen["partition"]
    return chosen.get("since", "0000-01-01"), chosen.get("until", "9999-12-31")


class _DelayedBar:
    """A progress bar on stderr that appears only once the work has taken more than a second."""

    def __init__(self, label: str, delay_s: float = 1.0) -> None:
        self.label, self.total, self.done = label, 0, 0
        self._start = time.monotonic() + delay_s
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, count: int) -> None:
        self.done += count
        if self._progress is None and time.monotonic() >= self._start:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=Console(file=sys.stderr),
            )  # fmt: skip
            self._task = self._progress.add_task("work", total=self.total or None)
            self._progress.start()
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _check_dict(found: Check) -> dict[str, object]:
    findings = [dataclasses.asdict(finding) for finding in found.findings]
    return {"ledger": found.ledger_state, "pending_commits": found.pending_commits, "findings": findings}


def cmd_webhook(args: argparse.Namespace) -> int:
    import uvicorn

    from flows.webhook.receiver import WebhookApp
    from flows.webhook.server import uvicorn_options

    secret = os.environ.get(args.secret_env)
    if not secret:
        raise ConfigurationError(f"the webhook secret variable {args.secret_env} is not set")
    limits = webhook_limits(args)
    text_key = None
    if args.text == "hash":
        from flows.textpolicy import TEXT_KEY_ENV, text_key_from_environment

        text_key = text_key_from_environment()
        if text_key is None:
            raise ConfigurationError(f"--text hash needs a key: set {TEXT_KEY_ENV} (16 characters at least)")
    app = WebhookApp(Path(args.landing), secret, limits=limits, text=args.text, text_key=text_key)
    print(f"talktime webhook: landing events in {args.landing} from http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options(limits))
    return 0


def webhook_limits(args: argparse.Namespace) -> ReceiverLimits:
    """The receiver's limits from `talktime webhook`'s options; ConfigurationError naming a bad one."""
    from flows.webhook.receiver import DEFAULT_MAX_EVENT_BYTES, ReceiverLimits

    max_body = DEFAULT_MAX_EVENT_BYTES if args.max_body_mb is None else args.max_body_mb * 1024 * 1024
    if not 1 <= max_body < 2**53:  # also refuses nan and inf
        raise ConfigurationError("--max-body-mb must be a positive number of MiB")
    if not 0 < args.read_timeout < 86400:  # also refuses nan and inf
        raise ConfigurationError("--read-timeout must be a positive number of seconds (at most a day)")
    for option, value in (("--max-concurrent-bodies", args.max_concurrent_bodies),
                          ("--max-connections", args.max_connections)):  # fmt: skip
        if value < 1:
            raise ConfigurationError(f"{option} must be at least 1")
    return ReceiverLimits(
        max_body_bytes=int(max_body),
        read_timeout_s=args.read_timeout,
        max_concurrent_bodies=args.max_concurrent_bodies,
        max_connections=args.max_connections,
    )


def cmd_dictionary(args: argparse.Namespace) -> int:
    from transforms.dictionary import as_json, as_markdown, as_text

    text = {"text": as_text, "markdown": as_markdown, "json": as_json}[args.format]()
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot write {args.output}: {exc}") from exc
        print(f"talktime dictionary: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "emulator": cmd_emulator,
    "report": cmd_report,
    "run": cmd_run,
    "ingest": cmd_ingest,
    "demo": cmd_demo,
    "webhook": cmd_webhook,
    "compact": cmd_compact,
    "forget": cmd_forget,
    "verify": cmd_verify,
    "status": cmd_status,
    "dictionary": cmd_dictionary,
}
