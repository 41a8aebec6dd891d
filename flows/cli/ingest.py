"""`talktime ingest`: read saved responses or webhook events (no network)."""

from __future__ import annotations

import argparse

from flows.cli.common import AddCommand, add_text_option, announces, settings_error
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
from flows.settings import DEFAULT_INGEST_BATCH_SIZE, DEFAULT_INGEST_IN_FLIGHT, DEFAULT_MEMORY_BUDGET_MB, IngestSettings


def add_parser(add: AddCommand, job: argparse.ArgumentParser) -> None:
    """`talktime ingest`'s options."""
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
    add_text_option(ing, "the output")
    ing.add_argument(
        "--delete-after-commit",
        action="store_true",
        help="delete each input file once every record of it is committed (crash-safe; a file with an "
        "unreadable record, or that changed since it was read, is kept)",
    )
    add_runner_options(ing)


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
            **runner_settings(args),
        )
    except ValidationError as exc:
        raise settings_error(exc) from None


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
        return prefect_gone(gone, args, str(args.out))
    return outcome(state, args, str(args.out))
