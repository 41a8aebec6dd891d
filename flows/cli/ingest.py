"""`talktime ingest`: read saved responses or webhook events (no network)."""

from __future__ import annotations

import argparse

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
from flows.cli.options import DEPLOYMENT_ONLY, Flag, add_settings_options, settings_from
from flows.settings import IngestSettings

# Where `ingest`'s options differ from IngestSettings' fields (everything else comes from the fields).
INGEST_FLAGS = JOB_FLAGS | {"inputs": Flag("--input")}


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime ingest`'s options: IngestSettings' fields."""
    ing = add("ingest", "read saved responses or webhook events (no network)", (job,))
    add_settings_options(ing, IngestSettings, INGEST_FLAGS, DEPLOYMENT_ONLY)


def ingest_settings(args: argparse.Namespace) -> IngestSettings:
    """The ingest's settings from its arguments; ConfigurationError naming each invalid one."""
    return settings_from(IngestSettings, args)


def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.inputs import plan_slices

    settings = ingest_settings(args)
    next(plan_slices(settings.inputs, 1), None)  # a missing input: one line now, not after Prefect starts
    check_output(settings.out)
    check_text_policy(settings)
    check_runner(settings)
    prepare_prefect(announces(args))
    from flows.pipeline import ingest_flow

    try:
        state = ended(lambda: ingest_flow(settings, return_state=True))
    except PrefectGoneError as gone:
        return prefect_gone(gone, args, settings.out)
    return outcome(state, args, settings.out)
