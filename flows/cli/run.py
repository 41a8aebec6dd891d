"""`talktime run`: poll the API for every id and write the datasets."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from flows.cli.common import AddCommand, add_text_option, announces, parse_duration, settings_error
from flows.cli.jobs import (
    PrefectGoneError,
    add_runner_options,
    check_output,
    check_runner,
    check_text_policy,
    ended,
    outcome,
    prefect_gone,
    prepare_prefect,
    runner_settings,
)
from flows.secrets import API_KEY_ENV
from flows.settings import (
    DEFAULT_API_KEY_SECRET,
    DEFAULT_API_VERSION,
    DEFAULT_CONCURRENCY,
    DEFAULT_DOWN_AFTER_S,
    DEFAULT_IN_FLIGHT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_ERROR_SHARE,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_WAIT_S,
    DEFAULT_REQUEST_DEADLINE_S,
    DEFAULT_RUN_BATCH_SIZE,
    MIB,
    RunSettings,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime run`'s options."""
    run = add("run", "poll the API for every id and write the datasets", (job,))
    _add_run_options(run)
    add_text_option(run, "the output")
    add_runner_options(run)


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


def run_settings(args: argparse.Namespace) -> RunSettings:
    """The run's settings from its arguments (the key goes to this process's environment only)."""
    from pydantic import ValidationError

    if args.api_key:
        os.environ[API_KEY_ENV] = args.api_key
    try:
        return _run_settings(args)
    except ValidationError as exc:
        raise settings_error(exc) from None


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
        **runner_settings(args),
    )


def run_checked(args: argparse.Namespace, announce: bool) -> State:
    """`talktime run`'s checks, then the flow (its final state)."""
    from flows.inputs import read_ids

    settings = run_settings(args)
    read_ids(settings.ids_file)  # a missing or unreadable manifest: one line now, not after Prefect starts
    check_output(settings.out)
    check_text_policy(settings)
    check_runner(settings)
    prepare_prefect(announce)
    from flows.pipeline import run_flow

    return ended(lambda: run_flow(settings, return_state=True))


def cmd_run(args: argparse.Namespace) -> int:
    try:
        state = run_checked(args, announces(args))
    except PrefectGoneError as gone:
        return prefect_gone(gone, args, str(args.out))
    return outcome(state, args, str(args.out))
