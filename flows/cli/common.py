"""What every `talktime` sub-command shares: the help formatter, the output options, durations."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Protocol

from flows.errors import ConfigurationError

if TYPE_CHECKING:
    from pydantic import ValidationError


class AddCommand(Protocol):
    """`build_parser`'s way to add a sub-command's parser."""

    def __call__(
        self,
        name: str,
        text: str,
        parents: tuple[argparse.ArgumentParser, ...] = (),
        description: str | None = None,
        epilog: str | None = None,
    ) -> argparse.ArgumentParser: ...


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], (), argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def output_options(json_summary: bool = True) -> argparse.ArgumentParser:
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


def talktime_version() -> str:
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


def settings_error(exc: ValidationError) -> ConfigurationError:
    """One line per invalid option, without the values (they may be paths or ids)."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return ConfigurationError(f"invalid settings: {problems}")


def announces(args: argparse.Namespace) -> bool:
    """Whether progress notes go to stderr: not under --quiet or --json."""
    return not (getattr(args, "quiet", False) or getattr(args, "json", False))
