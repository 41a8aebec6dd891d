"""The `talktime` command line: run, ingest, status, report, dictionary, compact, verify, webhook, emulator, demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from flows.cli.commands import COMMANDS, build_parser, configure_console

# Before anything imports prefect: no telemetry, nothing leaves loopback, no input hashing.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_TASKS_DEFAULT_NO_CACHE", "true")
# A fresh PREFECT_HOME migrates its database first: the default 20 s is too short on 2 cores.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# When Prefect's API goes away, each of the engine's calls is retried with a backoff of 2, 4, 8, 16,
# 32 s by default: a run whose data was committed spent minutes telling a dead server its end. Two
# retries (about 6 s) still ride out a server that is busy for a moment; 15 s per request.
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "2")
os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", "15")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `talktime` console script.

    Exit status: 0 done, 1 the run failed (stopped early, or too many ids ended in `error`; for
    `verify`, problems found), 2 a configuration, credential or storage error (one line on
    stderr), 3 an unexpected error (its type and place; `--debug` shows the traceback), 4 the
    run's data is committed but Prefect's API went away before the run's end could be recorded
    there (one line on stderr), 130 interrupted.
    """
    parser: argparse.ArgumentParser = build_parser()
    args = parser.parse_args(argv)
    configure_console(args)  # before anything imports prefect
    from flows.errors import PipelineError, WithheldError, raised_at
    from flows.untrusted import printable

    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except PipelineError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"talktime: error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        # an unexpected error's message may quote transcript text: only its type and place are shown
        what = str(exc) if isinstance(exc, WithheldError) else f"{type(exc).__name__} at {raised_at(exc)}"
        print(f"talktime: unexpected error: {what}; run again with --debug for the traceback", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
