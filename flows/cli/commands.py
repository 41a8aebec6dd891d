"""The `talktime` parser and its sub-commands, one module each (flows/cli/<command>.py).

Each command module has `add_parser(add, job)` (its options) and `cmd_<command>(args)` (what it
does). The names other modules import from here are re-exported.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from flows.cli import compact, demo, dictionary, emulator, forget, ingest, report, run, status, verify, webhook
from flows.cli.common import HelpFormatter, configure_console, output_options, parse_duration, talktime_version
from flows.cli.ingest import ingest_settings
from flows.cli.run import run_settings
from flows.cli.webhook import cmd_webhook, webhook_limits

__all__ = ["COMMANDS", "build_parser", "cmd_webhook", "configure_console", "ingest_settings", "parse_duration",
           "run_settings", "webhook_limits"]  # fmt: skip

# In the order of `talktime --help`.
FAMILIES = (emulator, run, ingest, forget, compact, verify, status, report, webhook, demo, dictionary)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="talktime",
        description="Talk-time analytics from medical transcriptions.",
        epilog="exit status: 0 done, 1 the run failed (stopped early, too many errors; verify: problems found), "
        "2 configuration, credential or storage error, 3 unexpected error, 130 interrupted",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {talktime_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    job = output_options()

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
            formatter_class=HelpFormatter,
        )

    for family in FAMILIES:
        family.add_parser(add, job)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "emulator": emulator.cmd_emulator,
    "report": report.cmd_report,
    "run": run.cmd_run,
    "ingest": ingest.cmd_ingest,
    "demo": demo.cmd_demo,
    "webhook": webhook.cmd_webhook,
    "compact": compact.cmd_compact,
    "forget": forget.cmd_forget,
    "verify": verify.cmd_verify,
    "status": status.cmd_status,
    "dictionary": dictionary.cmd_dictionary,
}
