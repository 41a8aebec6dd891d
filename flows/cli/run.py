"""`talktime run`: poll the API for every id and write the datasets."""

from __future__ import annotations

import argparse
import os
import typing
from typing import TYPE_CHECKING

from flows.cli.common import AddCommand, announces
from flows.cli.jobs import (
    JOB_FLAGS,
    PrefectGoneError,
    check_output,
    check_runner,
    check_text_policy,
    ended,
    outcome,
    prefect_gone,
    prepare_prefect,
)
from flows.cli.options import DEPLOYMENT_ONLY, Flag, add_settings_options, duration, settings_from
from flows.secrets import API_KEY_ENV
from flows.settings import DEFAULT_API_KEY_SECRET, RefetchStatus, RunSettings

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State


REFETCHABLE: tuple[str, ...] = typing.get_args(RefetchStatus)


def _statuses(text: str) -> tuple[str, ...]:
    statuses = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [status for status in statuses if status not in REFETCHABLE]
    if unknown or not statuses:
        raise argparse.ArgumentTypeError(f"not final statuses: {text!r} (choose from {', '.join(REFETCHABLE)})")
    return statuses


# Where `run`'s options differ from RunSettings' fields (everything else comes from the fields).
RUN_FLAGS = JOB_FLAGS | {
    "ids_file": Flag("--ids"),
    "max_wait_s": Flag("--max-wait"),
    "expire_after_s": duration("90m, 24h, 2d", "--expire-after"),
    "down_after_s": duration("90s, 5m", "--give-up-after"),
    "request_deadline_s": duration("90s, 2m", "--request-deadline"),
    "max_error_share": Flag(metavar="SHARE"),
    "refetch": Flag(parse=_statuses, metavar="STATUS[,STATUS]"),
    "check_route": Flag("--route-check"),
    "requests_limit": Flag(metavar="NAME"),
}


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime run`'s options: RunSettings' fields, and the API key (never a setting)."""
    run = add("run", "poll the API for every id and write the datasets", (job,))
    add_settings_options(run, RunSettings, RUN_FLAGS, DEPLOYMENT_ONLY)
    run.add_argument(
        "--api-key",
        help=f"server API key; never logged, but a command line is visible to other users of this machine"
        f" (ps): prefer ${API_KEY_ENV} or the Secret block {DEFAULT_API_KEY_SECRET!r}",
    )


def run_settings(args: argparse.Namespace) -> RunSettings:
    """The run's settings from its arguments (the key goes to this process's environment only)."""
    if args.api_key:
        os.environ[API_KEY_ENV] = args.api_key
    return settings_from(RunSettings, args)


def run_checked(settings: RunSettings, announce: bool) -> State:
    """`talktime run`'s checks, then the flow (its final state)."""
    from flows.inputs import read_ids

    read_ids(settings.ids_file)  # a missing or unreadable manifest: one line now, not after Prefect starts
    check_output(settings.out)
    check_text_policy(settings)
    check_runner(settings)
    prepare_prefect(announce)
    from flows.pipeline import run_flow

    return ended(lambda: run_flow(settings, return_state=True))


def cmd_run(args: argparse.Namespace) -> int:
    settings = run_settings(args)
    try:
        state = run_checked(settings, announces(args))
    except PrefectGoneError as gone:
        return prefect_gone(gone, args, settings.out)
    return outcome(state, args, settings.out)
